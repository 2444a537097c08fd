//! The full feature phase of one connection: the reader's decisions.

use super::ConnError;
use super::command::{self, Job, JobContext, Placed, Traffic, Unit};
use super::wire::{PduReader, PduWriter};
use crate::lu::{Completion, Nexus};
use crate::target::Target;
use bytes::Bytes;
use iscsi_proto::codec::Head;
use iscsi_proto::discovery::{self, SendTargetsRequest, TargetRecord, TextResponseSequence};
use iscsi_proto::login::LoginOutcome;
use iscsi_proto::negotiate::{Negotiator, Role, SessionType};
use iscsi_proto::pdu::{
    DataOut, Header, LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, NopIn, NopOut, Pdu, R2t, Reject,
    RejectReason, Residual, ScsiCommand, Stage, TaskFunction, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TextResponse, TmfResponse,
};
use iscsi_proto::scsi::{AdditionalSense, Command, OperationCode, ScsiStatus, Sense, SenseKey};
use iscsi_proto::serial::TagAllocator;
use iscsi_proto::session::{Admission, CommandWindow, StatSnCounter, stamp};
use iscsi_proto::text::{self, Pair, TextAccumulator};
use iscsi_proto::transfer::WriteTransfer;
use iscsi_proto::{CmdSn, Itt, Lun, StatSn, Ttt};
use iscsi_wire::{Frame, PipePool, ReadError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, trace};

/// The largest write a single command may announce; larger ones are
/// refused before any buffer is allocated.
const MAX_DATA_OUT: u32 = 32 << 20;

/// Data segments at least this long are spliced from the socket into the
/// backing file when their command's data can be placed there; shorter ones
/// cost less through memory than a trip to the blocking pool.
const SPLICE_MIN: usize = 64 * 1024;

/// Pipes for READ data per connection (each holds one READ's data on its
/// way from the page cache to the socket).
const READ_PIPES: usize = 32;

/// What the writer task sends.
#[derive(Debug)]
pub(crate) enum Out {
    Pdu(Header, iscsi_wire::Payload),
    /// Flush, close the socket and confirm.
    Close(oneshot::Sender<()>),
}

/// State the reader, the writer and running commands share.
#[derive(Debug)]
pub(crate) struct Shared {
    window: Mutex<CommandWindow>,
}

impl Shared {
    fn window(&self) -> std::sync::MutexGuard<'_, CommandWindow> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A command's slot in the window is free again.
    pub(crate) fn complete_command(&self) {
        self.window().complete();
    }
}

/// A write command still collecting its data.
#[derive(Debug)]
struct Receiving {
    job: Job,
    transfer: WriteTransfer,
    /// Bytes the CDB needs (the rest of the Expected Data Transfer Length
    /// is received and dropped).
    needed: usize,
}

#[derive(Debug)]
struct Running {
    fate: command::Fate,
    handle: JoinHandle<()>,
}

/// Whether the reader goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Ffp {
    target: Arc<Target>,
    outcome: LoginOutcome,
    /// The session's I_T nexus, as the logical unit knows it.
    nexus: Arc<Nexus>,
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
    done_tx: mpsc::UnboundedSender<Itt>,
    receiving: HashMap<Itt, Receiving>,
    running: HashMap<Itt, Running>,
    /// Commands inside the window that arrived ahead of a gap.
    held: BTreeMap<u32, Pdu>,
    /// Recently aborted tasks, whose late Data-Out is dropped quietly.
    aborted: VecDeque<Itt>,
    ttts: TagAllocator,
    ping: Option<(Ttt, Instant)>,
    text_in: TextAccumulator,
    text_out: Option<TextResponseSequence>,
    portal: String,
    /// Pipes for READ data, when it can go from the page cache to the
    /// socket without passing through our memory.
    pipes: Option<Arc<PipePool>>,
    traffic: Arc<Traffic>,
}

