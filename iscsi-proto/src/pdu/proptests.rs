//! Property tests over every PDU type: what is emitted parses back equal,
//! and no byte sequence makes the parser or the decoder panic.

use super::*;
use crate::codec::{Decoder, Direction, Encoder, Framing};
use crate::scsi::ScsiStatus;
use crate::{CmdSn, DataSn, Itt, Lun, R2tSn, StatSn, Ttt};
use bytes::BytesMut;
use proptest::prelude::*;

fn lun() -> impl Strategy<Value = Lun> {
    any::<[u8; 8]>().prop_map(Lun)
}

fn residual() -> impl Strategy<Value = Residual> {
    prop_oneof![
        Just(Residual::None),
        any::<u32>().prop_map(Residual::Overflow),
        any::<u32>().prop_map(Residual::Underflow)
    ]
}

fn stage() -> impl Strategy<Value = Stage> {
    (0u8..4).prop_map(Stage)
}

fn initiator_header() -> impl Strategy<Value = Header> {
    prop_oneof![
        (
            any::<bool>(),
            lun(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(i, lun, itt, ttt, c, e)| {
                Header::NopOut(NopOut {
                    immediate: i,
                    lun,
                    itt: Itt(itt),
                    ttt: Ttt(ttt),
                    cmd_sn: CmdSn(c),
                    exp_stat_sn: StatSn(e),
                })
            }),
        (
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0u8..8,
                lun()
            ),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<[u8; 16]>()
            ),
            (
                proptest::collection::vec(any::<u8>(), 0..=244),
                proptest::option::of(any::<u32>())
            ),
        )
            .prop_map(|((i, f, r, w, attr, lun), (itt, len, c, e, cdb), (ext, bidi))| {
                Header::ScsiCommand(ScsiCommand {
                    immediate: i,
                    final_: f,
                    read: r,
                    write: w,
                    attr: TaskAttribute(attr),
                    lun,
                    itt: Itt(itt),
                    expected_len: len,
                    cmd_sn: CmdSn(c),
                    exp_stat_sn: StatSn(e),
                    cdb,
                    ext_cdb: ext.into(),
                    bidi_read_len: bidi,
                })
            }),
        (any::<bool>(), 0u8..0x80, lun(), any::<[u32; 6]>()).prop_map(|(i, f, lun, v)| {
            Header::TaskMgmtRequest(TaskMgmtRequest {
                immediate: i,
                function: TaskFunction(f),
                lun,
                itt: Itt(v[0]),
                referenced_task_tag: Itt(v[1]),
                cmd_sn: CmdSn(v[2]),
                exp_stat_sn: StatSn(v[3]),
                ref_cmd_sn: CmdSn(v[4]),
                exp_data_sn: DataSn(v[5]),
            })
        }),
        (
            any::<(bool, bool)>(),
            stage(),
            stage(),
            any::<(u8, u8)>(),
            any::<[u8; 6]>(),
            any::<(u16, u16)>(),
            any::<[u32; 3]>()
        )
            .prop_map(|((t, c), csg, nsg, (vmax, vmin), isid, (tsih, cid), v)| {
                Header::LoginRequest(LoginRequest {
                    transit: t,
                    cont: c,
                    csg,
                    nsg,
                    version_max: vmax,
                    version_min: vmin,
                    isid: Isid(isid),
                    tsih: Tsih(tsih),
                    itt: Itt(v[0]),
                    cid: Cid(cid),
                    cmd_sn: CmdSn(v[1]),
                    exp_stat_sn: StatSn(v[2]),
                })
            }),
        (
            any::<bool>(),
            prop_oneof![Just((true, false)), Just((false, true)), Just((false, false))],
            lun(),
            any::<[u32; 4]>()
        )
            .prop_map(|(i, (f, c), lun, v)| {
                Header::TextRequest(TextRequest {
                    immediate: i,
                    final_: f,
                    cont: c,
                    lun,
                    itt: Itt(v[0]),
                    ttt: Ttt(v[1]),
                    cmd_sn: CmdSn(v[2]),
                    exp_stat_sn: StatSn(v[3]),
                })
            }),
        (any::<bool>(), lun(), any::<[u32; 5]>()).prop_map(|(f, lun, v)| {
            Header::DataOut(DataOut {
                final_: f,
                lun,
                itt: Itt(v[0]),
                ttt: Ttt(v[1]),
                exp_stat_sn: StatSn(v[2]),
                data_sn: DataSn(v[3]),
                buffer_offset: v[4],
            })
        }),
        (any::<bool>(), 0u8..0x80, any::<u16>(), any::<[u32; 3]>()).prop_map(|(i, r, cid, v)| {
            Header::LogoutRequest(LogoutRequest {
                immediate: i,
                reason: LogoutReason(r),
                itt: Itt(v[0]),
                cid: Cid(cid),
                cmd_sn: CmdSn(v[1]),
                exp_stat_sn: StatSn(v[2]),
            })
        }),
        (0u8..0x10, lun(), any::<[u32; 5]>()).prop_map(|(k, lun, v)| {
            Header::Snack(Snack {
                kind: SnackType(k),
                lun,
                itt: Itt(v[0]),
                ttt_or_snack_tag: v[1],
                exp_stat_sn: StatSn(v[2]),
                beg_run: v[3],
                run_length: v[4],
            })
        }),
    ]
}

