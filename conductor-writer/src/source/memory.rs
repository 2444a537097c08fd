//! Sources that are not files: bytes already in memory (partition tables)
//! and runs of zeroes (metadata to wipe).

use bytes::Bytes;

use super::error::SourceError;
use super::{Chunk, Format, Source};

/// Bytes in memory, sent as they are.
#[derive(Debug)]
pub struct Memory {
    data: Bytes,
    pos: usize,
}

impl Memory {
    #[must_use]
    pub fn new(data: impl Into<Bytes>) -> Self {
        Memory {
            data: data.into(),
            pos: 0,
        }
    }
}

impl Source for Memory {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>, SourceError> {
        let end = self.data.len().min(self.pos.saturating_add(max.max(1)));
        if self.pos >= end {
            return Ok(None);
        }
        let chunk = Chunk::Data {
            offset: self.pos as u64,
            data: self.data.slice(self.pos..end),
        };
        self.pos = end;
        Ok(Some(chunk))
    }

    fn data_hint(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }
}

/// `len` bytes of zeroes, as one zero run.
#[derive(Debug)]
pub struct Zeroes {
    len: u64,
    done: bool,
}

impl Zeroes {
    #[must_use]
    pub fn new(len: u64) -> Self {
        Zeroes { len, done: len == 0 }
    }
}

impl Source for Zeroes {
    fn size(&self) -> u64 {
        self.len
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn next_chunk(&mut self, _max: usize) -> Result<Option<Chunk>, SourceError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(None);
        }
        Ok(Some(Chunk::Zero {
            offset: 0,
            len: self.len,
        }))
    }

    fn data_hint(&self) -> Option<u64> {
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_back_in_pieces_of_at_most_max() {
        let mut m = Memory::new(vec![7u8; 10]);
        let mut seen = Vec::new();
        while let Some(c) = m.next_chunk(4).expect("chunk") {
            seen.push((c.offset(), c.len()));
        }
        assert_eq!(seen, vec![(0, 4), (4, 4), (8, 2)]);
        let mut z = Zeroes::new(5);
        assert_eq!(z.next_chunk(1).expect("zero"), Some(Chunk::Zero { offset: 0, len: 5 }));
        assert_eq!(z.next_chunk(1).expect("end"), None);
        assert_eq!(Zeroes::new(0).next_chunk(1).expect("empty"), None);
    }
}
