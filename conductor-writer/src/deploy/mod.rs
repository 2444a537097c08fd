//! A node's disk made ready the way Ironic's `work_on_disk` left it:
//! partitioned, formatted, imaged, with the same answers (`root uuid`,
//! `efi system partition uuid`, `disk identifier`) for the PXE config.
//!
//! Everything that can fail without the disk is done first: the image is
//! opened and checksummed, the config drive decoded, the layout planned, the
//! file systems made in sparse scratch files, the partition table rendered.
//! Only then is the first block written, and in an order that leaves the
//! image for last.
//!
//! # Layout
//!
//! - [`layout`]: where each partition goes (Ironic's `make_partitions`).
//! - [`table`]: MBR and GPT as bytes, built and read.
//! - [`mkfs`]: swap, ephemeral and EFI file systems by the Debian tools.
//! - [`configdrive`]: the config drive, from a file or URL, decoded and checked.
//! - [`fsid`]: a file system's UUID and label, as `blkid` reports them.

pub mod configdrive;
pub mod fsid;
pub mod layout;
pub mod mkfs;
pub mod table;

use crate::disk::Disk;
use crate::source::{self, Checksum, Chunk, Memory, OpenOptions, Source, Zeroes};
use crate::write::{Progress, Report, WriteOptions, write_at};
use anyhow::{Context, bail};
use configdrive::ConfigDrive;
use fsid::FsId;
use layout::{Layout, MIB, Role};
use mkfs::{FsFormat, Mkfs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use table::{Label, Partition, Table};
use uuid::Uuid;

/// What the image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageType {
    /// A file system for the root partition; the deploy makes the partitions.
    Partition,
    /// A whole disk, partition table included, written from byte 0.
    WholeDisk,
}

/// What a node asks of its disk, said the same way by `deploy`'s flags and
/// by a node's spec in `serve`.
#[derive(Debug, Clone)]
pub struct Request {
    pub image_type: ImageType,
    /// The partitions of a partition-image deploy; `configdrive_mb` is
    /// taken from the config drive itself.
    pub partitions: layout::Request,
    pub ephemeral_format: FsFormat,
    pub preserve_ephemeral: bool,
    /// A file path or `http://` URL.
    pub configdrive: Option<String>,
}

impl Request {
    /// The first partition option set for a whole-disk image, which brings
    /// its own partitions, by its name in a node's spec (`root_mb`; the
    /// command line spells it `--root-mb`).
    #[must_use]
    pub fn misplaced(&self) -> Option<&'static str> {
        if self.image_type != ImageType::WholeDisk {
            return None;
        }
        let p = &self.partitions;
        [
            ("root_mb", p.root_mb.is_some()),
            ("swap_mb", p.swap_mb > 0),
            ("ephemeral_mb", p.ephemeral_mb > 0),
            ("preserve_ephemeral", self.preserve_ephemeral),
        ]
        .into_iter()
        .find_map(|(key, set)| set.then_some(key))
    }
}

/// What to deploy, and how: built here only, from a [`Request`], whoever
/// asks; callers then set how the image is opened and written.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub image: PathBuf,
    pub request: Request,
    pub open: OpenOptions,
    pub checksum: Option<Checksum>,
    pub write: WriteOptions,
    /// For fetching a config drive.
    pub fetch_timeout: Duration,
}

impl DeployOptions {
    /// `request` for `image`, opened and written with the defaults (the
    /// request itself is checked by [`deploy`] before anything is written).
    #[must_use]
    pub fn new(image: PathBuf, request: Request) -> Self {
        Self {
            image,
            request,
            open: OpenOptions::default(),
            checksum: None,
            write: WriteOptions::default(),
            fetch_timeout: Duration::from_secs(60),
        }
    }
}

