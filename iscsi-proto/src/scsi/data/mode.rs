//! MODE SENSE (6)/(10) parameter data (SPC-4 mode parameters): header, optional block
//! descriptor, mode pages. The typed Caching and Control pages are in
//! `mode_pages.rs`.

use super::{DataError, need};
use crate::scsi::be;

/// A mode parameter block descriptor, for a direct-access device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockDescriptor {
    /// NUMBER OF LOGICAL BLOCKS. In a short (8-byte) descriptor SBC-3 has
    /// a value that does not fit reported as FFFF_FFFFh.
    pub number_of_blocks: u64,
    /// LOGICAL BLOCK LENGTH (24 bits in the short form).
    pub block_length: u32,
}

/// One mode page as raw bytes; typed pages convert to and from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModePage {
    /// PS: the page can be saved.
    pub ps: bool,
    /// Six bits.
    pub page_code: u8,
    /// Non-zero selects the sub_page format (SPF = 1).
    pub subpage_code: u8,
    /// The page parameters after the 2- or 4-byte page header.
    pub data: Vec<u8>,
}

impl ModePage {
    fn emit(&self, out: &mut Vec<u8>) {
        let code = (u8::from(self.ps) << 7) | (self.page_code & 0x3F);
        if self.subpage_code == 0 {
            let d = self.data.get(..255).unwrap_or(&self.data);
            out.push(code);
            out.push(be::clamp_u8(d.len()));
            out.extend_from_slice(d);
        } else {
            let d = self.data.get(..usize::from(u16::MAX)).unwrap_or(&self.data);
            out.push(code | 0x40);
            out.push(self.subpage_code);
            out.extend_from_slice(&be::clamp_u16(d.len()).to_be_bytes());
            out.extend_from_slice(d);
        }
    }

    /// Parses the pages in `buf`, stopping at a truncated one.
    fn parse_all(mut buf: &[u8]) -> Vec<ModePage> {
        let mut pages = Vec::new();
        while let Some(b0) = be::u8_at(buf, 0) {
            let spf = b0 & 0x40 != 0;
            let (subpage_code, len, hdr) = if spf {
                match (be::u8_at(buf, 1), be::u16_at(buf, 2)) {
                    (Some(s), Some(l)) => (s, usize::from(l), 4),
                    _ => break,
                }
            } else {
                match be::u8_at(buf, 1) {
                    Some(l) => (0, usize::from(l), 2),
                    None => break,
                }
            };
            let Some(data) = buf.get(hdr..hdr + len) else {
                break;
            };
            pages.push(ModePage {
                ps: b0 & 0x80 != 0,
                page_code: b0 & 0x3F,
                subpage_code,
                data: data.to_vec(),
            });
            buf = buf.get(hdr + len..).unwrap_or(&[]);
        }
        pages
    }
}

/// The pages a MODE SENSE with `page_code`/`subpage_code` asks for, from
/// the pages a target has. SPC-4: page code 3Fh returns all pages — with
/// subpage 00h only those without subpages, with FFh all pages and
/// subpages — and a subpage of FFh on another page code returns all its
/// subpages. `None` when nothing matches, which the target reports as
/// INVALID FIELD IN CDB at byte 2, bit 5.
pub fn select_mode_pages(pages: &[ModePage], page_code: u8, subpage_code: u8) -> Option<Vec<ModePage>> {
    const ALL_PAGES: u8 = 0x3F;
    const ALL_SUBPAGES: u8 = 0xFF;
    let selected: Vec<ModePage> = pages
        .iter()
        .filter(|p| match (page_code, subpage_code) {
            (ALL_PAGES, 0) => p.subpage_code == 0,
            (ALL_PAGES, ALL_SUBPAGES) => true,
            (code, ALL_SUBPAGES) => p.page_code == code,
            (code, sub) => p.page_code == code && p.subpage_code == sub,
        })
        .cloned()
        .collect();
    (!selected.is_empty()).then_some(selected)
}

