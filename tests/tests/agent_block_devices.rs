//! `target-agent serve` on block devices (loop devices with 512- and
//! 4096-byte sectors) and on a file with 4096-byte blocks: the capacity and
//! block size initiators see, and data written through iSCSI landing on the
//! device. Needs root (losetup).

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::TargetAgent;
use integration_tests::initiator::Session;
use iscsi_proto::Lun;
use iscsi_proto::login::InitiatorConfig;
use iscsi_proto::pdu::Isid;
use iscsi_proto::scsi::data::ReadCapacity16Data;
use iscsi_proto::scsi::{Command, ReadWrite, ScsiStatus};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use tempfile::NamedTempFile;

const IQN: &str = "iqn.2024-01.test.agent:blockdev";
const SIZE: u64 = 32 << 20;

/// A loop device over a sparse file, detached on drop.
struct Loop {
    device: PathBuf,
    _file: NamedTempFile,
}

impl Loop {
    fn new(sector_size: u32) -> Self {
        let file = NamedTempFile::new().unwrap();
        file.as_file().set_len(SIZE).unwrap();
        let out = Process::new("losetup")
            .args(["--find", "--show", "--sector-size", &sector_size.to_string()])
            .arg(file.path())
            .output()
            .expect("run losetup (util-linux; tests run as root)");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Self { device, _file: file }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Process::new("losetup").arg("--detach").arg(&self.device).status();
    }
}

/// Capacity and block size as an initiator sees them, then a write and a
/// read-back at the last blocks, compared with what the device holds.
fn exercise(agent: &TargetAgent, device: &Path, block_size: u32) {
    let config = InitiatorConfig::new(
        "iqn.2024-01.test.agent:initiator",
        Some(IQN.into()),
        Isid::random([3; 6]),
    );
    let mut s = Session::login(&agent.addr(), config).unwrap().unwrap();
    let lun = Lun::from_index(1);
    let cap = s
        .command(
            lun,
            Command::ReadCapacity16 { allocation_length: 32 }.build().as_bytes(),
            &[],
            32,
        )
        .unwrap();
    let cap = ReadCapacity16Data::parse(&cap.data).unwrap();
    assert_eq!(cap.block_length, block_size);
    assert_eq!((cap.returned_lba + 1) * u64::from(block_size), SIZE);
    let blocks = 8u32;
    let lba = SIZE / u64::from(block_size) - u64::from(blocks);
    let data: Vec<u8> = (0..blocks * block_size).map(|i| (i % 251) as u8).collect();
    let write = s
        .command(
            lun,
            Command::Write(ReadWrite::new(lba, blocks)).build().as_bytes(),
            &data,
            0,
        )
        .unwrap();
    assert_eq!(write.status, ScsiStatus::GOOD, "{:?}", write.sense);
    let read = s
        .command(
            lun,
            Command::Read(ReadWrite::new(lba, blocks)).build().as_bytes(),
            &[],
            data.len() as u32,
        )
        .unwrap();
    assert!(read.data == data);
    let past = s
        .command(
            lun,
            Command::Read(ReadWrite::new(lba + u64::from(blocks), 1))
                .build()
                .as_bytes(),
            &[],
            block_size,
        )
        .unwrap();
    assert_eq!(past.status, ScsiStatus::CHECK_CONDITION, "one block past the end");
    s.logout().unwrap();
    let on_device = std::fs::read(device).unwrap();
    let at = (lba * u64::from(block_size)) as usize;
    assert!(
        on_device[at..at + data.len()] == data[..],
        "the device holds what was written"
    );
}

#[test]
fn loop_device_with_512_byte_sectors() {
    let dev = Loop::new(512);
    let agent = TargetAgent::start(&dev.device, IQN);
    exercise(&agent, &dev.device, 512);
}

#[test]
fn loop_device_with_4096_byte_sectors() {
    let dev = Loop::new(4096);
    let agent = TargetAgent::start(&dev.device, IQN);
    exercise(&agent, &dev.device, 4096);
}

#[test]
fn file_with_4096_byte_blocks() {
    let file = NamedTempFile::new().unwrap();
    file.as_file().set_len(SIZE).unwrap();
    let agent = TargetAgent::start_with(file.path(), IQN, &["--block-size", "4096"]);
    exercise(&agent, file.path(), 4096);
}
