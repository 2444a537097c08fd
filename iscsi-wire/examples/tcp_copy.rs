//! The limit `tools/bench` measures the deploy path against: a file's bytes
//! copied over loopback TCP into an existing file of the same size, with no
//! protocol at all, the fastest way Linux offers: `sendfile` from the source
//! file into the socket, `splice` from the socket through a pipe into the
//! destination file. Nothing is read into this program's memory.
//!
//! ```text
//! tcp_copy SOURCE DESTINATION
//! ```
//!
//! Prints one line of JSON: the bytes copied, the seconds the copy took, and
//! the CPU seconds of both ends (this one process, its two threads).

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::sendfile::sendfile64;
use std::fs::{File, OpenOptions};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, destination] = args.as_slice() else {
        return Err("usage: tcp_copy SOURCE DESTINATION (an existing file, not truncated)".into());
    };
    let source = File::open(source)?;
    let len = source.metadata()?.len();
    let destination = OpenOptions::new().write(true).open(destination)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let receiver = std::thread::spawn(move || -> Result<u64, Error> {
        let (socket, _) = listener.accept()?;
        receive(&socket, &destination)
    });
    let socket = TcpStream::connect(addr)?;
    let mut offset = 0i64;
    while (offset as u64) < len {
        let left = usize::try_from(len - offset as u64).unwrap_or(usize::MAX).min(1 << 30);
        if sendfile64(&socket, &source, Some(&mut offset), left)? == 0 {
            return Err("the source file ended early".into());
        }
    }
    drop(socket);
    let received = receiver.join().map_err(|_| "the receiver panicked")??;
    let seconds = started.elapsed().as_secs_f64();
    if received != len {
        return Err(format!("received {received} of {len} bytes").into());
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let cpu = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    println!(
        "{{\"bytes\": {len}, \"seconds\": {seconds:.6}, \"cpu_seconds\": {:.6}}}",
        cpu(usage.user_time()) + cpu(usage.system_time())
    );
    Ok(())
}

/// Splice everything the socket brings into `file` from its start.
fn receive(socket: &TcpStream, file: &File) -> Result<u64, Error> {
    let (pipe_out, pipe_in) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // As large a pipe as an unprivileged process gets; the default works too.
    let _ = fcntl(&pipe_in, FcntlArg::F_SETPIPE_SZ(1 << 20));
    let mut at = 0i64;
    loop {
        let held = splice(socket, None, &pipe_in, None, 1 << 20, SpliceFFlags::SPLICE_F_MOVE)?;
        if held == 0 {
            return Ok(at as u64);
        }
        let mut left = held;
        while left > 0 {
            left -= splice(&pipe_out, None, file, Some(&mut at), left, SpliceFFlags::SPLICE_F_MOVE)?;
        }
    }
}
