//! MODE SENSE (6)/(10), MODE SELECT (6)/(10), REQUEST SENSE and REPORT
//! SUPPORTED OPERATION CODES: what the device says about its own settings
//! and commands, and the settings an initiator may change.

use super::{LogicalUnit, serves};
use iscsi_proto::scsi::data::{
    BlockDescriptor, CachingPage, ControlPage, ModePage, ModeParameters, ModeSelectList, OneCommandData,
    SupportedOperationCodes, report_supported_operation_codes, select_mode_pages, truncate_to_allocation_length,
};
use iscsi_proto::scsi::{
    AdditionalSense, ModeSense6, ModeSense10, PageControl, ReportSupportedOperationCodes, ReportingOptions, Sense,
    SenseKey,
};
use std::sync::atomic::Ordering;

/// The mode settings MODE SELECT may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    /// WCE, Caching page.
    wce: bool,
    /// SWP, Control page.
    swp: bool,
}

/// The pages this logical unit has, in MODE SENSE order, with `s` in them.
/// The Control page: fixed format sense, unrestricted reordering since
/// commands run concurrently.
fn pages(s: Settings) -> [ModePage; 2] {
    [
        CachingPage { wce: s.wce, rcd: false }.to_page(),
        ControlPage {
            queue_algorithm_modifier: 1,
            swp: s.swp,
            ..ControlPage::default()
        }
        .to_page(),
    ]
}

/// The changeable values of each page (MODE SENSE PC = 01b): the bits
/// that differ between every setting on and every setting off.
fn changeable_pages() -> [ModePage; 2] {
    let off = pages(Settings { wce: false, swp: false });
    let mut mask = pages(Settings { wce: true, swp: true });
    for (m, o) in mask.iter_mut().zip(&off) {
        m.data.iter_mut().zip(&o.data).for_each(|(m, o)| *m ^= o);
    }
    mask
}

/// `settings` with the changeable fields of `page` (at offset `at` of the
/// parameter list) applied, or the field that may not be sent so.
fn select_page(settings: Settings, page: &ModePage, at: u16) -> Result<Settings, Sense> {
    let invalid = |byte: u16, bit| Err(Sense::invalid_field_in_parameter_list(at.saturating_add(byte), bit));
    let current = pages(settings);
    let mask = changeable_pages();
    let found = current.iter().zip(&mask).find(|(p, _)| p.page_code == page.page_code);
    let (current, mask) = match found {
        Some(pair) if page.subpage_code == 0 => pair,
        // No such page (or subpage): point at the PAGE CODE.
        _ => return invalid(0, Some(5)),
    };
    if page.data.len() != current.data.len() {
        return invalid(1, None);
    }
    let fields = page.data.iter().zip(&current.data).zip(&mask.data);
    for (i, ((&sent, &now), &changeable)) in fields.enumerate() {
        let wrong = (sent ^ now) & !changeable;
        if wrong != 0 {
            let bit = 7 - wrong.leading_zeros() as u8;
            return invalid(2 + u16::try_from(i).unwrap_or(u16::MAX - 2), Some(bit));
        }
    }
    if let Ok(c) = CachingPage::from_page(page) {
        return Ok(Settings { wce: c.wce, ..settings });
    }
    if let Ok(c) = ControlPage::from_page(page) {
        return Ok(Settings { swp: c.swp, ..settings });
    }
    Ok(settings)
}

/// Sense data as REQUEST SENSE returns it: descriptor format when DESC is
/// set, fixed otherwise.
pub(super) fn sense_parameter_data(sense: Sense, desc: bool) -> Vec<u8> {
    let buf = if desc { sense.descriptor() } else { sense.fixed() };
    buf.as_bytes().to_vec()
}

