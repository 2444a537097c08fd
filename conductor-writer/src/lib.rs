//! `conductor-writer`: the provisioning side of a deploy.
//!
//! A userspace iSCSI initiator that partitions a node's disk, writes the
//! image at the wire's speed and tells the ramdisk it is `done`; also a tool
//! for one-off network imaging. Every rule of RFC 7143 lives in
//! [`iscsi_proto`]; this crate owns sockets, files, tasks and the command line.
//!
//! # Layout
//!
//! - [`initiator`]: a pipelined iSCSI initiator over tokio (login, many
//!   commands in flight within the target's window, R2T, Data-In, NOP).
//!
//! The image sources and the commands (`write`, `deploy`, ...) are still to
//! come.

pub mod initiator;
