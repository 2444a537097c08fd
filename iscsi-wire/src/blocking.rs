//! The reader in a blocking job: data segments moved one after another
//! without going back to the async reactor between them.
//!
//! A stream of large writes is a header, a large segment, the next header,
//! the next segment. Going back to the reactor after each segment costs a
//! hand-off to the blocking pool and back, and a wake-up for each header.
//! A job holding a [`Blocking`] reads each next header itself, exactly (so
//! no segment byte is read into memory), and moves its segment, for as long
//! as large segments come; the first PDU that is not one is left, its bytes
//! read so far included, for the async reader.

use crate::splice::{Segment, wait_readable};
use bytes::{Buf, BytesMut};
use iscsi_proto::codec::{Decoder, Head};
use iscsi_proto::pdu::{BHS_LEN, Bhs, Pdu};
use nix::errno::Errno;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// The reader's socket, buffer and framing, lent to a blocking job.
#[derive(Debug)]
pub struct Blocking {
    pub(crate) segment: Segment,
    /// Bytes read and not consumed: the async reader's buffer, then header
    /// bytes read here.
    pub(crate) buf: BytesMut,
    pub(crate) decoder: Decoder,
    /// Heads come only for segments at least this long.
    pub(crate) min: usize,
}

impl Blocking {
    /// The data segment of `head`, the head last returned: move it (see
    /// [`Segment::to_file`]), then call [`Blocking::end_segment`].
    pub fn segment(&mut self, head: &Head) -> &mut Segment {
        let prefix = self.buf.split_to(head.data_len.min(self.buf.len())).freeze();
        self.segment.left = head.data_len - prefix.len();
        self.segment.prefix = prefix;
        &mut self.segment
    }

    /// Take what `head`'s segment left on the socket, and its padding, off
    /// the stream.
    pub fn end_segment(&mut self, head: &Head) -> io::Result<()> {
        self.segment.prefix.clear();
        let left = std::mem::take(&mut self.segment.left) + head.padding;
        let buffered = left.min(self.buf.len());
        self.buf.advance(buffered);
        let result = self.discard(left - buffered);
        self.kept(result)
    }

    /// `head`'s whole PDU, its segment read into memory.
    pub fn read_segment(&mut self, head: Head) -> io::Result<Pdu> {
        let total = head.data_len + head.padding;
        while self.buf.len() < total {
            let want = total - self.buf.len();
            let came = self.read(want, self.segment.patience);
            if !self.kept(came)? {
                let stalled = io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer stopped in the middle of a data segment",
                );
                return self.kept(Err(stalled));
            }
        }
        let data = self.buf.split_to(head.data_len).freeze();
        self.buf.advance(head.padding);
        Ok(Pdu {
            header: head.header,
            data,
        })
    }

    /// The next PDU's head, if its header arrives within `wait` and it
    /// carries a data segment of at least the reader's minimum. Otherwise
    /// `None`, and whatever was read stays for the async reader.
    pub fn next_head(&mut self, wait: Duration) -> io::Result<Option<Head>> {
        let deadline = Instant::now() + wait;
        loop {
            let need = match <&Bhs>::try_from(self.buf.get(..BHS_LEN).unwrap_or(&[])) {
                Ok(bhs) => self.decoder.header_len(bhs).saturating_sub(self.buf.len()),
                Err(_) => BHS_LEN - self.buf.len(),
            };
            if need == 0 {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let came = self.read(need, left);
            if !self.kept(came)? {
                return Ok(None);
            }
        }
        match self.decoder.head(&self.buf) {
            Some(head) if head.data_len >= self.min => {
                self.buf.advance(head.header_len);
                Ok(Some(head))
            }
            _ => Ok(None),
        }
    }

    /// Read up to `want` bytes into the buffer, waiting at most `wait` for
    /// the first: false when none came in time. The end of the stream is an
    /// error.
    fn read(&mut self, want: usize, wait: Duration) -> io::Result<bool> {
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        loop {
            match nix::unistd::read(self.segment.socket.as_fd(), &mut self.buf[start..]) {
                Ok(0) => {
                    self.buf.truncate(start);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection",
                    ));
                }
                Ok(n) => {
                    self.buf.truncate(start + n);
                    return Ok(true);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    if let Err(e) = wait_readable(self.segment.socket.as_fd(), wait) {
                        self.buf.truncate(start);
                        return match e.kind() {
                            io::ErrorKind::TimedOut => Ok(false),
                            _ => Err(e),
                        };
                    }
                }
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e.into());
                }
            }
        }
    }

    /// Read and drop `len` bytes.
    fn discard(&mut self, mut len: usize) -> io::Result<()> {
        let mut scratch = [0u8; 16 * 1024];
        while len > 0 {
            let want = len.min(scratch.len());
            match nix::unistd::read(self.segment.socket.as_fd(), &mut scratch[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection",
                    ));
                }
                Ok(n) => len -= n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => wait_readable(self.segment.socket.as_fd(), self.segment.patience)?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A socket error loses the connection: keep a copy for the reader,
    /// which reports it whatever the job does with its own.
    fn kept<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result
            && self.segment.socket_error.is_none()
        {
            self.segment.socket_error = Some(io::Error::new(e.kind(), e.to_string()));
        }
        result
    }
}