/// REQUEST SENSE on this logical unit. Every error is reported with the
/// command that caused it (autosense), so nothing is ever pending: the
/// answer is NO SENSE.
pub(super) fn request_sense(desc: bool, allocation_length: u8) -> Vec<u8> {
    let none = Sense::new(SenseKey::NO_SENSE, AdditionalSense::NO_ADDITIONAL_SENSE);
    let mut data = sense_parameter_data(none, desc);
    truncate_to_allocation_length(&mut data, u32::from(allocation_length));
    data
}

impl LogicalUnit {
    pub(super) fn mode_sense_6(&self, m: &ModeSense6) -> Result<Vec<u8>, Sense> {
        let mut data = self
            .mode_parameters(m.dbd, m.page_control, m.page_code, m.subpage_code)?
            .to_bytes_6();
        truncate_to_allocation_length(&mut data, u32::from(m.allocation_length));
        Ok(data)
    }

    pub(super) fn mode_sense_10(&self, m: &ModeSense10) -> Result<Vec<u8>, Sense> {
        let mut data = self
            .mode_parameters(m.dbd, m.page_control, m.page_code, m.subpage_code)?
            .to_bytes_10(m.llbaa);
        truncate_to_allocation_length(&mut data, u32::from(m.allocation_length));
        Ok(data)
    }

    fn settings(&self) -> Settings {
        Settings {
            wce: self.write_cache(),
            swp: self.swp(),
        }
    }

    /// The Caching page and the Control page. Current values are what MODE
    /// SELECT last set, default values the configuration (WCE as
    /// configured, SWP clear), changeable values WCE and SWP; nothing can
    /// be saved.
    fn mode_parameters(
        &self,
        dbd: bool,
        page_control: PageControl,
        page_code: u8,
        subpage_code: u8,
    ) -> Result<ModeParameters, Sense> {
        // SPC-4 MODE SENSE: "If the PC field is set to 11b and saved values
        // are not implemented, the command shall be terminated with CHECK
        // CONDITION status, with the sense key set to ILLEGAL REQUEST and the
        // additional sense code set to SAVING PARAMETERS NOT SUPPORTED."
        if page_control == PageControl::Saved {
            return Err(Sense::illegal_request(AdditionalSense::SAVING_PARAMETERS_NOT_SUPPORTED));
        }
        let changeable = page_control == PageControl::Changeable;
        let pages = match page_control {
            PageControl::Changeable => changeable_pages(),
            PageControl::Default => pages(Settings {
                wce: self.default_write_cache,
                swp: false,
            }),
            _ => pages(self.settings()),
        };
        let pages = select_mode_pages(&pages, page_code, subpage_code).ok_or_else(|| {
            if subpage_code != 0 && subpage_code != 0xFF {
                Sense::invalid_field_in_cdb(3, None)
            } else {
                Sense::invalid_field_in_cdb(2, Some(5))
            }
        })?;
        let block_descriptor = (!dbd).then(|| {
            if changeable {
                BlockDescriptor {
                    number_of_blocks: 0,
                    block_length: 0,
                }
            } else {
                BlockDescriptor {
                    number_of_blocks: self.capacity(),
                    block_length: self.block_size(),
                }
            }
        });
        Ok(ModeParameters {
            medium_type: 0,
            write_protect: self.write_protected(),
            // FUA is honoured (a flush after the write) and DPO is accepted.
            dpofua: true,
            block_descriptor,
            pages,
        })
    }

