//! Running one SCSI command and answering it.
//!
//! The disk IO happens on the blocking pool; the answer (Data-In PDUs with
//! the status collapsed into the last one when there is no sense data, or a
//! SCSI Response) goes to the writer task.

use super::ffp::{Out, Shared};
use crate::lu::{BufferPool, Completion, LogicalUnit, Nexus, Placement, no_device_lun};
use bytes::Bytes;
use iscsi_proto::pdu::{DataIn, Header, Residual, ScsiResponse, ServiceResponse, sense_segment};
use iscsi_proto::scsi::{AdditionalSense, ScsiStatus, Sense, SenseKey};
use iscsi_proto::transfer::DataInSequence;
use iscsi_proto::{CmdSn, DataSn, Itt, Lun, StatSn, Ttt};
use iscsi_wire::{Payload, PipeChunk, PipePool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, debug_span, info, trace, warn};

/// Where a command goes: the disk, or the LUN-less answers of SPC-4.
#[derive(Debug, Clone)]
pub(crate) enum Unit {
    Disk(Arc<LogicalUnit>),
    NoDevice { luns: Vec<u16> },
}

impl Unit {
    fn execute(&self, nexus: &Nexus, cdb: &[u8], data_out: &[u8]) -> Completion {
        match self {
            Self::Disk(lu) => lu.execute_as(nexus, cdb, data_out),
            Self::NoDevice { luns } => no_device_lun(cdb, luns),
        }
    }
}

/// A command ready to run.
#[derive(Debug)]
pub(crate) struct Job {
    pub itt: Itt,
    pub lun: Lun,
    pub unit: Unit,
    /// The session's I_T nexus, which reservations are checked against.
    pub nexus: Arc<Nexus>,
    pub cdb: Vec<u8>,
    pub data_out: Vec<u8>,
    /// A WRITE whose data goes straight to the disk instead of `data_out`.
    pub placed: Option<Placed>,
    /// Expected Data Transfer Length of the SCSI Command.
    pub expected: u32,
    /// Whether data flows to the initiator.
    pub read: bool,
    /// A residual known before running (write data longer or shorter than
    /// the CDB needs); reads compute theirs from the data.
    pub write_residual: Residual,
    /// Answer this without running anything (a refused command).
    pub answer: Option<Completion>,
}

/// A WRITE whose data is put on the disk as it arrives (see
/// [`crate::lu::LogicalUnit::placement`]): spliced there from the socket,
/// or kept here until the command runs when it came in memory.
#[derive(Debug)]
pub(crate) struct Placed {
    pub placement: Placement,
    /// Segments that came in memory: (offset in the command's data, bytes).
    pub pieces: Vec<(u64, Bytes)>,
    /// The first failure to put data on the disk; the rest is dropped.
    pub error: Option<std::io::Error>,
}

impl Placed {
    pub fn new(placement: Placement) -> Self {
        Self {
            placement,
            pieces: Vec::new(),
            error: None,
        }
    }
}

/// The data a connection moved, by the way it moved: a zero-copy path that
/// silently stopped working would show here.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// WRITE data spliced from the socket into the backing file.
    pub spliced_in: AtomicU64,
    /// Data-Out and immediate data that came through memory.
    pub buffered_in: AtomicU64,
    /// READ data spliced from the backing file to the socket.
    pub spliced_out: AtomicU64,
    /// Data-In that went through memory.
    pub buffered_out: AtomicU64,
}

