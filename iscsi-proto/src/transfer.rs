//! Moving a command's data (RFC 7143 sections 11.7 and 11.8,
//! and the burst keys of 13.10-13.17): how read data is cut into Data-In
//! sequences, and how a target collects write data from immediate data,
//! unsolicited Data-Out and R2T-solicited bursts.

use crate::negotiate::SessionParams;
use crate::pdu::DataOut;
use crate::{DataSn, R2tSn, Ttt};
use std::collections::VecDeque;

/// One Data-In PDU's place in a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataInChunk {
    pub offset: u32,
    pub len: u32,
    pub data_sn: DataSn,
    /// F: the last PDU of a sequence (burst) — or of the whole transfer.
    pub final_: bool,
    /// The last PDU of the transfer, which may carry the status.
    pub last: bool,
}

/// Cuts `total` bytes of read data into Data-In PDUs of at most
/// `max_segment` bytes (the initiator's MaxRecvDataSegmentLength), with the
/// F bit closing every sequence of at most `max_burst` bytes (RFC 7143
/// 13.14: MaxBurstLength bounds Data-In sequences too).
///
/// A zero-length read yields one empty chunk, so the status still has a PDU.
#[derive(Debug, Clone)]
pub struct DataInSequence {
    total: u32,
    offset: u32,
    burst_used: u32,
    data_sn: DataSn,
    max_segment: u32,
    max_burst: u32,
    done: bool,
}

impl DataInSequence {
    #[must_use]
    pub fn new(total: u32, max_segment: u32, max_burst: u32) -> Self {
        Self {
            total,
            offset: 0,
            burst_used: 0,
            data_sn: DataSn(0),
            max_segment: max_segment.max(1),
            max_burst: max_burst.max(1),
            done: false,
        }
    }
}

impl Iterator for DataInSequence {
    type Item = DataInChunk;

    fn next(&mut self) -> Option<DataInChunk> {
        if self.done {
            return None;
        }
        let left = self.total - self.offset;
        let len = left.min(self.max_segment).min(self.max_burst - self.burst_used);
        let offset = self.offset;
        self.offset += len;
        self.burst_used += len;
        let last = self.offset == self.total;
        let final_ = last || self.burst_used == self.max_burst;
        if final_ {
            self.burst_used = 0;
        }
        let data_sn = self.data_sn;
        self.data_sn = self.data_sn.next();
        self.done = last;
        Some(DataInChunk {
            offset,
            len,
            data_sn,
            final_,
            last,
        })
    }
}

/// Why write data was refused. Each breaks the rules of the data phase; the
/// task cannot complete (RFC 7143 at ErrorRecoveryLevel 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("{0} bytes of immediate data, more than FirstBurstLength or the expected length allow")]
    ImmediateTooLong(u32),
    #[error("immediate data sent although ImmediateData=No")]
    ImmediateNotAllowed,
    #[error("unsolicited Data-Out where none is allowed")]
    UnsolicitedNotAllowed,
    #[error("Data-Out for a transfer tag with no outstanding R2T")]
    UnknownTransferTag,
    #[error("Data-Out at offset {got}, expected {expected}")]
    OutOfOrder { expected: u32, got: u32 },
    #[error("Data-Out DataSN {got}, expected {expected}")]
    DataSn { expected: u32, got: u32 },
    #[error("Data-Out beyond what was asked for")]
    Overflow,
}

/// What a target asks for in one R2T.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tRequest {
    pub ttt: Ttt,
    pub r2t_sn: R2tSn,
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug, Clone)]
struct Outstanding {
    request: R2tRequest,
    received: u32,
    next_data_sn: DataSn,
}

/// The target's bookkeeping for one write command's data.
///
/// Negotiated DataPDUInOrder=Yes and DataSequenceInOrder=Yes (all this
/// implementation offers) mean the data arrives in increasing offset order,
/// so "received" is a single contiguous prefix.
#[derive(Debug, Clone)]
pub struct WriteTransfer {
    expected: u32,
    received: u32,
    unsolicited_limit: u32,
    unsolicited_open: bool,
    unsolicited_data_sn: DataSn,
    next_r2t_offset: u32,
    r2t_sn: R2tSn,
    outstanding: VecDeque<Outstanding>,
    max_burst: u32,
    max_outstanding: usize,
}

impl WriteTransfer {
    /// Start a transfer of `expected` bytes, of which `immediate` came with
    /// the command; `final_` is the command's F bit (no unsolicited Data-Out
    /// follows).
    pub fn new(expected: u32, immediate: u32, final_: bool, session: &SessionParams) -> Result<Self, TransferError> {
        if immediate > 0 && !session.immediate_data {
            return Err(TransferError::ImmediateNotAllowed);
        }
        let first_burst = session.first_burst_length.min(expected);
        if immediate > first_burst {
            return Err(TransferError::ImmediateTooLong(immediate));
        }
        // RFC 7143 13.10: with InitialR2T=Yes nothing beyond immediate data
        // may come unsolicited.
        let unsolicited_limit = if session.initial_r2t { immediate } else { first_burst };
        let unsolicited_open = !final_ && immediate < unsolicited_limit;
        if !final_ && session.initial_r2t {
            return Err(TransferError::UnsolicitedNotAllowed);
        }
        Ok(Self {
            expected,
            received: immediate,
            unsolicited_limit,
            unsolicited_open,
            unsolicited_data_sn: DataSn(0),
            next_r2t_offset: immediate,
            r2t_sn: R2tSn(0),
            outstanding: VecDeque::new(),
            max_burst: session.max_burst_length.max(1),
            max_outstanding: usize::from(session.max_outstanding_r2t.max(1)),
        })
    }

