//! Command-level tests of the SPC side (identification, mode, sense,
//! REPORT LUNS, planning) plus the helpers `io_tests.rs` shares. CDBs come
//! from `Command::build` except where a hand-made byte is the point.

use super::*;
use crate::backend::MemDevice;
use iscsi_proto::pdu::Isid;
use iscsi_proto::scsi::data::{BlockLimits, DeviceIdentification, SupportedOperationCodes};
use iscsi_proto::scsi::{
    FieldPointer, ModeSense6, ModeSense10, PageControl, ReadWrite, ReportSupportedOperationCodes, ReportingOptions,
    SenseKey,
};

pub(super) const BS: u32 = 512;
pub(super) const BLOCKS: u64 = 1024;

pub(super) fn identity() -> Identity {
    Identity::new("iqn.2024-01.org.example:node1", 1)
}

/// The I_T nexus `LogicalUnit::execute` runs commands on.
pub(super) fn nexus() -> Nexus {
    Nexus::new("iqn.2024-01.org.example:tester", Isid([0x80, 0, 0, 0, 0, 1]))
}

pub(super) fn mem_lu() -> (Arc<MemDevice>, LogicalUnit) {
    let dev = Arc::new(MemDevice::new(BS, BLOCKS));
    (dev.clone(), LogicalUnit::new(dev, identity()))
}

pub(super) fn lu_on(dev: MemDevice) -> (Arc<MemDevice>, LogicalUnit) {
    let dev = Arc::new(dev);
    (dev.clone(), LogicalUnit::new(dev, identity()))
}

pub(super) fn run(lu: &LogicalUnit, cmd: Command, data_out: &[u8]) -> Completion {
    lu.execute(cmd.build().as_bytes(), data_out)
}

/// Asserts GOOD and returns the data.
pub(super) fn good(c: Completion) -> Vec<u8> {
    assert_eq!(c.status, ScsiStatus::GOOD, "{:?}", c.sense);
    assert_eq!(c.sense, None);
    c.data
}

/// Asserts CHECK CONDITION with `key`/`asc`, no data, and returns the sense.
pub(super) fn check(c: Completion, key: SenseKey, asc: AdditionalSense) -> Sense {
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION);
    assert!(c.data.is_empty());
    let s = c.sense.expect("sense");
    assert_eq!((s.key, s.additional_sense), (key, asc), "{s:?}");
    s
}

pub(super) fn illegal(c: Completion, asc: AdditionalSense) -> Sense {
    check(c, SenseKey::ILLEGAL_REQUEST, asc)
}

pub(super) fn cdb_field(byte: u16, bit: Option<u8>) -> Option<FieldPointer> {
    Some(FieldPointer { cdb: true, bit, byte })
}

pub(super) fn list_field(byte: u16, bit: Option<u8>) -> Option<FieldPointer> {
    Some(FieldPointer { cdb: false, bit, byte })
}

fn inquiry(lu: &LogicalUnit, evpd: bool, page_code: u8, allocation_length: u16) -> Completion {
    run(
        lu,
        Command::Inquiry {
            evpd,
            page_code,
            allocation_length,
        },
        &[],
    )
}

#[test]
fn no_data_commands_are_good() {
    let (_, lu) = mem_lu();
    assert!(good(run(&lu, Command::TestUnitReady, &[])).is_empty());
    assert!(good(lu.execute(&[0x1B, 0x01, 0, 0, 0x03, 0], &[])).is_empty());
    assert!(good(lu.execute(&[0x1E, 0, 0, 0, 0x01, 0], &[])).is_empty());
    // PRE-FETCH: GOOD, not CONDITION MET (libiscsi prefetch10_simple).
    assert!(good(lu.execute(&[0x34, 0, 0, 0, 0x03, 0xFF, 0, 0, 1, 0], &[])).is_empty());
    let s = illegal(
        lu.execute(&[0x34, 0, 0, 0, 0x04, 0x00, 0, 0, 1, 0], &[]),
        AdditionalSense::LBA_OUT_OF_RANGE,
    );
    assert_eq!(s.field_pointer, None);
}