/// One partition as the result reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionReport {
    pub number: u32,
    /// What Ironic calls it (`root`, `swap`, ...), if the deploy made it.
    pub role: Option<Role>,
    /// Bytes from the start of the disk.
    pub start: u64,
    pub size: u64,
    /// MBR type byte or GPT type GUID.
    #[serde(rename = "type")]
    pub kind: String,
    /// GPT partition name (empty on msdos).
    pub name: String,
    /// What `blkid` calls PARTUUID.
    pub partuuid: String,
    pub bootable: bool,
    /// The file system the deploy put there, as `blkid` would report it.
    pub filesystem: Option<FsId>,
}

/// The result of a deploy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployReport {
    #[serde(rename = "root uuid")]
    pub root_uuid: Option<String>,
    #[serde(rename = "efi system partition uuid")]
    pub efi_system_partition_uuid: Option<String>,
    #[serde(rename = "disk identifier")]
    pub disk_identifier: String,
    pub image: String,
    pub image_type: ImageType,
    pub partition_table: Option<Label>,
    pub partitions: Vec<PartitionReport>,
    pub image_bytes: u64,
    /// Bytes sent as data, over every region written.
    pub bytes_sent: u64,
    /// Bytes zeroed without sending data (WRITE SAME, or holes left alone).
    pub bytes_zeroed: u64,
    pub seconds: f64,
    pub mib_per_second: f64,
    pub notified: bool,
}

impl DeployReport {
    /// The text form: the answers, the table, the figures.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        if let Some(uuid) = &self.root_uuid {
            line(format!("root uuid: {uuid}"));
        }
        if let Some(uuid) = &self.efi_system_partition_uuid {
            line(format!("efi system partition uuid: {uuid}"));
        }
        line(format!("disk identifier: {}", self.disk_identifier));
        if let Some(label) = self.partition_table {
            line(format!("partition table: {label}"));
            line(format!(
                "{:>3} {:>12} {:>12} {:<38} {:<12} {:<22} {}",
                "#", "start MiB", "size MiB", "type", "name", "role", "file system"
            ));
            for p in &self.partitions {
                let fs = p
                    .filesystem
                    .as_ref()
                    .map(|f| format!("{} {} {}", format!("{:?}", f.kind).to_lowercase(), f.uuid, f.label))
                    .unwrap_or_default();
                line(format!(
                    "{:>3} {:>12.1} {:>12.1} {:<38} {:<12} {:<22} {}",
                    p.number,
                    p.start as f64 / MIB as f64,
                    p.size as f64 / MIB as f64,
                    p.kind,
                    p.name,
                    p.role.map(|r| r.to_string()).unwrap_or_default(),
                    fs.trim()
                ));
            }
        }
        line(format!(
            "deployed {} ({} image): {:.1} MiB sent as data, {:.1} MiB zeroed, {:.2} s, {:.1} MiB/s{}",
            self.image,
            match self.image_type {
                ImageType::Partition => "partition",
                ImageType::WholeDisk => "whole-disk",
            },
            self.bytes_sent as f64 / MIB as f64,
            self.bytes_zeroed as f64 / MIB as f64,
            self.seconds,
            self.mib_per_second,
            if self.notified { ", ramdisk notified" } else { "" }
        ));
        out
    }
}

/// One thing to write, at a byte offset of the disk.
#[derive(Debug)]
struct Region {
    what: String,
    offset: u64,
    source: Box<dyn Source>,
    /// Zero runs may keep the disk's old bytes.
    skip_zeroes: bool,
}

/// Everything decided before the first write.
#[derive(Debug)]
struct Plan {
    regions: Vec<Region>,
    table: Option<Table>,
    /// What the partitions the deploy made are for.
    roles: Vec<(Role, u32)>,
    filesystems: Vec<(u32, FsId)>,
    disk_identifier: String,
    root_uuid: Option<String>,
    efi_uuid: Option<String>,
    image_bytes: u64,
    /// Scratch files, removed when the plan is dropped.
    _scratch: tempfile::TempDir,
}

