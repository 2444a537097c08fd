//! An SBC-3 direct-access block device (a disk) emulated over a
//! [`BlockDevice`]: what each SCSI command does to the blocks.
//!
//! CDB decoding, sense data and parameter data formats all come from
//! [`iscsi_proto::scsi`]; this module decides what a command means for
//! this disk and does the IO. It is blocking: the connection code runs
//! [`LogicalUnit::execute_as`] off the async reactor.
//!
//! # Contract with the transport
//!
//! Every command arrives on an I_T nexus ([`Nexus`]: the initiator port as
//! the session's login named it), which reservations are made by and
//! checked against.
//!
//! 1. [`LogicalUnit::plan`] on the CDB. An `Err` is the answer (including
//!    RESERVATION CONFLICT): send it without moving any data.
//! 2. [`Plan::check_expected_length`] with the PDU's Expected Data Transfer
//!    Length, before soliciting Data-Out: block data must arrive whole
//!    (RFC 7143 residuals cannot describe half a block written), so a
//!    mismatch is answered at once.
//! 3. Collect `min(EDTL, plan.data_out_len)` bytes of Data-Out and call
//!    [`LogicalUnit::execute_as`]. It re-checks everything, so a caller
//!    that skips steps 1-2 gets the same answers, only later.
//! 4. [`Completion::data`] is the data the command produced (SPDTL): already
//!    cut to the CDB's allocation length, at most the advertised maximum
//!    transfer length. The transport cuts it to EDTL and sets residuals
//!    from the difference.
//! 5. Before running a command (other than INQUIRY, REPORT LUNS, REQUEST
//!    SENSE) report [`LogicalUnit::take_unit_attention`] for the nexus, if
//!    any: conditions another nexus's PERSISTENT RESERVE OUT established.
//! 6. [`LogicalUnit::nexus_lost`] when a session ends, and
//!    [`LogicalUnit::reset`] on LOGICAL UNIT RESET and target resets.
//!
//! # Layout
//!
//! - `mod.rs` — [`LogicalUnit`], [`Plan`],
//!   [`Completion`]; dispatch and the checks every command passes before
//!   it touches data (write protection, LBA range, length limits).
//! - `identity.rs` — [`Identity`] and [`Limits`]: who the unit says it is
//!   and how much one command may move, as INQUIRY and its VPD pages tell.
//! - `inquiry.rs` — INQUIRY: standard data, VPD pages 00h, 80h, 83h, B0h,
//!   B1h, B2h; REPORT LUNS and the LUN without a device ([`no_device_lun`]).
//! - `mode.rs` — MODE SENSE (6)/(10), MODE SELECT (6)/(10) (WCE and SWP
//!   are changeable), REQUEST SENSE, REPORT SUPPORTED OPERATION CODES.
//! - `io.rs` — READ, WRITE, VERIFY, WRITE AND VERIFY, COMPARE AND WRITE,
//!   ORWRITE, SYNCHRONIZE CACHE; how IO errors become sense data.
//! - `reservation/` — [`Nexus`]; RESERVE/RELEASE (6) and persistent
//!   reservations: which commands conflict (`mod.rs`), PERSISTENT RESERVE
//!   IN/OUT (`persistent.rs`).
//! - `provisioning.rs` — READ CAPACITY, WRITE SAME, UNMAP, GET LBA STATUS.
//! - `tests.rs`, `io_tests.rs`, `mode_tests.rs`, `provisioning_tests.rs`,
//!   `reservation_tests.rs` —
//!   command-level tests over [`crate::backend::MemDevice`] and a
//!   [`crate::backend::FileDevice`] on a temporary file.
//!
//! # Write protection
//!
//! The medium is write protected when the device is read-only or the SWP
//! bit of the Control mode page is set (MODE SELECT). Either way every
//! command that changes the medium (WRITE, WRITE AND VERIFY, WRITE SAME,
//! UNMAP, COMPARE AND WRITE, ORWRITE) is DATA PROTECT / WRITE PROTECTED, and MODE
//! SENSE reports WP. Mode settings are shared by every I_T nexus and not
//! saved: a restarted target starts from its configuration.

mod buffers;
mod identity;
mod inquiry;
mod io;
mod mode;
mod provisioning;
mod reservation;
mod zero_copy;