#[test]
fn invalid_opcodes_and_fields() {
    let (_, lu) = mem_lu();
    illegal(
        lu.execute(&[0xC1, 0, 0, 0, 0, 0], &[]),
        AdditionalSense::INVALID_COMMAND_OPERATION_CODE,
    );
    illegal(lu.execute(&[], &[]), AdditionalSense::INVALID_COMMAND_OPERATION_CODE);
    // SERVICE ACTION IN (16) with an unknown service action.
    let mut sai = [0u8; 16];
    sai[0] = 0x9E;
    sai[1] = 0x11;
    let s = illegal(lu.execute(&sai, &[]), AdditionalSense::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field_pointer, cdb_field(1, Some(4)));
    // NACA in the CONTROL byte of READ (10).
    let s = illegal(
        lu.execute(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x04], &[]),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(9, Some(2)));
    // And the same answers from plan(), before any data moves.
    let e = lu.plan(&nexus(), &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x04]).unwrap_err();
    assert_eq!(e.sense.unwrap().field_pointer, cdb_field(9, Some(2)));
}

#[test]
fn standard_inquiry_bytes() {
    let (_, lu) = mem_lu();
    let d = good(inquiry(&lu, false, 0, 255));
    assert_eq!(d.len(), 96);
    assert_eq!(&d[..8], &[0x00, 0x00, 0x06, 0x12, 91, 0x00, 0x00, 0x02]);
    assert_eq!(&d[8..16], b"DEPLOY  ");
    assert_eq!(&d[16..32], b"target-agent    ");
    assert_eq!(&d[32..36], b"0.1 ");
    assert_eq!(&d[58..66], &[0x00, 0xA0, 0x09, 0x60, 0x04, 0x60, 0x04, 0xC0]);
    assert!(d[66..].iter().all(|&b| b == 0));
    // SPC-4 allocation length: the first n bytes, ADDITIONAL LENGTH intact.
    for n in [0u16, 1, 5, 36, 95, 96, 512] {
        let part = good(inquiry(&lu, false, 0, n));
        assert_eq!(part.len(), usize::from(n).min(96), "{n}");
        assert_eq!(part[..], d[..part.len()]);
    }
    illegal(inquiry(&lu, false, 0x80, 255), AdditionalSense::INVALID_FIELD_IN_CDB);
}

