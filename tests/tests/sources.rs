//! Images from anywhere, written by `conductor-writer write` onto target-agent and checked
//! byte for byte (cmp, and `conductor-writer verify` against the raw image): formats qemu-img
//! made, raw streams on standard input, and images served by a real nginx over http and https
//! (its CA made here), through a proxy that cuts the answers short, and in bounded memory.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::{TargetAgent, workspace_binary};
use integration_tests::web::{Certs, CuttingProxy, Nginx, peak_rss_kib};
use integration_tests::{
    Rng, conductor_writer as writer, conductor_writer_from, must, output_text as text, qemu_img, seed,
};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const IQN: &str = "iqn.2024-01.test.sources:disk";
const MIB: u64 = 1 << 20;
const JUNK: u8 = 0xee;

/// A raw image of 24 MiB + 2 KiB: random data, written zeroes, holes, a partial last MiB.
fn raw_image(dir: &Path, rng: &mut Rng) -> PathBuf {
    let path = dir.join("disk.raw");
    let file = File::create(&path).unwrap();
    file.set_len(24 * MIB + 2048).unwrap();
    file.write_all_at(&rng.bytes(3 * MIB as usize), 0).unwrap();
    file.write_all_at(&vec![0; MIB as usize], 4 * MIB).unwrap();
    file.write_all_at(&rng.bytes(700_000), 9 * MIB + 4096).unwrap();
    file.write_all_at(&rng.bytes(6144), 24 * MIB - 4096).unwrap();
    path
}

