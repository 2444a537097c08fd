//! MODE SENSE (6)/(10) parameter data and MODE SELECT (6)/(10) parameter
//! lists (SPC-4 mode parameters): header, optional block descriptor, mode
//! pages. The typed Caching and Control pages are in `mode_pages.rs`.

use super::{DataError, ParameterListError, need};
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

    /// This data as a MODE SELECT (6) parameter list, the initiator's side
    /// of [`ModeSelectList::parse_6`]. SPC-4 has MODE DATA LENGTH and each
    /// page's PS bit reserved in MODE SELECT, and SBC-3 the WP and DPOFUA
    /// bits of the device-specific parameter: all are sent as zero, so
    /// MODE SENSE data can be changed and sent back as is.
    pub fn to_select_bytes_6(&self) -> Vec<u8> {
        let mut out = self.for_select().to_bytes_6();
        out[0] = 0;
        out
    }

    /// As [`ModeParameters::to_select_bytes_6`], for MODE SELECT (10);
    /// `long_lba` sends the block descriptor in the 16-byte form.
    pub fn to_select_bytes_10(&self, long_lba: bool) -> Vec<u8> {
        let mut out = self.for_select().to_bytes_10(long_lba);
        out[..2].fill(0);
        out
    }

    fn for_select(&self) -> Self {
        Self {
            write_protect: false,
            dpofua: false,
            pages: self.pages.iter().map(|p| ModePage { ps: false, ..p.clone() }).collect(),
            ..self.clone()
        }
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

/// A MODE SELECT (6)/(10) parameter list as a device server reads it.
///
/// Unlike MODE SENSE data this is parsed strictly, as SPC-4 asks of MODE
/// SELECT: "If the parameter list length results in the truncation of any
/// mode parameter header, mode parameter block descriptor(s), or mode page,
/// then the command shall be terminated with CHECK CONDITION status, with
/// the sense key set to ILLEGAL REQUEST, and the additional sense code set
/// to PARAMETER LIST LENGTH ERROR." MODE DATA LENGTH is reserved in MODE
/// SELECT and not read; nor is the device-specific parameter, whose WP and
/// DPOFUA bits SBC-3 has a device server ignore in MODE SELECT data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ModeSelectList {
    pub medium_type: u8,
    pub block_descriptor: Option<BlockDescriptor>,
    /// The block descriptor came in the 16-byte long LBA form (MODE SELECT
    /// (10) with LONGLBA set).
    pub long_lba: bool,
    /// Each page with the offset of its first byte in the parameter list,
    /// for the field pointer of an INVALID FIELD IN PARAMETER LIST.
    pub pages: Vec<(usize, ModePage)>,
}

impl ModeSelectList {
    /// Parses a MODE SELECT (6) parameter list: `buf` is the Data-Out cut
    /// to the PARAMETER LIST LENGTH. An empty list (length 0, which SPC-4
    /// says "shall not be considered as an error") is an empty value.
    pub fn parse_6(buf: &[u8]) -> Result<Self, ParameterListError> {
        if buf.is_empty() {
            return Ok(Self::default());
        }
        let [_, medium_type, _, bdl] = be::array(buf, 0).ok_or(ParameterListError::LengthError)?;
        let block_descriptor = match bdl {
            0 => None,
            8 => Some(Self::short_descriptor(buf, 4)?),
            _ => return Err(ParameterListError::InvalidField { byte: 3, bit: None }),
        };
        Ok(Self {
            medium_type,
            block_descriptor,
            long_lba: false,
            pages: Self::parse_pages(buf, 4 + usize::from(bdl))?,
        })
    }

