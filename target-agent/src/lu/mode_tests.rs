//! MODE SELECT (6)/(10): the changeable settings (WCE, SWP), what may not
//! be changed, and software write protection; over `MemDevice`. Parameter
//! lists are built the way initiators do (libiscsi, Linux sd): MODE SENSE
//! data, changed, sent back.

use super::io_tests::{BSU, pattern, read, unmap, write, write_same};
use super::tests::{
    BLOCKS, BS, cdb_field, check, good, illegal, list_field, lu_on, mem_lu, mode_sense_6, nexus, rsoc, run,
};
use super::*;
use crate::backend::MemDevice;
use iscsi_proto::scsi::data::{
    BlockDescriptor, CachingPage, ControlPage, ModeParameters, OneCommandData, SupportedOperationCodes,
};
use iscsi_proto::scsi::{
    CompareAndWrite, ModeSelect6, ModeSelect10, ModeSense10, PageControl, ReadWrite, ReportingOptions, SenseKey,
    SyncRange, WriteAndVerify,
};

fn select_6(lu: &LogicalUnit, list: &[u8]) -> Completion {
    let m = ModeSelect6 {
        pf: true,
        sp: false,
        parameter_list_length: list.len() as u8,
    };
    run(lu, Command::ModeSelect6(m), list)
}

fn select_10(lu: &LogicalUnit, list: &[u8]) -> Completion {
    let m = ModeSelect10 {
        pf: true,
        sp: false,
        parameter_list_length: list.len() as u16,
    };
    run(lu, Command::ModeSelect10(m), list)
}

/// The current mode parameters (DBD set, as libiscsi and sd ask).
fn current(lu: &LogicalUnit, page: u8) -> ModeParameters {
    ModeParameters::parse_6(&good(mode_sense_6(lu, true, PageControl::Current, page, 255))).unwrap()
}

fn control(lu: &LogicalUnit) -> ControlPage {
    ControlPage::from_page(&current(lu, 0x0A).pages[0]).unwrap()
}

fn caching(lu: &LogicalUnit) -> CachingPage {
    CachingPage::from_page(&current(lu, 0x08).pages[0]).unwrap()
}

/// The Control page as MODE SENSE reports it, with SWP set to `swp`.
fn swp_list(lu: &LogicalUnit, swp: bool) -> ModeParameters {
    let page = ControlPage { swp, ..control(lu) }.to_page();
    ModeParameters {
        pages: vec![page],
        ..current(lu, 0x0A)
    }
}

fn caw(n: u8) -> Command {
    Command::CompareAndWrite(CompareAndWrite {
        lba: 0,
        number_of_blocks: n,
        dpo: false,
        fua: false,
    })
}

fn write_protected(c: Completion) {
    check(c, SenseKey::DATA_PROTECT, AdditionalSense::WRITE_PROTECTED);
}

