//! The contract between the deploy ramdisk (`target-agent deploy`) and the
//! conductor (`conductor-writer`), written once.
//!
//! Ironic's legacy iSCSI deploy is two programs that never share a process:
//! the conductor writes the ramdisk's kernel command line, the ramdisk calls
//! the conductor back over HTTP. Each rule they must agree on lives here and
//! both depend on it, so one cannot write what the other does not read. None
//! of it is RFC 7143: that is `iscsi-proto`'s.
//!
//! # Layout
//!
//! - [`hints`]: Ironic's root device hints: their syntax, parser and matcher.
//! - [`kernel`]: the kernel command line: every parameter's name, and the deploy's
//!   parameters as the conductor writes them and the ramdisk reads them.
//! - [`callback`]: the JSON bodies of the ramdisk's callbacks to the API.
//! - [`chap`]: CHAP credentials both ends derive from a deployment (`iscsi_chap=1`).
//! - [`done`]: the `done` the conductor sends the ramdisk on TCP port 10000.

pub mod callback;
pub mod chap;
pub mod done;
pub mod hints;
pub mod kernel;
