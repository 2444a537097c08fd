//! Fetch the legacy auth token from the boot server over TFTP.
//!
//! Juno and Kilo conductors left `token-<deployment_id>` on the TFTP server and
//! the legacy ramdisk ran `tftp -r token-<id> -g $BOOT_SERVER`, sending the
//! content as `X-Auth-Token`. A ramdisk has no `tftp` binary to rely on, so this
//! is a small RFC 1350 reader: octet mode, 512-byte blocks, no options (a token
//! is a few dozen bytes; RFC 2347 negotiation would only add failure modes).
//!
//! Everything the server sends goes through [`Receiver`], which has no socket
//! and no clock; [`fetch`] only moves datagrams and keeps time. A malformed
//! packet from the server's transfer ID aborts the transfer with
//! [`TftpError::Protocol`] (after telling the server, ERROR 4): a server that
//! sends garbage once will not send the token later. Packets from any other
//! source are ignored as RFC 1350 asks.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// RFC 1350: "The data field is from zero to 512 bytes long."
const BLOCK: usize = 512;

mod opcode {
    pub const RRQ: u16 = 1;
    pub const DATA: u16 = 3;
    pub const ACK: u16 = 4;
    pub const ERROR: u16 = 5;
}

/// RFC 1350 error codes we send.
mod code {
    pub const DISK_FULL: u16 = 3;
    pub const ILLEGAL_OPERATION: u16 = 4;
    pub const UNKNOWN_TID: u16 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("TFTP socket error: {0}")]
    Io(#[from] io::Error),
    #[error("the TFTP server {server} did not send {file:?} in time; is it running and reachable?")]
    Timeout { server: SocketAddr, file: String },
    #[error("the TFTP server refused the transfer: {message} (TFTP error {code})")]
    Server { code: u16, message: String },
    #[error("the TFTP file is larger than {limit} bytes; the transfer was stopped")]
    TooLarge { limit: usize },
    #[error("TFTP protocol error: {0}")]
    Protocol(String),
}

/// What a reader can be sent by the server, parsed from untrusted bytes.
#[derive(Debug, PartialEq, Eq)]
enum Packet<'a> {
    Data { block: u16, data: &'a [u8] },
    Error { code: u16, message: String },
}

impl<'a> Packet<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let (op, rest) = split_u16(bytes).ok_or("a packet shorter than its opcode")?;
        let (number, rest) = split_u16(rest).ok_or_else(|| format!("a {}-byte packet", bytes.len()))?;
        match op {
            opcode::DATA if rest.len() > BLOCK => Err(format!("a DATA packet of {} bytes", rest.len())),
            opcode::DATA => Ok(Packet::Data {
                block: number,
                data: rest,
            }),
            opcode::ERROR => {
                // The message is NUL-terminated; a missing NUL is forgiven.
                let message = rest.split(|&b| b == 0).next().unwrap_or_default();
                let message = String::from_utf8_lossy(message).into_owned();
                Ok(Packet::Error { code: number, message })
            }
            other => Err(format!("unexpected opcode {other}")),
        }
    }
}

fn split_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*head), rest))
}

fn read_request(file: &str) -> Vec<u8> {
    let mut packet = opcode::RRQ.to_be_bytes().to_vec();
    packet.extend_from_slice(file.as_bytes());
    packet.extend_from_slice(b"\0octet\0");
    packet
}

fn ack(block: u16) -> Vec<u8> {
    [opcode::ACK.to_be_bytes(), block.to_be_bytes()].concat()
}

fn error(code: u16, message: &str) -> Vec<u8> {
    [
        &opcode::ERROR.to_be_bytes()[..],
        &code.to_be_bytes(),
        message.as_bytes(),
        b"\0",
    ]
    .concat()
}

/// What to do after one packet from the server's transfer ID.
#[derive(Debug)]
enum Step {
    /// Acknowledge this block and wait for the next.
    Ack(u16),
    /// Acknowledge this last block; the file is complete.
    Finished(u16),
    /// Nothing to do (a stray old block).
    Ignore,
    /// Tell the server `code`/`message`, then fail.
    Abort(u16, &'static str, TftpError),
    /// The server gave up; it expects no answer.
    Failed(TftpError),
}

/// The reading side of one transfer, without sockets or clocks.
#[derive(Debug)]
struct Receiver {
    received: Vec<u8>,
    max_bytes: usize,
    /// The last block acknowledged (None before block 1).
    acked: Option<u16>,
}

impl Receiver {
    fn new(max_bytes: usize) -> Self {
        Receiver {
            received: Vec::new(),
            max_bytes,
            acked: None,
        }
    }

