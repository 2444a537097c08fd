//! A command's life at the target: its arrival, its data phase (immediate
//! data, unsolicited Data-Out, R2T-solicited bursts), and its answer (Data-In
//! with the status collapsed into the last PDU, or a SCSI Response).

use super::window::Slot;
use super::{Connection, Event, Incoming, Route, command_header};
use crate::pdu::{
    DataIn, DataOut, Header, R2t, RejectReason, Residual, ScsiCommand, ScsiResponse, ServiceResponse, sense_segment,
};
use crate::scsi::{ScsiStatus, Sense};
use crate::segment::Segment;
use crate::transfer::{DataInSequence, TransferError, WriteTransfer};
use crate::{CmdSn, DataSn, Itt, Lun, StatSn, Ttt};
use bytes::Bytes;

/// A SCSI command for the program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub itt: Itt,
    pub lun: Lun,
    /// The whole CDB, an extended CDB included.
    pub cdb: Vec<u8>,
    /// Expected Data Transfer Length.
    pub expected_len: u32,
    /// Data flows to the initiator.
    pub read: bool,
    /// Write data follows (or came with the command).
    pub write: bool,
}

/// How a command ended, for [`Connection::respond`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<D> {
    pub status: ScsiStatus,
    /// With CHECK CONDITION.
    pub sense: Option<Sense>,
    /// A read's data, no longer than `transfer_len`; cut here to the
    /// Expected Data Transfer Length.
    pub data: Option<D>,
    /// The data transfer length the command implied: the read data it
    /// produced, or the write data its CDB needed. Its difference from the
    /// Expected Data Transfer Length is the residual (RFC 7143 11.4.5).
    pub transfer_len: u64,
}

/// Where a command is.
#[derive(Debug)]
pub(super) enum State {
    /// Collecting write data.
    Receiving(WriteTransfer),
    /// With the program.
    Running,
    /// Aborted while with the program, which has yet to say it stopped.
    Aborted,
}

#[derive(Debug)]
pub(super) struct Task {
    pub(super) lun: Lun,
    pub(super) read: bool,
    pub(super) expected: u32,
    pub(super) state: State,
    /// R2Ts sent for its data.
    pub(super) r2ts: u32,
    /// Its place in the command window (none for an immediate command);
    /// the window reopens when the task ends and this is dropped.
    _slot: Option<Slot>,
}

/// What answers a data phase that broke the rules: the Reject sent for the
/// offending PDU, if any, and the sense the command ends with (RFC 7143 at
/// ErrorRecoveryLevel 0: the command cannot complete).
#[must_use]
pub fn data_phase_answer(error: &TransferError) -> (Option<RejectReason>, Sense) {
    use crate::scsi::{AdditionalSense, SenseKey};
    match error {
        // SPC-4: WRITE ERROR - UNEXPECTED UNSOLICITED DATA.
        TransferError::ImmediateTooLong(_)
        | TransferError::ImmediateNotAllowed
        | TransferError::UnsolicitedNotAllowed => (
            None,
            Sense::new(SenseKey::ABORTED_COMMAND, AdditionalSense::new(0x0c, 0x0c)),
        ),
        // SPC-4: DATA PHASE ERROR, and the Data-Out itself is a protocol error.
        TransferError::UnknownTransferTag
        | TransferError::OutOfOrder { .. }
        | TransferError::DataSn { .. }
        | TransferError::Overflow => (
            Some(RejectReason::PROTOCOL_ERROR),
            Sense::new(SenseKey::ABORTED_COMMAND, AdditionalSense::new(0x4b, 0x00)),
        ),
    }
}

impl<D: Segment> Connection<D> {
    /// A command admitted now (with its window `slot`, unless immediate).
    pub(super) fn start(&mut self, cmd: ScsiCommand, slot: Option<Slot>, data: Incoming) -> Route {
        let discard = match data {
            Incoming::Routed(_) => Route::Discard,
            Incoming::Memory(_) => Route::Memory,
        };
        if self.tasks.contains_key(&cmd.itt) {
            // RFC 7143 11.17.1: a task tag already in use.
            self.reject(RejectReason::TASK_IN_PROGRESS, &command_header(cmd));
            return discard;
        }
        let itt = cmd.itt;
        let len = data.len();
        let command = Command {
            itt,
            lun: cmd.lun,
            cdb: cmd.full_cdb(),
            expected_len: cmd.expected_len,
            read: cmd.read,
            write: cmd.write || len > 0,
        };
        let mut task = Task {
            lun: cmd.lun,
            read: cmd.read,
            expected: cmd.expected_len,
            state: State::Running,
            r2ts: 0,
            _slot: slot,
        };
        if !command.write {
            self.tasks.insert(itt, task);
            self.events.push_back(Event::Command(command));
            self.events.push_back(Event::Ready(itt));
            return discard;
        }
        match WriteTransfer::new(cmd.expected_len, len, cmd.final_, &self.session) {
            Ok(transfer) => task.state = State::Receiving(transfer),
            Err(e) => {
                // The program never sees it: the machine answers.
                let (_, sense) = data_phase_answer(&e);
                self.tasks.insert(itt, task);
                self.answer(itt, failed(sense, cmd.expected_len));
                return discard;
            }
        }
        self.tasks.insert(itt, task);
        self.events.push_back(Event::Command(command));
        self.take(itt, 0, data)
    }

