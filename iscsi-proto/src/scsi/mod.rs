//! SCSI as iSCSI carries it: CDBs, status, sense data, and the parameter
//! data a block target and its initiators exchange.
//!
//! iSCSI (RFC 7143) only transports SCSI; the meaning of the bytes inside a
//! SCSI Command PDU, a SCSI Response PDU's sense data and the Data-In /
//! Data-Out payloads comes from SAM-5, SPC-4 (primary commands) and SBC-3
//! (block commands). This module is that layer, sans-IO like the rest of the
//! crate: everything is a value that is parsed from or emitted into bytes.
//!
//! Every wire enumeration is an *open* newtype ([`ScsiStatus`],
//! [`SenseKey`], [`AdditionalSense`], [`OperationCode`]): the standards keep
//! assigning codes, and a peer that sends one we do not know must still be
//! representable, logged and answered, never a panic.
//!
//! # Layout
//!
//! - `status.rs` — [`ScsiStatus`], the status byte of a SCSI Response.
//! - `be.rs` — bounds-checked big-endian reads for untrusted buffers.
//! - `sense/mod.rs` — [`Sense`], the decoded sense data, and its
//!   convenience constructors.
//! - `sense/codes.rs` — [`SenseKey`] and [`AdditionalSense`] (ASC/ASCQ).
//! - `sense/wire.rs` — fixed (70h/71h) and descriptor (72h/73h) sense
//!   formats: emit and parse.
//! - `cdb/mod.rs` — [`Command`] and its field types, [`Cdb`], [`CdbError`].
//! - `cdb/opcode.rs` — [`OperationCode`].
//! - `cdb/reservation.rs` — PERSISTENT RESERVE IN/OUT fields: service
//!   actions and [`PersistentReservationType`].
//! - `cdb/parse.rs` — CDB bytes to [`Command`]: opcode dispatch, CONTROL
//!   byte and per-command checks.
//! - `cdb/fields.rs` — field decoding shared by the block commands' CDB
//!   sizes, and the protection / BYTCHK / ANCHOR / PMI checks.
//! - `cdb/build.rs` — [`Command`] to CDB bytes.
//! - `cdb/writer.rs` — the CDB encoder and the CDB-size widening rule.
//! - `cdb/info.rs` — what a transport or target asks of a command: data
//!   direction, expected transfer length, blocks, LBA range check.
//! - `cdb/proptests.rs` — build/parse round-trip and no-panic properties.
//! - `data/mod.rs` — allocation-length truncation and the data error types.
//! - `data/inquiry.rs` — standard INQUIRY data and the peripheral byte.
//! - `data/vpd.rs` — VPD pages 00h, 80h and 83h.
//! - `data/block_vpd.rs` — SBC VPD pages B0h, B1h and B2h.
//! - `data/capacity.rs` — READ CAPACITY (10)/(16) and GET LBA STATUS data.
//! - `data/luns.rs` — REPORT LUNS data.
//! - `data/unmap.rs` — the UNMAP parameter list and its limit checks.
//! - `data/mode.rs` — MODE SENSE (6)/(10) data and page selection, MODE
//!   SELECT (6)/(10) parameter lists.
//! - `data/mode_pages.rs` — the Caching (08h) and Control (0Ah) pages.
//! - `data/opcodes.rs` — REPORT SUPPORTED OPERATION CODES data formats.
//! - `data/reservations.rs` — PERSISTENT RESERVE OUT parameter list, the
//!   PERSISTENT RESERVE IN data formats and the iSCSI TransportID.
//! - `data/opcode_support.rs` — those formats filled in for this crate's
//!   own parser (usage maps, the complete response).

mod be;
pub mod cdb;
pub mod data;
pub mod sense;
pub mod status;

pub use cdb::{
    ByteCheck, Cdb, CdbError, CdbSize, Command, CompareAndWrite, DataDirection, LbaRange, ModeSelect6, ModeSelect10,
    ModeSense6, ModeSense10, OperationCode, OrWrite, PageControl, PersistentReservationType, PersistentReserveIn,
    PersistentReserveInAction, PersistentReserveOut, PersistentReserveOutAction, ReadWrite,
    ReportSupportedOperationCodes, ReportingOptions, StartStopUnit, SyncRange, Verify, WriteAndVerify, WriteSame,
};
pub use sense::{AdditionalSense, FieldPointer, Sense, SenseBuffer, SenseError, SenseKey};
pub use status::ScsiStatus;
