//! The two mode pages a disk target must have: Caching (08h, SBC-3) and
//! Control (0Ah, SPC-4), converted to and from [`ModePage`].

use super::{DataError, ModePage, need};
use crate::scsi::be;

/// Caching mode page (08h, SBC-3): 18 bytes of parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CachingPage {
    /// WCE: write cache enabled — writes may complete before reaching the
    /// medium, so initiators send SYNCHRONIZE CACHE / FUA.
    pub wce: bool,
    /// RCD: read cache disabled.
    pub rcd: bool,
}

impl CachingPage {
    pub const PAGE_CODE: u8 = 0x08;
    const LEN: usize = 0x12;

    pub fn to_page(&self) -> ModePage {
        let mut data = vec![0u8; Self::LEN];
        data[0] = (u8::from(self.wce) << 2) | u8::from(self.rcd);
        ModePage {
            ps: false,
            page_code: Self::PAGE_CODE,
            subpage_code: 0,
            data,
        }
    }

    pub fn from_page(page: &ModePage) -> Result<Self, DataError> {
        if page.page_code != Self::PAGE_CODE || page.subpage_code != 0 {
            return Err(DataError::WrongPage {
                expected: Self::PAGE_CODE,
                got: page.page_code,
            });
        }
        let b = be::u8_at(&page.data, 0).ok_or(DataError::TooShort { needed: 1, got: 0 })?;
        Ok(Self {
            wce: b & 0x04 != 0,
            rcd: b & 0x01 != 0,
        })
    }
}

/// Control mode page (0Ah, SPC-4): 10 bytes of parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ControlPage {
    /// TST (3 bits): 000b one task set for all I_T nexuses.
    pub tst: u8,
    /// D_SENSE: return descriptor-format sense data.
    pub d_sense: bool,
    /// QUEUE ALGORITHM MODIFIER (4 bits): 1 allows unrestricted reordering.
    pub queue_algorithm_modifier: u8,
    /// QERR (2 bits).
    pub qerr: u8,
    /// SWP: software write protect.
    pub swp: bool,
    /// TAS: report TASK ABORTED status to other I_T nexuses.
    pub tas: bool,
    /// BUSY TIMEOUT PERIOD in 100 ms units.
    pub busy_timeout_period: u16,
}

impl ControlPage {
    pub const PAGE_CODE: u8 = 0x0A;
    const LEN: usize = 0x0A;

    pub fn to_page(&self) -> ModePage {
        let mut data = vec![0u8; Self::LEN];
        data[0] = ((self.tst & 0x07) << 5) | (u8::from(self.d_sense) << 2);
        data[1] = ((self.queue_algorithm_modifier & 0x0F) << 4) | ((self.qerr & 0x03) << 1);
        data[2] = u8::from(self.swp) << 3;
        data[3] = u8::from(self.tas) << 6;
        data[6..8].copy_from_slice(&self.busy_timeout_period.to_be_bytes());
        ModePage {
            ps: false,
            page_code: Self::PAGE_CODE,
            subpage_code: 0,
            data,
        }
    }

    pub fn from_page(page: &ModePage) -> Result<Self, DataError> {
        if page.page_code != Self::PAGE_CODE || page.subpage_code != 0 {
            return Err(DataError::WrongPage {
                expected: Self::PAGE_CODE,
                got: page.page_code,
            });
        }
        need(&page.data, 4)?;
        let b = |at| be::u8_at(&page.data, at).unwrap_or(0);
        Ok(Self {
            tst: b(0) >> 5,
            d_sense: b(0) & 0x04 != 0,
            queue_algorithm_modifier: b(1) >> 4,
            qerr: (b(1) >> 1) & 0x03,
            swp: b(2) & 0x08 != 0,
            tas: b(3) & 0x40 != 0,
            busy_timeout_period: be::u16_at(&page.data, 6).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caching_page_bytes() {
        let p = CachingPage { wce: true, rcd: true }.to_page();
        assert_eq!((p.page_code, p.data.len()), (0x08, 18));
        assert_eq!(p.data[0], 0x05);
        assert_eq!(CachingPage::from_page(&p), Ok(CachingPage { wce: true, rcd: true }));
        let wrong = ControlPage::default().to_page();
        assert!(CachingPage::from_page(&wrong).is_err());
    }

    #[test]
    fn control_page_bytes() {
        let c = ControlPage {
            tst: 1,
            d_sense: true,
            queue_algorithm_modifier: 1,
            qerr: 1,
            swp: true,
            tas: true,
            busy_timeout_period: 0x0102,
        };
        let p = c.to_page();
        assert_eq!(p.data, [0x24, 0x12, 0x08, 0x40, 0, 0, 1, 2, 0, 0]);
        assert_eq!(ControlPage::from_page(&p), Ok(c));
    }
}
