//! Running one SCSI command: its disk IO on the blocking pool, or no IO at
//! all for a WRITE whose data is already on the disk; a READ's data spliced
//! into a pipe when it can skip our memory. The answer is the protocol
//! machine's [`Response`].

use super::jobs::{Job, Unit};
use crate::lu::{BufferPool, Completion};
use bytes::Bytes;
use iscsi_proto::scsi::{AdditionalSense, ScsiStatus, Sense, SenseKey};
use iscsi_proto::target::Response;
use iscsi_wire::{Payload, PipeChunk, PipePool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{info, warn};

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

/// The answer of a placed WRITE whose every byte is in the page cache
/// already and which need not be flushed: nothing left to run. `None` for
/// any other job.
pub(crate) fn answer_now(job: &Job) -> Option<Response<Payload>> {
    let (None, Some(placed), Unit::Disk(lu)) = (&job.answer, &job.placed, &job.unit) else {
        return None;
    };
    if !placed.pieces.is_empty() || placed.error.is_some() || lu.placed_needs_flush(&placed.placement) {
        return None;
    }
    Some(Response {
        status: ScsiStatus::GOOD,
        sense: None,
        data: None,
        transfer_len: u64::from(job.expected),
    })
}

/// Run `job` and say how it ended. `pipes` when READ data may skip our
/// memory.
pub(crate) async fn run(mut job: Job, pipes: Option<Arc<PipePool>>, traffic: &Traffic) -> Response<Payload> {
    let (completion, piped) = match job.answer.take() {
        Some(answer) => (answer, None),
        None => execute(&mut job, pipes.as_ref()).await,
    };
    let Completion { status, sense, data } = completion;
    let (data, transfer_len) = match piped {
        Some(piped) => {
            Traffic::add(&traffic.spliced_out, piped.len());
            let len = piped.len() as u64;
            (Some(piped), len)
        }
        None if job.read => {
            Traffic::add(&traffic.buffered_out, data.len());
            let len = data.len() as u64;
            let data = match &job.unit {
                Unit::Disk(lu) => BufferPool::wrap(lu.buffers(), data),
                Unit::NoDevice { .. } => Bytes::from(data),
            };
            (Some(Payload::Bytes(data)), len)
        }
        None => (None, job.transfer_len.unwrap_or(u64::from(job.expected))),
    };
    Response {
        status,
        sense,
        data,
        transfer_len,
    }
}

/// Run the command: its completion, and its read data when that waits in
/// a pipe rather than in the completion.
async fn execute(job: &mut Job, pipes: Option<&Arc<PipePool>>) -> (Completion, Option<Payload>) {
    let Unit::Disk(lu) = job.unit.clone() else {
        return (job.unit.execute(&job.nexus, &job.cdb, &[]), None);
    };
    if let Some(placed) = job.placed.take() {
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
