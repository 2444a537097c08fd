//! INQUIRY — standard data and the VPD pages initiators read to identify
//! and size a disk — REPORT LUNS, and the answers of a LUN with no device
//! behind it.

use super::{Completion, LogicalUnit, mode};
use iscsi_proto::Lun;
use iscsi_proto::scsi::data::{
    BlockDeviceCharacteristics, BlockLimits, Designator, DeviceIdentification, LogicalBlockProvisioning, Peripheral,
    ReportLunsData, StandardInquiry, SupportedVpdPages, UnitSerialNumber, truncate_to_allocation_length,
};
use iscsi_proto::scsi::{Command, OperationCode, Sense};

/// VERSION DESCRIPTORs: SAM-5, iSCSI, SPC-4 and SBC-3, none claiming a
/// revision. libiscsi's test tool enables its SBC-3 checks (READ CAPACITY
/// (16), READ (16) as mandatory) only when it finds 04C0h here.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0960, 0x0460, 0x04C0];

/// Every VPD page served, ascending as SPC-4 lists them in page 00h.
const VPD_PAGES: [u8; 6] = [
    SupportedVpdPages::PAGE_CODE,
    UnitSerialNumber::PAGE_CODE,
    DeviceIdentification::PAGE_CODE,
    BlockLimits::PAGE_CODE,
    BlockDeviceCharacteristics::PAGE_CODE,
    LogicalBlockProvisioning::PAGE_CODE,
];

/// Target portal group tag in the target port name: a target with one
/// portal group numbers it 1.
const TPGT: u16 = 1;

impl LogicalUnit {
    pub(super) fn inquiry(&self, evpd: bool, page_code: u8, allocation_length: u16) -> Result<Vec<u8>, Sense> {
        let mut data = if evpd {
            self.vpd_page(page_code)?
        } else {
            let id = &self.identity;
            StandardInquiry {
                version_descriptors: VERSION_DESCRIPTORS.to_vec(),
                ..StandardInquiry::new(&id.vendor, &id.product, &id.revision)
            }
            .to_bytes()
        };
        truncate_to_allocation_length(&mut data, u32::from(allocation_length));
        Ok(data)
    }

    fn vpd_page(&self, page_code: u8) -> Result<Vec<u8>, Sense> {
        let disk = Peripheral::DISK;
        let thin = self.thin;
        Ok(match page_code {
            SupportedVpdPages::PAGE_CODE => SupportedVpdPages {
                peripheral: disk,
                pages: VPD_PAGES.to_vec(),
            }
            .to_bytes(),
            UnitSerialNumber::PAGE_CODE => UnitSerialNumber {
                peripheral: disk,
                serial: self.identity.serial.as_bytes().to_vec(),
            }
            .to_bytes(),
            DeviceIdentification::PAGE_CODE => self.device_identification().to_bytes(),
            BlockLimits::PAGE_CODE => self.block_limits().to_bytes(disk),
            BlockDeviceCharacteristics::PAGE_CODE => BlockDeviceCharacteristics {
                medium_rotation_rate: BlockDeviceCharacteristics::NON_ROTATING,
                nominal_form_factor: 0,
            }
            .to_bytes(disk),
            LogicalBlockProvisioning::PAGE_CODE => LogicalBlockProvisioning {
                threshold_exponent: 0,
                lbpu: thin,
                lbpws: thin,
                lbpws10: thin,
                lbprz: thin,
                anc_sup: false,
                provisioning_type: if thin {
                    LogicalBlockProvisioning::PROVISIONING_THIN
                } else {
                    LogicalBlockProvisioning::PROVISIONING_FULL
                },
            }
            .to_bytes(disk),
            // SPC-4 INQUIRY: a VPD page that is not supported is INVALID
            // FIELD IN CDB (the PAGE CODE field).
            _ => return Err(Sense::invalid_field_in_cdb(2, None)),
        })
    }

    /// NAA for the logical unit (what multipath and udev key on), a T10
    /// vendor ID designator, and the iSCSI names of the target port and
    /// target device with the relative port number.
    fn device_identification(&self) -> DeviceIdentification {
        let id = &self.identity;
        let mut designators = vec![
            Designator::naa(&id.naa_designator()),
            Designator::t10_vendor_id(&id.vendor, id.serial.as_bytes()),
            Designator::relative_target_port(1),
        ];
        if !id.target_name.is_empty() {
            designators.push(Designator::iscsi_target_port(&id.target_name, TPGT));
            designators.push(Designator::iscsi_target_device(&id.target_name));
        }
        DeviceIdentification {
            peripheral: Peripheral::DISK,
            designators,
        }
    }

