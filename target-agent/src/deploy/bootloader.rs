//! A local boot: GRUB installed into the deployed root file system, as the
//! legacy ramdisk's `install_bootloader` did after the conductor's `done`.
//!
//! The root partition is the disk's last one (Ironic always puts it last);
//! for UEFI the partition whose FAT label is `efi-part` is mounted on
//! `/boot/efi`. `/dev`, `/sys` and `/proc` are bind-mounted, then
//! `grub2-install` (or `grub-install`) and `grub2-mkconfig` run in a chroot.
//! Everything mounted is unmounted again, whatever happened.
//!
//! The work is done by the ramdisk's own tools (`blockdev`, `mount`,
//! `umount`, `chroot`: util-linux, coreutils or busybox): they are what a
//! distribution's GRUB expects to find mounted.

use deploy_contract::kernel::BootMode;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What to install, and where.
#[derive(Debug, Clone)]
pub struct Request {
    pub disk: PathBuf,
    pub boot_mode: BootMode,
    /// Where the root file system is mounted.
    pub mount_point: PathBuf,
    /// `/sys/block`, where the disk's partitions are listed.
    pub sys_block: PathBuf,
}

/// Install the boot loader; the error is what goes to the API.
pub fn install(request: &Request) -> Result<(), String> {
    reread_partitions(request);
    let partitions = wait_for_partitions(request, Duration::from_secs(10))?;
    let Some(root) = partitions.last() else {
        return Err(format!("{} has no partitions", request.disk.display()));
    };
    let mut mounts = Mounts::default();
    let result = install_mounted(request, root, &partitions, &mut mounts);
    mounts.unmount_all();
    let _ = Command::new("sync").status();
    result
}

fn install_mounted(request: &Request, root: &Path, partitions: &[PathBuf], mounts: &mut Mounts) -> Result<(), String> {
    let target = &request.mount_point;
    std::fs::create_dir_all(target).map_err(|e| format!("cannot make {}: {e}", target.display()))?;
    mounts.mount(&[root.as_os_str(), target.as_os_str()])?;
    let bind = [OsStr::new("-o"), OsStr::new("bind")];
    for dir in ["dev", "sys", "proc"] {
        let inside = target.join(dir);
        std::fs::create_dir_all(&inside).map_err(|e| format!("cannot make {}: {e}", inside.display()))?;
        let outside = Path::new("/").join(dir);
        mounts.mount(&[bind[0], bind[1], outside.as_os_str(), inside.as_os_str()])?;
    }
    if request.boot_mode == BootMode::Uefi {
        let esp = partitions
            .iter()
            .find(|p| fat_label(p).as_deref() == Some("efi-part"))
            .ok_or_else(|| format!("no partition of {} is labelled efi-part", request.disk.display()))?;
        let efi = target.join("boot/efi");
        std::fs::create_dir_all(&efi).map_err(|e| format!("cannot make {}: {e}", efi.display()))?;
        mounts.mount(&[esp.as_os_str(), efi.as_os_str()])?;
    }
    // GRUB 2 is called grub2-* on Red Hat-like systems, grub-* elsewhere.
    let version = if target.join("usr/sbin/grub2-install").exists() {
        "2"
    } else {
        ""
    };
    let disk = request.disk.display();
    chroot(target, &format!("/usr/sbin/grub{version}-install {disk}"))?;
    chroot(
        target,
        &format!("/usr/sbin/grub{version}-mkconfig -o /boot/grub{version}/grub.cfg"),
    )?;
    info!(disk = %disk, "boot loader installed");
    Ok(())
}

/// Run `command` with `/bin/sh -c` inside `root`.
fn chroot(root: &Path, command: &str) -> Result<(), String> {
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", command])
        .output()
        .map_err(|e| format!("cannot run chroot: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!("{command} failed ({}): {}", out.status, stderr.trim()))
}

/// The partition table changed under the kernel's feet: ask it to re-read.
/// Kernels without the partition parsers (or a loop device) see nothing on
/// BLKRRPART; `partx -a` then parses the table itself and adds them.
fn reread_partitions(request: &Request) {
    let steps: [(&str, &[&str]); 3] = [("blockdev", &["--rereadpt"]), ("partx", &["-a"]), ("partx", &["-u"])];
    for (program, args) in steps {
        if !partitions(request).is_empty() && program == "partx" {
            return;
        }
        match Command::new(program).args(args).arg(&request.disk).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => warn!(program, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "re-reading partitions"),
            Err(e) => warn!(program, error = %e, "re-reading partitions"),
        }
    }
}

/// The disk's partitions in number order, from sysfs: `<disk>/<part>/partition`.
fn partitions(request: &Request) -> Vec<PathBuf> {
    let Some(name) = request.disk.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(request.sys_block.join(name)) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let number = std::fs::read_to_string(e.path().join("partition")).ok()?;
            let node = request.disk.parent()?.join(e.file_name());
            Some((number.trim().parse().ok()?, node))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, node)| node).collect()
}

