//! libiscsi's command line tools against a target, and a write through one
//! session read back through another with our own initiator.
//!
//! Every test is written once against [`Kind`] and instantiated twice by
//! `against_targets!`:
//! - `tgtd::NAME`: against a private tgtd (the reference), always run;
//! - `target_agent::NAME`: against `target-agent serve`. They fail if the
//!   binary is missing or broken (they never skip); the test command builds
//!   it first with `cargo build -p target-agent` (see
//!   `integration_tests::agent`).
//!
//! Needs root (tgtd) and the Debian packages `tgt` and `libiscsi-bin`.
//! Talks to 127.0.0.1 only.
//!
//! Notes on libiscsi 1.19's tools, which these tests rely on:
//! - `iscsi-inq -c` parses the page code with atoi(): `-c 0x83` is page 0;
//!   pass decimal (`-c 131`).
//! - `iscsi-ls -s` prints `Size:` as block length x *last LBA* (one block
//!   short), divided by 1024 while above 1024, truncated.
//! - every tool logs in, clears the power-on UNIT ATTENTION with TEST UNIT
//!   READY and then sends its commands; `iscsi-ls` also sends TEST UNIT
//!   READY, INQUIRY and (direct access) READ CAPACITY(10) to every LUN that
//!   REPORT LUNS returns, LUN 0 included, and fails if any of them fails.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::TargetAgent;
use integration_tests::initiator::Session;
use integration_tests::output_within;
use integration_tests::tgtd::Tgtd;
use iscsi_proto::Lun;
use iscsi_proto::login::InitiatorConfig;
use iscsi_proto::pdu::{Isid, LogoutResponseCode};
use iscsi_proto::scsi::{Command as Scsi, ReadWrite, ScsiStatus};
use std::collections::BTreeMap;
use std::process::{Command, ExitStatus};
use std::time::Duration;
use tempfile::NamedTempFile;

/// Logical block length both targets are expected to expose.
const BLOCK: u64 = 512;
/// Backing file size in blocks: 12 MiB and 3 blocks, deliberately not round.
const BLOCKS: u64 = (12 << 20) / BLOCK + 3;
const LUN: Lun = Lun::from_index(1);
const INITIATOR: &str = "iqn.2024-01.test.libiscsi-tools:initiator";
const INITIATOR_B: &str = "iqn.2024-01.test.libiscsi-tools:initiator-b";
/// No libiscsi tool run may take longer than this.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// CHAP accounts of [`Target::start_with_chap`]: the initiator's, and the
/// target's for mutual CHAP.
const CHAP_USER: &str = "libiscsi-initiator";
const CHAP_SECRET: &str = "initiator-secret-16";
const MUTUAL_USER: &str = "the-target";
const MUTUAL_SECRET: &str = "target-secret-16b";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tgtd,
    Agent,
}

#[derive(Debug)]
enum Server {
    Tgtd(Tgtd),
    Agent(TargetAgent),
}

/// A running target whose LUN 1 is `disk`. The server is dropped (stopped)
/// before the backing file is removed.
#[derive(Debug)]
struct Target {
    kind: Kind,
    server: Server,
    disk: NamedTempFile,
    iqn: &'static str,
}

impl Target {
    fn start(kind: Kind) -> Self {
        Self::start_as(kind, false)
    }

    /// A target that requires CHAP ([`CHAP_USER`]) and can prove itself
    /// back ([`MUTUAL_USER`]): tgtd accounts, or target-agent's options.
    fn start_with_chap(kind: Kind) -> Self {
        Self::start_as(kind, true)
    }

    fn start_as(kind: Kind, chap: bool) -> Self {
        let disk = NamedTempFile::new().unwrap();
        disk.as_file().set_len(BLOCKS * BLOCK).unwrap();
        let (server, iqn) = match kind {
            Kind::Tgtd => {
                let iqn = "iqn.2024-01.test.libiscsi-tools:tgtd";
                let tgtd = Tgtd::start();
                tgtd.add_target(1, iqn, disk.path());
                if chap {
                    tgtd.add_account(1, CHAP_USER, CHAP_SECRET, false);
                    tgtd.add_account(1, MUTUAL_USER, MUTUAL_SECRET, true);
                }
                (Server::Tgtd(tgtd), iqn)
            }
            Kind::Agent => {
                let iqn = "iqn.2024-01.test.libiscsi-tools:agent";
                let options: &[&str] = if chap {
                    &[
                        "--chap-user",
                        CHAP_USER,
                        "--chap-secret",
                        CHAP_SECRET,
                        "--mutual-chap-user",
                        MUTUAL_USER,
                        "--mutual-chap-secret",
                        MUTUAL_SECRET,
                    ]
                } else {
                    &[]
                };
                (Server::Agent(TargetAgent::start_with(disk.path(), iqn, options)), iqn)
            }
        };
        Self {
            kind,
            server,
            disk,
            iqn,
        }
    }

