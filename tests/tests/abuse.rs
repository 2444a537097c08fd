//! Network abuse of `target-agent serve`, on loopback: hundreds of
//! connections, eight at a time, each misbehaving in its own way: random
//! bytes, truncated and oversized PDUs, PDUs out of phase, CmdSNs outside
//! the window, data beyond the expected transfer length, bad header and
//! data digests, unsolicited data under InitialR2T=Yes, logins that never
//! finish. Each gets the answer RFC 7143 gives it (a Reject, a failed
//! command, a silently dropped command, or a closed connection), the
//! target's memory stays bounded throughout, and afterwards a normal
//! session writes and reads back data intact, with the rest of the disk as
//! it was.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::{TargetAgent, rss_kib};
use integration_tests::initiator::Session;
use integration_tests::{Rng, seed};
use iscsi_proto::login::InitiatorConfig;
use iscsi_proto::pdu::{
    Cid, DataOut, Header, Isid, LoginRequest, NopOut, Pdu, RejectReason, ScsiCommand, Stage, TaskAttribute, Tsih,
};
use iscsi_proto::scsi::ScsiStatus;
use iscsi_proto::{CmdSn, DataSn, Itt, Lun, StatSn, Ttt};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::NamedTempFile;

const IQN: &str = "iqn.2024-01.test.abuse:disk";
const DISK: usize = 32 << 20;
/// Abusers write (when the target lets them at all) only below this offset.
const SACRIFICE: usize = 1 << 20;
const CONNECTIONS: usize = 384;
const THREADS: usize = 8;
/// The target's resident memory must stay below this (a debug build).
const RSS_LIMIT_KIB: u64 = 160 << 10;
const LUN: Lun = Lun::from_index(1);

fn disk_pattern() -> Vec<u8> {
    (0..DISK)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect()
}

fn config(initiator: &str, isid: u64) -> InitiatorConfig {
    let b = isid.to_be_bytes();
    InitiatorConfig::new(
        initiator,
        Some(IQN.into()),
        Isid::random([b[2], b[3], b[4], b[5], b[6], b[7]]),
    )
}

/// Read until the peer closes; true if it did within `limit` (whatever it sent first).
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
}

/// A leading Login Request of the security stage that never asks to move on.
fn first_login(isid: u64) -> Pdu {
    let b = isid.to_be_bytes();
    let req = LoginRequest {
        transit: false,
        cont: false,
        csg: Stage::SECURITY_NEGOTIATION,
        nsg: Stage::SECURITY_NEGOTIATION,
        version_max: 0,
        version_min: 0,
        isid: Isid::random([b[2], b[3], b[4], b[5], b[6], b[7]]),
        tsih: Tsih(0),
        itt: Itt(1),
        cid: Cid(0),
        cmd_sn: CmdSn(1),
        exp_stat_sn: StatSn(0),
    };
    let text = format!("InitiatorName=iqn.2024-01.test.abuse:slow-{isid}\0TargetName={IQN}\0AuthMethod=None\0");
    Pdu::with_data(req, text.into_bytes())
}

fn raw_bytes(pdu: &Pdu) -> Vec<u8> {
    iscsi_proto::codec::Encoder::new().to_bytes(pdu).unwrap().to_vec()
}

/// A WRITE (10) of one block at `lba` with `data` as immediate data and
/// `expected` as its Expected Data Transfer Length.
fn write10(session: &mut Session, itt: u32, lba: u32, expected: u32, data: Vec<u8>, final_: bool) -> Vec<u8> {
    let cmd_sn = session.take_cmd_sn().unwrap();
    let mut header = ScsiCommand {
        immediate: false,
        final_,
        read: false,
        write: true,
        attr: TaskAttribute::SIMPLE,
        lun: LUN,
        itt: Itt(itt),
        expected_len: expected,
        cmd_sn,
        exp_stat_sn: session.exp_stat_sn(),
        cdb: [0; 16],
        ext_cdb: bytes::Bytes::new(),
        bidi_read_len: None,
    };
    let blocks = expected.div_ceil(512) as u16;
    let mut cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    header.set_cdb(&cdb);
    session.encode(&Pdu::with_data(header, data)).to_vec()
}

