//! The task that owns one connection's protocol state.

use super::wire::{PduReader, PduWriter};
use super::{Recovery, SessionError};
use bytes::Bytes;
use iscsi_proto::login::LoginOutcome;
use iscsi_proto::pdu::{
    AsyncEvent, DataOut, Header, LogoutReason, LogoutRequest, LogoutResponseCode, NopOut, Pdu, Residual, ScsiCommand,
    TaskAttribute, TaskFunction, TaskMgmtRequest, TextRequest, TmfResponse, sense_of_segment,
};
use iscsi_proto::scsi::ScsiStatus;
use iscsi_proto::serial::TagAllocator;
use iscsi_proto::session::{CommandSequencer, ExpStatSn};
use iscsi_proto::text::{self, Pair};
use iscsi_proto::transfer::{WritePlan, data_out_sequence};
use iscsi_proto::{DataSn, Itt, Lun, Ttt};
use iscsi_wire::Payload;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

/// How a SCSI command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub status: ScsiStatus,
    /// Sense data, when the status carried some.
    pub sense: Option<Vec<u8>>,
    /// Data read (already cut to what the target sent).
    pub data: Bytes,
    pub residual: Residual,
}

#[derive(Debug, Clone)]
pub(crate) enum RequestKind {
    Scsi {
        lun: Lun,
        cdb: Vec<u8>,
        data_out: Payload,
        read_len: u32,
    },
    Text(Vec<Pair>),
    Ping,
    TaskManagement {
        function: TaskFunction,
        lun: Lun,
        referenced: Itt,
    },
    Logout,
}

impl RequestKind {
    /// Whether it may be sent again on a new connection when the old one
    /// broke before its answer.
    pub(crate) fn retriable(&self) -> bool {
        matches!(self, Self::Scsi { .. } | Self::Text(_) | Self::Ping)
    }
}

#[derive(Debug)]
pub(crate) enum Reply {
    Scsi(Completion),
    Text(Vec<Pair>),
    Pong,
    TaskManagement(TmfResponse),
    Logout(LogoutResponseCode),
}

#[derive(Debug)]
pub(crate) struct Request {
    pub kind: RequestKind,
    pub reply: oneshot::Sender<Result<Reply, SessionError>>,
}

type Responder = oneshot::Sender<Result<Reply, SessionError>>;

#[derive(Debug)]
enum Task {
    Scsi {
        lun: Lun,
        data_out: Payload,
        read: Vec<u8>,
        reply: Responder,
    },
    Text {
        lun: Lun,
        received: Vec<u8>,
        reply: Responder,
    },
    Ping {
        reply: Responder,
    },
    Tmf {
        reply: Responder,
    },
    Logout {
        reply: Responder,
    },
}

impl Task {
    fn fail(self, error: SessionError) {
        let reply = match self {
            Self::Scsi { reply, .. }
            | Self::Text { reply, .. }
            | Self::Ping { reply }
            | Self::Tmf { reply }
            | Self::Logout { reply } => reply,
        };
        let _ = reply.send(Err(error));
    }
}

struct State {
    outcome: Arc<LoginOutcome>,
    sequencer: CommandSequencer,
    exp_stat_sn: ExpStatSn,
    tags: TagAllocator,
    tasks: HashMap<Itt, Task>,
    waiting: VecDeque<Request>,
    logout: Option<Request>,
    done: bool,
}

