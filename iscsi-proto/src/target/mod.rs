//! The target's side of the full feature phase of one connection, as a
//! state machine: PDUs and time in, PDUs to send and work to do out.
//!
//! The program owns the socket, the disk and the SCSI semantics (what a CDB
//! means, unit attentions, reservations); this machine owns the rules of
//! RFC 7143: the command window, early commands, the data phase of a write
//! (immediate data, unsolicited Data-Out, R2Ts, DataSN), Data-In sequences
//! and status, task management, NOP keepalives, text requests and
//! SendTargets, logout, and the Reject or sense that answers each
//! violation.
//!
//! The loop around it: hand it each PDU ([`Connection::handle_pdu`]), or a
//! PDU's head when its data segment is still on the socket
//! ([`Connection::handle_head`]); drain [`Connection::poll_event`] and act
//! on each event; answer commands with [`Connection::respond`]; send what
//! [`Connection::poll_transmit`] yields; wake it at
//! [`Connection::poll_timeout`].
//!
//! # Layout
//!
//! - `mod.rs`: [`Connection`], its configuration, events and transmits;
//!   what each PDU does.
//! - `tasks`: a command's life: its data phase, its answer.
//! - `management`: task management functions and logout.
//! - [`window`]: the command window and its slots.

mod management;
mod tasks;
pub mod window;

use crate::codec::{DecodeError, Head};
use crate::discovery::{self, SendTargetsRequest, TargetRecord, TextResponseSequence};
use crate::error::Scope;
use crate::login::LoginOutcome;
use crate::negotiate::{Negotiator, Preferences, Role, SessionType};
use crate::pdu::{
    BHS_LEN, Header, NopIn, NopOut, Pdu, Reject, RejectReason, ScsiCommand, Stage, TextRequest, TextResponse,
};
use crate::segment::Segment;
use crate::serial::TagAllocator;
use crate::session::{StatSnCounter, stamp};
use crate::text::{self, Pair, TextAccumulator};
use crate::{CmdSn, Itt, Lun, StatSn, Ttt};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};
use tasks::Task;
use window::{Admission, Window};

pub use management::Reset;
pub use tasks::{Command, Response, data_phase_answer};

/// What a connection is told at its start.
#[derive(Debug, Clone)]
pub struct Config {
    /// This target's name, for SendTargets.
    pub target_name: String,
    /// This portal's TargetAddress: `address:port,portal-group-tag`.
    pub portal: String,
    /// The LUN of the disk: task management on other LUNs (but 0) finds no
    /// LUN there.
    pub lun: u16,
    /// What full feature phase text negotiation accepts.
    pub prefs: Preferences,
    /// The command window's width.
    pub queue_depth: u32,
    /// After this much silence from the initiator, ping it (NOP-In).
    pub nop_interval: Duration,
    /// A ping unanswered for this long loses the connection.
    pub nop_timeout: Duration,
}

/// What the program must do.
#[derive(Debug)]
pub enum Event {
    /// A SCSI command, in CmdSN order. A write's data follows in
    /// [`Event::Data`] events (or in segments routed by
    /// [`Connection::handle_head`]); run the command at [`Event::Ready`].
    Command(Command),
    /// Write data of a command, at `offset` in its data, checked against
    /// the rules of the data phase.
    Data { itt: Itt, offset: u32, data: Bytes },
    /// All of a command's data is in (or it has none): run it, then
    /// [`Connection::respond`].
    Ready(Itt),
    /// The command's data phase broke the rules: the machine has answered it
    /// itself. Forget it; do not respond.
    Failed(Itt),
    /// Task management aborted these commands. Forget those not yet
    /// [`Event::Ready`]; stop the others if you can, and
    /// [`Connection::respond`] to each when it has stopped (the answer is
    /// not sent).
    Abort(Vec<Itt>),
    /// Task management reset a logical unit or the target: reset what the
    /// SCSI state holds (reservations, mode pages) and raise the unit
    /// attention SAM-5 asks for.
    Reset(Reset),
    /// The connection is over: close it once what is queued has been sent.
    Close(Close),
}

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Close {
    #[error("logged out")]
    LoggedOut,
    #[error("the initiator stopped answering NOP-In pings")]
    PingUnanswered,
    #[error("a target cold reset drops every connection")]
    ColdReset,
    #[error("{0}")]
    Protocol(String),
}

/// A PDU to send, its sequence numbers filled in.
#[derive(Debug, Clone)]
pub struct Transmit<D> {
    pub header: Header,
    pub data: D,
}

/// Where the data segment of a PDU handed in as a head goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Read the segment in and hand the whole PDU to
    /// [`Connection::handle_pdu`].
    Memory,
    /// The segment is `itt`'s write data at `offset`, already accounted for:
    /// move it to the command (no [`Event::Data`] comes for it), then call
    /// [`Connection::segment_done`].
    Task { itt: Itt, offset: u32 },
    /// Take the segment off the stream and drop it.
    Discard,
}

