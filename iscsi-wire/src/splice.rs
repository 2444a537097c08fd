//! Moving data segments between files and sockets without copying them
//! through our memory: `sendfile` from a file into a socket, `splice` from
//! a socket through a pipe into a file, and from a file into a pipe whose
//! pages later go to a socket.
//!
//! On Linux each of these moves page references where it can: an image's
//! page-cache pages go into the socket's buffers as they are, and the pages
//! a socket received are copied once, straight into the destination file's
//! page cache. The read/write path copies every byte twice more, through a
//! buffer of ours.
//!
//! What may block on a disk (a file read or written) is only ever done by
//! the blocking functions here, which callers run off the async reactor;
//! what runs on the reactor touches only sockets and filled pipes.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The pipe size asked for: the largest an unprivileged process gets by
/// default (`/proc/sys/fs/pipe-max-size`), enough for one large data
/// segment per round of `splice` calls.
const PIPE_SIZE: usize = 1 << 20;

/// A pipe, both ends non-blocking, as large as the system allows us.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let size = i32::try_from(PIPE_SIZE).unwrap_or(i32::MAX);
        let capacity = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(size)) {
            Ok(n) => n,
            // Over the per-user pipe budget: the default size still works.
            Err(_) => fcntl(&write, FcntlArg::F_GETPIPE_SZ)?,
        };
        Ok(Self {
            read,
            write,
            capacity: usize::try_from(capacity).unwrap_or(0).max(4096),
        })
    }

    /// Bytes the pipe holds at most.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Move what the pipe holds (`held` bytes) into `file` at `*offset`.
    /// On an error, also says how many bytes are still in the pipe.
    fn to_file(&self, file: &File, offset: &mut i64, mut held: usize) -> Result<(), (io::Error, usize)> {
        while held > 0 {
            match splice(&self.read, None, file, Some(offset), held, SpliceFFlags::SPLICE_F_MOVE) {
                Ok(0) => return Err((io::Error::new(io::ErrorKind::WriteZero, "the file took no data"), held)),
                Ok(n) => held -= n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err((e.into(), held)),
            }
        }
        Ok(())
    }

    /// Drop `held` bytes the pipe holds.
    fn discard(&self, mut held: usize) -> io::Result<()> {
        let mut scratch = [0u8; 16 * 1024];
        while held > 0 {
            let want = held.min(scratch.len());
            match nix::unistd::read(&self.read, &mut scratch[..want]) {
                Ok(0) => break,
                Ok(n) => held -= n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// SO_RCVLOWAT: how many bytes a socket must hold before it counts as
/// readable. nix has no such option; its own macro declares it here as it
/// declares nix's.
#[derive(Debug, Clone, Copy)]
struct RcvLowat;

nix::setsockopt_impl!(
    RcvLowat,
    libc::SOL_SOCKET,
    libc::SO_RCVLOWAT,
    i32,
    nix::sys::socket::sockopt::SetStruct<'_, i32>
);

/// Wait until `socket` has something to read, for at most `patience`.
pub(crate) fn wait_readable(socket: BorrowedFd<'_>, patience: Duration) -> io::Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer sent nothing for {} s in the middle of a data segment",
                    patience.as_secs()
                ),
            ));
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(socket, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A data segment still on the socket, to be moved by a blocking job (see
/// [`crate::PduReader::blocking`]).
#[derive(Debug)]
pub struct Segment {
    pub(crate) socket: Arc<OwnedFd>,
    pub(crate) pipe: Pipe,
    /// The segment's first bytes, which had already been read into memory.
    pub(crate) prefix: bytes::Bytes,
    /// Bytes still on the socket.
    pub(crate) left: usize,
    pub(crate) patience: Duration,
    /// Why the socket could not be read: the connection is lost.
    pub(crate) socket_error: Option<io::Error>,
    /// The socket's low-water mark was raised (see [`Segment::wait`]).
    pub(crate) lowat: bool,
}

impl Segment {
    /// The segment's length (what has not been moved yet).
    #[must_use]
    pub fn len(&self) -> usize {
        self.prefix.len() + self.left
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the segment into `file` at `offset`: the bytes already read
    /// with `pwrite`, the rest spliced from the socket through the pipe, so
    /// they are copied once, into the file's page cache. Blocking.
    ///
    /// A file error is returned, and the rest of the segment is still taken
    /// off the socket (and dropped), so the stream stays in step. A socket
    /// error is kept for the reader, which loses the connection; it is
    /// returned here too.
    pub fn to_file(&mut self, file: &File, offset: u64) -> io::Result<()> {
        let prefix = std::mem::take(&mut self.prefix);
        let mut result = file.write_all_at(&prefix, offset);
        // Where the spliced bytes go; `None` once the file failed.
        let mut at = i64::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i64::try_from(prefix.len()).ok()?));
        if at.is_none() && result.is_ok() {
            result = Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset beyond what a file can hold",
            ));
        }
        if result.is_err() {
            at = None;
        }
        while self.left > 0 {
            let socket = self.socket.as_fd();
            let want = self.left.min(self.pipe.capacity);
            let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
            let held = match splice(socket, None, &self.pipe.write, None, want, flags) {
                Ok(0) => {
                    return self.lost(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection in the middle of a data segment",
                    ));
                }
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if let Err(e) = self.wait(want) {
                        return self.lost(e);
                    }
                    continue;
                }
                Err(e) => return self.lost(e.into()),
            };
            self.left -= held;
            let still = match at.as_mut() {
                Some(at) => match self.pipe.to_file(file, at, held) {
                    Ok(()) => 0,
                    Err((e, still)) => {
                        result = Err(e);
                        still
                    }
                },
                None => held,
            };
            if still > 0 {
                at = None;
                if let Err(e) = self.pipe.discard(still) {
                    return self.lost(e);
                }
            }
        }
        result
    }

    /// Wait until the socket holds `want` bytes (the rest of the segment,
    /// or a pipe's worth): one wake-up for what one round of splices moves. Waking for every packet that arrives would cost a
    /// context switch each; the low-water mark says how much is worth a
    /// wake-up. [`Segment::restore`] puts it back to one byte.
    fn wait(&mut self, want: usize) -> io::Result<()> {
        let socket = self.socket.clone();
        let lowat = i32::try_from(want).unwrap_or(i32::MAX);
        if nix::sys::socket::setsockopt(&*socket, RcvLowat, &lowat).is_ok() {
            self.lowat = true;
        }
        wait_readable(socket.as_fd(), self.patience)
    }

    /// Put the socket's low-water mark back to one byte, where the async
    /// reader expects it.
    pub(crate) fn restore(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.lowat) {
            nix::sys::socket::setsockopt(&*self.socket, RcvLowat, &1)?;
        }
        Ok(())
    }

    fn lost(&mut self, e: io::Error) -> io::Result<()> {
        let copy = io::Error::new(e.kind(), e.to_string());
        self.socket_error = Some(e);
        Err(copy)
    }
}