fn junk_disk(dir: &Path, size: u64) -> PathBuf {
    let disk = dir.join("lun.img");
    let file = File::create(&disk).unwrap();
    file.set_len(size).unwrap();
    // Junk where the image goes (and past it), holes beyond.
    file.write_all_at(&vec![JUNK; (32 * MIB).min(size) as usize], 0)
        .unwrap();
    disk
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn sha256(path: &Path) -> String {
    format!("sha256:{}", &must("sha256sum", &[p(path)])[..64])
}

/// The disk holds `raw` from byte 0, by cmp and by `conductor-writer verify`.
fn holds(disk: &Path, raw: &Path, url: &str) {
    let len = std::fs::metadata(raw).unwrap().len().to_string();
    must("cmp", &["-n", &len, p(raw), p(disk)]);
    let out = writer(&["verify", p(raw), url]);
    assert!(out.status.success(), "{}", text(&out));
}

fn rejunk(disk: &Path) {
    File::options()
        .write(true)
        .open(disk)
        .unwrap()
        .write_all_at(&vec![JUNK; 32 * MIB as usize], 0)
        .unwrap();
}

fn untouched(disk: &Path) -> bool {
    let mut buf = vec![0u8; 32 * MIB as usize];
    File::open(disk).unwrap().read_exact_at(&mut buf, 0).unwrap();
    buf.iter().all(|&b| b == JUNK)
}

struct Setup {
    dir: TempDir,
    raw: PathBuf,
    disk: PathBuf,
    _agent: TargetAgent,
    url: String,
}

fn setup(disk_size: u64) -> Setup {
    let dir = TempDir::new().unwrap();
    let mut rng = Rng(seed("SOURCES_SEED"));
    let raw = raw_image(dir.path(), &mut rng);
    let disk = junk_disk(dir.path(), disk_size);
    let agent = TargetAgent::start(&disk, IQN);
    let url = format!("iscsi://{}/{IQN}/1", agent.addr());
    Setup {
        dir,
        raw,
        disk,
        _agent: agent,
        url,
    }
}

#[test]
fn formats_qemu_img_made_and_raw_streams_on_standard_input() {
    let s = setup(48 * MIB);
    let d = s.dir.path();
    for (name, args) in [
        ("sparse.vmdk", vec!["-O", "vmdk"]),
        ("stream.vmdk", vec!["-O", "vmdk", "-o", "subformat=streamOptimized"]),
        ("zstd.qcow2", vec!["-c", "-O", "qcow2", "-o", "compression_type=zstd"]),
    ] {
        let image = d.join(name);
        let mut all = vec!["convert", "-f", "raw"];
        all.extend_from_slice(&args);
        all.extend([p(&s.raw), p(&image)]);
        qemu_img(&all);
        rejunk(&s.disk);
        let out = writer(&["write", p(&image), &s.url]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        holds(&s.disk, &s.raw, &s.url);
    }

    must("gzip", &["-k", p(&s.raw)]);
    must("zstd", &["-q", "-k", p(&s.raw)]);
    must("xz", &["-k", "-0", p(&s.raw)]);
    let stdin = |path: &Path| Stdio::from(File::open(path).unwrap());
    for name in ["disk.raw", "disk.raw.gz", "disk.raw.zst", "disk.raw.xz"] {
        let image = d.join(name);
        // From a pipe, with the checksum of the bytes as they come (compressed, as stored).
        rejunk(&s.disk);
        let sum = sha256(&image);
        let out = conductor_writer_from(&["write", "-", &s.url, "--checksum", &sum], &[], stdin(&image));
        assert!(out.status.success(), "{name} on stdin: {}", text(&out));
        assert!(text(&out).contains("wrote standard input"), "{}", text(&out));
        holds(&s.disk, &s.raw, &s.url);
        // The compressed file, by path.
        if name != "disk.raw" {
            rejunk(&s.disk);
            let out = writer(&["write", p(&image), &s.url, "--checksum", &sum]);
            assert!(out.status.success(), "{name}: {}", text(&out));
            holds(&s.disk, &s.raw, &s.url);
        }
    }
    // A stream whose checksum does not match is written, and the failure says so.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = conductor_writer_from(
        &["write", "-", &s.url, "--checksum", &wrong],
        &[],
        stdin(&d.join("disk.raw.zst")),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("UNVERIFIED DATA"), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("wrote"),
        "{}",
        text(&out)
    );
    // A qcow2 cannot come through a pipe; --verify cannot read a pipe twice.
    let out = conductor_writer_from(&["write", "-", &s.url], &[], stdin(&d.join("zstd.qcow2")));
    assert!(
        !out.status.success() && text(&out).contains("cannot come from standard input"),
        "{}",
        text(&out)
    );
    let out = conductor_writer_from(&["write", "-", &s.url, "--verify"], &[], stdin(&s.raw));
    assert!(
        !out.status.success() && text(&out).contains("--verify"),
        "{}",
        text(&out)
    );
}

#[test]
fn qcow2_vmdk_and_raw_over_http_and_https_from_nginx() {
    let s = setup(48 * MIB);
    let d = s.dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::copy(&s.raw, www.join("disk.raw")).unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        p(&s.raw),
        p(&www.join("disk.qcow2")),
    ]);
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        p(&s.raw),
        p(&www.join("packed.qcow2")),
    ]);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        p(&s.raw),
        p(&www.join("disk.vmdk")),
    ]);
    must(
        "zstd",
        &["-q", p(&www.join("disk.raw")), "-o", p(&www.join("disk.raw.zst"))],
    );
    let certs = Certs::make(d, "good");
    let nginx = Nginx::start(&www, &certs);
    let ca = p(&certs.ca);
    for name in ["disk.raw", "disk.qcow2", "packed.qcow2", "disk.vmdk", "disk.raw.zst"] {
        let sum = sha256(&www.join(name));
        for (url, extra) in [
            (nginx.http(name), vec![]),
            (nginx.https(name), vec!["--ca-cert", ca]),
            (nginx.https(name), vec!["--ca-cert", ca, "--checksum-first"]),
        ] {
            rejunk(&s.disk);
            let mut args = vec!["write", &url, &s.url, "--checksum", &sum];
            args.extend_from_slice(&extra);
            let out = writer(&args);
            assert!(out.status.success(), "{url} {extra:?}: {}", text(&out));
            holds(&s.disk, &s.raw, &s.url);
        }
    }
    assert!(nginx.answered(206) > 10, "images were read by range requests");
    // --verify reads the URL again.
    rejunk(&s.disk);
    let out = writer(&["write", &nginx.https("disk.qcow2"), &s.url, "--ca-cert", ca, "--verify"]);
    assert!(
        out.status.success() && text(&out).contains("verified"),
        "{}",
        text(&out)
    );

    // The wrong CA, or none (the built-in roots): refused before anything is written.
    rejunk(&s.disk);
    let other = Certs::make(d, "other");
    let https_qcow2 = nginx.https("disk.qcow2");
    for extra in [vec!["--ca-cert", p(&other.ca)], vec![]] {
        let mut args = vec!["write", &https_qcow2, &s.url];
        args.extend_from_slice(&extra);
        let out = writer(&args);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("--ca-cert"), "{}", text(&out));
        assert!(untouched(&s.disk), "a refused https image changed the disk");
    }
    // A wrong streamed checksum over https: written, and said to be unverified.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = writer(&[
        "write",
        &nginx.https("disk.qcow2"),
        &s.url,
        "--ca-cert",
        ca,
        "--checksum",
        &wrong,
    ]);
    assert!(
        !out.status.success() && text(&out).contains("UNVERIFIED DATA"),
        "{}",
        text(&out)
    );
    // ...while --checksum-first refuses it before the first block.
    rejunk(&s.disk);
    let out = writer(&[
        "write",
        &nginx.https("disk.qcow2"),
        &s.url,
        "--ca-cert",
        ca,
        "--checksum",
        &wrong,
        "--checksum-first",
    ]);
    assert!(
        !out.status.success() && text(&out).contains("checksum mismatch"),
        "{}",
        text(&out)
    );
    assert!(untouched(&s.disk));
    let out = writer(&["write", &nginx.http("missing.qcow2"), &s.url]);
    assert!(!out.status.success() && text(&out).contains("404"), "{}", text(&out));
    assert!(untouched(&s.disk));
}

