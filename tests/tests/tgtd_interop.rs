//! `iscsi-proto` against tgtd, the legacy ramdisk's target, on loopback:
//! discovery, login with and without CHAP, reads and writes through R2T,
//! immediate and unsolicited data, digests, NOPs, task management, logout.
//!
//! Needs root and the `tgt` package (the README's test command installs it).

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::initiator::{Completion, Session};
use integration_tests::tgtd::Tgtd;
use iscsi_proto::login::{Credentials, InitiatorConfig, LoginError};
use iscsi_proto::pdu::{Isid, LoginStatus, LogoutResponseCode, TaskFunction, TmfResponse};
use iscsi_proto::scsi::data::ReadCapacity16Data;
use iscsi_proto::scsi::{Command, ReadWrite, ScsiStatus};
use iscsi_proto::{Itt, Lun};
use std::io::Write;
use tempfile::NamedTempFile;

const IQN: &str = "iqn.2024-01.test.proto:disk";
const INITIATOR: &str = "iqn.2024-01.test.proto:initiator";
const DISK: u64 = 8 << 20;
const LUN: Lun = Lun::from_index(1);

fn backing() -> NamedTempFile {
    let file = NamedTempFile::new().unwrap();
    file.as_file().set_len(DISK).unwrap();
    file
}

fn start() -> (Tgtd, NamedTempFile) {
    let disk = backing();
    let tgtd = Tgtd::start();
    tgtd.add_target(1, IQN, disk.path());
    (tgtd, disk)
}

fn config() -> InitiatorConfig {
    InitiatorConfig::new(INITIATOR, Some(IQN.into()), Isid::random(*b"\x01\x02\x03\x04\x05\x06"))
}

fn login(tgtd: &Tgtd, config: InitiatorConfig) -> Session {
    Session::login(&tgtd.addr(), config)
        .unwrap()
        .unwrap_or_else(|e| panic!("login to tgtd failed: {e}"))
}

/// The session's first command gets the power-on UNIT ATTENTION; clear it.
fn ready(session: &mut Session) {
    for _ in 0..3 {
        if session
            .command(LUN, Command::TestUnitReady.build().as_bytes(), &[], 0)
            .unwrap()
            .status
            == ScsiStatus::GOOD
        {
            return;
        }
    }
    panic!("TEST UNIT READY never succeeded");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn write(session: &mut Session, lba: u64, data: &[u8]) -> Completion {
    let cdb = Command::Write(ReadWrite::new(lba, (data.len() / 512) as u32)).build();
    session.command(LUN, cdb.as_bytes(), data, 0).unwrap()
}

fn read(session: &mut Session, lba: u64, len: usize) -> Completion {
    let cdb = Command::Read(ReadWrite::new(lba, (len / 512) as u32)).build();
    session.command(LUN, cdb.as_bytes(), &[], len as u32).unwrap()
}

/// Writes of several sizes (immediate data, R2T, several Data-Outs per
/// burst), read back and compared, and checked against the backing file.
fn write_and_read_back(session: &mut Session, disk: &NamedTempFile) {
    let mut lba = 0u64;
    for (n, len) in [512usize, 8192, 10_240, 65_536, 300 * 1024, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, n as u8);
        let done = write(session, lba, &data);
        assert_eq!(done.status, ScsiStatus::GOOD, "write of {len} bytes: {:?}", done.sense);
        let back = read(session, lba, len);
        assert_eq!(back.status, ScsiStatus::GOOD);
        assert!(back.data == data, "read back {len} bytes at LBA {lba} differ");
        let on_disk = std::fs::read(disk.path()).unwrap();
        let at = (lba * 512) as usize;
        assert!(on_disk[at..at + len] == data[..], "backing file differs at LBA {lba}");
        lba += (len / 512) as u64;
    }
}

#[test]
fn discovery_lists_the_target() {
    let (tgtd, _disk) = start();
    let mut session = Session::login(
        &tgtd.addr(),
        InitiatorConfig::new(INITIATOR, None, Isid::random([9; 6])),
    )
    .unwrap()
    .unwrap();
    let targets = session.send_targets().unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].name, IQN);
    assert_eq!(targets[0].addresses, vec![format!("127.0.0.1:{},1", tgtd.port)]);
    assert_eq!(session.logout().unwrap(), LogoutResponseCode::CLOSED);
}