/// Check everything, then write. `progress` sees bytes done of the total.
pub async fn deploy(
    disk: &Disk,
    options: &DeployOptions,
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<DeployReport> {
    let mut plan = prepare(disk, options).await?;
    let total: u64 = plan.regions.iter().map(|r| r.source.size()).sum();
    let started = Instant::now();
    let (mut sent, mut zeroed, mut done) = (0, 0, 0);
    for region in std::mem::take(&mut plan.regions) {
        let write = WriteOptions {
            skip_zeroes: region.skip_zeroes,
            ..options.write.clone()
        };
        let size = region.source.size();
        tracing::debug!(what = %region.what, offset = region.offset, size, "writing");
        let report: Report = write_at(disk, region.source, region.offset, &write, |p| {
            progress(Progress {
                done_bytes: done + p.done_bytes,
                total_bytes: total,
            });
        })
        .await
        .with_context(|| format!("writing the {}", region.what))?;
        sent += report.data_bytes;
        zeroed += report.zero_bytes;
        done += size;
    }
    disk.synchronize_cache().await.context("flushing the disk's cache")?;
    let seconds = started.elapsed().as_secs_f64();
    let partitions = plan
        .table
        .as_ref()
        .map(|t| partition_reports(t, &plan.roles, &plan.filesystems))
        .unwrap_or_default();
    Ok(DeployReport {
        root_uuid: plan.root_uuid,
        efi_system_partition_uuid: plan.efi_uuid,
        disk_identifier: plan.disk_identifier,
        image: options.image.display().to_string(),
        image_type: options.request.image_type,
        partition_table: plan.table.as_ref().map(|t| t.label),
        partitions,
        image_bytes: plan.image_bytes,
        bytes_sent: sent,
        bytes_zeroed: zeroed,
        seconds,
        mib_per_second: if seconds > 0.0 {
            total as f64 / seconds / MIB as f64
        } else {
            0.0
        },
        notified: false,
    })
}

fn partition_reports(table: &Table, roles: &[(Role, u32)], filesystems: &[(u32, FsId)]) -> Vec<PartitionReport> {
    let bs = u64::from(table.block_size);
    table
        .partitions
        .iter()
        .map(|p| PartitionReport {
            number: p.number,
            role: roles.iter().find(|(_, n)| *n == p.number).map(|(r, _)| *r),
            start: p.first_lba * bs,
            size: p.blocks * bs,
            kind: p.kind.to_string(),
            name: p.name.clone(),
            partuuid: table.part_uuid(p),
            bootable: p.bootable,
            filesystem: filesystems.iter().find(|(n, _)| *n == p.number).map(|(_, f)| f.clone()),
        })
        .collect()
}

/// Open the image (checksum first) with the caller's options.
fn open_image(options: &DeployOptions) -> anyhow::Result<Box<dyn Source>> {
    Ok(source::open(&options.image, &options.open)?)
}

/// The first `len` bytes of a source (zeroes past its end).
fn read_head(mut source: Box<dyn Source>, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut head = vec![0u8; len];
    while let Some(chunk) = source.next_chunk(len.max(4096))? {
        let start = usize::try_from(chunk.offset()).unwrap_or(usize::MAX);
        if start >= len {
            break;
        }
        if let Chunk::Data { data, .. } = chunk {
            let n = data.len().min(len - start);
            head[start..start + n].copy_from_slice(&data[..n]);
        }
    }
    Ok(head)
}

fn fs_of_file(path: &Path) -> anyhow::Result<Option<FsId>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(fsid::PROBE_BYTES);
    std::fs::File::open(path)?
        .take(fsid::PROBE_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(fsid::identify(&head))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b).max(1)
}

async fn prepare(disk: &Disk, options: &DeployOptions) -> anyhow::Result<Plan> {
    if let Some(key) = options.request.misplaced() {
        bail!("`{key}` only applies to partition images, and the image is a whole disk");
    }
    if let Some(expected) = &options.checksum {
        let (path, expected) = (options.image.clone(), *expected);
        tokio::task::spawn_blocking(move || source::verify_checksum(&path, &expected))
            .await
            .context("checksum task")??;
    }
    let image = open_image(options)?;
    let configdrive = match &options.request.configdrive {
        Some(spec) => {
            let (spec, timeout) = (spec.clone(), options.fetch_timeout);
            Some(tokio::task::spawn_blocking(move || configdrive::load(&spec, timeout)).await??)
        }
        None => None,
    };
    let scratch = tempfile::Builder::new()
        .prefix("conductor-writer-deploy.")
        .tempdir()
        .context("cannot make a scratch directory")?;
    match options.request.image_type {
        ImageType::Partition => prepare_partition_image(disk, options, image, configdrive, scratch).await,
        ImageType::WholeDisk => prepare_whole_disk(disk, options, image, configdrive, scratch),
    }
}

