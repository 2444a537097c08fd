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
//! - `plan`: everything decided and made before the first write.

pub mod configdrive;
pub mod fsid;
pub mod layout;
pub mod mkfs;
mod plan;
pub mod table;

use crate::disk::Disk;
use crate::source::{Checksum, OpenOptions};
use crate::write::{Progress, Report, WriteOptions, write_at};
use anyhow::Context;
use fsid::FsId;
use layout::{MIB, Role};
use mkfs::FsFormat;
use plan::prepare;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use table::{Label, Table};

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
