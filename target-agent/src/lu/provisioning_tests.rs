//! Command-level tests of logical block provisioning: WRITE SAME, UNMAP
//! and GET LBA STATUS, over `MemDevice` and over a `FileDevice` on a
//! sparse file, whose holes are what GET LBA STATUS reports.

use super::io_tests::{BSU, DEALLOCATED, MAPPED, lba_status, pattern, read, unmap, unmap_list, write, write_same};
use super::tests::{BLOCKS, BS, cdb_field, check, good, identity, illegal, lu_on, mem_lu, nexus, run};
use super::*;
use crate::backend::{FileDevice, FileOptions, MemDevice};
use iscsi_proto::scsi::{CompareAndWrite, ReadWrite, SenseKey, WriteSame};

#[test]
fn write_same_replicates_the_block() {
    let (dev, lu) = mem_lu();
    let block = pattern(1, 0x88);
    good(run(&lu, write_same(5, 5, false, CdbSize::Ten), &block));
    let snap = dev.snapshot();
    for b in 0..BLOCKS as usize {
        let want: &[u8] = if (5..10).contains(&b) { &block } else { &[0; BSU] };
        assert_eq!(&snap[b * BSU..(b + 1) * BSU], want, "block {b}");
    }
    // More than one 1 MiB buffer's worth, and 0 blocks = to the end.
    let (dev, lu) = lu_on(MemDevice::new(BS, 4096));
    good(run(&lu, write_same(1, 0, false, CdbSize::Sixteen), &block));
    let snap = dev.snapshot();
    assert!(snap[..BSU].iter().all(|&b| b == 0));
    assert!(snap[BSU..].chunks(BSU).all(|c| c == block.as_slice()));
    // NDOB writes zeroes without a Data-Out buffer.
    let ndob = Command::WriteSame(WriteSame {
        lba: 2,
        number_of_blocks: 3,
        unmap: false,
        anchor: false,
        ndob: true,
        size: CdbSize::Sixteen,
    });
    good(run(&lu, ndob, &[]));
    assert_eq!(good(read(&lu, 1, 5)), [block.clone(), vec![0; 3 * BSU], block].concat());
}

#[test]
fn write_same_unmap_deallocates() {
    let (_, lu) = mem_lu();
    good(write(&lu, 0, &pattern(16, 0x99)));
    good(run(&lu, write_same(4, 8, true, CdbSize::Sixteen), &[0; BSU]));
    assert_eq!(good(read(&lu, 4, 8)), vec![0; 8 * BSU]);
    assert_eq!(
        lba_status(&lu, 0, 1024),
        [
            (0, 4, MAPPED),
            (4, 8, DEALLOCATED),
            (12, 4, MAPPED),
            (16, 1008, DEALLOCATED)
        ]
    );
    // UNMAP wins over a non-zero pattern, as in tgtd and Linux's target.
    good(write(&lu, 0, &pattern(16, 0x98)));
    good(run(&lu, write_same(4, 2, true, CdbSize::Ten), &pattern(1, 0x12)));
    assert_eq!(good(read(&lu, 4, 2)), vec![0; 2 * BSU]);
    assert_eq!(lba_status(&lu, 4, 24)[0], (4, 2, DEALLOCATED));
}

