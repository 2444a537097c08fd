//! An initiator and a target logging in to each other in memory, every PDU
//! passing through the codec as it would on the wire.

use super::*;
use crate::codec::{Decoded, Decoder, Direction, Encoder};
use crate::negotiate::Preferences;
use crate::pdu::{Header, LoginStatus, Pdu};
use bytes::BytesMut;
use std::sync::Arc;

const TARGET: &str = "iqn.2024-01.test:disk";
const INITIATOR: &str = "iqn.2024-01.test:conductor";

fn wire(pdu: &Pdu, direction: Direction) -> Pdu {
    let mut buf = BytesMut::from(&Encoder::new().to_bytes(pdu).unwrap()[..]);
    let Decoded::Pdu(out) = Decoder::new(direction).decode(&mut buf).unwrap() else {
        panic!("short PDU")
    };
    assert!(buf.is_empty());
    out
}

fn target_config(auth: TargetAuth) -> TargetConfig {
    TargetConfig::new(vec![TargetEntry {
        name: TARGET.into(),
        alias: Some("disk".into()),
        auth,
    }])
}

fn initiator_config(target: Option<&str>) -> InitiatorConfig {
    InitiatorConfig::new(INITIATOR, target.map(str::to_owned), Isid::random([1, 2, 3, 4, 5, 6]))
}

fn params() -> TargetLoginParams {
    let mut nonce = [0u8; 64];
    nonce.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 37 + 11) as u8);
    TargetLoginParams {
        tsih: Tsih(0x42),
        stat_sn: StatSn(1000),
        window: 32,
        nonce,
    }
}

/// What each side ended with.
#[derive(Debug)]
struct Ends {
    initiator: Result<LoginOutcome, LoginError>,
    target: Result<LoginOutcome, LoginError>,
    exchanges: usize,
}

fn login(init: InitiatorConfig, target: TargetConfig) -> Ends {
    login_admitting(init, target, |_| Ok(()))
}

/// A login whose target, once negotiation is done, asks `admit` whether it
/// takes the session.
fn login_admitting(
    init: InitiatorConfig,
    target: TargetConfig,
    admit: impl Fn(&LoginOutcome) -> Result<(), LoginError>,
) -> Ends {
    let mut initiator = InitiatorLogin::new(init, [0x5a; 64]);
    let mut target = TargetLogin::new(Arc::new(target), params());
    let mut request = initiator.start();
    for exchanges in 1..20 {
        let request_in = wire(&request, Direction::FromInitiator);
        let (response, target_end) = match target.step(&request_in) {
            TargetStep::Continue(rsp) => (rsp, None),
            TargetStep::Complete(rsp, outcome) => match admit(&outcome) {
                Ok(()) => (rsp, Some(Ok(*outcome))),
                Err(e) => (refuse(rsp, &e), Some(Err(e))),
            },
            TargetStep::Fail(rsp, err) => (rsp, Some(Err(err))),
        };
        match initiator.step(&wire(&response, Direction::FromTarget)) {
            InitiatorStep::Send(next) => {
                if let Some(end) = target_end {
                    panic!("target ended ({end:?}) but the initiator goes on");
                }
                request = next;
            }
            InitiatorStep::Complete(outcome) => {
                let target = target_end.expect("initiator completed before the target");
                return Ends {
                    initiator: Ok(*outcome),
                    target,
                    exchanges,
                };
            }
            InitiatorStep::Fail(err) => {
                let target = target_end.unwrap_or(Err(LoginError::Protocol("initiator gave up")));
                return Ends {
                    initiator: Err(err),
                    target,
                    exchanges,
                };
            }
        }
    }
    panic!("login did not finish");
}

fn refused_with(ends: &Ends, status: LoginStatus) {
    match &ends.initiator {
        Err(LoginError::Refused { status: got, .. }) => assert_eq!(*got, status, "{ends:?}"),
        other => panic!("initiator should be refused with {status:?}: {other:?}"),
    }
    assert_eq!(ends.target.as_ref().unwrap_err().status(), status);
}

