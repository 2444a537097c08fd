//! Finding the install disk, as sysfs and the udev database describe it.
//!
//! The legacy script polled `/proc/partitions` for 60 s for a fixed list of names and knew
//! nothing of NVMe; the conductor then waited on a ramdisk that had silently given up. We read
//! `/sys/block` (so every disk type is seen, with the facts root device hints need), wait the
//! same way, and when nothing fits we say what was tried and what was there. udev is optional in
//! a ramdisk, so every fact it would give has a sysfs fallback in the same form udev uses: a
//! hint copied from Ironic's inspection data (which came from udev) matches either way.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use deploy_contract::hints::{DeviceFacts, DeviceKind, RootDeviceHints};

/// Where hardware is described; tests point it at a prepared tree.
#[derive(Debug, Clone)]
pub struct HardwareRoot {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub udev: PathBuf,
}

impl Default for HardwareRoot {
    fn default() -> Self {
        Self {
            sys: "/sys".into(),
            dev: "/dev".into(),
            udev: "/run/udev/data".into(),
        }
    }
}

/// Why no install disk could be used; each message says what to change on the kernel line.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "no install disk appeared within {:.0} s; tried {tried}; name the disk with disk=<name> or describe it with root_device=<hints>",
        .waited.as_secs_f64()
    )]
    NotFound { tried: String, waited: Duration },
    #[error(
        "no disk matches root_device hints {hints} within {:.0} s; fix the hints (or give disk=<name> instead); block devices seen:\n{seen}",
        .waited.as_secs_f64()
    )]
    NoHintMatch {
        hints: String,
        seen: String,
        waited: Duration,
    },
    #[error("cannot list block devices in {}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Every entry of `{sys}/block`, sorted by name. Unreadable facts are `None`.