/// The target still answers this session: a ping comes back.
fn alive(session: &mut Session, what: &str) {
    let echo = session
        .ping(b"still there?")
        .unwrap_or_else(|e| panic!("{what}: the session died: {e}"));
    assert_eq!(&echo[..], b"still there?", "{what}");
}

/// The next PDU that is not a NOP-In.
fn answer(session: &mut Session, what: &str) -> Pdu {
    session.next_pdu().unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
}

fn expect_reject(session: &mut Session, reason: RejectReason, what: &str) {
    let pdu = answer(session, what);
    match pdu.header {
        Header::Reject(r) => assert_eq!(r.reason, reason, "{what}"),
        other => panic!("{what}: expected a Reject ({reason:?}), got {other:?}"),
    }
}

fn expect_failed_command(session: &mut Session, itt: u32, what: &str) {
    loop {
        let pdu = answer(session, what);
        match pdu.header {
            Header::ScsiResponse(r) if r.itt == Itt(itt) => {
                assert_ne!(r.status, ScsiStatus::GOOD, "{what}: the command must fail");
                return;
            }
            // A Reject may come first (RFC 7143 7.2: then the task ends with a failure).
            Header::Reject(_) => {}
            other => panic!("{what}: expected the command's failure, got {other:?}"),
        }
    }
}