#[cfg(test)]
mod io_tests;
#[cfg(test)]
mod mode_tests;
#[cfg(test)]
mod provisioning_tests;
#[cfg(test)]
mod reservation_tests;
#[cfg(test)]
mod tests;

pub use buffers::BufferPool;
pub use identity::{Identity, Limits};
pub use inquiry::{no_device_lun, report_luns};
pub use reservation::Nexus;
pub use zero_copy::{Placement, ReadRange};

use crate::backend::BlockDevice;
use iscsi_proto::scsi::{
    AdditionalSense, ByteCheck, CdbSize, Command, DataDirection, OperationCode, ScsiStatus, Sense, SenseBuffer,
};
use reservation::Reservations;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The outcome of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub status: ScsiStatus,
    /// Present exactly when `status` is CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Data-In, already cut to the CDB's allocation length.
    pub data: Vec<u8>,
}

impl Completion {
    pub fn good(data: Vec<u8>) -> Self {
        Self {
            status: ScsiStatus::GOOD,
            sense: None,
            data,
        }
    }

    pub fn check_condition(sense: Sense) -> Self {
        Self {
            status: ScsiStatus::CHECK_CONDITION,
            sense: Some(sense),
            data: Vec::new(),
        }
    }

    /// RESERVATION CONFLICT: another I_T nexus holds a reservation that
    /// excludes this command. No sense data (SAM-5).
    pub fn reservation_conflict() -> Self {
        Self {
            status: ScsiStatus::RESERVATION_CONFLICT,
            sense: None,
            data: Vec::new(),
        }
    }

    /// The sense bytes for the SCSI Response. Fixed format, because the
    /// Control mode page reports D_SENSE = 0.
    pub fn sense_data(&self) -> Option<SenseBuffer> {
        self.sense.map(|s| s.fixed())
    }
}

impl From<Result<Vec<u8>, Sense>> for Completion {
    fn from(r: Result<Vec<u8>, Sense>) -> Self {
        match r {
            Ok(data) => Self::good(data),
            Err(sense) => Self::check_condition(sense),
        }
    }
}

/// How a command's Data-Out is judged against what the CDB implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataOutKind {
    None,
    /// Logical blocks: exactly the implied length, or nothing is written.
    Blocks,
    /// COMPARE AND WRITE's blocks, of which there can be at most `most`
    /// bytes (2 × MAXIMUM COMPARE AND WRITE LENGTH blocks).
    CompareAndWrite {
        most: u64,
    },
    /// A parameter list: shorter is PARAMETER LIST LENGTH ERROR, bytes past
    /// the PARAMETER LIST LENGTH are not looked at.
    ParameterList,
}

/// What a command needs from the transport before it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub direction: DataDirection,
    /// Data-Out bytes the CDB implies.
    pub data_out_len: u64,
    /// Most Data-In bytes the command can return (the allocation length or
    /// the transfer length).
    pub data_in_len: u64,
    kind: DataOutKind,
}

impl Plan {
    /// Whether an Expected Data Transfer Length of `edtl` for Data-Out can
    /// be served. Block data must match exactly: a target answers a
    /// mismatch with ILLEGAL REQUEST / INVALID FIELD IN COMMAND INFORMATION
    /// UNIT and writes nothing (the option libiscsi's residual tests accept
    /// besides a partial-block write). A parameter list shorter than its
    /// PARAMETER LIST LENGTH is PARAMETER LIST LENGTH ERROR.
    ///
    /// COMPARE AND WRITE with more Data-Out than 2 × MAXIMUM COMPARE AND
    /// WRITE LENGTH blocks is INVALID FIELD IN CDB (NUMBER OF LOGICAL
    /// BLOCKS) instead: the initiator asked for more blocks than the limit,
    /// a count the 8-bit field can wrap but the length still shows
    /// (libiscsi 1.19's compare-and-write tests send 256 blocks as 0 and
    /// expect that answer).
    pub fn check_expected_length(&self, edtl: u64) -> Result<(), Completion> {
        data_out_mismatch(self.kind, self.data_out_len, edtl).map_or(Ok(()), |s| Err(Completion::check_condition(s)))
    }
}

fn data_out_mismatch(kind: DataOutKind, needed: u64, got: u64) -> Option<Sense> {
    match kind {
        DataOutKind::None => None,
        DataOutKind::CompareAndWrite { most } if got > most => Some(Sense::invalid_field_in_cdb(13, None)),
        DataOutKind::CompareAndWrite { .. } => data_out_mismatch(DataOutKind::Blocks, needed, got),
        DataOutKind::Blocks if got != needed => Some(Sense::illegal_request(
            AdditionalSense::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
        )),
        DataOutKind::ParameterList if got < needed => Some(Sense::parameter_list_length_error()),
        _ => None,
    }
}

