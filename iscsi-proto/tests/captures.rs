//! Real byte streams between libiscsi and tgtd (see `testdata/README.md`):
//! every PDU decodes (digests checked), re-encodes to the same bytes, and
//! what it says makes sense (SendTargets, CHAP responses, sequence numbers).

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use iscsi_proto::codec::{Decoded, Decoder, Direction, Encoder, Framing};
use iscsi_proto::login::ChapAlgorithm;
use iscsi_proto::pdu::{Header, Opcode, Pdu, Stage};
use iscsi_proto::text::{self, Pair};
use std::collections::BTreeMap;

fn read(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One connection's PDUs.
#[derive(Debug, Default)]
struct Connection {
    pdus: Vec<Pdu>,
    digests: (bool, bool),
}

/// Digests in force per connection, from the target's login answers.
fn negotiated_digests(responses: &[u8]) -> Vec<(bool, bool)> {
    walk(responses, Direction::FromTarget, None)
        .iter()
        .map(|c| c.digests)
        .collect()
}

fn is_final_login(header: &Header) -> bool {
    match header {
        Header::LoginRequest(r) => r.transit && r.nsg == Stage::FULL_FEATURE_PHASE,
        Header::LoginResponse(r) => r.transit && r.nsg == Stage::FULL_FEATURE_PHASE,
        _ => false,
    }
}

/// Decode a whole stream, connection by connection, and check that each PDU
/// re-encodes to exactly the bytes it came from.
fn walk(stream: &[u8], direction: Direction, digests: Option<&[(bool, bool)]>) -> Vec<Connection> {
    let mut conns: Vec<Connection> = Vec::new();
    let mut buf = BytesMut::from(stream);
    let mut decoder = Decoder::new(direction);
    let mut encoder = Encoder::new();
    let mut in_ffp = true; // so the first Login starts connection 0
    while !buf.is_empty() {
        // A Login in full feature phase opens the next connection, which
        // starts without digests: switch before decoding it.
        let opcode = Opcode(buf[0] & 0x3f);
        if in_ffp && matches!(opcode, Opcode::LOGIN_REQUEST | Opcode::LOGIN_RESPONSE) {
            let login_framing = Framing {
                max_data_segment_len: 1 << 20,
                ..Framing::default()
            };
            decoder.set_framing(login_framing);
            encoder.set_framing(login_framing);
        }
        let before = buf.clone();
        let pdu = match decoder.decode(&mut buf).unwrap_or_else(|e| panic!("decode error: {e}")) {
            Decoded::Pdu(pdu) => pdu,
            Decoded::NeedMore(n) => panic!("stream ends {n} bytes short of a PDU"),
        };
        let used = before.len() - buf.len();
        let login = matches!(pdu.header, Header::LoginRequest(_) | Header::LoginResponse(_));
        if login && in_ffp {
            conns.push(Connection::default());
            in_ffp = false;
        }
        let reencoded = encoder.to_bytes(&pdu).unwrap();
        assert_eq!(
            &reencoded[..],
            &before[..used],
            "{:?} does not re-encode byte for byte",
            pdu.header
        );
        let index = conns.len().checked_sub(1).expect("stream starts with a Login");
        let conn = &mut conns[index];
        if let Header::LoginResponse(_) = pdu.header {
            for pair in text::parse(&pdu.data).unwrap() {
                match pair.key.as_str() {
                    "HeaderDigest" => conn.digests.0 = pair.value == "CRC32C",
                    "DataDigest" => conn.digests.1 = pair.value == "CRC32C",
                    _ => {}
                }
            }
        }
        if is_final_login(&pdu.header) {
            in_ffp = true;
            let (header_digest, data_digest) = match digests {
                Some(d) => d[index],
                None => conn.digests,
            };
            let framing = Framing {
                header_digest,
                data_digest,
                max_data_segment_len: 1 << 20,
            };
            decoder.set_framing(framing);
            encoder.set_framing(framing);
        }
        conn.pdus.push(pdu);
    }
    conns
}

fn scenario(name: &str) -> (Vec<Connection>, Vec<Connection>) {
    let t2i = read(&format!("{name}.t2i.bin"));
    let digests = negotiated_digests(&t2i);
    let requests = walk(
        &read(&format!("{name}.i2t.bin")),
        Direction::FromInitiator,
        Some(&digests),
    );
    let responses = walk(&t2i, Direction::FromTarget, None);
    assert_eq!(requests.len(), responses.len(), "{name}: connections");
    (requests, responses)
}

fn opcodes(conns: &[Connection]) -> BTreeMap<u8, usize> {
    let mut counts = BTreeMap::new();
    for pdu in conns.iter().flat_map(|c| &c.pdus) {
        *counts.entry(pdu.header.opcode().0).or_default() += 1;
    }
    counts
}

fn login_pairs(conn: &Connection) -> Vec<Vec<Pair>> {
    conn.pdus
        .iter()
        .filter(|p| matches!(p.header, Header::LoginRequest(_) | Header::LoginResponse(_)))
        .map(|p| text::parse(&p.data).unwrap())
        .collect()
}

fn value<'a>(pairs: &'a [Pair], key: &str) -> Option<&'a str> {
    pairs.iter().find(|p| p.key == key).map(|p| p.value.as_str())
}

