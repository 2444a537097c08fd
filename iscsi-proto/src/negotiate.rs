//! Operational parameter negotiation (RFC 7143 sections 6.2 and 13).
//!
//! A [`Negotiator`] is symmetric: whatever the peer sends is either an answer
//! to one of our offers (recorded) or an offer or declaration of its own
//! (answered). The key table in [`crate::keys`] drives every decision; this
//! module only applies result functions and phase rules.
//!
//! Security keys (AuthMethod, CHAP_*) are left to the login state machines,
//! which hold the credentials.

use crate::codec::Framing;
use crate::keys::{self, Combine, KeyDef, Kind, Sender, Usage, answer};
use crate::pdu::Stage;
use crate::text::{self, Pair};
use std::collections::{BTreeMap, BTreeSet};

/// Which end of the login we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Target,
}

/// Why a negotiation cannot go on. Each ends the login with "initiator
/// error" (a target) or a failed login (an initiator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// RFC 7143 6.2: "Neither the initiator nor the target should attempt to
    /// declare or negotiate a parameter more than once ... If detected by
    /// the target, this MUST result in a Login reject".
    #[error("key {0} sent twice")]
    Duplicate(String),
    #[error("invalid value {value:?} for {key}")]
    InvalidValue { key: String, value: String },
    /// The peer answered one of our offers with a value the result function
    /// cannot produce (e.g. a larger number for a Min key).
    #[error("answer {value:?} for {key} is inconsistent with our offer {offer:?}")]
    InconsistentAnswer { key: String, offer: String, value: String },
    #[error(transparent)]
    Text(#[from] text::TextError),
}

/// Whether the session is a discovery or a normal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionType {
    Discovery,
    #[default]
    Normal,
}

impl SessionType {
    /// The key's value for this type.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Discovery => "Discovery",
            Self::Normal => "Normal",
        }
    }

    /// Parse the `SessionType` key's value.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "Discovery" => Some(Self::Discovery),
            "Normal" => Some(Self::Normal),
            _ => None,
        }
    }
}

/// What one side asks for. As an originator these are offered; as a
/// responder they bound what is accepted (a Min key's value is a ceiling, a
/// Max key's a floor; for lists, the values supported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    /// Supported digests, most preferred first (`CRC32C`, `None`).
    pub header_digest: Vec<String>,
    pub data_digest: Vec<String>,
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_outstanding_r2t: u16,
    pub max_connections: u16,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub error_recovery_level: u8,
}

impl Default for Preferences {
    /// Values that favour throughput on a LAN: large segments and bursts,
    /// immediate and unsolicited data, several R2Ts in flight, no digests
    /// unless the peer wants them. Data stays in order and recovery at
    /// level 0, which is what this implementation supports.
    fn default() -> Self {
        Self {
            header_digest: vec!["None".into(), "CRC32C".into()],
            data_digest: vec!["None".into(), "CRC32C".into()],
            max_recv_data_segment_length: 1 << 20,
            max_burst_length: 16 * 1024 * 1024 - 1,
            first_burst_length: 1 << 20,
            initial_r2t: false,
            immediate_data: true,
            max_outstanding_r2t: 8,
            max_connections: 1,
            default_time2wait: 2,
            default_time2retain: 0,
            error_recovery_level: 0,
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

impl Preferences {
    /// The operational keys and their values, in the order offered.
    fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HeaderDigest", self.header_digest.join(",")),
            ("DataDigest", self.data_digest.join(",")),
            ("MaxConnections", self.max_connections.to_string()),
            ("InitialR2T", yes_no(self.initial_r2t).into()),
            ("ImmediateData", yes_no(self.immediate_data).into()),
            (
                "MaxRecvDataSegmentLength",
                self.max_recv_data_segment_length.to_string(),
            ),
            ("MaxBurstLength", self.max_burst_length.to_string()),
            (
                "FirstBurstLength",
                self.first_burst_length.min(self.max_burst_length).to_string(),
            ),
            ("DefaultTime2Wait", self.default_time2wait.to_string()),
            ("DefaultTime2Retain", self.default_time2retain.to_string()),
            ("MaxOutstandingR2T", self.max_outstanding_r2t.to_string()),
            ("DataPDUInOrder", "Yes".into()),
            ("DataSequenceInOrder", "Yes".into()),
            ("ErrorRecoveryLevel", self.error_recovery_level.to_string()),
        ]
    }
}

/// Session-wide results (RFC 7143 section 13, scope SW).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub session_type: SessionType,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_burst_length: u32,
    /// Never larger than `max_burst_length` (RFC 7143 13.14).
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

/// Per-connection results (scope CO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionParams {
    pub header_digest: bool,
    pub data_digest: bool,
    /// The largest data segment we accept (our declaration).
    pub max_recv_data_segment_length: u32,
    /// The largest data segment we may send (the peer's declaration).
    pub max_send_data_segment_length: u32,
}

