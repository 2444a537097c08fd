//! conductor-writer's pipelined initiator against both targets: many
//! commands in flight, every write read back and found in the backing file.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use conductor_writer::initiator::Session;
use integration_tests::agent::TargetAgent;
use integration_tests::tgtd::Tgtd;
use iscsi_proto::discovery;
use iscsi_proto::login::InitiatorConfig;
use iscsi_proto::pdu::{Isid, LogoutResponseCode, TaskFunction, TmfResponse};
use iscsi_proto::scsi::{Command, ReadWrite, ScsiStatus};
use iscsi_proto::text::Pair;
use iscsi_proto::{Itt, Lun};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tempfile::NamedTempFile;

const IQN: &str = "iqn.2024-01.test.pipeline:disk";
const SIZE: u64 = 64 << 20;
const LUN: Lun = Lun::from_index(1);

fn backing() -> NamedTempFile {
    let file = NamedTempFile::new().unwrap();
    file.as_file().set_len(SIZE).unwrap();
    file
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed).to_le_bytes()[1])
        .collect()
}

async fn exercise(addr: SocketAddr, disk: &NamedTempFile) {
    let config = InitiatorConfig::new("iqn.2024-01.test.pipeline:init", None, Isid::random([3; 6]));
    let discovery_session = Session::connect(addr, config, Duration::from_secs(10)).await.unwrap();
    let records = discovery::parse_answer(
        &discovery_session
            .text(vec![Pair::new("SendTargets", "All")])
            .await
            .unwrap(),
    );
    assert_eq!(records[0].name, IQN);
    assert_eq!(discovery_session.logout().await.unwrap(), LogoutResponseCode::CLOSED);

    let config = InitiatorConfig::new("iqn.2024-01.test.pipeline:init", Some(IQN.into()), Isid::random([4; 6]));
    let session = Arc::new(Session::connect(addr, config, Duration::from_secs(10)).await.unwrap());
    session.ping().await.unwrap();
    // Clear a power-on unit attention if the target has one.
    for _ in 0..3 {
        let tur = session
            .command(LUN, Command::TestUnitReady.build().as_bytes(), Bytes::new(), 0)
            .await
            .unwrap();
        if tur.status == ScsiStatus::GOOD {
            break;
        }
    }
    const COMMANDS: u32 = 96;
    const LEN: usize = 192 * 1024;
    let blocks = (LEN / 512) as u32;
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..COMMANDS {
        let session = session.clone();
        writes.spawn(async move {
            let cdb = Command::Write(ReadWrite::new(u64::from(n * blocks), blocks)).build();
            session
                .command(LUN, cdb.as_bytes(), Bytes::from(pattern(LEN, n)), 0)
                .await
                .unwrap()
        });
    }
    while let Some(done) = writes.join_next().await {
        let done = done.unwrap();
        assert_eq!(done.status, ScsiStatus::GOOD, "{:?}", done.sense);
    }
    let mut reads = tokio::task::JoinSet::new();
    for n in 0..COMMANDS {
        let session = session.clone();
        reads.spawn(async move {
            let cdb = Command::Read(ReadWrite::new(u64::from(n * blocks), blocks)).build();
            (
                n,
                session
                    .command(LUN, cdb.as_bytes(), Bytes::new(), LEN as u32)
                    .await
                    .unwrap(),
            )
        });
    }
    while let Some(done) = reads.join_next().await {
        let (n, done) = done.unwrap();
        assert_eq!(done.status, ScsiStatus::GOOD);
        assert!(done.data[..] == pattern(LEN, n)[..], "read back of command {n} differs");
    }
    let beyond = Command::Read(ReadWrite::new(SIZE / 512, 1)).build();
    let past = session
        .command(LUN, beyond.as_bytes(), Bytes::new(), 512)
        .await
        .unwrap();
    assert_eq!(past.status, ScsiStatus::CHECK_CONDITION);
    assert!(past.sense.is_some());
    let abort = session
        .task_management(TaskFunction::ABORT_TASK, LUN, Itt(0xbeef))
        .await
        .unwrap();
    assert_eq!(abort, TmfResponse::TASK_DOES_NOT_EXIST);
    let session = Arc::into_inner(session).unwrap();
    assert_eq!(session.logout().await.unwrap(), LogoutResponseCode::CLOSED);
    let file = std::fs::read(disk.path()).unwrap();
    for n in 0..COMMANDS {
        let at = n as usize * LEN;
        assert!(
            file[at..at + LEN] == pattern(LEN, n)[..],
            "backing file differs for command {n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_against_target_agent() {
    let disk = backing();
    let agent = TargetAgent::start(disk.path(), IQN);
    exercise(agent.addr().parse().unwrap(), &disk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_against_tgtd() {
    let disk = backing();
    let tgtd = Tgtd::start();
    tgtd.add_target(1, IQN, disk.path());
    exercise(tgtd.addr().parse().unwrap(), &disk).await;
}

/// Silence while nothing is asked of the target is no sign of a dead
/// target: after a pause longer than `dead_after`, with no pings from the
/// target either, the next command runs on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pause_is_not_a_lost_connection() {
    use conductor_writer::initiator::Recovery;
    let disk = backing();
    let agent = TargetAgent::start_with(disk.path(), IQN, &["--nop-interval", "3600"]);
    let config = InitiatorConfig::new("iqn.2024-01.test.pipeline:init", Some(IQN.into()), Isid::random([5; 6]));
    let recovery = Recovery {
        within: Duration::from_secs(10),
        ping_after: Duration::from_millis(500),
        dead_after: Duration::from_secs(1),
    };
    let addr = agent.addr().parse().unwrap();
    let session = Session::connect_with(addr, config, Duration::from_secs(10), recovery)
        .await
        .unwrap();
    session.ping().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    session.ping().await.unwrap();
    assert_eq!(session.reinstatements(), 0, "the pause was taken for a lost connection");
    session.logout().await.unwrap();
}
