//! A target login fed a sequence of arbitrary Login PDUs, and the text codec
//! and negotiator fed arbitrary text: no panic, and every step yields a
//! response that encodes within the login segment limit.

#![no_main]

use iscsi_proto::codec::Encoder;
use iscsi_proto::login::{
    Credentials, TargetAuth, TargetConfig, TargetEntry, TargetLogin, TargetLoginParams, TargetStep,
};
use iscsi_proto::negotiate::{Negotiator, Preferences, Role};
use iscsi_proto::pdu::{Cid, Isid, LoginRequest, Pdu, Stage, Tsih};
use iscsi_proto::{CmdSn, Itt, StatSn, text};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let auth = if flags & 1 != 0 {
        TargetAuth {
            chap: Some(Credentials::new("user", "secret-secret")),
            mutual: Some(Credentials::new("target", "other-secret")),
        }
    } else {
        TargetAuth::default()
    };
    let config = Arc::new(TargetConfig::new(vec![TargetEntry {
        name: "iqn.x:t".into(),
        alias: None,
        auth,
    }]));
    let params = TargetLoginParams {
        tsih: Tsih(1),
        stat_sn: StatSn(0),
        window: 8,
        nonce: [7; 64],
    };
    let mut login = TargetLogin::new(config, params);
    let encoder = Encoder::new();

    // Each chunk: 1 flag byte (T, C, CSG, NSG) then text up to the next 0xff.
    for chunk in rest.split(|&b| b == 0xff).take(16) {
        let Some((&bits, text)) = chunk.split_first() else {
            continue;
        };
        let req = LoginRequest {
            transit: bits & 0x80 != 0,
            cont: bits & 0x40 != 0,
            csg: Stage((bits >> 2) & 3),
            nsg: Stage(bits & 3),
            version_max: 0,
            version_min: bits >> 7,
            isid: Isid([0x80, 0, 0, 0, 0, 1]),
            tsih: Tsih(0),
            itt: Itt(1),
            cid: Cid(0),
            cmd_sn: CmdSn(1),
            exp_stat_sn: StatSn(0),
        };
        let step = login.step(&Pdu::with_data(req, text.to_vec()));
        let (pdu, end) = match step {
            TargetStep::Continue(pdu) => (pdu, false),
            TargetStep::Complete(pdu, _) | TargetStep::Fail(pdu, _) => (pdu, true),
        };
        encoder.to_bytes(&pdu).expect("login responses fit 8 KiB");
        if end {
            break;
        }
    }

    // The text codec and the negotiator on the raw bytes.
    if let Ok(pairs) = text::parse(rest) {
        let mut negotiator = Negotiator::new(Role::Target, flags & 2 != 0, &Preferences::default());
        let _ = negotiator.receive(&pairs, Stage::OPERATIONAL_NEGOTIATION);
        let _ = negotiator.finish();
    }
});