#[test]
fn full_session_with_tgtd_defaults() {
    let (tgtd, disk) = start();
    let mut session = login(&tgtd, config());
    // tgtd insists on InitialR2T=Yes and 8 KiB segments: we must comply.
    let negotiated = &session.outcome;
    assert!(negotiated.session.initial_r2t && negotiated.session.immediate_data);
    assert_eq!(negotiated.connection.max_send_data_segment_length, 8192);
    ready(&mut session);

    let inquiry = session
        .command(
            LUN,
            Command::Inquiry {
                evpd: false,
                page_code: 0,
                allocation_length: 96,
            }
            .build()
            .as_bytes(),
            &[],
            96,
        )
        .unwrap();
    assert_eq!(inquiry.status, ScsiStatus::GOOD);
    assert_eq!(&inquiry.data[8..12], b"IET ", "tgtd's vendor id");

    let cap = session
        .command(
            LUN,
            Command::ReadCapacity16 { allocation_length: 32 }.build().as_bytes(),
            &[],
            32,
        )
        .unwrap();
    let cap = ReadCapacity16Data::parse(&cap.data).unwrap();
    assert_eq!((cap.returned_lba + 1) * u64::from(cap.block_length), DISK);

    write_and_read_back(&mut session, &disk);

    let beyond = read(&mut session, DISK / 512, 512);
    assert_eq!(beyond.status, ScsiStatus::CHECK_CONDITION, "read past the end");
    assert!(beyond.sense.is_some());

    assert_eq!(&session.ping(b"are you there").unwrap()[..], b"are you there");
    let tmf = session
        .task_management(TaskFunction::ABORT_TASK, LUN, Itt(0x7777))
        .unwrap();
    assert_eq!(tmf, TmfResponse::TASK_DOES_NOT_EXIST);
    assert_eq!(session.logout().unwrap(), LogoutResponseCode::CLOSED);
}

#[test]
fn unsolicited_data_when_tgtd_allows_it() {
    let (tgtd, disk) = start();
    tgtd.set_param(1, "InitialR2T", "No");
    tgtd.set_param(1, "MaxRecvDataSegmentLength", "65536");
    let mut session = login(&tgtd, config());
    assert!(!session.outcome.session.initial_r2t);
    ready(&mut session);
    write_and_read_back(&mut session, &disk);
    session.logout().unwrap();
}

#[test]
fn header_and_data_digests() {
    let (tgtd, disk) = start();
    tgtd.set_param(1, "HeaderDigest", "CRC32C");
    tgtd.set_param(1, "DataDigest", "CRC32C");
    let mut session = login(&tgtd, config());
    let conn = session.outcome.connection;
    assert!(conn.header_digest && conn.data_digest, "{conn:?}");
    ready(&mut session);
    write_and_read_back(&mut session, &disk);
    session.logout().unwrap();
}

#[test]
fn chap_one_way_and_mutual() {
    let (tgtd, disk) = start();
    tgtd.add_account(1, "conductor", "secret-of-12chars", false);
    let mut chap = config();
    chap.chap = Some(Credentials::new("conductor", "secret-of-12chars"));
    let mut session = login(&tgtd, chap.clone());
    assert_eq!(session.outcome.chap_name.as_deref(), Some("conductor"));
    ready(&mut session);
    write_and_read_back(&mut session, &disk);
    session.logout().unwrap();

    let mut wrong = chap.clone();
    wrong.chap = Some(Credentials::new("conductor", "not-the-secret"));
    match Session::login(&tgtd.addr(), wrong).unwrap() {
        Err(LoginError::Refused { status, .. }) => assert_eq!(status, LoginStatus::AUTHENTICATION_FAILURE),
        other => panic!("a wrong secret must be refused: {other:?}"),
    }
    let mut none = config();
    none.chap = None;
    assert!(
        Session::login(&tgtd.addr(), none).unwrap().is_err(),
        "CHAP is required once an account is bound"
    );

    tgtd.add_account(1, "disk-target", "target-secret-99", true);
    let mut mutual = chap.clone();
    mutual.mutual = Some(Credentials::new("disk-target", "target-secret-99"));
    login(&tgtd, mutual.clone()).logout().unwrap();

    mutual.mutual = Some(Credentials::new("disk-target", "impostor-secret"));
    assert!(
        matches!(
            Session::login(&tgtd.addr(), mutual).unwrap(),
            Err(LoginError::Authentication(_))
        ),
        "a target that cannot prove the secret is refused by us"
    );
}

#[test]
fn unknown_target_is_not_found() {
    let (tgtd, _disk) = start();
    let mut config = config();
    config.target_name = Some("iqn.2024-01.test.proto:nothing".into());
    match Session::login(&tgtd.addr(), config).unwrap() {
        Err(LoginError::Refused { status, .. }) => assert_eq!(status, LoginStatus::NOT_FOUND),
        other => panic!("expected target not found: {other:?}"),
    }
}

#[test]
fn target_pings_are_answered() {
    let (tgtd, _disk) = start();
    tgtd.set_param(1, "nop_interval", "1");
    tgtd.set_param(1, "nop_count", "3");
    let mut session = login(&tgtd, config());
    ready(&mut session);
    let started = std::time::Instant::now();
    while session.pings_answered < 2 {
        assert!(started.elapsed().as_secs() < 15, "tgtd sent no NOP-In pings");
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Pings are read (and answered) while waiting for a response.
        assert_eq!(session.ping(b"").unwrap().len(), 0);
    }
    ready(&mut session);
    session.logout().unwrap();
    std::io::stderr().flush().unwrap();
}