#[test]
fn vpd_pages() {
    let (_, lu) = mem_lu();
    assert_eq!(
        good(inquiry(&lu, true, 0x00, 255)),
        [0, 0x00, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
    );
    let serial = good(inquiry(&lu, true, 0x80, 255));
    assert_eq!(&serial[..4], &[0, 0x80, 0, 16]);
    assert_eq!(&serial[4..], lu.identity().serial.as_bytes());
    let b1 = good(inquiry(&lu, true, 0xB1, 255));
    assert_eq!((b1.len(), &b1[..8]), (64, &[0, 0xB1, 0, 0x3C, 0, 1, 0, 0][..]));
    assert_eq!(good(inquiry(&lu, true, 0xB2, 255)), [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
    let s = illegal(inquiry(&lu, true, 0x86, 255), AdditionalSense::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field_pointer, cdb_field(2, None));
    assert_eq!(good(inquiry(&lu, true, 0x00, 3)), [0, 0, 0]);

    let (_, full) = lu_on(MemDevice::new(BS, BLOCKS).without_discard());
    assert_eq!(good(inquiry(&full, true, 0xB2, 255)), [0, 0xB2, 0, 4, 0, 0, 0, 0]);
    let bl = BlockLimits::parse(&good(inquiry(&full, true, 0xB0, 255))).unwrap();
    assert_eq!((bl.maximum_unmap_lba_count, bl.optimal_unmap_granularity), (0, 0));
}

#[test]
fn block_limits_page() {
    let (_, lu) = mem_lu();
    let b = good(inquiry(&lu, true, 0xB0, 255));
    assert_eq!(b.len(), 64);
    assert_eq!(&b[..8], &[0, 0xB0, 0, 0x3C, 0x00, 255, 0, 8]);
    // MAXIMUM TRANSFER LENGTH: 8 MiB of 512-byte blocks.
    assert_eq!(&b[8..12], &[0, 0, 0x40, 0]);
    assert_eq!(
        BlockLimits::parse(&b).unwrap(),
        BlockLimits {
            wsnz: false,
            maximum_compare_and_write_length: 255,
            optimal_transfer_length_granularity: 8,
            maximum_transfer_length: 16384,
            optimal_transfer_length: 0,
            maximum_prefetch_length: 0,
            maximum_unmap_lba_count: 1 << 20,
            maximum_unmap_block_descriptor_count: 256,
            optimal_unmap_granularity: 8,
            unmap_granularity_alignment: Some(0),
            maximum_write_same_length: 16384,
        }
    );
    let l4k = Limits::for_block_size(4096);
    assert_eq!((l4k.max_transfer_blocks, l4k.granularity_blocks), (2048, 1));
    assert_eq!((l4k.max_write_same_blocks, l4k.max_unmap_blocks), (2048, 1 << 17));
    // What may be written the same may be written (libiscsi's WRITE SAME
    // tests WRITE the MAXIMUM WRITE SAME LENGTH), and 255 blocks can be
    // compared and written.
    for bs in [512, 1024, 2048, 4096] {
        let l = Limits::for_block_size(bs);
        assert!(l.max_write_same_blocks <= u64::from(l.max_transfer_blocks), "{bs}");
        assert!(
            2 * u32::from(l.max_compare_and_write_blocks) <= l.max_transfer_blocks,
            "{bs}"
        );
        assert_eq!(l.max_compare_and_write_blocks, 255);
    }
}

#[test]
fn device_identification_page() {
    let (_, lu) = mem_lu();
    let page = DeviceIdentification::parse(&good(inquiry(&lu, true, 0x83, 1024))).unwrap();
    let naa = &page.designators[0];
    assert_eq!((naa.code_set.0, naa.association.0, naa.designator_type.0), (1, 0, 3));
    assert_eq!(naa.designator.len(), 16);
    assert_eq!(naa.designator[0] >> 4, 6);
    assert_eq!(naa.designator[..8], lu.identity().naa.to_be_bytes());
    let names: Vec<_> = page.designators.iter().filter_map(|d| d.name_string()).collect();
    assert_eq!(
        names,
        [
            "iqn.2024-01.org.example:node1,t,0x0001",
            "iqn.2024-01.org.example:node1"
        ]
    );
    assert_eq!(page.designators[2].designator, [0, 0, 0, 1]);
    // Stable for the same name and LUN, different for another LUN.
    assert_eq!(Identity::new("iqn.2024-01.org.example:node1", 1), identity());
    let other = Identity::new("iqn.2024-01.org.example:node1", 2);
    assert_ne!(other.naa_designator(), identity().naa_designator());
    assert_ne!(other.serial, identity().serial);
    assert_eq!(identity().serial.len(), 16);
}

#[test]
fn read_capacity() {
    let (_, lu) = mem_lu();
    assert_eq!(
        good(run(&lu, Command::ReadCapacity10, &[])),
        [0, 0, 0x03, 0xFF, 0, 0, 0x02, 0]
    );
    let rc16 = good(run(&lu, Command::ReadCapacity16 { allocation_length: 32 }, &[]));
    assert_eq!(
        &rc16[..16],
        &[0, 0, 0, 0, 0, 0, 0x03, 0xFF, 0, 0, 0x02, 0, 0, 0, 0xC0, 0]
    );
    assert_eq!(&rc16[16..], &[0; 16]);
    for n in 0..16u32 {
        let d = good(run(&lu, Command::ReadCapacity16 { allocation_length: n }, &[]));
        assert_eq!(d[..], rc16[..n as usize]);
    }
    let (_, full) = lu_on(MemDevice::new(4096, 3).without_discard());
    let rc16 = good(run(&full, Command::ReadCapacity16 { allocation_length: 32 }, &[]));
    assert_eq!(&rc16[..16], &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0x10, 0, 0, 0, 0, 0]);
    // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: 0 unless configured.
    assert_eq!(lu.limits().physical_block_exponent, 0);
    let limits = Limits {
        physical_block_exponent: 3,
        ..Limits::for_block_size(BS)
    };
    let (_, lu) = mem_lu();
    let lu = lu.with_limits(limits);
    let rc16 = good(run(&lu, Command::ReadCapacity16 { allocation_length: 32 }, &[]));
    assert_eq!((rc16[13], rc16[14]), (0x03, 0xC0));
}

pub(super) fn mode_sense_6(lu: &LogicalUnit, dbd: bool, pc: PageControl, page: u8, alloc: u8) -> Completion {
    let m = ModeSense6 {
        dbd,
        page_control: pc,
        page_code: page,
        subpage_code: 0,
        allocation_length: alloc,
    };
    run(lu, Command::ModeSense6(m), &[])
}

#[test]
fn mode_sense_6_all_pages() {
    let (_, lu) = mem_lu();
    let d = good(mode_sense_6(&lu, false, PageControl::Current, 0x3F, 255));
    assert_eq!(d.len(), 4 + 8 + 20 + 12);
    assert_eq!(&d[..4], &[43, 0, 0x10, 8]);
    assert_eq!(&d[4..12], &[0, 0, 0x04, 0x00, 0, 0, 0x02, 0]);
    assert_eq!(&d[12..16], &[0x08, 0x12, 0x04, 0]);
    assert_eq!(&d[32..36], &[0x0A, 0x0A, 0x00, 0x10]);
    // DBD drops the block descriptor; a single page; truncation.
    let d = good(mode_sense_6(&lu, true, PageControl::Current, 0x08, 255));
    assert_eq!(&d[..6], &[23, 0, 0x10, 0, 0x08, 0x12]);
    assert_eq!(
        good(mode_sense_6(&lu, false, PageControl::Current, 0x3F, 4)),
        [43, 0, 0x10, 8]
    );
    // Changeable: WCE and SWP, nothing else (block descriptor included).
    let d = good(mode_sense_6(&lu, false, PageControl::Changeable, 0x3F, 255));
    assert_eq!(d.len(), 44);
    assert_eq!(&d[4..12], &[0; 8]);
    assert_eq!(&d[12..16], &[0x08, 0x12, 0x04, 0]);
    assert!(d[16..32].iter().all(|&b| b == 0));
    assert_eq!(&d[32..36], &[0x0A, 0x0A, 0, 0]);
    assert_eq!(&d[36..], &[0x08, 0, 0, 0, 0, 0, 0, 0]);
    // Default: as configured.
    assert_eq!(
        good(mode_sense_6(&lu, false, PageControl::Default, 0x3F, 255)),
        good(mode_sense_6(&lu, false, PageControl::Current, 0x3F, 255))
    );
    let s = illegal(
        mode_sense_6(&lu, false, PageControl::Current, 0x1C, 255),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(2, Some(5)));
    illegal(
        mode_sense_6(&lu, false, PageControl::Saved, 0x3F, 255),
        AdditionalSense::SAVING_PARAMETERS_NOT_SUPPORTED,
    );
    // Write protect and the write cache setting show.
    let (_, ro) = lu_on(MemDevice::new(BS, BLOCKS).with_read_only(true));
    let ro = ro.with_write_cache(false);
    let d = good(mode_sense_6(&ro, true, PageControl::Current, 0x08, 255));
    assert_eq!(&d[2..7], &[0x90, 0, 0x08, 0x12, 0x00]);
}

#[test]
fn mode_sense_10_long_lba() {
    let (_, lu) = mem_lu();
    let m = ModeSense10 {
        llbaa: true,
        dbd: false,
        page_control: PageControl::Current,
        page_code: 0x0A,
        subpage_code: 0,
        allocation_length: 512,
    };
    let d = good(run(&lu, Command::ModeSense10(m), &[]));
    assert_eq!(&d[..8], &[0, 34, 0, 0x10, 1, 0, 0, 16]);
    assert_eq!(&d[8..24], &[0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0x02, 0]);
    assert_eq!(&d[24..26], &[0x0A, 0x0A]);
    let m = ModeSense10 { subpage_code: 5, ..m };
    let s = illegal(
        run(&lu, Command::ModeSense10(m), &[]),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(3, None));
}

#[test]
fn request_sense_reports_no_sense() {
    let (_, lu) = mem_lu();
    let rs = |desc, allocation_length| {
        run(
            &lu,
            Command::RequestSense {
                desc,
                allocation_length,
            },
            &[],
        )
    };
    let fixed = good(rs(false, 252));
    assert_eq!(fixed, [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(good(rs(true, 252)), [0x72, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(good(rs(false, 3)), [0x70, 0, 0]);
}

#[test]
fn report_luns_lists() {
    let (_, lu) = mem_lu();
    let rl = |select_report, allocation_length| {
        run(
            &lu,
            Command::ReportLuns {
                select_report,
                allocation_length,
            },
            &[],
        )
    };
    assert_eq!(good(rl(0, 512)), [0, 0, 0, 8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(good(rl(2, 12)), [0, 0, 0, 8, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(good(rl(1, 512)), [0; 8]);
    illegal(rl(0x10, 512), AdditionalSense::INVALID_FIELD_IN_CDB);
    let lu = lu.with_luns(vec![300, 1, 300]);
    let d = good(run(
        &lu,
        Command::ReportLuns {
            select_report: 0,
            allocation_length: 64,
        },
        &[],
    ));
    assert_eq!(&d[..4], &[0, 0, 0, 16]);
    assert_eq!(&d[16..18], &[0x41, 0x2C]);
}

#[test]
fn lun_without_device() {
    let luns = [1u16];
    let inq = no_device_lun(&[0x12, 0, 0, 0, 36, 0], &luns);
    let d = good(inq);
    assert_eq!((d.len(), d[0], d[2], d[4]), (36, 0x7F, 0x06, 31));
    assert_eq!(good(no_device_lun(&[0x12, 1, 0, 0, 255, 0], &luns)), [0x7F, 0, 0, 1, 0]);
    illegal(
        no_device_lun(&[0x12, 1, 0x83, 0, 255, 0], &luns),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    illegal(
        no_device_lun(&[0, 0, 0, 0, 0, 0], &luns),
        AdditionalSense::LOGICAL_UNIT_NOT_SUPPORTED,
    );
    let sense = good(no_device_lun(&[0x03, 0, 0, 0, 18, 0], &luns));
    assert_eq!((sense[0], sense[2], sense[12], sense[13]), (0x70, 0x05, 0x25, 0x00));
    let rl = Command::ReportLuns {
        select_report: 0,
        allocation_length: 16,
    };
    assert_eq!(good(no_device_lun(rl.build().as_bytes(), &luns))[9], 1);
    let read = Command::Read(ReadWrite::new(0, 1));
    illegal(
        no_device_lun(read.build().as_bytes(), &luns),
        AdditionalSense::LOGICAL_UNIT_NOT_SUPPORTED,
    );
    illegal(
        no_device_lun(&[0xC1, 0, 0, 0, 0, 0], &luns),
        AdditionalSense::LOGICAL_UNIT_NOT_SUPPORTED,
    );
    illegal(
        no_device_lun(&[0x12, 0x02, 0, 0, 36, 0], &luns),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
}

pub(super) fn rsoc(lu: &LogicalUnit, options: ReportingOptions, op: OperationCode, alloc: u32) -> Completion {
    let r = ReportSupportedOperationCodes {
        rctd: false,
        reporting_options: options,
        requested_operation_code: op,
        requested_service_action: 0,
        allocation_length: alloc,
    };
    run(lu, Command::ReportSupportedOperationCodes(r), &[])
}

#[test]
fn report_supported_operation_codes_follows_provisioning() {
    let (_, thin) = mem_lu();
    let (_, full) = lu_on(MemDevice::new(BS, BLOCKS).without_discard());
    let all = |lu| {
        let d = good(rsoc(lu, ReportingOptions::All, OperationCode(0), 65535));
        SupportedOperationCodes::parse(&d).unwrap().commands
    };
    let (t, f) = (all(&thin), all(&full));
    assert_eq!(t.len(), f.len() + 1);
    assert!(t.iter().any(|c| c.operation_code == OperationCode::UNMAP));
    assert!(!f.iter().any(|c| c.operation_code == OperationCode::UNMAP));
    assert_eq!(
        good(rsoc(&full, ReportingOptions::OneCommand, OperationCode::UNMAP, 64)),
        [0, 0x01, 0, 0]
    );
    let one = good(rsoc(&thin, ReportingOptions::OneCommand, OperationCode::UNMAP, 64));
    assert_eq!(&one[..6], &[0, 0x03, 0, 10, 0x42, 0x01]);
    assert_eq!(good(rsoc(&thin, ReportingOptions::All, OperationCode(0), 2)), [0, 0]);
    illegal(
        rsoc(
            &thin,
            ReportingOptions::OneCommand,
            OperationCode::SERVICE_ACTION_IN_16,
            64,
        ),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn plans() {
    let (_, lu) = mem_lu();
    let plan = |cmd: Command| lu.plan(&nexus(), cmd.build().as_bytes());
    let p = plan(Command::Read(ReadWrite::new(8, 8))).unwrap();
    assert_eq!(
        (p.direction, p.data_out_len, p.data_in_len),
        (DataDirection::FromDevice, 0, 4096)
    );
    assert!(
        p.check_expected_length(100).is_ok(),
        "Data-In residuals are the transport's"
    );
    let p = plan(Command::Write(ReadWrite::new(8, 8))).unwrap();
    assert_eq!(
        (p.direction, p.data_out_len, p.data_in_len),
        (DataDirection::ToDevice, 4096, 0)
    );
    assert!(p.check_expected_length(4096).is_ok());
    for edtl in [0, 4095, 4097, 8192] {
        let c = p.check_expected_length(edtl).unwrap_err();
        illegal(c, AdditionalSense::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT);
    }
    let p = plan(Command::Write(ReadWrite::new(8, 0))).unwrap();
    assert_eq!((p.direction, p.data_out_len), (DataDirection::None, 0));
    assert!(p.check_expected_length(512).is_err());
    let p = plan(Command::Unmap {
        anchor: false,
        parameter_list_length: 24,
    })
    .unwrap();
    assert_eq!((p.direction, p.data_out_len), (DataDirection::ToDevice, 24));
    assert!(p.check_expected_length(32).is_ok());
    illegal(
        p.check_expected_length(16).unwrap_err(),
        AdditionalSense::PARAMETER_LIST_LENGTH_ERROR,
    );
    let p = plan(Command::Inquiry {
        evpd: false,
        page_code: 0,
        allocation_length: 36,
    })
    .unwrap();
    assert_eq!((p.direction, p.data_in_len), (DataDirection::FromDevice, 36));
    illegal(
        plan(Command::Read(ReadWrite::new(BLOCKS, 1))).unwrap_err(),
        AdditionalSense::LBA_OUT_OF_RANGE,
    );
    let small = lu.with_limits(Limits {
        max_transfer_blocks: 8,
        ..Limits::for_block_size(BS)
    });
    let s = illegal(
        small
            .plan(&nexus(), Command::Read(ReadWrite::new(0, 9)).build().as_bytes())
            .unwrap_err(),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(7, None));
}

#[test]
fn completion_sense_is_fixed_format() {
    let c = Completion::check_condition(Sense::lba_out_of_range());
    assert_eq!(
        c.sense_data().unwrap().as_bytes(),
        [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0]
    );
    assert_eq!(Completion::good(vec![1]).sense_data(), None);
}

proptest::proptest! {
    #[test]
    fn arbitrary_cdbs_never_panic(
        cdb in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..17),
        op in proptest::sample::select(vec![
            0x00u8, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2E, 0x2F, 0x34, 0x35,
            0x41, 0x42, 0x55, 0x5A, 0x88, 0x89, 0x8A, 0x8E, 0x8F, 0x90, 0x91, 0x93, 0x9E, 0xA0, 0xA3, 0xA8, 0xAA, 0xAE, 0xAF,
        ]),
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1100),
    ) {
        let dev = Arc::new(MemDevice::new(512, 64));
        let lu = LogicalUnit::new(dev, identity());
        let mut cdb = cdb;
        if let Some(b) = cdb.first_mut() {
            *b = op;
        }
        for c in [lu.execute(&cdb, &data), no_device_lun(&cdb, &[1])] {
            proptest::prop_assert_eq!(c.sense.is_some(), c.status == ScsiStatus::CHECK_CONDITION);
            proptest::prop_assert!(c.data.len() <= 16384 * 512);
        }
        if let Ok(p) = lu.plan(&nexus(), &cdb) {
            let _ = p.check_expected_length(data.len() as u64);
        }
    }
}
