//! `target-agent serve` limits: pings that keep idle sessions honest, dead
//! initiators dropped, logins that never finish cut off, a session limit.

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
    InitiatorConfig::new(
        "iqn.2024-01.test.agent:initiator",
        Some(IQN.into()),
        Isid::random([isid; 6]),
    )
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Session::login(&agent.addr(), config(7)).unwrap() {
            Ok(c) => {
                c.logout().unwrap();
                break;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no slot after a logout: {e}"),
        }
    }
    b.logout().unwrap();
}