#[test]
fn write_same_errors() {
    let (_, lu) = mem_lu();
    let block = pattern(1, 0x13);
    let anchor = Command::WriteSame(WriteSame {
        lba: 0,
        number_of_blocks: 1,
        unmap: true,
        anchor: true,
        ndob: false,
        size: CdbSize::Ten,
    });
    let s = illegal(run(&lu, anchor, &block), AdditionalSense::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field_pointer, cdb_field(1, Some(4)));
    // Anchor without UNMAP is refused by the parser.
    illegal(
        lu.execute(&[0x41, 0x10, 0, 0, 0, 0, 0, 0, 1, 0], &block),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    illegal(
        run(&lu, write_same(BLOCKS + 1, 0, false, CdbSize::Ten), &block),
        AdditionalSense::LBA_OUT_OF_RANGE,
    );
    illegal(
        run(&lu, write_same(BLOCKS - 1, 2, false, CdbSize::Ten), &block),
        AdditionalSense::LBA_OUT_OF_RANGE,
    );
    for len in [0, BSU / 2, 2 * BSU] {
        illegal(
            run(&lu, write_same(0, 1, false, CdbSize::Ten), &vec![0; len]),
            AdditionalSense::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
        );
    }
    let small = lu.with_limits(Limits {
        max_write_same_blocks: 16,
        ..Limits::for_block_size(BS)
    });
    good(run(&small, write_same(BLOCKS - 16, 0, false, CdbSize::Ten), &block));
    let s = illegal(
        run(&small, write_same(BLOCKS - 17, 0, false, CdbSize::Ten), &block),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(7, None));
    let s = illegal(
        run(&small, write_same(0, 17, false, CdbSize::Sixteen), &block),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(10, None));
    // Without provisioning the UNMAP bit is refused, plain WRITE SAME works.
    let (_, full) = lu_on(MemDevice::new(BS, BLOCKS).without_discard());
    let s = illegal(
        run(&full, write_same(0, 1, true, CdbSize::Sixteen), &[0; BSU]),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(1, Some(3)));
    good(run(&full, write_same(0, 1, false, CdbSize::Sixteen), &block));
}

#[test]
fn unmap_then_get_lba_status() {
    let (_, lu) = mem_lu();
    good(write(&lu, 0, &pattern(32, 0x21)));
    good(unmap(&lu, &[(2, 3), (20, 4), (31, 0), (BLOCKS, 0)]));
    assert_eq!(good(read(&lu, 2, 3)), vec![0; 3 * BSU]);
    assert_eq!(good(read(&lu, 5, 1)), pattern(32, 0x21)[5 * BSU..6 * BSU]);
    assert_eq!(
        lba_status(&lu, 0, 1024),
        [
            (0, 2, MAPPED),
            (2, 3, DEALLOCATED),
            (5, 15, MAPPED),
            (20, 4, DEALLOCATED),
            (24, 8, MAPPED),
            (32, 992, DEALLOCATED),
        ]
    );
    // The first descriptor starts at the LBA asked for, mid-extent.
    assert_eq!(lba_status(&lu, 7, 24), [(7, 13, MAPPED)]);
    assert_eq!(lba_status(&lu, BLOCKS - 1, 24), [(BLOCKS - 1, 1, DEALLOCATED)]);
    let raw = good(run(
        &lu,
        Command::GetLbaStatus {
            lba: 2,
            allocation_length: 40,
        },
        &[],
    ));
    assert_eq!(&raw[..8], &[0, 0, 0, 0x24, 0, 0, 0, 0]);
    assert_eq!(&raw[8..24], &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 1, 0, 0, 0]);
    assert_eq!(raw.len(), 40);
    let past = Command::GetLbaStatus {
        lba: BLOCKS,
        allocation_length: 24,
    };
    illegal(run(&lu, past, &[]), AdditionalSense::LBA_OUT_OF_RANGE);
    // An empty list and an empty parameter list are not errors.
    good(unmap(&lu, &[]));
    good(run(
        &lu,
        Command::Unmap {
            anchor: false,
            parameter_list_length: 0,
        },
        &[],
    ));
}

