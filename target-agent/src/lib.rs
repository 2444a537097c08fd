//! `target-agent`: what runs in the deploy ramdisk.
//!
//! It finds the node's install disk and exposes it over iSCSI so that the
//! conductor can write the image, then waits for the conductor's `done` on
//! TCP port 10000. Every rule of RFC 7143 lives in [`iscsi_proto`]; this crate
//! owns sockets, files, tasks and the command line.
//!
//! The target itself (`serve`) and the ramdisk flow (`deploy`) are built on
//! this library; they are not written yet.