#[test]
fn a_server_that_drops_the_connection_is_resumed_or_fails_clearly() {
    let s = setup(48 * MIB);
    let d = s.dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::copy(&s.raw, www.join("disk.raw")).unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        p(&s.raw),
        p(&www.join("disk.qcow2")),
    ]);
    let nginx = Nginx::start(&www, &Certs::make(d, "cut"));
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, nginx.http_port));
    for name in ["disk.raw", "disk.qcow2"] {
        // The first two connections break after 3 MiB: resumed with range requests.
        let proxy = CuttingProxy::start(upstream, 3 * MIB, 2, false);
        rejunk(&s.disk);
        let sum = sha256(&www.join(name));
        let out = writer(&["write", &proxy.http(name), &s.url, "--checksum", &sum]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(proxy.cuts() >= 1, "{name}: the main stream was cut");
        holds(&s.disk, &s.raw, &s.url);
        // The server goes away 1 MiB in: the write fails and says why.
        let proxy = CuttingProxy::start(upstream, MIB, 1, true);
        let out = writer(&["write", &proxy.http(name), &s.url]);
        assert!(!out.status.success(), "{name}: {}", text(&out));
        assert!(text(&out).contains("could not be resumed"), "{name}: {}", text(&out));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("wrote"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn a_4_gib_qcow2_streams_over_https_in_bounded_memory() {
    let s = setup(4096 * MIB);
    let d = s.dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    let image = www.join("big.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", p(&image), "4G"]);
    // 256 MiB of data in 4 MiB runs, one every 64 MiB, each with its own pattern.
    let mut io = Command::new("qemu-io");
    io.args(["-f", "qcow2"]);
    for i in 0..64u64 {
        io.args(["-c", &format!("write -P {} {}M 4M", i + 1, i * 64)]);
    }
    let out = io.arg(&image).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-io: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = Certs::make(d, "big");
    let nginx = Nginx::start(&www, &certs);
    let mut child = Command::new(workspace_binary("conductor-writer", "CONDUCTOR_WRITER"))
        .args([
            "write",
            &nginx.https("big.qcow2"),
            &s.url,
            "--ca-cert",
            p(&certs.ca),
            "--quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // VmHWM only grows: the last reading before the exit is the peak.
    let (mut peak, started) = (0, Instant::now());
    while child.try_wait().unwrap().is_none() {
        peak = peak_rss_kib(child.id()).unwrap_or(peak).max(peak);
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the write did not finish in 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "conductor-writer peak RSS streaming a 4 GiB qcow2 over https: {:.1} MiB",
        peak as f64 / 1024.0
    );
    assert!(peak > 0, "the peak was measured");
    assert!(peak < 128 * 1024, "peak RSS {peak} KiB is over 128 MiB");
    // The data landed where it belongs.
    let disk = File::open(&s.disk).unwrap();
    let mut buf = vec![0u8; 4096];
    for i in [0u64, 17, 63] {
        disk.read_exact_at(&mut buf, i * 64 * MIB + 2 * MIB).unwrap();
        assert!(buf.iter().all(|&b| b == (i + 1) as u8), "run {i}");
        disk.read_exact_at(&mut buf, i * 64 * MIB + 5 * MIB).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "between runs {i}");
    }
}

#[test]
fn a_server_without_range_requests_streams_raw_and_refuses_qcow2() {
    let s = setup(48 * MIB);
    let d = s.dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::copy(&s.raw, www.join("disk.raw")).unwrap();
    must("gzip", &["-k", p(&www.join("disk.raw"))]);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        p(&s.raw),
        p(&www.join("disk.qcow2")),
    ]);
    // Python's http.server answers every GET with the whole file (200), never a range.
    let port = integration_tests::tgtd::free_port();
    let _server = Stopped(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
                p(&www),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !integration_tests::listening(("127.0.0.1", port)) {
        assert!(Instant::now() < deadline, "python3 -m http.server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = |name: &str| format!("http://127.0.0.1:{port}/{name}");
    for name in ["disk.raw", "disk.raw.gz"] {
        rejunk(&s.disk);
        let sum = sha256(&www.join(name));
        let out = writer(&["write", &url(name), &s.url, "--checksum", &sum]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        holds(&s.disk, &s.raw, &s.url);
    }
    rejunk(&s.disk);
    let out = writer(&["write", &url("disk.qcow2"), &s.url]);
    assert!(
        !out.status.success() && text(&out).contains("does not answer them"),
        "{}",
        text(&out)
    );
    assert!(untouched(&s.disk));
}

/// A child process killed when the test ends, passed or not.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