#[test]
fn a_session_the_target_will_not_admit_is_refused_with_its_status() {
    let refusals = [
        (
            LoginError::OutOfResources("too many sessions"),
            LoginStatus::OUT_OF_RESOURCES,
        ),
        (LoginError::Unavailable("busy"), LoginStatus::SERVICE_UNAVAILABLE),
        (LoginError::NotAuthorized("in use"), LoginStatus::AUTHORIZATION_FAILURE),
    ];
    for (err, status) in refusals {
        let ends = login_admitting(
            initiator_config(Some(TARGET)),
            target_config(TargetAuth::default()),
            |_| Err(err.clone()),
        );
        refused_with(&ends, status);
    }
}

#[test]
fn no_authentication() {
    let ends = login(initiator_config(Some(TARGET)), target_config(TargetAuth::default()));
    let (i, t) = (ends.initiator.unwrap(), ends.target.unwrap());
    assert_eq!(ends.exchanges, 2, "security then operational");
    assert_eq!(i.tsih, Tsih(0x42));
    assert_eq!(t.initiator_name, INITIATOR);
    assert_eq!(t.target_name.as_deref(), Some(TARGET));
    assert_eq!(i.session, t.session);
    assert!(!i.session.initial_r2t && i.session.immediate_data);
    assert_eq!(
        i.connection.max_send_data_segment_length,
        t.connection.max_recv_data_segment_length
    );
    assert_eq!(
        i.stat_sn, t.stat_sn,
        "initiator's ExpStatSN is the target's next StatSN"
    );
    assert_eq!(t.stat_sn, StatSn(1002));
    assert_eq!(i.max_cmd_sn, i.cmd_sn.add(31));
    assert_eq!(t.chap_name, None);
}

fn chap_target(mutual: bool) -> TargetConfig {
    target_config(TargetAuth {
        chap: Some(Credentials::new("conductor", "initiator-secret")),
        mutual: mutual.then(|| Credentials::new("disk-target", "target-secret-1")),
    })
}

#[test]
fn one_way_chap_md5_and_sha256() {
    for algorithms in [
        vec![ChapAlgorithm::Md5],
        vec![ChapAlgorithm::Sha256, ChapAlgorithm::Md5],
    ] {
        let mut init = initiator_config(Some(TARGET));
        init.chap = Some(Credentials::new("conductor", "initiator-secret"));
        init.chap_algorithms = algorithms;
        let ends = login(init, chap_target(false));
        let t = ends.target.unwrap();
        assert!(ends.initiator.is_ok());
        assert_eq!(t.chap_name.as_deref(), Some("conductor"));
        assert_eq!(ends.exchanges, 4, "AuthMethod, CHAP_A, CHAP_R, operational");
    }
}

#[test]
fn mutual_chap() {
    let mut init = initiator_config(Some(TARGET));
    init.chap = Some(Credentials::new("conductor", "initiator-secret"));
    init.mutual = Some(Credentials::new("disk-target", "target-secret-1"));
    let ends = login(init, chap_target(true));
    assert!(ends.initiator.is_ok() && ends.target.is_ok(), "{ends:?}");
}

#[test]
fn mutual_chap_with_an_impostor_target_fails_on_the_initiator() {
    let mut init = initiator_config(Some(TARGET));
    init.chap = Some(Credentials::new("conductor", "initiator-secret"));
    init.mutual = Some(Credentials::new("disk-target", "the-real-secret"));
    let ends = login(init, chap_target(true));
    assert!(matches!(ends.initiator, Err(LoginError::Authentication(_))), "{ends:?}");
}

#[test]
fn wrong_secret_is_an_authentication_failure() {
    let mut init = initiator_config(Some(TARGET));
    init.chap = Some(Credentials::new("conductor", "not-the-secret"));
    refused_with(&login(init, chap_target(false)), LoginStatus::AUTHENTICATION_FAILURE);
}

