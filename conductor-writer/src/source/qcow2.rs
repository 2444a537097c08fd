//! qcow2 images (versions 2 and 3), through imago's synchronous API.
//!
//! imago's `get_mapping` says, per range, whether the clusters are stored (raw), compressed,
//! zero (explicitly, or unallocated with no backing data under them), all the way down the
//! backing chain. Zero ranges are reported without reading anything; the rest is read through
//! imago (which decompresses zlib clusters and falls through to backing files) and
//! zero-scanned like any other data.
//!
//! The backing chain is walked and opened here, one named file at a time, rather than by
//! imago's implicit opening: that way a missing backing file is named in the error, a chain
//! that loops is refused instead of recursing forever, and every layer's header goes through
//! [`read_header`] first.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions};

use super::detect::{Detected, ImageFile, detect};
use super::error::SourceError;
use super::qcow2_header::{Qcow2Header, read_header};
use super::scan::{Chunker, Extent, ExtentMap, Stored};
use super::{Chunk, Format, Source};

/// Longest backing chain accepted (QEMU has no fixed limit; real chains are short).
const MAX_CHAIN: usize = 16;
/// Mapping look-ups spent on the data hint before giving up on it.
const HINT_MAX_LOOKUPS: usize = 1 << 20;

/// A qcow2 image, possibly with a chain of backing files.
#[derive(Debug)]
pub(crate) struct Qcow2Source {
    pub(crate) chunker: Chunker<Qcow2Extents>,
    data_hint: Option<u64>,
}

/// The extent map of a qcow2 image: imago's mapping, resolved through the backing chain.
#[derive(Debug)]
pub(crate) struct Qcow2Extents {
    access: FormatAccess<ImagoFile>,
    /// The top image file, to notice it changing under us.
    top: ImageFile,
    size: u64,
    /// The image has backing files.
    backed: bool,
}

/// One backing file.
#[derive(Debug)]
enum Layer {
    Qcow2(ImageFile),
    Raw(ImageFile),
}

impl Qcow2Source {
    pub(crate) fn open(mut top: ImageFile, granule: u32, backing_files: bool) -> Result<Self, SourceError> {
        let header = read_header(&mut top)?;
        if let (Some(backing), false) = (&header.backing_file, backing_files) {
            return Err(SourceError::BackingFileRefused {
                path: top.path.clone(),
                backing: backing.clone(),
            });
        }
        let size = header.size;
        let (top, backing_chain) = walk_chain(top, header)?;
        let backed = !backing_chain.is_empty();
        // Open from the bottom up, each layer on top of the one below it.
        let mut lower: Option<FormatAccess<ImagoFile>> = None;
        for layer in backing_chain.into_iter().rev() {
            let opened = match layer {
                Layer::Qcow2(image) => open_layer(&image, true, lower.take())?,
                Layer::Raw(image) => open_layer(&image, false, None)?,
            };
            lower = Some(opened);
        }
        let access = open_layer(&top, true, lower)?;
        tracing::debug!(path = %top.path.display(), size, "opened qcow2 image");
        let mut extents = Qcow2Extents {
            access,
            top,
            size,
            backed,
        };
        let data_hint = extents.data_bytes();
        Ok(Qcow2Source {
            chunker: Chunker::new(extents, size, granule),
            data_hint,
        })
    }

    #[cfg(test)]
    pub(crate) fn bytes_read(&self) -> u64 {
        self.chunker.bytes_read
    }
}

impl Source for Qcow2Source {
    fn size(&self) -> u64 {
        self.chunker.size()
    }

    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>, SourceError> {
        self.chunker.next_chunk(max)
    }

    fn data_hint(&self) -> Option<u64> {
        self.data_hint
    }

    fn offer_stored(&mut self) {
        // Raw clusters are found in the top file only: with backing files, a mapping's
        // storage may be any layer.
        self.chunker.offer_stored = !self.chunker.map.backed;
    }
}

/// Follow backing file names from `top` down, checking each file; returns `top` and its
/// backing files, nearest first.
fn walk_chain(top: ImageFile, header: Qcow2Header) -> Result<(ImageFile, Vec<Layer>), SourceError> {
    let mut seen = HashSet::new();
    seen.insert(top.path.canonicalize().unwrap_or_else(|_| top.path.clone()));
    let mut next = header
        .backing_file
        .map(|name| (name, header.backing_format, top.path.clone()));
    let mut chain = Vec::new();
    while let Some((name, format, overlay)) = next.take() {
        let resolved = resolve(&overlay, &name);
        let backing_error = |problem: String| SourceError::BackingFile {
            path: overlay.clone(),
            backing: name.clone(),
            resolved: resolved.clone(),
            problem,
        };
        if chain.len() + 1 >= MAX_CHAIN {
            return Err(backing_error(format!(
                "is more than {MAX_CHAIN} files down the backing chain"
            )));
        }
        let mut image = ImageFile::open(&resolved).map_err(|e| match e {
            SourceError::NotFound { .. } => backing_error("does not exist".into()),
            other => backing_error(format!("cannot be opened ({other})")),
        })?;
        if !seen.insert(resolved.canonicalize().unwrap_or_else(|_| resolved.clone())) {
            return Err(backing_error(
                "is already in the backing chain (the chain loops)".into(),
            ));
        }
        let is_qcow2 = match format.as_deref() {
            Some("qcow2") => true,
            Some("raw" | "file") => false,
            Some(other) => return Err(backing_error(format!("has format {other:?}, which is not supported"))),
            // No format recorded: probe, as QEMU does.
            None => match detect(&image)? {
                Detected::Qcow2 => true,
                Detected::Raw => false,
                Detected::Vmdk | Detected::Compressed(_) => {
                    return Err(backing_error("is not a qcow2 or raw image".into()));
                }
                Detected::Foreign(format) => return Err(SourceError::UnsupportedFormat { path: resolved, format }),
            },
        };
        if is_qcow2 {
            let header = read_header(&mut image)?;
            if header.zstd {
                return Err(backing_error(
                    "is a qcow2 image with zstd-compressed clusters, which is not supported as a backing file".into(),
                ));
            }
            next = header
                .backing_file
                .map(|name| (name, header.backing_format, resolved.clone()));
            chain.push(Layer::Qcow2(image));
        } else {
            chain.push(Layer::Raw(image));
        }
    }
    Ok((top, chain))
}