    /// Parses a MODE SELECT (10) parameter list (see [`Self::parse_6`]).
    pub fn parse_10(buf: &[u8]) -> Result<Self, ParameterListError> {
        if buf.is_empty() {
            return Ok(Self::default());
        }
        let [_, _, medium_type, _, longlba, _, _, _] = be::array(buf, 0).ok_or(ParameterListError::LengthError)?;
        let long_lba = longlba & 1 != 0;
        let bdl = be::u16_at(buf, 6).unwrap_or(0);
        let block_descriptor = match (bdl, long_lba) {
            (0, _) => None,
            (8, false) => Some(Self::short_descriptor(buf, 8)?),
            (16, true) => {
                let d = buf.get(8..24).ok_or(ParameterListError::LengthError)?;
                Some(BlockDescriptor {
                    number_of_blocks: be::u64_at(d, 0).unwrap_or(0),
                    block_length: be::u32_at(d, 12).unwrap_or(0),
                })
            }
            _ => return Err(ParameterListError::InvalidField { byte: 6, bit: None }),
        };
        Ok(Self {
            medium_type,
            block_descriptor,
            long_lba,
            pages: Self::parse_pages(buf, 8 + usize::from(bdl))?,
        })
    }

    fn short_descriptor(buf: &[u8], at: usize) -> Result<BlockDescriptor, ParameterListError> {
        let d = buf.get(at..at + 8).ok_or(ParameterListError::LengthError)?;
        Ok(BlockDescriptor {
            number_of_blocks: u64::from(be::u32_at(d, 0).unwrap_or(0)),
            block_length: be::u24_at(d, 5).unwrap_or(0),
        })
    }

