//! One connection's state, shared by its reader, its command tasks and its
//! writer: the protocol machine and the SCSI side behind one lock, and what
//! the machine's events mean for them.

use super::command::{self, Traffic};
use super::jobs::{Job, Jobs};
use super::wire::Out;
use iscsi_proto::target::{self, Close, Event};
use iscsi_wire::{Payload, PipePool};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug_span};

/// The machine and the SCSI side, shared by the reader and the commands.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) machine: target::Connection<Payload>,
    pub(super) jobs: Jobs,
    pub(super) closed: Option<Close>,
}

/// One connection's state and the tasks around it.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) out: mpsc::UnboundedSender<Out>,
    pub(super) pipes: Option<Arc<PipePool>>,
    pub(super) traffic: Arc<Traffic>,
    pub(super) lu: Arc<crate::lu::LogicalUnit>,
    pub(super) commands: Arc<Mutex<JoinSet<()>>>,
}

impl Link {
    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Act on the machine's events and send what it has to send, in the
    /// order it stamped it (under the lock, so no two batches cross).
    pub(super) fn drain(&self, shared: &mut Shared) {
        while let Some(event) = shared.machine.poll_event() {
            match event {
                Event::Command(cmd) => shared.jobs.command(cmd),
                Event::Data { itt, offset, data } => {
                    Traffic::add(&self.traffic.buffered_in, data.len());
                    if let Some(job) = shared.jobs.get_mut(itt) {
                        job.take(offset, data);
                    }
                }
                Event::Ready(itt) => {
                    let Some(job) = shared.jobs.remove(itt) else { continue };
                    match command::answer_now(&job) {
                        // No IO to wait for: answered here, without a task.
                        Some(response) => shared.machine.respond(itt, response),
                        None => self.launch(job),
                    }
                }
                Event::Failed(itt) => {
                    shared.jobs.remove(itt);
                }
                Event::Abort(itts) => {
                    // Those not running yet are dropped; running ones finish
                    // unanswered (the machine keeps their answers back).
                    for itt in itts {
                        shared.jobs.remove(itt);
                    }
                }
                Event::Reset(reset) => shared.jobs.reset(reset),
                Event::Close(why) => shared.closed = Some(why),
            }
        }
        let batch: Vec<_> = std::iter::from_fn(|| shared.machine.poll_transmit()).collect();
        if !batch.is_empty() {
            // A closed channel means the writer died; the reader notices.
            let _ = self.out.send(Out::Batch(batch));
        }
    }

    fn launch(&self, job: Job) {
        let link = self.clone();
        let itt = job.itt;
        let task = async move {
            let response = command::run(job, link.pipes.clone(), &link.traffic).await;
            let mut shared = link.lock();
            shared.machine.respond(itt, response);
            link.drain(&mut shared);
        };
        let mut commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
        while commands.try_join_next().is_some() {}
        commands.spawn(task.instrument(debug_span!("task", %itt)));
    }
}
