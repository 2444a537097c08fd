//! A remote LUN as the writer sees it: its geometry and abilities, and
//! commands retried the way SAM-5 expects an initiator to retry them.

use crate::initiator::{Completion, Session, SessionError};
use bytes::Bytes;
use iscsi_proto::Lun;
use iscsi_proto::scsi::data::{BlockLimits, LogicalBlockProvisioning, ReadCapacity16Data};
use iscsi_proto::scsi::{CdbSize, Command, ReadWrite, ScsiStatus, Sense, SenseKey, SyncRange};
use iscsi_wire::Payload;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// Why a disk operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{what} failed: {}{}", words(status), sense.as_ref().map(describe).unwrap_or_default())]
    Command {
        what: String,
        status: ScsiStatus,
        sense: Option<Sense>,
    },
    #[error("the target's answer to {0} is malformed")]
    Malformed(&'static str),
}

/// A code's name as words: `MEDIUM_ERROR` reads "MEDIUM ERROR".
fn words(code: impl std::fmt::Debug) -> String {
    format!("{code:?}").replace('_', " ")
}

/// Sense in words, with what it means for the write when that is clear.
fn describe(sense: &Sense) -> String {
    let hint = match sense.key {
        SenseKey::MEDIUM_ERROR => "; the target's disk failed, so the image on it cannot be trusted",
        SenseKey::DATA_PROTECT if sense.additional_sense.asc() == 0x27 && sense.additional_sense.ascq() == 0x07 => {
            "; the target's backing store is out of space"
        }
        _ => "",
    };
    format!(" ({} / {}){hint}", words(sense.key), words(sense.additional_sense))
}

/// What a LUN is and can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u32,
    pub blocks: u64,
    /// Largest transfer per command, in blocks (0: no limit stated).
    pub max_transfer_blocks: u32,
    /// Largest WRITE SAME, in blocks (0: no limit stated).
    pub max_write_same_blocks: u64,
    /// WRITE SAME (16) with UNMAP is supported.
    pub unmap_write_same: bool,
    /// Unmapped blocks read as zeroes (LBPRZ).
    pub zeroes_after_unmap: bool,
}

impl Geometry {
    /// Capacity in bytes.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.blocks * u64::from(self.block_size)
    }

    /// Bytes per READ or WRITE: at most `max_io` and the disk's maximum
    /// transfer length, a whole number of blocks, at least one block.
    #[must_use]
    pub fn io_bytes(&self, max_io: u32) -> u64 {
        let block = u64::from(self.block_size.max(1));
        let limit = if self.max_transfer_blocks > 0 {
            u64::from(self.max_transfer_blocks) * block
        } else {
            u64::MAX
        };
        (u64::from(max_io).min(limit) / block).max(1) * block
    }
}

/// A LUN reached through one or more sessions.
#[derive(Debug, Clone)]
pub struct Disk {
    sessions: Vec<Arc<Session>>,
    lun: Lun,
    pub geometry: Geometry,
}

/// How many times a unit attention, BUSY or TASK SET FULL is retried.
const RETRIES: u32 = 30;

impl Disk {
    /// Learn the LUN's geometry (clearing unit attentions on every session).
    pub async fn probe(sessions: Vec<Arc<Session>>, lun: Lun) -> Result<Self, DiskError> {
        let mut disk = Self {
            sessions,
            lun,
            geometry: Geometry {
                block_size: 512,
                blocks: 0,
                max_transfer_blocks: 0,
                max_write_same_blocks: 0,
                unmap_write_same: false,
                zeroes_after_unmap: false,
            },
        };
        for n in 0..disk.sessions.len() {
            disk.run_on(n, "TEST UNIT READY", &Command::TestUnitReady, Bytes::new(), 0)
                .await?;
        }
        let cap = disk
            .run(
                "READ CAPACITY (16)",
                &Command::ReadCapacity16 { allocation_length: 32 },
                Bytes::new(),
                32,
            )
            .await?;
        let cap = ReadCapacity16Data::parse(&cap.data).map_err(|_| DiskError::Malformed("READ CAPACITY (16)"))?;
        disk.geometry.block_size = cap.block_length;
        disk.geometry.blocks = cap.returned_lba + 1;
        // The VPD pages are optional: a target without them gets plain writes.
        let limits = Command::Inquiry {
            evpd: true,
            page_code: 0xb0,
            allocation_length: 64,
        };
        if let Ok(page) = disk.run("INQUIRY (Block Limits)", &limits, Bytes::new(), 64).await
            && let Ok(limits) = BlockLimits::parse(&page.data)
        {
            disk.geometry.max_transfer_blocks = limits.maximum_transfer_length;
            disk.geometry.max_write_same_blocks = limits.maximum_write_same_length;
        }
        let provisioning = Command::Inquiry {
            evpd: true,
            page_code: 0xb2,
            allocation_length: 64,
        };
        if cap.lbpme
            && let Ok(page) = disk
                .run("INQUIRY (Logical Block Provisioning)", &provisioning, Bytes::new(), 64)
                .await
            && let Ok(p) = LogicalBlockProvisioning::parse(&page.data)
        {
            disk.geometry.unmap_write_same = p.lbpws;
            disk.geometry.zeroes_after_unmap = p.lbprz;
        }
        debug!(geometry = ?disk.geometry, "probed");
        Ok(disk)
    }

