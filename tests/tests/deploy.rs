//! `conductor-writer deploy` into file-backed disks behind target-agent and
//! tgtd, with the result inspected only by standard tools: `sfdisk`,
//! `sgdisk`, `blkid`, `e2fsck`, `fsck.vfat`, `isoinfo`.
//!
//! Every disk starts full of pseudo-random junk, so a file system that
//! relied on zeroes the deploy did not write fails its check.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::{TargetAgent, workspace_binary};
use integration_tests::tgtd::Tgtd;
use integration_tests::{compressed_qcow2, config_drive_iso, ext4_image, must, output_text as text};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

const IQN: &str = "iqn.2008-10.org.openstack:1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
const MIB: u64 = 1 << 20;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// `conductor-writer deploy --address 127.0.0.1 --port P --iqn IQN ARGS`.
fn deploy(portal: &str, args: &[&str]) -> Output {
    let (host, port) = portal.rsplit_once(':').unwrap();
    Command::new(workspace_binary("conductor-writer", "CONDUCTOR_WRITER"))
        .args(["deploy", "--address", host, "--port", port, "--iqn", IQN])
        .args(args)
        .output()
        .unwrap()
}

/// A deploy that must succeed; its `--json` report.
fn deploy_ok(portal: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = deploy(portal, &all);
    assert!(out.status.success(), "deploy {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A file of `size` pseudo-random bytes.
fn junk_disk(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("disk.img");
    let mut rng = integration_tests::Rng(0x9e37_79b9_7f4a_7c15);
    let mut bytes = Vec::with_capacity(size as usize);
    while (bytes.len() as u64) < size {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A config drive ISO with one file, and its gzip+base64 form.
fn config_drive(dir: &Path) -> (PathBuf, PathBuf) {
    let iso = config_drive_iso(dir, "configdrive.iso", r#"{"uuid": "1be26c0b"}"#);
    let b64 = dir.join("configdrive.b64");
    let script = format!("gzip -c {} | base64 > {}", iso.display(), b64.display());
    must("sh", &["-c", &script]);
    (iso, b64)
}

/// The disk's table as `sfdisk -J` reports it.
fn sfdisk(disk: &Path) -> Value {
    let out = must("sfdisk", &["-J", disk.to_str().unwrap()]);
    serde_json::from_str::<Value>(&out).unwrap()["partitiontable"].clone()
}

/// (start, size) in bytes of each partition, from sfdisk.
fn extents(table: &Value) -> Vec<(u64, u64)> {
    let sector = table["sectorsize"].as_u64().unwrap();
    table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * sector,
                p["size"].as_u64().unwrap() * sector,
            )
        })
        .collect()
}

/// `blkid -p -o export` of the partition at (offset, size) of `disk`.
fn blkid(disk: &Path, (offset, size): (u64, u64)) -> String {
    let (o, s) = (offset.to_string(), size.to_string());
    must(
        "blkid",
        &["-p", "-O", &o, "-S", &s, "-o", "export", disk.to_str().unwrap()],
    )
}

fn tag(blkid: &str, name: &str) -> String {
    blkid
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .to_owned()
}

/// Copy a partition out to a file of its own, for the checkers.
fn extract(disk: &Path, (offset, size): (u64, u64), to: &Path) -> PathBuf {
    let mut f = std::fs::File::open(disk).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; size as usize];
    f.read_exact(&mut buf).unwrap();
    std::fs::write(to, buf).unwrap();
    to.to_owned()
}

fn e2fsck_clean(part: &Path) {
    let out = run("e2fsck", &["-fn", part.to_str().unwrap()]);
    assert!(out.status.success(), "e2fsck: {}", text(&out));
}

/// The bytes of `disk` at `offset` equal the file `image`.
fn holds(disk: &Path, offset: u64, image: &Path) -> bool {
    let want = std::fs::read(image).unwrap();
    let mut f = std::fs::File::open(disk).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).unwrap();
    let mut got = vec![0u8; want.len()];
    f.read_exact(&mut got).unwrap();
    got == want
}