/// A disk: a [`BlockDevice`] plus the SCSI state around it.
#[derive(Debug)]
pub struct LogicalUnit {
    dev: Arc<dyn BlockDevice>,
    identity: Identity,
    limits: Limits,
    /// The LUNs REPORT LUNS lists.
    luns: Vec<u16>,
    /// Logical block provisioning: discard works and reads back zeroes.
    thin: bool,
    /// Commands that change the medium hold it shared; COMPARE AND WRITE
    /// holds it alone so no write lands between its compare and its write.
    atomic: RwLock<()>,
    /// WCE of the Caching mode page. When clear every write is forced to
    /// the medium as if FUA were set.
    write_cache: AtomicBool,
    /// WCE as configured: the default value MODE SENSE reports.
    default_write_cache: bool,
    /// SWP of the Control mode page: software write protect.
    swp: AtomicBool,
    /// MODE SELECTs that changed a setting (see [`LogicalUnit::mode_changes`]).
    mode_changes: AtomicU64,
    /// RESERVE (6) and persistent reservation state, kept in memory only.
    reservations: Mutex<Reservations>,
    /// READ buffers, reused once their data is on the wire.
    buffers: Arc<BufferPool>,
}

impl LogicalUnit {
    pub fn new(dev: Arc<dyn BlockDevice>, identity: Identity) -> Self {
        Self {
            limits: Limits::for_block_size(dev.block_size()),
            luns: vec![identity.lun],
            thin: dev.discard_zeroes(),
            dev,
            identity,
            atomic: RwLock::new(()),
            write_cache: AtomicBool::new(true),
            default_write_cache: true,
            swp: AtomicBool::new(false),
            mode_changes: AtomicU64::new(0),
            reservations: Mutex::new(Reservations::default()),
            buffers: Arc::default(),
        }
    }