    /// MODE SELECT (6) (`ten` false) or (10): `list` is the parameter list,
    /// already cut to the PARAMETER LIST LENGTH. Every field must be what
    /// MODE SENSE reports as current, except the changeable ones (WCE, SWP);
    /// anything else is INVALID FIELD IN PARAMETER LIST pointing at it. The
    /// whole list is checked before anything changes.
    ///
    /// The new settings apply to every I_T nexus. SPC-4 also has the device
    /// server establish a MODE PARAMETERS CHANGED unit attention for the
    /// other I_T nexuses; that belongs to whoever keeps unit attentions.
    pub(super) fn mode_select(&self, pf: bool, sp: bool, list: &[u8], ten: bool) -> Result<(), Sense> {
        // SPC-4 MODE SELECT: "If the logical unit does not implement saved
        // mode pages and the SP bit is set to one, then the command shall be
        // terminated with CHECK CONDITION status, with the sense key set to
        // ILLEGAL REQUEST, and the additional sense code set to INVALID FIELD
        // IN CDB."
        if sp {
            return Err(Sense::invalid_field_in_cdb(1, Some(0)));
        }
        let parsed = if ten {
            ModeSelectList::parse_10(list)
        } else {
            ModeSelectList::parse_6(list)
        };
        let parsed = parsed.map_err(|e| e.sense())?;
        // PF = 0: the parameters after the block descriptor are in a vendor
        // specific format, and this device has none.
        if !pf && !parsed.pages.is_empty() {
            return Err(Sense::invalid_field_in_cdb(1, Some(4)));
        }
        let header_len: u16 = if ten { 8 } else { 4 };
        if parsed.medium_type != 0 {
            return Err(Sense::invalid_field_in_parameter_list(if ten { 2 } else { 1 }, None));
        }
        if let Some(d) = parsed.block_descriptor {
            self.check_block_descriptor(&d, parsed.long_lba, header_len)?;
        }
        // Alone: commands already changing the medium finish first, and a
        // concurrent MODE SELECT does not undo this one's other setting.
        let _exclusive = self.exclusive();
        let old = self.settings();
        let mut new = old;
        for (at, page) in &parsed.pages {
            new = select_page(new, page, u16::try_from(*at).unwrap_or(u16::MAX))?;
        }
        if new == old {
            return Ok(());
        }
        self.write_cache.store(new.wce, Ordering::Relaxed);
        self.swp.store(new.swp, Ordering::Relaxed);
        self.mode_changes.fetch_add(1, Ordering::Relaxed);
        if old.wce && !new.wce {
            // Writes completed while the cache was on become durable now,
            // so that none is left behind write-through mode.
            self.flush()?;
        }
        Ok(())
    }

    /// A block descriptor may only restate the medium: NUMBER OF LOGICAL
    /// BLOCKS zero (SBC-3: keep the capacity), the capacity (or FFFF_FFFFh
    /// in a short descriptor when it does not fit), and the block length.
    fn check_block_descriptor(&self, d: &BlockDescriptor, long_lba: bool, at: u16) -> Result<(), Sense> {
        let capacity = self.capacity();
        let short_max = u64::from(u32::MAX);
        let blocks_ok = d.number_of_blocks == 0
            || d.number_of_blocks == capacity
            || (!long_lba && capacity > short_max && d.number_of_blocks == short_max);
        if !blocks_ok {
            return Err(Sense::invalid_field_in_parameter_list(at, None));
        }
        if d.block_length != self.block_size() {
            let field = if long_lba { 12 } else { 5 };
            return Err(Sense::invalid_field_in_parameter_list(at + field, None));
        }
        Ok(())
    }

    /// The parser's command table, less UNMAP when there is no logical
    /// block provisioning (UNMAP then answers INVALID COMMAND OPERATION
    /// CODE, and the list must agree).
    pub(super) fn report_supported_operation_codes(
        &self,
        req: &ReportSupportedOperationCodes,
    ) -> Result<Vec<u8>, Sense> {
        let mut data = if req.reporting_options == ReportingOptions::All {
            let mut all = SupportedOperationCodes::supported_by_parser(req.rctd);
            all.commands.retain(|c| serves(c.operation_code, self.thin));
            all.to_bytes()
        } else {
            let one = report_supported_operation_codes(req)?;
            if serves(req.requested_operation_code, self.thin) {
                one
            } else {
                OneCommandData {
                    support: OneCommandData::SUPPORT_NOT_SUPPORTED,
                    cdb_usage_data: Vec::new(),
                    timeouts: None,
                }
                .to_bytes()
            }
        };
        truncate_to_allocation_length(&mut data, req.allocation_length);
        Ok(data)
    }
}