/// A source over a scratch file made by a tool (see [`mkfs`] for holes).
fn scratch_source(path: &Path, holes_matter: bool) -> anyhow::Result<Box<dyn Source>> {
    let options = OpenOptions {
        format: source::FormatChoice::Raw,
        scan_zeroes: holes_matter,
        backing_files: false,
        ..OpenOptions::default()
    };
    Ok(source::open(path, &options)?)
}

/// The config drive, through a scratch file, as partition `number` at `offset`.
fn configdrive_region(
    cd: &ConfigDrive,
    scratch: &Path,
    offset: u64,
    number: u32,
    filesystems: &mut Vec<(u32, FsId)>,
) -> anyhow::Result<Region> {
    let path = scratch.join("configdrive");
    std::fs::write(&path, &cd.image).context("cannot write the config drive to a scratch file")?;
    if let Some(fs) = fs_of_file(&path)? {
        filesystems.push((number, fs));
    }
    Ok(Region {
        what: "config drive".into(),
        offset,
        source: scratch_source(&path, true)?,
        skip_zeroes: false,
    })
}

async fn prepare_partition_image(
    disk: &Disk,
    options: &DeployOptions,
    image: Box<dyn Source>,
    configdrive: Option<ConfigDrive>,
    scratch: tempfile::TempDir,
) -> anyhow::Result<Plan> {
    let g = &disk.geometry;
    let request = layout::Request {
        configdrive_mb: configdrive.as_ref().map_or(0, ConfigDrive::size_mib),
        ..options.request.partitions.clone()
    };
    let existing = if options.request.preserve_ephemeral {
        let head = disk
            .read_at(0, u32::try_from(Table::head_len(g.block_size)).unwrap_or(u32::MAX))
            .await
            .context("reading the disk's partition table")?;
        Table::decode(&head, g.block_size, g.blocks)
            .context("cannot keep the ephemeral partition: the disk's partition table is damaged")?
    } else {
        None
    };
    let (signature, disk_guid) = existing
        .as_ref()
        .map_or_else(|| (random_u32(), Uuid::new_v4()), |t| (t.disk_signature, t.disk_guid));
    let mut layout = layout::plan(&request, g.block_size, g.blocks, signature, disk_guid, Uuid::new_v4)
        .context("the partitions do not fit the disk")?;
    if options.request.preserve_ephemeral {
        keep_ephemeral(&mut layout, existing.as_ref())?;
    }
    let bs = u64::from(g.block_size);
    let at = |role| layout.partition(role).map(|p| (p.first_lba * bs, p.blocks * bs));
    let Some((root_at, root_size)) = at(Role::Root) else {
        bail!("internal error: the layout has no root partition");
    };
    if image.size() > root_size {
        bail!(
            "the image is {} bytes ({:.1} MiB) but the root partition holds {} MiB; \
             give a larger --root-mb or a smaller image. Nothing was written",
            image.size(),
            image.size() as f64 / MIB as f64,
            root_size / MIB
        );
    }

    let mut regions = Vec::new();
    let mut filesystems = Vec::new();
    // File systems, made locally: nothing is written if a tool fails.
    let mut make = |role: Role, what: Mkfs| -> anyhow::Result<Option<String>> {
        let Some((offset, size)) = at(role) else {
            return Ok(None);
        };
        let path = scratch.path().join(role.to_string().replace(' ', "-"));
        mkfs::make(what, &path, size, &role.to_string())?;
        let fs = fs_of_file(&path)?;
        let number = layout.partition(role).map_or(0, |p| p.number);
        let uuid = fs.as_ref().map(|f| f.uuid.clone());
        if let Some(fs) = fs {
            filesystems.push((number, fs));
        }
        regions.push(Region {
            what: format!("{role} file system"),
            offset,
            source: scratch_source(&path, what.holes_matter())?,
            skip_zeroes: !what.holes_matter(),
        });
        Ok(uuid)
    };
    let efi_uuid = make(Role::EfiSystem, Mkfs::EfiSystem)?;
    make(Role::Swap, Mkfs::Swap)?;
    if !options.request.preserve_ephemeral {
        make(Role::Ephemeral, Mkfs::Ephemeral(options.request.ephemeral_format))?;
    }
    if let (Some(cd), Some((offset, _))) = (&configdrive, at(Role::ConfigDrive)) {
        let number = layout.partition(Role::ConfigDrive).map_or(0, |p| p.number);
        regions.push(configdrive_region(
            cd,
            scratch.path(),
            offset,
            number,
            &mut filesystems,
        )?);
    }

    // The root file system's identity, from the image itself.
    let head = read_head(open_image(options)?, fsid::PROBE_BYTES)?;
    let root_fs = fsid::identify(&head);
    let root_partition = layout.partition(Role::Root).cloned();
    let root_uuid = match (&root_fs, &root_partition) {
        (Some(fs), _) => Some(fs.uuid.clone()),
        // Ironic falls back to the partition's UUID.
        (None, Some(p)) => Some(layout.table.part_uuid(p)),
        (None, None) => None,
    };
    if let (Some(fs), Some(p)) = (root_fs, &root_partition) {
        filesystems.push((p.number, fs));
    }

    // Old metadata goes first: the start of the disk up to the first
    // partition, and its last MiB (backup GPT, RAID superblocks).
    let first = layout.table.partitions.iter().map(|p| p.first_lba).min().unwrap_or(0) * bs;
    let used_end = layout
        .table
        .partitions
        .iter()
        .map(Partition::end_lba)
        .max()
        .unwrap_or(0)
        * bs;
    let tail = used_end.max(g.capacity().saturating_sub(MIB));
    let mut wipe = vec![Region {
        what: "old metadata at the start of the disk".into(),
        offset: 0,
        source: Box::new(Zeroes::new(first)),
        skip_zeroes: false,
    }];
    if tail < g.capacity() {
        wipe.push(Region {
            what: "old metadata at the end of the disk".into(),
            offset: tail,
            source: Box::new(Zeroes::new(g.capacity() - tail)),
            skip_zeroes: false,
        });
    }
    for extent in layout.table.encode()? {
        wipe.push(Region {
            what: "partition table".into(),
            offset: extent.offset,
            source: Box::new(Memory::new(extent.data)),
            skip_zeroes: false,
        });
    }
    let image_bytes = image.size();
    regions.push(Region {
        what: "root partition image".into(),
        offset: root_at,
        source: image,
        skip_zeroes: false,
    });
    wipe.append(&mut regions);
    Ok(Plan {
        regions: wipe,
        disk_identifier: layout.table.disk_identifier(),
        table: Some(layout.table),
        roles: layout.roles,
        filesystems,
        root_uuid,
        efi_uuid,
        image_bytes,
        _scratch: scratch,
    })
}