/// Serve requests until logout or a lost connection.
pub(crate) async fn run(
    mut reader: PduReader,
    mut writer: PduWriter,
    outcome: Arc<LoginOutcome>,
    mut requests: mpsc::Receiver<Request>,
    recovery: Recovery,
) {
    let (pdus_tx, mut pdus) = mpsc::channel(256);
    let reading = tokio::spawn(async move {
        loop {
            let pdu = reader.next().await;
            let end = pdu.is_err();
            if pdus_tx.send(pdu).await.is_err() || end {
                return;
            }
        }
    });
    let mut state = State {
        sequencer: CommandSequencer::new(outcome.cmd_sn, outcome.cmd_sn, outcome.max_cmd_sn),
        exp_stat_sn: ExpStatSn::new(outcome.stat_sn),
        tags: TagAllocator::starting_at(1),
        outcome,
        tasks: HashMap::new(),
        waiting: VecDeque::new(),
        logout: None,
        done: false,
    };
    // Silence while commands are outstanding: a ping after `ping_after`,
    // the connection called lost after `dead_after`. The silence counts
    // from the last PDU heard, or from when we began to wait if that is
    // later: an idle connection owes us nothing.
    let mut heard = Instant::now();
    let mut pinged = false;
    let mut was_waiting = false;
    // One timer for the whole connection, moved only when its deadline does.
    let silence = tokio::time::sleep_until(heard + recovery.ping_after);
    tokio::pin!(silence);
    let error = loop {
        if let Err(e) = state.dispatch(&mut writer, recovery.dead_after).await {
            break SessionError::ConnectionLost(e.to_string());
        }
        if state.done {
            break SessionError::ConnectionLost("logged out".into());
        }
        let accepting = state.logout.is_none() && state.waiting.len() < 1024;
        let waiting_for_target = !state.tasks.is_empty() || !state.waiting.is_empty();
        if waiting_for_target && !was_waiting {
            heard = Instant::now();
        }
        was_waiting = waiting_for_target;
        let check = heard
            + if pinged {
                recovery.dead_after
            } else {
                recovery.ping_after
            };
        if silence.deadline() != check {
            silence.as_mut().reset(check);
        }
        tokio::select! {
            () = &mut silence, if waiting_for_target => {
                if pinged {
                    break SessionError::ConnectionLost(format!(
                        "the target did not answer for {} s",
                        recovery.dead_after.as_secs()
                    ));
                }
                // Nobody waits for the answer: hearing anything is enough.
                let (reply, _) = oneshot::channel();
                state.waiting.push_front(Request { kind: RequestKind::Ping, reply });
                pinged = true;
            }
            request = requests.recv(), if accepting => match request {
                Some(Request { kind: RequestKind::Logout, reply }) => {
                    state.logout = Some(Request { kind: RequestKind::Logout, reply });
                }
                Some(request) => state.waiting.push_back(request),
                // Every handle is gone: log out quietly.
                None => {
                    let (reply, _) = oneshot::channel();
                    state.logout = Some(Request { kind: RequestKind::Logout, reply });
                }
            },
            pdu = pdus.recv() => match pdu {
                Some(Ok(pdu)) => {
                    heard = Instant::now();
                    pinged = false;
                    match tokio::time::timeout(recovery.dead_after, state.handle(pdu, &mut writer)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break e,
                        Err(_) => break SessionError::ConnectionLost(stalled(recovery.dead_after).to_string()),
                    }
                }
                Some(Err(e)) => break SessionError::ConnectionLost(e.to_string()),
                None => break SessionError::ConnectionLost("the reader stopped".into()),
            },
        }
    };
    reading.abort();
    // A peer that reads nothing must not keep us here.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
    for (_, task) in state.tasks.drain() {
        task.fail(error.clone());
    }
    // Requests still in the channel fail with the same reason.
    requests.close();
    let queued = std::iter::from_fn(|| requests.try_recv().ok());
    for request in state.waiting.drain(..).chain(state.logout.take()).chain(queued) {
        let _ = request.reply.send(Err(error.clone()));
    }
}

/// The error of a send that made no progress for `limit`.
fn stalled(limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the target took no data for {} s", limit.as_secs()),
    )
}

/// `io` if it finishes within `limit`, else [`stalled`].
async fn within(limit: Duration, io: impl Future<Output = std::io::Result<()>>) -> std::io::Result<()> {
    tokio::time::timeout(limit, io)
        .await
        .unwrap_or_else(|_| Err(stalled(limit)))
}

impl State {
    fn max_send(&self) -> u32 {
        self.outcome.connection.max_send_data_segment_length
    }