#[test]
fn missing_credentials_is_an_authentication_failure() {
    refused_with(
        &login(initiator_config(Some(TARGET)), chap_target(false)),
        LoginStatus::AUTHENTICATION_FAILURE,
    );
}

#[test]
fn mutual_chap_unconfigured_on_the_target_fails() {
    let mut init = initiator_config(Some(TARGET));
    init.chap = Some(Credentials::new("conductor", "initiator-secret"));
    init.mutual = Some(Credentials::new("disk-target", "target-secret-1"));
    refused_with(&login(init, chap_target(false)), LoginStatus::AUTHENTICATION_FAILURE);
}

#[test]
fn a_short_secret_is_refused_by_either_end() {
    // The initiator will not answer with an 11-byte secret, nor check the target's answer with one.
    for (chap, mutual) in [("initiator-1", None), ("initiator-secret", Some("target-sec1"))] {
        let mut init = initiator_config(Some(TARGET));
        init.chap = Some(Credentials::new("conductor", chap));
        init.mutual = mutual.map(|m| Credentials::new("disk-target", m));
        let ends = login(init, chap_target(mutual.is_some()));
        assert!(
            matches!(&ends.initiator, Err(LoginError::ShortSecret(s)) if s.len == 11),
            "{ends:?}"
        );
    }
    // The target will not check an initiator's answer against one, nor answer with one.
    for (chap, mutual) in [("initiator-1", None), ("initiator-secret", Some("target-sec1"))] {
        let short = target_config(TargetAuth {
            chap: Some(Credentials::new("conductor", chap)),
            mutual: mutual.map(|m| Credentials::new("disk-target", m)),
        });
        let mut init = initiator_config(Some(TARGET));
        init.chap = Some(Credentials::new("conductor", "initiator-secret"));
        refused_with(&login(init, short), LoginStatus::TARGET_ERROR);
    }
}

#[test]
fn unknown_target_is_not_found() {
    let ends = login(
        initiator_config(Some("iqn.2024-01.test:other")),
        target_config(TargetAuth::default()),
    );
    refused_with(&ends, LoginStatus::NOT_FOUND);
}

#[test]
fn discovery_session() {
    let ends = login(initiator_config(None), target_config(TargetAuth::default()));
    let t = ends.target.unwrap();
    assert_eq!(t.session_type, SessionType::Discovery);
    assert_eq!(t.target_name, None);
    let mut config = target_config(TargetAuth::default());
    config.allow_discovery = false;
    refused_with(
        &login(initiator_config(None), config),
        LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
    );
}

#[test]
fn conservative_initiator_gets_what_it_insists_on() {
    let mut init = initiator_config(Some(TARGET));
    init.prefs = Preferences {
        initial_r2t: true,
        immediate_data: false,
        max_recv_data_segment_length: 8192,
        max_burst_length: 65536,
        first_burst_length: 65536,
        max_outstanding_r2t: 1,
        header_digest: vec!["CRC32C".into()],
        data_digest: vec!["CRC32C".into()],
        ..Preferences::default()
    };
    let ends = login(init, target_config(TargetAuth::default()));
    let t = ends.target.unwrap();
    assert!(t.session.initial_r2t && !t.session.immediate_data);
    assert_eq!((t.session.max_burst_length, t.session.max_outstanding_r2t), (65536, 1));
    assert!(t.connection.header_digest && t.connection.data_digest);
    assert_eq!(t.connection.max_send_data_segment_length, 8192);
}

fn first_request() -> Pdu {
    InitiatorLogin::new(initiator_config(Some(TARGET)), [0; 64]).start()
}

fn target_answer(pdu: &Pdu) -> (LoginStatus, Option<LoginError>) {
    let mut target = TargetLogin::new(Arc::new(target_config(TargetAuth::default())), params());
    let (rsp, err) = match target.step(pdu) {
        TargetStep::Continue(rsp) | TargetStep::Complete(rsp, _) => (rsp, None),
        TargetStep::Fail(rsp, err) => (rsp, Some(err)),
    };
    let Header::LoginResponse(rsp) = rsp.header else {
        panic!("not a login response")
    };
    (rsp.status, err)
}

