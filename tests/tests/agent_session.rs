//! `target-agent serve` driven by our blocking initiator: every login path,
//! every way write data can travel, digests, CHAP, session reinstatement,
//! task management with unit attentions, several sessions at once, and
//! malformed input. Data is always compared with the backing file.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::TargetAgent;
use integration_tests::initiator::{Completion, Session};
use iscsi_proto::login::{Credentials, InitiatorConfig, LoginError};
use iscsi_proto::negotiate::Preferences;
use iscsi_proto::pdu::{Header, Isid, LoginStatus, LogoutResponseCode, RejectReason, TaskFunction, TmfResponse};
use iscsi_proto::scsi::{AdditionalSense, Command, ReadWrite, ScsiStatus, Sense, SenseKey};
use iscsi_proto::{Itt, Lun};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tempfile::NamedTempFile;

const IQN: &str = "iqn.2024-01.test.agent:disk";
const INITIATOR: &str = "iqn.2024-01.test.agent:initiator";
const DISK: u64 = 64 << 20;
const LUN: Lun = Lun::from_index(1);

fn backing() -> NamedTempFile {
    let file = NamedTempFile::new().unwrap();
    file.as_file().set_len(DISK).unwrap();
    file
}

fn config(isid: u8) -> InitiatorConfig {
    InitiatorConfig::new(INITIATOR, Some(IQN.into()), Isid::random([isid, 2, 3, 4, 5, 6]))
}

fn login(agent: &TargetAgent, config: InitiatorConfig) -> Session {
    Session::login(&agent.addr(), config)
        .unwrap()
        .unwrap_or_else(|e| panic!("login failed: {e}\n{}", agent.output()))
}

fn refused(agent: &TargetAgent, config: InitiatorConfig) -> LoginStatus {
    match Session::login(&agent.addr(), config).unwrap() {
        Err(LoginError::Refused { status, .. }) => status,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("login should have been refused"),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn command(session: &mut Session, command: Command, write: &[u8], read: u32) -> Completion {
    session.command(LUN, command.build().as_bytes(), write, read).unwrap()
}

fn sense_of(done: &Completion) -> Sense {
    Sense::parse(done.sense.as_deref().expect("sense data")).unwrap()
}

/// Writes of many sizes at increasing LBAs, read back, flushed and compared
/// with the backing file.
fn write_read_compare(session: &mut Session, disk: &NamedTempFile, start: u64, seed: u8) {
    let mut lba = start;
    for (n, len) in [512usize, 4096, 8192, 12_800, 65_536, 262_144, 1 << 20, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, seed.wrapping_add(n as u8));
        let blocks = (len / 512) as u32;
        let done = command(session, Command::Write(ReadWrite::new(lba, blocks)), &data, 0);
        assert_eq!(done.status, ScsiStatus::GOOD, "write {len}: {:?}", done.sense);
        let back = command(session, Command::Read(ReadWrite::new(lba, blocks)), &[], len as u32);
        assert_eq!(back.status, ScsiStatus::GOOD, "read {len}: {:?}", back.sense);
        assert!(back.data == data, "read back of {len} bytes at LBA {lba} differs");
        lba += u64::from(blocks);
    }
    let sync = Command::SynchronizeCache(iscsi_proto::scsi::SyncRange {
        lba: 0,
        number_of_blocks: 0,
        immed: false,
        size: iscsi_proto::scsi::CdbSize::Ten,
    });
    assert_eq!(command(session, sync, &[], 0).status, ScsiStatus::GOOD);
    let file = std::fs::read(disk.path()).unwrap();
    let mut lba = start;
    for (n, len) in [512usize, 4096, 8192, 12_800, 65_536, 262_144, 1 << 20, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let at = (lba * 512) as usize;
        assert!(
            file[at..at + len] == pattern(len, seed.wrapping_add(n as u8))[..],
            "backing file differs at LBA {lba}"
        );
        lba += (len / 512) as u64;
    }
}

#[test]
fn discovery_lists_the_target_at_its_portal() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    let mut session = Session::login(
        &agent.addr(),
        InitiatorConfig::new(INITIATOR, None, Isid::random([1; 6])),
    )
    .unwrap()
    .unwrap();
    let targets = session.send_targets().unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].name, IQN);
    assert_eq!(targets[0].addresses, vec![format!("{},1", agent.addr())]);
    assert_eq!(session.logout().unwrap(), LogoutResponseCode::CLOSED);
    assert_eq!(
        refused(
            &agent,
            InitiatorConfig::new(
                INITIATOR,
                Some("iqn.2024-01.test.agent:nothing".into()),
                Isid::random([2; 6])
            )
        ),
        LoginStatus::NOT_FOUND
    );
}

