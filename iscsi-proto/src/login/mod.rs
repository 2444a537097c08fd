//! Login (RFC 7143 sections 6 and 11.12-11.13): state machines for both ends.
//!
//! [`TargetLogin`] answers Login Requests; [`InitiatorLogin`] makes them.
//! Both consume and produce whole [`Pdu`]s, hold no IO and read no clock;
//! randomness for challenges comes in as a nonce from the caller.
//!
//! Every failure becomes a [`LoginError`], which knows the login status
//! class/detail the target sends (or the initiator received).

mod chap;
mod initiator;
mod target;

pub use chap::{ChapAlgorithm, Credentials, MIN_SECRET_LEN, ShortSecret};
pub use initiator::{InitiatorConfig, InitiatorLogin, InitiatorStep};
pub use target::{TargetAuth, TargetConfig, TargetEntry, TargetLogin, TargetLoginParams, TargetStep, refuse};

use crate::negotiate::{ConnectionParams, NegotiationError, SessionParams, SessionType};
use crate::pdu::{Cid, Isid, LoginStatus, Tsih};
use crate::text::TextError;
use crate::{CmdSn, StatSn};

/// The only iSCSI version there is (RFC 7143 11.12.4: "0x00").
pub const ISCSI_VERSION: u8 = 0x00;

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("login text: {0}")]
    Text(#[from] TextError),
    #[error("negotiation: {0}")]
    Negotiation(#[from] NegotiationError),
    #[error("missing {0} in the login")]
    MissingParameter(&'static str),
    #[error("unknown target {0:?}")]
    TargetNotFound(String),
    #[error("session type {0:?} not supported")]
    SessionTypeNotSupported(String),
    #[error("authentication failed: {0}")]
    Authentication(&'static str),
    /// One of our own CHAP secrets is too short to use (RFC 7143 9.2.1).
    #[error(transparent)]
    ShortSecret(#[from] ShortSecret),
    #[error("unsupported iSCSI version range {min:#04x}..={max:#04x}")]
    UnsupportedVersion { min: u8, max: u8 },
    #[error("invalid login request: {0}")]
    Protocol(&'static str),
    #[error("adding a connection to session {0:?} is not supported")]
    SessionDoesNotExist(Tsih),
    /// The login negotiated to its end, but the target has no room for
    /// another session (its own limit, not the login's fault).
    #[error("{0}")]
    OutOfResources(&'static str),
    /// The target cannot take the session now; the initiator may try again.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The initiator authenticated but may not use the target now.
    #[error("{0}")]
    NotAuthorized(&'static str),
    /// An initiator got a non-success status from the target.
    #[error("target refused the login: {status}{}", redirect.as_ref().map(|a| format!(" (go to {a})")).unwrap_or_default())]
    Refused {
        status: LoginStatus,
        redirect: Option<String>,
    },
}

impl LoginError {
    /// The status a target answers with (RFC 7143 11.13.5).
    #[must_use]
    pub fn status(&self) -> LoginStatus {
        match self {
            Self::Text(_) | Self::Negotiation(_) | Self::Protocol(_) => LoginStatus::INITIATOR_ERROR,
            Self::MissingParameter(_) => LoginStatus::MISSING_PARAMETER,
            Self::TargetNotFound(_) => LoginStatus::NOT_FOUND,
            Self::SessionTypeNotSupported(_) => LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
            Self::Authentication(_) => LoginStatus::AUTHENTICATION_FAILURE,
            // The target's own configuration is at fault, not the initiator.
            Self::ShortSecret(_) => LoginStatus::TARGET_ERROR,
            Self::UnsupportedVersion { .. } => LoginStatus::UNSUPPORTED_VERSION,
            Self::SessionDoesNotExist(_) => LoginStatus::SESSION_DOES_NOT_EXIST,
            Self::OutOfResources(_) => LoginStatus::OUT_OF_RESOURCES,
            Self::Unavailable(_) => LoginStatus::SERVICE_UNAVAILABLE,
            Self::NotAuthorized(_) => LoginStatus::AUTHORIZATION_FAILURE,
            Self::Refused { status, .. } => *status,
        }
    }
}

/// Everything the full feature phase needs to know about a finished login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    pub session_type: SessionType,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// The target logged in to (`None` for discovery sessions).
    pub target_name: Option<String>,
    pub isid: Isid,
    pub tsih: Tsih,
    pub cid: Cid,
    pub session: SessionParams,
    pub connection: ConnectionParams,
    /// The CmdSN of the first command (the login's CmdSN).
    pub cmd_sn: CmdSn,
    /// Target: the StatSN of the first response to send. Initiator: the
    /// ExpStatSN to acknowledge.
    pub stat_sn: StatSn,
    /// The MaxCmdSN of the final Login Response.
    pub max_cmd_sn: CmdSn,
    /// The CHAP name the initiator proved, if CHAP was used.
    pub chap_name: Option<String>,
}

/// Values of security-stage keys that the login machines handle themselves.
fn is_security_key(key: &str) -> bool {
    key == "AuthMethod" || key.starts_with("CHAP_")
}

#[cfg(test)]
mod tests;
