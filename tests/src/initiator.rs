//! A blocking, one-request-at-a-time initiator: a test instrument around
//! `iscsi-proto`'s own initiator machine.
//!
//! It runs each request to its answer on a plain socket, so a test reads
//! like a script, and it keeps the escape hatches a test needs to play a
//! misbehaving initiator (raw bytes, hand-built PDUs, the next raw PDU).

use bytes::{Bytes, BytesMut};
use iscsi_proto::codec::{Decoded, Decoder, Direction, Encoder};
use iscsi_proto::discovery::{self, TargetRecord};
use iscsi_proto::initiator::{self, Event, Liveness, Request};
use iscsi_proto::login::{InitiatorConfig, InitiatorLogin, InitiatorStep, LoginError, LoginOutcome};
use iscsi_proto::pdu::{Header, LogoutResponseCode, Pdu, Residual, TaskFunction, TmfResponse};
use iscsi_proto::scsi::ScsiStatus;
use iscsi_proto::text::Pair;
use iscsi_proto::{CmdSn, Itt, Lun, StatSn};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn protocol(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// How a command ended.
#[derive(Debug)]
pub struct Completion {
    pub status: ScsiStatus,
    pub sense: Option<Vec<u8>>,
    pub data: Vec<u8>,
    pub residual: Residual,
}

/// The byte stream and its framing.
#[derive(Debug)]
struct Wire {
    stream: TcpStream,
    rx: BytesMut,
    decoder: Decoder,
    encoder: Encoder,
}

impl Wire {
    fn connect(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            rx: BytesMut::with_capacity(64 * 1024),
            decoder: Decoder::new(Direction::FromTarget),
            encoder: Encoder::new(),
        })
    }

    fn send(&mut self, header: &Header, data: Bytes) -> io::Result<()> {
        let pdu = Pdu::with_data(header.clone(), data);
        let bytes = self.encoder.to_bytes(&pdu).map_err(|e| protocol(e.to_string()))?;
        self.stream.write_all(&bytes)
    }

    fn recv(&mut self) -> io::Result<Pdu> {
        loop {
            match self.decoder.decode(&mut self.rx).map_err(|e| protocol(e.to_string()))? {
                Decoded::Pdu(pdu) => return Ok(pdu),
                Decoded::NeedMore(n) => {
                    let mut chunk = vec![0u8; n.max(4096)];
                    let got = self.stream.read(&mut chunk)?;
                    if got == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "target closed the connection",
                        ));
                    }
                    self.rx.extend_from_slice(&chunk[..got]);
                }
            }
        }
    }
}

/// A logged-in connection.
#[derive(Debug)]
pub struct Session {
    wire: Wire,
    pub outcome: LoginOutcome,
    machine: initiator::Connection<Bytes>,
    /// NOP-In pings the target sent and we answered.
    pub pings_answered: usize,
}

impl Session {
    /// Connect to `addr` and log in; a refused login is an error carrying the
    /// target's status.
    pub fn login(addr: &str, config: InitiatorConfig) -> io::Result<Result<Self, LoginError>> {
        let mut wire = Wire::connect(addr)?;
        let mut login = InitiatorLogin::new(config, nonce());
        let mut request = login.start();
        loop {
            wire.send(&request.header, request.data.clone())?;
            match login.step(&wire.recv()?) {
                InitiatorStep::Send(next) => request = next,
                InitiatorStep::Complete(outcome) => {
                    wire.decoder.set_framing(outcome.connection.receive_framing());
                    wire.encoder.set_framing(outcome.connection.send_framing());
                    // A test waits as long as its socket's read timeout.
                    let liveness = Liveness {
                        ping_after: Duration::from_secs(3600),
                        dead_after: Duration::from_secs(3600),
                    };
                    return Ok(Ok(Self {
                        wire,
                        machine: initiator::Connection::new(&outcome, liveness, Instant::now()),
                        outcome: *outcome,
                        pings_answered: 0,
                    }));
                }
                InitiatorStep::Fail(err) => return Ok(Err(err)),
            }
        }
    }

