//! Command-level tests of the data path: reads and writes, their limits
//! and errors, VERIFY, WRITE AND VERIFY, COMPARE AND WRITE and ORWRITE, over
//! `MemDevice`. Provisioning commands are in `provisioning_tests.rs`.

use super::tests::{BLOCKS, BS, cdb_field, check, good, identity, illegal, lu_on, mem_lu, nexus, run};
use super::*;
use crate::backend::MemDevice;
use iscsi_proto::scsi::data::{LbaStatusList, UnmapBlockDescriptor, UnmapParameterList};
use iscsi_proto::scsi::{CompareAndWrite, OrWrite, ReadWrite, SenseKey, SyncRange, Verify, WriteAndVerify, WriteSame};
use std::io;

pub(super) const BSU: usize = BS as usize;

pub(super) fn pattern(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * BSU).map(|i| (i % 251) as u8 ^ seed).collect()
}

pub(super) fn read(lu: &LogicalUnit, lba: u64, n: u32) -> Completion {
    run(lu, Command::Read(ReadWrite::new(lba, n)), &[])
}

pub(super) fn write(lu: &LogicalUnit, lba: u64, data: &[u8]) -> Completion {
    run(lu, Command::Write(ReadWrite::new(lba, (data.len() / BSU) as u32)), data)
}

pub(super) fn fua_write(lu: &LogicalUnit, lba: u64, data: &[u8]) -> Completion {
    let rw = ReadWrite {
        fua: true,
        ..ReadWrite::new(lba, (data.len() / BSU) as u32)
    };
    run(lu, Command::Write(rw), data)
}

pub(super) fn write_same(lba: u64, number_of_blocks: u32, unmap: bool, size: CdbSize) -> Command {
    Command::WriteSame(WriteSame {
        lba,
        number_of_blocks,
        unmap,
        anchor: false,
        ndob: false,
        size,
    })
}

pub(super) fn unmap_list(extents: &[(u64, u32)]) -> Vec<u8> {
    UnmapParameterList {
        descriptors: extents
            .iter()
            .map(|&(lba, number_of_blocks)| UnmapBlockDescriptor { lba, number_of_blocks })
            .collect(),
    }
    .to_bytes()
}

pub(super) fn unmap(lu: &LogicalUnit, extents: &[(u64, u32)]) -> Completion {
    let list = unmap_list(extents);
    let cmd = Command::Unmap {
        anchor: false,
        parameter_list_length: list.len() as u16,
    };
    run(lu, cmd, &list)
}

/// GET LBA STATUS as (lba, blocks, status) triples.
pub(super) fn lba_status(lu: &LogicalUnit, lba: u64, allocation_length: u32) -> Vec<(u64, u32, u8)> {
    let d = good(run(lu, Command::GetLbaStatus { lba, allocation_length }, &[]));
    LbaStatusList::parse(&d)
        .unwrap()
        .descriptors
        .iter()
        .map(|d| (d.lba, d.number_of_blocks, d.provisioning_status))
        .collect()
}

pub(super) const MAPPED: u8 = LbaStatusList::MAPPED;
pub(super) const DEALLOCATED: u8 = LbaStatusList::DEALLOCATED;

#[test]
fn write_then_read_every_cdb_size() {
    let (dev, lu) = mem_lu();
    let data = pattern(3, 0x11);
    assert!(good(write(&lu, 10, &data)).is_empty());
    for size in [CdbSize::Six, CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen] {
        let rw = ReadWrite {
            size,
            ..ReadWrite::new(10, 3)
        };
        assert_eq!(good(run(&lu, Command::Read(rw), &[])), data, "{size:?}");
    }
    let snap = dev.snapshot();
    assert_eq!(&snap[10 * BSU..13 * BSU], &data[..]);
    assert!(snap[..10 * BSU].iter().chain(&snap[13 * BSU..]).all(|&b| b == 0));
    // The last block, by WRITE (16) and READ (12).
    let last = pattern(1, 0x22);
    let w16 = ReadWrite {
        size: CdbSize::Sixteen,
        ..ReadWrite::new(BLOCKS - 1, 1)
    };
    good(run(&lu, Command::Write(w16), &last));
    let r12 = ReadWrite {
        size: CdbSize::Twelve,
        ..ReadWrite::new(BLOCKS - 1, 1)
    };
    assert_eq!(good(run(&lu, Command::Read(r12), &[])), last);
}