impl ConnectionParams {
    /// Framing for our decoder.
    #[must_use]
    pub fn receive_framing(&self) -> Framing {
        Framing {
            header_digest: self.header_digest,
            data_digest: self.data_digest,
            max_data_segment_len: self.max_recv_data_segment_length,
        }
    }

    /// Framing for our encoder.
    #[must_use]
    pub fn send_framing(&self) -> Framing {
        Framing {
            header_digest: self.header_digest,
            data_digest: self.data_digest,
            max_data_segment_len: self.max_send_data_segment_length,
        }
    }
}

/// Runs one side of a negotiation.
#[derive(Debug, Clone)]
pub struct Negotiator {
    role: Role,
    leading: bool,
    session_type: SessionType,
    local: BTreeMap<&'static str, String>,
    agreed: BTreeMap<&'static str, String>,
    offered: BTreeMap<&'static str, String>,
    received: BTreeSet<String>,
    peer_declared: BTreeMap<&'static str, String>,
}

impl Negotiator {
    /// A negotiator for `role` on a leading (first) connection or not.
    #[must_use]
    pub fn new(role: Role, leading: bool, prefs: &Preferences) -> Self {
        Self {
            role,
            leading,
            session_type: SessionType::Normal,
            local: prefs.values().into_iter().collect(),
            agreed: BTreeMap::new(),
            offered: BTreeMap::new(),
            received: BTreeSet::new(),
            peer_declared: BTreeMap::new(),
        }
    }

    /// Set the session type once it is known; keys irrelevant to discovery
    /// are then answered "Irrelevant" and not offered.
    pub fn set_session_type(&mut self, session_type: SessionType) {
        self.session_type = session_type;
    }

    /// A declarative value the peer sent (names, aliases, tags...).
    #[must_use]
    pub fn peer_value(&self, key: &str) -> Option<&str> {
        self.peer_declared.get(key).map(String::as_str)
    }

    /// Whether any of our offers still waits for its answer.
    #[must_use]
    pub fn awaiting_answers(&self) -> bool {
        !self.offered.is_empty()
    }

    /// Whether the peer has sent `key` in this negotiation.
    #[must_use]
    pub fn peer_sent(&self, key: &str) -> bool {
        self.received.contains(key)
    }

    fn relevant(&self, def: &KeyDef) -> bool {
        !(def.irrelevant_in_discovery && self.session_type == SessionType::Discovery)
            && (self.leading || def.usage != Usage::LeadingOnly)
    }

    fn ours_to_send(&self, def: &KeyDef) -> bool {
        match def.sender {
            Sender::Both => true,
            Sender::Initiator => self.role == Role::Initiator,
            Sender::Target => self.role == Role::Target,
        }
    }

    /// Take the peer's operational pairs (security keys already removed)
    /// received in `stage`, and return our answers.
    pub fn receive(&mut self, pairs: &[Pair], stage: Stage) -> Result<Vec<Pair>, NegotiationError> {
        let mut replies = Vec::new();
        for pair in pairs {
            if !self.received.insert(pair.key.clone()) {
                return Err(NegotiationError::Duplicate(pair.key.clone()));
            }
            if let Some(reply) = self.receive_one(pair, stage)? {
                replies.push(Pair::new(pair.key.clone(), reply));
            }
        }
        Ok(replies)
    }