    fn next_itt(&mut self) -> Itt {
        let tasks = &self.tasks;
        Itt(self
            .tags
            .next_free(u32::MAX, |t| tasks.contains_key(&Itt(t)))
            .unwrap_or(0))
    }

    /// Send what may be sent: commands within the window, immediate
    /// requests at once, the logout once nothing is in flight.
    /// Each request, and the final flush, must go out within `limit`: a
    /// target that takes no bytes for that long counts as gone.
    async fn dispatch(&mut self, writer: &mut PduWriter, limit: Duration) -> std::io::Result<()> {
        while let Some(front) = self.waiting.front() {
            let needs_window = matches!(front.kind, RequestKind::Scsi { .. });
            if needs_window && self.sequencer.credits() == 0 {
                break;
            }
            let Some(request) = self.waiting.pop_front() else { break };
            within(limit, self.send_request(request, writer)).await?;
        }
        if self.waiting.is_empty()
            && self.tasks.is_empty()
            && let Some(logout) = self.logout.take()
        {
            within(limit, self.send_request(logout, writer)).await?;
        }
        within(limit, writer.flush()).await
    }

    async fn send_request(&mut self, request: Request, writer: &mut PduWriter) -> std::io::Result<()> {
        let itt = self.next_itt();
        let exp_stat_sn = self.exp_stat_sn.get();
        let immediate_sn = self.sequencer.immediate();
        let Request { kind, reply } = request;
        match kind {
            RequestKind::Scsi {
                lun,
                cdb,
                data_out,
                read_len,
            } => {
                let Some(cmd_sn) = self.sequencer.take() else {
                    let _ = reply.send(Err(SessionError::Protocol("command window closed".into())));
                    return Ok(());
                };
                let len = u32::try_from(data_out.len()).unwrap_or(u32::MAX);
                let plan = WritePlan::new(len, &self.outcome.session, self.max_send());
                let mut header = ScsiCommand {
                    immediate: false,
                    final_: data_out.is_empty() || plan.command_final(),
                    read: read_len > 0,
                    write: !data_out.is_empty(),
                    attr: TaskAttribute::SIMPLE,
                    lun,
                    itt,
                    expected_len: if data_out.is_empty() { read_len } else { len },
                    cmd_sn,
                    exp_stat_sn,
                    cdb: [0; 16],
                    ext_cdb: Bytes::new(),
                    bidi_read_len: None,
                };
                header.set_cdb(&cdb);
                let immediate = data_out.slice(0..plan.immediate as usize);
                // Registered before it is sent: if sending fails or stalls,
                // the caller hears why when the connection's tasks fail.
                self.tasks.insert(
                    itt,
                    Task::Scsi {
                        lun,
                        data_out: data_out.clone(),
                        read: vec![0; read_len as usize],
                        reply,
                    },
                );
                trace!(%itt, %cmd_sn, len, "command");
                writer.queue(&Header::ScsiCommand(header), immediate).await?;
                let unsolicited = plan.unsolicited_end - plan.immediate;
                for chunk in data_out_sequence(plan.immediate, unsolicited, self.max_send()) {
                    let dout = DataOut {
                        final_: chunk.final_,
                        lun,
                        itt,
                        ttt: Ttt::RESERVED,
                        exp_stat_sn,
                        data_sn: chunk.data_sn,
                        buffer_offset: chunk.offset,
                    };
                    let range = chunk.offset as usize..(chunk.offset + chunk.len) as usize;
                    writer.queue(&Header::DataOut(dout), data_out.slice(range)).await?;
                }
            }
            RequestKind::Text(pairs) => {
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
                self.tasks.insert(
                    itt,
                    Task::Text {
                        lun: Lun::ZERO,
                        received: Vec::new(),
                        reply,
                    },
                );
                writer.queue(&Header::TextRequest(header), text::encode(&pairs)).await?;
            }
            RequestKind::Ping => {
                let header = NopOut {
                    immediate: true,
                    lun: Lun::ZERO,
                    itt,
                    ttt: Ttt::RESERVED,
                    cmd_sn: immediate_sn,
                    exp_stat_sn,
                };
                self.tasks.insert(itt, Task::Ping { reply });
                writer.queue(&Header::NopOut(header), Bytes::new()).await?;
            }
            RequestKind::TaskManagement {
                function,
                lun,
                referenced,
            } => {
                let header = TaskMgmtRequest {
                    immediate: true,
                    function,
                    lun,
                    itt,
                    referenced_task_tag: referenced,
                    cmd_sn: immediate_sn,
                    exp_stat_sn,
                    ref_cmd_sn: immediate_sn,
                    exp_data_sn: DataSn(0),
                };
                self.tasks.insert(itt, Task::Tmf { reply });
                writer.queue(&Header::TaskMgmtRequest(header), Bytes::new()).await?;
            }
            RequestKind::Logout => {
                let header = LogoutRequest {
                    immediate: true,
                    reason: LogoutReason::CLOSE_SESSION,
                    itt,
                    cid: self.outcome.cid,
                    cmd_sn: immediate_sn,
                    exp_stat_sn,
                };
                self.tasks.insert(itt, Task::Logout { reply });
                writer.queue(&Header::LogoutRequest(header), Bytes::new()).await?;
            }
        }
        Ok(())
    }