/// With `--preserve-ephemeral`, the new layout must put the ephemeral
/// partition exactly where the disk has it; it then keeps its identity.
fn keep_ephemeral(layout: &mut Layout, existing: Option<&Table>) -> anyhow::Result<()> {
    let Some(planned) = layout.partition(Role::Ephemeral).cloned() else {
        bail!("--preserve-ephemeral needs an ephemeral partition: give --ephemeral-mb as for the previous deploy");
    };
    let Some(existing) = existing else {
        bail!(
            "cannot keep the ephemeral partition: the disk has no partition table. Deploy without --preserve-ephemeral"
        );
    };
    let mib = |blocks: u64| blocks * u64::from(existing.block_size) / MIB;
    let found = existing.partitions.iter().find(|p| p.number == planned.number);
    let Some(old) = found.filter(|p| p.first_lba == planned.first_lba && p.blocks == planned.blocks) else {
        let there = found.map_or_else(
            || "has no such partition".to_owned(),
            |p| format!("has it at {} MiB with {} MiB", mib(p.first_lba), mib(p.blocks)),
        );
        bail!(
            "cannot keep the ephemeral partition: the new layout puts partition {} at {} MiB with {} MiB, \
             but the disk {there}. Use the same boot mode, EFI and ephemeral sizes as the previous deploy, \
             or deploy without --preserve-ephemeral",
            planned.number,
            mib(planned.first_lba),
            mib(planned.blocks)
        );
    };
    if existing.label != layout.table.label {
        bail!(
            "cannot keep the ephemeral partition: the disk has a {} label and this deploy asks for {}",
            existing.label,
            layout.table.label
        );
    }
    let old = old.clone();
    if let Some(p) = layout.table.partitions.iter_mut().find(|p| p.number == planned.number) {
        p.guid = old.guid;
        p.kind = old.kind;
        p.name = old.name;
        p.attributes = old.attributes;
    }
    Ok(())
}

