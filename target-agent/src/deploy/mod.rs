//! `target-agent deploy`: what the legacy Ironic bash deploy ramdisk did.
//!
//! # Layout
//!
//! - [`params`]: the kernel command line and `parameters.txt`.
//! - [`hints`]: Ironic's root device hints and how a device matches them.
//! - [`disks`]: block devices as sysfs and udev describe them; waiting for one.
//! - [`net`]: the address the node reports.
//! - [`tftp`]: the legacy auth token, fetched from the boot server.
//! - [`api`]: the two vendor-passthru callbacks, retried.

pub mod api;
pub mod disks;
pub mod hints;
pub mod net;
pub mod params;
pub mod tftp;
