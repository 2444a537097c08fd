//! What each PDU from the target does to the initiator's connection, every
//! number in it checked against what was sent: a target that breaks a rule
//! loses the connection, so nothing it sent wrongly is taken as an answer.

use super::{Connection, Event, Request, Task};
use crate::pdu::{
    AsyncEvent, DataIn, DataOut, Header, NopIn, NopOut, Pdu, R2t, Residual, TextRequest, sense_of_segment,
};
use crate::segment::Segment;
use crate::text;
use crate::transfer::data_out_sequence;
use crate::{DataSn, Itt, StatSn};
use bytes::Bytes;
use std::time::Instant;

/// Why a PDU from the target cannot be taken: the connection is lost.
type Violation = String;

impl<D: Segment> Connection<D> {
    /// One PDU from the target, at `now`.
    pub fn handle_pdu(&mut self, pdu: Pdu, now: Instant) {
        if self.lost {
            return;
        }
        self.heard = now;
        self.pinged = false;
        if let Some((exp, max)) = pdu.header.command_window() {
            self.sequencer.update(exp, max);
        }
        if let Some(stat_sn) = pdu.header.stat_sn() {
            self.exp_stat_sn.received(stat_sn);
        }
        if let Err(violation) = self.receive(pdu) {
            self.lose(violation);
        }
        self.dispatch();
    }

