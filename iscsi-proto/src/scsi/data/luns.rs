//! REPORT LUNS parameter data (SPC-4).
//!
//! LUNs are the raw 8-byte LUN structures as u64 (SAM-5 addressing, first
//! byte most significant), the same value the iSCSI LUN field carries.

use super::{DataError, need};
use crate::scsi::be;

/// REPORT LUNS data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ReportLunsData {
    pub luns: Vec<u64>,
}

impl ReportLunsData {
    /// LUN LIST LENGTH (bytes of LUN entries, 8 each), 4 reserved bytes,
    /// then the LUNs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 * self.luns.len());
        out.extend_from_slice(&be::clamp_u32(8 * self.luns.len()).to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        for lun in &self.luns {
            out.extend_from_slice(&lun.to_be_bytes());
        }
        out
    }

    /// The whole data length the device reported (8 + LUN LIST LENGTH), so
    /// an initiator can tell that its allocation length cut the list and
    /// ask again with this much.
    pub fn full_length(buf: &[u8]) -> Option<u64> {
        be::u32_at(buf, 0).map(|l| 8 + u64::from(l))
    }

    /// Parses the LUNs present (complete entries only).
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 8)?;
        let list = usize::try_from(be::u32_at(buf, 0).unwrap_or(0)).unwrap_or(usize::MAX);
        let end = buf.len().min(list.saturating_add(8));
        let luns = buf
            .get(8..end)
            .unwrap_or(&[])
            .chunks_exact(8)
            .filter_map(|c| be::u64_at(c, 0))
            .collect();
        Ok(Self { luns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::data::truncate_to_allocation_length;

    #[test]
    fn bytes_and_truncation() {
        let d = ReportLunsData {
            luns: vec![0, 0x0001_0000_0000_0000, 0x4001_0000_0000_0000],
        };
        let mut b = d.to_bytes();
        assert_eq!(b.len(), 32);
        assert_eq!(&b[..8], &[0, 0, 0, 24, 0, 0, 0, 0]);
        assert_eq!(&b[16..24], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[24..32], &[0x40, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ReportLunsData::parse(&b), Ok(d));
        // An initiator that allocated 16 bytes sees the full list length.
        truncate_to_allocation_length(&mut b, 16);
        assert_eq!(ReportLunsData::full_length(&b), Some(32));
        assert_eq!(ReportLunsData::parse(&b).unwrap().luns, vec![0]);
        assert!(ReportLunsData::parse(&b[..7]).is_err());
    }

    #[test]
    fn empty_list() {
        let b = ReportLunsData::default().to_bytes();
        assert_eq!(b, [0; 8]);
        assert_eq!(ReportLunsData::parse(&b).unwrap().luns, Vec::<u64>::new());
    }
}
