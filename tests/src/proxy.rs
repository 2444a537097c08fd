//! A TCP proxy on loopback that breaks connections on purpose: it cuts the
//! n-th connection after a given number of bytes from the initiator, can
//! then fall silent (forward nothing, answer nothing), stall that
//! connection alone, or refuse everything after, so a test can watch an
//! initiator recover or give up, or catch a writer in the middle of a write.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// What happens to a connection once it has carried its quota of bytes
/// from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close both sides at once (like a reset link or a crashed peer).
    Cut,
    /// Stop forwarding in both directions and keep the sockets open, and
    /// accept later connections without forwarding them (a target whose
    /// host hangs or whose network vanished).
    Freeze,
    /// Stop delivering the client's bytes (they are read and dropped) while
    /// the server's still reach the client, until the client goes away;
    /// then close the server's side too. Later connections are forwarded
    /// untouched (an initiator stuck in the middle of a write until it
    /// dies, then a new one).
    Stall,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// Client bytes after which connection i (in accept order) fails.
    cuts: Vec<u64>,
    fault: Fault,
    accepted: AtomicUsize,
    /// Connections that reached their quota and failed.
    faults: AtomicUsize,
    frozen: AtomicBool,
    /// After the last cut: close every new connection at once.
    refuse_after_cuts: bool,
    /// Sockets to close when the proxy is dropped.
    open: Mutex<Vec<TcpStream>>,
    stopping: AtomicBool,
}

/// The proxy; dropping it closes every connection it holds.
#[derive(Debug)]
pub struct FaultyProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultyProxy {
    /// Forward 127.0.0.1:`port` to `upstream`; connection i fails with
    /// `fault` after `cuts[i]` bytes from the client; later connections are
    /// forwarded untouched, or closed at once if `refuse_after_cuts`.
    pub fn start(upstream: SocketAddr, cuts: Vec<u64>, fault: Fault, refuse_after_cuts: bool) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream,
            cuts,
            fault,
            accepted: AtomicUsize::new(0),
            faults: AtomicUsize::new(0),
            frozen: AtomicBool::new(false),
            refuse_after_cuts,
            open: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let n = accepting.accepted.fetch_add(1, Ordering::SeqCst);
                let shared = accepting.clone();
                thread::spawn(move || shared.serve(client, n));
            }
        });
        Self { port, shared }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections broken so far (that carried their quota).
    pub fn faults(&self) -> usize {
        self.shared.faults.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn keep(&self, stream: &TcpStream) {
        if let Ok(s) = stream.try_clone() {
            self.open.lock().unwrap_or_else(PoisonError::into_inner).push(s);
        }
    }

    fn serve(self: Arc<Self>, client: TcpStream, n: usize) {
        self.keep(&client);
        if self.frozen.load(Ordering::SeqCst) {
            return; // held open, never answered
        }
        if n >= self.cuts.len() && self.refuse_after_cuts {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let Ok(server) = TcpStream::connect(self.upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        self.keep(&server);
        let quota = self.cuts.get(n).copied().unwrap_or(u64::MAX);
        let (c2, s2) = match (client.try_clone(), server.try_clone()) {
            (Ok(c), Ok(s)) => (c, s),
            _ => return,
        };
        let back = self.clone();
        thread::spawn(move || back.pump(s2, c2, u64::MAX));
        self.pump(client, server, quota);
    }

    /// Copy `from` to `to`; after `quota` bytes, apply the fault.
    fn pump(&self, mut from: TcpStream, mut to: TcpStream, quota: u64) {
        let mut buf = vec![0u8; 64 << 10];
        let mut sent = 0u64;
        loop {
            if self.frozen.load(Ordering::SeqCst) {
                return;
            }
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if self.frozen.load(Ordering::SeqCst) {
                return;
            }
            let room = usize::try_from(quota - sent).unwrap_or(usize::MAX).min(n);
            if to.write_all(&buf[..room]).is_err() {
                break;
            }
            sent += room as u64;
            if sent >= quota {
                self.faults.fetch_add(1, Ordering::SeqCst);
                match self.fault {
                    Fault::Cut => break,
                    Fault::Freeze => {
                        self.frozen.store(true, Ordering::SeqCst);
                        return;
                    }
                    Fault::Stall => {
                        while matches!(from.read(&mut buf), Ok(n) if n > 0) {}
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            Duration::from_millis(200),
        );
        for s in self
            .shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
