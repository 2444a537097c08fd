//! Faults between the writer and the disk. A proxy cuts connections in the
//! middle of a write: conductor-writer logs in again (session
//! reinstatement), sends again every command that had no answer, and the
//! disk ends byte-identical to the image. A target that vanishes for good,
//! or falls silent, gives a clear error within a bounded time. A backing
//! store that fails (EIO, ENOSPC) gives MEDIUM ERROR or SPACE ALLOCATION
//! FAILED sense and a failed write, never a reported success.
//!
//! Needs root (tgtd, tmpfs mounts, loop devices). Talks to 127.0.0.1 only.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::TargetAgent;
use integration_tests::proxy::{Fault, FaultyProxy};
use integration_tests::rootfs::Loop;
use integration_tests::tgtd::Tgtd;
use integration_tests::{Rng, conductor_writer_with, must, output_text};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};
use tempfile::{NamedTempFile, TempDir};

const IQN: &str = "iqn.2024-01.test.faults:disk";
const DISK: u64 = 64 << 20;
const JUNK: u8 = 0xee;

fn seed() -> u64 {
    integration_tests::seed("FAULTS_SEED")
}

/// A raw image of `len` pseudo-random bytes (no zero runs: all of it travels).
fn random_image(dir: &Path, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut rng = Rng(seed);
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        data.extend_from_slice(&(rng.next_u64() | 0x0101_0101_0101_0101).to_le_bytes());
    }
    data.truncate(len);
    let path = dir.join("image.raw");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn junk_disk() -> NamedTempFile {
    let disk = NamedTempFile::new().unwrap();
    std::fs::write(disk.path(), vec![JUNK; DISK as usize]).unwrap();
    disk
}

fn write(image: &Path, addr: &str, extra: &[&str]) -> (Output, Duration) {
    let url = format!("iscsi://{addr}/{IQN}/1");
    let mut args = vec!["write", image.to_str().unwrap(), &url];
    args.extend_from_slice(extra);
    let start = Instant::now();
    // Each command's path (sent, R2T, answered by ITT): a failure's message
    // then shows which command went missing and where.
    let out = conductor_writer_with(&args, &[("RUST_LOG", "conductor_writer=trace")]);
    (out, start.elapsed())
}

/// Cut the first five connections at random points of the write (those
/// that carry that much); the writer must finish with the disk exactly the
/// image, junk after it, and count every recovery.
fn survive_cuts(upstream: SocketAddr, disk: &Path, seed: u64) {
    let dir = TempDir::new().unwrap();
    let (image, data) = random_image(dir.path(), 40 << 20, seed);
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let cuts: Vec<u64> = (0..5).map(|_| (64 << 10) + rng.below(8 << 20)).collect();
    let proxy = FaultyProxy::start(upstream, cuts.clone(), Fault::Cut, false);
    let (out, took) = write(&image, &proxy.addr(), &["--sessions", "2", "--reconnect-timeout", "30"]);
    let text = output_text(&out);
    assert!(out.status.success(), "cuts at {cuts:?}: {text}");
    let cut = proxy.faults();
    assert!(cut >= 1, "no connection was cut (cuts at {cuts:?})");
    assert!(
        text.contains(&format!("{cut} lost connection(s) recovered")),
        "the summary counts the {cut} recoveries: {text}"
    );
    assert!(
        proxy.connections() >= 2 + cut,
        "every cut connection was replaced by a new login: {} connections for {cut} cuts",
        proxy.connections()
    );
    let on_disk = std::fs::read(disk).unwrap();
    let differs = on_disk[..data.len()].iter().zip(&data).position(|(a, b)| a != b);
    assert_eq!(differs, None, "disk differs from the image (cuts at {cuts:?}): {text}");
    assert!(
        on_disk[data.len()..].iter().all(|&b| b == JUNK),
        "nothing was written past the image"
    );
    eprintln!(
        "{cut} of the cuts at {cuts:?} made: {} connections, {took:?}",
        proxy.connections()
    );
}

#[test]
fn cut_connections_are_reinstated_against_target_agent() {
    let disk = junk_disk();
    let agent = TargetAgent::start(disk.path(), IQN);
    survive_cuts(agent.addr().parse().unwrap(), disk.path(), seed());
}

