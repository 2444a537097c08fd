//! Capture: a LUN read back into a sparse raw file or a qcow2 (`conductor-writer read`), what
//! `qemu-img convert iscsi://... disk.qcow2` does, with holes kept.
//!
//! Where the target reports unmapped ranges (GET LBA STATUS) and unmapped blocks read as
//! zeroes (LBPRZ), those ranges are not read at all; everything else is read with many READ
//! (16) commands in flight over the sessions, in order, and zero blocks in what was read are
//! left as holes (raw) or unallocated clusters (qcow2) too. The SHA-256 of the disk's whole
//! contents (holes as zeroes) comes out at the end.
//!
//! Layout: this module drives the reads; [`qcow2_out`] writes the qcow2. Disk reads run on the
//! reactor, the file and the hash on one blocking thread, fed through a bounded channel.

mod qcow2_out;

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use iscsi_proto::scsi::data::LbaStatusList;
use iscsi_proto::scsi::{CdbSize, Command, ReadWrite};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::disk::{Disk, DiskError};
use crate::source::scan::is_zero;

/// The output file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// A sparse raw file: zero blocks are holes.
    Raw,
    /// qcow2 v3: zero clusters are unallocated.
    Qcow2,
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputFormat::Raw => "raw",
            OutputFormat::Qcow2 => "qcow2",
        })
    }
}

/// How to capture.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub format: OutputFormat,
    /// qcow2 only: zstd-compressed clusters.
    pub compress: bool,
    /// READ commands in flight.
    pub queue_depth: usize,
    /// Bytes per READ at most.
    pub max_io: u32,
}

/// What a capture did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CaptureReport {
    pub output: String,
    pub format: OutputFormat,
    /// The disk's capacity: the virtual size of the output.
    pub disk_bytes: u64,
    /// Bytes read with READ.
    pub read_bytes: u64,
    /// Bytes the target reported unmapped, not read.
    pub unmapped_bytes: u64,
    /// Bytes of the disk stored in the file (the rest are holes).
    pub stored_bytes: u64,
    /// The file's size on disk (allocated blocks), and its length.
    pub file_bytes: u64,
    pub file_length: u64,
    /// SHA-256 of the disk's contents.
    pub sha256: String,
    pub seconds: f64,
    pub mib_per_second: f64,
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{path}: {error}; nothing is left under that name")]
    Output { path: PathBuf, error: std::io::Error },
    #[error("internal error: {0}")]
    Internal(String),
}

/// One piece of the disk, in order, for the file thread.
#[derive(Debug)]
enum Piece {
    Data(Bytes),
    Zero(u64),
}