    /// The LUNs to list in REPORT LUNS (default: this one).
    #[must_use]
    pub fn with_luns(mut self, mut luns: Vec<u16>) -> Self {
        luns.sort_unstable();
        luns.dedup();
        self.luns = luns;
        self
    }

    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// WCE: with the write cache off, every write is flushed before GOOD.
    #[must_use]
    pub fn with_write_cache(mut self, enabled: bool) -> Self {
        self.write_cache.store(enabled, Ordering::Relaxed);
        self.default_write_cache = enabled;
        self
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Where READ buffers go back once sent (see [`BufferPool::wrap`]).
    pub fn buffers(&self) -> &Arc<BufferPool> {
        &self.buffers
    }

    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    fn block_size(&self) -> u32 {
        self.dev.block_size()
    }

    fn capacity(&self) -> u64 {
        self.dev.num_blocks()
    }

    fn write_cache(&self) -> bool {
        self.write_cache.load(Ordering::Relaxed)
    }

    fn swp(&self) -> bool {
        self.swp.load(Ordering::Relaxed)
    }

    /// How many MODE SELECT commands have changed a mode setting. SPC-4 has
    /// a change establish a MODE PARAMETERS CHANGED unit attention on every
    /// other I_T nexus; the transport, which keeps unit attentions, can
    /// compare this before and after a command to know.
    pub fn mode_changes(&self) -> u64 {
        self.mode_changes.load(Ordering::Relaxed)
    }

    /// Whether commands that change the medium are refused: a read-only
    /// device, or SWP set.
    pub fn write_protected(&self) -> bool {
        self.dev.read_only() || self.swp()
    }

    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.atomic.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.atomic.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn reservations(&self) -> MutexGuard<'_, Reservations> {
        self.reservations.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the command needs before it can run; `Err` is the answer for
    /// a CDB that fails to parse, conflicts with a reservation `nexus` does
    /// not hold, or cannot be served (no data transfer).
    pub fn plan(&self, nexus: &Nexus, cdb: &[u8]) -> Result<Plan, Completion> {
        let cmd = Command::parse(cdb).map_err(|e| Completion::check_condition(e.sense()))?;
        if self.reservations().conflicts(nexus, &cmd) {
            return Err(Completion::reservation_conflict());
        }
        self.admit(&cmd).map_err(Completion::check_condition)?;
        let len = cmd.expected_transfer_len(self.block_size()).ok_or_else(|| {
            Completion::check_condition(Sense::illegal_request(AdditionalSense::INVALID_FIELD_IN_CDB))
        })?;
        let direction = cmd.data_direction();
        let (data_out_len, data_in_len) = match direction {
            DataDirection::ToDevice => (len, 0),
            DataDirection::FromDevice => (0, len),
            DataDirection::None => (0, 0),
        };
        Ok(Plan {
            direction,
            data_out_len,
            data_in_len,
            kind: self.data_out_kind(&cmd),
        })
    }

    /// Run one command received on `nexus`. `cdb` is the whole CDB;
    /// `data_out` the write data the initiator sent (already complete).
    /// Blocking: does the disk IO itself.
    pub fn execute_as(&self, nexus: &Nexus, cdb: &[u8], data_out: &[u8]) -> Completion {
        let cmd = match Command::parse(cdb) {
            Ok(cmd) => cmd,
            Err(e) => return Completion::check_condition(e.sense()),
        };
        if self.reservations().conflicts(nexus, &cmd) {
            return Completion::reservation_conflict();
        }
        if let Err(sense) = self.admit(&cmd) {
            return Completion::check_condition(sense);
        }
        let needed = cmd.expected_transfer_len(self.block_size()).unwrap_or(u64::MAX);
        if let Some(sense) = data_out_mismatch(self.data_out_kind(&cmd), needed, data_out.len() as u64) {
            return Completion::check_condition(sense);
        }
        self.dispatch(nexus, &cmd, data_out)
    }

    /// [`LogicalUnit::execute_as`] on behalf of one fixed nexus, for tests
    /// that have no transport.
    #[cfg(test)]
    pub(crate) fn execute(&self, cdb: &[u8], data_out: &[u8]) -> Completion {
        self.execute_as(&tests::nexus(), cdb, data_out)
    }

    fn dispatch(&self, nexus: &Nexus, cmd: &Command, data_out: &[u8]) -> Completion {
        let result = match *cmd {
            Command::TestUnitReady
            | Command::StartStopUnit(_)
            | Command::PreventAllowMediumRemoval { .. }
            // No cache of our own to fill; SBC-3 has PRE-FETCH return GOOD
            // when the blocks might not fit the cache (CONDITION MET only
            // promises they will), and libiscsi expects GOOD.
            | Command::PreFetch(_) => Ok(Vec::new()),
            Command::RequestSense { desc, allocation_length } => Ok(mode::request_sense(desc, allocation_length)),
            Command::Inquiry {
                evpd,
                page_code,
                allocation_length,
            } => self.inquiry(evpd, page_code, allocation_length),
            Command::ModeSense6(m) => self.mode_sense_6(&m),
            Command::ModeSense10(m) => self.mode_sense_10(&m),
            Command::ModeSelect6(m) => {
                let list = data_out.get(..usize::from(m.parameter_list_length)).unwrap_or(data_out);
                self.mode_select(m.pf, m.sp, list, false).map(|()| Vec::new())
            }
            Command::ModeSelect10(m) => {
                let list = data_out.get(..usize::from(m.parameter_list_length)).unwrap_or(data_out);
                self.mode_select(m.pf, m.sp, list, true).map(|()| Vec::new())
            }
            Command::ReportLuns {
                select_report,
                allocation_length,
            } => inquiry::report_luns_data(&self.luns, select_report, allocation_length),
            Command::ReportSupportedOperationCodes(r) => self.report_supported_operation_codes(&r),
            Command::ReadCapacity10 => Ok(self.read_capacity_10()),
            Command::ReadCapacity16 { allocation_length } => Ok(self.read_capacity_16(allocation_length)),
            Command::GetLbaStatus { lba, allocation_length } => self.get_lba_status(lba, allocation_length),
            Command::Read(rw) => self.read(rw.lba, rw.transfer_length),
            Command::Write(rw) => self.write(rw.lba, data_out, rw.fua).map(|()| Vec::new()),
            Command::WriteAndVerify(w) => self.write_and_verify(&w, data_out).map(|()| Vec::new()),
            Command::Verify(v) => self.verify(&v, data_out).map(|()| Vec::new()),
            Command::CompareAndWrite(c) => self.compare_and_write(&c, data_out).map(|()| Vec::new()),
            Command::OrWrite(o) => self.or_write(&o, data_out).map(|()| Vec::new()),
            Command::SynchronizeCache(_) => self.flush().map(|()| Vec::new()),
            Command::WriteSame(w) => self.write_same(&w, data_out).map(|()| Vec::new()),
            Command::Unmap { parameter_list_length, .. } => {
                self.unmap(data_out, parameter_list_length).map(|()| Vec::new())
            }
            // These answer RESERVATION CONFLICT too, which is no sense data.
            Command::Reserve6
            | Command::Release6
            | Command::PersistentReserveIn(_)
            | Command::PersistentReserveOut(_) => return self.reservation_command(nexus, cmd, data_out),
        };
        result.into()
    }

    /// The checks made before any data moves, shared by `plan` and
    /// `execute_as`: support, write protection, LBA range, length limits.
    fn admit(&self, cmd: &Command) -> Result<(), Sense> {
        if matches!(cmd, Command::Unmap { .. }) && !self.thin {
            return Err(Sense::invalid_command_operation_code());
        }
        let modifies = matches!(
            cmd,
            Command::Write(_)
                | Command::WriteAndVerify(_)
                | Command::WriteSame(_)
                | Command::Unmap { .. }
                | Command::CompareAndWrite(_)
                | Command::OrWrite(_)
        );
        if modifies && self.write_protected() {
            return Err(Sense::write_protected());
        }
        if let Some(range) = cmd.lba_range() {
            range.check(self.capacity())?;
        }
        let max = self.limits.max_transfer_blocks;
        match *cmd {
            Command::Read(rw) | Command::Write(rw) if rw.transfer_length > max => Err(length_field(rw.size)),
            Command::OrWrite(o) if o.transfer_length > max => Err(length_field(CdbSize::Sixteen)),
            Command::WriteAndVerify(w) if w.transfer_length > max => Err(length_field(w.size)),
            // Both compare forms read the whole range into memory.
            Command::Verify(v) if v.bytchk != ByteCheck::MediumOnly && v.verification_length > max => {
                Err(length_field(v.size))
            }
            Command::CompareAndWrite(c) if c.number_of_blocks > self.limits.max_compare_and_write_blocks => {
                Err(Sense::invalid_field_in_cdb(13, None))
            }
            Command::GetLbaStatus { lba, .. } if lba >= self.capacity() => Err(Sense::lba_out_of_range()),
            Command::Unmap { anchor: true, .. } => Err(Sense::invalid_field_in_cdb(1, Some(0))),
            Command::WriteSame(w) => self.admit_write_same(&w),
            Command::PersistentReserveOut(r) => reservation::admit_persistent_reserve_out(&r),
            _ => Ok(()),
        }
    }
}

/// INVALID FIELD IN CDB pointing at the TRANSFER LENGTH (or VERIFICATION /
/// NUMBER OF LOGICAL BLOCKS) field of a CDB of `size`.
fn length_field(size: CdbSize) -> Sense {
    let byte = match size {
        CdbSize::Six => 4,
        CdbSize::Ten => 7,
        CdbSize::Twelve => 6,
        CdbSize::Sixteen => 10,
    };
    Sense::invalid_field_in_cdb(byte, None)
}

impl LogicalUnit {
    fn data_out_kind(&self, cmd: &Command) -> DataOutKind {
        match cmd {
            Command::Unmap { .. }
            | Command::ModeSelect6(_)
            | Command::ModeSelect10(_)
            | Command::PersistentReserveOut(_) => DataOutKind::ParameterList,
            Command::CompareAndWrite(_) => DataOutKind::CompareAndWrite {
                most: 2 * u64::from(self.limits.max_compare_and_write_blocks) * u64::from(self.block_size()),
            },
            Command::Write(_) | Command::WriteAndVerify(_) | Command::WriteSame(_) | Command::OrWrite(_) => {
                DataOutKind::Blocks
            }
            Command::Verify(v) if v.bytchk != ByteCheck::MediumOnly => DataOutKind::Blocks,
            _ => DataOutKind::None,
        }
    }
}

/// Whether `op` is one this logical unit serves (for REPORT SUPPORTED
/// OPERATION CODES): everything the parser knows, except UNMAP without
/// logical block provisioning.
fn serves(op: OperationCode, thin: bool) -> bool {
    thin || op != OperationCode::UNMAP
}