    fn receive_one(&mut self, pair: &Pair, stage: Stage) -> Result<Option<String>, NegotiationError> {
        let Some(def) = keys::lookup(&pair.key) else {
            return Ok(Some(answer::NOT_UNDERSTOOD.into()));
        };
        let invalid = || NegotiationError::InvalidValue {
            key: pair.key.clone(),
            value: pair.value.clone(),
        };
        if pair.value.len() > def.max_len {
            return Err(invalid());
        }
        if let Some(offer) = self.offered.remove(def.name) {
            self.record_answer(def, &offer, &pair.value)?;
            return Ok(None);
        }
        if matches!(
            pair.value.as_str(),
            answer::NOT_UNDERSTOOD | answer::IRRELEVANT | answer::REJECT
        ) {
            // An answer to nothing we asked: there is nothing to do with it.
            return Ok(None);
        }
        if def.obsolete() {
            return Ok(Some(answer::REJECT.into()));
        }
        let in_login = stage != Stage::FULL_FEATURE_PHASE;
        let phase_ok = match def.usage {
            Usage::FullFeatureOnly => !in_login,
            Usage::LoginOnly | Usage::LeadingOnly | Usage::SecurityOnly => in_login,
            Usage::Any => true,
        };
        let sender_ok = match def.sender {
            Sender::Both => true,
            Sender::Initiator => self.role == Role::Target,
            Sender::Target => self.role == Role::Initiator,
        };
        if !phase_ok || !sender_ok {
            return Ok(Some(answer::REJECT.into()));
        }
        if !self.relevant(def) {
            return Ok(Some(answer::IRRELEVANT.into()));
        }
        if def.combine == Combine::Declarative {
            validate(def, &pair.value).ok_or_else(invalid)?;
            self.peer_declared.insert(def.name, pair.value.clone());
            return Ok(None);
        }
        let ours = self.local.get(def.name).map(String::as_str).or(def.default);
        let Some(result) = respond(def, &pair.value, ours) else {
            return Ok(Some(answer::REJECT.into()));
        };
        if result != answer::REJECT {
            self.agreed.insert(def.name, result.clone());
        }
        Ok(Some(result))
    }

    fn record_answer(&mut self, def: &'static KeyDef, offer: &str, value: &str) -> Result<(), NegotiationError> {
        if matches!(value, answer::NOT_UNDERSTOOD | answer::IRRELEVANT | answer::REJECT) {
            // The key keeps its default (RFC 7143 6.2).
            return Ok(());
        }
        let inconsistent = || NegotiationError::InconsistentAnswer {
            key: def.name.into(),
            offer: offer.into(),
            value: value.into(),
        };
        let consistent = match (def.kind, def.combine) {
            (Kind::Number { min, max }, Combine::Min | Combine::Max) => {
                let (o, v) = (text::parse_number(offer), text::parse_number(value));
                match (o, v) {
                    (Some(o), Some(v)) if (min..=max).contains(&v) => {
                        if def.combine == Combine::Min {
                            v <= o
                        } else {
                            v >= o
                        }
                    }
                    _ => false,
                }
            }
            (Kind::Boolean, Combine::Or) => value == "Yes" || (value == "No" && offer == "No"),
            (Kind::Boolean, Combine::And) => value == "No" || (value == "Yes" && offer == "Yes"),
            (_, Combine::ListChoice) => offer.split(',').any(|o| o == value),
            _ => validate(def, value).is_some(),
        };
        if !consistent {
            return Err(inconsistent());
        }
        self.agreed.insert(def.name, value.into());
        Ok(())
    }

    /// Our offers and declarations for `stage` that have not been made yet.
    /// A target offers nothing of its own except MaxRecvDataSegmentLength,
    /// which it declares; it answers what the initiator offers.
    pub fn offers(&mut self, stage: Stage) -> Vec<Pair> {
        if stage != Stage::OPERATIONAL_NEGOTIATION {
            return Vec::new();
        }
        let mut out = Vec::new();
        let local: Vec<(&'static str, String)> = self.local.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (name, value) in local {
            let Some(def) = keys::lookup(name) else { continue };
            let declarative = def.combine == Combine::Declarative;
            // A negotiated key the peer offered first was answered, not
            // offered; a declaration is ours to make whatever the peer said.
            let done = self.agreed.contains_key(name)
                || self.offered.contains_key(name)
                || (!declarative && self.peer_sent(name));
            if done || !self.relevant(def) || !self.ours_to_send(def) {
                continue;
            }
            if self.role == Role::Target && !declarative {
                continue;
            }
            if declarative {
                self.agreed.insert(name, value.clone());
            } else {
                self.offered.insert(name, value.clone());
            }
            out.push(Pair::new(name, value));
        }
        // Order by the key table so offers read like the RFC's list.
        out.sort_by_key(|p| keys::KEYS.iter().position(|k| k.name == p.key));
        out
    }