    /// The pages from `at` to the end of `buf`. A page in the sub_page
    /// format with SUBPAGE CODE 00h is refused: SPC-4 has subpage 00h sent
    /// in the page_0 format, and [`ModePage`] could not tell them apart.
    fn parse_pages(buf: &[u8], mut at: usize) -> Result<Vec<(usize, ModePage)>, ParameterListError> {
        let short = ParameterListError::LengthError;
        let mut pages = Vec::new();
        while let Some(b0) = be::u8_at(buf, at) {
            let (subpage_code, len, hdr) = if b0 & 0x40 != 0 {
                let sub = be::u8_at(buf, at + 1).ok_or(short)?;
                let len = be::u16_at(buf, at + 2).ok_or(short)?;
                if sub == 0 {
                    let byte = u16::try_from(at + 1).unwrap_or(u16::MAX);
                    return Err(ParameterListError::InvalidField { byte, bit: None });
                }
                (sub, usize::from(len), 4)
            } else {
                (0, usize::from(be::u8_at(buf, at + 1).ok_or(short)?), 2)
            };
            let data = buf.get(at + hdr..at + hdr + len).ok_or(short)?;
            pages.push((
                at,
                ModePage {
                    ps: b0 & 0x80 != 0,
                    page_code: b0 & 0x3F,
                    subpage_code,
                    data: data.to_vec(),
                },
            ));
            at += hdr + len;
        }
        Ok(pages)
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

    #[test]
    fn mode_select_lists_round_trip() {
        let p = ModeParameters {
            write_protect: true,
            pages: vec![
                ModePage {
                    ps: true,
                    ..ControlPage {
                        swp: true,
                        ..Default::default()
                    }
                    .to_page()
                },
                CachingPage { wce: true, rcd: false }.to_page(),
            ],
            ..params()
        };
        let b = p.to_select_bytes_6();
        // MODE DATA LENGTH, WP/DPOFUA and PS go out as zero.
        assert_eq!(&b[..4], &[0, 0, 0, 8]);
        assert_eq!(&b[12..16], &[0x0A, 0x0A, 0, 0]);
        let l = ModeSelectList::parse_6(&b).unwrap();
        assert_eq!(l.block_descriptor.unwrap().block_length, 512);
        assert!(!l.long_lba);
        let offsets: Vec<usize> = l.pages.iter().map(|(at, _)| *at).collect();
        assert_eq!(offsets, [12, 24]);
        assert!(ControlPage::from_page(&l.pages[0].1).unwrap().swp);
        assert!(!l.pages[0].1.ps);
        assert!(CachingPage::from_page(&l.pages[1].1).unwrap().wce);
        let b = p.to_select_bytes_10(true);
        assert_eq!(&b[..8], &[0, 0, 0, 0, 1, 0, 0, 16]);
        let l = ModeSelectList::parse_10(&b).unwrap();
        assert!(l.long_lba);
        assert_eq!(l.block_descriptor, p.block_descriptor);
        assert_eq!(l.pages[0].0, 24);
        let no_bd = ModeParameters {
            block_descriptor: None,
            ..p
        };
        let l = ModeSelectList::parse_10(&no_bd.to_select_bytes_10(false)).unwrap();
        assert_eq!((l.block_descriptor, l.pages[0].0), (None, 8));
        assert_eq!(ModeSelectList::parse_6(&[]), Ok(ModeSelectList::default()));
        assert_eq!(ModeSelectList::parse_10(&[]), Ok(ModeSelectList::default()));
    }

    #[test]
    fn mode_select_lists_are_strict() {
        let len = Err(ParameterListError::LengthError);
        let b = ModeParameters {
            block_descriptor: None,
            ..params()
        }
        .to_select_bytes_6();
        // A cut anywhere in the header or a page is a length error...
        for cut in [1, 3, 5, 6, 20, 25, b.len() - 1] {
            assert_eq!(ModeSelectList::parse_6(&b[..cut]), len, "{cut}");
        }
        // ...a cut between pages is not.
        assert_eq!(ModeSelectList::parse_6(&b[..24]).unwrap().pages.len(), 1);
        assert_eq!(ModeSelectList::parse_6(&[0, 0, 0, 8, 0, 0, 0, 0]), len);
        assert_eq!(
            ModeSelectList::parse_6(&[0, 0, 0, 4, 0, 0, 0, 0]),
            Err(ParameterListError::InvalidField { byte: 3, bit: None })
        );
        assert_eq!(ModeSelectList::parse_10(&[0, 0, 0, 0, 0, 0, 0]), len);
        // A long descriptor needs LONGLBA, a short one its absence.
        let mut h = [0u8; 24];
        h[7] = 16;
        assert_eq!(
            ModeSelectList::parse_10(&h),
            Err(ParameterListError::InvalidField { byte: 6, bit: None })
        );
        h[4] = 1;
        assert!(ModeSelectList::parse_10(&h).is_ok());
        h[7] = 8;
        assert!(ModeSelectList::parse_10(&h).is_err());
        // Sub_page format with subpage 00h.
        assert_eq!(
            ModeSelectList::parse_6(&[0, 0, 0, 0, 0x4A, 0, 0, 0]),
            Err(ParameterListError::InvalidField { byte: 5, bit: None })
        );
        let sub = ModeSelectList::parse_6(&[0, 0, 0, 0, 0x4A, 1, 0, 1, 7]).unwrap();
        assert_eq!(sub.pages[0].1.subpage_code, 1);
        assert_eq!(sub.pages[0].1.data, [7]);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = ModeParameters::parse_6(&b);
            let _ = ModeParameters::parse_10(&b);
            let _ = ModeSelectList::parse_6(&b);
            let _ = ModeSelectList::parse_10(&b);
        }

        #[test]
        fn select_pages_round_trip(
            pages in proptest::collection::vec(
                (0u8..0x3F, proptest::prelude::any::<u8>(),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)),
                0..5),
            long in proptest::prelude::any::<bool>(),
        ) {
            let pages: Vec<ModePage> = pages
                .into_iter()
                .map(|(page_code, subpage_code, data)| ModePage { ps: false, page_code, subpage_code, data })
                .collect();
            let p = ModeParameters { pages: pages.clone(), ..params() };
            let six = ModeSelectList::parse_6(&p.to_select_bytes_6());
            let ten = ModeSelectList::parse_10(&p.to_select_bytes_10(long));
            for l in [six, ten] {
                let l = l.map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                let back: Vec<ModePage> = l.pages.into_iter().map(|(_, p)| p).collect();
                proptest::prop_assert_eq!(&back, &pages);
            }
        }
    }
}
