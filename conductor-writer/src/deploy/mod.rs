//! A node's disk made ready the way Ironic's `work_on_disk` left it.
//!
//! # Layout
//!
//! - [`layout`]: where each partition goes (Ironic's `make_partitions`).
//! - [`table`]: MBR and GPT as bytes, built and read.
//! - [`configdrive`]: the config drive, from a file or URL, decoded and checked.
//! - [`fsid`]: a file system's UUID and label, as `blkid` reports them.

pub mod configdrive;
pub mod fsid;
pub mod layout;
pub mod table;
