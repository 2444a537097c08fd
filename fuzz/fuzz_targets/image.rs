//! Any bytes as an image file: format detection, the qcow2 header and
//! tables (imago's, and our own for zstd clusters), VMDK grain tables,
//! gzip/zstd/xz streams, and the partition tables of a whole-disk image. No panic, no
//! allocation a small file does not justify, and chunks that tile the image
//! in order.

#![no_main]

use conductor_writer::deploy::table::Table;
use conductor_writer::source::{self, Chunk, FormatChoice, OpenOptions};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch file per fuzzing process, on tmpfs when there is one.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = ["/dev/shm", "/tmp"].into_iter().find(|d| std::path::Path::new(d).is_dir()).unwrap_or(".");
        PathBuf::from(dir).join(format!("fuzz-image-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    for block_size in [512, 4096] {
        let blocks = (data.len() as u64 / u64::from(block_size)).max(1);
        let _ = Table::decode(data, block_size, blocks);
        let _ = Table::decode(data, block_size, 1 << 40);
    }

    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    for format in [FormatChoice::Auto, FormatChoice::Qcow2] {
        let options = OpenOptions {
            format,
            backing_files: false,
            zero_granularity: 512,
            ..OpenOptions::default()
        };
        let Ok(mut image) = source::open(path, &options) else {
            continue;
        };
        // A compressed stream's size is known only at its end.
        let size = image.size();
        let mut next = 0u64;
        for _ in 0..256 {
            match image.next_chunk(64 << 10) {
                Ok(Some(chunk)) => {
                    assert_eq!(chunk.offset(), next, "chunks are in order and adjacent");
                    assert!(!chunk.is_empty());
                    if let Chunk::Data { data, .. } = &chunk {
                        assert!(data.len() <= 64 << 10);
                    }
                    next += chunk.len();
                    assert!(next <= size, "chunks stay inside the image");
                }
                Ok(None) => {
                    assert_eq!(next, image.size(), "chunks cover the whole image");
                    break;
                }
                Err(_) => break,
            }
        }
    }
});