#[test]
fn unmap_errors() {
    let (dev, lu) = mem_lu();
    good(write(&lu, 0, &pattern(4, 0x31)));
    let before = dev.snapshot();
    let anchor = Command::Unmap {
        anchor: true,
        parameter_list_length: 24,
    };
    let s = illegal(
        run(&lu, anchor, &unmap_list(&[(0, 1)])),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(1, Some(0)));
    let short = Command::Unmap {
        anchor: false,
        parameter_list_length: 4,
    };
    illegal(
        run(&lu, short, &[0, 0, 0, 0]),
        AdditionalSense::PARAMETER_LIST_LENGTH_ERROR,
    );
    let list = unmap_list(&[(0, 1)]);
    let cut = Command::Unmap {
        anchor: false,
        parameter_list_length: 24,
    };
    illegal(run(&lu, cut, &list[..16]), AdditionalSense::PARAMETER_LIST_LENGTH_ERROR);
    // The whole list is checked before anything is discarded.
    illegal(
        unmap(&lu, &[(0, 1), (BLOCKS - 1, 2)]),
        AdditionalSense::LBA_OUT_OF_RANGE,
    );
    let few = lu.with_limits(Limits {
        max_unmap_descriptors: 2,
        max_unmap_blocks: 8,
        ..Limits::for_block_size(BS)
    });
    illegal(
        unmap(&few, &[(0, 1), (1, 1), (2, 1)]),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    illegal(
        unmap(&few, &[(0, 4), (8, 5)]),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(dev.snapshot(), before);
    let (_, full) = lu_on(MemDevice::new(BS, BLOCKS).without_discard());
    illegal(unmap(&full, &[(0, 1)]), AdditionalSense::INVALID_COMMAND_OPERATION_CODE);
    illegal(
        full.plan(
            &nexus(),
            Command::Unmap {
                anchor: false,
                parameter_list_length: 24,
            }
            .build()
            .as_bytes(),
        )
        .unwrap_err(),
        AdditionalSense::INVALID_COMMAND_OPERATION_CODE,
    );
    // A failed discard is an error, not GOOD.
    dev.fail_next_os(libc::EIO);
    let s = check(
        unmap(&few, &[(3, 1)]),
        SenseKey::MEDIUM_ERROR,
        AdditionalSense::WRITE_ERROR,
    );
    assert_eq!(s.information, Some(3));
}

#[test]
fn file_backed_disk() {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(256 * 4096).unwrap();
    let dev = FileDevice::open(
        f.path(),
        FileOptions {
            block_size: Some(4096),
            ..Default::default()
        },
    )
    .unwrap();
    let lu = LogicalUnit::new(Arc::new(dev), identity());
    let rc16 = good(run(&lu, Command::ReadCapacity16 { allocation_length: 32 }, &[]));
    assert_eq!(&rc16[..16], &[0, 0, 0, 0, 0, 0, 0, 0xFF, 0, 0, 0x10, 0, 0, 0, 0xC0, 0]);
    assert_eq!(lba_status(&lu, 0, 24), [(0, 256, DEALLOCATED)]);
    let data: Vec<u8> = (0..16 * 4096).map(|i| (i % 249) as u8).collect();
    let w = ReadWrite {
        fua: true,
        ..ReadWrite::new(16, 16)
    };
    good(run(&lu, Command::Write(w), &data));
    assert_eq!(good(read(&lu, 16, 16)), data);
    assert_eq!(
        lba_status(&lu, 0, 1024),
        [(0, 16, DEALLOCATED), (16, 16, MAPPED), (32, 224, DEALLOCATED)]
    );
    good(unmap(&lu, &[(20, 4)]));
    assert_eq!(good(read(&lu, 20, 4)), vec![0; 4 * 4096]);
    assert_eq!(
        lba_status(&lu, 16, 1024),
        [
            (16, 4, MAPPED),
            (20, 4, DEALLOCATED),
            (24, 8, MAPPED),
            (32, 224, DEALLOCATED)
        ]
    );
    good(run(
        &lu,
        Command::WriteSame(WriteSame {
            lba: 24,
            number_of_blocks: 8,
            unmap: true,
            anchor: false,
            ndob: true,
            size: CdbSize::Sixteen,
        }),
        &[],
    ));
    assert_eq!(lba_status(&lu, 16, 40), [(16, 4, MAPPED), (20, 236, DEALLOCATED)]);
    let cmp = Command::CompareAndWrite(CompareAndWrite {
        lba: 16,
        number_of_blocks: 1,
        dpo: false,
        fua: true,
    });
    good(run(&lu, cmp, &[&data[..4096], &[9; 4096][..]].concat()));
    assert_eq!(good(read(&lu, 16, 1)), vec![9; 4096]);
    // The same file, read-only.
    let ro = FileDevice::open(
        f.path(),
        FileOptions {
            read_only: true,
            block_size: Some(4096),
            ..Default::default()
        },
    )
    .unwrap();
    let ro = LogicalUnit::new(Arc::new(ro), identity());
    check(
        run(&ro, Command::Write(ReadWrite::new(0, 1)), &[0; 4096]),
        SenseKey::DATA_PROTECT,
        AdditionalSense::WRITE_PROTECTED,
    );
    assert_eq!(good(read(&ro, 17, 1)), data[4096..8192]);
}

/// A device whose allocation map has extents that end inside blocks.
#[derive(Debug)]
struct Extents {
    dev: MemDevice,
    /// (end offset, mapped) in ascending order, the last ending at the size.
    map: Vec<(u64, bool)>,
}

impl BlockDevice for Extents {
    fn block_size(&self) -> u32 {
        self.dev.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.dev.num_blocks()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.dev.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.dev.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.dev.discard(offset, len)
    }
    fn discard_zeroes(&self) -> bool {
        true
    }
    fn allocation(&self, offset: u64) -> std::io::Result<(bool, u64)> {
        let &(end, mapped) = self.map.iter().find(|(end, _)| *end > offset).unwrap();
        Ok((mapped, end - offset))
    }
}

#[test]
fn lba_status_never_calls_a_partly_mapped_block_deallocated() {
    let size = 16 * u64::from(BS);
    // Hole to byte 700 (block 1 is half data), data to 2500 (block 4 half
    // hole), hole to 4096 (blocks 5-7), then data.
    let map = vec![(700, false), (2500, true), (4096, false), (size, true)];
    let lu = LogicalUnit::new(
        Arc::new(Extents {
            dev: MemDevice::new(BS, 16),
            map,
        }),
        identity(),
    );
    assert_eq!(
        lba_status(&lu, 0, 1024),
        [(0, 1, DEALLOCATED), (1, 4, MAPPED), (5, 3, DEALLOCATED), (8, 8, MAPPED)]
    );
    assert_eq!(lba_status(&lu, 4, 1024)[0], (4, 1, MAPPED));
}