#[test]
fn zero_length_transfers() {
    let (dev, lu) = mem_lu();
    dev.fail_next_os(libc::EIO);
    // No IO at all: the injected fault is still pending afterwards.
    assert!(good(read(&lu, 0, 0)).is_empty());
    assert!(good(write(&lu, 5, &[])).is_empty());
    assert!(good(read(&lu, BLOCKS, 0)).is_empty());
    illegal(read(&lu, BLOCKS + 1, 0), AdditionalSense::LBA_OUT_OF_RANGE);
    illegal(read(&lu, 1 << 31, 0), AdditionalSense::LBA_OUT_OF_RANGE);
    check(
        read(&lu, 0, 1),
        SenseKey::MEDIUM_ERROR,
        AdditionalSense::UNRECOVERED_READ_ERROR,
    );
}

#[test]
fn range_checks_at_the_end_of_the_medium() {
    let (dev, lu) = mem_lu();
    good(read(&lu, BLOCKS - 1, 1));
    for (lba, n) in [
        (BLOCKS, 1),
        (BLOCKS - 1, 2),
        (BLOCKS - 256, 257),
        (u64::MAX, 1),
        (u64::MAX, 2),
    ] {
        illegal(read(&lu, lba, n), AdditionalSense::LBA_OUT_OF_RANGE);
    }
    let data = pattern(2, 0x33);
    let s = illegal(write(&lu, BLOCKS - 1, &data), AdditionalSense::LBA_OUT_OF_RANGE);
    assert_eq!((s.information, s.field_pointer), (None, None));
    assert!(dev.snapshot().iter().all(|&b| b == 0), "nothing written");
    let sync = |lba, number_of_blocks| {
        let s = SyncRange {
            lba,
            number_of_blocks,
            immed: false,
            size: CdbSize::Sixteen,
        };
        run(&lu, Command::SynchronizeCache(s), &[])
    };
    illegal(sync(BLOCKS, 0), AdditionalSense::LBA_OUT_OF_RANGE);
    illegal(sync(BLOCKS - 4, 5), AdditionalSense::LBA_OUT_OF_RANGE);
    assert_eq!(dev.flush_count(), 0);
    good(sync(BLOCKS - 1, 0));
    good(sync(0, 4));
    assert_eq!(dev.flush_count(), 2);
}

#[test]
fn transfer_length_limit_before_allocation() {
    let (_, lu) = mem_lu();
    let lu = lu.with_limits(Limits {
        max_transfer_blocks: 8,
        ..Limits::for_block_size(BS)
    });
    assert_eq!(good(read(&lu, 0, 8)).len(), 8 * BSU);
    let s = illegal(read(&lu, 0, 9), AdditionalSense::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field_pointer, cdb_field(7, None));
    let r16 = ReadWrite {
        size: CdbSize::Sixteen,
        ..ReadWrite::new(0, 9)
    };
    let s = illegal(run(&lu, Command::Read(r16), &[]), AdditionalSense::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field_pointer, cdb_field(10, None));
    illegal(write(&lu, 0, &pattern(9, 0)), AdditionalSense::INVALID_FIELD_IN_CDB);
    for bytchk in [ByteCheck::Compare, ByteCheck::CompareSingleBlock] {
        let v = Verify {
            lba: 0,
            verification_length: 9,
            dpo: false,
            bytchk,
            size: CdbSize::Twelve,
        };
        let s = illegal(
            run(&lu, Command::Verify(v), &pattern(1, 0)),
            AdditionalSense::INVALID_FIELD_IN_CDB,
        );
        assert_eq!(s.field_pointer, cdb_field(6, None));
    }
    let v = Verify {
        lba: 0,
        verification_length: 9,
        dpo: false,
        bytchk: ByteCheck::MediumOnly,
        size: CdbSize::Twelve,
    };
    good(run(&lu, Command::Verify(v), &[]));
    // The LBA range is checked first: past the end is out of range at any length.
    illegal(read(&lu, BLOCKS - 1, 9), AdditionalSense::LBA_OUT_OF_RANGE);
}

