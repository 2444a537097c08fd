//! `conductor-writer`: the provisioning side of a deploy.
//!
//! A userspace iSCSI initiator that partitions a node's disk, writes the
//! image at the wire's speed and tells the ramdisk it is `done`; also a tool
//! for one-off network imaging. Every rule of RFC 7143 lives in
//! [`iscsi_proto`], and what the conductor must agree on with the ramdisk
//! (kernel parameters, root device hints, callback bodies, CHAP derived from
//! a deployment) in [`deploy_contract`]; this crate owns sockets, files,
//! tasks and the command line.
//!
//! # Layout
//!
//! - [`connect`]: logging in to a LUN (CHAP, digests, several sessions),
//!   logging out, and the ramdisk's `done` on port 10000.
//! - [`initiator`]: a pipelined iSCSI initiator over tokio (login, many
//!   commands in flight within the target's window, R2T, Data-In, NOP).
//! - [`source`]: disk images (raw, qcow2) as a stream of data and zero runs,
//!   and checksums of image files.
//! - [`disk`]: a remote LUN's geometry and abilities; commands retried as
//!   SAM-5 expects.
//! - [`write`]: an image onto a disk, data as WRITE (16), zeroes as WRITE
//!   SAME (16), many commands in flight.
//! - [`capture`]: a disk back out into a sparse raw file or a qcow2.
//!
//! - [`deploy`]: a node's disk partitioned, formatted and imaged as Ironic's
//!   `work_on_disk` did, validated before the first write.
//!
//! - [`service`]: `serve`, a stand-alone deploy service answering the
//!   legacy ramdisk's callbacks, with provision states kept in SQLite or,
//!   for several instances, PostgreSQL.
//! - [`url`]: `iscsi://` URLs as libiscsi and QEMU write them.
//! - [`tls`]: rustls for the HTTP client and the service's own API.
//! - [`cli`]: the command line, its flags and commands (`main.rs` only
//!   starts logging and the runtime).

pub mod capture;
pub mod cli;
pub mod connect;
pub mod deploy;
pub mod disk;
pub mod initiator;
pub mod service;
pub mod source;
pub mod tls;
pub mod url;
pub mod write;