    fn complete(&mut self, itt: Itt, reply: Reply) {
        trace!(%itt, known = self.tasks.contains_key(&itt), "answered");
        let responder = match self.tasks.remove(&itt) {
            Some(
                Task::Scsi { reply, .. }
                | Task::Text { reply, .. }
                | Task::Ping { reply }
                | Task::Tmf { reply }
                | Task::Logout { reply },
            ) => reply,
            None => return,
        };
        let _ = responder.send(Ok(reply));
    }

    async fn handle(&mut self, pdu: Pdu, writer: &mut PduWriter) -> Result<(), SessionError> {
        if let Some((exp, max)) = pdu.header.command_window() {
            self.sequencer.update(exp, max);
        }
        if let Some(stat_sn) = pdu.header.stat_sn() {
            self.exp_stat_sn.received(stat_sn);
        }
        let lost = |e: std::io::Error| SessionError::ConnectionLost(e.to_string());
        match pdu.header {
            Header::R2t(r2t) => {
                trace!(itt = %r2t.itt, offset = r2t.buffer_offset, len = r2t.desired_len, "R2T");
                let Some(Task::Scsi { lun, data_out, .. }) = self.tasks.get(&r2t.itt) else {
                    return Err(SessionError::Protocol(format!("R2T for unknown task {}", r2t.itt)));
                };
                let end = u64::from(r2t.buffer_offset) + u64::from(r2t.desired_len);
                if end > data_out.len() as u64 {
                    return Err(SessionError::Protocol(format!(
                        "R2T asks for bytes {}..{end} of a {}-byte write",
                        r2t.buffer_offset,
                        data_out.len()
                    )));
                }
                let (lun, data_out) = (*lun, data_out.clone());
                for chunk in data_out_sequence(r2t.buffer_offset, r2t.desired_len, self.max_send()) {
                    let dout = DataOut {
                        final_: chunk.final_,
                        lun,
                        itt: r2t.itt,
                        ttt: r2t.ttt,
                        exp_stat_sn: self.exp_stat_sn.get(),
                        data_sn: chunk.data_sn,
                        buffer_offset: chunk.offset,
                    };
                    let range = chunk.offset as usize..(chunk.offset + chunk.len) as usize;
                    writer
                        .queue(&Header::DataOut(dout), data_out.slice(range))
                        .await
                        .map_err(lost)?;
                }
            }
            Header::DataIn(d) => {
                let Some(Task::Scsi { read, .. }) = self.tasks.get_mut(&d.itt) else {
                    return Err(SessionError::Protocol(format!("Data-In for unknown task {}", d.itt)));
                };
                let at = d.buffer_offset as usize;
                let size = read.len();
                let slot = read
                    .get_mut(at..at + pdu.data.len())
                    .ok_or_else(|| SessionError::Protocol(format!("Data-In at {at} beyond the {size}-byte read")))?;
                slot.copy_from_slice(&pdu.data);
                if let Some(status) = d.status {
                    let data = self.take_read(d.itt, d.residual);
                    self.complete(
                        d.itt,
                        Reply::Scsi(Completion {
                            status,
                            sense: None,
                            data,
                            residual: d.residual,
                        }),
                    );
                }
            }
            Header::ScsiResponse(r) => {
                let data = self.take_read(r.itt, r.residual);
                let sense = sense_of_segment(&pdu.data)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec);
                self.complete(
                    r.itt,
                    Reply::Scsi(Completion {
                        status: r.status,
                        sense,
                        data,
                        residual: r.residual,
                    }),
                );
            }
            Header::NopIn(nop) => {
                if nop.itt.is_reserved() {
                    if nop.wants_reply() {
                        let reply = NopOut {
                            immediate: true,
                            lun: nop.lun,
                            itt: Itt::RESERVED,
                            ttt: nop.ttt,
                            cmd_sn: self.sequencer.immediate(),
                            exp_stat_sn: self.exp_stat_sn.get(),
                        };
                        writer.queue(&Header::NopOut(reply), Bytes::new()).await.map_err(lost)?;
                    }
                } else {
                    self.complete(nop.itt, Reply::Pong);
                }
            }
            Header::TextResponse(t) => {
                let Some(Task::Text { lun, received, .. }) = self.tasks.get_mut(&t.itt) else {
                    return Err(SessionError::Protocol(format!(
                        "Text Response for unknown task {}",
                        t.itt
                    )));
                };
                if received.len() + pdu.data.len() > text::MAX_TEXT_LEN {
                    return Err(SessionError::Protocol("text response longer than 64 KiB".into()));
                }
                received.extend_from_slice(&pdu.data);
                if t.final_ {
                    let whole = std::mem::take(received);
                    let pairs = text::parse(&whole).map_err(|e| SessionError::Protocol(e.to_string()))?;
                    self.complete(t.itt, Reply::Text(pairs));
                } else {
                    // Ask for the rest of a long answer.
                    let header = TextRequest {
                        immediate: true,
                        final_: true,
                        cont: false,
                        lun: *lun,
                        itt: t.itt,
                        ttt: t.ttt,
                        cmd_sn: self.sequencer.immediate(),
                        exp_stat_sn: self.exp_stat_sn.get(),
                    };
                    writer
                        .queue(&Header::TextRequest(header), Bytes::new())
                        .await
                        .map_err(lost)?;
                }
            }
            Header::TaskMgmtResponse(t) => self.complete(t.itt, Reply::TaskManagement(t.response)),
            Header::LogoutResponse(l) => {
                self.complete(l.itt, Reply::Logout(l.response));
                self.done = true;
            }
            Header::Reject(r) => {
                // The data segment is the rejected PDU's header; its ITT
                // names the task that cannot complete.
                let itt = pdu
                    .data
                    .get(16..20)
                    .map(|b| Itt(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
                warn!(reason = ?r.reason, "the target rejected a PDU");
                if let Some(task) = itt.and_then(|itt| self.tasks.remove(&itt)) {
                    task.fail(SessionError::Rejected(format!("{:?}", r.reason)));
                }
            }
            Header::AsyncMessage(a) => {
                if a.event == AsyncEvent::LOGOUT_REQUEST {
                    debug!("the target asks us to log out within {} s", a.parameter3);
                }
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {:?} from the target",
                    other.opcode()
                )));
            }
        }
        Ok(())
    }

    /// The data a read gathered, cut by its underflow residual.
    fn take_read(&mut self, itt: Itt, residual: Residual) -> Bytes {
        let Some(Task::Scsi { read, .. }) = self.tasks.get_mut(&itt) else {
            return Bytes::new();
        };
        let mut data = std::mem::take(read);
        if let Residual::Underflow(n) = residual {
            data.truncate(data.len().saturating_sub(n as usize));
        }
        Bytes::from(data)
    }
}