    /// Account for a Data-Out carrying `len` bytes. On success the data
    /// belongs at `header.buffer_offset`.
    pub fn on_data_out(&mut self, header: &DataOut, len: u32) -> Result<(), TransferError> {
        if header.buffer_offset != self.received {
            return Err(TransferError::OutOfOrder {
                expected: self.received,
                got: header.buffer_offset,
            });
        }
        let end = self.received.checked_add(len).ok_or(TransferError::Overflow)?;
        if header.ttt.is_reserved() {
            if !self.unsolicited_open {
                return Err(TransferError::UnsolicitedNotAllowed);
            }
            if end > self.unsolicited_limit {
                return Err(TransferError::Overflow);
            }
            check_data_sn(self.unsolicited_data_sn, header.data_sn)?;
            self.unsolicited_data_sn = self.unsolicited_data_sn.next();
            self.received = end;
            if header.final_ || end == self.unsolicited_limit {
                self.unsolicited_open = false;
                self.next_r2t_offset = end;
            }
            return Ok(());
        }
        let burst = self.outstanding.front_mut().ok_or(TransferError::UnknownTransferTag)?;
        if burst.request.ttt != header.ttt {
            // Sequences arrive in order: only the oldest R2T may be answered.
            return Err(TransferError::UnknownTransferTag);
        }
        if end > burst.request.offset + burst.request.len {
            return Err(TransferError::Overflow);
        }
        check_data_sn(burst.next_data_sn, header.data_sn)?;
        burst.next_data_sn = burst.next_data_sn.next();
        burst.received += len;
        self.received = end;
        if burst.received == burst.request.len {
            self.outstanding.pop_front();
        }
        Ok(())
    }

    /// The next R2T to send, if the window of outstanding R2Ts has room and
    /// data remains unrequested. `ttt` names it; the caller picks unique
    /// tags.
    pub fn next_r2t(&mut self, ttt: Ttt) -> Option<R2tRequest> {
        if self.unsolicited_open
            || self.outstanding.len() >= self.max_outstanding
            || self.next_r2t_offset >= self.expected
        {
            return None;
        }
        let len = (self.expected - self.next_r2t_offset).min(self.max_burst);
        let request = R2tRequest {
            ttt,
            r2t_sn: self.r2t_sn,
            offset: self.next_r2t_offset,
            len,
        };
        self.r2t_sn = self.r2t_sn.next();
        self.next_r2t_offset += len;
        self.outstanding.push_back(Outstanding {
            request,
            received: 0,
            next_data_sn: DataSn(0),
        });
        Some(request)
    }

    /// Bytes received so far (a contiguous prefix).
    #[must_use]
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Whether every expected byte has arrived.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.received == self.expected
    }

    /// The R2TSN the next R2T will carry (for NOP/R2T bookkeeping in logs).
    #[must_use]
    pub fn r2ts_sent(&self) -> R2tSn {
        self.r2t_sn
    }
}

/// How an initiator sends a write's data: what rides in the SCSI Command,
/// what follows unsolicited, and (implicitly) what waits for R2Ts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlan {
    /// Bytes sent as immediate data in the command PDU.
    pub immediate: u32,
    /// End of the unsolicited data (immediate plus unsolicited Data-Out);
    /// the rest is sent only when the target asks with R2Ts.
    pub unsolicited_end: u32,
}

impl WritePlan {
    /// The plan for `len` bytes under the session's parameters, with
    /// `max_segment` the target's MaxRecvDataSegmentLength.
    #[must_use]
    pub fn new(len: u32, session: &SessionParams, max_segment: u32) -> Self {
        // RFC 7143 13.14: immediate and unsolicited data together stay within
        // FirstBurstLength; immediate data within one segment.
        let first_burst = session.first_burst_length.min(len);
        let immediate = if session.immediate_data {
            first_burst.min(max_segment)
        } else {
            0
        };
        let unsolicited_end = if session.initial_r2t { immediate } else { first_burst };
        Self {
            immediate,
            unsolicited_end,
        }
    }

    /// The SCSI Command's F bit: set when no unsolicited Data-Out follows.
    #[must_use]
    pub fn command_final(&self) -> bool {
        self.unsolicited_end == self.immediate
    }
}

/// One Data-Out PDU's place in a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOutChunk {
    pub offset: u32,
    pub len: u32,
    pub data_sn: DataSn,
    /// F: the last PDU of the sequence.
    pub final_: bool,
}

/// Cuts the sequence `offset..offset + len` (an R2T's burst or the
/// unsolicited data) into Data-Out PDUs of at most `max_segment` bytes,
/// DataSN counting from 0 (RFC 7143 11.7.5).
pub fn data_out_sequence(offset: u32, len: u32, max_segment: u32) -> impl Iterator<Item = DataOutChunk> {
    let max_segment = max_segment.max(1);
    let count = len.div_ceil(max_segment);
    (0..count).map(move |i| {
        let start = i * max_segment;
        DataOutChunk {
            offset: offset + start,
            len: (len - start).min(max_segment),
            data_sn: DataSn(i),
            final_: i + 1 == count,
        }
    })
}

fn check_data_sn(expected: DataSn, got: DataSn) -> Result<(), TransferError> {
    if expected == got {
        Ok(())
    } else {
        Err(TransferError::DataSn {
            expected: expected.0,
            got: got.0,
        })
    }
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