/// Run the full feature phase until logout, a fatal error or `stop`.
pub(crate) async fn run(
    mut reader: PduReader,
    writer: PduWriter,
    outcome: LoginOutcome,
    target: Arc<Target>,
    local: SocketAddr,
    stop: Arc<Notify>,
) -> Result<(), ConnError> {
    let shared = Arc::new(Shared {
        window: Mutex::new(CommandWindow::new(outcome.cmd_sn, target.options.queue_depth)),
    });
    let (out, out_rx) = mpsc::channel(1024);
    let writer = tokio::spawn(write_loop(writer, out_rx, shared.clone(), outcome.stat_sn));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let portal = match local {
        SocketAddr::V4(a) => format!("{}:{},{}", a.ip(), a.port(), target.login_config.portal_group_tag),
        SocketAddr::V6(a) => format!("[{}]:{},{}", a.ip(), a.port(), target.login_config.portal_group_tag),
    };
    let nexus = Arc::new(Nexus::new(outcome.initiator_name.clone(), outcome.isid));
    // Without a data digest, READ and WRITE data can skip our memory.
    let zero_copy = outcome.session_type == SessionType::Normal
        && !outcome.connection.send_framing().data_digest
        && target.lu.device().page_cache_file().is_some();
    if zero_copy {
        reader.set_heads(SPLICE_MIN, target.options.nop_timeout);
    }
    let mut ffp = Ffp {
        pipes: zero_copy.then(|| PipePool::new(READ_PIPES)),
        traffic: Arc::default(),
        target: target.clone(),
        outcome,
        nexus,
        shared,
        out,
        done_tx,
        receiving: HashMap::new(),
        running: HashMap::new(),
        held: BTreeMap::new(),
        aborted: VecDeque::new(),
        ttts: TagAllocator::starting_at(0x1000),
        ping: None,
        text_in: TextAccumulator::default(),
        text_out: None,
        portal,
    };
    let mut closing = target.closing();
    let mut last_heard = Instant::now();
    let result = loop {
        let keepalive = match ffp.ping {
            Some((_, sent)) => sent + target.options.nop_timeout,
            None => last_heard + target.options.nop_interval,
        };
        tokio::select! {
            frame = reader.next_frame() => match frame {
                Ok(frame) => {
                    last_heard = Instant::now();
                    let handled = match frame {
                        Frame::Pdu(pdu) => ffp.handle(pdu).await,
                        Frame::Head(head) => ffp.handle_head(head, &mut reader).await,
                    };
                    match handled {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Stop) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
                Err(ReadError::Decode(e)) if e.scope() == iscsi_proto::Scope::Pdu => {
                    debug!("rejecting a PDU: {e}");
                    let reason = e.reject_reason().unwrap_or(RejectReason::PROTOCOL_ERROR);
                    ffp.reject(reason, Bytes::copy_from_slice(e.bhs())).await;
                }
                Err(e) => break Err(e.into()),
            },
            Some(itt) = done_rx.recv() => {
                ffp.running.remove(&itt);
            }
            () = stop.notified() => {
                info!("stopping at the target's request");
                break Ok(());
            }
            () = crate::target::stopping(&mut closing) => break Ok(()),
            () = tokio::time::sleep_until(keepalive) => {
                if ffp.ping.is_some() {
                    break Err(ConnError::Protocol("the initiator stopped answering NOP-In pings".into()));
                }
                ffp.send_ping().await;
            }
        }
    };
    ffp.wind_down().await;
    let _ = writer.await;
    result
}

/// The writer task: stamps StatSN/ExpCmdSN/MaxCmdSN as PDUs leave, in the
/// order they leave, and writes them in batches.
async fn write_loop(mut writer: PduWriter, mut rx: mpsc::Receiver<Out>, shared: Arc<Shared>, first: StatSn) {
    let mut stat_sn = StatSnCounter::new(first);
    while let Some(first_msg) = rx.recv().await {
        let mut next = Some(first_msg);
        while let Some(msg) = next.take() {
            match msg {
                Out::Pdu(mut header, data) => {
                    {
                        let window = shared.window();
                        stamp(&mut header, &mut stat_sn, window.exp_cmd_sn(), window.max_cmd_sn());
                    }
                    if let Err(e) = writer.queue(&header, data).await {
                        debug!("writer stops: {e}");
                        return;
                    }
                }
                Out::Close(done) => {
                    writer.shutdown().await;
                    let _ = done.send(());
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    writer.shutdown().await;
}

fn check_condition(sense: Sense) -> Completion {
    Completion {
        status: ScsiStatus::CHECK_CONDITION,
        sense: Some(sense),
        data: Vec::new(),
    }
}

/// ABORTED COMMAND for a task whose data phase broke the rules.
fn data_phase_error(asc: AdditionalSense) -> Completion {
    check_condition(Sense::new(SenseKey::ABORTED_COMMAND, asc))
}

impl Ffp {
    fn discovery(&self) -> bool {
        self.outcome.session_type == SessionType::Discovery
    }

    async fn send(&self, pdu: Pdu) {
        // A closed channel means the writer died; the reader notices on its
        // next read.
        let _ = self.out.send(Out::Pdu(pdu.header, pdu.data.into())).await;
    }

    async fn reject(&self, reason: RejectReason, bhs: Bytes) {
        let header = Reject::new(reason, StatSn(0), CmdSn(0), CmdSn(0));
        self.send(Pdu::with_data(header, bhs)).await;
    }

    async fn reject_pdu(&self, reason: RejectReason, header: &Header) {
        let mut bhs = [0u8; iscsi_proto::pdu::BHS_LEN];
        header.emit(&mut bhs, 0);
        self.reject(reason, Bytes::copy_from_slice(&bhs)).await;
    }

    /// Apply the CmdSN rules; `true` when the PDU is to be processed now.
    fn admit(&mut self, cmd_sn: CmdSn, immediate: bool, pdu: &Pdu) -> bool {
        match self.admission(cmd_sn, immediate, pdu.header.itt()) {
            Admission::Immediate | Admission::InOrder => true,
            Admission::Early => {
                self.held.insert(cmd_sn.0, pdu.clone());
                false
            }
            Admission::Ignore => false,
        }
    }

    fn admission(&self, cmd_sn: CmdSn, immediate: bool, itt: Itt) -> Admission {
        let admission = self.shared.window().admit(cmd_sn, immediate);
        trace!(%cmd_sn, %itt, ?admission, "admit");
        if admission == Admission::Ignore {
            debug!(%cmd_sn, "command outside the window ignored");
        }
        admission
    }

    /// A non-command request that took a CmdSN is done.
    fn done_with(&self, immediate: bool) {
        if !immediate {
            self.shared.complete_command();
        }
    }

    async fn handle(&mut self, pdu: Pdu) -> Result<Flow, ConnError> {
        if self.handle_one(pdu).await? == Flow::Stop {
            return Ok(Flow::Stop);
        }
        self.handle_held().await
    }

    /// A PDU whose data segment is still on the socket: a WRITE's data goes
    /// straight to the disk where it can, anything else is read in whole.
    async fn handle_head(&mut self, head: Head, reader: &mut PduReader) -> Result<Flow, ConnError> {
        match &head.header {
            Header::ScsiCommand(cmd) if !self.discovery() => {
                let cmd = cmd.clone();
                match self.admission(cmd.cmd_sn, cmd.immediate, cmd.itt) {
                    Admission::Immediate | Admission::InOrder => {
                        self.start_command(cmd, Incoming::Socket(head, reader)).await?;
                    }
                    Admission::Early => {
                        let pdu = reader.read_segment(head).await?;
                        self.held.insert(cmd.cmd_sn.0, pdu);
                        return Ok(Flow::Continue);
                    }
                    Admission::Ignore => {
                        reader.read_segment(head).await?;
                        return Ok(Flow::Continue);
                    }
                }
                self.handle_held().await
            }
            Header::DataOut(h) if !self.discovery() => {
                let h = h.clone();
                self.on_data_out(h, Incoming::Socket(head, reader)).await?;
                Ok(Flow::Continue)
            }
            _ => {
                let pdu = reader.read_segment(head).await?;
                self.handle(pdu).await
            }
        }
    }

    /// Commands held for a gap may now be in order.
    async fn handle_held(&mut self) -> Result<Flow, ConnError> {
        loop {
            let exp = self.shared.window().exp_cmd_sn();
            let Some(held) = self.held.remove(&exp.0) else {
                return Ok(Flow::Continue);
            };
            if self.handle_one(held).await? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
    }

    async fn handle_one(&mut self, pdu: Pdu) -> Result<Flow, ConnError> {
        match &pdu.header {
            Header::ScsiCommand(cmd) if !self.discovery() => {
                if self.admit(cmd.cmd_sn, cmd.immediate, &pdu) {
                    let cmd = cmd.clone();
                    self.start_command(cmd, Incoming::Memory(pdu.data)).await?;
                }
            }
            Header::DataOut(h) if !self.discovery() => self.on_data_out(h.clone(), Incoming::Memory(pdu.data)).await?,
            Header::NopOut(h) => {
                let h = h.clone();
                if h.itt.is_reserved() {
                    if self.ping.is_some_and(|(ttt, _)| ttt == h.ttt) {
                        self.ping = None;
                    }
                } else if self.admit(h.cmd_sn, h.immediate, &pdu) {
                    self.on_nop_out(&h, pdu.data).await;
                }
            }
            Header::TextRequest(h) => {
                let h = h.clone();
                if self.admit(h.cmd_sn, h.immediate, &pdu) {
                    self.on_text(&h, &pdu.data).await?;
                }
            }
            Header::TaskMgmtRequest(h) if !self.discovery() => {
                let h = h.clone();
                if self.admit(h.cmd_sn, h.immediate, &pdu) {
                    return self.on_task_management(&h).await;
                }
            }
            Header::LogoutRequest(h) => {
                let h = h.clone();
                if self.admit(h.cmd_sn, h.immediate, &pdu) {
                    return Ok(self.on_logout(&h).await);
                }
            }
            // RFC 7143: SNACK needs ErrorRecoveryLevel > 0, which we never
            // negotiate; a login in full feature phase is a protocol error,
            // and so is a SCSI PDU in a discovery session.
            other => self.reject_pdu(RejectReason::PROTOCOL_ERROR, other).await,
        }
        Ok(Flow::Continue)
    }

    fn unit(&self, lun: Lun) -> Unit {
        match lun.index() {
            Some(i) if i == self.target.options.lun => Unit::Disk(self.target.lu.clone()),
            _ => Unit::NoDevice {
                luns: vec![self.target.options.lun],
            },
        }
    }

    /// A unit attention to report instead of running `job` (SAM-5 5.14:
    /// INQUIRY, REPORT LUNS and REQUEST SENSE are answered regardless).
    fn pending_unit_attention(&self, job: &Job) -> Option<AdditionalSense> {
        let Unit::Disk(_) = job.unit else { return None };
        let opcode = OperationCode(*job.cdb.first()?);
        if matches!(
            opcode,
            OperationCode::INQUIRY | OperationCode::REPORT_LUNS | OperationCode::REQUEST_SENSE
        ) {
            return None;
        }
        let key = (self.outcome.initiator_name.clone(), self.outcome.isid);
        self.target
            .take_unit_attention(&key, self.outcome.tsih)
            .or_else(|| self.target.lu.take_unit_attention(&self.nexus))
    }

    fn context(&self) -> JobContext {
        JobContext {
            out: self.out.clone(),
            shared: self.shared.clone(),
            done: self.done_tx.clone(),
            max_segment: self.outcome.connection.max_send_data_segment_length,
            max_burst: self.outcome.session.max_burst_length,
            pipes: self.pipes.clone(),
            traffic: self.traffic.clone(),
        }
    }

    fn launch(&mut self, job: Job) {
        let itt = job.itt;
        let (fate, handle) = command::spawn(job, self.context());
        self.running.insert(itt, Running { fate, handle });
    }

    async fn start_command(&mut self, cmd: ScsiCommand, data: Incoming<'_>) -> Result<(), ConnError> {
        if self.receiving.contains_key(&cmd.itt) || self.running.contains_key(&cmd.itt) {
            // RFC 7143 11.17.1: a task tag already in use.
            data.discard().await?;
            self.shared.complete_command();
            self.reject_pdu(RejectReason::TASK_IN_PROGRESS, &Header::ScsiCommand(cmd))
                .await;
            return Ok(());
        }
        let unit = self.unit(cmd.lun);
        let cdb = cmd.full_cdb();
        let mut job = Job {
            itt: cmd.itt,
            lun: cmd.lun,
            unit,
            nexus: self.nexus.clone(),
            cdb,
            data_out: Vec::new(),
            placed: None,
            expected: cmd.expected_len,
            read: cmd.read,
            write_residual: Residual::None,
            answer: None,
        };
        if let Some(condition) = self.pending_unit_attention(&job) {
            job.answer = Some(check_condition(Sense::unit_attention(condition)));
        }
        let plan = match (&job.unit, &job.answer) {
            (Unit::Disk(lu), None) => lu
                .plan(&self.nexus, &job.cdb)
                .map_err(|refused| job.answer = Some(refused))
                .ok(),
            _ => None,
        };
        let mut needed = plan.map_or(0, |p| p.data_out_len);
        let edtl = u64::from(cmd.expected_len);
        // A WRITE whose Expected Data Transfer Length disagrees with its
        // transfer length: the residual says by how much (RFC 7143 11.4.5.1)
        // and only the whole blocks both cover are written, as tgtd does and
        // libiscsi's residual tests expect.
        let mut fitted = false;
        if let (Unit::Disk(lu), None) = (&job.unit, &job.answer)
            && needed != edtl
            && let Some((cdb, len)) = fit_write(&job.cdb, edtl, lu.device().block_size())
        {
            job.write_residual = Residual::of(cmd.expected_len, needed);
            job.cdb = cdb;
            needed = len;
            fitted = true;
        }
        let has_data = cmd.write || data.len() > 0;
        if !has_data {
            if needed > 0 && job.answer.is_none() {
                // The CDB wants data the initiator did not announce.
                job.answer = plan.and_then(|p| p.check_expected_length(0).err());
            }
            self.launch(job);
            return Ok(());
        }
        if job.answer.is_none() && !fitted {
            job.answer = match plan {
                Some(plan) => plan.check_expected_length(edtl).err(),
                // No data is expected for a LUN with no device.
                None => Some(check_condition(Sense::illegal_request(
                    AdditionalSense::LOGICAL_UNIT_NOT_SUPPORTED,
                ))),
            };
        }
        if cmd.expected_len > MAX_DATA_OUT && job.answer.is_none() {
            job.answer = Some(check_condition(Sense::invalid_field_in_cdb(0, None)));
        }
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let transfer = match WriteTransfer::new(cmd.expected_len, len, cmd.final_, &self.outcome.session) {
            Ok(t) => t,
            Err(e) => {
                data.discard().await?;
                debug!(itt = %cmd.itt, "write refused: {e}");
                // SPC-4: WRITE ERROR - UNEXPECTED UNSOLICITED DATA.
                job.answer = Some(data_phase_error(AdditionalSense::new(0x0c, 0x0c)));
                self.launch(job);
                return Ok(());
            }
        };
        if job.answer.is_none() && !fitted {
            job.write_residual = Residual::of(cmd.expected_len, needed);
        }
        let needed = usize::try_from(needed)
            .unwrap_or(usize::MAX)
            .min(cmd.expected_len as usize);
        if let (Unit::Disk(lu), None, false) = (&job.unit, &job.answer, fitted) {
            // A plain WRITE's data can go straight to the disk as it comes.
            job.placed = lu
                .placement(&self.nexus, &job.cdb)
                .filter(|p| p.len == edtl)
                .map(Placed::new);
        }
        if job.answer.is_none() && job.placed.is_none() {
            job.data_out.reserve_exact(needed);
        }
        let itt = cmd.itt;
        self.receiving.insert(itt, Receiving { job, transfer, needed });
        self.take(itt, 0, data).await?;
        self.after_data(itt).await;
        Ok(())
    }

    /// Take a data segment for `itt`'s write, at `offset` in its data: onto
    /// the disk for a placed write (spliced from the socket when it is still
    /// there), into the command's buffer otherwise.
    async fn take(&mut self, itt: Itt, offset: u32, data: Incoming<'_>) -> Result<(), ConnError> {
        let lu = self.target.lu.clone();
        let traffic = self.traffic.clone();
        let Some(receiving) = self.receiving.get_mut(&itt) else {
            return data.discard().await;
        };
        let placed = match (&mut receiving.job.placed, &receiving.job.answer) {
            (Some(placed), None) => placed,
            _ => {
                let data = data.bytes().await?;
                Traffic::add(&traffic.buffered_in, data.len());
                receiving.take(&data);
                return Ok(());
            }
        };
        let offset = u64::from(offset);
        match data {
            Incoming::Socket(head, reader) => {
                let at = placed.placement.offset + offset;
                let failed = placed.error.is_some();
                let written = reader
                    .segment_into(&head, move |segment| {
                        if failed {
                            // Dropped: the command has failed already.
                            return Ok(false);
                        }
                        lu.place(|file| segment.to_file(file, at).map(|()| true))
                            .unwrap_or_else(|| Err(std::io::Error::other("the disk cannot take placed data")))
                    })
                    .await?;
                match written {
                    Ok(true) => Traffic::add(&traffic.spliced_in, head.data_len),
                    Ok(false) => {}
                    Err(e) => {
                        placed.error.get_or_insert(e);
                    }
                }
            }
            Incoming::Memory(bytes) => {
                Traffic::add(&traffic.buffered_in, bytes.len());
                placed.pieces.push((offset, bytes));
            }
        }
        Ok(())
    }

    async fn on_data_out(&mut self, header: DataOut, data: Incoming<'_>) -> Result<(), ConnError> {
        let Some(receiving) = self.receiving.get_mut(&header.itt) else {
            data.discard().await?;
            if !self.aborted.contains(&header.itt) {
                self.reject_pdu(RejectReason::INVALID_PDU_FIELD, &Header::DataOut(header))
                    .await;
            }
            return Ok(());
        };
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        if let Err(e) = receiving.transfer.on_data_out(&header, len) {
            data.discard().await?;
            debug!(itt = %header.itt, "Data-Out refused: {e}");
            if let Some(mut failed) = self.receiving.remove(&header.itt) {
                failed.job.answer = Some(data_phase_error(AdditionalSense::new(0x4b, 0x00)));
                self.launch(failed.job);
            }
            self.reject_pdu(RejectReason::PROTOCOL_ERROR, &Header::DataOut(header))
                .await;
            return Ok(());
        }
        self.take(header.itt, header.buffer_offset, data).await?;
        self.after_data(header.itt).await;
        Ok(())
    }

    /// Run the command once all its data is in; otherwise ask for more.
    async fn after_data(&mut self, itt: Itt) {
        let Some(receiving) = self.receiving.get_mut(&itt) else {
            return;
        };
        if receiving.transfer.is_complete() {
            if let Some(done) = self.receiving.remove(&itt) {
                self.launch(done.job);
            }
            return;
        }
        let mut r2ts = Vec::new();
        loop {
            let ttt = self.ttts.next_ttt();
            let Some(request) = receiving.transfer.next_r2t(ttt) else {
                break;
            };
            r2ts.push(R2t {
                lun: receiving.job.lun,
                itt,
                ttt: request.ttt,
                stat_sn: StatSn(0),
                exp_cmd_sn: CmdSn(0),
                max_cmd_sn: CmdSn(0),
                r2t_sn: request.r2t_sn,
                buffer_offset: request.offset,
                desired_len: request.len,
            });
        }
        for r2t in r2ts {
            self.send(Pdu::new(r2t)).await;
        }
    }

    async fn on_nop_out(&mut self, h: &NopOut, data: Bytes) {
        let max = self.outcome.connection.max_send_data_segment_length as usize;
        let echo = data.slice(..data.len().min(max));
        let reply = NopIn {
            lun: h.lun,
            itt: h.itt,
            ttt: Ttt::RESERVED,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
        };
        self.done_with(h.immediate);
        self.send(Pdu::with_data(reply, echo)).await;
    }

    async fn send_ping(&mut self) {
        let ttt = self.ttts.next_ttt();
        self.ping = Some((ttt, Instant::now()));
        let ping = NopIn {
            lun: Lun::ZERO,
            itt: Itt::RESERVED,
            ttt,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
        };
        self.send(Pdu::new(ping)).await;
    }

    async fn on_text(&mut self, h: &TextRequest, data: &[u8]) -> Result<(), ConnError> {
        self.done_with(h.immediate);
        let response = |final_: bool, ttt: Ttt| TextResponse {
            final_,
            cont: false,
            lun: h.lun,
            itt: h.itt,
            ttt,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
        };
        // The initiator pulls the rest of a long answer.
        if !h.ttt.is_reserved()
            && data.is_empty()
            && let Some(seq) = self.text_out.as_mut().filter(|s| s.ttt() == h.ttt && s.itt() == h.itt)
        {
            let chunk = seq.next_chunk();
            let mut header = response(chunk.final_, chunk.ttt);
            header.cont = chunk.cont;
            if chunk.final_ {
                self.text_out = None;
            }
            self.send(Pdu::with_data(header, chunk.data)).await;
            return Ok(());
        }
        let Some(whole) = self
            .text_in
            .push(data, h.cont)
            .map_err(|e| ConnError::Protocol(e.to_string()))?
        else {
            // More text follows: acknowledge with an empty response.
            let ttt = self.ttts.next_ttt();
            self.send(Pdu::new(response(false, ttt))).await;
            return Ok(());
        };
        let pairs = text::parse(&whole).unwrap_or_default();
        let mut answer = Vec::new();
        let mut negotiable = Vec::new();
        for pair in pairs {
            if pair.key == "SendTargets" {
                let records = [TargetRecord {
                    name: self.target.options.iqn.clone(),
                    addresses: vec![self.portal.clone()],
                }];
                let own = (!self.discovery()).then_some(self.target.options.iqn.as_str());
                answer.extend(discovery::answer(
                    &records,
                    &SendTargetsRequest::parse(&pair.value),
                    own,
                ));
            } else {
                negotiable.push(pair);
            }
        }
        let mut negotiator = Negotiator::new(Role::Target, false, &self.target.options.prefs);
        answer.extend(
            negotiator
                .receive(&negotiable, Stage::FULL_FEATURE_PHASE)
                .unwrap_or_else(|_| negotiable.iter().map(|p| Pair::new(p.key.clone(), "Reject")).collect()),
        );
        let ttt = self.ttts.next_ttt();
        let max = self.outcome.connection.max_send_data_segment_length;
        let mut seq = TextResponseSequence::new(h.itt, ttt, &answer, max);
        let chunk = seq.next_chunk();
        let mut header = response(chunk.final_, chunk.ttt);
        header.cont = chunk.cont;
        self.text_out = (!chunk.final_).then_some(seq);
        self.send(Pdu::with_data(header, chunk.data)).await;
        Ok(())
    }

    /// Abort the tasks for which `matches` holds and wait for the running
    /// ones to finish. Returns how many were aborted: a running task that
    /// had already answered is not counted.
    async fn abort_where(&mut self, matches: impl Fn(Itt) -> bool) -> usize {
        let dropped: Vec<Itt> = self.receiving.keys().copied().filter(|i| matches(*i)).collect();
        let mut aborted = dropped.len();
        for itt in dropped {
            self.receiving.remove(&itt);
            self.shared.complete_command();
            self.remember_aborted(itt);
        }
        let running: Vec<Itt> = self.running.keys().copied().filter(|i| matches(*i)).collect();
        for itt in running {
            if let Some(task) = self.running.remove(&itt) {
                if task.fate.abort() {
                    aborted += 1;
                }
                // Its answer, if it had one, is queued before what we say next.
                let _ = task.handle.await;
            }
        }
        aborted
    }

    fn remember_aborted(&mut self, itt: Itt) {
        self.aborted.push_back(itt);
        if self.aborted.len() > 64 {
            self.aborted.pop_front();
        }
    }

    async fn on_task_management(&mut self, h: &TaskMgmtRequest) -> Result<Flow, ConnError> {
        self.done_with(h.immediate);
        let ours = |lun: Lun| lun.index().is_some_and(|i| i == self.target.options.lun || i == 0);
        let (response, flow) = match h.function {
            TaskFunction::ABORT_TASK => {
                let rtt = h.referenced_task_tag;
                let exists = self.receiving.contains_key(&rtt) || self.running.contains_key(&rtt);
                if exists {
                    // A task that answered before the abort reached it no
                    // longer exists (and libiscsi checks exactly that).
                    let aborted = self.abort_where(|itt| itt == rtt).await > 0;
                    let response = if aborted {
                        TmfResponse::FUNCTION_COMPLETE
                    } else {
                        TmfResponse::TASK_DOES_NOT_EXIST
                    };
                    (response, Flow::Continue)
                } else if self.shared.window().exp_cmd_sn().le(h.ref_cmd_sn) && h.ref_cmd_sn.lt(h.cmd_sn) {
                    // RFC 7143 11.5.1: a task not received yet, whose CmdSN
                    // is in the window and before the request's, counts as
                    // received and aborted.
                    (TmfResponse::FUNCTION_COMPLETE, Flow::Continue)
                } else {
                    (TmfResponse::TASK_DOES_NOT_EXIST, Flow::Continue)
                }
            }
            TaskFunction::ABORT_TASK_SET | TaskFunction::CLEAR_TASK_SET | TaskFunction::LOGICAL_UNIT_RESET => {
                if ours(h.lun) {
                    self.abort_where(|_| true).await;
                    if h.function == TaskFunction::LOGICAL_UNIT_RESET {
                        if h.lun.index() == Some(self.target.options.lun) {
                            self.target.lu.reset();
                        }
                        self.target
                            .raise_unit_attention(AdditionalSense::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
                    }
                    (TmfResponse::FUNCTION_COMPLETE, Flow::Continue)
                } else {
                    (TmfResponse::LUN_DOES_NOT_EXIST, Flow::Continue)
                }
            }
            TaskFunction::TARGET_WARM_RESET => {
                self.abort_where(|_| true).await;
                self.target.lu.reset();
                self.target
                    .raise_unit_attention(AdditionalSense::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
                (TmfResponse::FUNCTION_COMPLETE, Flow::Continue)
            }
            TaskFunction::TARGET_COLD_RESET => {
                // RFC 7143 11.5.1: the target then drops every connection.
                self.abort_where(|_| true).await;
                self.target.lu.reset();
                (TmfResponse::FUNCTION_COMPLETE, Flow::Stop)
            }
            TaskFunction::TASK_REASSIGN => (TmfResponse::REASSIGNMENT_NOT_SUPPORTED, Flow::Continue),
            _ => (TmfResponse::NOT_SUPPORTED, Flow::Continue),
        };
        let header = TaskMgmtResponse {
            response,
            itt: h.itt,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
        };
        self.send(Pdu::new(header)).await;
        Ok(flow)
    }

    async fn on_logout(&mut self, h: &LogoutRequest) -> Flow {
        self.done_with(h.immediate);
        let response = match h.reason {
            LogoutReason::CLOSE_SESSION => LogoutResponseCode::CLOSED,
            LogoutReason::CLOSE_CONNECTION if h.cid == self.outcome.cid => LogoutResponseCode::CLOSED,
            LogoutReason::CLOSE_CONNECTION => LogoutResponseCode::CID_NOT_FOUND,
            _ => LogoutResponseCode::RECOVERY_NOT_SUPPORTED,
        };
        let closing = response == LogoutResponseCode::CLOSED;
        if closing {
            // Commands in flight finish and answer before the logout does.
            self.finish_running().await;
        }
        let header = LogoutResponse {
            response,
            itt: h.itt,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
            time2wait: 0,
            time2retain: 0,
        };
        self.send(Pdu::new(header)).await;
        if !closing {
            return Flow::Continue;
        }
        info!("logged out");
        Flow::Stop
    }

    async fn finish_running(&mut self) {
        for (_, task) in self.running.drain() {
            let _ = task.handle.await;
        }
    }

    /// Let running commands finish, drop half-received ones, close.
    async fn wind_down(&mut self) {
        for _ in self.receiving.drain() {
            self.shared.complete_command();
        }
        self.finish_running().await;
        if !self.discovery() {
            // SPC-2: the end of the I_T nexus releases its RESERVE.
            self.target.lu.nexus_lost(&self.nexus);
        }
        self.traffic.report();
        let (tx, rx) = oneshot::channel();
        if self.out.send(Out::Close(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
    }
}

/// For a WRITE or WRITE AND VERIFY: the CDB cut down to the whole blocks an
/// Expected Data Transfer Length of `edtl` covers, and the bytes those
/// blocks take. `None` for any other command.
fn fit_write(cdb: &[u8], edtl: u64, block_size: u32) -> Option<(Vec<u8>, u64)> {
    let block_size = u64::from(block_size.max(1));
    let fit =
        |transfer_length: u32| u32::try_from(edtl / block_size).map_or(transfer_length, |b| b.min(transfer_length));
    let command = match Command::parse(cdb).ok()? {
        Command::Write(mut rw) => {
            rw.transfer_length = fit(rw.transfer_length);
            Command::Write(rw)
        }
        Command::WriteAndVerify(mut wv) => {
            wv.transfer_length = fit(wv.transfer_length);
            Command::WriteAndVerify(wv)
        }
        _ => return None,
    };
    let blocks = command.transfer_blocks().map_or(0, u64::from);
    Some((command.build().as_bytes().to_vec(), blocks * block_size))
}

impl Receiving {
    /// Keep what the command needs of `data`, in order; the rest of the
    /// announced length is dropped.
    fn take(&mut self, data: &[u8]) {
        if self.job.answer.is_some() {
            return;
        }
        let room = self.needed.saturating_sub(self.job.data_out.len());
        self.job.data_out.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// A data segment: in memory, or still on the socket behind its head.
enum Incoming<'r> {
    Memory(Bytes),
    Socket(Head, &'r mut PduReader),
}

impl Incoming<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Memory(bytes) => bytes.len(),
            Self::Socket(head, _) => head.data_len,
        }
    }

    /// The bytes, read in if they are still on the socket.
    async fn bytes(self) -> Result<Bytes, ConnError> {
        match self {
            Self::Memory(bytes) => Ok(bytes),
            Self::Socket(head, reader) => Ok(reader.read_segment(head).await?.data),
        }
    }

    /// Take the segment off the stream and drop it.
    async fn discard(self) -> Result<(), ConnError> {
        self.bytes().await.map(drop)
    }
}
