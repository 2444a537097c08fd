//! The initiator's side of the full feature phase of one connection, as a
//! state machine: requests and PDUs in, PDUs to send and answers out.
//!
//! It owns the rules of RFC 7143 an initiator follows: CmdSN from the
//! target's window, ExpStatSN, what a write sends as immediate data,
//! unsolicited Data-Out or in answer to R2Ts, Data-In and R2Ts checked on
//! receipt (offsets, DataSN, R2TSN), text continuation, NOP replies and
//! pings of a silent target, logout after the last command. The program
//! owns the socket, the timers' sleeping and the callers waiting for
//! answers; after a lost connection it takes back what had no answer
//! ([`Connection::into_unanswered`]) to send it again on a new login.
//!
//! # Layout
//!
//! - `mod.rs`: [`Connection`], requests, events, liveness.
//! - `receive`: what each PDU from the target does.

mod receive;

use crate::login::LoginOutcome;
use crate::negotiate::SessionParams;
use crate::pdu::{
    DataOut, Header, LogoutReason, LogoutRequest, LogoutResponseCode, NopOut, RejectReason, Residual, ScsiCommand,
    TaskAttribute, TaskFunction, TaskMgmtRequest, TextRequest, TmfResponse,
};
use crate::scsi::ScsiStatus;
use crate::segment::Segment;
use crate::serial::TagAllocator;
use crate::session::{CommandSequencer, ExpStatSn};
use crate::text::{self, Pair};
use crate::transfer::{WritePlan, data_out_sequence};
use crate::{CmdSn, DataSn, Itt, Lun, R2tSn, StatSn, Ttt};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What the program asks of the target.
#[derive(Debug, Clone)]
pub enum Request<D> {
    /// A SCSI command: `cdb` on `lun`, sending `data_out`, receiving up to
    /// `read_len` bytes.
    Scsi {
        lun: Lun,
        cdb: Vec<u8>,
        data_out: D,
        read_len: u32,
    },
    /// A Text Request (SendTargets, say).
    Text(Vec<Pair>),
    /// A NOP-Out the target must answer, echoing its data.
    Ping(Bytes),
    TaskManagement {
        function: TaskFunction,
        lun: Lun,
        referenced: Itt,
    },
    /// Close the session, once every command has its answer.
    Logout,
}

impl<D> Request<D> {
    /// Whether it may be sent again on a new connection after the old one
    /// broke before its answer: SCSI commands (the writer's are
    /// idempotent), text and pings; not task management nor logout.
    #[must_use]
    pub fn retriable(&self) -> bool {
        matches!(self, Self::Scsi { .. } | Self::Text(_) | Self::Ping(_))
    }
}

/// An answer, or the end of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A SCSI command ended.
    Completed {
        itt: Itt,
        status: ScsiStatus,
        /// Sense data, with CHECK CONDITION.
        sense: Option<Bytes>,
        /// The data read, cut by an underflow.
        data: Bytes,
        residual: Residual,
    },
    Text {
        itt: Itt,
        pairs: Vec<Pair>,
    },
    /// The answer to a ping, with the data it echoed.
    Pong {
        itt: Itt,
        data: Bytes,
    },
    TaskManagement {
        itt: Itt,
        response: TmfResponse,
    },
    LoggedOut {
        itt: Itt,
        response: LogoutResponseCode,
    },
    /// The target rejected a PDU of this request, which cannot complete.
    Rejected {
        itt: Itt,
        reason: RejectReason,
    },
    /// The target asks for a logout within so many seconds (RFC 7143
    /// 11.9.1, AsyncEvent 1).
    LogoutRequested {
        within: u16,
    },
    /// The connection is lost: the target broke a rule, stayed silent, or
    /// the session logged out. Nothing more comes from this machine.
    Lost(String),
}

/// How to notice a dead target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// With requests outstanding, ping the target after this much silence.
    pub ping_after: Duration,
    /// With requests outstanding, call the connection lost after this much
    /// silence (the ping unanswered too).
    pub dead_after: Duration,
}

/// A PDU to send, its ExpStatSN as of now.
#[derive(Debug, Clone)]
pub struct Transmit<D> {
    pub header: Header,
    pub data: D,
}

/// A request sent (or waiting to be), and what has come back for it.
#[derive(Debug)]
struct Task<D> {
    request: Request<D>,
    /// Read data so far, in order.
    read: BytesMut,
    /// The Data-In DataSN and R2TSN expected next (RFC 7143 11.7.5, 11.8.4:
    /// each counts from 0 per command).
    next_data_sn: DataSn,
    next_r2t_sn: R2tSn,
    /// Text received so far.
    text: Vec<u8>,
}