    fn port(&self) -> u16 {
        match &self.server {
            Server::Tgtd(tgtd) => tgtd.port,
            Server::Agent(agent) => agent.port,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The portal, for discovery.
    fn portal_url(&self) -> String {
        format!("iscsi://{}", self.addr())
    }

    /// LUN 1.
    fn lun_url(&self) -> String {
        format!("iscsi://{}/{}/1", self.addr(), self.iqn)
    }

    /// VPD pages the target must list in page 0x00 and return. tgtd 1.0.85
    /// has exactly these six; target-agent must have the ones the deploy
    /// path and Linux's sd driver use (0xb1 is optional for it).
    fn vpd_pages(&self) -> &'static [u8] {
        match self.kind {
            Kind::Tgtd => &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2],
            Kind::Agent => &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2],
        }
    }
}

/// How a tool run ended.
#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run a libiscsi tool with a time limit.
fn run(tool: &str, args: &[&str]) -> Output {
    let (out, killed) = output_within(Command::new(tool).args(args), TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("run {tool}: {e} (install the Debian package libiscsi-bin)"));
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !killed,
        "{tool} {args:?} did not finish within {TOOL_TIMEOUT:?}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    Output {
        status: out.status,
        stdout,
        stderr,
    }
}

/// Run a tool that must succeed; its stdout.
fn run_ok(tool: &str, args: &[&str]) -> String {
    let out = run(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// `Key:value` lines (split at the first colon, key trimmed, value not).
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.to_owned()))
        .collect()
}

fn field<'a>(map: &'a BTreeMap<String, String>, key: &str, text: &str) -> &'a str {
    map.get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no `{key}:` line in:\n{text}"))
}

fn number(map: &BTreeMap<String, String>, key: &str, text: &str) -> u64 {
    let value = field(map, key, text).trim();
    value
        .parse()
        .unwrap_or_else(|e| panic!("`{key}:{value}` is not a number ({e}) in:\n{text}"))
}

/// What `iscsi-ls -s` prints as the size of a direct-access LUN.
fn iscsi_ls_size(blocks: u64, block: u64) -> String {
    const UNITS: [char; 5] = [' ', 'k', 'M', 'G', 'T'];
    let mut size = block * (blocks - 1);
    let mut unit = 0;
    while unit < 4 && size > 1024 {
        size /= 1024;
        unit += 1;
    }
    format!("{size}{}", UNITS[unit])
}

// ---------------------------------------------------------------- tests

/// Discovery lists exactly our target on our portal, and its LUN 1 is a
/// direct-access LUN of the backing file's size.
fn iscsi_ls_lists_the_target_and_lun_1(kind: Kind) {
    let target = Target::start(kind);
    let out = run_ok("iscsi-ls", &["-i", INITIATOR, "-s", &target.portal_url()]);
    let targets: Vec<&str> = out.lines().filter(|l| l.starts_with("Target:")).collect();
    assert_eq!(targets.len(), 1, "one target expected:\n{out}");
    let portal = format!("Portal:{},", target.addr());
    assert!(
        targets[0].starts_with(&format!("Target:{} ", target.iqn)) && targets[0].contains(&portal),
        "target line {:?} lacks {} / {portal}",
        targets[0],
        target.iqn
    );
    let lun1 = format!("Lun:1    Type:DIRECT_ACCESS (Size:{})", iscsi_ls_size(BLOCKS, BLOCK));
    assert!(out.lines().any(|l| l == lun1), "no line {lun1:?} in:\n{out}");
}

