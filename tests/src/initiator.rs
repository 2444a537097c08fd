//! A blocking, one-command-at-a-time initiator built on `iscsi-proto`.
//!
//! It is a test instrument, not the product's initiator: simple enough to
//! trust by reading, and strict about what the target sends back.

use bytes::{Bytes, BytesMut};
use iscsi_proto::codec::{Decoded, Decoder, Direction, Encoder};
use iscsi_proto::discovery::{self, TargetRecord};
use iscsi_proto::login::{InitiatorConfig, InitiatorLogin, InitiatorStep, LoginError, LoginOutcome};
use iscsi_proto::pdu::{
    DataOut, Header, LogoutReason, LogoutRequest, LogoutResponseCode, NopOut, Pdu, Residual, ScsiCommand,
    TaskAttribute, TaskFunction, TaskMgmtRequest, TextRequest, TmfResponse,
};
use iscsi_proto::scsi::ScsiStatus;
use iscsi_proto::serial::TagAllocator;
use iscsi_proto::session::{CommandSequencer, ExpStatSn};
use iscsi_proto::text::{self, Pair};
use iscsi_proto::{CmdSn, DataSn, Itt, Lun, StatSn, Ttt};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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

    fn send(&mut self, pdu: &Pdu) -> io::Result<()> {
        let bytes = self.encoder.to_bytes(pdu).map_err(|e| protocol(e.to_string()))?;
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
    sequencer: CommandSequencer,
    exp_stat_sn: ExpStatSn,
    tags: TagAllocator,
    /// NOP-In pings the target sent and we answered.
    pub pings_answered: usize,
}

impl Session {
    /// Connect to `addr` and log in; a refused login is an error carrying the
    /// target's status.
    pub fn login(addr: &str, config: InitiatorConfig) -> io::Result<Result<Self, LoginError>> {
        let mut wire = Wire::connect(addr)?;
        let tags = TagAllocator::starting_at(config.itt.0.wrapping_add(1));
        let mut login = InitiatorLogin::new(config, nonce());
        let mut request = login.start();
        loop {
            wire.send(&request)?;
            match login.step(&wire.recv()?) {
                InitiatorStep::Send(next) => request = next,
                InitiatorStep::Complete(outcome) => {
                    wire.decoder.set_framing(outcome.connection.receive_framing());
                    wire.encoder.set_framing(outcome.connection.send_framing());
                    return Ok(Ok(Self {
                        wire,
                        sequencer: CommandSequencer::new(outcome.cmd_sn, outcome.cmd_sn, outcome.max_cmd_sn),
                        exp_stat_sn: ExpStatSn::new(outcome.stat_sn),
                        outcome: *outcome,
                        tags,
                        pings_answered: 0,
                    }));
                }
                InitiatorStep::Fail(err) => return Ok(Err(err)),
            }
        }
    }

    fn send(&mut self, pdu: &Pdu) -> io::Result<()> {
        self.wire.send(pdu)
    }