    /// Send bytes as they are, for tests of malformed input.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.stream.write_all(bytes)
    }

    /// The next PDU from the target as it came, whatever it is; pings are
    /// answered on the way.
    pub fn next_pdu(&mut self) -> io::Result<Pdu> {
        loop {
            let pdu = self.wire.recv()?;
            if let Header::NopIn(nop) = &pdu.header
                && nop.itt.is_reserved()
            {
                self.machine.handle_pdu(pdu, Instant::now());
                self.flush()?;
                continue;
            }
            return Ok(pdu);
        }
    }

    /// Give up the session and keep only its socket (to play a dead peer).
    pub fn into_stream(self) -> TcpStream {
        self.wire.stream
    }

    /// Take the next CmdSN, for a command built by hand.
    pub fn take_cmd_sn(&mut self) -> io::Result<CmdSn> {
        self.machine
            .take_cmd_sn()
            .ok_or_else(|| protocol("the target's command window is closed"))
    }

    /// The ExpStatSN to put in a PDU built by hand.
    pub fn exp_stat_sn(&self) -> StatSn {
        self.machine.exp_stat_sn()
    }

    /// The encoder in force, to build PDUs by hand.
    pub fn encode(&self, pdu: &Pdu) -> Bytes {
        self.wire.encoder.to_bytes(pdu).unwrap_or_default()
    }

    /// Send what the machine has to send.
    fn flush(&mut self) -> io::Result<()> {
        while let Some(t) = self.machine.poll_transmit() {
            if matches!(&t.header, Header::NopOut(n) if n.itt.is_reserved()) {
                self.pings_answered += 1;
            }
            self.wire.send(&t.header, t.data)?;
        }
        Ok(())
    }

    /// Run `request` to its answer.
    fn run(&mut self, request: Request<Bytes>) -> io::Result<Event> {
        let itt = self.machine.submit(request, Instant::now());
        loop {
            self.flush()?;
            while let Some(event) = self.machine.poll_event() {
                match event {
                    Event::Lost(why) => return Err(protocol(why)),
                    event if answers(&event, itt) => return Ok(event),
                    _ => {}
                }
            }
            let pdu = self.wire.recv()?;
            self.machine.handle_pdu(pdu, Instant::now());
        }
    }

    /// Run one SCSI command: `cdb`, with `write` data out and up to
    /// `read_len` bytes in.
    pub fn command(&mut self, lun: Lun, cdb: &[u8], write: &[u8], read_len: u32) -> io::Result<Completion> {
        let request = Request::Scsi {
            lun,
            cdb: cdb.to_vec(),
            data_out: Bytes::copy_from_slice(write),
            read_len,
        };
        match self.run(request)? {
            Event::Completed {
                status,
                sense,
                data,
                residual,
                ..
            } => Ok(Completion {
                status,
                sense: sense.map(|s| s.to_vec()),
                data: data.to_vec(),
                residual,
            }),
            Event::Rejected { reason, .. } => Err(protocol(format!("rejected: {reason:?}"))),
            other => Err(protocol(format!("unexpected {other:?}"))),
        }
    }

    /// A Text Request exchange, following continuations.
    pub fn text(&mut self, pairs: &[Pair]) -> io::Result<Vec<Pair>> {
        match self.run(Request::Text(pairs.to_vec()))? {
            Event::Text { pairs, .. } => Ok(pairs),
            other => Err(protocol(format!("expected a Text Response, got {other:?}"))),
        }
    }

    /// SendTargets=All.
    pub fn send_targets(&mut self) -> io::Result<Vec<TargetRecord>> {
        Ok(discovery::parse_answer(&self.text(&[Pair::new("SendTargets", "All")])?))
    }

    /// Ping the target with `data`; returns the data echoed.
    pub fn ping(&mut self, data: &[u8]) -> io::Result<Bytes> {
        match self.run(Request::Ping(Bytes::copy_from_slice(data)))? {
            Event::Pong { data, .. } => Ok(data),
            other => Err(protocol(format!("expected the NOP-In answer, got {other:?}"))),
        }
    }

    /// A task management function.
    pub fn task_management(&mut self, function: TaskFunction, lun: Lun, referenced: Itt) -> io::Result<TmfResponse> {
        let request = Request::TaskManagement {
            function,
            lun,
            referenced,
        };
        match self.run(request)? {
            Event::TaskManagement { response, .. } => Ok(response),
            other => Err(protocol(format!("expected a TMF response, got {other:?}"))),
        }
    }

    /// Close the session.
    pub fn logout(mut self) -> io::Result<LogoutResponseCode> {
        match self.run(Request::Logout)? {
            Event::LoggedOut { response, .. } => Ok(response),
            other => Err(protocol(format!("expected a Logout Response, got {other:?}"))),
        }
    }
}

/// Whether `event` is the answer to `itt`.
fn answers(event: &Event, itt: Itt) -> bool {
    match event {
        Event::Completed { itt: i, .. }
        | Event::Text { itt: i, .. }
        | Event::Pong { itt: i, .. }
        | Event::TaskManagement { itt: i, .. }
        | Event::LoggedOut { itt: i, .. }
        | Event::Rejected { itt: i, .. } => *i == itt,
        Event::LogoutRequested { .. } | Event::Lost(_) => false,
    }
}

/// Enough randomness for a test's CHAP challenges.
fn nonce() -> [u8; 64] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 64];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}