    /// Our own declaration of `name`, if we made one.
    fn declared(&self, name: &str) -> Option<&str> {
        self.agreed.get(name).map(String::as_str)
    }

    /// The negotiated parameters. A key whose offer the peer never answered
    /// keeps its default: the peer cannot have agreed to anything else.
    #[must_use]
    pub fn finish(&self) -> (SessionParams, ConnectionParams) {
        let value = |name: &str| -> &str {
            self.agreed
                .get(name)
                .map(String::as_str)
                .or_else(|| keys::lookup(name).and_then(|k| k.default))
                .unwrap_or_default()
        };
        let num = |name: &str| text::parse_number(value(name)).unwrap_or_default();
        let yes = |name: &str| value(name) == "Yes";
        let small = |name: &str| u16::try_from(num(name)).unwrap_or(u16::MAX);
        let len = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let max_burst_length = len(num("MaxBurstLength"));
        let session = SessionParams {
            session_type: self.session_type,
            max_connections: small("MaxConnections"),
            initial_r2t: yes("InitialR2T"),
            immediate_data: yes("ImmediateData"),
            max_burst_length,
            first_burst_length: len(num("FirstBurstLength")).min(max_burst_length),
            default_time2wait: small("DefaultTime2Wait"),
            default_time2retain: small("DefaultTime2Retain"),
            max_outstanding_r2t: small("MaxOutstandingR2T"),
            data_pdu_in_order: yes("DataPDUInOrder"),
            data_sequence_in_order: yes("DataSequenceInOrder"),
            error_recovery_level: u8::try_from(num("ErrorRecoveryLevel")).unwrap_or(u8::MAX),
        };
        let default_segment = crate::codec::DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH;
        let declared_len = |v: Option<&str>| v.and_then(text::parse_number).map_or(default_segment, len);
        let conn = ConnectionParams {
            header_digest: value("HeaderDigest") == "CRC32C",
            data_digest: value("DataDigest") == "CRC32C",
            max_recv_data_segment_length: declared_len(self.declared("MaxRecvDataSegmentLength")),
            max_send_data_segment_length: declared_len(self.peer_value("MaxRecvDataSegmentLength")),
        };
        (session, conn)
    }
}

/// Check a value against its key's kind; `Some(())` when acceptable.
fn validate(def: &KeyDef, value: &str) -> Option<()> {
    let ok = match def.kind {
        Kind::Number { min, max } => text::parse_number(value).is_some_and(|n| (min..=max).contains(&n)),
        Kind::Boolean => matches!(value, "Yes" | "No"),
        Kind::List { .. } => !value.is_empty(),
        Kind::Enumeration { choices } => choices.contains(&value),
        Kind::Text => !value.is_empty(),
        Kind::Binary => text::decode_binary(value).is_ok(),
        Kind::Obsolete => true,
    };
    ok.then_some(())
}

/// The responder's answer to an offer of `offered`, given our own value.
/// `None` when the offer is malformed (answered "Reject").
fn respond(def: &KeyDef, offered: &str, ours: Option<&str>) -> Option<String> {
    match (def.kind, def.combine) {
        (Kind::Number { min, max }, Combine::Min | Combine::Max) => {
            let theirs = text::parse_number(offered).filter(|n| (min..=max).contains(n))?;
            let ours = ours.and_then(text::parse_number).unwrap_or(theirs);
            let result = if def.combine == Combine::Min {
                theirs.min(ours)
            } else {
                theirs.max(ours)
            };
            Some(result.to_string())
        }
        (Kind::Boolean, Combine::Or | Combine::And) => {
            let theirs = match offered {
                "Yes" => true,
                "No" => false,
                _ => return None,
            };
            let ours = ours.map_or(theirs, |v| v == "Yes");
            let result = if def.combine == Combine::Or {
                theirs || ours
            } else {
                theirs && ours
            };
            Some(yes_no(result).into())
        }
        (Kind::List { choices }, Combine::ListChoice) => {
            // RFC 7143 6.2.1: the responder picks the first value of the
            // originator's list that it supports; "Reject" if none.
            let supported: Vec<&str> = ours.map_or_else(|| choices.to_vec(), |v| v.split(',').collect());
            let chosen = offered
                .split(',')
                .find(|v| choices.contains(v) && supported.contains(v));
            Some(chosen.unwrap_or(answer::REJECT).into())
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "negotiate_tests.rs"]
mod tests;
