//! File systems for swap, ephemeral and EFI partitions, made by the real
//! Debian tools in a sparse local file of the partition's size; only what
//! the tool wrote is then sent.
//!
//! What happens to the file's holes depends on the tool. `mke2fs -t ext4`
//! with lazy initialisation and no discard, `mkfs.vfat` and `mkswap` write
//! every byte the file system relies on, so holes may keep the disk's old
//! bytes and are skipped: a 1 TiB ext4 is 16 MiB on the wire. `mke2fs` for
//! ext2/ext3 zeroes inode tables by punching holes, and `mkfs.xfs` zeroes
//! its log the same way: their holes must read as zeroes and are zeroed
//! (WRITE SAME, an unmap on thin disks).

use std::path::{Path, PathBuf};
use std::process::Command;

/// File systems an ephemeral partition can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsFormat {
    Ext4,
    Ext3,
    Ext2,
    Vfat,
    Xfs,
}

impl FsFormat {
    fn tool(self) -> &'static str {
        match self {
            FsFormat::Ext4 | FsFormat::Ext3 | FsFormat::Ext2 => "mke2fs",
            FsFormat::Vfat => "mkfs.vfat",
            FsFormat::Xfs => "mkfs.xfs",
        }
    }

    /// The Debian package that has the tool.
    fn package(self) -> &'static str {
        match self {
            FsFormat::Ext4 | FsFormat::Ext3 | FsFormat::Ext2 => "e2fsprogs",
            FsFormat::Vfat => "dosfstools",
            FsFormat::Xfs => "xfsprogs",
        }
    }

    /// The smallest partition the tool accepts, in MiB.
    fn min_mb(self) -> u64 {
        match self {
            FsFormat::Xfs => 300,
            _ => 1,
        }
    }
}

impl std::fmt::Display for FsFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsFormat::Ext4 => "ext4",
            FsFormat::Ext3 => "ext3",
            FsFormat::Ext2 => "ext2",
            FsFormat::Vfat => "vfat",
            FsFormat::Xfs => "xfs",
        })
    }
}

/// What to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mkfs {
    /// `mkswap -L swap1`.
    Swap,
    /// The ephemeral file system, labelled `ephemeral0`.
    Ephemeral(FsFormat),
    /// FAT32 labelled `efi-part`.
    EfiSystem,
}

impl Mkfs {
    fn tool(self) -> &'static str {
        match self {
            Mkfs::Swap => "mkswap",
            Mkfs::Ephemeral(f) => f.tool(),
            Mkfs::EfiSystem => FsFormat::Vfat.tool(),
        }
    }

    fn package(self) -> &'static str {
        match self {
            Mkfs::Swap => "util-linux",
            Mkfs::Ephemeral(f) => f.package(),
            Mkfs::EfiSystem => FsFormat::Vfat.package(),
        }
    }

    /// Whether the file's holes must read as zeroes on the disk (see the module docs).
    #[must_use]
    pub fn holes_matter(self) -> bool {
        matches!(self, Mkfs::Ephemeral(FsFormat::Ext2 | FsFormat::Ext3 | FsFormat::Xfs))
    }
}

/// Why a file system could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MkfsError {
    #[error("{tool} is not installed (Debian package {package}); it is needed to format the {what} partition")]
    Missing {
        tool: &'static str,
        package: &'static str,
        what: String,
    },
    #[error("a {format} file system needs at least {min} MiB; the {what} partition has {mb} MiB")]
    TooSmall {
        format: FsFormat,
        min: u64,
        mb: u64,
        what: String,
    },
    #[error("{tool} failed for the {what} partition: {detail}")]
    Failed {
        tool: &'static str,
        what: String,
        detail: String,
    },
    #[error("cannot make a scratch file {}: {source}", path.display())]
    Scratch { path: PathBuf, source: std::io::Error },
}

/// Find `tool` the way a shell would, plus the sbin directories that a
/// non-root PATH lacks.
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Check, before anything is written, that `what` can be made on a
/// partition of `mb` MiB.
pub fn check(what: Mkfs, mb: u64, role: &str) -> Result<PathBuf, MkfsError> {
    let (tool, package) = (what.tool(), what.package());
    if let Mkfs::Ephemeral(format) = what
        && mb < format.min_mb()
    {
        return Err(MkfsError::TooSmall {
            format,
            min: format.min_mb(),
            mb,
            what: role.to_owned(),
        });
    }
    find_tool(tool).ok_or_else(|| MkfsError::Missing {
        tool,
        package,
        what: role.to_owned(),
    })
}

/// Make `what` in a new sparse file `path` of `bytes` bytes.
pub fn make(what: Mkfs, path: &Path, bytes: u64, role: &str) -> Result<(), MkfsError> {
    let program = check(what, bytes >> 20, role)?;
    let scratch = |source| MkfsError::Scratch {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::create(path).map_err(scratch)?;
    file.set_len(bytes).map_err(scratch)?;
    drop(file);
    let mut command = Command::new(&program);
    match what {
        Mkfs::Swap => {
            command.args(["-L", "swap1"]);
        }
        Mkfs::Ephemeral(f @ (FsFormat::Ext4 | FsFormat::Ext3 | FsFormat::Ext2)) => {
            // nodiscard: a discard of the scratch file would make mke2fs
            // believe the disk reads zeroes, which the node's disk need not.
            command.args(["-q", "-F", "-t", &f.to_string(), "-L", "ephemeral0"]);
            command.args(["-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"]);
        }
        Mkfs::Ephemeral(FsFormat::Vfat) => {
            command.args(["-n", "ephemeral0"]);
        }
        Mkfs::Ephemeral(FsFormat::Xfs) => {
            command.args(["-q", "-f", "-K", "-L", "ephemeral0"]);
        }
        Mkfs::EfiSystem => {
            // The UEFI specification asks for FAT32 on an ESP.
            command.args(["-F", "32", "-n", "efi-part"]);
        }
    }
    command.arg(path);
    let tool = what.tool();
    let out = command.output().map_err(|e| MkfsError::Failed {
        tool,
        what: role.to_owned(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(MkfsError::Failed {
            tool,
            what: role.to_owned(),
            detail: if detail.is_empty() {
                out.status.to_string()
            } else {
                detail
            },
        });
    }
    Ok(())
}
