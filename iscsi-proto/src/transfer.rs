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
mod tests {
    use super::*;
    use crate::negotiate::{Negotiator, Preferences, Role};
    use crate::{Itt, Lun, StatSn};
    use proptest::prelude::*;

    fn session(
        initial_r2t: bool,
        immediate_data: bool,
        first_burst: u32,
        max_burst: u32,
        outstanding: u16,
    ) -> SessionParams {
        let (mut s, _) = Negotiator::new(Role::Target, true, &Preferences::default()).finish();
        s.initial_r2t = initial_r2t;
        s.immediate_data = immediate_data;
        s.first_burst_length = first_burst;
        s.max_burst_length = max_burst;
        s.max_outstanding_r2t = outstanding;
        s
    }

    fn data_out(ttt: Ttt, data_sn: u32, offset: u32, final_: bool) -> DataOut {
        DataOut {
            final_,
            lun: Lun::ZERO,
            itt: Itt(1),
            ttt,
            exp_stat_sn: StatSn(0),
            data_sn: DataSn(data_sn),
            buffer_offset: offset,
        }
    }

    #[test]
    fn initiator_write_plans() {
        let generous = session(false, true, 262_144, 1 << 24, 8);
        assert_eq!(
            WritePlan::new(1 << 20, &generous, 262_144),
            WritePlan {
                immediate: 262_144,
                unsolicited_end: 262_144
            }
        );
        assert_eq!(
            WritePlan::new(1 << 20, &generous, 65536),
            WritePlan {
                immediate: 65536,
                unsolicited_end: 262_144
            }
        );
        assert!(!WritePlan::new(1 << 20, &generous, 65536).command_final());
        let tgtd = session(true, true, 65536, 262_144, 1);
        let plan = WritePlan::new(10_000, &tgtd, 8192);
        assert_eq!(
            plan,
            WritePlan {
                immediate: 8192,
                unsolicited_end: 8192
            }
        );
        assert!(plan.command_final());
        let strict = session(true, false, 65536, 262_144, 1);
        assert_eq!(
            WritePlan::new(4096, &strict, 8192),
            WritePlan {
                immediate: 0,
                unsolicited_end: 0
            }
        );
        let chunks: Vec<_> = data_out_sequence(8192, 20_000, 8192).collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            (chunks[2].offset, chunks[2].len, chunks[2].data_sn, chunks[2].final_),
            (24_576, 3616, DataSn(2), true)
        );
        assert_eq!(data_out_sequence(0, 0, 8192).count(), 0);
    }

    #[test]
    fn data_in_bursts_and_segments() {
        let chunks: Vec<_> = DataInSequence::new(10_000, 4096, 6000).collect();
        let shape: Vec<_> = chunks.iter().map(|c| (c.offset, c.len, c.final_, c.last)).collect();
        assert_eq!(
            shape,
            vec![
                (0, 4096, false, false),
                (4096, 1904, true, false),
                (6000, 4000, true, true)
            ]
        );
        assert_eq!(chunks[2].data_sn, DataSn(2));
        let empty: Vec<_> = DataInSequence::new(0, 4096, 6000).collect();
        assert_eq!(empty.len(), 1);
        assert!(empty[0].last && empty[0].final_ && empty[0].len == 0);
    }

    /// tgtd-like settings: InitialR2T=Yes, 8 KiB immediate, one R2T at a time.
    #[test]
    fn immediate_then_r2ts() {
        let s = session(true, true, 65536, 262_144, 1);
        let mut t = WriteTransfer::new(600_000, 8192, true, &s).unwrap();
        let r1 = t.next_r2t(Ttt(10)).unwrap();
        assert_eq!((r1.offset, r1.len, r1.r2t_sn), (8192, 262_144, R2tSn(0)));
        assert_eq!(t.next_r2t(Ttt(11)), None, "MaxOutstandingR2T=1");
        t.on_data_out(&data_out(Ttt(10), 0, 8192, false), 200_000).unwrap();
        t.on_data_out(&data_out(Ttt(10), 1, 208_192, true), 62_144).unwrap();
        let r2 = t.next_r2t(Ttt(11)).unwrap();
        assert_eq!((r2.offset, r2.len, r2.r2t_sn), (270_336, 262_144, R2tSn(1)));
        t.on_data_out(&data_out(Ttt(11), 0, 270_336, true), 262_144).unwrap();
        let r3 = t.next_r2t(Ttt(12)).unwrap();
        assert_eq!((r3.offset, r3.len), (532_480, 67_520));
        t.on_data_out(&data_out(Ttt(12), 0, 532_480, true), 67_520).unwrap();
        assert!(t.is_complete());
        assert_eq!(t.next_r2t(Ttt(13)), None);
    }

    #[test]
    fn unsolicited_burst_then_several_r2ts() {
        let s = session(false, true, 65536, 65536, 4);
        let mut t = WriteTransfer::new(393_216, 16384, false, &s).unwrap();
        assert_eq!(t.next_r2t(Ttt(1)), None, "unsolicited data first");
        t.on_data_out(&data_out(Ttt::RESERVED, 0, 16384, false), 16384).unwrap();
        t.on_data_out(&data_out(Ttt::RESERVED, 1, 32768, true), 32768).unwrap();
        let r2ts: Vec<_> = (0..10).map_while(|i| t.next_r2t(Ttt(i))).collect();
        assert_eq!(r2ts.len(), 4, "MaxOutstandingR2T");
        assert_eq!(r2ts[0].offset, 65536);
        let mut at = 65536;
        for r in &r2ts {
            t.on_data_out(&data_out(r.ttt, 0, at, true), r.len).unwrap();
            at += r.len;
        }
        assert!(!t.is_complete());
        let last = t.next_r2t(Ttt(99)).unwrap();
        assert_eq!((last.offset, last.offset + last.len), (327_680, 393_216));
    }

    #[test]
    fn protocol_violations() {
        let s = session(true, false, 65536, 65536, 1);
        assert_eq!(
            WriteTransfer::new(4096, 512, true, &s).unwrap_err(),
            TransferError::ImmediateNotAllowed
        );
        assert_eq!(
            WriteTransfer::new(4096, 0, false, &s).unwrap_err(),
            TransferError::UnsolicitedNotAllowed
        );
        let s = session(false, true, 1024, 65536, 1);
        assert_eq!(
            WriteTransfer::new(4096, 2048, true, &s).unwrap_err(),
            TransferError::ImmediateTooLong(2048)
        );
        let mut t = WriteTransfer::new(4096, 512, false, &s).unwrap();
        assert!(matches!(
            t.on_data_out(&data_out(Ttt::RESERVED, 0, 0, false), 512),
            Err(TransferError::OutOfOrder { .. })
        ));
        assert_eq!(
            t.on_data_out(&data_out(Ttt::RESERVED, 1, 512, false), 512),
            Err(TransferError::DataSn { expected: 0, got: 1 })
        );
        assert_eq!(
            t.on_data_out(&data_out(Ttt::RESERVED, 0, 512, false), 1024),
            Err(TransferError::Overflow)
        );
        t.on_data_out(&data_out(Ttt::RESERVED, 0, 512, true), 512).unwrap();
        assert_eq!(
            t.on_data_out(&data_out(Ttt::RESERVED, 1, 1024, true), 512),
            Err(TransferError::UnsolicitedNotAllowed)
        );
        assert_eq!(
            t.on_data_out(&data_out(Ttt(5), 0, 1024, true), 512),
            Err(TransferError::UnknownTransferTag)
        );
        let r = t.next_r2t(Ttt(5)).unwrap();
        assert_eq!(
            t.on_data_out(&data_out(Ttt(5), 0, 1024, true), r.len + 1),
            Err(TransferError::Overflow)
        );
    }

    proptest! {
        /// Any legal pattern of immediate, unsolicited and solicited data ends
        /// with exactly the expected bytes, in order.
        #[test]
        fn transfers_complete(
            expected in 1u32..2_000_000,
            immediate_frac in 0u32..=100,
            initial_r2t: bool,
            first_burst in 512u32..300_000,
            max_burst in 512u32..300_000,
            outstanding in 1u16..8,
            segment in 512u32..70_000,
        ) {
            let s = session(initial_r2t, true, first_burst, max_burst, outstanding);
            let immediate = (u64::from(expected.min(first_burst).min(segment)) * u64::from(immediate_frac) / 100) as u32;
            let final_ = initial_r2t;
            let mut t = WriteTransfer::new(expected, immediate, final_, &s).unwrap();
            let mut at = immediate;
            if !initial_r2t {
                let limit = first_burst.min(expected);
                let mut sn = 0;
                while at < limit {
                    let len = (limit - at).min(segment);
                    t.on_data_out(&data_out(Ttt::RESERVED, sn, at, at + len == limit), len).unwrap();
                    at += len;
                    sn += 1;
                }
            }
            let mut ttt = 0;
            while !t.is_complete() {
                let r = t.next_r2t(Ttt(ttt)).expect("an R2T while data is missing");
                ttt += 1;
                let mut sn = 0;
                let mut off = r.offset;
                while off < r.offset + r.len {
                    let len = (r.offset + r.len - off).min(segment);
                    t.on_data_out(&data_out(r.ttt, sn, off, off + len == r.offset + r.len), len).unwrap();
                    off += len;
                    sn += 1;
                }
                prop_assert!(r.len <= max_burst);
                at = off;
            }
            prop_assert_eq!(at, expected);
            prop_assert_eq!(t.received(), expected);
        }

        /// The initiator's plan and sequences are exactly what the target's
        /// bookkeeping accepts, whatever the negotiated values.
        #[test]
        fn initiator_and_target_agree(
            len in 1u32..3_000_000,
            initial_r2t: bool,
            immediate_data: bool,
            first_burst in 512u32..400_000,
            max_burst in 512u32..400_000,
            outstanding in 1u16..6,
            segment in 512u32..300_000,
        ) {
            let s = session(initial_r2t, immediate_data, first_burst, max_burst, outstanding);
            let plan = WritePlan::new(len, &s, segment);
            let mut t = WriteTransfer::new(len, plan.immediate, plan.command_final(), &s).unwrap();
            for c in data_out_sequence(plan.immediate, plan.unsolicited_end - plan.immediate, segment) {
                t.on_data_out(&data_out(Ttt::RESERVED, c.data_sn.0, c.offset, c.final_), c.len).unwrap();
            }
            let mut tag = 0;
            while !t.is_complete() {
                let mut r2ts = Vec::new();
                while let Some(r) = t.next_r2t(Ttt(tag)) {
                    tag += 1;
                    r2ts.push(r);
                }
                prop_assert!(!r2ts.is_empty());
                for r in r2ts {
                    for c in data_out_sequence(r.offset, r.len, segment) {
                        t.on_data_out(&data_out(r.ttt, c.data_sn.0, c.offset, c.final_), c.len).unwrap();
                    }
                }
            }
        }

        #[test]
        fn data_in_covers_everything(total in 0u32..5_000_000, seg in 1u32..300_000, burst in 1u32..1_000_000) {
            let mut next = 0;
            let mut in_burst = 0;
            let chunks: Vec<_> = DataInSequence::new(total, seg, burst).collect();
            for (i, c) in chunks.iter().enumerate() {
                prop_assert_eq!(c.offset, next);
                prop_assert!(c.len <= seg);
                in_burst += c.len;
                prop_assert!(in_burst <= burst);
                if c.final_ { in_burst = 0; }
                prop_assert_eq!(c.data_sn, DataSn(i as u32));
                next += c.len;
                prop_assert_eq!(c.last, i + 1 == chunks.len());
            }
            prop_assert_eq!(next, total);
        }
    }
}
