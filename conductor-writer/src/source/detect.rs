//! Opening an image file and telling its format by magic number.
//!
//! A raw image has no magic, so anything not recognised is raw. Formats that are recognised
//! but not decoded here are refused with a `qemu-img convert` hint instead of being written to
//! the disk byte for byte, which would leave a node that cannot boot and no error anywhere.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Whence, lseek};

use super::error::{ForeignFormat, SourceError};
use super::stream::Compression;

/// The qcow and qcow2 magic, "QFI\xfb".
pub(crate) const QCOW_MAGIC: [u8; 4] = *b"QFI\xfb";

/// An opened image file and what it is.
#[derive(Debug)]
pub(crate) struct ImageFile {
    /// Shared with the chunks that send stored data straight from it.
    pub(crate) file: std::sync::Arc<File>,
    pub(crate) path: PathBuf,
    /// Size in bytes when opened.
    pub(crate) size: u64,
    pub(crate) block_device: bool,
}

impl ImageFile {
    /// Open `path` read-only; it must be a regular file or a block device.
    pub(crate) fn open(path: &Path) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|e| SourceError::open(path, e))?;
        let file_type = file.metadata().map_err(|e| SourceError::open(path, e))?.file_type();
        let what = if file_type.is_dir() {
            Some("a directory")
        } else if file_type.is_char_device() {
            Some("a character device")
        } else if file_type.is_fifo() || file_type.is_socket() {
            Some("a pipe or socket")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(SourceError::NotAFile {
                path: path.to_path_buf(),
                what,
            });
        }
        let mut image = ImageFile {
            file: file.into(),
            path: path.to_path_buf(),
            size: 0,
            block_device: file_type.is_block_device(),
        };
        image.size = image.current_size().map_err(|e| SourceError::open(path, e))?;
        Ok(image)
    }

    /// The size now: the file's length, or for a block device its capacity (`SEEK_END`).
    pub(crate) fn current_size(&self) -> io::Result<u64> {
        if self.block_device {
            let end = lseek(&self.file, 0, Whence::SeekEnd).map_err(io::Error::from)?;
            u64::try_from(end).map_err(io::Error::other)
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    /// Fail with [`SourceError::SizeChanged`] unless the size is still what it was at open.
    pub(crate) fn check_unchanged(&self) -> Result<(), SourceError> {
        let actual = self
            .current_size()
            .map_err(|e| SourceError::io(&self.path, self.size, e))?;
        if actual == self.size {
            Ok(())
        } else {
            Err(SourceError::SizeChanged {
                path: self.path.clone(),
                expected: self.size,
                actual,
            })
        }
    }

    /// Read as much of `[offset, offset + buf.len())` as the file holds; returns the count.
    pub(crate) fn read_up_to(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// What the first (and last) bytes of an image say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    Raw,
    Qcow2,
    /// A sparse VMDK extent (`KDMV`): monolithicSparse or streamOptimized.
    Vmdk,
    /// A raw image inside a compressed stream.
    Compressed(Compression),
    Foreign(ForeignFormat),
}

/// Tell the format of `image` from its magic numbers.
pub(crate) fn detect(image: &ImageFile) -> Result<Detected, SourceError> {
    let mut head = [0u8; 512];
    let n = image
        .read_up_to(0, &mut head)
        .map_err(|e| SourceError::io(&image.path, 0, e))?;
    let mut tail = [0u8; 512];
    // A fixed VHD is raw data followed by a 512-byte footer, so its magic is at the end.
    let tail_at = image.size.saturating_sub(512);
    let has_tail = image.size >= 1024
        && image
            .read_up_to(tail_at, &mut tail)
            .map_err(|e| SourceError::io(&image.path, tail_at, e))?
            == 512;
    Ok(detect_bytes(&head[..n], has_tail.then_some(&tail[..])))
}

/// The magic-number table. `head` is the start of the file, `tail` its last 512 bytes.
pub(crate) fn detect_bytes(head: &[u8], tail: Option<&[u8]>) -> Detected {
    let starts = |magic: &[u8]| head.starts_with(magic);
    let foreign = |f| Detected::Foreign(f);
    if starts(&QCOW_MAGIC) {
        return match head.get(4..8) {
            Some([0, 0, 0, 1]) => foreign(ForeignFormat::Qcow1),
            // Other versions are reported by the qcow2 reader, which names the version.
            _ => Detected::Qcow2,
        };
    }
    let read: [(&[u8], Detected); 4] = [
        (b"KDMV", Detected::Vmdk),
        (b"\x1f\x8b\x08", Detected::Compressed(Compression::Gzip)),
        (b"\xfd7zXZ\0", Detected::Compressed(Compression::Xz)),
        (b"\x28\xb5\x2f\xfd", Detected::Compressed(Compression::Zstd)),
    ];
    if let Some((_, detected)) = read.iter().find(|(magic, _)| starts(magic)) {
        return *detected;
    }
    let table: [(&[u8], ForeignFormat); 8] = [
        (b"COWD", ForeignFormat::Vmdk),
        (b"# Disk DescriptorFile", ForeignFormat::Vmdk),
        (b"vhdxfile", ForeignFormat::Vhdx),
        (b"conectix", ForeignFormat::Vhd),
        (b"QED\0", ForeignFormat::Qed),
        (b"WithoutFreeSpace", ForeignFormat::Parallels),
        (b"WithouFreSpacExt", ForeignFormat::Parallels),
        (b"BZh", ForeignFormat::Compressed("bzip2-compressed")),
    ];
    if let Some((_, format)) = table.iter().find(|(magic, _)| starts(magic)) {
        // "BZh" alone is weak: require the block size digit and the block magic after it.
        if *format != ForeignFormat::Compressed("bzip2-compressed")
            || (head.get(3).is_some_and(|d| (b'1'..=b'9').contains(d)) && head.get(4..10) == Some(b"1AY&SY"))
        {
            return foreign(*format);
        }
    }
    // VDI: a text banner, then the signature 0xbeda107f (little-endian) at offset 64.
    if head.get(64..68) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return foreign(ForeignFormat::Vdi);
    }
    if tail.is_some_and(|t| t.starts_with(b"conectix")) {
        return foreign(ForeignFormat::Vhd);
    }
    Detected::Raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        let with = |magic: &[u8]| {
            let mut head = vec![0u8; 512];
            head[..magic.len()].copy_from_slice(magic);
            detect_bytes(&head, None)
        };
        assert_eq!(with(b"QFI\xfb\0\0\0\x03"), Detected::Qcow2);
        assert_eq!(with(b"QFI\xfb\0\0\0\x02"), Detected::Qcow2);
        assert_eq!(with(b"QFI\xfb\0\0\0\x01"), Detected::Foreign(ForeignFormat::Qcow1));
        assert_eq!(with(b"KDMV\x01\0\0\0"), Detected::Vmdk);
        assert_eq!(with(b"COWD\x01\0\0\0"), Detected::Foreign(ForeignFormat::Vmdk));
        assert_eq!(with(b"# Disk DescriptorFile"), Detected::Foreign(ForeignFormat::Vmdk));
        assert_eq!(with(b"\x1f\x8b\x08\0"), Detected::Compressed(Compression::Gzip));
        assert_eq!(with(b"\xfd7zXZ\0\0"), Detected::Compressed(Compression::Xz));
        assert_eq!(with(b"\x28\xb5\x2f\xfd\x24"), Detected::Compressed(Compression::Zstd));
        assert_eq!(with(b"vhdxfile"), Detected::Foreign(ForeignFormat::Vhdx));
        assert_eq!(with(b"conectix"), Detected::Foreign(ForeignFormat::Vhd));
        assert_eq!(with(b"QED\0"), Detected::Foreign(ForeignFormat::Qed));
        assert_eq!(
            with(b"BZh91AY&SY"),
            Detected::Foreign(ForeignFormat::Compressed("bzip2-compressed"))
        );
        assert_eq!(with(b"BZh is not bzip2"), Detected::Raw);
        assert_eq!(with(b"\xeb\x63\x90"), Detected::Raw, "an MBR boot sector is raw");
        assert_eq!(with(b""), Detected::Raw);
        assert_eq!(detect_bytes(b"QFI", None), Detected::Raw, "a 3-byte file has no magic");
        let mut vdi = vec![0u8; 512];
        vdi[64..68].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
        assert_eq!(detect_bytes(&vdi, None), Detected::Foreign(ForeignFormat::Vdi));
        let mut footer = vec![0u8; 512];
        footer[..8].copy_from_slice(b"conectix");
        assert_eq!(
            detect_bytes(&[0u8; 512], Some(&footer)),
            Detected::Foreign(ForeignFormat::Vhd)
        );
    }
}