#[test]
fn data_out_must_match_the_cdb() {
    let (dev, lu) = mem_lu();
    let cmd = Command::Write(ReadWrite::new(0, 2));
    for len in [0, BSU, 2 * BSU - 1, 2 * BSU + 1, 3 * BSU] {
        illegal(
            run(&lu, cmd, &vec![1; len]),
            AdditionalSense::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
        );
    }
    assert!(dev.snapshot().iter().all(|&b| b == 0));
    good(run(&lu, cmd, &[1; 2 * BSU]));
}

#[test]
fn fua_and_write_cache_flush() {
    let (dev, lu) = mem_lu();
    good(write(&lu, 0, &pattern(1, 0)));
    assert_eq!(dev.flush_count(), 0);
    good(fua_write(&lu, 0, &pattern(1, 0)));
    assert_eq!(dev.flush_count(), 1);
    let lu = lu.with_write_cache(false);
    good(write(&lu, 0, &pattern(1, 0)));
    good(run(&lu, write_same(0, 4, false, CdbSize::Ten), &pattern(1, 1)));
    assert_eq!(dev.flush_count(), 3);
}

#[test]
fn read_only_refuses_every_change() {
    let (dev, lu) = lu_on(MemDevice::new(BS, BLOCKS).with_read_only(true));
    let one = pattern(1, 0x44);
    let caw = Command::CompareAndWrite(CompareAndWrite {
        lba: 0,
        number_of_blocks: 1,
        dpo: false,
        fua: false,
    });
    let wav = Command::WriteAndVerify(WriteAndVerify {
        lba: 0,
        transfer_length: 1,
        dpo: false,
        bytchk: true,
        size: CdbSize::Ten,
    });
    let answers = [
        write(&lu, 0, &one),
        run(&lu, wav, &one),
        run(&lu, write_same(0, 1, false, CdbSize::Ten), &one),
        run(&lu, write_same(0, 1, true, CdbSize::Sixteen), &one),
        unmap(&lu, &[(0, 1)]),
        run(&lu, caw, &pattern(2, 0)),
    ];
    for c in answers {
        check(c, SenseKey::DATA_PROTECT, AdditionalSense::WRITE_PROTECTED);
    }
    let refused = lu
        .plan(&nexus(), Command::Write(ReadWrite::new(0, 1)).build().as_bytes())
        .unwrap_err();
    check(refused, SenseKey::DATA_PROTECT, AdditionalSense::WRITE_PROTECTED);
    assert_eq!(good(read(&lu, 0, 1)), vec![0; BSU]);
    assert!(dev.snapshot().iter().all(|&b| b == 0));
}

#[test]
fn io_errors_map_to_sense() {
    let (dev, lu) = mem_lu();
    dev.fail_next_os(libc::EIO);
    let s = check(
        read(&lu, 77, 2),
        SenseKey::MEDIUM_ERROR,
        AdditionalSense::UNRECOVERED_READ_ERROR,
    );
    assert_eq!(s.information, Some(77));
    let mut fixed = [0u8; 18];
    s.emit_fixed(&mut fixed);
    assert_eq!(&fixed[..8], &[0xF0, 0, 0x03, 0, 0, 0, 77, 10]);
    assert_eq!(&fixed[12..14], &[0x11, 0x00]);

    dev.fail_next_os(libc::EIO);
    let s = check(
        write(&lu, 9, &pattern(1, 0)),
        SenseKey::MEDIUM_ERROR,
        AdditionalSense::WRITE_ERROR,
    );
    assert_eq!(s.information, Some(9));
    dev.fail_next(io::ErrorKind::StorageFull);
    check(
        write(&lu, 9, &pattern(1, 0)),
        SenseKey::DATA_PROTECT,
        AdditionalSense::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    );
    dev.fail_next(io::ErrorKind::PermissionDenied);
    check(
        write(&lu, 9, &pattern(1, 0)),
        SenseKey::HARDWARE_ERROR,
        AdditionalSense::INTERNAL_TARGET_FAILURE,
    );
    // A failed SYNCHRONIZE CACHE: no LBA to report.
    let data = pattern(1, 5);
    good(write(&lu, 3, &data));
    dev.fail_next_os(libc::EIO);
    let sync = Command::SynchronizeCache(SyncRange {
        lba: 0,
        number_of_blocks: 0,
        immed: false,
        size: CdbSize::Ten,
    });
    let s = check(
        run(&lu, sync, &[]),
        SenseKey::MEDIUM_ERROR,
        AdditionalSense::WRITE_ERROR,
    );
    assert_eq!(s.information, None);
    // The write landed but FUA's flush failed: never GOOD.
    let flaky = FlakyFlush(MemDevice::new(BS, 16));
    let lu = LogicalUnit::new(Arc::new(flaky), identity());
    check(
        fua_write(&lu, 0, &data),
        SenseKey::MEDIUM_ERROR,
        AdditionalSense::WRITE_ERROR,
    );
}

