//! `target-agent`: what runs in the deploy ramdisk.
//!
//! It exposes the node's install disk over iSCSI so that the conductor can
//! write the image, then (in `deploy`) waits for the conductor's `done` on
//! TCP port 10000. Every rule of RFC 7143 lives in [`iscsi_proto`], and what
//! the ramdisk must agree on with the conductor (kernel parameters, root
//! device hints, callback bodies, CHAP derived from a deployment) in
//! [`deploy_contract`]; this crate owns sockets, files, tasks and the
//! command line.
//!
//! # Layout
//!
//! - [`backend`]: the block device seam: files, block devices, memory.
//! - [`lu`]: an SBC-3 disk emulated over a block device: what each SCSI
//!   command does.
//! - [`target`]: what a portal serves (targets, LUNs, credentials, limits)
//!   and the table of live sessions.
//! - [`server`]: the listener: accepts connections until told to stop.
//! - [`deploy`]: the deploy ramdisk's program, a drop-in for the legacy
//!   Ironic bash ramdisk.
//! - [`conn`]: one connection: login, then full feature phase with a reader
//!   and a writer task and commands running concurrently off the reactor.

pub mod backend;
pub mod conn;
pub mod deploy;
pub mod lu;
pub mod server;
pub mod target;