/// MODE SENSE parameter data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ModeParameters {
    /// MEDIUM TYPE; 00h for SBC devices.
    pub medium_type: u8,
    /// DEVICE-SPECIFIC PARAMETER bit 7 (SBC-3): the medium is write
    /// protected.
    pub write_protect: bool,
    /// DEVICE-SPECIFIC PARAMETER bit 4: DPO and FUA are supported.
    pub dpofua: bool,
    /// Omitted when the CDB had DBD set.
    pub block_descriptor: Option<BlockDescriptor>,
    pub pages: Vec<ModePage>,
}

impl ModeParameters {
    fn device_specific(&self) -> u8 {
        (u8::from(self.write_protect) << 7) | (u8::from(self.dpofua) << 4)
    }

    fn pages_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.pages {
            p.emit(&mut out);
        }
        out
    }

    fn short_descriptor(d: &BlockDescriptor) -> [u8; 8] {
        let mut b = [0u8; 8];
        let blocks = u32::try_from(d.number_of_blocks).unwrap_or(u32::MAX);
        b[..4].copy_from_slice(&blocks.to_be_bytes());
        b[4..].copy_from_slice(&(d.block_length & 0x00FF_FFFF).to_be_bytes());
        b[4] = 0; // DENSITY CODE / reserved
        b
    }

    /// MODE SENSE (6) data; MODE DATA LENGTH (n-1) saturates at 255, the
    /// most the one-byte field can say.
    pub fn to_bytes_6(&self) -> Vec<u8> {
        let mut out = vec![0, self.medium_type, self.device_specific(), 0];
        if let Some(d) = &self.block_descriptor {
            out[3] = 8;
            out.extend_from_slice(&Self::short_descriptor(d));
        }
        out.extend_from_slice(&self.pages_bytes());
        out[0] = be::clamp_u8(out.len() - 1);
        out
    }

    /// MODE SENSE (10) data. With `llbaa` (the CDB's LLBAA bit) the block
    /// descriptor is the 16-byte long LBA form and LONGLBA is set.
    pub fn to_bytes_10(&self, llbaa: bool) -> Vec<u8> {
        let mut out = vec![0, 0, self.medium_type, self.device_specific(), 0, 0, 0, 0];
        if let Some(d) = &self.block_descriptor {
            if llbaa {
                out[4] = 1;
                out[7] = 16;
                out.extend_from_slice(&d.number_of_blocks.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
                out.extend_from_slice(&d.block_length.to_be_bytes());
            } else {
                out[7] = 8;
                out.extend_from_slice(&Self::short_descriptor(d));
            }
        }
        out.extend_from_slice(&self.pages_bytes());
        let len = be::clamp_u16(out.len() - 2).to_be_bytes();
        out[..2].copy_from_slice(&len);
        out
    }

    /// Parses MODE SENSE (6) data.
    pub fn parse_6(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 4)?;
        let [len, medium, dsp, bdl] = be::array(buf, 0).unwrap_or([0; 4]);
        let end = buf.len().min(usize::from(len) + 1);
        Self::parse_rest(buf.get(..end).unwrap_or(buf), 4, usize::from(bdl), false, medium, dsp)
    }

    /// Parses MODE SENSE (10) data.
    pub fn parse_10(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 8)?;
        let len = usize::from(be::u16_at(buf, 0).unwrap_or(0));
        let [medium, dsp, longlba, _] = be::array(buf, 2).unwrap_or([0; 4]);
        let bdl = usize::from(be::u16_at(buf, 6).unwrap_or(0));
        let end = buf.len().min(len + 2);
        let long = longlba & 1 != 0;
        Self::parse_rest(buf.get(..end).unwrap_or(buf), 8, bdl, long, medium, dsp)
    }

    fn parse_rest(buf: &[u8], hdr: usize, bdl: usize, long: bool, medium_type: u8, dsp: u8) -> Result<Self, DataError> {
        let descriptors = buf.get(hdr..hdr + bdl).unwrap_or(&[]);
        let block_descriptor = if long {
            be::u64_at(descriptors, 0).map(|n| BlockDescriptor {
                number_of_blocks: n,
                block_length: be::u32_at(descriptors, 12).unwrap_or(0),
            })
        } else {
            be::u32_at(descriptors, 0).map(|n| BlockDescriptor {
                number_of_blocks: u64::from(n),
                block_length: be::u24_at(descriptors, 5).unwrap_or(0),
            })
        };
        Ok(Self {
            medium_type,
            write_protect: dsp & 0x80 != 0,
            dpofua: dsp & 0x10 != 0,
            block_descriptor,
            pages: ModePage::parse_all(buf.get(hdr + bdl..).unwrap_or(&[])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::data::{CachingPage, ControlPage};

    fn params() -> ModeParameters {
        ModeParameters {
            medium_type: 0,
            write_protect: false,
            dpofua: true,
            block_descriptor: Some(BlockDescriptor {
                number_of_blocks: 0x1_0000_0000,
                block_length: 512,
            }),
            pages: vec![
                CachingPage { wce: true, rcd: false }.to_page(),
                ControlPage {
                    d_sense: true,
                    queue_algorithm_modifier: 1,
                    ..Default::default()
                }
                .to_page(),
            ],
        }
    }

    #[test]
    fn mode_sense_6_bytes() {
        let b = params().to_bytes_6();
        assert_eq!(b.len(), 4 + 8 + 20 + 12);
        assert_eq!(&b[..4], &[43, 0, 0x10, 8]);
        // Too many blocks for the short descriptor: FFFF_FFFFh.
        assert_eq!(&b[4..12], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 2, 0]);
        assert_eq!(&b[12..15], &[0x08, 0x12, 0x04]);
        assert_eq!(&b[32..36], &[0x0A, 0x0A, 0x04, 0x10]);
        let p = ModeParameters::parse_6(&b).unwrap();
        assert_eq!(p.pages, params().pages);
        assert_eq!(p.block_descriptor.unwrap().number_of_blocks, 0xFFFF_FFFF);
        assert!(CachingPage::from_page(&p.pages[0]).unwrap().wce);
        assert!(ControlPage::from_page(&p.pages[1]).unwrap().d_sense);
    }

    #[test]
    fn mode_sense_10_long_lba() {
        let b = params().to_bytes_10(true);
        assert_eq!(&b[..8], &[0, 54, 0, 0x10, 1, 0, 0, 16]);
        assert_eq!(&b[8..24], &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
        assert_eq!(ModeParameters::parse_10(&b), Ok(params()));
        let short = params().to_bytes_10(false);
        assert_eq!(&short[..8], &[0, 46, 0, 0x10, 0, 0, 0, 8]);
        let no_bd = ModeParameters {
            block_descriptor: None,
            ..params()
        };
        assert_eq!(ModeParameters::parse_10(&no_bd.to_bytes_10(true)), Ok(no_bd));
    }

    #[test]
    fn truncated_data_keeps_complete_pages() {
        let b = params().to_bytes_6();
        let p = ModeParameters::parse_6(&b[..40]).unwrap();
        assert_eq!(p.pages.len(), 1);
        assert!(ModeParameters::parse_6(&b[..3]).is_err());
    }

    #[test]
    fn subpage_format_and_selection() {
        let sub = ModePage {
            ps: true,
            page_code: 0x0A,
            subpage_code: 0x01,
            data: vec![1, 2],
        };
        let mut pages = params().pages;
        pages.push(sub.clone());
        let mp = ModeParameters {
            pages: pages.clone(),
            ..Default::default()
        };
        let b = mp.to_bytes_6();
        assert_eq!(&b[b.len() - 6..], &[0xCA, 0x01, 0, 2, 1, 2]);
        assert_eq!(ModeParameters::parse_6(&b).unwrap().pages, pages);
        assert_eq!(select_mode_pages(&pages, 0x3F, 0).unwrap().len(), 2);
        assert_eq!(select_mode_pages(&pages, 0x3F, 0xFF).unwrap().len(), 3);
        assert_eq!(select_mode_pages(&pages, 0x0A, 0xFF).unwrap().len(), 2);
        assert_eq!(select_mode_pages(&pages, 0x08, 0).unwrap(), vec![pages[0].clone()]);
        assert_eq!(select_mode_pages(&pages, 0x1C, 0), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = ModeParameters::parse_6(&b);
            let _ = ModeParameters::parse_10(&b);
        }
    }
}
