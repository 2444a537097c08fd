//! Reading PDUs, and moving large data segments past memory.

use crate::Socket;
use crate::blocking::Blocking;
use crate::splice::{Pipe, Segment};
use bytes::{Buf, BytesMut};
use iscsi_proto::codec::{DecodeError, Decoded, Decoder, Direction, Framing, Head};
use iscsi_proto::pdu::{BHS_LEN, Bhs, Pdu};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no PDU came.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a valid PDU; its scope says whether the stream
    /// goes on (the PDU was consumed) or is lost.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection")]
    Eof,
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => e,
            ReadError::Eof => io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection"),
            ReadError::Decode(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// What [`PduReader::next_frame`] found.
#[derive(Debug)]
pub enum Frame {
    /// A whole PDU.
    Pdu(Pdu),
    /// A PDU's header, its data segment still to be taken with
    /// [`PduReader::read_segment`] or [`PduReader::segment_into`].
    Head(Head),
}

/// What moving data segments past memory needs.
#[derive(Debug)]
struct Heads {
    /// Segments at least this long come as heads.
    min: usize,
    socket: Arc<OwnedFd>,
    /// `None` while a segment job has it.
    pipe: Option<Pipe>,
    /// How long a segment may stall.
    patience: Duration,
}

/// Reads whole PDUs, its buffer growing only as far as the decoder asks
/// (which the negotiated MaxRecvDataSegmentLength bounds).
#[derive(Debug)]
pub struct PduReader<R> {
    half: R,
    buf: BytesMut,
    decoder: Decoder,
    heads: Option<Heads>,
    /// The last segment went past memory: read no further than the next
    /// header, so that its segment can go the same way.
    header_first: bool,
    /// Bytes of the stream to drop (padding, a segment nobody took).
    skip: usize,
    /// The data segment of the head last returned, not yet taken.
    owed: usize,
}

impl<R: AsyncRead + Socket + Unpin> PduReader<R> {
    /// PDUs coming in `direction` (what the peer is).
    pub fn new(half: R, direction: Direction) -> Self {
        Self {
            half,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: Decoder::new(direction),
            heads: None,
            header_first: false,
            skip: 0,
            owed: 0,
        }
    }

    pub fn set_framing(&mut self, framing: Framing) {
        self.decoder.set_framing(framing);
    }

    /// From now on, [`PduReader::next_frame`] returns the header of a PDU
    /// whose data segment is at least `min` bytes and has not all arrived
    /// yet, so that the caller can move the segment itself. A segment that
    /// stalls for `patience` loses the connection. Has no effect (and says
    /// so) on a stream that is not a TCP socket, or without a pipe.
    pub fn set_heads(&mut self, min: usize, patience: Duration) -> bool {
        let Some(socket) = self.half.tcp() else { return false };
        let made = socket
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| Ok((fd, Pipe::new()?)));
        match made {
            Ok((socket, pipe)) => {
                self.heads = Some(Heads {
                    min: min.max(1),
                    socket: Arc::new(socket),
                    pipe: Some(pipe),
                    patience,
                });
                true
            }
            Err(e) => {
                tracing::debug!("data segments stay in memory: {e}");
                false
            }
        }
    }

    /// The next PDU. After a PDU-scoped decode error the PDU is consumed:
    /// the caller may answer with a Reject and read on.
    pub async fn next(&mut self) -> Result<Pdu, ReadError> {
        match self.next_frame().await? {
            Frame::Pdu(pdu) => Ok(pdu),
            Frame::Head(head) => self.read_segment(head).await,
        }
    }

    /// The next PDU, or (see [`PduReader::set_heads`]) the header of one
    /// whose data segment the caller takes next.
    pub async fn next_frame(&mut self) -> Result<Frame, ReadError> {
        if self.owed > 0 {
            return Err(io::Error::other("a data segment was not taken").into());
        }
        loop {
            let dropped = self.skip.min(self.buf.len());
            self.buf.advance(dropped);
            self.skip -= dropped;
            let mut limit = None;
            if self.skip == 0 {
                if let Some(head) = self.take_head() {
                    return Ok(Frame::Head(head));
                }
                match self.decoder.decode(&mut self.buf)? {
                    Decoded::Pdu(pdu) => {
                        self.header_first = false;
                        return Ok(Frame::Pdu(pdu));
                    }
                    Decoded::NeedMore(n) => {
                        limit = self.header_first.then(|| self.header_need(n));
                    }
                }
            }
            let want = limit.unwrap_or(64 * 1024).max(self.skip.min(64 * 1024));
            self.fill(want, limit.is_some()).await?;
        }
    }

    /// A head for the PDU at the front of the buffer, if it qualifies.
    fn take_head(&mut self) -> Option<Head> {
        let min = self.heads.as_ref()?.min;
        let head = self.decoder.head(&self.buf)?;
        let total = head.header_len + head.data_len + head.padding;
        if head.data_len < min || self.buf.len() >= total {
            return None;
        }
        self.buf.advance(head.header_len);
        self.owed = head.data_len;
        Some(head)
    }

    /// How much to read so that the header part of the next PDU, and no
    /// more, is in the buffer (the decoder wants `need` more for the PDU).
    fn header_need(&self, need: usize) -> usize {
        let Ok(bhs) = <&Bhs>::try_from(self.buf.get(..BHS_LEN).unwrap_or(&[])) else {
            return BHS_LEN - self.buf.len();
        };
        let header = self.decoder.header_len(bhs);
        if self.buf.len() < header {
            header - self.buf.len()
        } else {
            need
        }
    }

    /// Read at least one byte: up to `want` more, exactly if `exact`.
    async fn fill(&mut self, want: usize, exact: bool) -> Result<(), ReadError> {
        let n = if exact {
            self.buf.reserve(want);
            (&mut self.half).take(want as u64).read_buf(&mut self.buf).await?
        } else {
            self.buf.reserve(want.max(64 * 1024));
            self.half.read_buf(&mut self.buf).await?
        };
        if n == 0 {
            return Err(ReadError::Eof);
        }
        Ok(())
    }

    /// Take the data segment of `head` into memory: the whole PDU.
    pub async fn read_segment(&mut self, head: Head) -> Result<Pdu, ReadError> {
        while self.buf.len() < self.owed {
            let want = self.owed - self.buf.len();
            self.fill(want, false).await?;
        }
        let data = self.buf.split_to(self.owed).freeze();
        self.owed = 0;
        self.skip = head.padding;
        self.header_first = false;
        Ok(Pdu {
            header: head.header,
            data,
        })
    }

    /// Hand the data segment of `head` to `job`, run on the blocking pool,
    /// which moves it (see [`Segment::to_file`]); what it leaves is read
    /// and dropped. Its answer comes back, unless the connection was lost
    /// meanwhile.
    pub async fn segment_into<T: Send + 'static>(
        &mut self,
        head: &Head,
        job: impl FnOnce(&mut Segment) -> T + Send + 'static,
    ) -> Result<T, ReadError> {
        self.blocking(head.clone(), move |reader, head| {
            let answer = job(reader.segment(&head));
            let _ = reader.end_segment(&head);
            answer
        })
        .await
    }

    /// Lend the socket, the buffer and the framing to `job`, run on the
    /// blocking pool, starting with the data segment of `head` (the head last
    /// returned), which the job must take ([`Blocking::segment`] and
    /// [`Blocking::end_segment`], or [`Blocking::read_segment`]). The job
    /// may go on to the next PDUs' heads itself ([`Blocking::next_head`]);
    /// whatever it leaves unread is read here after. Its answer comes back,
    /// unless the connection was lost meanwhile.
    pub async fn blocking<T: Send + 'static>(
        &mut self,
        head: Head,
        job: impl FnOnce(&mut Blocking, Head) -> T + Send + 'static,
    ) -> Result<T, ReadError> {
        let heads = self
            .heads
            .as_mut()
            .ok_or_else(|| io::Error::other("no heads were asked for"))?;
        let pipe = heads
            .pipe
            .take()
            .ok_or_else(|| io::Error::other("a segment job was lost"))?;
        let mut lent = Blocking {
            segment: Segment {
                socket: heads.socket.clone(),
                pipe,
                prefix: bytes::Bytes::new(),
                left: 0,
                patience: heads.patience,
                socket_error: None,
                lowat: false,
            },
            buf: std::mem::take(&mut self.buf),
            decoder: self.decoder.clone(),
            min: heads.min,
        };
        self.owed = 0;
        let (lent, answer) = tokio::task::spawn_blocking(move || {
            let answer = job(&mut lent, head);
            (lent, answer)
        })
        .await
        .map_err(io::Error::other)?;
        let Blocking { mut segment, buf, .. } = lent;
        segment.restore()?;
        self.buf = buf;
        if let Some(e) = segment.socket_error {
            return Err(e.into());
        }
        if let Some(heads) = self.heads.as_mut() {
            heads.pipe = Some(segment.pipe);
        }
        self.header_first = true;
        Ok(answer)
    }
}