/// One abusive connection; `n` picks the abuse.
fn abuse(addr: &str, n: usize, rng: &mut Rng) {
    let isid = 0x4000_0000 + n as u64;
    let initiator = "iqn.2024-01.test.abuse:initiator";
    let what = format!("connection {n}");
    match n % 12 {
        0 => {
            // Random bytes, then silence: closed at the latest by the login timeout.
            let mut s = TcpStream::connect(addr).unwrap();
            let len = 1 + rng.below(8192) as usize;
            let _ = s.write_all(&rng.bytes(len));
            assert!(
                closed_within(&mut s, Duration::from_secs(6)),
                "{what}: random bytes left open"
            );
        }
        1 => {
            // A Login Request cut short.
            let mut s = TcpStream::connect(addr).unwrap();
            let bytes = raw_bytes(&first_login(isid));
            let cut = 1 + rng.below(bytes.len() as u64 - 1) as usize;
            s.write_all(&bytes[..cut]).unwrap();
            assert!(
                closed_within(&mut s, Duration::from_secs(6)),
                "{what}: truncated login left open"
            );
        }
        2 => {
            // A header announcing a data segment far beyond any limit.
            let mut s = TcpStream::connect(addr).unwrap();
            let mut bytes = raw_bytes(&first_login(isid));
            let len = 0x0001_0000 + rng.below(0x00ff_0000) as u32;
            bytes[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
            let _ = s.write_all(&bytes[..48]);
            let _ = s.write_all(&rng.bytes(4096));
            assert!(
                closed_within(&mut s, Duration::from_secs(3)),
                "{what}: oversized PDU left open"
            );
        }
        3 => {
            // A SCSI Command before any login: out of phase.
            let mut s = TcpStream::connect(addr).unwrap();
            let mut bytes = raw_bytes(&first_login(isid));
            bytes.truncate(48);
            bytes[0] = 0x01;
            bytes[4..8].fill(0);
            s.write_all(&bytes).unwrap();
            assert!(
                closed_within(&mut s, Duration::from_secs(6)),
                "{what}: command before login left open"
            );
        }
        4 => {
            // A login that never finishes.
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&raw_bytes(&first_login(isid))).unwrap();
            assert!(
                closed_within(&mut s, Duration::from_secs(6)),
                "{what}: endless login left open"
            );
        }
        5 => {
            // A CmdSN outside the window: ignored (RFC 7143 4.2.2.1), the session goes on.
            let mut s = Session::login(addr, config(initiator, isid)).unwrap().unwrap();
            let next = s.take_cmd_sn().unwrap();
            let mut bytes = write10(&mut s, 0x100, 16, 512, vec![0xab; 512], true);
            let wrong = next.0.wrapping_add(1000 + rng.below(1 << 30) as u32);
            bytes[24..28].copy_from_slice(&wrong.to_be_bytes());
            s.send_raw(&bytes).unwrap();
            alive(&mut s, &what);
            let _ = s.logout();
        }
        6 => {
            // More immediate data than the Expected Data Transfer Length.
            let mut s = Session::login(addr, config(initiator, isid)).unwrap().unwrap();
            let extra = 1 + rng.below(4096) as usize;
            let bytes = write10(&mut s, 0x200, 32, 512, rng.bytes(512 + extra), true);
            s.send_raw(&bytes).unwrap();
            expect_failed_command(&mut s, 0x200, &what);
            alive(&mut s, &what);
            let _ = s.logout();
        }
        7 => {
            // A Login Request in the full feature phase: out of phase.
            let mut s = Session::login(addr, config(initiator, isid)).unwrap().unwrap();
            let bytes = s.encode(&first_login(isid)).to_vec();
            s.send_raw(&bytes).unwrap();
            expect_reject(&mut s, RejectReason::PROTOCOL_ERROR, &what);
            alive(&mut s, &what);
            let _ = s.logout();
        }
        8 => {
            // A bad header digest: the byte stream cannot be trusted, the connection ends.
            let mut c = config(initiator, isid);
            c.prefs.header_digest = vec!["CRC32C".into()];
            let mut s = Session::login(addr, c).unwrap().unwrap();
            let ping = NopOut {
                immediate: true,
                lun: Lun::ZERO,
                itt: Itt(0x300),
                ttt: Ttt::RESERVED,
                cmd_sn: CmdSn(0),
                exp_stat_sn: s.exp_stat_sn(),
            };
            let mut bytes = s.encode(&Pdu::new(ping)).to_vec();
            bytes[48 + rng.below(4) as usize] ^= 1 << rng.below(8);
            s.send_raw(&bytes).unwrap();
            let mut stream = s.into_stream();
            assert!(
                closed_within(&mut stream, Duration::from_secs(3)),
                "{what}: bad header digest"
            );
        }
        9 => {
            // A bad data digest: the PDU is rejected, the session goes on.
            let mut c = config(initiator, isid);
            c.prefs.data_digest = vec!["CRC32C".into()];
            let mut s = Session::login(addr, c).unwrap().unwrap();
            let mut bytes = write10(&mut s, 0x400, 48, 512, rng.bytes(512), true);
            let at = bytes.len() - 1 - rng.below(4) as usize;
            bytes[at] ^= 0x80;
            s.send_raw(&bytes).unwrap();
            expect_reject(&mut s, RejectReason::DATA_DIGEST_ERROR, &what);
            let _ = s.logout();
        }
        10 => {
            // Unsolicited Data-Out although InitialR2T=Yes: a protocol error.
            let mut c = config(initiator, isid);
            c.prefs.initial_r2t = true;
            c.prefs.immediate_data = false;
            let mut s = Session::login(addr, c).unwrap().unwrap();
            assert!(s.outcome.session.initial_r2t);
            let command = write10(&mut s, 0x500, 64, 512, Vec::new(), true);
            s.send_raw(&command).unwrap();
            let dout = DataOut {
                final_: true,
                lun: LUN,
                itt: Itt(0x500),
                ttt: Ttt::RESERVED,
                exp_stat_sn: s.exp_stat_sn(),
                data_sn: DataSn(0),
                buffer_offset: 0,
            };
            let bytes = s.encode(&Pdu::with_data(dout, rng.bytes(512))).to_vec();
            s.send_raw(&bytes).unwrap();
            // The R2T may come first; the unsolicited PDU is refused either way.
            let mut rejected = false;
            for _ in 0..4 {
                match answer(&mut s, &what).header {
                    Header::Reject(r) => {
                        assert_eq!(r.reason, RejectReason::PROTOCOL_ERROR, "{what}");
                        rejected = true;
                        break;
                    }
                    Header::R2t(_) | Header::ScsiResponse(_) => {}
                    other => panic!("{what}: unexpected {other:?}"),
                }
            }
            assert!(rejected, "{what}: unsolicited data was not rejected");
            let _ = s.into_stream().shutdown(std::net::Shutdown::Both);
        }
        _ => {
            // Random well-framed PDUs after login: each gets a Reject or ends the connection.
            let mut s = Session::login(addr, config(initiator, isid)).unwrap().unwrap();
            for _ in 0..4 {
                let mut bhs = rng.bytes(48);
                bhs[4] = 0; // no AHS
                let len = rng.below(512) as usize;
                bhs[5..8].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
                let mut bytes = bhs;
                bytes.extend(rng.bytes(len.next_multiple_of(4)));
                if s.send_raw(&bytes).is_err() {
                    break;
                }
            }
            let mut stream = s.into_stream();
            let _ = stream.shutdown(std::net::Shutdown::Write);
            assert!(
                closed_within(&mut stream, Duration::from_secs(6)),
                "{what}: random PDUs"
            );
        }
    }
}

