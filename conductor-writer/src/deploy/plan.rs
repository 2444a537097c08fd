//! Everything a deploy decides before its first write: the image opened
//! and checksummed, the config drive loaded, the layout planned (keeping an
//! ephemeral partition where asked), file systems made in scratch files, and
//! the regions to write in the order that leaves the image for last.

use super::configdrive::{self, ConfigDrive};
use super::fsid::{self, FsId};
use super::layout::{self, Layout, MIB, Role};
use super::mkfs::{self, Mkfs};
use super::table::{Label, Partition, Table};
use super::{DeployOptions, ImageType};
use crate::disk::Disk;
use crate::source::{self, Chunk, Memory, OpenOptions, Source, Zeroes};
use anyhow::{Context, bail};
use std::path::Path;
use uuid::Uuid;

/// One thing to write, at a byte offset of the disk.
#[derive(Debug)]
pub(super) struct Region {
    pub(super) what: String,
    pub(super) offset: u64,
    pub(super) source: Box<dyn Source>,
    /// Zero runs may keep the disk's old bytes.
    pub(super) skip_zeroes: bool,
}

/// Everything decided before the first write.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) regions: Vec<Region>,
    pub(super) table: Option<Table>,
    /// What the partitions the deploy made are for.
    pub(super) roles: Vec<(Role, u32)>,
    pub(super) filesystems: Vec<(u32, FsId)>,
    pub(super) disk_identifier: String,
    pub(super) root_uuid: Option<String>,
    pub(super) efi_uuid: Option<String>,
    pub(super) image_bytes: u64,
    /// Scratch files, removed when the plan is dropped.
    _scratch: tempfile::TempDir,
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

pub(super) async fn prepare(disk: &Disk, options: &DeployOptions) -> anyhow::Result<Plan> {
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