pub fn list(root: &HardwareRoot) -> std::io::Result<Vec<DeviceFacts>> {
    let mut names: Vec<String> = fs::read_dir(root.sys.join("block"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names.iter().map(|name| facts(root, name)).collect())
}

fn facts(root: &HardwareRoot, name: &str) -> DeviceFacts {
    let dir = root.sys.join("block").join(name);
    let read = |rel: &str| {
        fs::read_to_string(dir.join(rel))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let udev = read("dev")
        .map(|dev| udev_properties(&root.udev, &dev))
        .unwrap_or_default();
    let env = |key: &str| udev.get(key).cloned();
    let wwid = read("device/wwid").or_else(|| read("wwid"));
    let naa = wwid.as_deref().and_then(naa_wwn);
    let kind = if name.starts_with("loop") {
        DeviceKind::Loop
    } else if name.starts_with("ram") || name.starts_with("zram") {
        DeviceKind::Ram
    } else if name.starts_with("sr") || read("device/type").as_deref() == Some("5") {
        DeviceKind::CdRom
    } else if name.starts_with("fd") {
        DeviceKind::Other
    } else {
        DeviceKind::Disk
    };
    DeviceFacts {
        path: root.dev.join(name.replace('!', "/")),
        size_bytes: read("size")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(512),
        model: read("device/model"),
        vendor: read("device/vendor"),
        serial: env("ID_SERIAL_SHORT")
            .or_else(|| read("device/serial"))
            .or_else(|| read("serial")),
        wwn: env("ID_WWN").or_else(|| naa.as_ref().map(|n| n.0.clone()).or(wwid)),
        wwn_with_extension: env("ID_WWN_WITH_EXTENSION").or_else(|| naa.as_ref().map(|n| n.1.clone())),
        wwn_vendor_extension: env("ID_WWN_VENDOR_EXTENSION").or_else(|| naa.and_then(|n| n.2)),
        kind,
        name: name.to_owned(),
    }
}

/// `E:KEY=VALUE` lines of `{udev}/b<major>:<minor>`.
fn udev_properties(udev: &Path, dev: &str) -> HashMap<String, String> {
    let numeric = dev.split_once(':').is_some_and(|(a, b)| {
        [a, b]
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
    });
    let text = if numeric {
        fs::read_to_string(udev.join(format!("b{dev}"))).unwrap_or_default()
    } else {
        String::new()
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("E:")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// A SCSI `naa.<hex>` wwid in udev's (`scsi_id`'s) form: `0x` + the first 16 hex digits as the
/// WWN, `0x` + all of them with the extension, and the rest as the vendor extension. Other
/// designators (`eui.`, `t10.`, NVMe's `nvme.`) stay verbatim, as udev's NVMe rule keeps them.
fn naa_wwn(wwid: &str) -> Option<(String, String, Option<String>)> {
    let hex = wwid.strip_prefix("naa.")?.to_ascii_lowercase();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (wwn, extension) = hex.split_at(hex.len().min(16));
    Some((
        format!("0x{wwn}"),
        format!("0x{hex}"),
        Some(extension).filter(|e| !e.is_empty()).map(|e| format!("0x{e}")),
    ))
}

/// The device node for a `disk=` entry (`sda`, `/dev/sda`, `cciss/c0d0`, `cciss!c0d0`,
/// `/dev/disk/by-id/...`), symlinks followed, if it exists under `{dev}` and is a block device
/// (or a regular file, which is what test trees hold).
pub fn resolve(root: &HardwareRoot, name: &str) -> Option<PathBuf> {
    let name = name.trim().replace('!', "/");
    let rel = Path::new(name.strip_prefix("/dev/").unwrap_or(&name).trim_start_matches('/'));
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let dev = root.dev.canonicalize().ok()?;
    let node = dev.join(rel).canonicalize().ok()?;
    let kind = fs::metadata(&node).ok()?.file_type();
    (node.starts_with(&dev) && (kind.is_block_device() || kind.is_file())).then_some(node)
}

/// One look: with hints, the first matching device (once its node exists); else the first
/// name of `disks` that resolves.
pub fn find(
    root: &HardwareRoot,
    hints: Option<&RootDeviceHints>,
    disks: &[String],
) -> Result<Option<PathBuf>, std::io::Error> {
    Ok(match hints {
        Some(hints) => hints.select(&list(root)?).and_then(|d| resolve(root, &d.name)),
        None => disks.iter().find_map(|name| resolve(root, name)),
    })
}

/// Looks every `step` until `timeout` (the legacy script: 60 s in 1 s steps). Blocking.
pub fn wait_for_disk(
    root: &HardwareRoot,
    hints: Option<&RootDeviceHints>,
    disks: &[String],
    timeout: Duration,
    step: Duration,
) -> Result<PathBuf, DiskError> {
    let start = Instant::now();
    loop {
        match find(root, hints, disks) {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(source) => {
                return Err(DiskError::Io {
                    path: root.sys.join("block"),
                    source,
                });
            }
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(match hints {
                Some(hints) => DiskError::NoHintMatch {
                    hints: hints.to_string(),
                    seen: seen(root),
                    waited,
                },
                None => DiskError::NotFound {
                    tried: tried(root, disks),
                    waited,
                },
            });
        }
        thread::sleep(step.min(timeout - waited).max(Duration::from_millis(1)));
    }
}

fn tried(root: &HardwareRoot, disks: &[String]) -> String {
    if disks.is_empty() {
        return "no names (disk= was empty)".into();
    }
    format!("{} under {}", disks.join(", "), root.dev.display())
}

/// One line per block device: what an operator needs to write a hint that matches.
fn seen(root: &HardwareRoot) -> String {
    let devices = match list(root) {
        Ok(devices) if !devices.is_empty() => devices,
        Ok(_) => return "  (none)".into(),
        Err(e) => return format!("  (cannot list {}: {e})", root.sys.join("block").display()),
    };
    let lines: Vec<String> = devices
        .iter()
        .map(|d| {
            let skipped = match d.kind {
                DeviceKind::Loop | DeviceKind::Ram | DeviceKind::CdRom => format!(" (never used: {:?})", d.kind),
                _ => String::new(),
            };
            let model = d.model.as_deref().unwrap_or("?");
            let serial = d.serial.as_deref().unwrap_or("?");
            format!(
                "  {}: {} GiB, model {model}, serial {serial}{skipped}",
                d.name,
                d.size_bytes >> 30
            )
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn put(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// One `file=value` a line under `sys/block`; each value is written padded, as sysfs pads.
    const SYSFS: &str = "
        sda/size=209715200
        sda/dev=8:0
        sda/device/model=QEMU HARDDISK
        sda/device/vendor=ATA
        nvme0n1/size=1048576000
        nvme0n1/dev=259:0
        nvme0n1/device/model=Samsung SSD 970 EVO
        nvme0n1/device/serial=S4EWNX0N123456
        nvme0n1/device/wwid=eui.0025388b71b1a2b3
        sdb/size=419430400
        sdb/dev=8:16
        sdb/device/wwid=naa.600605b0060547c01b9a4cce1d70c9c5
        loop0/size=0
        loop0/dev=7:0
        sr0/size=2097152
        sr0/dev=11:0
        sr0/device/type=5
        cciss!c0d0/size=20971520
        cciss!c0d0/dev=104:0
        cciss!c0d0/device/type=0";

    /// sda (udev knows it), nvme0n1 (sysfs only), sdb (naa wwid, no node yet), loop0, sr0, cciss!c0d0.
    fn tree() -> (TempDir, HardwareRoot) {
        let tmp = tempfile::tempdir().unwrap();
        let at = |rel: &str| tmp.path().join(rel);
        let root = HardwareRoot {
            sys: at("sys"),
            dev: at("dev"),
            udev: at("udev"),
        };
        for line in SYSFS.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (file, value) = line.split_once('=').unwrap();
            put(&root.sys.join("block").join(file), &format!("{value}   \n"));
        }
        let udev = "S:disk/by-id/ata-QEMU_HARDDISK_QM00001\nE:ID_SERIAL_SHORT=QM00001\nE:ID_WWN=0x5000c500680510cb\n";
        put(&root.udev.join("b8:0"), &format!("{udev}E:ID_EMPTY=\n"));
        for node in ["sda", "nvme0n1", "cciss/c0d0"] {
            put(&root.dev.join(node), "");
        }
        fs::create_dir_all(root.dev.join("disk/by-id")).unwrap();
        std::os::unix::fs::symlink("../../sda", root.dev.join("disk/by-id/foo")).unwrap();
        (tmp, root)
    }

    fn node(root: &HardwareRoot, rel: &str) -> PathBuf {
        root.dev.join(rel).canonicalize().unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn text_facts(d: &DeviceFacts) -> [Option<&str>; 6] {
        [
            &d.model,
            &d.vendor,
            &d.serial,
            &d.wwn,
            &d.wwn_with_extension,
            &d.wwn_vendor_extension,
        ]
        .map(|f| f.as_deref())
    }

    #[test]
    fn list_reads_sysfs_and_udev() {
        let (_tmp, root) = tree();
        let devices = list(&root).unwrap();
        let kinds: Vec<_> = devices
            .iter()
            .map(|d| (d.name.as_str(), d.kind, d.size_bytes >> 30))
            .collect();
        use DeviceKind::*;
        let want = [
            ("cciss!c0d0", Disk, 10),
            ("loop0", Loop, 0),
            ("nvme0n1", Disk, 500),
            ("sda", Disk, 100),
        ];
        assert_eq!(kinds[..4], want);
        assert_eq!(kinds[4..], [("sdb", Disk, 200), ("sr0", CdRom, 1)]);
        let [cciss, _, nvme, sda, sdb, _] = &devices[..] else {
            panic!("{devices:?}")
        };
        assert_eq!(
            (&cciss.path, &sda.path),
            (&root.dev.join("cciss/c0d0"), &root.dev.join("sda"))
        );
        let (model, serial) = (Some("QEMU HARDDISK"), Some("QM00001"));
        assert_eq!(
            text_facts(sda),
            [model, Some("ATA"), serial, Some("0x5000c500680510cb"), None, None]
        );
        let (model, serial) = (Some("Samsung SSD 970 EVO"), Some("S4EWNX0N123456"));
        assert_eq!(
            text_facts(nvme),
            [model, None, serial, Some("eui.0025388b71b1a2b3"), None, None]
        );
        let (wwn, ext) = (Some("0x600605b0060547c0"), Some("0x1b9a4cce1d70c9c5"));
        assert_eq!(
            text_facts(sdb),
            [None, None, None, wwn, Some("0x600605b0060547c01b9a4cce1d70c9c5"), ext]
        );
    }

    #[test]
    fn list_without_sys_block_is_an_error() {
        let (tmp, mut root) = tree();
        root.sys = tmp.path().join("nowhere");
        assert_eq!(list(&root).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        let err = wait_for_disk(
            &root,
            Some(&RootDeviceHints::default()),
            &[],
            Duration::ZERO,
            Duration::ZERO,
        );
        let err = err.unwrap_err();
        assert!(err.to_string().starts_with("cannot list block devices in "), "{err}");
        assert!(matches!(err, DiskError::Io { .. }), "{err:?}");
        let by_name = wait_for_disk(&root, None, &names(&["sda"]), Duration::ZERO, Duration::ZERO);
        assert_eq!(by_name.unwrap(), node(&root, "sda"), "a disk= name needs no sysfs");
    }

    #[test]
    fn resolve_takes_every_name_form() {
        let (_tmp, root) = tree();
        let sda = node(&root, "sda");
        for name in ["sda", "/dev/sda", " sda ", "/dev/disk/by-id/foo", "disk/by-id/foo"] {
            assert_eq!(resolve(&root, name), Some(sda.clone()), "{name}");
        }
        assert_eq!(resolve(&root, "nvme0n1"), Some(node(&root, "nvme0n1")));
        for name in ["cciss/c0d0", "cciss!c0d0", "/dev/cciss/c0d0"] {
            assert_eq!(resolve(&root, name), Some(node(&root, "cciss/c0d0")), "{name}");
        }
        for name in ["sdz", "", "/dev/", "disk", "cciss", "../dev/sda", "disk/../sda", "hda"] {
            assert_eq!(resolve(&root, name), None, "{name}");
        }
        std::os::unix::fs::symlink("../../../sys/block/sda/size", root.dev.join("disk/by-id/escape")).unwrap();
        assert_eq!(
            resolve(&root, "disk/by-id/escape"),
            None,
            "a link out of {{dev}} is refused"
        );
    }

    #[test]
    fn find_uses_hints_first_then_the_disk_list() {
        let (_tmp, root) = tree();
        let hint = |text: &str| RootDeviceHints::parse(text).unwrap();
        let found = |h: Option<&RootDeviceHints>, disks: &[&str]| find(&root, h, &names(disks)).unwrap();
        assert_eq!(
            found(Some(&hint("serial=s4ewnx0n123456")), &["sda"]),
            Some(node(&root, "nvme0n1"))
        );
        assert_eq!(found(Some(&hint("size=100")), &[]), Some(node(&root, "sda")));
        assert_eq!(
            found(Some(&hint("wwn=0x5000C500680510CB,vendor=ata")), &[]),
            Some(node(&root, "sda"))
        );
        assert_eq!(
            found(Some(&hint("size=%3C%3D20")), &[]),
            Some(node(&root, "cciss/c0d0"))
        );
        assert_eq!(found(Some(&hint("size=1")), &["sda"]), None, "only sr0 is 1 GiB");
        assert_eq!(
            found(Some(&hint("wwn=0x600605b0060547c0")), &["sda"]),
            None,
            "sdb has no node yet"
        );
        assert_eq!(found(None, &["vda", "sda", "nvme0n1"]), Some(node(&root, "sda")));
        assert_eq!(
            found(None, &super::super::params::DEFAULT_DISKS),
            Some(node(&root, "cciss/c0d0"))
        );
        assert_eq!(found(None, &["vda"]), None);
    }

    #[test]
    fn waiting_times_out_with_what_was_tried_and_seen() {
        let (_tmp, root) = tree();
        let (timeout, step) = (Duration::from_millis(30), Duration::from_millis(10));
        let err = wait_for_disk(&root, None, &names(&["vdz", "sdz"]), timeout, step).unwrap_err();
        assert!(
            matches!(&err, DiskError::NotFound { waited, .. } if *waited >= timeout),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("tried vdz, sdz under ") && text.contains("disk=<name>"),
            "{text}"
        );
        let hints = RootDeviceHints::parse("model=intel,size=%3E%3D%20500").unwrap();
        let err = wait_for_disk(&root, Some(&hints), &[], timeout, step)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hints size=>=500,model=intel"), "{err}");
        assert!(
            err.contains("\n  sda: 100 GiB, model QEMU HARDDISK, serial QM00001\n"),
            "{err}"
        );
        assert!(
            err.contains("\n  loop0: 0 GiB, model ?, serial ? (never used: Loop)"),
            "{err}"
        );
    }

    #[test]
    fn waiting_sees_a_node_that_appears_later() {
        let (_tmp, root) = tree();
        let hints = RootDeviceHints::parse("wwn=0x600605b0060547c0").unwrap();
        assert_eq!(find(&root, Some(&hints), &[]).unwrap(), None);
        let sdb = root.dev.join("sdb");
        let maker = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            put(&sdb, "");
        });
        let found = wait_for_disk(
            &root,
            Some(&hints),
            &[],
            Duration::from_secs(30),
            Duration::from_millis(5),
        );
        maker.join().unwrap();
        assert_eq!(found.unwrap(), node(&root, "sdb"));
    }
}