    /// Send bytes as they are, for tests of malformed input.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.stream.write_all(bytes)
    }

    /// The next PDU from the target, whatever it is (pings answered).
    pub fn next_pdu(&mut self) -> io::Result<Pdu> {
        self.recv()
    }

    /// Give up the session and keep only its socket (to play a dead peer).
    pub fn into_stream(self) -> TcpStream {
        self.wire.stream
    }

    /// Take the next CmdSN, for a command built by hand.
    pub fn take_cmd_sn(&mut self) -> io::Result<CmdSn> {
        self.cmd_sn()
    }

    /// The ExpStatSN to put in a PDU built by hand.
    pub fn exp_stat_sn(&self) -> StatSn {
        self.exp_stat_sn.get()
    }

    /// The encoder in force, to build PDUs by hand.
    pub fn encode(&self, pdu: &Pdu) -> Bytes {
        self.wire.encoder.to_bytes(pdu).unwrap_or_default()
    }

    /// The next PDU that is not a NOP-In ping; pings are answered on the way.
    fn recv(&mut self) -> io::Result<Pdu> {
        loop {
            let pdu = self.wire.recv()?;
            self.track(&pdu.header);
            if let Header::NopIn(nop) = &pdu.header
                && nop.itt.is_reserved()
            {
                if nop.wants_reply() {
                    let reply = NopOut {
                        immediate: true,
                        lun: nop.lun,
                        itt: Itt::RESERVED,
                        ttt: nop.ttt,
                        cmd_sn: self.sequencer.immediate(),
                        exp_stat_sn: self.exp_stat_sn.get(),
                    };
                    self.send(&Pdu::new(reply))?;
                    self.pings_answered += 1;
                }
                continue;
            }
            return Ok(pdu);
        }
    }

    fn track(&mut self, header: &Header) {
        if let Some((exp, max)) = header.command_window() {
            self.sequencer.update(exp, max);
        }
        if let Some(stat_sn) = header.stat_sn() {
            self.exp_stat_sn.received(stat_sn);
        }
    }

    fn cmd_sn(&mut self) -> io::Result<CmdSn> {
        self.sequencer
            .take()
            .ok_or_else(|| protocol("the target's command window is closed"))
    }

    /// Run one SCSI command: `cdb`, with `write` data out and up to
    /// `read_len` bytes in.
    pub fn command(&mut self, lun: Lun, cdb: &[u8], write: &[u8], read_len: u32) -> io::Result<Completion> {
        let itt = self.tags.next_itt();
        let session = self.outcome.session.clone();
        let max_send = self.outcome.connection.max_send_data_segment_length as usize;
        let first_burst = session.first_burst_length as usize;
        let immediate = if session.immediate_data {
            write.len().min(first_burst).min(max_send)
        } else {
            0
        };
        let unsolicited = if session.initial_r2t {
            immediate
        } else {
            write.len().min(first_burst)
        };
        let mut header = ScsiCommand {
            immediate: false,
            final_: unsolicited == immediate,
            read: read_len > 0,
            write: !write.is_empty(),
            attr: TaskAttribute::SIMPLE,
            lun,
            itt,
            expected_len: if write.is_empty() {
                read_len
            } else {
                u32::try_from(write.len()).unwrap_or(u32::MAX)
            },
            cmd_sn: self.cmd_sn()?,
            exp_stat_sn: self.exp_stat_sn.get(),
            cdb: [0; 16],
            ext_cdb: Bytes::new(),
            bidi_read_len: None,
        };
        header.set_cdb(cdb);
        self.send(&Pdu::with_data(header, Bytes::copy_from_slice(&write[..immediate])))?;
        if unsolicited > immediate {
            self.data_out(lun, itt, Ttt::RESERVED, write, immediate, unsolicited - immediate)?;
        }
        let mut data = vec![0u8; read_len as usize];
        loop {
            let pdu = self.recv()?;
            match &pdu.header {
                Header::R2t(r2t) if r2t.itt == itt => {
                    let (offset, len) = (r2t.buffer_offset as usize, r2t.desired_len as usize);
                    if offset + len > write.len() {
                        return Err(protocol(format!(
                            "R2T asks for {len} bytes at {offset} of {}",
                            write.len()
                        )));
                    }
                    self.data_out(lun, itt, r2t.ttt, write, offset, len)?;
                }
                Header::DataIn(d) if d.itt == itt => {
                    let at = d.buffer_offset as usize;
                    let end = at + pdu.data.len();
                    let slot = data
                        .get_mut(at..end)
                        .ok_or_else(|| protocol("Data-In beyond the read length"))?;
                    slot.copy_from_slice(&pdu.data);
                    if let Some(status) = d.status {
                        truncate_read(&mut data, d.residual);
                        return Ok(Completion {
                            status,
                            sense: None,
                            data,
                            residual: d.residual,
                        });
                    }
                }
                Header::ScsiResponse(r) if r.itt == itt => {
                    truncate_read(&mut data, r.residual);
                    let sense = iscsi_proto::pdu::sense_of_segment(&pdu.data).map(<[u8]>::to_vec);
                    return Ok(Completion {
                        status: r.status,
                        sense,
                        data,
                        residual: r.residual,
                    });
                }
                other => return Err(protocol(format!("unexpected {other:?}"))),
            }
        }
    }

    fn data_out(&mut self, lun: Lun, itt: Itt, ttt: Ttt, data: &[u8], offset: usize, len: usize) -> io::Result<()> {
        let max = self.outcome.connection.max_send_data_segment_length as usize;
        let chunks = data[offset..offset + len].chunks(max.max(1));
        let count = chunks.len();
        for (n, chunk) in chunks.enumerate() {
            let header = DataOut {
                final_: n + 1 == count,
                lun,
                itt,
                ttt,
                exp_stat_sn: self.exp_stat_sn.get(),
                data_sn: DataSn(n as u32),
                buffer_offset: (offset + n * max) as u32,
            };
            self.send(&Pdu::with_data(header, Bytes::copy_from_slice(chunk)))?;
        }
        Ok(())
    }

    /// A Text Request exchange, following continuations.
    pub fn text(&mut self, pairs: &[Pair]) -> io::Result<Vec<Pair>> {
        let itt = self.tags.next_itt();
        let mut ttt = Ttt::RESERVED;
        let mut data = text::encode(pairs);
        let mut whole = Vec::new();
        loop {
            let header = TextRequest {
                immediate: true,
                final_: true,
                cont: false,
                lun: Lun::ZERO,
                itt,
                ttt,
                cmd_sn: self.sequencer.immediate(),
                exp_stat_sn: self.exp_stat_sn.get(),
            };
            self.send(&Pdu::with_data(header, std::mem::take(&mut data)))?;
            let pdu = self.recv()?;
            let Header::TextResponse(rsp) = &pdu.header else {
                return Err(protocol(format!("expected a Text Response, got {:?}", pdu.header)));
            };
            whole.extend_from_slice(&pdu.data);
            if rsp.final_ {
                return text::parse(&whole).map_err(|e| protocol(e.to_string()));
            }
            ttt = rsp.ttt;
        }
    }

    /// SendTargets=All.
    pub fn send_targets(&mut self) -> io::Result<Vec<TargetRecord>> {
        Ok(discovery::parse_answer(&self.text(&[Pair::new("SendTargets", "All")])?))
    }

    /// Ping the target; returns the echoed data.
    pub fn ping(&mut self, data: &[u8]) -> io::Result<Bytes> {
        let itt = self.tags.next_itt();
        let header = NopOut {
            immediate: true,
            lun: Lun::ZERO,
            itt,
            ttt: Ttt::RESERVED,
            cmd_sn: self.sequencer.immediate(),
            exp_stat_sn: self.exp_stat_sn.get(),
        };
        self.send(&Pdu::with_data(header, Bytes::copy_from_slice(data)))?;
        let pdu = self.recv()?;
        match &pdu.header {
            Header::NopIn(nop) if nop.itt == itt => Ok(pdu.data),
            other => Err(protocol(format!("expected the NOP-In answer, got {other:?}"))),
        }
    }

    /// A task management function.
    pub fn task_management(&mut self, function: TaskFunction, lun: Lun, referenced: Itt) -> io::Result<TmfResponse> {
        let itt = self.tags.next_itt();
        let header = TaskMgmtRequest {
            immediate: true,
            function,
            lun,
            itt,
            referenced_task_tag: referenced,
            cmd_sn: self.sequencer.immediate(),
            exp_stat_sn: self.exp_stat_sn.get(),
            ref_cmd_sn: self.sequencer.immediate(),
            exp_data_sn: DataSn(0),
        };
        self.send(&Pdu::new(header))?;
        match self.recv()?.header {
            Header::TaskMgmtResponse(rsp) if rsp.itt == itt => Ok(rsp.response),
            other => Err(protocol(format!("expected a TMF response, got {other:?}"))),
        }
    }

    /// Close the session.
    pub fn logout(mut self) -> io::Result<LogoutResponseCode> {
        let itt = self.tags.next_itt();
        let header = LogoutRequest {
            immediate: true,
            reason: LogoutReason::CLOSE_SESSION,
            itt,
            cid: self.outcome.cid,
            cmd_sn: self.sequencer.immediate(),
            exp_stat_sn: self.exp_stat_sn.get(),
        };
        self.send(&Pdu::new(header))?;
        match self.recv()?.header {
            Header::LogoutResponse(rsp) if rsp.itt == itt => Ok(rsp.response),
            other => Err(protocol(format!("expected a Logout Response, got {other:?}"))),
        }
    }
}

fn truncate_read(data: &mut Vec<u8>, residual: Residual) {
    if let Residual::Underflow(n) = residual {
        data.truncate(data.len().saturating_sub(n as usize));
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