/// A backing file name as QEMU reads it: relative names are relative to the overlay's directory.
fn resolve(overlay: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    match overlay.parent() {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name.to_path_buf(),
    }
}

/// Open one layer with imago on top of `backing`, letting imago open nothing by itself.
fn open_layer(
    image: &ImageFile,
    is_qcow2: bool,
    backing: Option<FormatAccess<ImagoFile>>,
) -> Result<FormatAccess<ImagoFile>, SourceError> {
    let path = &image.path;
    let file = image.file.try_clone().map_err(|e| SourceError::open(path, e))?;
    let options = StorageOpenOptions::new().filename(path).write(false);
    let storage = ImagoFile::from_open_file(file, options).map_err(|e| SourceError::open(path, e))?;
    let gate = DenyImplicitOpenGate::default();
    let opened = if is_qcow2 {
        let builder = Qcow2::<ImagoFile>::builder(storage)
            .write(false)
            .backing(backing)
            .data_file(None);
        builder.open(gate).map(FormatAccess::new)
    } else {
        Raw::builder(storage).write(false).open(gate).map(FormatAccess::new)
    };
    opened.map_err(|e| imago_error(path, None, e))
}

/// Map an imago error: system errors are I/O errors, anything else is imago finding the
/// image malformed.
fn imago_error(path: &Path, offset: Option<u64>, error: io::Error) -> SourceError {
    match (error.raw_os_error(), offset) {
        (Some(_), offset) => SourceError::io(path, offset.unwrap_or(0), error),
        (None, Some(offset)) => SourceError::corrupt(path, format!("at guest offset {offset}: {error}")),
        (None, None) => SourceError::corrupt(path, error.to_string()),
    }
}

impl Qcow2Extents {
    /// Bytes mapped to stored (raw or compressed) clusters, or `None` if too costly to find.
    fn data_bytes(&mut self) -> Option<u64> {
        let mut offset = 0;
        let mut data = 0;
        for _ in 0..HINT_MAX_LOOKUPS {
            if offset >= self.size {
                return Some(data);
            }
            let (extent, len) = self.extent_at(offset).ok()?;
            if extent == Extent::Data {
                data += len;
            }
            offset += len;
        }
        None
    }
}

impl ExtentMap for Qcow2Extents {
    fn extent_at(&mut self, offset: u64) -> Result<(Extent, u64), SourceError> {
        let path = &self.top.path;
        let (mapping, len) = self
            .access
            .get_mapping(offset, self.size - offset)
            .map_err(|e| imago_error(path, Some(offset), e))?;
        if len == 0 {
            return Err(SourceError::corrupt(
                path,
                format!("no mapping at guest offset {offset}"),
            ));
        }
        let extent = match mapping {
            Mapping::Zero { .. } => Extent::Zero,
            Mapping::Raw {
                storage, offset: host, ..
            } => {
                let file_size = storage.size().map_err(|e| imago_error(path, Some(offset), e))?;
                // Past the end a file reads as zeroes: a cut-off download would look fine.
                if host.saturating_add(len) > file_size {
                    return Err(SourceError::corrupt(
                        path,
                        format!(
                            "the data for guest offset {offset} ({len} bytes at {host} in {storage}) runs \
                             past the end of that file ({file_size} bytes): the image is truncated"
                        ),
                    ));
                }
                Extent::Data
            }
            // Compressed clusters, and anything imago may add later: read through imago.
            _ => Extent::Data,
        };
        Ok((extent, len))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.access
            .read(buf, offset)
            .map_err(|e| imago_error(&self.top.path, Some(offset), e))?;
        self.top.check_unchanged()
    }

    fn finish(&mut self) -> Result<(), SourceError> {
        self.top.check_unchanged()
    }

    fn stored_at(&mut self, offset: u64) -> Result<Option<Stored>, SourceError> {
        self.top.check_unchanged()?;
        if self.backed {
            return Ok(None);
        }
        let path = &self.top.path;
        let (mapping, len) = self
            .access
            .get_mapping(offset, self.size - offset)
            .map_err(|e| imago_error(path, Some(offset), e))?;
        Ok(match mapping {
            // `extent_at` checked that the run lies inside the file.
            Mapping::Raw { offset: host, .. } if len > 0 => Some(Stored {
                file: self.top.file.clone(),
                host,
                len,
            }),
            _ => None,
        })
    }
}