fn target_header() -> impl Strategy<Value = Header> {
    prop_oneof![
        (lun(), any::<[u32; 5]>()).prop_map(|(lun, v)| {
            Header::NopIn(NopIn {
                lun,
                itt: Itt(v[0]),
                ttt: Ttt(v[1]),
                stat_sn: StatSn(v[2]),
                exp_cmd_sn: CmdSn(v[3]),
                max_cmd_sn: CmdSn(v[4]),
            })
        }),
        (any::<(u8, u8)>(), residual(), residual(), any::<[u32; 6]>()).prop_map(|((r, s), res, bidi, v)| {
            Header::ScsiResponse(ScsiResponse {
                response: ServiceResponse(r),
                status: ScsiStatus(s),
                residual: res,
                bidi_read_residual: bidi,
                itt: Itt(v[0]),
                snack_tag: v[1],
                stat_sn: StatSn(v[2]),
                exp_cmd_sn: CmdSn(v[3]),
                max_cmd_sn: CmdSn(v[4]),
                exp_data_sn: DataSn(v[5]),
            })
        }),
        (any::<u8>(), any::<[u32; 4]>()).prop_map(|(r, v)| {
            Header::TaskMgmtResponse(TaskMgmtResponse {
                response: TmfResponse(r),
                itt: Itt(v[0]),
                stat_sn: StatSn(v[1]),
                exp_cmd_sn: CmdSn(v[2]),
                max_cmd_sn: CmdSn(v[3]),
            })
        }),
        (
            any::<(bool, bool)>(),
            stage(),
            stage(),
            any::<(u8, u8)>(),
            any::<[u8; 6]>(),
            any::<u16>(),
            any::<[u32; 4]>(),
            any::<(u8, u8)>()
        )
            .prop_map(|((t, c), csg, nsg, (vmax, vact), isid, tsih, v, (class, detail))| {
                Header::LoginResponse(LoginResponse {
                    transit: t,
                    cont: c,
                    csg,
                    nsg,
                    version_max: vmax,
                    version_active: vact,
                    isid: Isid(isid),
                    tsih: Tsih(tsih),
                    itt: Itt(v[0]),
                    stat_sn: StatSn(v[1]),
                    exp_cmd_sn: CmdSn(v[2]),
                    max_cmd_sn: CmdSn(v[3]),
                    status: LoginStatus { class, detail },
                })
            }),
        (
            prop_oneof![Just((true, false)), Just((false, true)), Just((false, false))],
            lun(),
            any::<[u32; 5]>()
        )
            .prop_map(|((f, c), lun, v)| {
                Header::TextResponse(TextResponse {
                    final_: f,
                    cont: c,
                    lun,
                    itt: Itt(v[0]),
                    ttt: Ttt(v[1]),
                    stat_sn: StatSn(v[2]),
                    exp_cmd_sn: CmdSn(v[3]),
                    max_cmd_sn: CmdSn(v[4]),
                })
            }),
        (
            any::<(bool, bool)>(),
            proptest::option::of(any::<u8>()),
            residual(),
            lun(),
            any::<[u32; 7]>()
        )
            .prop_map(|((f, a), status, res, lun, v)| {
                Header::DataIn(DataIn {
                    final_: f || status.is_some(),
                    ack: a,
                    status: status.map(ScsiStatus),
                    residual: res,
                    lun,
                    itt: Itt(v[0]),
                    ttt: Ttt(v[1]),
                    stat_sn: StatSn(v[2]),
                    exp_cmd_sn: CmdSn(v[3]),
                    max_cmd_sn: CmdSn(v[4]),
                    data_sn: DataSn(v[5]),
                    buffer_offset: v[6],
                })
            }),
        (any::<u8>(), any::<[u32; 4]>(), any::<(u16, u16)>()).prop_map(|(r, v, (w, t))| {
            Header::LogoutResponse(LogoutResponse {
                response: LogoutResponseCode(r),
                itt: Itt(v[0]),
                stat_sn: StatSn(v[1]),
                exp_cmd_sn: CmdSn(v[2]),
                max_cmd_sn: CmdSn(v[3]),
                time2wait: w,
                time2retain: t,
            })
        }),
        (lun(), any::<[u32; 7]>(), 1u32..).prop_map(|(lun, v, len)| {
            Header::R2t(R2t {
                lun,
                itt: Itt(v[0]),
                ttt: Ttt(v[1]),
                stat_sn: StatSn(v[2]),
                exp_cmd_sn: CmdSn(v[3]),
                max_cmd_sn: CmdSn(v[4]),
                r2t_sn: R2tSn(v[5]),
                buffer_offset: v[6],
                desired_len: len,
            })
        }),
        (lun(), any::<[u32; 4]>(), any::<(u8, u8)>(), any::<[u16; 3]>()).prop_map(|(lun, v, (e, vc), p)| {
            Header::AsyncMessage(AsyncMessage {
                lun,
                itt: Itt(v[0]),
                stat_sn: StatSn(v[1]),
                exp_cmd_sn: CmdSn(v[2]),
                max_cmd_sn: CmdSn(v[3]),
                event: AsyncEvent(e),
                vcode: vc,
                parameter1: p[0],
                parameter2: p[1],
                parameter3: p[2],
            })
        }),
        (any::<u8>(), any::<[u32; 5]>()).prop_map(|(r, v)| {
            Header::Reject(Reject {
                reason: RejectReason(r),
                itt: Itt(v[0]),
                stat_sn: StatSn(v[1]),
                exp_cmd_sn: CmdSn(v[2]),
                max_cmd_sn: CmdSn(v[3]),
                data_sn_or_r2t_sn: v[4],
            })
        }),
    ]
}