#[test]
fn swp_write_protects_until_cleared() {
    let (dev, lu) = mem_lu();
    let one = pattern(1, 0x5A);
    good(write(&lu, 0, &one));
    assert!(!control(&lu).swp && !lu.write_protected());
    // libiscsi's set_swp: MODE SELECT (6) of the current Control page.
    good(select_6(&lu, &swp_list(&lu, true).to_select_bytes_6()));
    assert!(control(&lu).swp && lu.write_protected());
    assert_eq!(lu.mode_changes(), 1);
    // WP in the mode parameter header, both CDB sizes.
    assert_eq!(good(mode_sense_6(&lu, true, PageControl::Current, 0x3F, 4))[2], 0x90);
    let ms10 = ModeSense10 {
        llbaa: false,
        dbd: true,
        page_control: PageControl::Current,
        page_code: 0x0A,
        subpage_code: 0,
        allocation_length: 8,
    };
    assert_eq!(good(run(&lu, Command::ModeSense10(ms10), &[]))[3], 0x90);
    // Every change to the medium is DATA PROTECT, before any data moves.
    let wav = Command::WriteAndVerify(WriteAndVerify {
        lba: 0,
        transfer_length: 1,
        dpo: false,
        bytchk: false,
        size: CdbSize::Ten,
    });
    write_protected(write(&lu, 0, &one));
    write_protected(run(&lu, wav, &one));
    write_protected(run(&lu, write_same(0, 1, false, CdbSize::Ten), &one));
    write_protected(run(&lu, write_same(0, 1, true, CdbSize::Sixteen), &vec![0; BSU]));
    write_protected(unmap(&lu, &[(0, 1)]));
    write_protected(run(&lu, caw(1), &[one.clone(), one.clone()].concat()));
    write_protected(
        lu.plan(&nexus(), Command::Write(ReadWrite::new(0, 1)).build().as_bytes())
            .unwrap_err(),
    );
    // Reads, and the commands that do not change the medium, still work.
    assert_eq!(good(read(&lu, 0, 1)), one);
    let sync = SyncRange {
        lba: 0,
        number_of_blocks: 0,
        immed: false,
        size: CdbSize::Ten,
    };
    good(run(&lu, Command::SynchronizeCache(sync), &[]));
    let rc = good(run(&lu, Command::ReadCapacity10, &[]));
    assert_eq!(rc.len(), 8);
    // MODE SELECT (10) of the same page, as iscsi-swp sends it, clears it.
    good(select_10(&lu, &swp_list(&lu, false).to_select_bytes_10(false)));
    assert!(!control(&lu).swp && !lu.write_protected());
    assert_eq!(good(mode_sense_6(&lu, true, PageControl::Current, 0x3F, 4))[2], 0x10);
    good(write(&lu, 1, &one));
    assert_eq!(&dev.snapshot()[BSU..2 * BSU], &one[..]);
    assert_eq!(lu.mode_changes(), 2);
    // Selecting what is already current changes nothing.
    good(select_10(&lu, &swp_list(&lu, false).to_select_bytes_10(false)));
    assert_eq!(lu.mode_changes(), 2);
}

#[test]
fn a_reset_restores_the_default_mode_parameters() {
    let (_, lu) = mem_lu();
    good(select_6(&lu, &swp_list(&lu, true).to_select_bytes_6()));
    let wce_off = ModeParameters {
        pages: vec![
            CachingPage {
                wce: false,
                ..caching(&lu)
            }
            .to_page(),
        ],
        ..current(&lu, 0x08)
    };
    good(select_6(&lu, &wce_off.to_select_bytes_6()));
    assert!(lu.write_protected() && !caching(&lu).wce);
    lu.reset();
    assert!(!lu.write_protected() && !control(&lu).swp, "SWP back to its default");
    assert!(caching(&lu).wce, "the write cache back to its default");
    good(write(&lu, 0, &pattern(1, 0x11)));
}

#[test]
fn read_only_device_stays_protected() {
    let (_, lu) = lu_on(MemDevice::new(BS, BLOCKS).with_read_only(true));
    assert!(lu.write_protected());
    good(select_6(&lu, &swp_list(&lu, true).to_select_bytes_6()));
    good(select_6(&lu, &swp_list(&lu, false).to_select_bytes_6()));
    assert!(!control(&lu).swp);
    assert!(lu.write_protected());
    write_protected(write(&lu, 0, &pattern(1, 1)));
    assert_eq!(good(mode_sense_6(&lu, true, PageControl::Current, 0x3F, 4))[2], 0x90);
}

#[test]
fn wce_is_changeable_and_flushes_when_turned_off() {
    let (dev, lu) = mem_lu();
    good(write(&lu, 0, &pattern(1, 0)));
    assert_eq!(dev.flush_count(), 0);
    let off = ModeParameters {
        pages: vec![CachingPage { wce: false, rcd: false }.to_page()],
        ..current(&lu, 0x08)
    };
    good(select_6(&lu, &off.to_select_bytes_6()));
    assert!(!caching(&lu).wce);
    // The cached write is made durable by the switch, and every write
    // after it on its own.
    assert_eq!(dev.flush_count(), 1);
    good(write(&lu, 0, &pattern(1, 0)));
    assert_eq!(dev.flush_count(), 2);
    // The default (PC 10b) is still the configured value.
    let default = good(mode_sense_6(&lu, true, PageControl::Default, 0x08, 255));
    assert_eq!(default[6], 0x04);
    // Both pages in one list, with a block descriptor that restates the
    // medium, through MODE SELECT (10) with a long LBA descriptor.
    let both = ModeParameters {
        block_descriptor: Some(BlockDescriptor {
            number_of_blocks: BLOCKS,
            block_length: BS,
        }),
        pages: vec![
            CachingPage { wce: true, rcd: false }.to_page(),
            ControlPage {
                swp: true,
                ..control(&lu)
            }
            .to_page(),
        ],
        ..ModeParameters::default()
    };
    good(select_10(&lu, &both.to_select_bytes_10(true)));
    assert!(caching(&lu).wce && control(&lu).swp);
    good(write_protected_then_clear(&lu));
    good(write(&lu, 0, &pattern(1, 0)));
    assert_eq!(dev.flush_count(), 2);
}

