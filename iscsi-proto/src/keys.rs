//! Every text key of RFC 7143 (sections 12 and 13), declared once.
//!
//! A key's entry says what values it takes, how an offer and an answer
//! combine into the result, its default, and when it may be sent. The
//! negotiation engine ([`crate::negotiate`]) reads nothing else.

/// How an offer and an answer combine (RFC 7143 section 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// The smaller of the two numbers.
    Min,
    /// The larger of the two numbers.
    Max,
    /// Boolean OR.
    Or,
    /// Boolean AND.
    And,
    /// The responder picks the first value of the offered list it supports.
    ListChoice,
    /// No negotiation: each side states its own value.
    Declarative,
}

/// What values a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A numerical value within an inclusive range.
    Number { min: u64, max: u64 },
    /// `Yes` or `No`.
    Boolean,
    /// A list of values, each from `choices` (unknown values are skipped
    /// when choosing, as RFC 7143 6.2.1 asks).
    List { choices: &'static [&'static str] },
    /// One value from a fixed set.
    Enumeration { choices: &'static [&'static str] },
    /// Free text: names, aliases, addresses.
    Text,
    /// A binary value (CHAP challenges and responses), hex or base64.
    Binary,
    /// RFC 7143 13.26 obsoleted these keys (markers); see [`KeyDef::obsolete`].
    Obsolete,
}

/// When a key may be sent (RFC 7143 section 13 "Use").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Leading only: the leading connection's login (LO).
    LeadingOnly,
    /// Initialize only: during login (IO).
    LoginOnly,
    /// Security negotiation stage only.
    SecurityOnly,
    /// Full feature phase only, in Text requests (FFPO).
    FullFeatureOnly,
    /// Any time (ALL).
    Any,
}

/// Whose value it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Initiator,
    Target,
    Both,
}

/// Session-wide (SW) or per connection (CO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    Session,
    Connection,
}

/// The declaration of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDef {
    pub name: &'static str,
    pub kind: Kind,
    pub combine: Combine,
    /// The value in force when the key is never negotiated.
    pub default: Option<&'static str>,
    pub scope: KeyScope,
    pub usage: Usage,
    pub sender: Sender,
    /// "Irrelevant when: SessionType=Discovery".
    pub irrelevant_in_discovery: bool,
    /// Longest value accepted, in bytes.
    pub max_len: usize,
}

impl KeyDef {
    /// RFC 7143 13.26: IFMarker and OFMarker SHOULD be answered "Reject";
    /// OFMarkInt and IFMarkInt MUST be.
    #[must_use]
    pub fn obsolete(&self) -> bool {
        self.kind == Kind::Obsolete
    }
}

const MAX_SEGMENT: u64 = (1 << 24) - 1;
/// RFC 7143 4.2.7.1: iSCSI names are at most 223 bytes.
const NAME_LEN: usize = 223;
const SIMPLE: usize = crate::text::MAX_SIMPLE_VALUE_LEN;
/// CHAP values: up to 1024 binary bytes, hex encoded (RFC 7143 12.1.3).
const BINARY_LEN: usize = 2 + 2 * 1024;

const DIGESTS: &[&str] = &["CRC32C", "None"];
const AUTH_METHODS: &[&str] = &["KRB5", "SRP", "SPKM1", "SPKM2", "CHAP", "None"];
const TASK_REPORTING: &[&str] = &["RFC3720", "ResponseFence", "FastAbort"];
/// CHAP_A: 5 = MD5 (RFC 1994); 6 = SHA1, 7 = SHA-256 and 8 = SHA3-256 from
/// the IANA registry that later RFCs fill; we implement 5 and 7.
const CHAP_ALGORITHMS: &[&str] = &["5", "7"];

macro_rules! key {
    ($name:expr, $kind:expr, $combine:expr, $default:expr, $scope:ident, $usage:ident, $sender:ident, $irr:expr, $len:expr) => {
        KeyDef {
            name: $name,
            kind: $kind,
            combine: $combine,
            default: $default,
            scope: KeyScope::$scope,
            usage: Usage::$usage,
            sender: Sender::$sender,
            irrelevant_in_discovery: $irr,
            max_len: $len,
        }
    };
}

use Combine::*;