    /// The sessions in use.
    #[must_use]
    pub fn sessions(&self) -> &[Arc<Session>] {
        &self.sessions
    }

    /// Read `len` bytes from byte `offset` (both whole blocks).
    pub async fn read_at(&self, offset: u64, len: u32) -> Result<Bytes, DiskError> {
        let block = u64::from(self.geometry.block_size.max(1));
        let blocks = u64::from(len).div_ceil(block);
        let read = Command::Read(ReadWrite {
            size: CdbSize::Sixteen,
            ..ReadWrite::new(offset / block, u32::try_from(blocks).unwrap_or(u32::MAX))
        });
        let done = self.run("READ (16)", &read, Bytes::new(), len).await?;
        if done.data.len() < len as usize {
            return Err(DiskError::Malformed("READ (16): short data"));
        }
        Ok(done.data)
    }

    /// SYNCHRONIZE CACHE (16) over the whole LUN: written blocks are durable.
    pub async fn synchronize_cache(&self) -> Result<(), DiskError> {
        let sync = Command::SynchronizeCache(SyncRange {
            lba: 0,
            number_of_blocks: 0,
            immed: false,
            size: CdbSize::Sixteen,
        });
        self.run("SYNCHRONIZE CACHE (16)", &sync, Bytes::new(), 0).await?;
        Ok(())
    }

    /// Whether write data may go from an image file straight into the
    /// sockets: no session computes a data digest over it.
    #[must_use]
    pub fn zero_copy(&self) -> bool {
        self.sessions
            .iter()
            .all(|s| !s.outcome().connection.send_framing().data_digest)
    }

    /// Run `command` on the first session.
    pub async fn run(
        &self,
        what: &str,
        command: &Command,
        data: impl Into<Payload>,
        read_len: u32,
    ) -> Result<Completion, DiskError> {
        self.run_on(0, what, command, data, read_len).await
    }

    /// Run `command` on session `n`, retrying unit attentions (SAM-5: the
    /// condition is reported once and the command may be sent again), BUSY
    /// and TASK SET FULL (with back-off). Any other non-GOOD status is an
    /// error.
    pub async fn run_on(
        &self,
        n: usize,
        what: &str,
        command: &Command,
        data: impl Into<Payload>,
        read_len: u32,
    ) -> Result<Completion, DiskError> {
        let data = data.into();
        let session = &self.sessions[n % self.sessions.len()];
        let cdb = command.build();
        let mut delay = Duration::from_millis(5);
        let mut attempt = 0;
        loop {
            let done = session
                .command(self.lun, cdb.as_bytes(), data.clone(), read_len)
                .await?;
            let sense = done.sense.as_deref().and_then(|s| Sense::parse(s).ok());
            let retry = match done.status {
                ScsiStatus::GOOD => return Ok(done),
                ScsiStatus::BUSY | ScsiStatus::TASK_SET_FULL => true,
                ScsiStatus::CHECK_CONDITION => sense.as_ref().is_some_and(|s| s.key == SenseKey::UNIT_ATTENTION),
                _ => false,
            };
            attempt += 1;
            if !retry || attempt > RETRIES {
                return Err(DiskError::Command {
                    what: what.to_owned(),
                    status: done.status,
                    sense,
                });
            }
            if done.status != ScsiStatus::CHECK_CONDITION {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}