/// Partitions appear once the kernel has re-read the table and devtmpfs
/// (or udev) made their nodes.
fn wait_for_partitions(request: &Request, timeout: Duration) -> Result<Vec<PathBuf>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = partitions(request);
        if !found.is_empty() && found.iter().all(|p| p.exists()) {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no partitions of {} appeared within {} s",
                request.disk.display(),
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The volume label in a FAT boot sector (what `blkid` calls LABEL, as
/// `mkfs.vfat -n` writes it), if `partition` holds a FAT file system.
fn fat_label(partition: &Path) -> Option<String> {
    use std::io::Read;
    let mut sector = [0u8; 512];
    std::fs::File::open(partition).ok()?.read_exact(&mut sector).ok()?;
    if sector[510..512] != [0x55, 0xaa] {
        return None;
    }
    let label = if &sector[82..87] == b"FAT32" {
        &sector[71..82]
    } else if &sector[54..57] == b"FAT" {
        &sector[43..54]
    } else {
        return None;
    };
    Some(String::from_utf8_lossy(label).trim_end().to_owned())
}

/// What is mounted, to unmount in reverse order.
#[derive(Debug, Default)]
struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    /// `mount ARGS`; the last argument is the mount point.
    fn mount(&mut self, args: &[&OsStr]) -> Result<(), String> {
        let out = Command::new("mount")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
            return Err(format!(
                "mount {} failed: {}",
                shown.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if let Some(point) = args.last() {
            self.points.push(PathBuf::from(point));
        }
        Ok(())
    }

    fn unmount_all(&mut self) {
        while let Some(point) = self.points.pop() {
            match Command::new("umount").arg(&point).output() {
                Ok(out) if out.status.success() => {}
                _ => {
                    // Busy (a GRUB helper still running): detach it lazily.
                    let _ = Command::new("umount").arg("-l").arg(&point).status();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_labels_are_read_from_the_boot_sector() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("esp");
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(40 << 20))
            .expect("file");
        let out = Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "efi-part"])
            .arg(&path)
            .output()
            .expect("mkfs.vfat (dosfstools)");
        assert!(out.status.success());
        assert_eq!(fat_label(&path).as_deref(), Some("efi-part"));
        let out = Command::new("mkfs.vfat")
            .args(["-F", "16", "-n", "OTHER"])
            .arg(&path)
            .output()
            .expect("mkfs.vfat");
        assert!(out.status.success());
        assert_eq!(fat_label(&path).as_deref(), Some("OTHER"));
        std::fs::write(&path, vec![0u8; 4096]).expect("zero");
        assert_eq!(fat_label(&path), None);
    }

    #[test]
    fn partitions_come_from_sysfs_in_number_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path().join("block");
        for (name, number) in [("nvme0n1p10", "10"), ("nvme0n1p2", "2"), ("nvme0n1p1", "1")] {
            let p = sys.join("nvme0n1").join(name);
            std::fs::create_dir_all(&p).expect("dir");
            std::fs::write(p.join("partition"), format!("{number}\n")).expect("partition");
        }
        std::fs::create_dir_all(sys.join("nvme0n1/queue")).expect("not a partition");
        let request = Request {
            disk: "/dev/nvme0n1".into(),
            boot_mode: BootMode::Bios,
            mount_point: dir.path().join("mnt"),
            sys_block: sys,
        };
        let found: Vec<String> = partitions(&request).iter().map(|p| p.display().to_string()).collect();
        assert_eq!(found, ["/dev/nvme0n1p1", "/dev/nvme0n1p2", "/dev/nvme0n1p10"]);
    }
}
