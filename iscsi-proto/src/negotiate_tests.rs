//! Negotiation tests: a conservative initiator against our target, both
//! machines agreeing, out-of-range and duplicate offers, discovery sessions
//! and the rules on who may send which key in which phase.

use super::*;

const OP: Stage = Stage::OPERATIONAL_NEGOTIATION;

fn pairs(text: &[(&str, &str)]) -> Vec<Pair> {
    text.iter().map(|(k, v)| Pair::new(*k, *v)).collect()
}

fn reply<'a>(replies: &'a [Pair], key: &str) -> Option<&'a str> {
    replies.iter().find(|p| p.key == key).map(|p| p.value.as_str())
}

/// A conservative initiator (tgtd-like defaults) against our target.
#[test]
fn target_answers_with_result_functions() {
    let mut target = Negotiator::new(Role::Target, true, &Preferences::default());
    let offer = pairs(&[
        ("HeaderDigest", "CRC32C,None"),
        ("DataDigest", "None"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "No"),
        ("MaxBurstLength", "16776192"),
        ("FirstBurstLength", "262144"),
        ("MaxRecvDataSegmentLength", "8192"),
        ("MaxOutstandingR2T", "1"),
        ("DefaultTime2Wait", "0"),
        ("ErrorRecoveryLevel", "2"),
        ("X-com.example.Foo", "bar"),
        ("OFMarker", "No"),
    ]);
    let replies = target.receive(&offer, OP).unwrap();
    assert_eq!(reply(&replies, "HeaderDigest"), Some("CRC32C"));
    assert_eq!(reply(&replies, "DataDigest"), Some("None"));
    assert_eq!(reply(&replies, "InitialR2T"), Some("Yes"), "OR");
    assert_eq!(reply(&replies, "ImmediateData"), Some("No"), "AND");
    assert_eq!(
        reply(&replies, "MaxBurstLength"),
        Some("16776192"),
        "min with our 16 MiB - 1"
    );
    assert_eq!(reply(&replies, "DefaultTime2Wait"), Some("2"), "max");
    assert_eq!(reply(&replies, "ErrorRecoveryLevel"), Some("0"), "min");
    assert_eq!(
        reply(&replies, "MaxRecvDataSegmentLength"),
        None,
        "declarative: no answer"
    );
    assert_eq!(reply(&replies, "X-com.example.Foo"), Some("NotUnderstood"));
    assert_eq!(reply(&replies, "OFMarker"), Some("Reject"));
    let declared = target.offers(OP);
    assert_eq!(declared, pairs(&[("MaxRecvDataSegmentLength", "1048576")]));
    let (session, conn) = target.finish();
    assert!(session.initial_r2t && !session.immediate_data);
    assert_eq!(session.first_burst_length, 262_144, "min with our 1 MiB");
    assert!(conn.header_digest && !conn.data_digest);
    assert_eq!(conn.max_send_data_segment_length, 8192);
    assert_eq!(conn.max_recv_data_segment_length, 1 << 20);
}

#[test]
fn initiator_and_target_agree() {
    let mut init = Negotiator::new(Role::Initiator, true, &Preferences::default());
    let mut target = Negotiator::new(
        Role::Target,
        true,
        &Preferences {
            max_burst_length: 1 << 20,
            ..Preferences::default()
        },
    );
    let offers = init.offers(OP);
    assert!(init.awaiting_answers());
    let mut answers = target.receive(&offers, OP).unwrap();
    answers.extend(target.offers(OP));
    assert!(init.receive(&answers, OP).unwrap().is_empty());
    let (si, ci) = init.finish();
    let (st, ct) = target.finish();
    assert_eq!(si, st);
    assert_eq!(si.max_burst_length, 1 << 20);
    assert!(!si.initial_r2t && si.immediate_data);
    assert_eq!(ci.max_send_data_segment_length, ct.max_recv_data_segment_length);
    assert_eq!(ct.max_send_data_segment_length, ci.max_recv_data_segment_length);
}

#[test]
fn duplicates_and_bad_answers_fail() {
    let mut target = Negotiator::new(Role::Target, true, &Preferences::default());
    let twice = pairs(&[("InitialR2T", "Yes"), ("InitialR2T", "No")]);
    assert_eq!(
        target.receive(&twice, OP),
        Err(NegotiationError::Duplicate("InitialR2T".into()))
    );

    let mut init = Negotiator::new(Role::Initiator, true, &Preferences::default());
    init.offers(OP);
    let bigger = pairs(&[("MaxBurstLength", "99999999")]);
    assert!(matches!(
        init.receive(&bigger, OP),
        Err(NegotiationError::InconsistentAnswer { .. })
    ));
    let mut init = Negotiator::new(Role::Initiator, true, &Preferences::default());
    init.offers(OP);
    let flipped = pairs(&[("InitialR2T", "No"), ("ImmediateData", "No")]);
    assert!(
        init.receive(&flipped, OP).is_ok(),
        "OR of No may be No, AND may always be No"
    );
    assert!(init.awaiting_answers());
    let (session, _) = init.finish();
    assert!(!session.initial_r2t && !session.immediate_data);
    assert_eq!(session.max_burst_length, 262_144, "unanswered: default");
}

#[test]
fn out_of_range_offers_are_rejected() {
    let mut target = Negotiator::new(Role::Target, true, &Preferences::default());
    let offer = pairs(&[
        ("MaxBurstLength", "100"),
        ("InitialR2T", "Maybe"),
        ("HeaderDigest", "MD5"),
    ]);
    let replies = target.receive(&offer, OP).unwrap();
    assert!(replies.iter().all(|p| p.value == "Reject"), "{replies:?}");
    let (session, conn) = target.finish();
    assert_eq!(session.max_burst_length, 262_144, "default kept");
    assert!(session.initial_r2t && !conn.header_digest);
}

#[test]
fn discovery_sessions_find_some_keys_irrelevant() {
    let mut target = Negotiator::new(Role::Target, true, &Preferences::default());
    target.set_session_type(SessionType::Discovery);
    let replies = target
        .receive(&pairs(&[("InitialR2T", "No"), ("HeaderDigest", "None")]), OP)
        .unwrap();
    assert_eq!(reply(&replies, "InitialR2T"), Some("Irrelevant"));
    assert_eq!(reply(&replies, "HeaderDigest"), Some("None"));
}

#[test]
fn phase_and_sender_rules() {
    let mut target = Negotiator::new(Role::Target, false, &Preferences::default());
    let replies = target
        .receive(
            &pairs(&[("MaxBurstLength", "4096"), ("SendTargets", "All"), ("TargetAlias", "x")]),
            OP,
        )
        .unwrap();
    assert_eq!(
        reply(&replies, "MaxBurstLength"),
        Some("Irrelevant"),
        "LO on a non-leading connection"
    );
    assert_eq!(reply(&replies, "SendTargets"), Some("Reject"), "FFPO during login");
    assert_eq!(
        reply(&replies, "TargetAlias"),
        Some("Reject"),
        "a target key from an initiator"
    );
}
