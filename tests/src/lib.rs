//! Fixtures for the cross-crate tests.
//!
//! - [`tgtd`]: a private tgtd (the legacy ramdisk's target) on loopback, with
//!   file-backed LUNs, started and stopped by the test.
//! - [`agent`]: our own `target-agent serve` as a process, for the same tests.
//! - [`initiator`]: a deliberately simple blocking initiator over
//!   `iscsi-proto`, one command at a time, to drive any target from a test.
//!
//! Tests that use them need root (tgtd) and the Debian packages the README's
//! test command installs.

pub mod agent;
pub mod initiator;
pub mod tgtd;

/// Run `qemu-img ARGS` (Debian qemu-utils); panics with its message on failure.
pub fn qemu_img(args: &[&str]) {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img (Debian qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
