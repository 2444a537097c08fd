//! Login Request (RFC 7143 section 11.12) and Login Response (11.13), with the
//! session identifiers they carry: ISID, TSIH, CID, the stages and the login
//! status class/detail codes.
//!
//! The header is parsed faithfully, even when its stage bits or T/C flags are
//! inconsistent: answering those with the right login status is the login
//! state machine's job (see [`crate::login`]), not the PDU parser's.

use super::field::*;
use super::wire::{put_reserved, put_u16, put_u32, u16_at, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{CmdSn, Itt, StatSn};
use core::fmt;

mod field {
    use super::super::field::Field;
    pub(super) const TRANSIT_BIT: u8 = 0x80;
    pub(super) const CONTINUE_BIT: u8 = 0x40;
    pub(super) const CSG_SHIFT: u8 = 2;
    pub(super) const STAGE_MASK: u8 = 0x03;
    pub(super) const VERSION_MAX: usize = 2;
    /// Version-min in a request, Version-active in a response.
    pub(super) const VERSION_MIN_OR_ACTIVE: usize = 3;
    pub(super) const ISID: Field = 8..14;
    pub(super) const TSIH: Field = 14..16;
    pub(super) const CID: Field = 20..22;
    pub(super) const CMD_SN: Field = 24..28;
    pub(super) const EXP_STAT_SN: Field = 28..32;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
    pub(super) const STATUS_CLASS: usize = 36;
    pub(super) const STATUS_DETAIL: usize = 37;
}
use self::field::*;

open_enum! {
    /// A login stage (CSG/NSG, RFC 7143 11.12.3).
    pub struct Stage(u8) {
        SECURITY_NEGOTIATION = 0,
        OPERATIONAL_NEGOTIATION = 1,
        FULL_FEATURE_PHASE = 3,
    }
}

impl Stage {
    /// Whether the value names a stage (2 is reserved).
    #[must_use]
    pub const fn is_valid(self) -> bool {
        matches!(self.0, 0 | 1 | 3)
    }
}

/// Initiator Session ID (RFC 7143 11.12.5): the initiator's half of the
/// session identity, constant across the session's connections.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Isid(pub [u8; 6]);

impl Isid {
    /// An ISID of type "random" (T = 0b11, RFC 7143 11.12.5) from 22+ random
    /// bits supplied by the caller; the format bits are forced.
    #[must_use]
    pub const fn random(bytes: [u8; 6]) -> Self {
        let mut b = bytes;
        b[0] = 0xc0 | (b[0] & 0x3f);
        // Type 3 leaves A and B+C as the random qualifier, D 16 bits: all kept.
        Self(b)
    }
}

impl fmt::Debug for Isid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Isid(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Target Session Identifying Handle: chosen by the target on the leading
/// login; 0 in a request means "new session".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Tsih(pub u16);

/// Connection ID, unique within a session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Cid(pub u16);

/// Login status: class and detail (RFC 7143 11.13.5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginStatus {
    pub class: u8,
    pub detail: u8,
}

macro_rules! login_statuses {
    ($($name:ident = ($class:expr, $detail:expr), $text:expr;)*) => {
        impl LoginStatus {
            $(#[doc = $text] pub const $name: Self = Self { class: $class, detail: $detail };)*

            /// The RFC's description of this status, if it is a known one.
            #[must_use]
            pub const fn description(self) -> Option<&'static str> {
                match (self.class, self.detail) {
                    $(($class, $detail) => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

login_statuses! {
    SUCCESS = (0x00, 0x00), "Success";
    TARGET_MOVED_TEMPORARILY = (0x01, 0x01), "Target moved temporarily";
    TARGET_MOVED_PERMANENTLY = (0x01, 0x02), "Target moved permanently";
    INITIATOR_ERROR = (0x02, 0x00), "Initiator error (miscellaneous)";
    AUTHENTICATION_FAILURE = (0x02, 0x01), "Authentication failure";
    AUTHORIZATION_FAILURE = (0x02, 0x02), "Authorization failure";
    NOT_FOUND = (0x02, 0x03), "Target not found";
    TARGET_REMOVED = (0x02, 0x04), "Target removed";
    UNSUPPORTED_VERSION = (0x02, 0x05), "Unsupported version";
    TOO_MANY_CONNECTIONS = (0x02, 0x06), "Too many connections";
    MISSING_PARAMETER = (0x02, 0x07), "Missing parameter";
    CANT_INCLUDE_IN_SESSION = (0x02, 0x08), "Can't include in session";
    SESSION_TYPE_NOT_SUPPORTED = (0x02, 0x09), "Session type not supported";
    SESSION_DOES_NOT_EXIST = (0x02, 0x0a), "Session does not exist";
    INVALID_DURING_LOGIN = (0x02, 0x0b), "Invalid request type during login";
    TARGET_ERROR = (0x03, 0x00), "Target error (miscellaneous)";
    SERVICE_UNAVAILABLE = (0x03, 0x01), "Service unavailable";
    OUT_OF_RESOURCES = (0x03, 0x02), "Out of resources";
}

impl LoginStatus {
    /// Class 0: the login step succeeded.
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.class == 0
    }
}

impl fmt::Debug for LoginStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(text) => write!(f, "{text} ({:02x}/{:02x})", self.class, self.detail),
            None => write!(f, "LoginStatus({:02x}/{:02x})", self.class, self.detail),
        }
    }
}

impl fmt::Display for LoginStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn stage_flags(transit: bool, cont: bool, csg: Stage, nsg: Stage) -> u8 {
    (if transit { TRANSIT_BIT } else { 0 })
        | (if cont { CONTINUE_BIT } else { 0 })
        | ((csg.0 & STAGE_MASK) << CSG_SHIFT)
        | (nsg.0 & STAGE_MASK)
}

fn isid_at(bhs: &Bhs) -> Isid {
    let mut isid = [0u8; 6];
    isid.copy_from_slice(&bhs[ISID]);
    Isid(isid)
}

/// A Login Request PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// T: the initiator is ready to move to `nsg`.
    pub transit: bool,
    /// C: the text continues in the next PDU.
    pub cont: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: Isid,
    pub tsih: Tsih,
    pub itt: Itt,
    pub cid: Cid,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
}

impl LoginRequest {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        let flags = bhs[FLAGS];
        Ok(Self {
            transit: flags & TRANSIT_BIT != 0,
            cont: flags & CONTINUE_BIT != 0,
            csg: Stage((flags >> CSG_SHIFT) & STAGE_MASK),
            nsg: Stage(flags & STAGE_MASK),
            version_max: bhs[VERSION_MAX],
            version_min: bhs[VERSION_MIN_OR_ACTIVE],
            isid: isid_at(bhs),
            tsih: Tsih(u16_at(bhs, TSIH)),
            itt: Itt(u32_at(bhs, ITT)),
            cid: Cid(u16_at(bhs, CID)),
            cmd_sn: CmdSn(u32_at(bhs, CMD_SN)),
            exp_stat_sn: StatSn(u32_at(bhs, EXP_STAT_SN)),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        // 11.12: the I bit "is always 1" on a Login Request.
        put_reserved(bhs, &[22..24, 32..48]);
        bhs[OPCODE] = Opcode::LOGIN_REQUEST.0 | IMMEDIATE_BIT;
        bhs[FLAGS] = stage_flags(self.transit, self.cont, self.csg, self.nsg);
        bhs[VERSION_MAX] = self.version_max;
        bhs[VERSION_MIN_OR_ACTIVE] = self.version_min;
        bhs[ISID].copy_from_slice(&self.isid.0);
        put_u16(bhs, TSIH, self.tsih.0);
        put_u32(bhs, ITT, self.itt.0);
        put_u16(bhs, CID, self.cid.0);
        put_u32(bhs, CMD_SN, self.cmd_sn.0);
        put_u32(bhs, EXP_STAT_SN, self.exp_stat_sn.0);
    }
}

/// A Login Response PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: Isid,
    pub tsih: Tsih,
    pub itt: Itt,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub status: LoginStatus,
}

impl LoginResponse {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        let flags = bhs[FLAGS];
        Ok(Self {
            transit: flags & TRANSIT_BIT != 0,
            cont: flags & CONTINUE_BIT != 0,
            csg: Stage((flags >> CSG_SHIFT) & STAGE_MASK),
            nsg: Stage(flags & STAGE_MASK),
            version_max: bhs[VERSION_MAX],
            version_active: bhs[VERSION_MIN_OR_ACTIVE],
            isid: isid_at(bhs),
            tsih: Tsih(u16_at(bhs, TSIH)),
            itt: Itt(u32_at(bhs, ITT)),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
            status: LoginStatus {
                class: bhs[STATUS_CLASS],
                detail: bhs[STATUS_DETAIL],
            },
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[20..24, 38..48]);
        bhs[OPCODE] = Opcode::LOGIN_RESPONSE.0;
        bhs[FLAGS] = stage_flags(self.transit, self.cont, self.csg, self.nsg);
        bhs[VERSION_MAX] = self.version_max;
        bhs[VERSION_MIN_OR_ACTIVE] = self.version_active;
        bhs[ISID].copy_from_slice(&self.isid.0);
        put_u16(bhs, TSIH, self.tsih.0);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
        bhs[STATUS_CLASS] = self.status.class;
        bhs[STATUS_DETAIL] = self.status.detail;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn request_bytes() {
        let expected = bhs(&[
            (0, &[0x43, 0x87, 0, 0, 0, 0, 0x01, 0x00]),
            (8, &[0xc0, 1, 2, 3, 4, 5, 0, 0]),
            (16, &[0, 0, 0, 0x0a, 0, 1, 0, 0, 0, 0, 0, 0x0b, 0, 0, 0, 0x0c]),
        ]);
        let req = LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::OPERATIONAL_NEGOTIATION,
            nsg: Stage::FULL_FEATURE_PHASE,
            version_max: 0,
            version_min: 0,
            isid: Isid::random([0, 1, 2, 3, 4, 5]),
            tsih: Tsih(0),
            itt: Itt(0x0a),
            cid: Cid(1),
            cmd_sn: CmdSn(0x0b),
            exp_stat_sn: StatSn(0x0c),
        };
        assert_emits(req, 256, &expected);
    }

    #[test]
    fn response_bytes() {
        let expected = bhs(&[
            (0, &[0x23, 0x41, 0, 0]),
            (8, &[0x80, 0, 0, 1, 0, 2, 0x12, 0x34]),
            (16, &[0, 0, 0, 1]),
            (24, &[0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 2, 1]),
        ]);
        let rsp = LoginResponse {
            transit: false,
            cont: true,
            csg: Stage::SECURITY_NEGOTIATION,
            nsg: Stage::OPERATIONAL_NEGOTIATION,
            version_max: 0,
            version_active: 0,
            isid: Isid([0x80, 0, 0, 1, 0, 2]),
            tsih: Tsih(0x1234),
            itt: Itt(1),
            stat_sn: StatSn(5),
            exp_cmd_sn: CmdSn(6),
            max_cmd_sn: CmdSn(7),
            status: LoginStatus::AUTHENTICATION_FAILURE,
        };
        assert_emits(rsp, 0, &expected);
        assert_eq!(format!("{:?}", LoginStatus::NOT_FOUND), "Target not found (02/03)");
    }
}