/// Read the whole LUN into `output` (written as `output.partial`, renamed at the end).
pub async fn capture(
    disk: &Disk,
    output: &Path,
    options: &CaptureOptions,
    mut progress: impl FnMut(u64),
) -> Result<CaptureReport, CaptureError> {
    let started = Instant::now();
    let geometry = disk.geometry.clone();
    let capacity = geometry.capacity();
    let block = u64::from(geometry.block_size);
    let partial = partial_name(output);
    let out_error = |error| CaptureError::Output {
        path: output.to_path_buf(),
        error,
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(out_error)?;
    let (tx, rx) = mpsc::channel::<Piece>(options.queue_depth.max(1) * 2);
    let (format, compress) = (options.format, options.compress);
    let writer = tokio::task::spawn_blocking(move || write_file(file, capacity, format, compress, rx));

    let per_read = geometry.io_bytes(options.max_io);
    let mut map = LbaMap::new(geometry.zeroes_after_unmap);
    let mut in_flight: VecDeque<tokio::task::JoinHandle<Result<Bytes, DiskError>>> = VecDeque::new();
    let (mut offset, mut session) = (0u64, 0usize);
    let (mut read_bytes, mut unmapped_bytes, mut done) = (0u64, 0u64, 0u64);
    let result: Result<(), CaptureError> = async {
        while offset < capacity {
            let (mapped, run_end) = map.status(disk, offset / block, capacity / block).await?;
            let run_end = (run_end * block).min(capacity);
            if !mapped {
                // Unmapped, and unmapped blocks read as zeroes: not read at all.
                while let Some(handle) = in_flight.pop_front() {
                    done += send_read(handle, &tx).await?;
                }
                let len = run_end - offset;
                unmapped_bytes += len;
                done += len;
                tx.send(Piece::Zero(len)).await.map_err(|_| closed())?;
                progress(done);
                offset = run_end;
                continue;
            }
            let len = (run_end - offset).min(per_read);
            if in_flight.len() >= options.queue_depth.max(1)
                && let Some(handle) = in_flight.pop_front()
            {
                done += send_read(handle, &tx).await?;
                progress(done);
            }
            let (disk, at) = (disk.clone(), offset);
            in_flight.push_back(tokio::spawn(async move { read(&disk, session, at, len).await }));
            session = session.wrapping_add(1);
            read_bytes += len;
            offset += len;
        }
        while let Some(handle) = in_flight.pop_front() {
            done += send_read(handle, &tx).await?;
            progress(done);
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer.await.map_err(|e| CaptureError::Internal(e.to_string()))?;
    let finished = result.and_then(|()| written.map_err(out_error));
    let (stored_bytes, file_length, digest) = match finished {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, output).map_err(out_error)?;
    let file_bytes = std::fs::metadata(output)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .map_err(out_error)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(CaptureReport {
        output: output.display().to_string(),
        format,
        disk_bytes: capacity,
        read_bytes,
        unmapped_bytes,
        stored_bytes,
        file_bytes,
        file_length,
        sha256: digest,
        seconds,
        mib_per_second: if seconds > 0.0 {
            capacity as f64 / seconds / 1048576.0
        } else {
            0.0
        },
    })
}

fn partial_name(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn closed() -> CaptureError {
    CaptureError::Internal("the file writer stopped".into())
}

/// Wait for one READ and hand its data to the file thread; the bytes it covered.
async fn send_read(
    handle: tokio::task::JoinHandle<Result<Bytes, DiskError>>,
    tx: &mpsc::Sender<Piece>,
) -> Result<u64, CaptureError> {
    let data = handle.await.map_err(|e| CaptureError::Internal(e.to_string()))??;
    let len = data.len() as u64;
    tx.send(Piece::Data(data)).await.map_err(|_| closed())?;
    Ok(len)
}

/// READ (16) of `len` bytes at `offset` (whole blocks) on session `session`.
async fn read(disk: &Disk, session: usize, offset: u64, len: u64) -> Result<Bytes, DiskError> {
    let block = u64::from(disk.geometry.block_size);
    let blocks = u32::try_from(len / block).map_err(|_| DiskError::Malformed("READ length"))?;
    let command = Command::Read(ReadWrite {
        size: CdbSize::Sixteen,
        ..ReadWrite::new(offset / block, blocks)
    });
    let done = disk
        .run_on(session, "READ (16)", &command, Bytes::new(), blocks * block as u32)
        .await?;
    if done.data.len() as u64 != len {
        return Err(DiskError::Malformed("READ (16): short data"));
    }
    Ok(done.data)
}

/// What GET LBA STATUS says, asked a run at a time.
#[derive(Debug)]
struct LbaMap {
    /// Asked only where unmapped blocks read as zeroes, and while the target answers.
    usable: bool,
    /// The last answer: `[start, end)` in blocks, and whether it is mapped.
    known: Option<(u64, u64, bool)>,
}

impl LbaMap {
    fn new(zeroes_after_unmap: bool) -> Self {
        LbaMap {
            usable: zeroes_after_unmap,
            known: None,
        }
    }

    /// Whether block `lba` is mapped (must be read), and where that run ends (a block).
    async fn status(&mut self, disk: &Disk, lba: u64, blocks: u64) -> Result<(bool, u64), DiskError> {
        if !self.usable {
            return Ok((true, blocks));
        }
        if let Some((start, end, mapped)) = self.known
            && (start..end).contains(&lba)
        {
            return Ok((mapped, end));
        }
        let command = Command::GetLbaStatus {
            lba,
            allocation_length: 8 + 16 * 64,
        };
        let answer = match disk.run("GET LBA STATUS", &command, Bytes::new(), 8 + 16 * 64).await {
            Ok(done) => LbaStatusList::parse(&done.data).ok(),
            // A target without it: read everything (zero blocks still become holes).
            Err(DiskError::Command { .. }) => None,
            Err(e) => return Err(e),
        };
        // "The first LBA status descriptor ... shall contain the STARTING LOGICAL BLOCK ADDRESS".
        let first = answer.and_then(|list| list.descriptors.into_iter().next());
        match first {
            Some(d) if d.lba == lba && d.number_of_blocks > 0 => {
                let end = (lba + u64::from(d.number_of_blocks)).min(blocks);
                let mapped = d.provisioning_status == LbaStatusList::MAPPED;
                self.known = Some((lba, end, mapped));
                Ok((mapped, end))
            }
            _ => {
                tracing::debug!(lba, "no usable GET LBA STATUS answer: reading everything");
                self.usable = false;
                Ok((true, blocks))
            }
        }
    }
}

/// The file thread: pieces in order into the output, hashed; (stored bytes, file length,
/// SHA-256).
fn write_file(
    file: File,
    capacity: u64,
    format: OutputFormat,
    compress: bool,
    mut rx: mpsc::Receiver<Piece>,
) -> std::io::Result<(u64, u64, String)> {
    let zeroes = vec![0u8; 1 << 20];
    let mut hasher = Sha256::new();
    let hash_zeroes = |hasher: &mut Sha256, mut len: u64| {
        while len > 0 {
            let n = len.min(zeroes.len() as u64) as usize;
            hasher.update(&zeroes[..n]);
            len -= n as u64;
        }
    };
    let mut offset = 0u64;
    let (stored, length) = match format {
        OutputFormat::Raw => {
            file.set_len(capacity)?;
            let mut stored = 0u64;
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Piece::Zero(len) => {
                        hash_zeroes(&mut hasher, len);
                        offset += len;
                    }
                    Piece::Data(data) => {
                        hasher.update(&data);
                        stored += write_sparse(&file, offset, &data)?;
                        offset += data.len() as u64;
                    }
                }
            }
            file.sync_all()?;
            (stored, capacity)
        }
        OutputFormat::Qcow2 => {
            let mut qcow2 = qcow2_out::Qcow2Writer::new(file, capacity, compress)?;
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Piece::Zero(len) => {
                        hash_zeroes(&mut hasher, len);
                        qcow2.zeroes(len)?;
                        offset += len;
                    }
                    Piece::Data(data) => {
                        hasher.update(&data);
                        qcow2.data(&data)?;
                        offset += data.len() as u64;
                    }
                }
            }
            let stored = qcow2.stored;
            (stored, qcow2.finish()?)
        }
    };
    if offset != capacity {
        return Err(std::io::Error::other(format!(
            "the capture stopped at byte {offset} of {capacity}"
        )));
    }
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((stored, length, digest))
}

/// Write the granules of `data` that are not all zeroes at `offset`; the bytes written.
fn write_sparse(file: &File, offset: u64, data: &[u8]) -> std::io::Result<u64> {
    const GRANULE: usize = 4096;
    let mut written = 0u64;
    let mut at = 0usize;
    while at < data.len() {
        let zero = |i: usize| is_zero(&data[i..(i + GRANULE).min(data.len())]);
        if zero(at) {
            at += GRANULE;
            continue;
        }
        let start = at;
        while at < data.len() && !zero(at) {
            at += GRANULE;
        }
        let end = at.min(data.len());
        file.write_all_at(&data[start..end], offset + start as u64)?;
        written += (end - start) as u64;
    }
    Ok(written)
}