#[test]
fn cut_connections_are_reinstated_against_tgtd() {
    let disk = junk_disk();
    let tgtd = Tgtd::start();
    tgtd.add_target(1, IQN, disk.path());
    survive_cuts(format!("127.0.0.1:{}", tgtd.port).parse().unwrap(), disk.path(), seed());
}

#[test]
fn a_target_that_vanishes_fails_the_write_in_bounded_time() {
    let disk = junk_disk();
    let agent = TargetAgent::start(disk.path(), IQN);
    let dir = TempDir::new().unwrap();
    let (image, _) = random_image(dir.path(), 24 << 20, seed());
    let limits = ["--reconnect-timeout", "3", "--dead-after", "2"];

    // Gone: the connection breaks and nothing answers at the address again.
    let proxy = FaultyProxy::start(agent.addr().parse().unwrap(), vec![2 << 20], Fault::Cut, true);
    let (out, took) = write(&image, &proxy.addr(), &limits);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("could not log in again within 3 s"), "{text}");
    assert!(took < Duration::from_secs(15), "gave up after {took:?}");

    // Silent: the connection stays open but nothing comes back, and new
    // connections are accepted and never answered.
    let proxy = FaultyProxy::start(agent.addr().parse().unwrap(), vec![2 << 20], Fault::Freeze, false);
    let (out, took) = write(&image, &proxy.addr(), &limits);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        (text.contains("did not answer for 2 s") || text.contains("took no data for 2 s"))
            && text.contains("could not log in again within 3 s"),
        "{text}"
    );
    assert!(took < Duration::from_secs(20), "gave up after {took:?}");
}

/// A tmpfs of `mib` MiB mounted for the test, unmounted on drop.
struct SmallTmpfs(TempDir);

impl SmallTmpfs {
    fn mount(mib: u64) -> Self {
        let dir = TempDir::new().unwrap();
        must(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
        );
        Self(dir)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_backing_file_fails_the_write_with_space_allocation_failed() {
    // A 64 MiB sparse backing file on an 8 MiB tmpfs: writes fail with ENOSPC.
    let fs = SmallTmpfs::mount(8);
    let backing = fs.0.path().join("disk");
    std::fs::File::create(&backing).unwrap().set_len(DISK).unwrap();
    let agent = TargetAgent::start(&backing, IQN);
    let dir = TempDir::new().unwrap();
    let (image, _) = random_image(dir.path(), 24 << 20, seed());
    let (out, _) = write(&image, &agent.addr(), &[]);
    let text = output_text(&out);
    assert!(!out.status.success(), "a write to a full store must fail: {text}");
    assert!(
        text.contains("SPACE ALLOCATION FAILED") && text.contains("out of space"),
        "{text}"
    );
}

#[test]
fn a_failing_file_system_fails_the_write_with_medium_error() {
    // The backing file's ext4 is shut down under the running target: every
    // write from then on fails with EIO, as on a dying disk.
    let dir = TempDir::new().unwrap();
    let fs_image = dir.path().join("fs.img");
    std::fs::File::create(&fs_image).unwrap().set_len(96 << 20).unwrap();
    must("mkfs.ext4", &["-q", "-F", fs_image.to_str().unwrap()]);
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    let device = Loop::attach(&fs_image);
    must("mount", &[&device.0, mount.to_str().unwrap()]);
    let backing = mount.join("disk");
    std::fs::File::create(&backing).unwrap().set_len(DISK).unwrap();
    let agent = TargetAgent::start(&backing, IQN);
    must("xfs_io", &["-x", "-c", "shutdown", mount.to_str().unwrap()]);
    let (image, _) = random_image(dir.path(), 8 << 20, seed());
    let (out, _) = write(&image, &agent.addr(), &[]);
    let text = output_text(&out);
    drop(agent);
    let _ = std::process::Command::new("umount").arg(&mount).status();
    drop(device);
    assert!(!out.status.success(), "a write to a failing disk must fail: {text}");
    assert!(text.contains("MEDIUM ERROR"), "{text}");
}