/// The full feature phase of one connection, as the initiator sees it.
#[derive(Debug)]
pub struct Connection<D> {
    session: SessionParams,
    /// The target's MaxRecvDataSegmentLength.
    max_send: u32,
    cid: crate::pdu::Cid,
    sequencer: CommandSequencer,
    exp_stat_sn: ExpStatSn,
    tags: TagAllocator,
    /// Requests sent and not answered.
    tasks: HashMap<Itt, Task<D>>,
    /// In the order they were sent, for [`Connection::into_unanswered`].
    order: VecDeque<Itt>,
    /// Requests waiting for the window.
    waiting: VecDeque<(Itt, Request<D>)>,
    /// A logout, waiting for every other request's answer.
    logout: Option<(Itt, Request<D>)>,
    transmits: VecDeque<Transmit<D>>,
    events: VecDeque<Event>,
    liveness: Liveness,
    /// When the target was last heard, or we began to wait if later: an
    /// idle connection owes us nothing.
    heard: Instant,
    pinged: bool,
    lost: bool,
}

impl<D: Segment> Connection<D> {
    /// The full feature phase after `login`, at `now`.
    #[must_use]
    pub fn new(login: &LoginOutcome, liveness: Liveness, now: Instant) -> Self {
        Self {
            session: login.session.clone(),
            max_send: login.connection.max_send_data_segment_length,
            cid: login.cid,
            sequencer: CommandSequencer::new(login.cmd_sn, login.cmd_sn, login.max_cmd_sn),
            exp_stat_sn: ExpStatSn::new(login.stat_sn),
            tags: TagAllocator::starting_at(1),
            tasks: HashMap::new(),
            order: VecDeque::new(),
            waiting: VecDeque::new(),
            logout: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            liveness,
            heard: now,
            pinged: false,
            lost: false,
        }
    }

    /// Queue `request`; it goes out as the target's window allows. Returns
    /// the tag its answer will carry.
    pub fn submit(&mut self, request: Request<D>, now: Instant) -> Itt {
        if !self.busy() {
            self.heard = now;
        }
        let itt = self.next_itt();
        match request {
            Request::Logout => self.logout = Some((itt, request)),
            _ => self.waiting.push_back((itt, request)),
        }
        self.dispatch();
        itt
    }

