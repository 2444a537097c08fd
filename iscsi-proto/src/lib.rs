//! A sans-IO implementation of iSCSI (RFC 7143) for a block target and an
//! initiator: bytes in, PDUs and decisions out. No sockets, no clocks, no
//! files: the caller owns all IO and passes time and randomness in.
//!
//! # Layout
//!
//! - [`pdu`]: every PDU header, one file each: parse from and emit into a BHS.
//! - [`codec`]: framing: incremental decoding, padding, CRC32C digests, limits.
//! - [`digest`]: the CRC32C function behind header and data digests.
//! - [`text`]: the `key=value` text format, continuation across PDUs, binary
//!   value encodings.
//! - [`keys`]: every negotiation key of RFC 7143 declared once, in one table.
//! - [`negotiate`]: offers, answers and their result functions; the
//!   negotiated session and connection parameters.
//! - [`discovery`]: SendTargets answers and long text responses in pieces.
//! - [`login`]: login state machines for target and initiator, CHAP, login
//!   status codes.
//! - [`session`]: CmdSN/MaxCmdSN windows, StatSN, ITT allocation.
//! - [`initiator`]: the initiator's full feature phase as a state machine:
//!   CmdSN, write data as negotiated, Data-In and R2Ts checked on receipt,
//!   text, pings, logout.
//! - [`target`]: the target's full feature phase as a state machine: the
//!   command window, data phases, Data-In and status, task management,
//!   keepalives, text, logout.
//! - [`segment`]: data segments as the state machines cut them.
//! - [`transfer`]: Data-In sequences and the target's R2T bookkeeping.
//! - [`serial`]: RFC 1982 serial numbers and the newtypes built on them.
//! - [`scsi`]: SCSI CDBs, status codes, sense data and parameter data.
//! - [`lun`]: the 8-byte LUN field.
//! - [`error`]: how far an error reaches (task, PDU, connection, session).

#[macro_use]
mod macros;

pub mod codec;
pub mod digest;
pub mod discovery;
pub mod error;
pub mod initiator;
pub mod keys;
pub mod login;
pub mod lun;
pub mod negotiate;
pub mod pdu;
pub mod scsi;
pub mod segment;
pub mod serial;
pub mod session;
pub mod target;
pub mod text;
pub mod transfer;

pub use error::Scope;
pub use lun::Lun;
pub use serial::{CmdSn, DataSn, Itt, R2tSn, Serial, StatSn, Ttt};