    fn on_packet(&mut self, bytes: &[u8]) -> Step {
        // Past 65535 the block number rolls over to 0, as tftpd-hpa does by default.
        let expected = self.acked.map_or(1, |b| b.wrapping_add(1));
        match Packet::parse(bytes) {
            Err(why) => Step::Abort(
                code::ILLEGAL_OPERATION,
                "Illegal TFTP operation",
                TftpError::Protocol(why),
            ),
            Ok(Packet::Error { code, message }) => Step::Failed(TftpError::Server { code, message }),
            Ok(Packet::Data { block, data }) if block == expected => {
                if self.received.len().saturating_add(data.len()) > self.max_bytes {
                    let error = TftpError::TooLarge { limit: self.max_bytes };
                    return Step::Abort(code::DISK_FULL, "File larger than the client accepts", error);
                }
                self.received.extend_from_slice(data);
                self.acked = Some(block);
                // RFC 1350: "A data packet of less than 512 bytes signals termination of a transfer."
                if data.len() < BLOCK {
                    Step::Finished(block)
                } else {
                    Step::Ack(block)
                }
            }
            // Our ACK was lost and the server sent the block again: acknowledge it again.
            Ok(Packet::Data { block, .. }) if Some(block) == self.acked => Step::Ack(block),
            Ok(Packet::Data { .. }) => Step::Ignore,
        }
    }
}

/// Read `file` from the TFTP `server` (port included, normally 69).
///
/// `timeout` bounds the whole transfer; the last request or ACK is sent again
/// after `timeout / 5` (at least 200 ms) without an answer.
pub fn fetch(server: SocketAddr, file: &str, timeout: Duration, max_bytes: usize) -> Result<Vec<u8>, TftpError> {
    if file.is_empty() || file.contains('\0') {
        return Err(TftpError::Protocol(format!("{file:?} cannot be requested")));
    }
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    let timeout = timeout.min(Duration::from_secs(24 * 3600));
    let per_packet = (timeout / 5).max(Duration::from_millis(200));
    let deadline = Instant::now() + timeout;
    let mut receiver = Receiver::new(max_bytes);
    // The server answers from a new port, its transfer ID (TID); learnt from its first packet.
    let mut tid: Option<SocketAddr> = None;
    let (mut last, mut last_to) = (read_request(file), server);
    socket.send_to(&last, last_to)?;
    let mut resend_at = Instant::now() + per_packet;
    let mut buf = [0u8; 4 + BLOCK + 1];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(TftpError::Timeout {
                server,
                file: file.to_owned(),
            });
        }
        if now >= resend_at {
            socket.send_to(&last, last_to)?;
            resend_at = now + per_packet;
        }
        let wait = resend_at.min(deadline).saturating_duration_since(now);
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            // Timeouts, and ICMP "port unreachable" while the server is not up yet.
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let packet = buf.get(..len).unwrap_or_default();
        // RFC 1350: "If a source TID does not match, the packet should be discarded as erroneously
        // sent from somewhere else. An error packet should be sent to the source of the incorrect
        // packet, while not disturbing the transfer." (Never answer an ERROR with an ERROR.)
        if from.ip() != server.ip() || tid.is_some_and(|tid| tid != from) {
            if split_u16(packet).map(|(op, _)| op) != Some(opcode::ERROR) {
                let _ = socket.send_to(&error(code::UNKNOWN_TID, "Unknown transfer ID"), from);
            }
            continue;
        }
        tid = Some(from);
        match receiver.on_packet(packet) {
            Step::Ack(block) => {
                (last, last_to) = (ack(block), from);
                socket.send_to(&last, last_to)?;
                resend_at = Instant::now() + per_packet;
            }
            Step::Finished(block) => {
                // No dallying: if this ACK is lost the server retries, then gives up on its own.
                socket.send_to(&ack(block), from)?;
                return Ok(receiver.received);
            }
            Step::Ignore => {}
            Step::Abort(code, message, e) => {
                let _ = socket.send_to(&error(code, message), from);
                return Err(e);
            }
            Step::Failed(e) => return Err(e),
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        WouldBlock | TimedOut | Interrupted | ConnectionRefused | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::thread;

    fn data(block: u16, bytes: &[u8]) -> Vec<u8> {
        [&opcode::DATA.to_be_bytes()[..], &block.to_be_bytes(), bytes].concat()
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn packets_parse_and_emit() {
        assert_eq!(read_request("token-x"), b"\0\x01token-x\0octet\0");
        assert_eq!(ack(0x1234), [0, 4, 0x12, 0x34]);
        assert_eq!(error(5, "Unknown transfer ID"), b"\0\x05\0\x05Unknown transfer ID\0");
        assert_eq!(
            Packet::parse(b"\0\x03\0\x07ab"),
            Ok(Packet::Data { block: 7, data: b"ab" })
        );
        assert_eq!(
            Packet::parse(b"\0\x03\x01\x00"),
            Ok(Packet::Data { block: 256, data: b"" })
        );
        let not_found = Packet::Error {
            code: 1,
            message: "File not found".into(),
        };
        assert_eq!(Packet::parse(b"\0\x05\0\x01File not found\0"), Ok(not_found));
        let unterminated = Packet::Error {
            code: 0,
            message: "x".into(),
        };
        assert_eq!(Packet::parse(b"\0\x05\0\0x"), Ok(unterminated));
        for bad in [&b""[..], b"\0", b"\0\x03\0", b"\0\x06blksize\0", b"\0\x04\0\x01"] {
            assert!(Packet::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Packet::parse(&data(1, &[0xa5; BLOCK + 1])).is_err());
    }

    #[test]
    fn receiver_acks_duplicates_and_ignores_strays() {
        let mut rx = Receiver::new(4096);
        assert!(matches!(rx.on_packet(&data(0, b"early")), Step::Ignore));
        assert!(matches!(rx.on_packet(&data(1, &[1; BLOCK])), Step::Ack(1)));
        assert!(matches!(rx.on_packet(&data(1, &[9; BLOCK])), Step::Ack(1)));
        assert!(matches!(rx.on_packet(&data(3, b"ahead")), Step::Ignore));
        assert!(matches!(rx.on_packet(&data(2, b"end")), Step::Finished(2)));
        assert_eq!(rx.received, [&[1; BLOCK][..], b"end"].concat());
    }

    #[test]
    fn receiver_limits_and_server_errors() {
        let mut rx = Receiver::new(BLOCK);
        assert!(matches!(rx.on_packet(&data(1, &[0; BLOCK])), Step::Ack(1)));
        assert!(
            matches!(rx.on_packet(&data(2, b"")), Step::Finished(2)),
            "exactly the limit is fine"
        );
        let mut rx = Receiver::new(BLOCK - 1);
        let step = rx.on_packet(&data(1, &[0; BLOCK]));
        assert!(
            matches!(step, Step::Abort(3, _, TftpError::TooLarge { limit: 511 })),
            "{step:?}"
        );
        let step = Receiver::new(10).on_packet(b"\0\x05\0\x02Access violation\0");
        assert!(
            matches!(step, Step::Failed(TftpError::Server { code: 2, ref message }) if message == "Access violation")
        );
        let step = Receiver::new(10).on_packet(b"\0\x06tsize\x0010\0");
        assert!(matches!(step, Step::Abort(4, _, TftpError::Protocol(_))), "{step:?}");
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        let mut rx = Receiver::new(usize::MAX);
        let full = [0xa5; BLOCK];
        for n in 1..=65_536u32 {
            let block = n as u16; // 65536 wraps to 0
            assert!(
                matches!(rx.on_packet(&data(block, &full)), Step::Ack(b) if b == block),
                "block {n}"
            );
        }
        assert!(
            matches!(rx.on_packet(&data(0, &full)), Step::Ack(0)),
            "a duplicate after the wrap"
        );
        assert!(matches!(rx.on_packet(&data(1, b"tail")), Step::Finished(1)));
        assert_eq!(rx.received.len(), 65_536 * BLOCK + 4);
    }

    /// A scripted server: `script` gets the "port 69" socket and the client's request.
    fn scripted(script: impl FnOnce(UdpSocket, SocketAddr) + Send + 'static) -> SocketAddr {
        let listen = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = listen.local_addr().unwrap();
        thread::spawn(move || {
            listen.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 600];
            let (_, client) = listen.recv_from(&mut buf).unwrap();
            script(listen, client);
        });
        addr
    }

    /// A new transfer socket (the server's TID).
    fn tid() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        socket
    }

    fn expect(socket: &UdpSocket, want: &[u8]) {
        let mut buf = [0u8; 600];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }

    #[test]
    fn silent_server_times_out_after_resending_the_request() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let result = fetch(addr, "token-x", Duration::from_millis(500), 100);
        assert!(matches!(result, Err(TftpError::Timeout { server, ref file }) if server == addr && file == "token-x"));
        silent.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 600];
        let mut requests = 0;
        while let Ok((n, _)) = silent.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"\0\x01token-x\0octet\0");
            requests += 1;
        }
        assert!(requests >= 2, "the request was sent {requests} times");
    }

    #[test]
    fn packets_from_other_ports_are_refused_and_ignored() {
        let server = scripted(|_, client| {
            let (t, rogue) = (tid(), tid());
            t.send_to(&data(1, &[7; BLOCK]), client).unwrap();
            expect(&t, &ack(1));
            rogue.send_to(&data(2, b"forged"), client).unwrap();
            expect(&rogue, &error(code::UNKNOWN_TID, "Unknown transfer ID"));
            t.send_to(&data(2, b"real"), client).unwrap();
            expect(&t, &ack(2));
        });
        let got = fetch(server, "f", Duration::from_secs(10), 4096).unwrap();
        assert_eq!(got, [&[7; BLOCK][..], b"real"].concat());
    }

    #[test]
    fn duplicate_blocks_and_lost_acks() {
        let server = scripted(|_, client| {
            let t = tid();
            t.send_to(&data(1, &[1; BLOCK]), client).unwrap();
            expect(&t, &ack(1));
            expect(&t, &ack(1)); // "lost": the client must send it again on its own
            t.send_to(&data(1, &[1; BLOCK]), client).unwrap();
            expect(&t, &ack(1));
            t.send_to(&data(2, &[2; 3]), client).unwrap();
            expect(&t, &ack(2));
        });
        let got = fetch(server, "f", Duration::from_secs(10), 4096).unwrap();
        assert_eq!(got, [&[1; BLOCK][..], &[2; 3]].concat());
    }

    #[test]
    fn oversized_transfer_is_stopped_and_the_server_told() {
        let (done, told) = std::sync::mpsc::channel();
        let server = scripted(move |_, client| {
            let t = tid();
            t.send_to(&data(1, &[0; BLOCK]), client).unwrap();
            expect(&t, &ack(1));
            t.send_to(&data(2, &[0; BLOCK]), client).unwrap();
            let mut buf = [0u8; 600];
            let (n, _) = t.recv_from(&mut buf).unwrap();
            done.send(buf[..n.min(4)].to_vec()).unwrap();
        });
        let result = fetch(server, "f", Duration::from_secs(10), 1000);
        assert!(matches!(result, Err(TftpError::TooLarge { limit: 1000 })), "{result:?}");
        assert_eq!(told.recv_timeout(Duration::from_secs(10)).unwrap(), [0, 5, 0, 3]);
    }

    #[test]
    fn malformed_packet_is_a_protocol_error() {
        let (done, told) = std::sync::mpsc::channel();
        let server = scripted(move |_, client| {
            let t = tid();
            t.send_to(&[0, 3, 0], client).unwrap();
            let mut buf = [0u8; 600];
            let (n, _) = t.recv_from(&mut buf).unwrap();
            done.send(buf[..n.min(4)].to_vec()).unwrap();
        });
        let result = fetch(server, "f", Duration::from_secs(10), 1000);
        assert!(matches!(result, Err(TftpError::Protocol(_))), "{result:?}");
        assert_eq!(told.recv_timeout(Duration::from_secs(10)).unwrap(), [0, 5, 0, 4]);
    }

    /// Debian's tftpd-hpa, run in the foreground on a free loopback port.
    struct Tftpd(Child);

    impl Drop for Tftpd {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start_tftpd(dir: &Path) -> (Tftpd, SocketAddr) {
        let addr = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let bin = ["/usr/sbin/in.tftpd", "/sbin/in.tftpd"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let child = Command::new(bin.unwrap_or("in.tftpd"))
            .args(["--foreground", "--address", &addr.to_string(), "--secure"])
            .arg(dir)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run in.tftpd ({e}): install Debian's tftpd-hpa (apt-get install tftpd-hpa)")
            });
        let mut server = Tftpd(child);
        // Ready once the port is taken; in.tftpd needs root to chroot and drop to "nobody".
        for _ in 0..250 {
            if let Some(status) = server.0.try_wait().unwrap() {
                let mut stderr = String::new();
                io::Read::read_to_string(&mut server.0.stderr.take().unwrap(), &mut stderr).unwrap();
                panic!("in.tftpd exited with {status} (it must run as root): {stderr}");
            }
            if UdpSocket::bind(addr).is_err() {
                return (server, addr);
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("in.tftpd did not bind {addr}");
    }

    #[test]
    fn real_tftpd_hpa() {
        let dir = tempfile::tempdir().unwrap();
        // in.tftpd serves world-readable files only, as the user "nobody".
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sizes = [0, 1, 511, 512, 1000, 70_000];
        for len in sizes {
            let path = dir.path().join(format!("token-{len}"));
            std::fs::write(&path, content(len)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let (_tftpd, addr) = start_tftpd(dir.path());
        for len in sizes {
            let got = fetch(addr, &format!("token-{len}"), Duration::from_secs(5), 70_000).unwrap();
            assert_eq!(got, content(len), "{len} bytes");
        }
        let result = fetch(addr, "token-70000", Duration::from_secs(5), 69_999);
        assert!(
            matches!(result, Err(TftpError::TooLarge { limit: 69_999 })),
            "{result:?}"
        );
        let result = fetch(addr, "token-missing", Duration::from_secs(5), 1000);
        assert!(matches!(result, Err(TftpError::Server { code: 1, .. })), "{result:?}");
    }
}
