//! Where an image comes from, and opening it as the source its bytes call for.
//!
//! A local path is opened as before ([`super::open`]); `-` is standard input, read once as a
//! raw image (or a gzip, zstd or xz stream of one); an `http://` or `https://` URL is read
//! from the server as the write needs it: raw and compressed images as one stream, qcow2 and
//! VMDK cluster by cluster with range requests, never copied whole to local disk.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::access::RandomAccess;
use super::checksum::Checksum;
use super::detect::{Detected, detect_bytes};
use super::error::SourceError;
use super::http::{HttpFile, HttpReader};
use super::qcow2_tables::Qcow2Tables;
use super::stream::{Hashed, SharedInput, StreamSource};
use super::vmdk::VmdkSparse;
use super::{Format, OpenOptions, Source, check_options, choose, map_source};

/// An image argument: a path, `-`, or a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Path(PathBuf),
    Stdin,
    Url(String),
}

impl Origin {
    /// `-` is standard input, `http://` and `https://` are URLs, anything else a path.
    #[must_use]
    pub fn parse(arg: &str) -> Self {
        let lower = arg.to_ascii_lowercase();
        if arg == "-" {
            Origin::Stdin
        } else if lower.starts_with("http://") || lower.starts_with("https://") {
            Origin::Url(arg.to_owned())
        } else {
            Origin::Path(PathBuf::from(arg))
        }
    }

    /// True if the image can be read a second time (to verify the disk against it).
    #[must_use]
    pub fn rereadable(&self) -> bool {
        !matches!(self, Origin::Stdin)
    }
}

impl std::str::FromStr for Origin {
    type Err = std::convert::Infallible;

    fn from_str(arg: &str) -> Result<Self, Self::Err> {
        Ok(Origin::parse(arg))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Path(path) => write!(f, "{}", path.display()),
            Origin::Stdin => f.write_str("standard input"),
            Origin::Url(url) => f.write_str(url),
        }
    }
}

/// How to reach images that are not local files.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The HTTP(S) client (its TLS roots, its timeouts).
    pub agent: ureq::Agent,
    /// Compared with the bytes as they stream; a mismatch fails the source at its end.
    pub checksum: Option<Checksum>,
}

/// How many bytes are looked at to tell a stream's format.
const HEAD: usize = 512;

/// Open the image at `origin`. A local file's checksum is the caller's to check first (it can
/// be read twice); a stream's is checked by the source as it goes, from `remote.checksum`.
pub fn open_origin(origin: &Origin, options: &OpenOptions, remote: &Remote) -> Result<Box<dyn Source>, SourceError> {
    match origin {
        Origin::Path(path) => super::open(path, options),
        Origin::Stdin => open_stdin(options, remote.checksum),
        Origin::Url(url) => open_url(url, options, remote),
    }
}

fn open_stdin(options: &OpenOptions, checksum: Option<Checksum>) -> Result<Box<dyn Source>, SourceError> {
    let granule = check_options(options)?;
    let path = Path::new("-");
    let input = SharedInput::new(Box::new(Hashed::new(std::io::stdin(), path, checksum)));
    let head = read_head(input.clone(), path)?;
    let detected = choose(path, options.format, detect_bytes(&head, None))?;
    let compression = match detected {
        Detected::Raw => None,
        Detected::Compressed(kind) => Some(kind),
        Detected::Qcow2 | Detected::Vmdk => {
            return Err(SourceError::NotStreamable {
                path: path.into(),
                format: if detected == Detected::Qcow2 {
                    Format::Qcow2
                } else {
                    Format::Vmdk
                },
            });
        }
        Detected::Foreign(format) => {
            return Err(SourceError::UnsupportedFormat {
                path: path.into(),
                format,
            });
        }
    };
    let mut source = StreamSource::new(head, input, path, compression, None, granule)?;
    source.scan_zeroes = options.scan_zeroes;
    Ok(Box::new(source))
}

/// Up to [`HEAD`] bytes from the start of `input`.
fn read_head(mut input: impl Read, path: &Path) -> Result<Vec<u8>, SourceError> {
    let mut head = Vec::with_capacity(HEAD);
    input
        .by_ref()
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(|e| SourceError::io(path, 0, e))?;
    Ok(head)
}

fn open_url(url: &str, options: &OpenOptions, remote: &Remote) -> Result<Box<dyn Source>, SourceError> {
    let granule = check_options(options)?;
    let path = Path::new(url);
    let mut file = HttpFile::open(remote.agent.clone(), url, remote.checksum)?;
    let size = file.size();
    let mut head = vec![0u8; HEAD.min(usize::try_from(size).unwrap_or(HEAD))];
    file.read_exact_at(0, &mut head)?;
    let detected = choose(path, options.format, detect_bytes(&head, None))?;
    tracing::debug!(url, ?detected, size, ranges = file.ranges(), "opening image over HTTP");
    let needs_ranges = |format: &str, file: &HttpFile| {
        if file.ranges() {
            Ok(())
        } else {
            Err(SourceError::Http {
                url: file.url().to_owned(),
                reason: format!(
                    "is a {format} image, which is read by range requests, and the server does not answer them; \
                     download it first, or serve it from a server that does (nginx, Apache, any object store)"
                ),
            })
        }
    };
    Ok(match detected {
        Detected::Raw | Detected::Compressed(_) => {
            let compression = match detected {
                Detected::Compressed(kind) => Some(kind),
                _ => None,
            };
            let input = SharedInput::new(Box::new(HttpReader(file)));
            let mut source = StreamSource::new(head, input, path, compression, Some(size), granule)?;
            source.scan_zeroes = options.scan_zeroes;
            Box::new(source)
        }
        Detected::Qcow2 => {
            needs_ranges("qcow2", &file)?;
            let tables = Qcow2Tables::open(Box::new(file))?;
            map_source(tables.size(), tables, Format::Qcow2, granule, options)
        }
        Detected::Vmdk => {
            needs_ranges("VMDK", &file)?;
            let vmdk = VmdkSparse::open(Box::new(file))?;
            map_source(vmdk.size(), vmdk, Format::Vmdk, granule, options)
        }
        Detected::Foreign(format) => {
            return Err(SourceError::UnsupportedFormat {
                path: path.into(),
                format,
            });
        }
    })
}
