//! Tests against real images made here with `qemu-img`/`qemu-io` and std.
//!
//! The property checked everywhere: the chunks, in order, cover `[0, size)` exactly once, start
//! and end on granule boundaries (or the image's end), no data granule is all zeroes, and
//! concatenated (zero runs as zero bytes) they equal `qemu-img convert -O raw` of the image.

mod checksum;
mod corrupt;
mod formats;
mod qcow2;
mod raw;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

use super::scan::is_zero;
use super::{Chunk, Source};

/// Run a program in `dir`; panics with its stderr if it fails.
pub(super) fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True if `program` runs here (for optional tools).
pub(super) fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `qemu-io -c CMD -c CMD ... image` in `dir`.
/// `qemu-img create` a qcow2 `top` over the qcow2 `base` (names relative to `dir`).
pub(super) fn overlay(dir: &Path, base: &str, top: &str) {
    run(
        dir,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top],
    );
}

pub(super) fn qemu_io(dir: &Path, image: &str, commands: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(image);
    run(dir, "qemu-io", &args);
}

/// `qemu-img convert -O raw` of `image` next to it: the expected disk contents.
pub(super) fn reference(image: &Path, format: &str) -> PathBuf {
    let out = image.with_extension("ref.raw");
    let dir = image.parent().expect("dir");
    let args = ["convert", "-f", format, "-O", "raw", path_str(image), path_str(&out)];
    run(dir, "qemu-img", &args);
    out
}

pub(super) fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// What a full pass produced.
#[derive(Debug, Default)]
pub(super) struct Pass {
    pub(super) chunks: usize,
    pub(super) data_chunks: usize,
    pub(super) data_bytes: u64,
    /// Of those, bytes reported as stored in a file.
    pub(super) stored_bytes: u64,
    pub(super) zero_bytes: u64,
}

/// Read `source` to the end with chunks of at most `max`, checking every property against
/// the raw file `expected` (whose length must be the source's size).
pub(super) fn check_pass(source: &mut dyn Source, max: usize, granule: u64, expected: &Path) -> Pass {
    let expected = File::open(expected).expect("reference");
    let size = source.size();
    // qemu-img convert rounds a raw image up to whole 512-byte sectors (with zeroes).
    let expected_len = expected.metadata().expect("stat").len();
    assert!(
        expected_len == size || expected_len == size.next_multiple_of(512),
        "virtual size {size}"
    );
    let max_data = (max as u64 / granule).max(1) * granule;
    let mut pass = Pass::default();
    let mut pos = 0u64;
    while let Some(chunk) = source.next_chunk(max).expect("next_chunk") {
        assert_eq!(chunk.offset(), pos, "chunks are contiguous and in order");
        let len = chunk.len();
        assert!(len > 0, "empty chunk at {pos}");
        assert!(pos.is_multiple_of(granule), "chunk at {pos} is not granule-aligned");
        let end = pos + len;
        assert!(end <= size, "chunk runs past the end");
        assert!(
            end.is_multiple_of(granule) || end == size,
            "chunk end {end} is not granule-aligned"
        );
        let stored = match &chunk {
            Chunk::Stored { range, .. } => Some(range.read().expect("read a stored range")),
            _ => None,
        };
        if stored.is_some() {
            pass.stored_bytes += len;
        }
        match (&chunk, &stored) {
            (Chunk::Data { data, .. }, _) | (Chunk::Stored { .. }, Some(data)) => {
                assert!(len <= max_data, "data chunk of {len} > {max_data}");
                for (i, g) in data.chunks(granule as usize).enumerate() {
                    assert!(!is_zero(g), "zero granule inside data at {}", pos + i as u64 * granule);
                }
                let mut want = vec![0u8; data.len()];
                expected.read_exact_at(&mut want, pos).expect("read reference");
                assert!(want[..] == data[..], "data differs from qemu-img's at {pos}..{end}");
                pass.data_chunks += 1;
                pass.data_bytes += len;
            }
            (Chunk::Zero { .. }, _) => {
                assert_zero(&expected, pos, len);
                pass.zero_bytes += len;
            }
            (Chunk::Stored { .. }, None) => unreachable!("read above"),
        }
        pass.chunks += 1;
        pos = end;
    }
    assert_eq!(pos, size, "chunks cover the whole image");
    assert!(
        source.next_chunk(max).expect("after the end").is_none(),
        "None stays None"
    );
    pass
}

/// Assert `file[offset..offset+len]` reads as zeroes, skipping its holes without reading.
fn assert_zero(file: &File, offset: u64, len: u64) {
    let end = offset + len;
    let mut pos = offset;
    let mut buf = vec![0u8; 1 << 20];
    while pos < end {
        let data = match lseek(file, pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(Errno::ENXIO) => return,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        if data >= end {
            return;
        }
        let hole = (lseek(file, data as i64, Whence::SeekHole).expect("SEEK_HOLE") as u64).min(end);
        let mut at = data;
        while at < hole {
            let n = (hole - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], at).expect("read reference");
            assert!(is_zero(&buf[..n]), "zero chunk covers data in {at}..{}", at + n as u64);
            at += n as u64;
        }
        pos = hole;
    }
}

/// A deterministic, never-zero byte pattern for test data.
pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}