/// A file's bytes, `[offset, offset + len)`, sent as they are stored.
#[derive(Debug, Clone)]
pub struct FileRange {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// The same bytes of the same open file.
impl PartialEq for FileRange {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.offset == other.offset && self.len == other.len
    }
}

impl Eq for FileRange {}

impl FileRange {
    #[must_use]
    pub fn new(file: Arc<File>, offset: u64, len: usize) -> Self {
        Self { file, offset, len }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    #[must_use]
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// `range` of these bytes.
    #[must_use]
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        assert!(range.start <= range.end && range.end <= self.len, "slice out of range");
        Self {
            file: self.file.clone(),
            offset: self.offset + range.start as u64,
            len: range.len(),
        }
    }

    /// The bytes, read into memory (for a path that must look at them).
    /// Blocking.
    pub fn read(&self) -> io::Result<bytes::Bytes> {
        let mut buf = vec![0u8; self.len];
        self.file.read_exact_at(&mut buf, self.offset)?;
        Ok(buf.into())
    }

    /// Send the bytes into `socket` with `sendfile`. The pages should be in
    /// the page cache already (the producer reads them in, off the reactor):
    /// a cold page makes this wait for the disk.
    pub(crate) async fn send(&self, socket: &TcpStream) -> io::Result<()> {
        let mut offset = i64::try_from(self.offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut left = self.len;
        while left > 0 {
            socket.writable().await?;
            let sent = socket.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(socket, &*self.file, Some(&mut offset), left).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended before the data it was to send",
                    ));
                }
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Pipes kept for reuse: making one costs two system calls and a resize.
#[derive(Debug)]
pub struct PipePool {
    free: Mutex<Vec<Pipe>>,
    /// Pipes handed out or free; at most `max`.
    open: AtomicUsize,
    max: usize,
}

impl PipePool {
    /// A pool of at most `max` pipes (each takes two file descriptors).
    #[must_use]
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A pipe, or `None` when all `max` are in use (or none can be made):
    /// the caller then takes the buffered path.
    #[must_use]
    pub fn take(self: &Arc<Self>) -> Option<PooledPipe> {
        let reused = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let pipe = match reused {
            Some(pipe) => pipe,
            None => {
                if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                match Pipe::new() {
                    Ok(pipe) => pipe,
                    Err(e) => {
                        self.open.fetch_sub(1, Ordering::AcqRel);
                        tracing::debug!("no pipe: {e}");
                        return None;
                    }
                }
            }
        };
        Some(PooledPipe {
            pipe: Some(pipe),
            held: AtomicUsize::new(0),
            pool: self.clone(),
        })
    }
}

/// A pipe from a [`PipePool`], filled from a file and emptied into a
/// socket. It goes back to the pool when dropped empty, and is closed when
/// dropped with bytes still in it.
#[derive(Debug)]
pub struct PooledPipe {
    pipe: Option<Pipe>,
    /// Bytes filled in and not yet sent.
    held: AtomicUsize,
    pool: Arc<PipePool>,
}

impl PooledPipe {
    fn pipe(&self) -> &Pipe {
        self.pipe.as_ref().expect("a pooled pipe holds its pipe until dropped")
    }