/// A deploy that must fail, saying `expect`, and leave `disk` as `before`.
fn assert_refused(out: &Output, expect: &str, disk: &Path, before: &[u8]) {
    assert!(!out.status.success(), "succeeded: {}", text(out));
    assert!(text(out).contains(expect), "expected {expect:?} in: {}", text(out));
    assert!(
        std::fs::read(disk).unwrap() == before,
        "a refused deploy changed the disk"
    );
}

/// The config drive's file, read back with isoinfo from the partition.
fn config_drive_file(disk: &Path, extent: (u64, u64), dir: &Path) -> String {
    let part = extract(disk, extent, &dir.join("cd.part"));
    must(
        "isoinfo",
        &[
            "-i",
            part.to_str().unwrap(),
            "-R",
            "-x",
            "/openstack/latest/meta_data.json",
        ],
    )
}

/// A TCP listener standing in for the ramdisk's port 10000: what it got.
fn done_listener() -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        got
    });
    (port, handle)
}

#[test]
fn bios_msdos_local_boot_on_target_agent_with_every_partition() {
    let dir = TempDir::new().unwrap();
    let disk = junk_disk(dir.path(), 256 * MIB);
    let image = ext4_image(dir.path(), "root.img", 40, "node-1\n");
    let (_, b64) = config_drive(dir.path());
    let agent = TargetAgent::start(&disk, IQN);
    let (port, done) = done_listener();
    let port = port.to_string();
    let report = deploy_ok(
        &agent.addr(),
        &[
            "--image",
            image.to_str().unwrap(),
            "--image-type",
            "partition",
            "--root-mb",
            "100",
            "--swap-mb",
            "32",
            "--ephemeral-mb",
            "64",
            "--configdrive",
            b64.to_str().unwrap(),
            "--boot-mode",
            "bios",
            "--boot-option",
            "local",
            "--notify-port",
            &port,
        ],
    );
    assert_eq!(
        done.join().unwrap(),
        b"done",
        "the ramdisk is told, with the legacy 4 bytes"
    );
    assert_eq!(report["notified"], true);
    drop(agent);

    let table = sfdisk(&disk);
    assert_eq!(table["label"], "dos");
    assert_eq!(
        table["id"].as_str().unwrap(),
        report["disk identifier"].as_str().unwrap()
    );
    let parts = table["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["83", "82", "83", "83"], "ephemeral, swap, config drive, root");
    let x = extents(&table);
    // Contiguous from 1 MiB, in whole MiB; the config drive rounded up to 1 MiB.
    assert_eq!(
        x,
        [
            (MIB, 64 * MIB),
            (65 * MIB, 32 * MIB),
            (97 * MIB, MIB),
            (98 * MIB, 100 * MIB)
        ]
    );
    let bootable: Vec<bool> = parts.iter().map(|p| p["bootable"] == true).collect();
    assert_eq!(bootable, [false, false, false, true], "root has the boot flag");

    let root = blkid(&disk, x[3]);
    assert_eq!(tag(&root, "UUID"), report["root uuid"].as_str().unwrap());
    assert!(holds(&disk, x[3].0, &image), "root holds the image");
    e2fsck_clean(&extract(&disk, x[3], &dir.path().join("root.part")));
    let ephemeral = blkid(&disk, x[0]);
    assert_eq!(
        (tag(&ephemeral, "TYPE"), tag(&ephemeral, "LABEL")),
        ("ext4".into(), "ephemeral0".into())
    );
    e2fsck_clean(&extract(&disk, x[0], &dir.path().join("eph.part")));
    let swap = blkid(&disk, x[1]);
    assert_eq!(
        (tag(&swap, "TYPE"), tag(&swap, "LABEL")),
        ("swap".into(), "swap1".into())
    );
    assert!(config_drive_file(&disk, x[2], dir.path()).contains("1be26c0b"));
    assert!(report["efi system partition uuid"].is_null());
    // The report's table is the disk's.
    let reported: Vec<(u64, u64)> = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(reported, x);
}

#[test]
fn uefi_gpt_on_tgtd_with_a_qcow2_image() {
    let dir = TempDir::new().unwrap();
    let disk = junk_disk(dir.path(), 256 * MIB);
    let raw = ext4_image(dir.path(), "root.raw", 48, "node-2\n");
    let qcow2 = dir.path().join("root.qcow2");
    compressed_qcow2(&raw, &qcow2);
    let (iso, _) = config_drive(dir.path());
    let tgtd = Tgtd::start();
    tgtd.add_target(1, IQN, &disk);
    let report = deploy_ok(
        &tgtd.addr(),
        &[
            "--image",
            qcow2.to_str().unwrap(),
            "--image-type",
            "partition",
            "--swap-mb",
            "16",
            "--ephemeral-mb",
            "32",
            "--ephemeral-format",
            "ext3",
            "--configdrive",
            iso.to_str().unwrap(),
            "--boot-mode",
            "uefi",
            "--boot-option",
            "local",
            "--efi-mb",
            "40",
            "--no-notify",
        ],
    );
    drop(tgtd);

    let verify = must("sgdisk", &["-v", disk.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let table = sfdisk(&disk);
    assert_eq!(table["label"], "gpt");
    assert_eq!(
        table["id"].as_str().unwrap().to_lowercase(),
        report["disk identifier"].as_str().unwrap()
    );
    let types: Vec<String> = table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(
        types,
        [
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", // EFI system
            "0fc63daf-8483-4772-8e79-3d69d8477de4", // ephemeral
            "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", // swap
            "0fc63daf-8483-4772-8e79-3d69d8477de4", // config drive
            "0fc63daf-8483-4772-8e79-3d69d8477de4", // root, the rest of the disk
        ]
    );
    let x = extents(&table);
    assert_eq!(
        &x[..4],
        [
            (MIB, 40 * MIB),
            (41 * MIB, 32 * MIB),
            (73 * MIB, 16 * MIB),
            (89 * MIB, MIB)
        ]
    );
    // Root runs to the last whole MiB before the backup GPT.
    assert_eq!(x[4], (90 * MIB, 255 * MIB - 90 * MIB));

    let esp = blkid(&disk, x[0]);
    assert_eq!(
        (tag(&esp, "TYPE"), tag(&esp, "LABEL")),
        ("vfat".into(), "efi-part".into())
    );
    assert_eq!(tag(&esp, "UUID"), report["efi system partition uuid"].as_str().unwrap());
    let esp_part = extract(&disk, x[0], &dir.path().join("esp.part"));
    let fsck = run("fsck.vfat", &["-n", esp_part.to_str().unwrap()]);
    assert!(fsck.status.success(), "fsck.vfat: {}", text(&fsck));
    let ephemeral = blkid(&disk, x[1]);
    assert_eq!(tag(&ephemeral, "TYPE"), "ext3");
    e2fsck_clean(&extract(&disk, x[1], &dir.path().join("eph.part")));
    assert_eq!(tag(&blkid(&disk, x[4]), "UUID"), report["root uuid"].as_str().unwrap());
    assert!(holds(&disk, x[4].0, &raw), "root holds the qcow2's contents");
    assert!(config_drive_file(&disk, x[3], dir.path()).contains("1be26c0b"));
}

#[test]
fn bios_gpt_local_boot_gets_a_bios_boot_partition_and_vfat_ephemeral() {
    let dir = TempDir::new().unwrap();
    let disk = junk_disk(dir.path(), 128 * MIB);
    let image = ext4_image(dir.path(), "root.img", 16, "node-3\n");
    let agent = TargetAgent::start(&disk, IQN);
    let report = deploy_ok(
        &agent.addr(),
        &[
            "--image",
            image.to_str().unwrap(),
            "--image-type",
            "partition",
            "--ephemeral-mb",
            "40",
            "--ephemeral-format",
            "vfat",
            "--boot-mode",
            "bios",
            "--boot-option",
            "local",
            "--disk-label",
            "gpt",
            "--no-notify",
        ],
    );
    drop(agent);
    let table = sfdisk(&disk);
    assert_eq!(table["label"], "gpt");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(
        parts[0]["type"].as_str().unwrap().to_lowercase(),
        "21686148-6449-6e6f-744e-656564454649"
    );
    let x = extents(&table);
    assert_eq!(&x[..2], [(MIB, MIB), (2 * MIB, 40 * MIB)]);
    assert_eq!(x.len(), 3, "BIOS boot, ephemeral, root");
    let eph = extract(&disk, x[1], &dir.path().join("eph.part"));
    let fsck = run("fsck.vfat", &["-n", eph.to_str().unwrap()]);
    assert!(
        fsck.status.success(),
        "fsck.vfat on junk-backed ephemeral: {}",
        text(&fsck)
    );
    assert_eq!(tag(&blkid(&disk, x[2]), "UUID"), report["root uuid"].as_str().unwrap());
    assert!(report["efi system partition uuid"].is_null());
}

/// Serve `body` once over HTTP on loopback; the URL.
fn http_once(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/configdrive", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
    });
    url
}

#[test]
fn whole_disk_images_with_and_without_a_config_drive() {
    let dir = TempDir::new().unwrap();
    let disk = junk_disk(dir.path(), 192 * MIB);
    let (_, b64) = config_drive(dir.path());
    let agent = TargetAgent::start(&disk, IQN);

    // A GPT image, smaller than the disk, with the config drive from a URL.
    let gpt = dir.path().join("gpt.img");
    std::fs::File::create(&gpt).unwrap().set_len(64 * MIB).unwrap();
    must(
        "sgdisk",
        &["-o", "-n", "1:2048:+30M", "-t", "1:8300", gpt.to_str().unwrap()],
    );
    let url = http_once(std::fs::read(&b64).unwrap());
    let report = deploy_ok(
        &agent.addr(),
        &[
            "--image",
            gpt.to_str().unwrap(),
            "--image-type",
            "whole-disk",
            "--configdrive",
            &url,
            "--no-notify",
        ],
    );
    let verify = must("sgdisk", &["-v", disk.to_str().unwrap()]);
    assert!(
        verify.contains("No problems found"),
        "backup GPT at the disk's end: {verify}"
    );
    let table = sfdisk(&disk);
    assert_eq!(
        table["id"].as_str().unwrap().to_lowercase(),
        report["disk identifier"].as_str().unwrap()
    );
    let x = extents(&table);
    assert_eq!(x.len(), 2);
    assert_eq!(x[0], (MIB, 30 * MIB), "the image's own partition");
    // The config drive partition: the last 64 MiB before the backup GPT.
    assert_eq!(x[1], (191 * MIB - 64 * MIB, 64 * MIB));
    assert_eq!(table["partitions"][1]["name"], "config-2");
    assert!(config_drive_file(&disk, x[1], dir.path()).contains("1be26c0b"));

    // An MBR image, no config drive: the disk is the image, and the
    // identifier is its signature.
    let mbr = dir.path().join("mbr.img");
    std::fs::File::create(&mbr).unwrap().set_len(40 * MIB).unwrap();
    let script = format!(
        "printf 'label: dos\\nlabel-id: 0x1badcafe\\nstart=2048, type=83, bootable\\n' | sfdisk -q {}",
        mbr.display()
    );
    must("sh", &["-c", &script]);
    let report = deploy_ok(
        &agent.addr(),
        &[
            "--image",
            mbr.to_str().unwrap(),
            "--image-type",
            "whole-disk",
            "--no-notify",
        ],
    );
    assert_eq!(report["disk identifier"], "0x1badcafe");
    assert!(holds(&disk, 0, &mbr), "the disk starts with the image, byte for byte");
    assert!(report["root uuid"].is_null());
}

#[test]
fn preserve_ephemeral_keeps_its_data_and_refuses_a_moved_layout() {
    let dir = TempDir::new().unwrap();
    let disk = junk_disk(dir.path(), 192 * MIB);
    let first = ext4_image(dir.path(), "first.img", 16, "first\n");
    let second = ext4_image(dir.path(), "second.img", 16, "second\n");
    let agent = TargetAgent::start(&disk, IQN);
    let common = [
        "--image-type",
        "partition",
        "--ephemeral-mb",
        "48",
        "--swap-mb",
        "8",
        "--no-notify",
    ];
    let go = |image: &Path, extra: &[&str]| {
        let mut args = vec!["--image", image.to_str().unwrap()];
        args.extend(common);
        args.extend(extra);
        deploy(&agent.addr(), &args)
    };

    // Preserving on a disk without a table is refused, untouched.
    let before = std::fs::read(&disk).unwrap();
    let out = go(&first, &["--preserve-ephemeral"]);
    assert_refused(&out, "no partition table", &disk, &before);

    let out = go(&first, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let x = extents(&sfdisk(&disk));
    let eph_before = extract(&disk, x[0], &dir.path().join("eph1.part"));
    let eph_uuid = tag(&blkid(&disk, x[0]), "UUID");

    // A layout that moves the ephemeral partition is refused.
    let before = std::fs::read(&disk).unwrap();
    let out = go(
        &second,
        &[
            "--preserve-ephemeral",
            "--boot-mode",
            "uefi",
            "--boot-option",
            "local",
            "--efi-mb",
            "16",
        ],
    );
    assert_refused(&out, "cannot keep the ephemeral partition", &disk, &before);

    let out = go(&second, &["--preserve-ephemeral", "--root-mb", "100"]);
    assert!(out.status.success(), "{}", text(&out));
    drop(agent);
    let x2 = extents(&sfdisk(&disk));
    assert_eq!(x2[0], x[0]);
    assert_eq!(x2[2], (x[2].0, 100 * MIB), "root takes its new size");
    let eph_after = extract(&disk, x[0], &dir.path().join("eph2.part"));
    assert!(
        std::fs::read(&eph_before).unwrap() == std::fs::read(&eph_after).unwrap(),
        "the ephemeral partition is byte for byte what it was"
    );
    assert_eq!(tag(&blkid(&disk, x[0]), "UUID"), eph_uuid);
    assert!(holds(&disk, x2[2].0, &second), "root holds the new image");
}

#[test]
fn bad_input_is_refused_before_the_disk_is_touched() {
    let dir = TempDir::new().unwrap();
    let disk = junk_disk(dir.path(), 96 * MIB);
    let before = std::fs::read(&disk).unwrap();
    let image = ext4_image(dir.path(), "root.img", 32, "x\n");
    let image = image.to_str().unwrap();
    let garbage = dir.path().join("garbage.cd");
    std::fs::write(&garbage, b"this is neither base64 of gzip nor an ISO image\x00\xff").unwrap();
    let big = dir.path().join("big.img");
    std::fs::File::create(&big).unwrap().set_len(97 * MIB).unwrap();
    let (iso, _) = config_drive(dir.path());
    let agent = TargetAgent::start(&disk, IQN);
    let bad_sum = format!("sha256:{}", "0".repeat(64));
    let partition = ["--image-type", "partition", "--no-notify"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--image", image, "--root-mb", "16"], "root partition holds 16 MiB"),
        (vec!["--image", image, "--root-mb", "200"], "do not fit the disk"),
        (
            vec!["--image", image, "--configdrive", garbage.to_str().unwrap()],
            "config drive",
        ),
        (
            vec!["--image", image, "--configdrive", "/nonexistent/cd"],
            "/nonexistent/cd",
        ),
        (
            vec!["--image", image, "--ephemeral-mb", "8", "--ephemeral-format", "btrfs"],
            "btrfs",
        ),
        (
            vec!["--image", image, "--ephemeral-mb", "8", "--ephemeral-format", "xfs"],
            "at least 300 MiB",
        ),
        (vec!["--image", image, "--checksum", &bad_sum], "checksum mismatch"),
        (
            vec![
                "--image",
                image,
                "--boot-mode",
                "uefi",
                "--boot-option",
                "local",
                "--disk-label",
                "msdos",
                "--efi-mb",
                "8",
                "--swap-mb",
                "8",
                "--ephemeral-mb",
                "8",
                "--root-mb",
                "20",
                "--configdrive",
                iso.to_str().unwrap(),
            ],
            "at most 4 primary partitions",
        ),
    ];
    let whole_disk = ["--image-type", "whole-disk", "--no-notify"];
    let cases = cases
        .into_iter()
        .map(|(args, expect)| (args, &partition, expect))
        .chain([
            (
                vec!["--image", big.to_str().unwrap()],
                &whole_disk,
                "nothing was written",
            ),
            (
                vec!["--image", image, "--configdrive", iso.to_str().unwrap()],
                &whole_disk,
                "no partition table",
            ),
            (
                vec!["--image", image, "--swap-mb", "8"],
                &whole_disk,
                "for partition images",
            ),
        ]);
    for (args, kind, expect) in cases {
        let mut all = args.clone();
        all.extend(kind);
        eprintln!("refusing {args:?}");
        assert_refused(&deploy(&agent.addr(), &all), expect, &disk, &before);
    }
}