/// A device whose every flush fails with EIO.
#[derive(Debug)]
struct FlakyFlush(MemDevice);

impl BlockDevice for FlakyFlush {
    fn block_size(&self) -> u32 {
        self.0.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.0.num_blocks()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.discard(offset, len)
    }
    fn discard_zeroes(&self) -> bool {
        false
    }
}

#[test]
fn verify_compares_and_reports_the_offset() {
    let (_, lu) = mem_lu();
    let data = pattern(4, 0x55);
    good(write(&lu, 20, &data));
    let verify = |bytchk, n: u32, lba| {
        Command::Verify(Verify {
            lba,
            verification_length: n,
            dpo: false,
            bytchk,
            size: CdbSize::Ten,
        })
    };
    good(run(&lu, verify(ByteCheck::MediumOnly, 4, 20), &[]));
    good(run(&lu, verify(ByteCheck::Compare, 4, 20), &data));
    let mut bad = data.clone();
    bad[700] ^= b'X';
    let s = check(
        run(&lu, verify(ByteCheck::Compare, 4, 20), &bad),
        SenseKey::MISCOMPARE,
        AdditionalSense::MISCOMPARE_DURING_VERIFY_OPERATION,
    );
    assert_eq!(s.information, Some(700));
    illegal(
        run(&lu, verify(ByteCheck::Compare, 0, BLOCKS + 1), &[]),
        AdditionalSense::LBA_OUT_OF_RANGE,
    );
    // BYTCHK 11b: every block against the one sent.
    let block = pattern(1, 0x66);
    good(run(&lu, write_same(40, 3, false, CdbSize::Ten), &block));
    good(run(&lu, verify(ByteCheck::CompareSingleBlock, 3, 40), &block));
    let s = check(
        run(&lu, verify(ByteCheck::CompareSingleBlock, 4, 40), &block),
        SenseKey::MISCOMPARE,
        AdditionalSense::MISCOMPARE_DURING_VERIFY_OPERATION,
    );
    let first_diff = block.iter().position(|&b| b != 0).unwrap();
    assert_eq!(s.information, Some((3 * BSU + first_diff) as u64));
}

#[test]
fn write_and_verify_writes_durably() {
    let (dev, lu) = mem_lu();
    let data = pattern(2, 0x77);
    let wav = Command::WriteAndVerify(WriteAndVerify {
        lba: 100,
        transfer_length: 2,
        dpo: false,
        bytchk: true,
        size: CdbSize::Sixteen,
    });
    good(run(&lu, wav, &data));
    assert_eq!(dev.flush_count(), 1);
    assert_eq!(good(read(&lu, 100, 2)), data);
}

fn caw(lba: u64, n: u8) -> Command {
    Command::CompareAndWrite(CompareAndWrite {
        lba,
        number_of_blocks: n,
        dpo: false,
        fua: false,
    })
}