/// The table. Order follows RFC 7143 sections 12 and 13.
pub static KEYS: &[KeyDef] = &[
    key!(
        "AuthMethod",
        Kind::List { choices: AUTH_METHODS },
        ListChoice,
        Some("None"),
        Connection,
        SecurityOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "CHAP_A",
        Kind::List {
            choices: CHAP_ALGORITHMS
        },
        ListChoice,
        None,
        Connection,
        SecurityOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "CHAP_I",
        Kind::Number { min: 0, max: 255 },
        Declarative,
        None,
        Connection,
        SecurityOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "CHAP_C",
        Kind::Binary,
        Declarative,
        None,
        Connection,
        SecurityOnly,
        Both,
        false,
        BINARY_LEN
    ),
    key!(
        "CHAP_N",
        Kind::Text,
        Declarative,
        None,
        Connection,
        SecurityOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "CHAP_R",
        Kind::Binary,
        Declarative,
        None,
        Connection,
        SecurityOnly,
        Both,
        false,
        BINARY_LEN
    ),
    key!(
        "HeaderDigest",
        Kind::List { choices: DIGESTS },
        ListChoice,
        Some("None"),
        Connection,
        LoginOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "DataDigest",
        Kind::List { choices: DIGESTS },
        ListChoice,
        Some("None"),
        Connection,
        LoginOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "MaxConnections",
        Kind::Number { min: 1, max: 65535 },
        Min,
        Some("1"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "SendTargets",
        Kind::Text,
        Declarative,
        None,
        Session,
        FullFeatureOnly,
        Initiator,
        false,
        NAME_LEN
    ),
    key!(
        "TargetName",
        Kind::Text,
        Declarative,
        None,
        Session,
        LoginOnly,
        Both,
        false,
        NAME_LEN
    ),
    key!(
        "InitiatorName",
        Kind::Text,
        Declarative,
        None,
        Session,
        LoginOnly,
        Initiator,
        false,
        NAME_LEN
    ),
    key!(
        "TargetAlias",
        Kind::Text,
        Declarative,
        None,
        Session,
        Any,
        Target,
        false,
        SIMPLE
    ),
    key!(
        "InitiatorAlias",
        Kind::Text,
        Declarative,
        None,
        Session,
        Any,
        Initiator,
        false,
        SIMPLE
    ),
    key!(
        "TargetAddress",
        Kind::Text,
        Declarative,
        None,
        Session,
        Any,
        Target,
        false,
        SIMPLE
    ),
    key!(
        "TargetPortalGroupTag",
        Kind::Number { min: 0, max: 65535 },
        Declarative,
        None,
        Session,
        LoginOnly,
        Target,
        false,
        SIMPLE
    ),
    key!(
        "InitialR2T",
        Kind::Boolean,
        Or,
        Some("Yes"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "ImmediateData",
        Kind::Boolean,
        And,
        Some("Yes"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "MaxRecvDataSegmentLength",
        Kind::Number {
            min: 512,
            max: MAX_SEGMENT
        },
        Declarative,
        Some("8192"),
        Connection,
        Any,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "MaxBurstLength",
        Kind::Number {
            min: 512,
            max: MAX_SEGMENT
        },
        Min,
        Some("262144"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "FirstBurstLength",
        Kind::Number {
            min: 512,
            max: MAX_SEGMENT
        },
        Min,
        Some("65536"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "DefaultTime2Wait",
        Kind::Number { min: 0, max: 3600 },
        Max,
        Some("2"),
        Session,
        LeadingOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "DefaultTime2Retain",
        Kind::Number { min: 0, max: 3600 },
        Min,
        Some("20"),
        Session,
        LeadingOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "MaxOutstandingR2T",
        Kind::Number { min: 1, max: 65535 },
        Min,
        Some("1"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "DataPDUInOrder",
        Kind::Boolean,
        Or,
        Some("Yes"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "DataSequenceInOrder",
        Kind::Boolean,
        Or,
        Some("Yes"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "ErrorRecoveryLevel",
        Kind::Number { min: 0, max: 2 },
        Min,
        Some("0"),
        Session,
        LeadingOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "SessionType",
        Kind::Enumeration {
            choices: &["Discovery", "Normal"]
        },
        Declarative,
        Some("Normal"),
        Session,
        LeadingOnly,
        Initiator,
        false,
        SIMPLE
    ),
    key!(
        "TaskReporting",
        Kind::List {
            choices: TASK_REPORTING
        },
        ListChoice,
        Some("RFC3720"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "iSCSIProtocolLevel",
        Kind::Number { min: 0, max: 31 },
        Min,
        Some("1"),
        Session,
        LeadingOnly,
        Both,
        true,
        SIMPLE
    ),
    key!(
        "IFMarker",
        Kind::Obsolete,
        Declarative,
        None,
        Connection,
        LoginOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "OFMarker",
        Kind::Obsolete,
        Declarative,
        None,
        Connection,
        LoginOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "OFMarkInt",
        Kind::Obsolete,
        Declarative,
        None,
        Connection,
        LoginOnly,
        Both,
        false,
        SIMPLE
    ),
    key!(
        "IFMarkInt",
        Kind::Obsolete,
        Declarative,
        None,
        Connection,
        LoginOnly,
        Both,
        false,
        SIMPLE
    ),
];

/// The declaration of `name`, if it is a key of RFC 7143.
#[must_use]
pub fn lookup(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

/// Answers that are not values (RFC 7143 6.2).
pub mod answer {
    pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
    pub const IRRELEVANT: &str = "Irrelevant";
    pub const REJECT: &str = "Reject";
    pub const NONE: &str = "None";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, key) in KEYS.iter().enumerate() {
            assert!(crate::text::is_valid_key(key.name), "{}", key.name);
            assert!(
                KEYS[..i].iter().all(|k| k.name != key.name),
                "{} declared twice",
                key.name
            );
            if let (Kind::Number { min, max }, Some(default)) = (key.kind, key.default) {
                let d: u64 = default.parse().unwrap();
                assert!((min..=max).contains(&d), "{} default out of range", key.name);
            }
            if let (Kind::List { choices } | Kind::Enumeration { choices }, Some(default)) = (key.kind, key.default) {
                assert!(choices.contains(&default), "{} default not a choice", key.name);
            }
            let numeric = matches!(key.kind, Kind::Number { .. });
            let boolean = key.kind == Kind::Boolean;
            match key.combine {
                Min | Max => assert!(numeric, "{}", key.name),
                Or | And => assert!(boolean, "{}", key.name),
                ListChoice => assert!(matches!(key.kind, Kind::List { .. }), "{}", key.name),
                Declarative => assert!(!boolean, "{}", key.name),
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(lookup("MaxBurstLength").unwrap().default, Some("262144"));
        assert_eq!(lookup("InitialR2T").unwrap().combine, Or);
        assert_eq!(lookup("ImmediateData").unwrap().combine, And);
        assert!(lookup("OFMarkInt").unwrap().obsolete());
        assert!(lookup("X-com.example.Unknown").is_none());
    }
}
