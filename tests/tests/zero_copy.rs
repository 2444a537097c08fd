//! The two data paths, side by side: without data digests, image data goes
//! from the image file straight to the socket (`sendfile`), and at
//! target-agent straight from the socket into the disk (`splice`) and back
//! out of it for reads; with digests, everything goes through memory. Both
//! must put the same bytes on the disk, against target-agent and tgtd, for
//! raw images and for qcow2 images whose clusters are stored as they are or
//! compressed. The writer's summary and the agent's log say which path the
//! bytes took, so a zero-copy path that quietly stopped working fails here.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::TargetAgent;
use integration_tests::tgtd::Tgtd;
use integration_tests::{Rng, compressed_qcow2, conductor_writer as writer, output_text as text, qemu_img};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const IQN: &str = "iqn.2024-01.test.zero-copy:disk";
const DISK: u64 = 64 << 20;

/// A raw image: random data, zeroed blocks written out, a hole, data that
/// compresses well, and a size that ends inside a block.
fn raw_image(dir: &Path) -> PathBuf {
    let path = dir.join("image.raw");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len((20 << 20) + 700).unwrap();
    file.write_all_at(&Rng(0x5eed_0c0b).bytes(9 << 20), 0).unwrap();
    file.write_all_at(&vec![0; 1 << 20], 9 << 20).unwrap();
    let text: Vec<u8> = (0..(6u32 << 20) + 700).map(|i| (i % 251) as u8 + 1).collect();
    file.write_all_at(&text, 14 << 20).unwrap();
    path
}

fn disk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![0xee; DISK as usize]).unwrap();
    path
}

/// Write `image` to `url`, check the summary, and compare the disk with the
/// image's bytes (`flat`). Returns the summary.
fn write(image: &Path, url: &str, disk: &Path, flat: &[u8], extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["write", image.to_str().unwrap(), url, "--json"];
    args.extend_from_slice(extra);
    let out = writer(&args);
    assert!(out.status.success(), "write {image:?} {extra:?}: {}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let on_disk = std::fs::read(disk).unwrap();
    let first_diff = on_disk[..flat.len()].iter().zip(flat).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "{image:?} {extra:?}: the disk differs from the image");
    summary
}

fn stored(summary: &serde_json::Value) -> u64 {
    summary["stored_bytes"].as_u64().unwrap()
}

fn data(summary: &serde_json::Value) -> u64 {
    summary["data_bytes"].as_u64().unwrap()
}

/// The agent's log once `connections` connections have said what data
/// they moved (each says so as it closes).
fn settled(agent: &TargetAgent, connections: usize) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = agent.output();
        if log.matches("data moved:").count() >= connections || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The MiB the agent's "data moved" lines say went each way.
fn moved(log: &str) -> [f64; 4] {
    let mut total = [0.0; 4];
    for line in log.lines().filter(|l| l.contains("data moved:")) {
        let numbers: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse::<f64>().ok()).collect();
        assert_eq!(numbers.len(), 4, "{line}");
        for (t, n) in total.iter_mut().zip(numbers) {
            *t += n;
        }
    }
    total
}

#[test]
fn both_paths_write_the_same_bytes_to_target_agent() {
    let dir = TempDir::new().unwrap();
    let raw = raw_image(dir.path());
    let flat = std::fs::read(&raw).unwrap();
    let stored_qcow2 = dir.path().join("stored.qcow2");
    let raw_arg = raw.to_str().unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw_arg,
        stored_qcow2.to_str().unwrap(),
    ]);
    let compressed = dir.path().join("compressed.qcow2");
    compressed_qcow2(&raw, &compressed);

    for (image, all_stored) in [(&raw, true), (&stored_qcow2, true), (&compressed, false)] {
        // Without digests: straight from the file, straight into the disk.
        let disk = disk(dir.path(), "agent.img");
        let agent = TargetAgent::start(&disk, IQN);
        let url = format!("iscsi://{}/{IQN}/1", agent.addr());
        let summary = write(image, &url, &disk, &flat, &[]);
        // Zero blocks and the hole are not data; the 10 MiB hole and the
        // written-out zeroes leave 15 MiB and the last partial block.
        assert_eq!(data(&summary), (15 << 20) + 1024, "{image:?}: {summary}");
        if image == &raw {
            // All but the image's last, partial block, which is padded in memory.
            assert_eq!(stored(&summary), 15 << 20, "{image:?}: {summary}");
        } else if all_stored {
            // qcow2 stores the last block whole.
            assert_eq!(stored(&summary), data(&summary), "{image:?}: {summary}");
        } else {
            // Random clusters do not compress: qemu-img stores them as they are.
            assert_eq!(
                stored(&summary),
                9 << 20,
                "{image:?}: compressed clusters are read: {summary}"
            );
        }
        let out = writer(&["verify", image.to_str().unwrap(), &url]);
        assert!(out.status.success(), "verify {image:?}: {}", text(&out));
        let log = settled(&agent, 2);
        let [spliced_in, buffered_in, spliced_out, _] = moved(&log);
        assert!(spliced_in >= 14.0, "{image:?}: {:?}\n{log}", moved(&log));
        assert!(buffered_in < 1.0, "{image:?}: only short segments through memory");
        assert!(spliced_out >= 14.0, "{image:?}: verify's reads go out spliced");

        // With header and data digests: through memory on both ends.
        let disk = self::disk(dir.path(), "agent-digests.img");
        let agent = TargetAgent::start(&disk, IQN);
        let url = format!("iscsi://{}/{IQN}/1", agent.addr());
        let summary = write(image, &url, &disk, &flat, &["--header-digest", "--data-digest"]);
        assert_eq!(stored(&summary), 0, "{image:?}: a data digest needs the bytes");
        let out = writer(&["verify", image.to_str().unwrap(), &url, "--data-digest"]);
        assert!(out.status.success(), "verify {image:?}: {}", text(&out));
        let log = settled(&agent, 2);
        let [spliced_in, buffered_in, spliced_out, buffered_out] = moved(&log);
        assert_eq!((spliced_in, spliced_out), (0.0, 0.0), "{image:?}\n{log}");
        assert!(
            buffered_in >= 15.0 && buffered_out >= 15.0,
            "{image:?}: {:?}",
            moved(&log)
        );
    }
}

#[test]
fn both_paths_write_the_same_bytes_to_tgtd() {
    let dir = TempDir::new().unwrap();
    let raw = raw_image(dir.path());
    let flat = std::fs::read(&raw).unwrap();
    let disk = disk(dir.path(), "tgtd.img");
    let tgtd = Tgtd::start();
    tgtd.add_target(1, IQN, &disk);
    let url = format!("iscsi://{}/{IQN}/1", tgtd.addr());
    let summary = write(&raw, &url, &disk, &flat, &[]);
    assert_eq!(stored(&summary), 15 << 20, "{summary}");
    std::fs::write(&disk, vec![0xee; DISK as usize]).unwrap();
    // tgtd offers digests only when told to.
    tgtd.set_param(1, "HeaderDigest", "CRC32C");
    tgtd.set_param(1, "DataDigest", "CRC32C");
    let summary = write(&raw, &url, &disk, &flat, &["--header-digest", "--data-digest"]);
    assert_eq!(stored(&summary), 0, "{summary}");
}