#[test]
fn compare_and_write() {
    let (_, lu) = mem_lu();
    let old = pattern(2, 0x01);
    let new = pattern(2, 0x02);
    good(write(&lu, 50, &old));
    good(run(&lu, caw(50, 2), &[old.clone(), new.clone()].concat()));
    assert_eq!(good(read(&lu, 50, 2)), new);
    // Miscompare: INFORMATION is the offset into the compare data, and
    // nothing is written.
    for offset in [0usize, 1, 511, 512, 1023] {
        let mut cmp = new.clone();
        cmp[offset] ^= 0xFF;
        let s = check(
            run(&lu, caw(50, 2), &[cmp, old.clone()].concat()),
            SenseKey::MISCOMPARE,
            AdditionalSense::MISCOMPARE_DURING_VERIFY_OPERATION,
        );
        assert_eq!(s.information, Some(offset as u64));
        assert_eq!(good(read(&lu, 50, 2)), new);
    }
    good(run(&lu, caw(50, 0), &[]));
    illegal(
        run(&lu, caw(50, 2), &new),
        AdditionalSense::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
    );
    illegal(
        run(&lu, caw(BLOCKS - 1, 2), &[new.clone(), new.clone()].concat()),
        AdditionalSense::LBA_OUT_OF_RANGE,
    );
    // More blocks than MAXIMUM COMPARE AND WRITE LENGTH (255) can only be
    // asked for with a wrapped count: libiscsi 1.19 sends 256 blocks as a
    // NUMBER OF LOGICAL BLOCKS of 0 with 256 blocks' worth of Data-Out, and
    // expects INVALID FIELD IN CDB, not a Data-Out size error.
    let p = lu.plan(&nexus(), caw(0, 0).build().as_bytes()).unwrap();
    let over = 2 * 256 * u64::from(BS);
    let s = illegal(
        p.check_expected_length(over).unwrap_err(),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(13, None));
    let s = illegal(
        run(&lu, caw(0, 0), &vec![0; over as usize]),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(13, None));
    // Within the limit a mismatch stays a Data-Out size error.
    for edtl in [2 * 255 * u64::from(BS), 1] {
        illegal(
            p.check_expected_length(edtl).unwrap_err(),
            AdditionalSense::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
        );
    }
    let p = lu.plan(&nexus(), caw(0, 255).build().as_bytes()).unwrap();
    assert!(p.check_expected_length(2 * 255 * u64::from(BS)).is_ok());
    let small = lu.with_limits(Limits {
        max_compare_and_write_blocks: 1,
        ..Limits::for_block_size(BS)
    });
    let s = illegal(
        run(&small, caw(50, 2), &[new.clone(), old.clone()].concat()),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(13, None));
    // The CDB's own limit comes first, whatever the Data-Out.
    let s = illegal(
        small.plan(&nexus(), caw(50, 2).build().as_bytes()).unwrap_err(),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(13, None));
    let p = small.plan(&nexus(), caw(50, 0).build().as_bytes()).unwrap();
    let s = illegal(
        p.check_expected_length(4 * u64::from(BS)).unwrap_err(),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(13, None));
    good(run(
        &small,
        caw(50, 1),
        &[new[..BSU].to_vec(), old[..BSU].to_vec()].concat(),
    ));
}

/// Threads increment a counter in block 0 with COMPARE AND WRITE while
/// others write block 1: no increment is lost.
#[test]
fn compare_and_write_is_atomic() {
    let (_, lu) = mem_lu();
    let lu = Arc::new(lu);
    let block = |v: u64| {
        let mut b = vec![0u8; BSU];
        b[..8].copy_from_slice(&v.to_le_bytes());
        b
    };
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let lu = lu.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    loop {
                        let cur = good(read(&lu, 0, 1));
                        let v = u64::from_le_bytes(cur[..8].try_into().unwrap());
                        let c = run(&lu, caw(0, 1), &[cur, block(v + 1)].concat());
                        if c.status == ScsiStatus::GOOD {
                            break;
                        }
                        assert_eq!(c.sense.unwrap().key, SenseKey::MISCOMPARE);
                    }
                    good(write(&lu, 1, &block(7)));
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(good(read(&lu, 0, 1)), block(200));
}

fn orwrite(lba: u64, transfer_length: u32) -> Command {
    Command::OrWrite(OrWrite {
        lba,
        transfer_length,
        dpo: false,
        fua: false,
    })
}