fn framing() -> impl Strategy<Value = Framing> {
    (any::<bool>(), any::<bool>()).prop_map(|(h, d)| Framing {
        header_digest: h,
        data_digest: d,
        max_data_segment_len: 4096,
    })
}

fn round_trip(header: Header, data: Vec<u8>, framing: Framing, direction: Direction) -> Result<(), TestCaseError> {
    let pdu = Pdu::with_data(header, data);
    let mut enc = Encoder::new();
    enc.set_framing(framing);
    let mut dec = Decoder::new(direction);
    dec.set_framing(framing);
    let mut buf = BytesMut::from(&enc.to_bytes(&pdu).unwrap()[..]);
    match dec.decode(&mut buf) {
        Ok(crate::codec::Decoded::Pdu(got)) => prop_assert_eq!(got, pdu),
        other => prop_assert!(false, "decode failed: {:?}", other),
    }
    prop_assert!(buf.is_empty());
    Ok(())
}

proptest! {
    #[test]
    fn initiator_pdus_round_trip(
        header in initiator_header(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        framing in framing(),
    ) {
        round_trip(header, data, framing, Direction::FromInitiator)?;
    }

    #[test]
    fn target_pdus_round_trip(
        header in target_header(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        framing in framing(),
    ) {
        round_trip(header, data, framing, Direction::FromTarget)?;
    }

    #[test]
    fn any_bhs_parses_or_errors(bhs in any::<[u8; 48]>(), ahs in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Header::parse(&bhs, &ahs);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        framing in framing(),
        from_initiator: bool,
    ) {
        let direction = if from_initiator { Direction::FromInitiator } else { Direction::FromTarget };
        let mut dec = Decoder::new(direction);
        dec.set_framing(framing);
        let mut buf = BytesMut::from(&bytes[..]);
        // Keep decoding while PDU-scoped errors consume input.
        for _ in 0..32 {
            match dec.decode(&mut buf) {
                Ok(crate::codec::Decoded::Pdu(_)) => {}
                Ok(crate::codec::Decoded::NeedMore(n)) => {
                    prop_assert!(n > 0);
                    break;
                }
                Err(e) if e.scope() == crate::Scope::Pdu => {}
                Err(_) => break,
            }
        }
    }
}