fn write_protected_then_clear(lu: &LogicalUnit) -> Completion {
    write_protected(write(lu, 0, &pattern(1, 0)));
    select_6(lu, &swp_list(lu, false).to_select_bytes_6())
}

#[test]
fn only_changeable_fields_may_change() {
    let (_, lu) = mem_lu();
    let base = swp_list(&lu, true);
    let with_control = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut page = base.pages[0].clone();
        f(&mut page.data);
        ModeParameters {
            pages: vec![page],
            ..base.clone()
        }
        .to_select_bytes_6()
    };
    // D_SENSE (page byte 2 bit 2): list byte 4 + 2.
    let s = illegal(
        select_6(&lu, &with_control(&|d| d[0] |= 0x04)),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(6, Some(2)));
    // QUEUE ALGORITHM MODIFIER back to 0 (bits 7-4 of page byte 3).
    let s = illegal(
        select_6(&lu, &with_control(&|d| d[1] = 0)),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(7, Some(4)));
    // SWP may change along with... nothing else in its byte (RAC, bit 6).
    let s = illegal(
        select_6(&lu, &with_control(&|d| d[2] |= 0x40)),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(8, Some(6)));
    // A page of the wrong length.
    let s = illegal(
        select_6(&lu, &with_control(&|d| d.push(0))),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(5, None));
    // A page this device does not have (Informational Exceptions, 1Ch),
    // and a subpage of one it has.
    let mut list = vec![0, 0, 0, 0, 0x1C, 0x0A];
    list.extend_from_slice(&[0; 10]);
    let s = illegal(select_6(&lu, &list), AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(s.field_pointer, list_field(4, Some(5)));
    let s = illegal(
        select_6(&lu, &[0, 0, 0, 0, 0x4A, 0x01, 0, 0]),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(4, Some(5)));
    // MEDIUM TYPE.
    let mut bad = base.to_select_bytes_6();
    bad[1] = 0x01;
    let s = illegal(select_6(&lu, &bad), AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(s.field_pointer, list_field(1, None));
    let mut bad = base.to_select_bytes_10(false);
    bad[2] = 0x01;
    let s = illegal(select_10(&lu, &bad), AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(s.field_pointer, list_field(2, None));
    // A block descriptor may not resize or reformat the medium.
    for (blocks, len, at) in [(BLOCKS - 1, BS, 4), (BLOCKS, 4096, 9), (0, 520, 9)] {
        let p = ModeParameters {
            block_descriptor: Some(BlockDescriptor {
                number_of_blocks: blocks,
                block_length: len,
            }),
            ..base.clone()
        };
        let s = illegal(
            select_6(&lu, &p.to_select_bytes_6()),
            AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
        );
        assert_eq!(s.field_pointer, list_field(at, None), "{blocks} {len}");
    }
    let long = ModeParameters {
        block_descriptor: Some(BlockDescriptor {
            number_of_blocks: 0,
            block_length: 4096,
        }),
        ..base.clone()
    };
    let s = illegal(
        select_10(&lu, &long.to_select_bytes_10(true)),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(20, None));
    // None of that changed anything, not even the valid SWP before an
    // invalid second page.
    let mut two = base.to_select_bytes_6();
    two.extend_from_slice(&[0x08, 0x12, 0x05]);
    two.extend_from_slice(&[0; 17]);
    let s = illegal(select_6(&lu, &two), AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(s.field_pointer, list_field(18, Some(0)));
    assert!(!control(&lu).swp && caching(&lu).wce);
    assert_eq!(lu.mode_changes(), 0);
    good(write(&lu, 0, &pattern(1, 3)));
}

#[test]
fn mode_select_cdb_and_length_checks() {
    let (_, lu) = mem_lu();
    let list = swp_list(&lu, true).to_select_bytes_6();
    // SP: no saved pages.
    let sp = ModeSelect6 {
        pf: true,
        sp: true,
        parameter_list_length: list.len() as u8,
    };
    let s = illegal(
        run(&lu, Command::ModeSelect6(sp), &list),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(1, Some(0)));
    // PF = 0 with pages: a vendor-specific format this device has not.
    let no_pf = ModeSelect10 {
        pf: false,
        sp: false,
        parameter_list_length: 8,
    };
    good(run(&lu, Command::ModeSelect10(no_pf), &[0; 8]));
    let list10 = swp_list(&lu, true).to_select_bytes_10(false);
    let no_pf = ModeSelect10 {
        parameter_list_length: list10.len() as u16,
        ..no_pf
    };
    let s = illegal(
        run(&lu, Command::ModeSelect10(no_pf), &list10),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(1, Some(4)));
    assert!(!lu.write_protected());
    // A PARAMETER LIST LENGTH of zero is not an error, and a header alone
    // changes nothing.
    good(select_6(&lu, &[]));
    good(select_6(&lu, &[0, 0, 0, 0]));
    // A list that cuts a page or the header short.
    for cut in [2, 5, list.len() - 1] {
        illegal(
            select_6(&lu, &list[..cut]),
            AdditionalSense::PARAMETER_LIST_LENGTH_ERROR,
        );
    }
    // Bytes past the PARAMETER LIST LENGTH are not looked at; fewer are a
    // length error, before any data moves.
    let m = ModeSelect6 {
        pf: true,
        sp: false,
        parameter_list_length: list.len() as u8,
    };
    let mut longer = list.clone();
    longer.extend_from_slice(&[0xFF; 8]);
    good(run(&lu, Command::ModeSelect6(m), &longer));
    assert!(lu.write_protected());
    let p = lu.plan(&nexus(), Command::ModeSelect6(m).build().as_bytes()).unwrap();
    assert_eq!(
        (p.direction, p.data_out_len),
        (DataDirection::ToDevice, list.len() as u64)
    );
    assert!(p.check_expected_length(list.len() as u64 + 8).is_ok());
    illegal(
        p.check_expected_length(list.len() as u64 - 1).unwrap_err(),
        AdditionalSense::PARAMETER_LIST_LENGTH_ERROR,
    );
    // MODE SELECT is not a change to the medium: allowed while protected.
    let p = lu
        .plan(&nexus(), Command::ModeSelect10(no_pf).build().as_bytes())
        .unwrap();
    assert_eq!(p.data_out_len, list10.len() as u64);
}

#[test]
fn reported_as_supported_but_sanitize_is_not() {
    let (_, lu) = mem_lu();
    let d = good(rsoc(&lu, ReportingOptions::All, OperationCode(0), 65535));
    let ops: Vec<_> = SupportedOperationCodes::parse(&d)
        .unwrap()
        .commands
        .iter()
        .map(|c| c.operation_code)
        .collect();
    assert!(ops.contains(&OperationCode::MODE_SELECT_6) && ops.contains(&OperationCode::MODE_SELECT_10));
    let sanitize = OperationCode(0x48);
    assert!(!ops.contains(&sanitize));
    let one = good(rsoc(
        &lu,
        ReportingOptions::OneCommand,
        OperationCode::MODE_SELECT_10,
        64,
    ));
    let one = OneCommandData::parse(&one).unwrap();
    assert_eq!(one.support, OneCommandData::SUPPORT_STANDARD);
    assert_eq!(one.cdb_usage_data[..2], [0x55, 0x11]);
    let none = good(rsoc(&lu, ReportingOptions::OneCommandOrServiceAction, sanitize, 64));
    assert_eq!(
        OneCommandData::parse(&none).unwrap().support,
        OneCommandData::SUPPORT_NOT_SUPPORTED
    );
    // SANITIZE OVERWRITE with its parameter list: not a command here.
    illegal(
        lu.execute(&[0x48, 0x01, 0, 0, 0, 0, 0, 0, 0x02, 0x04], &[0; 516]),
        AdditionalSense::INVALID_COMMAND_OPERATION_CODE,
    );
}