#[test]
fn orwrite_ors_the_data_into_the_blocks() {
    let (dev, lu) = mem_lu();
    good(write(&lu, 4, &[vec![0x0F; BSU], vec![0x00; BSU]].concat()));
    let mut data = vec![0xA0; 2 * BSU];
    data[BSU] = 0x5A;
    good(run(&lu, orwrite(4, 2), &data));
    let back = good(read(&lu, 4, 2));
    assert!(back[..BSU].iter().all(|&b| b == 0xAF));
    assert_eq!((back[BSU], back[BSU + 1]), (0x5A, 0xA0));
    // Blocks around the range are untouched.
    assert_eq!(good(read(&lu, 3, 1)), vec![0; BSU]);
    assert_eq!(good(read(&lu, 6, 1)), vec![0; BSU]);
    // Zero blocks: nothing moves, nothing is written.
    let before = dev.snapshot();
    good(run(&lu, orwrite(0, 0), &[]));
    assert_eq!(dev.snapshot(), before);
    // FUA makes it durable; so does a disabled write cache.
    let flushes = dev.flush_count();
    let fua = Command::OrWrite(OrWrite {
        lba: 0,
        transfer_length: 1,
        dpo: true,
        fua: true,
    });
    good(run(&lu, fua, &pattern(1, 1)));
    assert_eq!(dev.flush_count(), flushes + 1);
}

#[test]
fn orwrite_errors() {
    let (dev, lu) = mem_lu();
    let one = pattern(1, 3);
    // The whole range must exist, also for zero blocks.
    illegal(run(&lu, orwrite(BLOCKS, 1), &one), AdditionalSense::LBA_OUT_OF_RANGE);
    illegal(run(&lu, orwrite(BLOCKS + 1, 0), &[]), AdditionalSense::LBA_OUT_OF_RANGE);
    illegal(run(&lu, orwrite(u64::MAX, 2), &one), AdditionalSense::LBA_OUT_OF_RANGE);
    // More than MAXIMUM TRANSFER LENGTH, before any data is collected.
    let small = LogicalUnit::new(dev.clone(), identity()).with_limits(Limits {
        max_transfer_blocks: 8,
        ..Limits::for_block_size(BS)
    });
    let e = small.plan(&nexus(), orwrite(0, 9).build().as_bytes()).unwrap_err();
    assert_eq!(e.sense.unwrap().field_pointer, cdb_field(10, None));
    // Data-Out must be exactly the blocks.
    illegal(
        run(&lu, orwrite(0, 2), &one),
        AdditionalSense::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
    );
    let p = lu.plan(&nexus(), orwrite(0, 2).build().as_bytes()).unwrap();
    assert_eq!(p.data_out_len, 2 * u64::from(BS));
    assert!(p.check_expected_length(u64::from(BS)).is_err());
    // ORPROTECT: no protection information.
    let mut cdb = orwrite(0, 1).build().padded();
    cdb[1] |= 0x20;
    let s = illegal(lu.execute(&cdb, &one), AdditionalSense::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field_pointer, cdb_field(1, Some(7)));
    assert!(dev.snapshot().iter().all(|&b| b == 0));
    let (_, ro) = lu_on(MemDevice::new(BS, BLOCKS).with_read_only(true));
    check(
        run(&ro, orwrite(0, 1), &one),
        SenseKey::DATA_PROTECT,
        AdditionalSense::WRITE_PROTECTED,
    );
}

/// Threads OR their own bit into the same blocks: with the read, OR and
/// write done as one, no bit is lost to another thread's write.
#[test]
fn orwrite_is_atomic() {
    let (_, lu) = mem_lu();
    let lu = Arc::new(lu);
    let handles: Vec<_> = (0..8u8)
        .map(|bit| {
            let lu = lu.clone();
            std::thread::spawn(move || {
                for lba in 0..32 {
                    good(run(&lu, orwrite(lba, 2), &vec![1 << bit; 2 * BSU]));
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert!(good(read(&lu, 0, 33)).iter().all(|&b| b == 0xFF));
}