    /// Block Limits. WSNZ is 0: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0
    /// means "to the last LBA", and that count is held to MAXIMUM WRITE
    /// SAME LENGTH like any other. Unmap fields are 0 ("not supported")
    /// without logical block provisioning.
    pub(super) fn block_limits(&self) -> BlockLimits {
        let l = &self.limits;
        let thin = self.thin;
        BlockLimits {
            wsnz: false,
            maximum_compare_and_write_length: l.max_compare_and_write_blocks,
            optimal_transfer_length_granularity: l.granularity_blocks,
            maximum_transfer_length: l.max_transfer_blocks,
            optimal_transfer_length: 0,
            maximum_prefetch_length: 0,
            maximum_unmap_lba_count: if thin { l.max_unmap_blocks } else { 0 },
            maximum_unmap_block_descriptor_count: if thin { l.max_unmap_descriptors } else { 0 },
            optimal_unmap_granularity: if thin { u32::from(l.granularity_blocks) } else { 0 },
            unmap_granularity_alignment: thin.then_some(0),
            maximum_write_same_length: l.max_write_same_blocks,
        }
    }
}

/// REPORT LUNS answer for `luns` (any LUN may receive it). SELECT REPORT
/// 00h and 02h list them all; 01h (well-known logical units) lists none,
/// since there are none; other values are INVALID FIELD IN CDB.
pub fn report_luns(luns: &[u16], select_report: u8, allocation_length: u32) -> Completion {
    report_luns_data(luns, select_report, allocation_length).into()
}

pub(super) fn report_luns_data(luns: &[u16], select_report: u8, allocation_length: u32) -> Result<Vec<u8>, Sense> {
    let luns = match select_report {
        0x00 | 0x02 => luns.iter().map(|&l| Lun::from_index(l).to_u64()).collect(),
        0x01 => Vec::new(),
        _ => return Err(Sense::invalid_field_in_cdb(2, None)),
    };
    let mut data = ReportLunsData { luns }.to_bytes();
    truncate_to_allocation_length(&mut data, allocation_length);
    Ok(data)
}

/// LUN 0 when it has no device behind it (SPC-4 REPORT LUNS well-known behaviour): answers INQUIRY with peripheral
/// qualifier 011b / device type 1Fh, REPORT LUNS and REQUEST SENSE; everything else, TEST UNIT READY included, gets
/// LOGICAL UNIT NOT SUPPORTED. Any other LUN without a device answers the same way.
///
/// SPC-4 REQUEST SENSE: "In response to a REQUEST SENSE command to an
/// incorrect logical unit, the device server shall return sense data with
/// the sense key set to ILLEGAL REQUEST and the additional sense code set
/// to LOGICAL UNIT NOT SUPPORTED" — as parameter data, with GOOD status.
pub fn no_device_lun(cdb: &[u8], luns: &[u16]) -> Completion {
    let cmd = match Command::parse(cdb) {
        Ok(cmd) => cmd,
        Err(e) => {
            let answered = [
                OperationCode::INQUIRY,
                OperationCode::REPORT_LUNS,
                OperationCode::REQUEST_SENSE,
            ];
            let sense = match cdb.first() {
                Some(&op) if answered.contains(&OperationCode(op)) => e.sense(),
                _ => Sense::logical_unit_not_supported(),
            };
            return Completion::check_condition(sense);
        }
    };
    let none = Peripheral::NOT_SUPPORTED;
    let data = match cmd {
        Command::Inquiry {
            evpd: false,
            allocation_length,
            ..
        } => Ok((
            StandardInquiry {
                peripheral: none,
                ..StandardInquiry::new("", "", "")
            }
            .to_bytes(),
            u32::from(allocation_length),
        )),
        Command::Inquiry {
            page_code: SupportedVpdPages::PAGE_CODE,
            allocation_length,
            ..
        } => Ok((
            SupportedVpdPages {
                peripheral: none,
                pages: Vec::new(),
            }
            .to_bytes(),
            u32::from(allocation_length),
        )),
        Command::Inquiry { .. } => Err(Sense::invalid_field_in_cdb(2, None)),
        Command::ReportLuns {
            select_report,
            allocation_length,
        } => return report_luns(luns, select_report, allocation_length),
        Command::RequestSense {
            desc,
            allocation_length,
        } => Ok((
            mode::sense_parameter_data(Sense::logical_unit_not_supported(), desc),
            u32::from(allocation_length),
        )),
        _ => Err(Sense::logical_unit_not_supported()),
    };
    match data {
        Ok((mut data, allocation_length)) => {
            truncate_to_allocation_length(&mut data, allocation_length);
            Completion::good(data)
        }
        Err(sense) => Completion::check_condition(sense),
    }
}