    #[must_use]
    pub fn capacity(&self) -> usize {
        self.pipe().capacity
    }

    /// Whether the empty pipe takes `len` bytes of a file at `offset`: a
    /// pipe holds page-cache pages, one per slot, so the count is of the
    /// pages the range touches.
    #[must_use]
    pub fn holds(&self, offset: u64, len: usize) -> bool {
        const PAGE: u64 = 4096;
        let first = offset / PAGE;
        let end = (offset + len as u64).div_ceil(PAGE);
        (end - first) * PAGE <= self.capacity() as u64 && self.held.load(Ordering::Acquire) == 0
    }

    /// Fill the empty pipe with `len` bytes of `file` at `offset` (see
    /// [`PooledPipe::holds`]): page references where the file system gives
    /// them, no copy. Blocking (the file may have to be read from its disk).
    /// An end of file before `len` bytes is an `UnexpectedEof` error.
    pub fn fill_from(&mut self, file: &File, offset: u64, len: usize) -> io::Result<()> {
        if !self.holds(offset, len) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "more than the pipe holds"));
        }
        let mut at = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut left = len;
        while left > 0 {
            let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
            match splice(file, Some(&mut at), &self.pipe().write, None, left, flags) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read")),
                Ok(n) => {
                    left -= n;
                    self.held.fetch_add(n, Ordering::AcqRel);
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Send the next `len` bytes of the pipe into `socket`.
    pub(crate) async fn send(&self, socket: &TcpStream, len: usize) -> io::Result<()> {
        if len > self.held.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "more than the pipe holds"));
        }
        let mut left = len;
        while left > 0 {
            socket.writable().await?;
            let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
            let sent = socket.try_io(Interest::WRITABLE, || {
                splice(&self.pipe().read, None, socket, None, left, flags).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the socket took no data")),
                Ok(n) => {
                    left -= n;
                    self.held.fetch_sub(n, Ordering::AcqRel);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next `len` bytes of the pipe, read into memory (for a path that
    /// must look at them, such as a data digest).
    pub(crate) fn read(&self, len: usize) -> io::Result<bytes::Bytes> {
        let mut buf = vec![0u8; len];
        let mut at = 0;
        while at < len {
            match nix::unistd::read(&self.pipe().read, &mut buf[at..]) {
                Ok(0) | Err(Errno::EAGAIN) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the pipe ran dry"));
                }
                Ok(n) => {
                    at += n;
                    self.held.fetch_sub(n, Ordering::AcqRel);
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(buf.into())
    }
}

impl Drop for PooledPipe {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take() else { return };
        if *self.held.get_mut() == 0 {
            self.pool.free.lock().unwrap_or_else(PoisonError::into_inner).push(pipe);
        } else {
            drop(pipe);
            self.pool.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The next `len` bytes of a filled pipe, for one PDU's data segment. The
/// chunks of one pipe must be sent in the order they were cut, each once.
#[derive(Debug, Clone)]
pub struct PipeChunk {
    pipe: Arc<PooledPipe>,
    len: usize,
}

impl PipeChunk {
    /// The whole of what `pipe` holds.
    #[must_use]
    pub fn whole(pipe: PooledPipe) -> Self {
        let len = pipe.held.load(Ordering::Acquire);
        Self {
            pipe: Arc::new(pipe),
            len,
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A chunk of `len` of these bytes, to be sent after the chunks cut
    /// before it.
    #[must_use]
    pub fn cut(&self, len: usize) -> Self {
        Self {
            pipe: self.pipe.clone(),
            len: len.min(self.len),
        }
    }

    pub(crate) async fn send(&self, socket: &TcpStream) -> io::Result<()> {
        self.pipe.send(socket, self.len).await
    }

    pub(crate) fn read(&self) -> io::Result<bytes::Bytes> {
        self.pipe.read(self.len)
    }
}