    /// Requests sent or waiting.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.tasks.len() + self.waiting.len() + usize::from(self.logout.is_some())
    }

    fn busy(&self) -> bool {
        self.outstanding() > 0
    }

    fn next_itt(&mut self) -> Itt {
        let (tasks, waiting, logout) = (&self.tasks, &self.waiting, &self.logout);
        let taken = |t: u32| {
            tasks.contains_key(&Itt(t))
                || waiting.iter().any(|(itt, _)| itt.0 == t)
                || logout.as_ref().is_some_and(|(itt, _)| itt.0 == t)
        };
        Itt(self.tags.next_free(u32::MAX, taken).unwrap_or(0))
    }

    /// The next answer, or the end.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next PDU to send, ExpStatSN filled in.
    pub fn poll_transmit(&mut self) -> Option<Transmit<D>> {
        let mut t = self.transmits.pop_front()?;
        let exp = self.exp_stat_sn.get();
        match &mut t.header {
            Header::ScsiCommand(h) => h.exp_stat_sn = exp,
            Header::DataOut(h) => h.exp_stat_sn = exp,
            Header::NopOut(h) => h.exp_stat_sn = exp,
            Header::TextRequest(h) => h.exp_stat_sn = exp,
            Header::TaskMgmtRequest(h) => h.exp_stat_sn = exp,
            Header::LogoutRequest(h) => h.exp_stat_sn = exp,
            _ => {}
        }
        Some(t)
    }

    /// When [`Connection::handle_timeout`] is due: while waiting for the
    /// target, its silence is measured.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.lost || !self.busy() {
            return None;
        }
        Some(
            self.heard
                + if self.pinged {
                    self.liveness.dead_after
                } else {
                    self.liveness.ping_after
                },
        )
    }

    /// Time has passed: ping a silent target, or give up on it.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.poll_timeout() {
            Some(due) if now >= due => {}
            _ => return,
        }
        if self.pinged {
            self.lose(format!(
                "the target did not answer for {} s",
                self.liveness.dead_after.as_secs()
            ));
            return;
        }
        // Nobody waits for this answer: hearing anything is enough.
        self.pinged = true;
        let itt = self.next_itt();
        self.waiting.push_front((itt, Request::Ping(Bytes::new())));
        self.dispatch();
    }

    fn lose(&mut self, why: String) {
        if !self.lost {
            self.lost = true;
            self.events.push_back(Event::Lost(why));
        }
    }

    /// After the connection is lost: the requests that had no answer, in
    /// the order they were sent, then those that never went out.
    #[must_use]
    pub fn into_unanswered(mut self) -> Vec<(Itt, Request<D>)> {
        let mut out: Vec<(Itt, Request<D>)> = self
            .order
            .iter()
            .filter_map(|itt| self.tasks.remove(itt).map(|t| (*itt, t.request)))
            .collect();
        out.extend(self.waiting);
        out.extend(self.logout);
        out
    }

    /// Send what may be sent: commands within the window, other requests
    /// at once, the logout once nothing else is outstanding.
    fn dispatch(&mut self) {
        if self.lost {
            return;
        }
        while let Some((_, front)) = self.waiting.front() {
            if matches!(front, Request::Scsi { .. }) && self.sequencer.credits() == 0 {
                break;
            }
            let Some((itt, request)) = self.waiting.pop_front() else {
                break;
            };
            self.send_request(itt, request);
        }
        if self.waiting.is_empty()
            && self.tasks.is_empty()
            && let Some((itt, logout)) = self.logout.take()
        {
            self.send_request(itt, logout);
        }
    }

    fn send(&mut self, header: impl Into<Header>, data: D) {
        self.transmits.push_back(Transmit {
            header: header.into(),
            data,
        });
    }

    fn send_request(&mut self, itt: Itt, request: Request<D>) {
        let immediate_sn = self.sequencer.immediate();
        let exp_stat_sn = StatSn(0);
        let empty = || D::from(Bytes::new());
        match &request {
            Request::Scsi {
                lun,
                cdb,
                data_out,
                read_len,
            } => {
                let Some(cmd_sn) = self.sequencer.take() else { return };
                let len = u32::try_from(data_out.len()).unwrap_or(u32::MAX);
                let plan = WritePlan::new(len, &self.session, self.max_send);
                let mut header = ScsiCommand {
                    immediate: false,
                    final_: len == 0 || plan.command_final(),
                    read: *read_len > 0,
                    write: len > 0,
                    attr: TaskAttribute::SIMPLE,
                    lun: *lun,
                    itt,
                    expected_len: if len == 0 { *read_len } else { len },
                    cmd_sn,
                    exp_stat_sn,
                    cdb: [0; 16],
                    ext_cdb: Bytes::new(),
                    bidi_read_len: None,
                };
                header.set_cdb(cdb);
                let immediate = data_out.slice(0..plan.immediate as usize);
                let unsolicited =
                    data_out_sequence(plan.immediate, plan.unsolicited_end - plan.immediate, self.max_send)
                        .map(|chunk| {
                            let dout = DataOut {
                                final_: chunk.final_,
                                lun: *lun,
                                itt,
                                ttt: Ttt::RESERVED,
                                exp_stat_sn,
                                data_sn: chunk.data_sn,
                                buffer_offset: chunk.offset,
                            };
                            (
                                dout,
                                data_out.slice(chunk.offset as usize..(chunk.offset + chunk.len) as usize),
                            )
                        })
                        .collect::<Vec<_>>();
                self.send(header, immediate);
                for (dout, data) in unsolicited {
                    self.send(dout, data);
                }
            }
            Request::Text(pairs) => {
                let header = TextRequest {
                    immediate: true,
                    final_: true,
                    cont: false,
                    lun: Lun::ZERO,
                    itt,
                    ttt: Ttt::RESERVED,
                    cmd_sn: immediate_sn,
                    exp_stat_sn,
                };
                self.send(header, D::from(text::encode(pairs)));
            }
            Request::Ping(data) => {
                let header = NopOut {
                    immediate: true,
                    lun: Lun::ZERO,
                    itt,
                    ttt: Ttt::RESERVED,
                    cmd_sn: immediate_sn,
                    exp_stat_sn,
                };
                self.send(header, D::from(data.clone()));
            }
            Request::TaskManagement {
                function,
                lun,
                referenced,
            } => {
                let header = TaskMgmtRequest {
                    immediate: true,
                    function: *function,
                    lun: *lun,
                    itt,
                    referenced_task_tag: *referenced,
                    cmd_sn: immediate_sn,
                    exp_stat_sn,
                    ref_cmd_sn: immediate_sn,
                    exp_data_sn: DataSn(0),
                };
                self.send(header, empty());
            }
            Request::Logout => {
                let header = LogoutRequest {
                    immediate: true,
                    reason: LogoutReason::CLOSE_SESSION,
                    itt,
                    cid: self.cid,
                    cmd_sn: immediate_sn,
                    exp_stat_sn,
                };
                self.send(header, empty());
            }
        }
        self.tasks.insert(
            itt,
            Task {
                request,
                read: BytesMut::new(),
                next_data_sn: DataSn(0),
                next_r2t_sn: R2tSn(0),
                text: Vec::new(),
            },
        );
        self.order.push_back(itt);
        if self.order.len() > 4 * self.tasks.len() + 64 {
            let tasks = &self.tasks;
            self.order.retain(|itt| tasks.contains_key(itt));
        }
    }

    /// `itt` answered: forget it, and let waiting requests go.
    fn answered(&mut self, itt: Itt, event: Event) {
        if self.tasks.remove(&itt).is_some() {
            self.events.push_back(event);
        }
        self.dispatch();
    }

    /// Take the next CmdSN for a PDU the program builds itself (a test
    /// playing a misbehaving initiator, say), if the window is open.
    pub fn take_cmd_sn(&mut self) -> Option<CmdSn> {
        self.sequencer.take()
    }

    /// The ExpStatSN to put in a PDU the program builds itself.
    #[must_use]
    pub fn exp_stat_sn(&self) -> StatSn {
        self.exp_stat_sn.get()
    }

    /// The CmdSN window, as the target last said it.
    #[must_use]
    pub fn window(&self) -> (CmdSn, CmdSn) {
        (self.sequencer.exp_cmd_sn(), self.sequencer.max_cmd_sn())
    }
}
