//! Task management (RFC 7143 11.5, SAM-5 7) and logout (11.14): what each
//! function aborts, and answers that wait until the aborted commands the
//! program was running have stopped (SAM-5: a task management function
//! completes after the tasks it aborts have ended).

use super::tasks::State;
use super::{Close, Connection, Event};
use crate::Itt;
use crate::pdu::{
    LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, TaskFunction, TaskMgmtRequest, TaskMgmtResponse,
    TmfResponse,
};
use crate::segment::Segment;
use crate::{CmdSn, StatSn};
use bytes::Bytes;
use std::collections::HashSet;

/// What task management reset, for the program's SCSI state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// LOGICAL UNIT RESET of this LUN.
    LogicalUnit(u16),
    /// TARGET WARM RESET.
    TargetWarm,
    /// TARGET COLD RESET: the connection closes after the answer.
    TargetCold,
}

/// Answers waiting for aborted commands to stop.
#[derive(Debug, Default)]
pub(super) struct Pending {
    answers: Vec<Waiting>,
    logout: Option<LogoutRequest>,
}

#[derive(Debug)]
struct Waiting {
    response: TaskMgmtResponse,
    /// Running commands it aborted that have not stopped yet.
    stopping: HashSet<Itt>,
    close: bool,
}

impl<D: Segment> Connection<D> {
    /// Abort the tasks for which `matches` holds. Returns how many were
    /// aborted, and the running ones, which the program must stop.
    fn abort(&mut self, matches: impl Fn(Itt) -> bool) -> (usize, Vec<Itt>) {
        let mut aborted = 0;
        let mut running = Vec::new();
        let itts: Vec<Itt> = self.tasks.keys().copied().filter(|i| matches(*i)).collect();
        for itt in itts {
            let Some(task) = self.tasks.get_mut(&itt) else { continue };
            match task.state {
                State::Receiving(_) => {
                    self.tasks.remove(&itt);
                    aborted += 1;
                    running.push(itt);
                }
                State::Running => {
                    task.state = State::Aborted;
                    aborted += 1;
                    running.push(itt);
                }
                State::Aborted => {}
            }
            self.remember_aborted(itt);
        }
        if !running.is_empty() {
            self.events.push_back(Event::Abort(running.clone()));
        }
        // Only those still in the table are the program's to stop.
        running.retain(|itt| self.tasks.contains_key(itt));
        (aborted, running)
    }

    fn remember_aborted(&mut self, itt: Itt) {
        self.aborted.push_back(itt);
        if self.aborted.len() > 64 {
            self.aborted.pop_front();
        }
    }