    /// Data-Out for a command collecting its data.
    pub(super) fn data_out(&mut self, h: &DataOut, data: Incoming) -> Route {
        let discard = match data {
            Incoming::Routed(_) => Route::Discard,
            Incoming::Memory(_) => Route::Memory,
        };
        let Some(Task {
            state: State::Receiving(transfer),
            ..
        }) = self.tasks.get_mut(&h.itt)
        else {
            // Late data of a task just aborted is no error.
            if !self.aborted.contains(&h.itt) {
                self.reject(RejectReason::INVALID_PDU_FIELD, &Header::DataOut(h.clone()));
            }
            return discard;
        };
        if let Err(e) = transfer.on_data_out(h, data.len()) {
            // The Reject of the PDU first, then the command's end.
            let (reject, sense) = data_phase_answer(&e);
            self.reject(
                reject.unwrap_or(RejectReason::PROTOCOL_ERROR),
                &Header::DataOut(h.clone()),
            );
            let expected = self.tasks.get(&h.itt).map_or(0, |t| t.expected);
            self.answer(h.itt, failed(sense, expected));
            self.events.push_back(Event::Failed(h.itt));
            return discard;
        }
        self.take(h.itt, h.buffer_offset, data)
    }

    /// Data accounted for: hand it over, or route it.
    fn take(&mut self, itt: Itt, offset: u32, data: Incoming) -> Route {
        match data {
            Incoming::Memory(data) => {
                if !data.is_empty() {
                    self.events.push_back(Event::Data { itt, offset, data });
                }
                self.after_data(itt);
                Route::Memory
            }
            Incoming::Routed(_) => {
                self.routed = Some(itt);
                Route::Task { itt, offset }
            }
        }
    }

    /// The command runs once all its data is in; otherwise ask for more.
    pub(super) fn after_data(&mut self, itt: Itt) {
        let Some(task) = self.tasks.get_mut(&itt) else { return };
        let State::Receiving(transfer) = &mut task.state else {
            return;
        };
        if transfer.is_complete() {
            task.r2ts = transfer.r2ts_sent().0;
            task.state = State::Running;
            self.events.push_back(Event::Ready(itt));
            return;
        }
        let lun = task.lun;
        let mut r2ts = Vec::new();
        loop {
            let ttt = self.ttts.next_ttt();
            let Some(request) = transfer.next_r2t(ttt) else { break };
            r2ts.push(R2t {
                lun,
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
            self.send(r2t, Bytes::new());
        }
    }

    /// A command the program ran has ended. Once aborted, its end is only
    /// noted: the answer is not sent.
    pub fn respond(&mut self, itt: Itt, response: Response<D>) {
        let Some(task) = self.tasks.get(&itt) else { return };
        match task.state {
            State::Aborted => {
                self.tasks.remove(&itt);
                self.stopped(itt);
            }
            _ => self.answer(itt, response),
        }
        self.finish_logout();
    }

    /// Send the PDUs that carry `response` and end the task.
    pub(super) fn answer(&mut self, itt: Itt, response: Response<D>) {
        let Some(task) = self.tasks.remove(&itt) else { return };
        let Response {
            status,
            sense,
            data,
            transfer_len,
        } = response;
        let residual = Residual::of(task.expected, transfer_len);
        let data = data
            .filter(|_| task.read)
            .map(|d| d.slice(0..d.len().min(task.expected as usize)))
            .filter(|d| !d.is_empty());
        let collapse = sense.is_none() && data.is_some();
        let mut data_sn = DataSn(0);
        if let Some(data) = &data {
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            for chunk in DataInSequence::new(len, self.max_send, self.session.max_burst_length) {
                let last_with_status = chunk.last && collapse;
                let header = DataIn {
                    final_: chunk.final_,
                    ack: false,
                    status: last_with_status.then_some(status),
                    residual: if last_with_status { residual } else { Residual::None },
                    lun: task.lun,
                    itt,
                    ttt: Ttt::RESERVED,
                    stat_sn: StatSn(0),
                    exp_cmd_sn: CmdSn(0),
                    max_cmd_sn: CmdSn(0),
                    data_sn: chunk.data_sn,
                    buffer_offset: chunk.offset,
                };
                let range = chunk.offset as usize..(chunk.offset + chunk.len) as usize;
                self.send(header, data.slice(range));
                data_sn = chunk.data_sn.next();
            }
        }
        if !collapse {
            let header = ScsiResponse {
                response: ServiceResponse::COMMAND_COMPLETED,
                status,
                residual,
                bidi_read_residual: Residual::None,
                itt,
                snack_tag: 0,
                stat_sn: StatSn(0),
                exp_cmd_sn: CmdSn(0),
                max_cmd_sn: CmdSn(0),
                // RFC 7143 11.4.8: "the number of R2T and Data-In (read)
                // PDUs the target has sent for the command".
                exp_data_sn: DataSn(data_sn.0 + task.r2ts),
            };
            let segment = sense.map(|s| sense_segment(s.fixed().as_bytes())).unwrap_or_default();
            self.send(header, segment);
        }
    }
}

/// CHECK CONDITION with `sense`, no data moved.
fn failed<D>(sense: Sense, expected: u32) -> Response<D> {
    Response {
        status: ScsiStatus::CHECK_CONDITION,
        sense: Some(sense),
        data: None,
        transfer_len: u64::from(expected),
    }
}
