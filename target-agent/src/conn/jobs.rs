//! The SCSI side of a connection: every command the protocol machine hands
//! over becomes a job, with what SCSI decides before any data moves (the
//! unit it goes to, a pending unit attention, the checks of its plan, a
//! WRITE cut to the blocks its Expected Data Transfer Length covers, where
//! its write data goes), and what the machine's other events mean here.

use crate::lu::{Completion, LogicalUnit, Nexus, Placement, no_device_lun};
use crate::target::Target;
use bytes::Bytes;
use iscsi_proto::scsi::{AdditionalSense, Command as Cdb, OperationCode, ScsiStatus, Sense};
use iscsi_proto::target::{Command, Reset};
use iscsi_proto::{Itt, Lun};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a command goes: the disk, or the LUN-less answers of SPC-4.
#[derive(Debug, Clone)]
pub(crate) enum Unit {
    Disk(Arc<LogicalUnit>),
    NoDevice { luns: Vec<u16> },
}

impl Unit {
    pub(super) fn execute(&self, nexus: &Nexus, cdb: &[u8], data_out: &[u8]) -> Completion {
        match self {
            Self::Disk(lu) => lu.execute_as(nexus, cdb, data_out),
            Self::NoDevice { luns } => no_device_lun(cdb, luns),
        }
    }
}

/// A WRITE whose data is put on the disk as it arrives (see
/// [`crate::lu::LogicalUnit::placement`]): spliced there from the socket,
/// or kept here until the command runs when it came in memory.
#[derive(Debug)]
pub(crate) struct Placed {
    pub placement: Placement,
    /// Segments that came in memory: (offset in the command's data, bytes).
    pub pieces: Vec<(u64, Bytes)>,
    /// The first failure to put data on the disk; the rest is dropped.
    pub error: Option<std::io::Error>,
}

impl Placed {
    pub fn new(placement: Placement) -> Self {
        Self {
            placement,
            pieces: Vec::new(),
            error: None,
        }
    }
}

/// The largest write a single command may announce; larger ones are
/// refused (their data is read and dropped) before any buffer is allocated.
const MAX_DATA_OUT: u32 = 32 << 20;

/// A command being prepared or run.
#[derive(Debug)]
pub(crate) struct Job {
    pub itt: Itt,
    pub unit: Unit,
    /// The session's I_T nexus, which reservations are checked against.
    pub nexus: Arc<Nexus>,
    pub cdb: Vec<u8>,
    /// Write data that came through memory.
    pub data_out: Vec<u8>,
    /// Write data bytes the CDB needs (the rest of the announced length is
    /// dropped).
    pub needed: usize,
    /// A WRITE whose data goes straight to the disk instead of `data_out`.
    pub placed: Option<Placed>,
    /// Expected Data Transfer Length.
    pub expected: u32,
    pub read: bool,
    /// What the CDB implies to transfer when that differs from the expected
    /// length (a WRITE cut to whole blocks), for the residual.
    pub transfer_len: Option<u64>,
    /// Answer this without running anything (a refused command).
    pub answer: Option<Completion>,
}

impl Job {
    /// Keep what the command needs of write data arriving at `offset`.
    pub fn take(&mut self, offset: u32, data: Bytes) {
        if self.answer.is_some() {
            return;
        }
        if let Some(placed) = &mut self.placed {
            placed.pieces.push((u64::from(offset), data));
            return;
        }
        let room = self.needed.saturating_sub(self.data_out.len());
        self.data_out.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// Whether write data at this job goes straight to the disk.
    pub fn placed_at(&self, offset: u32) -> Option<u64> {
        match (&self.placed, &self.answer) {
            (Some(p), None) if p.error.is_none() => Some(p.placement.offset + u64::from(offset)),
            _ => None,
        }
    }
}

fn check_condition(sense: Sense) -> Completion {
    Completion {
        status: ScsiStatus::CHECK_CONDITION,
        sense: Some(sense),
        data: Vec::new(),
    }
}

/// The jobs of one connection.
#[derive(Debug)]
pub(crate) struct Jobs {
    target: Arc<Target>,
    pub nexus: Arc<Nexus>,
    key: (String, iscsi_proto::pdu::Isid),
    tsih: iscsi_proto::pdu::Tsih,
    jobs: HashMap<Itt, Job>,
}

impl Jobs {
    pub fn new(target: Arc<Target>, key: (String, iscsi_proto::pdu::Isid), tsih: iscsi_proto::pdu::Tsih) -> Self {
        Self {
            nexus: Arc::new(Nexus::new(key.0.clone(), key.1)),
            target,
            key,
            tsih,
            jobs: HashMap::new(),
        }
    }

    pub fn get_mut(&mut self, itt: Itt) -> Option<&mut Job> {
        self.jobs.get_mut(&itt)
    }

    pub fn remove(&mut self, itt: Itt) -> Option<Job> {
        self.jobs.remove(&itt)
    }

    fn unit(&self, lun: Lun) -> Unit {
        match lun.index() {
            Some(i) if i == self.target.options.lun => Unit::Disk(self.target.lu.clone()),
            _ => Unit::NoDevice {
                luns: vec![self.target.options.lun],
            },
        }
    }