/// Standard INQUIRY of LUN 1: a connected direct-access device with a
/// vendor and a product.
fn iscsi_inq_standard(kind: Kind) {
    let target = Target::start(kind);
    let out = run_ok("iscsi-inq", &["-i", INITIATOR, &target.lun_url()]);
    let map = fields(&out);
    assert_eq!(field(&map, "Peripheral Qualifier", &out), "CONNECTED");
    assert_eq!(field(&map, "Peripheral Device Type", &out), "DIRECT_ACCESS");
    assert_eq!(field(&map, "Removable", &out), "0");
    for key in ["Vendor", "Product", "Revision"] {
        let value = field(&map, key, &out);
        assert!(
            !value.trim().is_empty() && value.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{key} must be printable ASCII, not empty: {value:?}"
        );
    }
    assert!(
        field(&map, "Version", &out).starts_with('5') || field(&map, "Version", &out).starts_with('6'),
        "SPC-3 or SPC-4 expected:\n{out}"
    );
    if kind == Kind::Tgtd {
        assert_eq!(field(&map, "Vendor", &out).trim(), "IET");
        assert_eq!(field(&map, "Product", &out).trim(), "VIRTUAL-DISK");
    }
}

/// CHAP and mutual CHAP with libiscsi (credentials in the URL) and with
/// conductor-writer (its options): the right secrets get in, and with mutual
/// CHAP the target proves itself; a missing or wrong secret on either side
/// is refused, and a refused writer writes nothing.
fn chap_and_mutual_chap(kind: Kind) {
    let target = Target::start_with_chap(kind);
    let url =
        |credentials: &str, query: &str| format!("iscsi://{credentials}{}/{}/1{query}", target.addr(), target.iqn);
    let ours = format!("{CHAP_USER}%{CHAP_SECRET}@");
    let theirs = format!("?target_user={MUTUAL_USER}&target_password={MUTUAL_SECRET}");

    for good in [url(&ours, ""), url(&ours, &theirs)] {
        let out = run_ok("iscsi-inq", &["-i", INITIATOR, &good]);
        assert_eq!(field(&fields(&out), "Peripheral Device Type", &out), "DIRECT_ACCESS");
    }
    let refused = [
        url("", ""),
        url(&format!("{CHAP_USER}%not-the-secret-16@"), ""),
        url(&format!("someone-else%{CHAP_SECRET}@"), ""),
        url(
            &ours,
            &format!("?target_user={MUTUAL_USER}&target_password=not-the-secret-16"),
        ),
        url(
            &ours,
            &format!("?target_user=someone-else&target_password={MUTUAL_SECRET}"),
        ),
    ];
    for bad in &refused {
        let out = run("iscsi-inq", &["-i", INITIATOR, bad]);
        assert!(
            !out.status.success(),
            "{bad} must be refused:\n{}{}",
            out.stdout,
            out.stderr
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    let data = pattern(3 << 20, 9);
    std::fs::write(&image, &data).unwrap();
    let image = image.to_str().unwrap();
    let plain = url("", "");
    let writer = |extra: &[&str]| {
        let mut args = vec!["write", image, &plain, "--initiator-name", INITIATOR];
        args.extend_from_slice(extra);
        integration_tests::conductor_writer(&args)
    };
    let chap = ["--chap-user", CHAP_USER, "--chap-secret", CHAP_SECRET];
    let wrong = [
        vec![],
        vec!["--chap-user", CHAP_USER, "--chap-secret", "not-the-secret-16"],
        [
            &chap[..],
            &[
                "--mutual-chap-user",
                MUTUAL_USER,
                "--mutual-chap-secret",
                "not-the-secret-16",
            ],
        ]
        .concat(),
    ];
    for extra in &wrong {
        let out = writer(extra);
        let text = integration_tests::output_text(&out);
        assert!(!out.status.success(), "{extra:?} must be refused: {text}");
        assert!(
            text.to_lowercase().contains("auth"),
            "{extra:?}: the error names authentication: {text}"
        );
    }
    assert!(
        std::fs::read(target.disk.path()).unwrap().iter().all(|&b| b == 0),
        "a refused writer wrote nothing"
    );
    let mutual = [
        &chap[..],
        &["--mutual-chap-user", MUTUAL_USER, "--mutual-chap-secret", MUTUAL_SECRET],
    ]
    .concat();
    let out = writer(&mutual);
    assert!(out.status.success(), "{}", integration_tests::output_text(&out));
    assert_on_disk(&target, 0, &data);
}

/// VPD pages: the supported-pages list, then each page with its content.
fn iscsi_inq_vpd_pages(kind: Kind) {
    let target = Target::start(kind);
    let url = target.lun_url();
    // iscsi-inq reads -c with atoi(): decimal only.
    let page = |code: u8| {
        run_ok(
            "iscsi-inq",
            &["-i", INITIATOR, "-e", "1", "-c", &code.to_string(), &url],
        )
    };

    let supported = page(0x00);
    let listed: Vec<&str> = supported.lines().filter(|l| l.starts_with("Page:0x")).collect();
    for code in target.vpd_pages() {
        let want = format!("Page:0x{code:02x} ");
        assert!(
            listed.iter().any(|l| l.starts_with(&want)),
            "VPD page 0x{code:02x} not in the supported pages:\n{supported}"
        );
    }

    for &code in target.vpd_pages() {
        let out = page(code);
        let map = fields(&out);
        match code {
            0x00 => {}
            0x80 => {
                let usn = field(&map, "Unit Serial Number", &out);
                let usn = usn.trim().trim_start_matches('[').trim_end_matches(']').trim();
                assert!(!usn.is_empty(), "empty unit serial number:\n{out}");
            }
            0x83 => {
                assert!(out.contains("Page Code:(0x83) DEVICE_IDENTIFICATION"), "{out}");
                assert!(out.contains("DEVICE DESIGNATOR #0"), "no designator:\n{out}");
                assert!(
                    out.contains("Association:(0) LOGICAL_UNIT"),
                    "no designator of the logical unit:\n{out}"
                );
            }
            0xb0 => {
                for key in [
                    "maximum transfer length",
                    "optimal transfer length",
                    "maximum unmap lba count",
                    "maximum write same length",
                ] {
                    number(&map, key, &out);
                }
            }
            0xb1 => {
                field(&map, "Medium Rotation Rate", &out);
            }
            0xb2 => {
                for key in ["lbpu", "lbpws", "lbpws10", "provisioning type"] {
                    assert!(number(&map, key, &out) <= 7, "{key}:\n{out}");
                }
            }
            other => panic!("no check for VPD page 0x{other:02x}"),
        }
    }
}

/// READ CAPACITY(16) reports the backing file: block count and length.
fn iscsi_readcapacity16_matches_the_backing_file(kind: Kind) {
    let target = Target::start(kind);
    let out = run_ok("iscsi-readcapacity16", &["-i", INITIATOR, &target.lun_url()]);
    let map = fields(&out);
    let file_len = target.disk.as_file().metadata().unwrap().len();
    assert_eq!(file_len, BLOCKS * BLOCK);
    let block = number(&map, "LOGICAL BLOCK LENGTH IN BYTES", &out);
    assert_eq!(block, BLOCK, "block length:\n{out}");
    assert_eq!(
        number(&map, "RETURNED LOGICAL BLOCK ADDRESS", &out) + 1,
        file_len / block,
        "block count:\n{out}"
    );
    assert_eq!(number(&map, "Total size", &out), file_len, "{out}");
}

/// iscsi-perf reads for a few seconds (32 READ(16)s in flight) without an
/// error and reports a non-zero rate.
fn iscsi_perf_reads(kind: Kind) {
    let target = Target::start(kind);
    let out = run_ok("iscsi-perf", &["-i", INITIATOR, "-t", "3", &target.lun_url()]);
    assert!(
        out.contains(&format!("capacity is {BLOCKS} blocks")),
        "capacity:\n{out}"
    );
    assert!(out.contains("\nfinished."), "iscsi-perf did not finish cleanly:\n{out}");
    // Progress lines end in \r; the last "iops average N" is the result.
    let iops: u64 = out
        .split(['\r', '\n'])
        .filter_map(|line| line.split("iops average ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no `iops average` in:\n{out}"));
    assert!(iops > 0, "read IOPS {iops}:\n{out}");
}

/// The first command of a new I_T nexus gets the power-on UNIT ATTENTION.
fn ready(session: &mut Session) {
    for _ in 0..3 {
        let done = session
            .command(LUN, Scsi::TestUnitReady.build().as_bytes(), &[], 0)
            .unwrap();
        if done.status == ScsiStatus::GOOD {
            return;
        }
    }
    panic!("TEST UNIT READY never succeeded");
}

fn login(target: &Target, initiator: &str, isid: [u8; 6]) -> Session {
    let config = InitiatorConfig::new(initiator, Some(target.iqn.into()), Isid::random(isid));
    Session::login(&target.addr(), config)
        .unwrap()
        .unwrap_or_else(|e| panic!("login as {initiator}: {e}"))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn write(session: &mut Session, lba: u64, data: &[u8]) {
    let cdb = Scsi::Write(ReadWrite::new(lba, (data.len() as u64 / BLOCK) as u32)).build();
    let done = session.command(LUN, cdb.as_bytes(), data, 0).unwrap();
    assert_eq!(done.status, ScsiStatus::GOOD, "write at LBA {lba}: {:?}", done.sense);
}

fn read_back(session: &mut Session, lba: u64, len: usize) -> Vec<u8> {
    let cdb = Scsi::Read(ReadWrite::new(lba, (len as u64 / BLOCK) as u32)).build();
    let done = session.command(LUN, cdb.as_bytes(), &[], len as u32).unwrap();
    assert_eq!(done.status, ScsiStatus::GOOD, "read at LBA {lba}: {:?}", done.sense);
    done.data
}

/// SYNCHRONIZE CACHE (10) of the whole LUN, so that the backing file may be
/// compared whatever the target's write cache does.
fn sync_cache(session: &mut Session) {
    let cdb = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let done = session.command(LUN, &cdb, &[], 0).unwrap();
    assert_eq!(done.status, ScsiStatus::GOOD, "SYNCHRONIZE CACHE: {:?}", done.sense);
}

fn assert_on_disk(target: &Target, lba: u64, data: &[u8]) {
    let disk = std::fs::read(target.disk.path()).unwrap();
    let at = (lba * BLOCK) as usize;
    assert!(
        disk[at..at + data.len()] == data[..],
        "backing file differs from what was written at LBA {lba} ({} bytes)",
        data.len()
    );
}

/// Two sessions from two initiators (different names and ISIDs) at once:
/// what one writes the other reads, both ways, and it is in the backing
/// file. Sizes cover immediate data only, R2T and multi-burst writes, and
/// the last blocks of the LUN.
fn write_through_one_session_read_through_another(kind: Kind) {
    let target = Target::start(kind);
    let mut a = login(&target, INITIATOR, [0x11, 0x22, 0x33, 0x44, 0x55, 0x01]);
    let mut b = login(&target, INITIATOR_B, [0x11, 0x22, 0x33, 0x44, 0x55, 0x02]);
    ready(&mut a);
    ready(&mut b);

    let extents: [(u64, usize); 5] = [
        (0, 512),
        (8, 8192),
        (100, 64 << 10),
        (1000, 300 << 10),
        (BLOCKS - 16, 16 * BLOCK as usize),
    ];
    for (n, &(lba, len)) in extents.iter().enumerate() {
        let (writer, reader, who) = if n % 2 == 0 {
            (&mut a, &mut b, "A -> B")
        } else {
            (&mut b, &mut a, "B -> A")
        };
        let data = pattern(len, n as u8 + 1);
        write(writer, lba, &data);
        let back = read_back(reader, lba, len);
        assert!(back == data, "{who}: {len} bytes at LBA {lba} read back differ");
    }
    sync_cache(&mut a);
    for (n, &(lba, len)) in extents.iter().enumerate() {
        assert_on_disk(&target, lba, &pattern(len, n as u8 + 1));
    }
    // Blocks nobody wrote are still zero, on both paths.
    let untouched = 5000;
    assert!(read_back(&mut a, untouched, 4096).iter().all(|&byte| byte == 0));
    assert_eq!(a.logout().unwrap(), LogoutResponseCode::CLOSED);
    assert_eq!(b.logout().unwrap(), LogoutResponseCode::CLOSED);
}

// ---------------------------------------------------------------- instances

macro_rules! against_targets {
    ($($test:ident),* $(,)?) => {
        /// Against tgtd, the reference.
        mod tgtd {
            $(
                #[test]
                fn $test() {
                    super::$test(super::Kind::Tgtd)
                }
            )*
        }

        /// Against `target-agent serve`; they fail if the binary is missing.
        mod target_agent {
            $(
                #[test]
                fn $test() {
                    super::$test(super::Kind::Agent)
                }
            )*
        }
    };
}

against_targets!(
    iscsi_ls_lists_the_target_and_lun_1,
    iscsi_inq_standard,
    chap_and_mutual_chap,
    iscsi_inq_vpd_pages,
    iscsi_readcapacity16_matches_the_backing_file,
    iscsi_perf_reads,
    write_through_one_session_read_through_another,
);
