//! `target-agent serve` limits: pings that keep idle sessions honest, dead
//! initiators dropped, logins that never finish cut off, session and
//! connection limits, one initiator at a time with `--exclusive`.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::TargetAgent;
use integration_tests::initiator::Session;
use iscsi_proto::login::{InitiatorConfig, LoginError};
use iscsi_proto::pdu::{Isid, LoginStatus};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tempfile::NamedTempFile;

const IQN: &str = "iqn.2024-01.test.agent:limits";

fn backing() -> NamedTempFile {
    let file = NamedTempFile::new().unwrap();
    file.as_file().set_len(8 << 20).unwrap();
    file
}

fn config(isid: u8) -> InitiatorConfig {
    config_as("iqn.2024-01.test.agent:initiator", isid)
}

fn config_as(initiator: &str, isid: u8) -> InitiatorConfig {
    InitiatorConfig::new(initiator, Some(IQN.into()), Isid::random([isid; 6]))
}

/// Log in, retrying for a few seconds while the target still counts an
/// ended session or connection.
fn login_soon(agent: &TargetAgent, config: InitiatorConfig) -> Session {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Session::login(&agent.addr(), config.clone()) {
            Ok(Ok(session)) => return session,
            Ok(Err(_)) | Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(Err(e)) => panic!("login still refused: {e}"),
            Err(e) => panic!("login failed: {e}"),
        }
    }
}

/// Wait until the peer closes `stream`; how long it took.
fn closed_after(mut stream: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) => panic!("still open after {:?}: {e}", start.elapsed()),
        }
    }
}

#[test]
fn idle_sessions_are_pinged_and_pings_are_answered() {
    let disk = backing();
    let agent = TargetAgent::start_with(disk.path(), IQN, &["--nop-interval", "1", "--nop-timeout", "2"]);
    let mut session = Session::login(&agent.addr(), config(1)).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // Reading a response also reads (and answers) the pings that came first.
    assert_eq!(&session.ping(b"x").unwrap()[..], b"x");
    assert!(session.pings_answered >= 1, "no NOP-In ping in 2.5 s of silence");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        &session.ping(b"y").unwrap()[..],
        b"y",
        "answering pings keeps the session alive"
    );
    session.logout().unwrap();
}

#[test]
fn an_initiator_that_stops_answering_is_dropped() {
    let disk = backing();
    let agent = TargetAgent::start_with(disk.path(), IQN, &["--nop-interval", "1", "--nop-timeout", "1"]);
    let session = Session::login(&agent.addr(), config(2)).unwrap().unwrap();
    // Never read again: the pings go unanswered.
    let stream = session.into_stream();
    let took = closed_after(stream, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "dropped after {took:?}");
    // The target still serves others.
    Session::login(&agent.addr(), config(3))
        .unwrap()
        .unwrap()
        .logout()
        .unwrap();
}

#[test]
fn a_login_that_never_finishes_is_cut_off() {
    let disk = backing();
    let agent = TargetAgent::start_with(disk.path(), IQN, &["--login-timeout", "1"]);
    let silent = TcpStream::connect(agent.addr()).unwrap();
    let took = closed_after(silent, Duration::from_secs(10));
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
}

#[test]
fn sessions_beyond_the_limit_are_refused() {
    let disk = backing();
    let agent = TargetAgent::start_with(disk.path(), IQN, &["--max-sessions", "2"]);
    let a = Session::login(&agent.addr(), config(4)).unwrap().unwrap();
    let b = Session::login(&agent.addr(), config(5)).unwrap().unwrap();
    match Session::login(&agent.addr(), config(6)).unwrap() {
        Err(LoginError::Refused { status, .. }) => assert_eq!(status, LoginStatus::OUT_OF_RESOURCES),
        other => panic!("a third session must be refused: {:?}", other.map(|s| s.outcome.tsih)),
    }
    a.logout().unwrap();
    // A slot is free again once a session has ended.
    login_soon(&agent, config(7)).logout().unwrap();
    b.logout().unwrap();
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let disk = backing();
    let agent = TargetAgent::start_with(disk.path(), IQN, &["--max-connections", "3", "--login-timeout", "30"]);
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(agent.addr()).unwrap()).collect();
    // Accepted, then closed at once: no login can start on it.
    let extra = TcpStream::connect(agent.addr()).unwrap();
    let took = closed_after(extra, Duration::from_secs(10));
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    drop(held);
    login_soon(&agent, config(8)).logout().unwrap();
}

#[test]
fn an_exclusive_target_serves_one_initiator_at_a_time() {
    let disk = backing();
    let agent = TargetAgent::start_with(disk.path(), IQN, &["--exclusive"]);
    let owner = "iqn.2024-01.test.agent:conductor";
    let other = "iqn.2024-01.test.agent:intruder";
    let first = Session::login(&agent.addr(), config_as(owner, 9)).unwrap().unwrap();
    // The owner may open more sessions; anyone else is refused meanwhile.
    let second = Session::login(&agent.addr(), config_as(owner, 10)).unwrap().unwrap();
    match Session::login(&agent.addr(), config_as(other, 11)).unwrap() {
        Err(LoginError::Refused { status, .. }) => assert_eq!(status, LoginStatus::AUTHORIZATION_FAILURE),
        other => panic!(
            "a second initiator must be refused: {:?}",
            other.map(|s| s.outcome.tsih)
        ),
    }
    first.logout().unwrap();
    assert!(
        matches!(
            Session::login(&agent.addr(), config_as(other, 11)).unwrap(),
            Err(LoginError::Refused { .. })
        ),
        "refused while the owner has any session"
    );
    second.logout().unwrap();
    login_soon(&agent, config_as(other, 12)).logout().unwrap();
    assert!(
        agent.output().contains("another initiator is using the disk"),
        "{}",
        agent.output()
    );
}