/// Our defaults: InitialR2T=No, ImmediateData=Yes, big segments.
#[test]
fn throughput_settings_use_immediate_and_unsolicited_data() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    let mut session = login(&agent, config(1));
    let s = &session.outcome.session;
    assert!(!s.initial_r2t && s.immediate_data, "{s:?}");
    assert!(session.outcome.connection.max_send_data_segment_length >= 256 * 1024);
    write_read_compare(&mut session, &disk, 0, 1);
    session.logout().unwrap();
}

/// What a conservative initiator insists on: every byte solicited by R2T,
/// small segments and bursts, one R2T at a time.
#[test]
fn conservative_settings_use_r2t_for_everything() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    let mut config = config(2);
    config.prefs = Preferences {
        initial_r2t: true,
        immediate_data: false,
        max_recv_data_segment_length: 8192,
        max_burst_length: 65536,
        first_burst_length: 65536,
        max_outstanding_r2t: 1,
        ..Preferences::default()
    };
    let mut session = login(&agent, config);
    let s = session.outcome.session.clone();
    assert!(s.initial_r2t && !s.immediate_data);
    assert_eq!((s.max_burst_length, s.max_outstanding_r2t), (65536, 1));
    assert_eq!(
        session.outcome.connection.max_send_data_segment_length,
        1 << 20,
        "the target's own declaration"
    );
    write_read_compare(&mut session, &disk, 100, 2);
    session.logout().unwrap();
}

#[test]
fn header_and_data_digests() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    let mut config = config(3);
    config.prefs.header_digest = vec!["CRC32C".into()];
    config.prefs.data_digest = vec!["CRC32C".into()];
    let mut session = login(&agent, config);
    assert!(session.outcome.connection.header_digest && session.outcome.connection.data_digest);
    write_read_compare(&mut session, &disk, 9000, 3);
    session.logout().unwrap();
}

#[test]
fn chap_one_way_and_mutual() {
    let disk = backing();
    let agent = TargetAgent::start_with(
        disk.path(),
        IQN,
        &[
            "--chap-user",
            "conductor",
            "--chap-secret",
            "initiator-secret",
            "--mutual-chap-user",
            "node",
            "--mutual-chap-secret",
            "target-secret-1",
        ],
    );
    let mut chap = config(4);
    chap.chap = Some(Credentials::new("conductor", "initiator-secret"));
    let mut session = login(&agent, chap.clone());
    assert_eq!(
        command(&mut session, Command::TestUnitReady, &[], 0).status,
        ScsiStatus::GOOD
    );
    session.logout().unwrap();

    let mut mutual = chap.clone();
    mutual.mutual = Some(Credentials::new("node", "target-secret-1"));
    login(&agent, mutual.clone()).logout().unwrap();
    mutual.mutual = Some(Credentials::new("node", "some-other-secret"));
    assert!(matches!(
        Session::login(&agent.addr(), mutual).unwrap(),
        Err(LoginError::Authentication(_))
    ));

    let mut wrong = chap.clone();
    wrong.chap = Some(Credentials::new("conductor", "not-the-secret"));
    assert_eq!(refused(&agent, wrong), LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(
        refused(&agent, config(5)),
        LoginStatus::AUTHENTICATION_FAILURE,
        "no credentials"
    );
}

#[test]
fn a_second_login_with_the_same_isid_reinstates_the_session() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    let mut first = login(&agent, config(6));
    assert_eq!(
        command(&mut first, Command::TestUnitReady, &[], 0).status,
        ScsiStatus::GOOD
    );
    let mut second = login(&agent, config(6));
    assert_ne!(first.outcome.tsih, second.outcome.tsih);
    assert!(
        first
            .command(LUN, Command::TestUnitReady.build().as_bytes(), &[], 0)
            .is_err(),
        "the old connection is gone"
    );
    assert_eq!(
        command(&mut second, Command::TestUnitReady, &[], 0).status,
        ScsiStatus::GOOD
    );
    second.logout().unwrap();
}