#[test]
fn every_scenario_decodes_and_reencodes_exactly() {
    for name in [
        "discovery",
        "inquiry",
        "digests",
        "chap",
        "chap_mutual",
        "write_read",
        "task_mgmt",
        "nop",
        "data_digest",
    ] {
        let (requests, responses) = scenario(name);
        let pdus: usize = requests.iter().chain(&responses).map(|c| c.pdus.len()).sum();
        assert!(pdus > 8, "{name}: only {pdus} PDUs");
    }
}

#[test]
fn all_pdu_types_of_a_session_are_covered() {
    let mut seen = BTreeMap::new();
    for name in ["discovery", "write_read", "task_mgmt", "nop", "data_digest"] {
        let (requests, responses) = scenario(name);
        seen.extend(opcodes(&requests));
        seen.extend(opcodes(&responses));
    }
    for op in [
        Opcode::NOP_OUT,
        Opcode::SCSI_COMMAND,
        Opcode::TASK_MGMT_REQUEST,
        Opcode::LOGIN_REQUEST,
        Opcode::TEXT_REQUEST,
        Opcode::DATA_OUT,
        Opcode::LOGOUT_REQUEST,
        Opcode::NOP_IN,
        Opcode::SCSI_RESPONSE,
        Opcode::TASK_MGMT_RESPONSE,
        Opcode::LOGIN_RESPONSE,
        Opcode::TEXT_RESPONSE,
        Opcode::DATA_IN,
        Opcode::LOGOUT_RESPONSE,
        Opcode::R2T,
    ] {
        assert!(seen.contains_key(&op.0), "no {op:?} in the captures");
    }
}

#[test]
fn digests_are_in_force_where_negotiated() {
    let (requests, _) = scenario("digests");
    assert!(
        requests.iter().all(|c| c.digests == (false, false)),
        "requests never carry the answer"
    );
    let t2i = read("digests.t2i.bin");
    assert!(negotiated_digests(&t2i).iter().all(|&d| d == (true, false)));
    let both = negotiated_digests(&read("data_digest.t2i.bin"));
    assert_eq!(both, vec![(true, true)]);
}

#[test]
fn send_targets_lists_the_target() {
    let (requests, responses) = scenario("discovery");
    let text_request = requests[0]
        .pdus
        .iter()
        .find(|p| p.header.opcode() == Opcode::TEXT_REQUEST)
        .unwrap();
    assert_eq!(
        text::parse(&text_request.data).unwrap(),
        vec![Pair::new("SendTargets", "All")]
    );
    let text_response = responses[0]
        .pdus
        .iter()
        .find(|p| p.header.opcode() == Opcode::TEXT_RESPONSE)
        .unwrap();
    let records = iscsi_proto::discovery::parse_answer(&text::parse(&text_response.data).unwrap());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, "iqn.2024-01.test:capture");
    assert_eq!(records[0].addresses, vec!["127.0.0.1:3270,1".to_string()]);
}