/// The full feature phase of one connection, as the target sees it.
#[derive(Debug)]
pub struct Connection<D> {
    config: Config,
    session_type: SessionType,
    /// The initiator's MaxRecvDataSegmentLength.
    max_send: u32,
    session: crate::negotiate::SessionParams,
    cid: crate::pdu::Cid,
    window: Window,
    stat_sn: StatSnCounter,
    tasks: HashMap<Itt, Task>,
    /// Commands inside the window that arrived ahead of a gap.
    held: BTreeMap<u32, Pdu>,
    /// Recently aborted tasks, whose late Data-Out is dropped quietly.
    aborted: VecDeque<Itt>,
    ttts: TagAllocator,
    /// Our outstanding NOP-In ping and when it left.
    ping: Option<(Ttt, Instant)>,
    last_heard: Instant,
    text_in: TextAccumulator,
    text_out: Option<TextResponseSequence>,
    /// A segment routed to a task, whose accounting waits for its bytes.
    routed: Option<Itt>,
    management: management::Pending,
    transmits: VecDeque<Transmit<D>>,
    events: VecDeque<Event>,
    closed: bool,
}

impl<D: Segment> Connection<D> {
    /// The full feature phase after `login`, at `now`.
    #[must_use]
    pub fn new(login: &LoginOutcome, config: Config, now: Instant) -> Self {
        Self {
            session_type: login.session_type,
            max_send: login.connection.max_send_data_segment_length,
            session: login.session.clone(),
            cid: login.cid,
            window: Window::new(login.cmd_sn, config.queue_depth),
            stat_sn: StatSnCounter::new(login.stat_sn),
            config,
            tasks: HashMap::new(),
            held: BTreeMap::new(),
            aborted: VecDeque::new(),
            ttts: TagAllocator::starting_at(0x1000),
            ping: None,
            last_heard: now,
            text_in: TextAccumulator::default(),
            text_out: None,
            routed: None,
            management: management::Pending::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    fn discovery(&self) -> bool {
        self.session_type == SessionType::Discovery
    }

    /// The next thing the program must do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next PDU to send, with StatSN, ExpCmdSN and MaxCmdSN as of now.
    pub fn poll_transmit(&mut self) -> Option<Transmit<D>> {
        let mut t = self.transmits.pop_front()?;
        stamp(
            &mut t.header,
            &mut self.stat_sn,
            self.window.exp_cmd_sn(),
            self.window.max_cmd_sn(),
        );
        Some(t)
    }

    /// When [`Connection::handle_timeout`] is due: a NOP-In ping, or its
    /// answer's deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        Some(match self.ping {
            Some((_, sent)) => sent + self.config.nop_timeout,
            None => self.last_heard + self.config.nop_interval,
        })
    }

    /// Time has passed: ping a silent initiator, or give up on it.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.poll_timeout() {
            Some(due) if now >= due => {}
            _ => return,
        }
        if self.ping.is_some() {
            self.close(Close::PingUnanswered);
            return;
        }
        let ttt = self.ttts.next_ttt();
        self.ping = Some((ttt, now));
        self.send(
            NopIn {
                lun: Lun::ZERO,
                itt: Itt::RESERVED,
                ttt,
                stat_sn: StatSn(0),
                exp_cmd_sn: CmdSn(0),
                max_cmd_sn: CmdSn(0),
            },
            Bytes::new(),
        );
    }

    /// Commands admitted and not yet ended.
    #[must_use]
    pub fn commands_in_flight(&self) -> u32 {
        self.window.in_flight()
    }

    /// Whether the connection has nothing left to do but close.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn send(&mut self, header: impl Into<Header>, data: impl Into<D>) {
        self.transmits.push_back(Transmit {
            header: header.into(),
            data: data.into(),
        });
    }

    fn close(&mut self, why: Close) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(Event::Close(why));
        }
    }

    /// A Reject carrying `header` back (RFC 7143 11.17: "the complete
    /// header of the PDU that caused the reject").
    fn reject(&mut self, reason: RejectReason, header: &Header) {
        let mut bhs = [0u8; BHS_LEN];
        header.emit(&mut bhs, 0);
        self.reject_bhs(reason, Bytes::copy_from_slice(&bhs));
    }

    fn reject_bhs(&mut self, reason: RejectReason, bhs: Bytes) {
        self.send(Reject::new(reason, StatSn(0), CmdSn(0), CmdSn(0)), bhs);
    }

    /// A PDU that could not be decoded. One whose scope is the PDU is
    /// answered with the Reject its error maps to; the rest lose the
    /// connection.
    pub fn handle_decode_error(&mut self, error: &DecodeError, now: Instant) {
        self.last_heard = now;
        match (error.scope(), error.reject_reason()) {
            (Scope::Pdu, reason) => {
                let reason = reason.unwrap_or(RejectReason::PROTOCOL_ERROR);
                self.reject_bhs(reason, Bytes::copy_from_slice(error.bhs()));
            }
            _ => self.close(Close::Protocol(error.to_string())),
        }
    }

    /// One PDU, data segment included.
    pub fn handle_pdu(&mut self, pdu: Pdu, now: Instant) {
        self.last_heard = now;
        if self.closed {
            return;
        }
        self.handle_one(pdu);
        self.handle_held();
    }

    /// A PDU whose data segment has not arrived yet: where that segment
    /// goes. A write's data can go to its command without passing through
    /// the machine; anything else is read in ([`Route::Memory`]).
    pub fn handle_head(&mut self, head: &Head, now: Instant) -> Route {
        self.last_heard = now;
        if self.closed || self.discovery() || self.routed.is_some() {
            return Route::Memory;
        }
        let len = u32::try_from(head.data_len).unwrap_or(u32::MAX);
        match &head.header {
            Header::ScsiCommand(cmd) => {
                // Only a command admitted now can take its data now; held
                // and ignored ones are read in as whole PDUs.
                if cmd.immediate || cmd.cmd_sn != self.window.exp_cmd_sn() {
                    return Route::Memory;
                }
                let cmd = cmd.clone();
                match self.window.admit(cmd.cmd_sn, false) {
                    Admission::InOrder(slot) => self.start(cmd, Some(slot), Incoming::Routed(len)),
                    // A full window: the command is ignored, its data too.
                    _ => Route::Discard,
                }
            }
            Header::DataOut(h) => {
                let h = h.clone();
                self.data_out(&h, Incoming::Routed(len))
            }
            _ => Route::Memory,
        }
    }

    /// The segment of the last [`Route::Task`] has been moved: what comes
    /// after its data (R2Ts, or the command is ready).
    pub fn segment_done(&mut self) {
        if let Some(itt) = self.routed.take() {
            self.after_data(itt);
            self.handle_held();
        }
    }

    fn handle_one(&mut self, pdu: Pdu) {
        let Pdu { header, data } = pdu;
        match header {
            Header::ScsiCommand(cmd) if !self.discovery() => match self.window.admit(cmd.cmd_sn, cmd.immediate) {
                Admission::Immediate => {
                    self.start(cmd, None, Incoming::Memory(data));
                }
                Admission::InOrder(slot) => {
                    self.start(cmd, Some(slot), Incoming::Memory(data));
                }
                Admission::Early => {
                    self.held.insert(cmd.cmd_sn.0, Pdu::with_data(cmd, data));
                }
                Admission::Ignore => {}
            },
            Header::DataOut(h) if !self.discovery() => {
                self.data_out(&h, Incoming::Memory(data));
            }
            Header::NopOut(h) => self.nop_out(h, data),
            Header::TextRequest(h) => {
                let cmd_sn = h.cmd_sn;
                self.admitted(
                    cmd_sn,
                    h.immediate,
                    Header::TextRequest(h),
                    data,
                    |this, header, data| {
                        if let Header::TextRequest(h) = header {
                            this.text(&h, &data);
                        }
                    },
                );
            }
            Header::TaskMgmtRequest(h) if !self.discovery() => {
                let cmd_sn = h.cmd_sn;
                self.admitted(
                    cmd_sn,
                    h.immediate,
                    Header::TaskMgmtRequest(h),
                    data,
                    |this, header, _| {
                        if let Header::TaskMgmtRequest(h) = header {
                            this.task_management(&h);
                        }
                    },
                );
            }
            Header::LogoutRequest(h) => {
                let cmd_sn = h.cmd_sn;
                self.admitted(
                    cmd_sn,
                    h.immediate,
                    Header::LogoutRequest(h),
                    data,
                    |this, header, _| {
                        if let Header::LogoutRequest(h) = header {
                            this.logout(&h);
                        }
                    },
                );
            }
            // RFC 7143: SNACK needs ErrorRecoveryLevel > 0, which we never
            // negotiate; a login in full feature phase is a protocol error,
            // and so is a SCSI PDU in a discovery session.
            other => self.reject(RejectReason::PROTOCOL_ERROR, &other),
        }
    }

    /// Apply the CmdSN rules to a request other than a SCSI command: run
    /// `then` now, hold the request for a gap, or ignore it. A request that
    /// took a CmdSN ends with `then`, so its slot is dropped after it.
    fn admitted(
        &mut self,
        cmd_sn: CmdSn,
        immediate: bool,
        header: Header,
        data: Bytes,
        then: impl FnOnce(&mut Self, Header, Bytes),
    ) {
        match self.window.admit(cmd_sn, immediate) {
            Admission::Immediate => then(self, header, data),
            Admission::InOrder(slot) => {
                then(self, header, data);
                drop(slot);
            }
            Admission::Early => {
                self.held.insert(cmd_sn.0, Pdu { header, data });
            }
            Admission::Ignore => {}
        }
    }

    /// Requests held for a gap that may now be in order.
    fn handle_held(&mut self) {
        while !self.closed {
            let exp = self.window.exp_cmd_sn();
            let Some(held) = self.held.remove(&exp.0) else {
                return;
            };
            self.handle_one(held);
        }
    }

    fn nop_out(&mut self, h: NopOut, data: Bytes) {
        if h.itt.is_reserved() {
            // The answer to our ping (RFC 7143 11.18: ITT 0xffffffff, our TTT).
            if self.ping.is_some_and(|(ttt, _)| ttt == h.ttt) {
                self.ping = None;
            }
            return;
        }
        let cmd_sn = h.cmd_sn;
        self.admitted(cmd_sn, h.immediate, Header::NopOut(h), data, |this, header, data| {
            let Header::NopOut(h) = header else { return };
            // RFC 7143 11.19: the ping data comes back, within our limit.
            let echo = data.slice(..data.len().min(this.max_send as usize));
            let reply = NopIn {
                lun: h.lun,
                itt: h.itt,
                ttt: Ttt::RESERVED,
                stat_sn: StatSn(0),
                exp_cmd_sn: CmdSn(0),
                max_cmd_sn: CmdSn(0),
            };
            this.send(reply, echo);
        });
    }

    fn text(&mut self, h: &TextRequest, data: &[u8]) {
        let response = |final_: bool, cont: bool, ttt: Ttt| TextResponse {
            final_,
            cont,
            lun: h.lun,
            itt: h.itt,
            ttt,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
        };
        // RFC 7143 11.10.4: the initiator pulls the rest of a long answer
        // with an empty request carrying our TTT.
        if !h.ttt.is_reserved()
            && data.is_empty()
            && let Some(seq) = self.text_out.as_mut().filter(|s| s.ttt() == h.ttt && s.itt() == h.itt)
        {
            let chunk = seq.next_chunk();
            if chunk.final_ {
                self.text_out = None;
            }
            self.send(response(chunk.final_, chunk.cont, chunk.ttt), chunk.data);
            return;
        }
        let whole = match self.text_in.push(data, h.cont) {
            Ok(Some(whole)) => whole,
            Ok(None) => {
                // More text follows: acknowledge with an empty response.
                let ttt = self.ttts.next_ttt();
                self.send(response(false, false, ttt), Bytes::new());
                return;
            }
            Err(e) => {
                self.close(Close::Protocol(e.to_string()));
                return;
            }
        };
        let pairs = text::parse(&whole).unwrap_or_default();
        let mut answer = Vec::new();
        let mut negotiable = Vec::new();
        for pair in pairs {
            if pair.key == "SendTargets" {
                let records = [TargetRecord {
                    name: self.config.target_name.clone(),
                    addresses: vec![self.config.portal.clone()],
                }];
                let own = (!self.discovery()).then_some(self.config.target_name.as_str());
                answer.extend(discovery::answer(
                    &records,
                    &SendTargetsRequest::parse(&pair.value),
                    own,
                ));
            } else {
                negotiable.push(pair);
            }
        }
        let mut negotiator = Negotiator::new(Role::Target, false, &self.config.prefs);
        answer.extend(
            negotiator
                .receive(&negotiable, Stage::FULL_FEATURE_PHASE)
                .unwrap_or_else(|_| negotiable.iter().map(|p| Pair::new(p.key.clone(), "Reject")).collect()),
        );
        let ttt = self.ttts.next_ttt();
        let mut seq = TextResponseSequence::new(h.itt, ttt, &answer, self.max_send);
        let chunk = seq.next_chunk();
        self.text_out = (!chunk.final_).then_some(seq);
        self.send(response(chunk.final_, chunk.cont, chunk.ttt), chunk.data);
    }
}

/// A data segment: in hand, or still on the socket, routed by the machine.
#[derive(Debug)]
enum Incoming {
    Memory(Bytes),
    /// So many bytes, which the program moves itself.
    Routed(u32),
}

impl Incoming {
    fn len(&self) -> u32 {
        match self {
            Self::Memory(data) => u32::try_from(data.len()).unwrap_or(u32::MAX),
            Self::Routed(len) => *len,
        }
    }
}

/// The header of a command, for a Reject of it.
fn command_header(cmd: ScsiCommand) -> Header {
    Header::ScsiCommand(cmd)
}
