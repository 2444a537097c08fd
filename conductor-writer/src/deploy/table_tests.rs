//! Partition table tests: MBR and GPT round trips in both block sizes,
//! layouts that cannot be written, corrupt GPTs, and decoding that never
//! panics.

use super::*;

fn part(number: u32, first_lba: u64, blocks: u64, kind: PartType) -> Partition {
    Partition {
        number,
        first_lba,
        blocks,
        kind,
        guid: Uuid::from_u128(0x1234_5678_9abc_def0_0fed_cba9_8765_4321 + u128::from(number)),
        name: format!("part{number}"),
        bootable: number == 2,
        attributes: 0,
    }
}

/// Lay the extents out on a zeroed disk image.
fn render(table: &Table) -> Vec<u8> {
    let mut disk = vec![0u8; (table.disk_blocks * u64::from(table.block_size)) as usize];
    for e in table.encode().expect("encodes") {
        disk[e.offset as usize..e.offset as usize + e.data.len()].copy_from_slice(&e.data);
    }
    disk
}

#[test]
fn gpt_round_trips_in_both_block_sizes() {
    for bs in [512u32, 4096] {
        let blocks = (64 << 20) / u64::from(bs);
        let mut t = Table::new(Label::Gpt, bs, blocks, 0, Uuid::from_u128(7));
        let mib = (1 << 20) / u64::from(bs);
        t.partitions
            .push(part(1, mib, 4 * mib, PartType::Gpt(gpt_type::EFI_SYSTEM)));
        t.partitions
            .push(part(2, 5 * mib, 10 * mib, PartType::Gpt(gpt_type::LINUX_DATA)));
        let disk = render(&t);
        let back = Table::decode(&disk, bs, blocks).expect("valid").expect("present");
        assert_eq!(back.partitions, t.partitions);
        assert_eq!(back.disk_guid, t.disk_guid);
        assert_eq!(back.usable_end(), t.usable_end());
        // The backup header mirrors the primary, pointing back at LBA 1.
        let last = disk.len() - bs as usize;
        assert_eq!(&disk[last..last + 8], GPT_SIGNATURE);
        assert_eq!(le64(&disk[last..], 24), blocks - 1);
        assert_eq!(le64(&disk[last..], 32), 1);
        assert_eq!(
            le64(&disk[last..], 72),
            blocks - 1 - GptGeometry::standard(bs).array_blocks(bs)
        );
    }
}

#[test]
fn mbr_round_trips_with_numbers_and_flags() {
    let mut t = Table::new(Label::Msdos, 512, 1 << 20, 0xdead_beef, Uuid::nil());
    t.partitions
        .push(part(1, 2048, 2048, PartType::Mbr(mbr_type::LINUX_SWAP)));
    t.partitions.push(part(2, 4096, 8192, PartType::Mbr(mbr_type::LINUX)));
    let disk = render(&t);
    let back = Table::decode(&disk, 512, 1 << 20).expect("valid").expect("present");
    assert_eq!(back.disk_identifier(), "0xdeadbeef");
    assert_eq!(back.partitions.len(), 2);
    assert_eq!(back.partitions[1].first_lba, 4096);
    assert!(back.partitions[1].bootable && !back.partitions[0].bootable);
    assert_eq!(back.part_uuid(&back.partitions[1]), "deadbeef-02");
}

#[test]
fn corrupt_gpt_is_an_error_not_a_table() {
    let mut t = Table::new(Label::Gpt, 512, 1 << 16, 0, Uuid::from_u128(1));
    t.partitions
        .push(part(1, 2048, 2048, PartType::Gpt(gpt_type::LINUX_DATA)));
    let mut disk = render(&t);
    disk[1024 + 32 * 128 + 3] ^= 1; // inside the array, past entry 1
    assert_eq!(
        Table::decode(&disk, 512, 1 << 16),
        Err(TableError::BadGpt("entry array CRC mismatch"))
    );
    disk[512 + 40] ^= 1;
    assert_eq!(
        Table::decode(&disk, 512, 1 << 16),
        Err(TableError::BadGpt("header CRC mismatch"))
    );
    assert_eq!(Table::decode(&[0u8; 100], 512, 1), Ok(None));
    assert_eq!(Table::decode(&vec![0u8; 4096], 512, 8), Ok(None));
}

#[test]
fn layouts_that_cannot_be_written_are_refused() {
    let mut t = Table::new(Label::Msdos, 512, 1 << 20, 1, Uuid::nil());
    for n in 1..=5 {
        t.partitions
            .push(part(n, 2048 * u64::from(n), 2048, PartType::Mbr(mbr_type::LINUX)));
    }
    assert_eq!(t.encode(), Err(TableError::TooManyPrimaries(5)));
    t.partitions.truncate(2);
    t.partitions[1].first_lba = 3000;
    assert_eq!(t.encode(), Err(TableError::Overlap(1, 2)));
    let mut g = Table::new(Label::Gpt, 512, 1 << 16, 0, Uuid::from_u128(1));
    g.partitions
        .push(part(1, 2048, (1 << 16) - 2048, PartType::Gpt(gpt_type::LINUX_DATA)));
    assert_eq!(g.encode(), Err(TableError::OutOfRange(1)));
    let mut big = Table::new(Label::Msdos, 512, 1 << 33, 1, Uuid::nil());
    big.partitions
        .push(part(1, 2048, 1 << 32, PartType::Mbr(mbr_type::LINUX)));
    assert!(matches!(big.encode(), Err(TableError::MbrLimit { number: 1, .. })));
}

proptest::proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..20000), bs in proptest::sample::select(vec![512u32, 4096])) {
        let mut bytes = bytes;
        if bytes.len() > 1100 {
            bytes[510] = 0x55;
            bytes[511] = 0xaa;
            bytes[446 + 4] = mbr_type::GPT_PROTECTIVE;
        }
        let _ = Table::decode(&bytes, bs, 1 << 20);
    }
}
