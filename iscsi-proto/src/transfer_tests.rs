//! Transfer tests: Data-In cut into bursts and segments, write plans with
//! immediate and unsolicited data, R2T bookkeeping, the violations a target
//! refuses, and property tests that every legal transfer completes and that
//! the two ends agree.

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
