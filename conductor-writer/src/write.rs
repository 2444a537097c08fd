//! Writing an image onto a disk: data as WRITE (16), zero runs as WRITE
//! SAME (16) (unmapping where the disk reads unmapped blocks as zeroes),
//! many commands in flight, spread over the sessions.

use crate::disk::{Disk, DiskError};
use crate::source::{Chunk, Source, SourceError};
use bytes::{Bytes, BytesMut};
use iscsi_proto::scsi::{AdditionalSense, CdbSize, Command, ReadWrite, WriteSame};
use iscsi_wire::Payload;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How to write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Commands in flight at once (over all sessions).
    pub queue_depth: usize,
    /// Bytes per WRITE command at most.
    pub max_io: u32,
    /// Leave zero runs untouched (for disks known to be clean).
    pub skip_zeroes: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            queue_depth: 32,
            max_io: 1 << 20,
            skip_zeroes: false,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub image_bytes: u64,
    /// Bytes sent as data.
    pub data_bytes: u64,
    /// Of those, bytes sent straight from the image file (no copy through
    /// memory).
    pub stored_bytes: u64,
    /// Bytes zeroed without sending data (WRITE SAME or skipped).
    pub zero_bytes: u64,
    pub elapsed: Duration,
}

/// Progress as the write goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the image is {image} bytes but the disk holds only {disk} bytes; nothing was written")]
    TooLarge { image: u64, disk: u64 },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(
        "the image runs past the {disk} bytes the disk holds; it is a stream whose length shows only at its end, so what came before was written and the disk holds a cut-off image: use a bigger disk or a smaller image"
    )]
    StreamTooLarge { disk: u64 },
    #[error("the image reader produced a piece at byte {offset}, not on a {block}-byte block boundary")]
    Unaligned { offset: u64, block: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

/// One command's worth of the image.
#[derive(Debug)]
enum Piece {
    Data { lba: u64, data: Payload },
    Zero { lba: u64, blocks: u64 },
}

/// Write `source` onto `disk` from byte 0, then flush the disk's cache.
/// The image must fit: checked before anything is written. A final partial
/// block is padded with zeroes.
pub async fn write_image(
    disk: &Disk,
    source: Box<dyn Source>,
    options: &WriteOptions,
    progress: impl FnMut(Progress),
) -> Result<Report, WriteError> {
    let started = Instant::now();
    let mut report = write_at(disk, source, 0, options, progress).await?;
    disk.synchronize_cache().await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Write `source` onto `disk` starting at byte `offset` (a whole number of
/// blocks), without flushing the cache. The image must fit between `offset`
/// and the end of the disk: checked before anything is written.
pub async fn write_at(
    disk: &Disk,
    mut source: Box<dyn Source>,
    offset: u64,
    options: &WriteOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Report, WriteError> {
    let started = Instant::now();
    let geometry = disk.geometry.clone();
    let known = source.length_known();
    let room = geometry.capacity().saturating_sub(offset);
    // A stream of unknown length is held against the room piece by piece instead.
    let size = if known { source.size() } else { room };
    if known && size > room {
        return Err(WriteError::TooLarge {
            image: size,
            disk: room,
        });
    }
    let block = u64::from(geometry.block_size);
    if !offset.is_multiple_of(block) {
        return Err(WriteError::Unaligned { offset, block });
    }
    let per_command = geometry.io_bytes(options.max_io);
    if disk.zero_copy() {
        // Stored data goes from the image file to the sockets untouched.
        source.offer_stored();
    }
    // Read the image on a blocking thread, a bounded distance ahead.
    let (tx, mut rx) = mpsc::channel::<Result<Piece, WriteError>>(options.queue_depth.max(1) * 2);
    let base_lba = offset / block;
    let limit = (!known).then_some(room);
    let reader = tokio::task::spawn_blocking(move || read_pieces(source, block, base_lba, per_command, limit, &tx));

    let mut report = Report {
        image_bytes: size,
        ..Report::default()
    };
    let mut in_flight = JoinSet::new();
    let zero_block = Bytes::from(vec![0u8; geometry.block_size as usize]);
    let max_same = if geometry.max_write_same_blocks > 0 {
        geometry.max_write_same_blocks
    } else {
        65535
    };
    let mut next_session = 0usize;
    let mut done = 0u64;
    let mut write_same_works = true;
    while let Some(piece) = rx.recv().await {
        let piece = piece?;
        let jobs: Vec<(Command, Payload, u64, bool)> = match piece {
            Piece::Data { lba, data } => {
                report.data_bytes += data.len() as u64;
                if matches!(data, Payload::File(_)) {
                    report.stored_bytes += data.len() as u64;
                }
                let blocks = u32::try_from(data.len() as u64 / block).unwrap_or(u32::MAX);
                let len = data.len() as u64;
                vec![(
                    Command::Write(ReadWrite {
                        size: CdbSize::Sixteen,
                        ..ReadWrite::new(lba, blocks)
                    }),
                    data,
                    len,
                    false,
                )]
            }
            Piece::Zero { lba, blocks } => {
                report.zero_bytes += blocks * block;
                if options.skip_zeroes {
                    done += blocks * block;
                    progress(Progress {
                        done_bytes: done,
                        total_bytes: size,
                    });
                    continue;
                }
                let mut jobs = Vec::new();
                let mut at = lba;
                while at < lba + blocks {
                    let n = (lba + blocks - at).min(max_same).min(u64::from(u32::MAX));
                    let same = WriteSame {
                        lba: at,
                        number_of_blocks: u32::try_from(n).unwrap_or(u32::MAX),
                        unmap: geometry.unmap_write_same && geometry.zeroes_after_unmap,
                        anchor: false,
                        ndob: false,
                        size: CdbSize::Sixteen,
                    };
                    jobs.push((Command::WriteSame(same), zero_block.clone().into(), n * block, true));
                    at += n;
                }
                jobs
            }
        };
        for (command, data, bytes, zeroing) in jobs {
            while in_flight.len() >= options.queue_depth.max(1) {
                done += finish(&mut in_flight, &mut write_same_works).await?;
                progress(Progress {
                    done_bytes: done,
                    total_bytes: size,
                });
            }
            let disk = disk.clone();
            let session = next_session;
            next_session = next_session.wrapping_add(1);
            let fallback = !write_same_works && zeroing;
            in_flight.spawn(async move { submit(&disk, session, command, data, bytes, zeroing, fallback).await });
        }
    }
    while !in_flight.is_empty() {
        done += finish(&mut in_flight, &mut write_same_works).await?;
        progress(Progress {
            done_bytes: done,
            total_bytes: size,
        });
    }
    report.image_bytes = reader.await.map_err(|e| WriteError::Internal(e.to_string()))?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Turn the image's chunks into whole-block pieces, on a blocking thread; the image's size
/// once read. A stream of unknown length must end within `limit` bytes.
fn read_pieces(
    mut source: Box<dyn Source>,
    block: u64,
    base_lba: u64,
    per_command: u64,
    limit: Option<u64>,
    tx: &mpsc::Sender<Result<Piece, WriteError>>,
) -> u64 {
    let max = usize::try_from(per_command).unwrap_or(usize::MAX);
    loop {
        let piece = match source.next_chunk(max) {
            Ok(None) => return source.size(),
            Err(e) => Err(WriteError::Source(e)),
            Ok(Some(chunk)) if limit.is_some_and(|room| chunk.offset() + chunk.len() > room) => {
                Err(WriteError::StreamTooLarge {
                    disk: limit.unwrap_or_default(),
                })
            }
            Ok(Some(Chunk::Stored { offset, range }))
                if offset.is_multiple_of(block) && (range.len() as u64).is_multiple_of(block) =>
            {
                Ok(Piece::Data {
                    lba: base_lba + offset / block,
                    data: range.into(),
                })
            }
            // The image's last, partial block: read, to be padded.
            Ok(Some(Chunk::Stored { offset, range })) => match range.read() {
                Ok(data) => data_piece(offset, data, block, base_lba),
                Err(e) => Err(WriteError::Internal(format!("reading the image at byte {offset}: {e}"))),
            },
            Ok(Some(Chunk::Data { offset, data })) => data_piece(offset, data, block, base_lba),
            Ok(Some(Chunk::Zero { offset, len })) => {
                let first = offset.div_ceil(block);
                let end = (offset + len).div_ceil(block);
                if !offset.is_multiple_of(block) {
                    Err(WriteError::Unaligned { offset, block })
                } else {
                    Ok(Piece::Zero {
                        lba: base_lba + first,
                        blocks: end - first,
                    })
                }
            }
        };
        let failed = piece.is_err();
        if tx.blocking_send(piece).is_err() || failed {
            return source.size();
        }
    }
}

/// A piece of data in memory at image `offset`; only the image's last chunk
/// can end inside a block, and it is padded with zeroes.
fn data_piece(offset: u64, data: Bytes, block: u64, base_lba: u64) -> Result<Piece, WriteError> {
    if !offset.is_multiple_of(block) {
        return Err(WriteError::Unaligned { offset, block });
    }
    let padded = (data.len() as u64).div_ceil(block) * block;
    let data = if padded == data.len() as u64 {
        data
    } else {
        let mut buf = BytesMut::from(&data[..]);
        buf.resize(usize::try_from(padded).unwrap_or(usize::MAX), 0);
        buf.freeze()
    };
    Ok(Piece::Data {
        lba: base_lba + offset / block,
        data: data.into(),
    })
}

/// Run one piece; a zeroing command the disk does not know falls back to
/// writing zeroes as data. Returns the bytes done and whether WRITE SAME is
/// known not to work.
async fn submit(
    disk: &Disk,
    session: usize,
    command: Command,
    data: Payload,
    bytes: u64,
    zeroing: bool,
    fallback: bool,
) -> Result<(u64, bool), DiskError> {
    if !fallback {
        match disk
            .run_on(
                session,
                if zeroing { "WRITE SAME (16)" } else { "WRITE (16)" },
                &command,
                data,
                0,
            )
            .await
        {
            Ok(_) => return Ok((bytes, false)),
            Err(DiskError::Command { sense: Some(sense), .. })
                if zeroing && sense.additional_sense == AdditionalSense::INVALID_COMMAND_OPERATION_CODE => {}
            Err(e) => return Err(e),
        }
    }
    let Command::WriteSame(same) = command else {
        return Ok((bytes, true));
    };
    let block = u64::from(disk.geometry.block_size);
    let chunk_blocks = ((1u64 << 20) / block).max(1);
    let zeroes = Bytes::from(vec![0u8; usize::try_from(chunk_blocks * block).unwrap_or(1 << 20)]);
    let end = same.lba + u64::from(same.number_of_blocks);
    let mut lba = same.lba;
    while lba < end {
        let n = (end - lba).min(chunk_blocks);
        let write = Command::Write(ReadWrite {
            size: CdbSize::Sixteen,
            ..ReadWrite::new(lba, n as u32)
        });
        let data = zeroes.slice(..usize::try_from(n * block).unwrap_or(0));
        disk.run_on(session, "WRITE (16) of zeroes", &write, data, 0).await?;
        lba += n;
    }
    Ok((bytes, true))
}

/// Wait for one command; the bytes it covered.
async fn finish(
    in_flight: &mut JoinSet<Result<(u64, bool), DiskError>>,
    write_same_works: &mut bool,
) -> Result<u64, WriteError> {
    match in_flight.join_next().await {
        Some(Ok(Ok((bytes, fell_back)))) => {
            if fell_back {
                *write_same_works = false;
            }
            Ok(bytes)
        }
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(e)) => Err(WriteError::Internal(e.to_string())),
        None => Ok(0),
    }
}

/// Where a read-back differed from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Byte offset in the image of the first differing byte.
    pub offset: u64,
}

/// Read the disk back and compare it with the image over the image's
/// length; zero runs are read back too unless `skip_zeroes` left them
/// alone. Returns the first mismatch found.
pub async fn verify_image(
    disk: &Disk,
    mut source: Box<dyn Source>,
    options: &WriteOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Option<Mismatch>, WriteError> {
    let size = source.size();
    if size > disk.geometry.capacity() {
        return Err(WriteError::TooLarge {
            image: size,
            disk: disk.geometry.capacity(),
        });
    }
    let per_read = disk.geometry.io_bytes(options.max_io);
    let max = usize::try_from(per_read).unwrap_or(1 << 20);
    let mut in_flight: JoinSet<Result<(u64, Option<u64>), DiskError>> = JoinSet::new();
    let mut done = 0u64;
    let mut first: Option<u64> = None;
    let mut session = 0usize;
    loop {
        let chunk = tokio::task::block_in_place(|| source.next_chunk(max))?;
        let Some(chunk) = chunk else { break };
        if matches!(chunk, Chunk::Zero { .. }) && options.skip_zeroes {
            done += chunk.len();
            continue;
        }
        // Split zero runs (data chunks are already at most one read long).
        let (start, len) = (chunk.offset(), chunk.len());
        let expected = match chunk {
            Chunk::Data { data, .. } => Some(data),
            Chunk::Stored { offset, range } => Some(
                range
                    .read()
                    .map_err(|e| WriteError::Internal(format!("reading the image at {offset}: {e}")))?,
            ),
            Chunk::Zero { .. } => None,
        };
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(per_read);
            let slice = expected
                .as_ref()
                .map(|d| d.slice((at - start) as usize..(at - start + n) as usize));
            while in_flight.len() >= options.queue_depth.max(1) {
                let (bytes, bad) = join(&mut in_flight).await?;
                done += bytes;
                first = min_some(first, bad);
                progress(Progress {
                    done_bytes: done,
                    total_bytes: size,
                });
            }
            let disk = disk.clone();
            let this_session = session;
            session = session.wrapping_add(1);
            in_flight.spawn(async move { read_compare(&disk, this_session, at, n, slice).await });
            at += n;
        }
    }
    while !in_flight.is_empty() {
        let (bytes, bad) = join(&mut in_flight).await?;
        done += bytes;
        first = min_some(first, bad);
        progress(Progress {
            done_bytes: done,
            total_bytes: size,
        });
    }
    Ok(first.map(|offset| Mismatch { offset }))
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn join(set: &mut JoinSet<Result<(u64, Option<u64>), DiskError>>) -> Result<(u64, Option<u64>), WriteError> {
    match set.join_next().await {
        Some(Ok(result)) => Ok(result?),
        Some(Err(e)) => Err(WriteError::Internal(e.to_string())),
        None => Ok((0, None)),
    }
}

/// Read `len` image bytes at `offset` and compare them with `expected`
/// (zeroes when `None`): the bytes covered and the first differing offset.
async fn read_compare(
    disk: &Disk,
    session: usize,
    offset: u64,
    len: u64,
    expected: Option<Bytes>,
) -> Result<(u64, Option<u64>), DiskError> {
    let block = u64::from(disk.geometry.block_size);
    let blocks = len.div_ceil(block);
    let read = Command::Read(ReadWrite {
        size: CdbSize::Sixteen,
        ..ReadWrite::new(offset / block, blocks as u32)
    });
    let got = disk
        .run_on(session, "READ (16)", &read, Bytes::new(), (blocks * block) as u32)
        .await?;
    let got = got.data.get(..len as usize).unwrap_or(&got.data);
    let differs = match &expected {
        Some(want) => got
            .iter()
            .zip(want.iter())
            .position(|(a, b)| a != b)
            .or((got.len() < want.len()).then_some(got.len())),
        None => got
            .iter()
            .position(|&b| b != 0)
            .or((got.len() < len as usize).then_some(got.len())),
    };
    Ok((len, differs.map(|i| offset + i as u64)))
}