impl Traffic {
    pub fn add(counter: &AtomicU64, bytes: usize) {
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// One log line, if any data moved.
    pub fn report(&self) {
        let mib = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1048576.0;
        let all = [
            &self.spliced_in,
            &self.buffered_in,
            &self.spliced_out,
            &self.buffered_out,
        ];
        if all.iter().any(|c| c.load(Ordering::Relaxed) > 0) {
            info!(
                "data moved: in {:.1} MiB spliced, {:.1} MiB buffered; out {:.1} MiB spliced, {:.1} MiB buffered",
                mib(&self.spliced_in),
                mib(&self.buffered_in),
                mib(&self.spliced_out),
                mib(&self.buffered_out)
            );
        }
    }
}

/// What a running command needs from its connection.
#[derive(Debug, Clone)]
pub(crate) struct JobContext {
    pub out: mpsc::Sender<Out>,
    pub shared: Arc<Shared>,
    pub done: mpsc::UnboundedSender<Itt>,
    /// The initiator's MaxRecvDataSegmentLength.
    pub max_segment: u32,
    pub max_burst: u32,
    /// Pipes for READ data, when it may skip our memory.
    pub pipes: Option<Arc<PipePool>>,
    pub traffic: Arc<Traffic>,
}

/// Who gets to decide a running command's fate: it answers, or a task
/// management function aborts it, never both (RFC 7143 11.5.1: an aborted
/// task gets no response; one already answered no longer exists).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fate(Arc<AtomicU8>);

const RUNNING: u8 = 0;
const ANSWERED: u8 = 1;
const ABORTED: u8 = 2;

impl Fate {
    /// Claim the right to answer; false when the command was aborted.
    fn answer(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, ANSWERED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Abort the command; false when its answer is already on its way.
    pub(crate) fn abort(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, ABORTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Start `job`; the returned fate aborts it while it has not answered.
pub(crate) fn spawn(job: Job, ctx: JobContext) -> (Fate, tokio::task::JoinHandle<()>) {
    let fate = Fate::default();
    let span = debug_span!("task", itt = %job.itt);
    let handle = tokio::spawn(run(job, ctx, fate.clone()).instrument(span));
    (fate, handle)
}

async fn run(mut job: Job, ctx: JobContext, fate: Fate) {
    let (completion, data) = match job.answer.take() {
        Some(answer) => (answer, None),
        None => execute(&mut job, ctx.pipes.as_ref()).await,
    };
    ctx.shared.complete_command();
    if !fate.answer() {
        debug!("aborted: no response");
    } else {
        trace!(status = ?completion.status, "answering");
        match &data {
            Some(piped) => Traffic::add(&ctx.traffic.spliced_out, piped.len()),
            None => Traffic::add(&ctx.traffic.buffered_out, completion.data.len()),
        }
        for (header, data) in answer(&job, completion, data, ctx.max_segment, ctx.max_burst) {
            if ctx.out.send(Out::Pdu(header, data)).await.is_err() {
                break;
            }
        }
    }
    let _ = ctx.done.send(job.itt);
}

/// Run the command: its completion, and its read data when that waits in
/// a pipe rather than in the completion.
async fn execute(job: &mut Job, pipes: Option<&Arc<PipePool>>) -> (Completion, Option<Payload>) {
    let Unit::Disk(lu) = job.unit.clone() else {
        return (job.unit.execute(&job.nexus, &job.cdb, &[]), None);
    };
    if let Some(placed) = job.placed.take() {
        if placed.pieces.is_empty() && placed.error.is_none() && !lu.placed_needs_flush(&placed.placement) {
            // Every byte is in the page cache already.
            return (Completion::good(Vec::new()), None);
        }
        let done = blocking(move || {
            let written = match placed.error {
                Some(e) => Err(e),
                None => lu.place_pieces(&placed.placement, &placed.pieces),
            };
            lu.finish_placed(&placed.placement, written)
        });
        return (done.await.unwrap_or_else(target_failure), None);
    }
    let range = pipes
        .filter(|_| job.read)
        .and_then(|_| lu.read_range(&job.nexus, &job.cdb))
        .filter(|r| r.len == job.expected as usize && r.len > 0);
    if let Some((range, mut pipe)) = range.and_then(|r| Some((r, pipes?.take().filter(|p| p.holds(r.offset, r.len))?)))
    {
        let filled = blocking(move || {
            let completion = lu.read_into(&range, &mut pipe);
            (completion, pipe)
        });
        let Some((completion, pipe)) = filled.await else {
            return (target_failure(), None);
        };
        let data = (completion.status == ScsiStatus::GOOD).then(|| Payload::Pipe(PipeChunk::whole(pipe)));
        return (completion, data);
    }
    let nexus = job.nexus.clone();
    let cdb = std::mem::take(&mut job.cdb);
    let data = std::mem::take(&mut job.data_out);
    let done = blocking(move || lu.execute_as(&nexus, &cdb, &data));
    (done.await.unwrap_or_else(target_failure), None)
}

/// Run disk IO on the blocking pool; `None` if it panicked.
async fn blocking<T: Send + 'static>(io: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(io)
        .await
        .map_err(|e| warn!("command execution failed: {e}"))
        .ok()
}

/// The answer of a command whose execution died.
fn target_failure() -> Completion {
    Completion::check_condition(Sense::new(
        SenseKey::HARDWARE_ERROR,
        AdditionalSense::INTERNAL_TARGET_FAILURE,
    ))
}

/// The PDUs that carry `completion` back; a read's data is `piped` when it
/// waits in a pipe (exactly the Expected Data Transfer Length), else in the
/// completion.
fn answer(
    job: &Job,
    completion: Completion,
    piped: Option<Payload>,
    max_segment: u32,
    max_burst: u32,
) -> Vec<(Header, Payload)> {
    let Completion { status, sense, data } = completion;
    let (data, residual) = match piped {
        Some(piped) => (piped, Residual::None),
        None if job.read => {
            let sent = data.len().min(job.expected as usize);
            let residual = Residual::of(job.expected, data.len() as u64);
            let mut data = match &job.unit {
                Unit::Disk(lu) => BufferPool::wrap(lu.buffers(), data),
                Unit::NoDevice { .. } => Bytes::from(data),
            };
            data.truncate(sent);
            (Payload::Bytes(data), residual)
        }
        None => (Payload::default(), job.write_residual),
    };
    let collapse = sense.is_none() && !data.is_empty();
    let mut pdus = Vec::new();
    let mut data_sn = DataSn(0);
    if !data.is_empty() {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        for chunk in DataInSequence::new(len, max_segment, max_burst) {
            let last_with_status = chunk.last && collapse;
            let header = DataIn {
                final_: chunk.final_,
                ack: false,
                status: last_with_status.then_some(status),
                residual: if last_with_status { residual } else { Residual::None },
                lun: job.lun,
                itt: job.itt,
                ttt: Ttt::RESERVED,
                stat_sn: StatSn(0),
                exp_cmd_sn: CmdSn(0),
                max_cmd_sn: CmdSn(0),
                data_sn: chunk.data_sn,
                buffer_offset: chunk.offset,
            };
            let range = chunk.offset as usize..(chunk.offset + chunk.len) as usize;
            pdus.push((Header::DataIn(header), data.slice(range)));
            data_sn = chunk.data_sn.next();
        }
    }
    if !collapse {
        let header = ScsiResponse {
            response: ServiceResponse::COMMAND_COMPLETED,
            status,
            residual,
            bidi_read_residual: Residual::None,
            itt: job.itt,
            snack_tag: 0,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
            exp_data_sn: data_sn,
        };
        let segment = sense.map(|s| sense_segment(s.fixed().as_bytes())).unwrap_or_default();
        pdus.push((Header::ScsiResponse(header), Payload::Bytes(segment)));
    }
    pdus
}

#[cfg(test)]
mod tests {
    use super::*;
    use iscsi_proto::pdu::Isid;

    fn job(read: bool, expected: u32) -> Job {
        Job {
            itt: Itt(7),
            lun: Lun::from_index(1),
            unit: Unit::NoDevice { luns: vec![1] },
            nexus: Arc::new(Nexus::new("iqn.2024-01.org.example:initiator", Isid::default())),
            cdb: vec![],
            data_out: vec![],
            placed: None,
            expected,
            read,
            write_residual: Residual::None,
            answer: None,
        }
    }

    fn good(data: Vec<u8>) -> Completion {
        Completion {
            status: ScsiStatus::GOOD,
            sense: None,
            data,
        }
    }

    #[test]
    fn reads_collapse_status_into_the_last_data_in() {
        let pdus = answer(&job(true, 10_000), good(vec![1; 10_000]), None, 4096, 1 << 20);
        assert_eq!(pdus.len(), 3);
        let Header::DataIn(last) = &pdus[2].0 else { panic!() };
        assert_eq!(last.status, Some(ScsiStatus::GOOD));
        assert_eq!(
            (last.data_sn, last.buffer_offset, pdus[2].1.len()),
            (DataSn(2), 8192, 1808)
        );
    }

    #[test]
    fn short_reads_report_underflow_and_long_ones_overflow() {
        let pdus = answer(&job(true, 100), good(vec![1; 36]), None, 4096, 1 << 20);
        let Header::DataIn(d) = &pdus[0].0 else { panic!() };
        assert_eq!(d.residual, Residual::Underflow(64));
        let pdus = answer(&job(true, 8), good(vec![1; 36]), None, 4096, 1 << 20);
        let Header::DataIn(d) = &pdus[0].0 else { panic!() };
        assert_eq!((d.residual, pdus[0].1.len()), (Residual::Overflow(28), 8));
    }

    #[test]
    fn sense_goes_in_a_scsi_response() {
        let bad = Completion {
            status: ScsiStatus::CHECK_CONDITION,
            sense: Some(Sense::illegal_request(AdditionalSense::LBA_OUT_OF_RANGE)),
            data: vec![],
        };
        let pdus = answer(&job(true, 512), bad, None, 4096, 1 << 20);
        assert_eq!(pdus.len(), 1);
        let Header::ScsiResponse(r) = &pdus[0].0 else { panic!() };
        assert_eq!(r.status, ScsiStatus::CHECK_CONDITION);
        assert_eq!(r.residual, Residual::Underflow(512));
        let Payload::Bytes(sense) = &pdus[0].1 else { panic!() };
        assert_eq!(&sense[..3], &[0, 18, 0x70]);
    }
}