#[test]
fn task_management_and_unit_attention() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    let mut a = login(&agent, config(7));
    let mut b = login(&agent, config(8));
    assert_eq!(
        a.task_management(TaskFunction::ABORT_TASK, LUN, Itt(0xdead)).unwrap(),
        TmfResponse::TASK_DOES_NOT_EXIST
    );
    assert_eq!(
        a.task_management(TaskFunction::LOGICAL_UNIT_RESET, LUN, Itt::RESERVED)
            .unwrap(),
        TmfResponse::FUNCTION_COMPLETE
    );
    for session in [&mut a, &mut b] {
        let tur = command(session, Command::TestUnitReady, &[], 0);
        assert_eq!(tur.status, ScsiStatus::CHECK_CONDITION, "every nexus sees the reset");
        let sense = sense_of(&tur);
        assert_eq!(
            (sense.key, sense.additional_sense),
            (
                SenseKey::UNIT_ATTENTION,
                AdditionalSense::BUS_DEVICE_RESET_FUNCTION_OCCURRED
            )
        );
        assert_eq!(
            command(session, Command::TestUnitReady, &[], 0).status,
            ScsiStatus::GOOD,
            "reported once"
        );
    }
    assert_eq!(
        a.task_management(TaskFunction::LOGICAL_UNIT_RESET, Lun::from_index(7), Itt::RESERVED)
            .unwrap(),
        TmfResponse::LUN_DOES_NOT_EXIST
    );
    a.logout().unwrap();
    b.logout().unwrap();
}

#[test]
fn errors_come_back_as_sense() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    let mut s = login(&agent, config(9));
    let past_end = command(&mut s, Command::Read(ReadWrite::new(DISK / 512, 1)), &[], 512);
    assert_eq!(past_end.status, ScsiStatus::CHECK_CONDITION);
    assert_eq!(sense_of(&past_end).additional_sense, AdditionalSense::LBA_OUT_OF_RANGE);
    let unknown = s.command(LUN, &[0xff, 0, 0, 0, 0, 0], &[], 0).unwrap();
    assert_eq!(
        sense_of(&unknown).additional_sense,
        AdditionalSense::INVALID_COMMAND_OPERATION_CODE
    );
    let other_lun = s
        .command(Lun::from_index(5), Command::TestUnitReady.build().as_bytes(), &[], 0)
        .unwrap();
    assert_eq!(
        sense_of(&other_lun).additional_sense,
        AdditionalSense::LOGICAL_UNIT_NOT_SUPPORTED
    );
    assert_eq!(&s.ping(b"still here").unwrap()[..], b"still here");
    s.logout().unwrap();
}

#[test]
fn sessions_run_side_by_side() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    std::thread::scope(|scope| {
        for n in 0..4u8 {
            let (agent, disk) = (&agent, &disk);
            scope.spawn(move || {
                let mut session = login(agent, config(20 + n));
                write_read_compare(&mut session, disk, u64::from(n) * 16_384, n);
                session.logout().unwrap();
            });
        }
    });
}

#[test]
fn malformed_pdus_are_rejected_and_the_session_goes_on() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    let mut s = login(&agent, config(10));
    // An opcode no initiator may send (0x1f), well framed.
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1f;
    bhs[1] = 0x80;
    let mut framed = s
        .encode(&iscsi_proto::pdu::Pdu::new(iscsi_proto::pdu::NopOut {
            immediate: true,
            lun: Lun::ZERO,
            itt: Itt(0x55),
            ttt: iscsi_proto::Ttt::RESERVED,
            cmd_sn: iscsi_proto::CmdSn(0),
            exp_stat_sn: iscsi_proto::StatSn(0),
        }))
        .to_vec();
    framed[..48].copy_from_slice(&bhs);
    // Keep any header digest valid: only meaningful without digests.
    s.send_raw(&framed).unwrap();
    let reply = s.next_pdu().unwrap();
    let Header::Reject(reject) = reply.header else {
        panic!("expected a Reject, got {:?}", reply.header)
    };
    assert_eq!(reject.reason, RejectReason::COMMAND_NOT_SUPPORTED);
    assert_eq!(&reply.data[..48], &bhs[..], "the Reject carries the offending header");
    assert_eq!(command(&mut s, Command::TestUnitReady, &[], 0).status, ScsiStatus::GOOD);
    s.logout().unwrap();

    // A peer announcing a data segment beyond any limit is cut off, and the
    // target goes on serving others.
    let mut raw = TcpStream::connect(agent.addr()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut huge = [0u8; 48];
    huge[0] = 0x43;
    huge[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    raw.write_all(&huge).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        raw.read(&mut buf).unwrap_or(0),
        0,
        "connection closed without an answer"
    );
    login(&agent, config(11)).logout().unwrap();
}
