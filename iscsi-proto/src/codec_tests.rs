//! Framing tests: incremental decoding with and without digests, limits
//! enforced before buffering, data segments split off without a copy.

use super::*;
use crate::pdu::{NopOut, ScsiCommand, TaskAttribute};
use crate::{CmdSn, Itt, Lun, StatSn, Ttt};

fn nop(data: &'static [u8]) -> Pdu {
    Pdu::with_data(
        NopOut {
            immediate: true,
            lun: Lun::ZERO,
            itt: Itt(1),
            ttt: Ttt::RESERVED,
            cmd_sn: CmdSn(1),
            exp_stat_sn: StatSn(1),
        },
        data,
    )
}

fn both(framing: Framing) -> (Encoder, Decoder) {
    let mut enc = Encoder::new();
    enc.set_framing(framing);
    let mut dec = Decoder::new(Direction::FromInitiator);
    dec.set_framing(framing);
    (enc, dec)
}

#[test]
fn incremental_decode_with_digests() {
    let framing = Framing {
        header_digest: true,
        data_digest: true,
        max_data_segment_len: 8192,
    };
    let (enc, dec) = both(framing);
    let pdu = nop(b"hello");
    let wire = enc.to_bytes(&pdu).unwrap();
    assert_eq!(wire.len(), 48 + 4 + 8 + 4);
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        match dec.decode(&mut buf).unwrap() {
            Decoded::NeedMore(n) => assert!(n >= 1 && n <= wire.len() - i, "{n} at {i}"),
            Decoded::Pdu(_) => panic!("PDU before all bytes arrived"),
        }
        buf.put_u8(*b);
    }
    let Decoded::Pdu(got) = dec.decode(&mut buf).unwrap() else {
        panic!("no PDU")
    };
    assert_eq!(got, pdu);
    assert!(buf.is_empty());
}

#[test]
fn need_more_is_exact() {
    let dec = Decoder::new(Direction::FromInitiator);
    let wire = Encoder::new().to_bytes(&nop(b"abcde")).unwrap();
    let mut buf = BytesMut::from(&wire[..10]);
    assert!(matches!(dec.decode(&mut buf), Ok(Decoded::NeedMore(38))));
    let mut buf = BytesMut::from(&wire[..50]);
    assert!(matches!(dec.decode(&mut buf), Ok(Decoded::NeedMore(6))));
}

#[test]
fn oversized_segment_is_refused_before_buffering() {
    let dec = Decoder::new(Direction::FromInitiator);
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x40;
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    let mut buf = BytesMut::from(&bhs[..]);
    let err = dec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::DataSegmentTooLong {
            len: 0xff_ffff,
            max: 8192,
            ..
        }
    ));
    assert_eq!(err.scope(), Scope::Connection);
    assert_eq!(err.reject_reason(), Some(RejectReason::PROTOCOL_ERROR));
}

#[test]
fn digest_errors_have_their_own_kind() {
    let framing = Framing {
        header_digest: true,
        data_digest: true,
        max_data_segment_len: 8192,
    };
    let (enc, dec) = both(framing);
    let wire = enc.to_bytes(&nop(b"data")).unwrap();

    let mut bad_header = BytesMut::from(&wire[..]);
    bad_header[20] ^= 1;
    let err = dec.decode(&mut bad_header).unwrap_err();
    assert!(matches!(err, DecodeError::HeaderDigest { .. }));
    assert_eq!(err.reject_reason(), None);

    let mut bad_data = BytesMut::from(&wire[..]);
    bad_data[53] ^= 1;
    bad_data.extend_from_slice(&wire);
    let err = dec.decode(&mut bad_data).unwrap_err();
    assert!(matches!(err, DecodeError::DataDigest { header: Some(_), .. }));
    assert_eq!(err.scope(), Scope::Pdu);
    assert_eq!(err.reject_reason(), Some(RejectReason::DATA_DIGEST_ERROR));
    // The damaged PDU was consumed; the next one decodes.
    assert!(matches!(dec.decode(&mut bad_data), Ok(Decoded::Pdu(_))));
}

#[test]
fn wrong_direction_is_unsupported_and_consumed() {
    let dec = Decoder::new(Direction::FromTarget);
    let mut buf = BytesMut::from(&Encoder::new().to_bytes(&nop(b"x")).unwrap()[..]);
    let err = dec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Pdu {
            error: PduError::UnsupportedOpcode(Opcode::NOP_OUT),
            ..
        }
    ));
    assert!(buf.is_empty());
}

#[test]
fn encoder_enforces_peer_limit() {
    let mut enc = Encoder::new();
    enc.set_framing(Framing {
        max_data_segment_len: 4,
        ..Framing::default()
    });
    let err = enc.to_bytes(&nop(b"hello")).unwrap_err();
    assert_eq!(err, EncodeError::DataSegmentTooLong { len: 5, max: 4 });
}

#[test]
fn data_is_split_without_copy() {
    let dec = Decoder::new(Direction::FromInitiator);
    let mut cmd = ScsiCommand {
        immediate: false,
        final_: true,
        read: false,
        write: true,
        attr: TaskAttribute::SIMPLE,
        lun: Lun::from_index(1),
        itt: Itt(2),
        expected_len: 512,
        cmd_sn: CmdSn(1),
        exp_stat_sn: StatSn(0),
        cdb: [0; 16],
        ext_cdb: Bytes::new(),
        bidi_read_len: None,
    };
    cmd.set_cdb(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    let pdu = Pdu::with_data(cmd, vec![7u8; 512]);
    let wire = Encoder::new().to_bytes(&pdu).unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let base = buf.as_ptr() as usize;
    let Decoded::Pdu(got) = dec.decode(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(
        got.data.as_ptr() as usize,
        base + 48,
        "data segment points into the receive buffer"
    );
    assert_eq!(got, pdu);
}

#[test]
fn a_head_comes_before_its_data() {
    let framing = Framing {
        header_digest: true,
        data_digest: false,
        max_data_segment_len: 8192,
    };
    let (enc, dec) = both(framing);
    let pdu = nop(b"hello");
    let wire = enc.to_bytes(&pdu).unwrap();
    assert_eq!(dec.head(&wire[..51]), None, "header digest not in yet");
    let head = dec.head(&wire[..52]).expect("a head once the header is in");
    assert_eq!(head.header, pdu.header);
    assert_eq!((head.header_len, head.data_len, head.padding), (52, 5, 3));
    assert_eq!(&wire[head.header_len..head.header_len + head.data_len], b"hello");

    let mut corrupt = wire.to_vec();
    corrupt[20] ^= 1;
    assert_eq!(dec.head(&corrupt), None, "a bad header digest is decode's to report");
    assert_eq!(dec.head(&enc.to_bytes(&nop(b"")).unwrap()), None, "no data segment");
    let from_target = Decoder::new(Direction::FromTarget);
    assert_eq!(from_target.head(&Encoder::new().to_bytes(&pdu).unwrap()), None);

    let (enc, dec) = both(Framing {
        data_digest: true,
        ..framing
    });
    assert_eq!(
        dec.head(&enc.to_bytes(&pdu).unwrap()),
        None,
        "data that must be checked"
    );
}
