//! Data segments as the connection state machines hand them around: they
//! cut them into PDUs and never look inside, so a program can hand in data
//! that is not in memory at all (a file range, a pipe) as long as it can be
//! sliced.

use bytes::Bytes;
use std::ops::Range;

/// A PDU's data segment, or data to be cut into several.
pub trait Segment: Clone + From<Bytes> {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `range` of the data (within `0..len()`). Slices are sent in the
    /// order they are cut, each once: a program may hand in data that can
    /// only be read in order.
    #[must_use]
    fn slice(&self, range: Range<usize>) -> Self;
}

impl Segment for Bytes {
    fn len(&self) -> usize {
        Bytes::len(self)
    }

    fn slice(&self, range: Range<usize>) -> Self {
        Bytes::slice(self, range)
    }
}