    pub(super) fn task_management(&mut self, h: &TaskMgmtRequest) {
        let configured = self.config.lun;
        let ours = |lun: crate::Lun| lun.index().is_some_and(|i| i == configured || i == 0);
        let mut close = false;
        let (response, stopping) = match h.function {
            TaskFunction::ABORT_TASK => {
                let rtt = h.referenced_task_tag;
                if self.tasks.contains_key(&rtt) {
                    let (aborted, stopping) = self.abort(|itt| itt == rtt);
                    // A task that answered before the abort reached it no
                    // longer exists (and libiscsi checks exactly that).
                    let response = if aborted > 0 {
                        TmfResponse::FUNCTION_COMPLETE
                    } else {
                        TmfResponse::TASK_DOES_NOT_EXIST
                    };
                    (response, stopping)
                } else if self.window.expects_before(h.ref_cmd_sn, h.cmd_sn) {
                    // RFC 7143 11.5.1: a task not received yet, whose CmdSN
                    // is in the window and before the request's, counts as
                    // received and aborted.
                    (TmfResponse::FUNCTION_COMPLETE, Vec::new())
                } else {
                    (TmfResponse::TASK_DOES_NOT_EXIST, Vec::new())
                }
            }
            TaskFunction::ABORT_TASK_SET | TaskFunction::CLEAR_TASK_SET | TaskFunction::LOGICAL_UNIT_RESET => {
                if ours(h.lun) {
                    let (_, stopping) = self.abort(|_| true);
                    if h.function == TaskFunction::LOGICAL_UNIT_RESET {
                        let lun = h.lun.index().unwrap_or(0);
                        self.events.push_back(Event::Reset(Reset::LogicalUnit(lun)));
                    }
                    (TmfResponse::FUNCTION_COMPLETE, stopping)
                } else {
                    (TmfResponse::LUN_DOES_NOT_EXIST, Vec::new())
                }
            }
            TaskFunction::TARGET_WARM_RESET => {
                let (_, stopping) = self.abort(|_| true);
                self.events.push_back(Event::Reset(Reset::TargetWarm));
                (TmfResponse::FUNCTION_COMPLETE, stopping)
            }
            TaskFunction::TARGET_COLD_RESET => {
                // RFC 7143 11.5.1: the target then drops every connection.
                let (_, stopping) = self.abort(|_| true);
                self.events.push_back(Event::Reset(Reset::TargetCold));
                close = true;
                (TmfResponse::FUNCTION_COMPLETE, stopping)
            }
            TaskFunction::TASK_REASSIGN => (TmfResponse::REASSIGNMENT_NOT_SUPPORTED, Vec::new()),
            _ => (TmfResponse::NOT_SUPPORTED, Vec::new()),
        };
        let response = TaskMgmtResponse {
            response,
            itt: h.itt,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
        };
        self.management.answers.push(Waiting {
            response,
            stopping: stopping.into_iter().collect(),
            close,
        });
        self.send_ready_answers();
    }

    /// An aborted command the program was running has stopped.
    pub(super) fn stopped(&mut self, itt: Itt) {
        for waiting in &mut self.management.answers {
            waiting.stopping.remove(&itt);
        }
        self.send_ready_answers();
    }

    /// Task management answers, in order, as their aborted commands stop.
    fn send_ready_answers(&mut self) {
        while self.management.answers.first().is_some_and(|w| w.stopping.is_empty()) {
            let waiting = self.management.answers.remove(0);
            self.send(waiting.response, Bytes::new());
            if waiting.close {
                self.close(Close::ColdReset);
            }
        }
    }

    pub(super) fn logout(&mut self, h: &LogoutRequest) {
        let response = match h.reason {
            LogoutReason::CLOSE_SESSION => LogoutResponseCode::CLOSED,
            LogoutReason::CLOSE_CONNECTION if h.cid == self.cid => LogoutResponseCode::CLOSED,
            LogoutReason::CLOSE_CONNECTION => LogoutResponseCode::CID_NOT_FOUND,
            _ => LogoutResponseCode::RECOVERY_NOT_SUPPORTED,
        };
        if response != LogoutResponseCode::CLOSED {
            self.send(logout_response(h, response), Bytes::new());
            return;
        }
        // Commands the program runs finish and answer before the logout does.
        self.management.logout = Some(h.clone());
        self.finish_logout();
    }

    /// Answer a logout once no command is with the program.
    pub(super) fn finish_logout(&mut self) {
        let busy = self
            .tasks
            .values()
            .any(|t| matches!(t.state, State::Running | State::Aborted));
        if busy {
            return;
        }
        if let Some(h) = self.management.logout.take() {
            self.send(logout_response(&h, LogoutResponseCode::CLOSED), Bytes::new());
            self.close(Close::LoggedOut);
        }
    }
}

fn logout_response(h: &LogoutRequest, response: LogoutResponseCode) -> LogoutResponse {
    LogoutResponse {
        response,
        itt: h.itt,
        stat_sn: StatSn(0),
        exp_cmd_sn: CmdSn(0),
        max_cmd_sn: CmdSn(0),
        time2wait: 0,
        time2retain: 0,
    }
}
