//! `conductor-writer`: the provisioning side of a deploy.
//!
//! A userspace iSCSI initiator that partitions a node's disk, writes the
//! image at the wire's speed and tells the ramdisk it is `done`; also a tool
//! for one-off network imaging. Every rule of RFC 7143 lives in
//! [`iscsi_proto`]; this crate owns sockets, files, tasks and the command line.
//!
//! The initiator and its commands are built on this library; they are not
//! written yet.
