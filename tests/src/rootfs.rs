//! Local boot fixtures: a root file system whose GRUB tools only record how
//! they were called (busybox inside), and a loop device to deploy it on.

use crate::must;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over `file`, with partition scanning; detached on drop.
#[derive(Debug)]
pub struct Loop(pub String);

impl Loop {
    pub fn attach(file: &Path) -> Self {
        let name = must("losetup", &["-f", "--show", "-P", file.to_str().expect("UTF-8 path")]);
        Loop(name.trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A root file system whose GRUB tools record how they were called.
pub fn grub_recording_tree(dir: &Path, grub: &str) -> PathBuf {
    let tree = dir.join("rootfs");
    for d in ["bin", "usr/sbin", "boot", "etc"] {
        std::fs::create_dir_all(tree.join(d)).expect("build the test root file system");
    }
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).expect("build the test root file system");
    for applet in ["sh", "grep"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).expect("build the test root file system");
    }
    let install = "#!/bin/sh\necho \"$@\" > /grub-install.log\n\
                   if grep -q ' [^ ]*/boot/efi ' /proc/mounts; then echo mounted; else echo absent; fi > /efi.log\n";
    let mkconfig = "#!/bin/sh\necho \"$@\" > /grub-mkconfig.log\n";
    for (name, script) in [
        (format!("{grub}-install"), install),
        (format!("{grub}-mkconfig"), mkconfig),
    ] {
        let path = tree.join("usr/sbin").join(name);
        std::fs::write(&path, script).expect("build the test root file system");
        must(
            "chmod",
            &["755", path.to_str().expect("build the test root file system")],
        );
    }
    tree
}

/// A file inside the ext4 file system on `partition`.
pub fn debugfs_cat(partition: &str, path: &str) -> String {
    must("debugfs", &["-R", &format!("cat {path}"), partition])
}