fn prepare_whole_disk(
    disk: &Disk,
    options: &DeployOptions,
    image: Box<dyn Source>,
    configdrive: Option<ConfigDrive>,
    scratch: tempfile::TempDir,
) -> anyhow::Result<Plan> {
    let g = &disk.geometry;
    let size = image.size();
    if size > g.capacity() {
        bail!(
            "the image is {size} bytes but the disk holds only {} bytes; nothing was written",
            g.capacity()
        );
    }
    let head = read_head(open_image(options)?, Table::head_len(g.block_size).max(512))?;
    let image_blocks = size / u64::from(g.block_size);
    let mut table = Table::decode(&head, g.block_size, image_blocks)
        .with_context(|| format!("the partition table of {} is damaged", options.image.display()))?;
    let mut regions = vec![Region {
        what: "disk image".into(),
        offset: 0,
        source: image,
        skip_zeroes: false,
    }];
    let mut filesystems = Vec::new();
    let mut roles = Vec::new();
    if let Some(t) = &mut table {
        // The table now describes this disk. A GPT's backup, which sits
        // where the image ends, moves to the disk's end as `sgdisk -e` does.
        t.disk_blocks = g.blocks;
    }
    if let Some(cd) = &configdrive {
        let Some(t) = &mut table else {
            bail!(
                "{} has no partition table to add a config drive partition to; nothing was written",
                options.image.display()
            );
        };
        let slot = layout::configdrive_slot(t, configdrive::MAX_CONFIG_DRIVE_BYTES / MIB)
            .context("no room for the config drive partition after the image's partitions")?;
        let offset = slot.first_lba * u64::from(g.block_size);
        regions.push(configdrive_region(
            cd,
            scratch.path(),
            offset,
            slot.number,
            &mut filesystems,
        )?);
        roles.push((Role::ConfigDrive, slot.number));
        t.partitions.push(slot);
        t.partitions.sort_by_key(|p| p.number);
    }
    if let Some(t) = &table
        && (t.label == Label::Gpt || configdrive.is_some())
    {
        for extent in t.encode().context("cannot rewrite the image's partition table")? {
            regions.push(Region {
                what: "partition table".into(),
                offset: extent.offset,
                source: Box::new(Memory::new(extent.data)),
                skip_zeroes: false,
            });
        }
    }
    // Ironic's `hexdump -s 440 -n 4 -e '"0x%08x"'`, or the GPT's disk GUID.
    let signature = head
        .get(440..444)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let disk_identifier = table
        .as_ref()
        .map_or_else(|| format!("0x{signature:08x}"), Table::disk_identifier);
    Ok(Plan {
        regions,
        table,
        roles,
        filesystems,
        disk_identifier,
        root_uuid: None,
        efi_uuid: None,
        image_bytes: size,
        _scratch: scratch,
    })
}
