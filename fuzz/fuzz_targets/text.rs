//! Arbitrary login/text key=value data through the text codec and both
//! negotiators: no panic; what parses re-encodes to itself; a target's answers
//! are themselves well-formed text an initiator can take.

#![no_main]

use iscsi_proto::negotiate::{Negotiator, Preferences, Role, SessionType};
use iscsi_proto::pdu::Stage;
use iscsi_proto::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(pairs) = text::parse(rest) else {
        return;
    };
    assert_eq!(text::parse(&text::encode(&pairs)).ok().as_ref(), Some(&pairs));
    for pair in &pairs {
        let _ = text::decode_binary(&pair.value);
        let _ = text::parse_number(&pair.value);
    }
    let stage = if flags & 1 != 0 {
        Stage::SECURITY_NEGOTIATION
    } else {
        Stage::OPERATIONAL_NEGOTIATION
    };
    let prefs = Preferences::default();
    let mut target = Negotiator::new(Role::Target, flags & 2 != 0, &prefs);
    if flags & 4 != 0 {
        target.set_session_type(SessionType::Discovery);
    }
    if let Ok(answers) = target.receive(&pairs, stage) {
        let wire = text::encode(&answers);
        let back = text::parse(&wire).expect("a negotiator's answers are valid text");
        let mut initiator = Negotiator::new(Role::Initiator, flags & 2 != 0, &prefs);
        let _ = initiator.receive(&back, stage);
        let _ = initiator.finish();
    }
    let _ = target.finish();
});