    /// A unit attention to report instead of running the command (SAM-5
    /// 5.14: INQUIRY, REPORT LUNS and REQUEST SENSE are answered regardless).
    fn pending_unit_attention(&self, unit: &Unit, cdb: &[u8]) -> Option<AdditionalSense> {
        let Unit::Disk(_) = unit else { return None };
        let opcode = OperationCode(*cdb.first()?);
        if matches!(
            opcode,
            OperationCode::INQUIRY | OperationCode::REPORT_LUNS | OperationCode::REQUEST_SENSE
        ) {
            return None;
        }
        self.target
            .take_unit_attention(&self.key, self.tsih)
            .or_else(|| self.target.lu.take_unit_attention(&self.nexus))
    }

    /// A command arrived: decide what SCSI decides before its data moves.
    pub fn command(&mut self, cmd: Command) {
        let unit = self.unit(cmd.lun);
        let mut job = Job {
            itt: cmd.itt,
            nexus: self.nexus.clone(),
            cdb: cmd.cdb,
            data_out: Vec::new(),
            needed: 0,
            placed: None,
            expected: cmd.expected_len,
            read: cmd.read,
            transfer_len: None,
            answer: None,
            unit,
        };
        if let Some(condition) = self.pending_unit_attention(&job.unit, &job.cdb) {
            job.answer = Some(check_condition(Sense::unit_attention(condition)));
        }
        let plan = match (&job.unit, &job.answer) {
            (Unit::Disk(lu), None) => lu
                .plan(&self.nexus, &job.cdb)
                .map_err(|refused| job.answer = Some(refused))
                .ok(),
            _ => None,
        };
        let mut needed = plan.map_or(0, |p| p.data_out_len);
        let edtl = u64::from(cmd.expected_len);
        // A WRITE whose Expected Data Transfer Length disagrees with its
        // transfer length: the residual says by how much (RFC 7143 11.4.5.1)
        // and only the whole blocks both cover are written, as tgtd does and
        // libiscsi's residual tests expect.
        let mut fitted = false;
        if let (Unit::Disk(lu), None) = (&job.unit, &job.answer)
            && needed != edtl
            && let Some((cdb, len)) = fit_write(&job.cdb, edtl, lu.device().block_size())
        {
            job.transfer_len = Some(needed);
            job.cdb = cdb;
            needed = len;
            fitted = true;
        }
        if !cmd.write {
            if needed > 0 && job.answer.is_none() {
                // The CDB wants data the initiator did not announce.
                job.answer = plan.and_then(|p| p.check_expected_length(0).err());
            }
        } else {
            if job.answer.is_none() && !fitted {
                job.answer = match plan {
                    Some(plan) => plan.check_expected_length(edtl).err(),
                    // No data is expected for a LUN with no device.
                    None => Some(check_condition(Sense::illegal_request(
                        AdditionalSense::LOGICAL_UNIT_NOT_SUPPORTED,
                    ))),
                };
            }
            if cmd.expected_len > MAX_DATA_OUT && job.answer.is_none() {
                job.answer = Some(check_condition(Sense::invalid_field_in_cdb(0, None)));
            }
            job.needed = usize::try_from(needed)
                .unwrap_or(usize::MAX)
                .min(cmd.expected_len as usize);
            if let (Unit::Disk(lu), None, false) = (&job.unit, &job.answer, fitted) {
                // A plain WRITE's data can go straight to the disk as it comes.
                job.placed = lu
                    .placement(&self.nexus, &job.cdb)
                    .filter(|p| p.len == edtl)
                    .map(Placed::new);
            }
            if job.answer.is_none() && job.placed.is_none() {
                job.data_out.reserve_exact(job.needed);
            }
        }
        self.jobs.insert(cmd.itt, job);
    }

    /// Task management reset a logical unit or the target.
    pub fn reset(&self, reset: Reset) {
        match reset {
            Reset::LogicalUnit(lun) => {
                if lun == self.target.options.lun {
                    self.target.lu.reset();
                }
                self.target
                    .raise_unit_attention(AdditionalSense::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
            }
            Reset::TargetWarm => {
                self.target.lu.reset();
                self.target
                    .raise_unit_attention(AdditionalSense::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
            }
            Reset::TargetCold => self.target.lu.reset(),
        }
    }
}

/// For a WRITE or WRITE AND VERIFY: the CDB cut down to the whole blocks an
/// Expected Data Transfer Length of `edtl` covers, and the bytes those
/// blocks take. `None` for any other command.
fn fit_write(cdb: &[u8], edtl: u64, block_size: u32) -> Option<(Vec<u8>, u64)> {
    let block_size = u64::from(block_size.max(1));
    let fit =
        |transfer_length: u32| u32::try_from(edtl / block_size).map_or(transfer_length, |b| b.min(transfer_length));
    let command = match Cdb::parse(cdb).ok()? {
        Cdb::Write(mut rw) => {
            rw.transfer_length = fit(rw.transfer_length);
            Cdb::Write(rw)
        }
        Cdb::WriteAndVerify(mut wv) => {
            wv.transfer_length = fit(wv.transfer_length);
            Cdb::WriteAndVerify(wv)
        }
        _ => return None,
    };
    let blocks = command.transfer_blocks().map_or(0, u64::from);
    Some((command.build().as_bytes().to_vec(), blocks * block_size))
}