/// Recompute libiscsi's and tgtd's CHAP responses with the known secrets.
fn check_chap(name: &str, mutual: bool) {
    let (requests, responses) = scenario(name);
    let sent = login_pairs(&requests[0]);
    let got = login_pairs(&responses[0]);
    let challenge_pdu = got
        .iter()
        .find(|p| value(p, "CHAP_C").is_some())
        .expect("target challenge");
    assert_eq!(value(challenge_pdu, "CHAP_A"), Some("5"));
    let id = u8::try_from(text::parse_number(value(challenge_pdu, "CHAP_I").unwrap()).unwrap()).unwrap();
    let challenge = text::decode_binary(value(challenge_pdu, "CHAP_C").unwrap()).unwrap();
    let answer = sent
        .iter()
        .find(|p| value(p, "CHAP_R").is_some())
        .expect("initiator response");
    assert_eq!(value(answer, "CHAP_N"), Some("capuser"));
    let response = text::decode_binary(value(answer, "CHAP_R").unwrap()).unwrap();
    assert!(ChapAlgorithm::Md5.verify(id, b"capsecret1234", &challenge, &response));
    assert!(!ChapAlgorithm::Md5.verify(id, b"wrongsecret", &challenge, &response));
    if mutual {
        let their_id = u8::try_from(text::parse_number(value(answer, "CHAP_I").unwrap()).unwrap()).unwrap();
        let their_challenge = text::decode_binary(value(answer, "CHAP_C").unwrap()).unwrap();
        let proof = got
            .iter()
            .find(|p| value(p, "CHAP_R").is_some())
            .expect("target response");
        assert_eq!(value(proof, "CHAP_N"), Some("captarget"));
        let proof = text::decode_binary(value(proof, "CHAP_R").unwrap()).unwrap();
        assert!(ChapAlgorithm::Md5.verify(their_id, b"captsecret5678", &their_challenge, &proof));
    } else {
        assert!(value(answer, "CHAP_C").is_none());
    }
}

#[test]
fn chap_responses_verify() {
    check_chap("chap", false);
    check_chap("chap_mutual", true);
}

#[test]
fn r2t_asks_for_what_immediate_data_left_over() {
    let (requests, responses) = scenario("write_read");
    let conn = requests
        .iter()
        .zip(&responses)
        .find(|(_, r)| r.pdus.iter().any(|p| p.header.opcode() == Opcode::R2T));
    let (requests, responses) = conn.expect("a connection with an R2T");
    let Some(Header::R2t(r2t)) = responses
        .pdus
        .iter()
        .map(|p| &p.header)
        .find(|h| matches!(h, Header::R2t(_)))
    else {
        unreachable!()
    };
    let command = requests
        .pdus
        .iter()
        .find(|p| p.header.itt() == r2t.itt && p.header.opcode() == Opcode::SCSI_COMMAND);
    let command = command.expect("the R2T's command");
    let Header::ScsiCommand(cmd) = &command.header else {
        unreachable!()
    };
    assert_eq!(
        r2t.buffer_offset as usize,
        command.data.len(),
        "R2T starts after the immediate data"
    );
    assert_eq!(r2t.buffer_offset + r2t.desired_len, cmd.expected_len);
    let data_out: usize = requests
        .pdus
        .iter()
        .filter(|p| matches!(&p.header, Header::DataOut(d) if d.ttt == r2t.ttt))
        .map(|p| p.data.len())
        .sum();
    assert_eq!(data_out, r2t.desired_len as usize);
}

#[test]
fn stat_sn_advances_by_one_per_status() {
    for name in ["inquiry", "write_read", "nop"] {
        let (_, responses) = scenario(name);
        for conn in &responses {
            let mut last = None;
            for pdu in &conn.pdus {
                let stat_sn = match &pdu.header {
                    Header::ScsiResponse(r) => r.stat_sn,
                    Header::DataIn(d) if d.status.is_some() => d.stat_sn,
                    Header::LogoutResponse(r) => r.stat_sn,
                    Header::TaskMgmtResponse(r) => r.stat_sn,
                    _ => continue,
                };
                if let Some(prev) = last {
                    assert_eq!(stat_sn, iscsi_proto::StatSn::next(prev), "{name}");
                }
                last = Some(stat_sn);
            }
        }
    }
}

#[test]
fn inquiry_of_the_device_identification_page() {
    let (requests, responses) = scenario("inquiry");
    let asked = requests.iter().flat_map(|c| &c.pdus).find_map(|p| match &p.header {
        Header::ScsiCommand(cmd) if cmd.cdb[0] == 0x12 && cmd.cdb[1] & 1 == 1 && cmd.cdb[2] == 0x83 => Some(cmd.itt),
        _ => None,
    });
    let itt = asked.expect("an INQUIRY for VPD page 0x83");
    let data = responses
        .iter()
        .flat_map(|c| &c.pdus)
        .find(|p| matches!(&p.header, Header::DataIn(d) if d.itt == itt));
    let data = data.expect("its Data-In");
    assert_eq!(data.data[1], 0x83, "page code");
    let designators = iscsi_proto::scsi::data::DeviceIdentification::parse(&data.data).unwrap();
    assert!(!designators.designators.is_empty());
}