#[test]
fn hundreds_of_hostile_connections_leave_the_target_serving() {
    let backing = NamedTempFile::new().unwrap();
    let pattern = disk_pattern();
    std::fs::write(backing.path(), &pattern).unwrap();
    let mut agent = TargetAgent::start_with(
        backing.path(),
        IQN,
        &[
            "--login-timeout",
            "2",
            "--max-connections",
            "256",
            "--max-sessions",
            "64",
        ],
    );
    let addr = agent.addr();
    let seed = seed("ABUSE_SEED");

    // Sample the target's memory while it is abused.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let pid = agent.pid();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let before = agent.rss_kib().unwrap();

    let next = Arc::new(Mutex::new(0usize));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (next, failures, addr) = (next.clone(), failures.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                loop {
                    let n = {
                        let mut next = next.lock().unwrap();
                        *next += 1;
                        *next - 1
                    };
                    if n >= CONNECTIONS {
                        return;
                    }
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| abuse(&addr, n, &mut rng)));
                    if let Err(e) = outcome {
                        let message = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("connection {n} (kind {}): {message}", n % 12));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(agent.is_running(), "the target died: {}", agent.output());
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} connections misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let peak = peak.load(Ordering::SeqCst);
    eprintln!("{CONNECTIONS} hostile connections in {took:?}; target RSS {before} KiB before, peak {peak} KiB");
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB (limit {RSS_LIMIT_KIB} KiB)");

    // A normal session afterwards: write, read back, and the disk is intact.
    let mut s = Session::login(&addr, config("iqn.2024-01.test.abuse:conductor", 1))
        .unwrap()
        .unwrap();
    let _ = s.command(LUN, &[0, 0, 0, 0, 0, 0], &[], 0); // clears the power-on unit attention
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(31) >> 3) as u8 ^ 0x5a)
        .collect();
    let lba = (8u32 << 20) / 512;
    let blocks = (data.len() / 512) as u16;
    let mut write = [0x2a, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    write[2..6].copy_from_slice(&lba.to_be_bytes());
    write[7..9].copy_from_slice(&blocks.to_be_bytes());
    let done = s.command(LUN, &write, &data, 0).unwrap();
    assert_eq!(done.status, ScsiStatus::GOOD, "{:?}", done.sense);
    let mut read = write;
    read[0] = 0x28;
    let done = s.command(LUN, &read, &[], data.len() as u32).unwrap();
    assert_eq!(done.status, ScsiStatus::GOOD);
    assert!(done.data == data, "read back differs from what was written");
    s.logout().unwrap();
    let disk = std::fs::read(backing.path()).unwrap();
    let at = 8 << 20;
    assert!(disk[at..at + data.len()] == data[..], "the write reached the disk");
    assert!(disk[SACRIFICE..at] == pattern[SACRIFICE..at], "nothing else changed");
    assert!(
        disk[at + data.len()..] == pattern[at + data.len()..],
        "nothing else changed"
    );
}