#[test]
fn malformed_first_requests_get_the_right_status() {
    let mut pdu = first_request();
    let Header::LoginRequest(req) = &mut pdu.header else {
        unreachable!()
    };
    req.version_min = 2;
    req.version_max = 3;
    assert_eq!(target_answer(&pdu).0, LoginStatus::UNSUPPORTED_VERSION);

    let mut pdu = first_request();
    pdu.data = crate::text::encode(&[crate::text::Pair::new("SessionType", "Normal")]);
    assert_eq!(target_answer(&pdu).0, LoginStatus::MISSING_PARAMETER);

    let mut pdu = first_request();
    pdu.data = crate::text::encode(&[
        crate::text::Pair::new("InitiatorName", INITIATOR),
        crate::text::Pair::new("SessionType", "Weird"),
    ]);
    assert_eq!(target_answer(&pdu).0, LoginStatus::SESSION_TYPE_NOT_SUPPORTED);

    let mut pdu = first_request();
    pdu.data = bytes::Bytes::from_static(b"InitiatorName\0");
    assert_eq!(target_answer(&pdu).0, LoginStatus::INITIATOR_ERROR);

    let mut pdu = first_request();
    let Header::LoginRequest(req) = &mut pdu.header else {
        unreachable!()
    };
    req.tsih = Tsih(7);
    assert_eq!(target_answer(&pdu).0, LoginStatus::SESSION_DOES_NOT_EXIST);

    let mut pdu = first_request();
    let Header::LoginRequest(req) = &mut pdu.header else {
        unreachable!()
    };
    req.cont = true;
    assert_eq!(target_answer(&pdu).0, LoginStatus::INITIATOR_ERROR, "T and C together");

    let nop = Pdu::new(crate::pdu::NopOut {
        immediate: true,
        lun: crate::Lun::ZERO,
        itt: crate::Itt(1),
        ttt: crate::Ttt::RESERVED,
        cmd_sn: CmdSn(0),
        exp_stat_sn: StatSn(0),
    });
    assert_eq!(target_answer(&nop).0, LoginStatus::INVALID_DURING_LOGIN);
}

#[test]
fn continued_login_text_is_reassembled() {
    let pdu = first_request();
    let Header::LoginRequest(req) = &pdu.header else {
        unreachable!()
    };
    let mut target = TargetLogin::new(Arc::new(target_config(TargetAuth::default())), params());
    let (head, tail) = pdu.data.split_at(10);
    let mut part = req.clone();
    part.transit = false;
    part.cont = true;
    let TargetStep::Continue(rsp) = target.step(&Pdu::with_data(part, head.to_vec())) else {
        panic!()
    };
    assert!(
        rsp.data.is_empty(),
        "partial text is acknowledged with an empty response"
    );
    let TargetStep::Continue(rsp) = target.step(&Pdu::with_data(req.clone(), tail.to_vec())) else {
        panic!()
    };
    let pairs = crate::text::parse(&rsp.data).unwrap();
    assert!(
        pairs.iter().any(|p| p.key == "AuthMethod" && p.value == "None"),
        "{pairs:?}"
    );
    assert!(pairs.iter().any(|p| p.key == "TargetPortalGroupTag"));
}

#[test]
fn duplicate_keys_fail_the_login() {
    let mut pdu = first_request();
    let mut data = pdu.data.to_vec();
    data.extend_from_slice(b"InitiatorName=again\0");
    pdu.data = data.into();
    let (status, err) = target_answer(&pdu);
    assert_eq!(status, LoginStatus::INITIATOR_ERROR);
    assert!(matches!(err, Some(LoginError::Negotiation(_))), "{err:?}");
}