    fn receive(&mut self, pdu: Pdu) -> Result<(), Violation> {
        let Pdu { header, data } = pdu;
        match header {
            Header::R2t(r2t) => self.r2t(&r2t),
            Header::DataIn(d) => self.data_in(&d, data),
            Header::ScsiResponse(r) => {
                let sense = sense_of_segment(&data)
                    .filter(|s| !s.is_empty())
                    .map(Bytes::copy_from_slice);
                let read = self.take_read(r.itt, r.residual);
                self.answered(
                    r.itt,
                    Event::Completed {
                        itt: r.itt,
                        status: r.status,
                        sense,
                        data: read,
                        residual: r.residual,
                    },
                );
                Ok(())
            }
            Header::NopIn(nop) => {
                self.nop_in(&nop, data);
                Ok(())
            }
            Header::TextResponse(t) => {
                let Some(task) = self.tasks.get_mut(&t.itt) else {
                    return Err(format!("Text Response for unknown task {}", t.itt));
                };
                if task.text.len() + data.len() > text::MAX_TEXT_LEN {
                    return Err("text response longer than 64 KiB".into());
                }
                task.text.extend_from_slice(&data);
                if t.final_ {
                    let whole = std::mem::take(&mut task.text);
                    let pairs = text::parse(&whole).map_err(|e| e.to_string())?;
                    self.answered(t.itt, Event::Text { itt: t.itt, pairs });
                } else {
                    // RFC 7143 11.10.2: ask for the rest with the target's TTT.
                    let header = TextRequest {
                        immediate: true,
                        final_: true,
                        cont: false,
                        lun: t.lun,
                        itt: t.itt,
                        ttt: t.ttt,
                        cmd_sn: self.sequencer.immediate(),
                        exp_stat_sn: StatSn(0),
                    };
                    self.send(header, D::from(Bytes::new()));
                }
                Ok(())
            }
            Header::TaskMgmtResponse(t) => {
                self.answered(
                    t.itt,
                    Event::TaskManagement {
                        itt: t.itt,
                        response: t.response,
                    },
                );
                Ok(())
            }
            Header::LogoutResponse(l) => {
                self.answered(
                    l.itt,
                    Event::LoggedOut {
                        itt: l.itt,
                        response: l.response,
                    },
                );
                self.lose("logged out".into());
                Ok(())
            }
            Header::Reject(r) => {
                // The data segment is the rejected PDU's header; its ITT
                // names the request that cannot complete.
                let itt = data
                    .get(16..20)
                    .map(|b| Itt(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
                if let Some(itt) = itt {
                    self.answered(itt, Event::Rejected { itt, reason: r.reason });
                }
                Ok(())
            }
            Header::AsyncMessage(a) => {
                if a.event == AsyncEvent::LOGOUT_REQUEST {
                    self.events.push_back(Event::LogoutRequested { within: a.parameter3 });
                }
                Ok(())
            }
            other => Err(format!("unexpected {:?} from the target", other.opcode())),
        }
    }

    /// An R2T: send the burst it asks for (RFC 7143 11.8).
    fn r2t(&mut self, r2t: &R2t) -> Result<(), Violation> {
        let max_burst = self.session.max_burst_length;
        let Some(Task {
            request: Request::Scsi { lun, data_out, .. },
            next_r2t_sn,
            ..
        }) = self.tasks.get_mut(&r2t.itt)
        else {
            return Err(format!("R2T for unknown task {}", r2t.itt));
        };
        // "R2TSN ... starts with 0 for the first R2T of a command and is
        // incremented by 1 for every R2T".
        if r2t.r2t_sn != *next_r2t_sn {
            return Err(format!(
                "R2T with R2TSN {} for task {}, expected {}",
                r2t.r2t_sn.0, r2t.itt, next_r2t_sn.0
            ));
        }
        let end = u64::from(r2t.buffer_offset) + u64::from(r2t.desired_len);
        if end > data_out.len() as u64 {
            return Err(format!(
                "R2T asks for bytes {}..{end} of a {}-byte write",
                r2t.buffer_offset,
                data_out.len()
            ));
        }
        // "The Desired Data Transfer Length MUST NOT be 0 and MUST NOT
        // exceed MaxBurstLength."
        if r2t.desired_len > max_burst {
            return Err(format!(
                "R2T asks for {} bytes, more than MaxBurstLength {max_burst}",
                r2t.desired_len
            ));
        }
        *next_r2t_sn = next_r2t_sn.next();
        let (lun, data_out) = (*lun, data_out.clone());
        for chunk in data_out_sequence(r2t.buffer_offset, r2t.desired_len, self.max_send) {
            let dout = DataOut {
                final_: chunk.final_,
                lun,
                itt: r2t.itt,
                ttt: r2t.ttt,
                exp_stat_sn: StatSn(0),
                data_sn: chunk.data_sn,
                buffer_offset: chunk.offset,
            };
            let range = chunk.offset as usize..(chunk.offset + chunk.len) as usize;
            self.send(dout, data_out.slice(range));
        }
        Ok(())
    }

    /// Data-In: read data in order (DataPDUInOrder=Yes), DataSN counting
    /// from 0 (RFC 7143 11.7.5), within the read's length.
    fn data_in(&mut self, d: &DataIn, data: Bytes) -> Result<(), Violation> {
        let Some(Task {
            request: Request::Scsi { read_len, .. },
            read,
            next_data_sn,
            ..
        }) = self.tasks.get_mut(&d.itt)
        else {
            return Err(format!("Data-In for unknown task {}", d.itt));
        };
        if d.data_sn != *next_data_sn {
            return Err(format!(
                "Data-In with DataSN {} for task {}, expected {}",
                d.data_sn.0, d.itt, next_data_sn.0
            ));
        }
        if d.buffer_offset as usize != read.len() {
            return Err(format!(
                "Data-In at offset {} for task {}, expected {}",
                d.buffer_offset,
                d.itt,
                read.len()
            ));
        }
        if read.len() + data.len() > *read_len as usize {
            return Err(format!("Data-In beyond the {read_len}-byte read of task {}", d.itt));
        }
        *next_data_sn = DataSn(next_data_sn.0.wrapping_add(1));
        read.extend_from_slice(&data);
        if let Some(status) = d.status {
            let data = self.take_read(d.itt, d.residual);
            self.answered(
                d.itt,
                Event::Completed {
                    itt: d.itt,
                    status,
                    sense: None,
                    data,
                    residual: d.residual,
                },
            );
        }
        Ok(())
    }

    fn nop_in(&mut self, nop: &NopIn, data: Bytes) {
        if !nop.itt.is_reserved() {
            self.answered(nop.itt, Event::Pong { itt: nop.itt, data });
            return;
        }
        // The target's ping: answer with its TTT (RFC 7143 11.18).
        if nop.wants_reply() {
            let reply = NopOut {
                immediate: true,
                lun: nop.lun,
                itt: Itt::RESERVED,
                ttt: nop.ttt,
                cmd_sn: self.sequencer.immediate(),
                exp_stat_sn: StatSn(0),
            };
            self.send(reply, D::from(Bytes::new()));
        }
    }

    /// The data a read gathered: what the target sent, and no more than
    /// the expected length less an underflow says it sent.
    fn take_read(&mut self, itt: Itt, residual: Residual) -> Bytes {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return Bytes::new();
        };
        let mut data = std::mem::take(&mut task.read);
        if let (Residual::Underflow(n), Request::Scsi { read_len, .. }) = (residual, &task.request) {
            let sent = (*read_len as usize).saturating_sub(n as usize);
            data.truncate(sent.min(data.len()));
        }
        data.freeze()
    }
}
