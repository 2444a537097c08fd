//! An image on an HTTP(S) server, read where the write needs it, never copied whole.
//!
//! One "main" stream walks the file forward in windows of [`WINDOW`] bytes, each a range
//! request (`Range: bytes=a-b`, answered `206`), so a finished window leaves its connection
//! for the next one. Reads at or a little ahead of it are served from it; a read elsewhere
//! (a qcow2 L2 table behind it, a VMDK footer at the end) moves it, or, while a checksum is
//! being computed, is fetched on the side so that the main stream passes every byte of the
//! file once, in order, through the hash. A connection that drops is resumed with a new range
//! request from where it broke, a few times; every answer must name the same entity (strong
//! `ETag`, else `Last-Modified`), so a file replaced on the server meanwhile is an error, not a
//! mix of two images.
//!
//! A server that ignores ranges (`200` to a range request) is read as one sequential stream:
//! enough for raw and compressed images, refused for qcow2 and VMDK.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::access::RandomAccess;
use super::checksum::{Checksum, Hasher};
use super::error::SourceError;

/// Bytes asked for by one range request of the main stream.
const WINDOW: u64 = 32 << 20;
/// Without a checksum running, the main stream reads through gaps up to this long rather than
/// starting a new request; with one, it reads through them and fetches reads farther ahead on
/// the side.
const SKIP: u64 = 8 << 20;
/// Attempts at one range in a row (the first included) before the read fails.
const ATTEMPTS: u32 = 4;

/// An image file on an HTTP(S) server.
pub(crate) struct HttpFile {
    agent: ureq::Agent,
    url: String,
    path: PathBuf,
    size: u64,
    /// The server answers range requests.
    ranges: bool,
    /// What names the entity: a strong ETag or a Last-Modified date.
    validator: Option<String>,
    stream: Option<ureq::BodyReader<'static>>,
    /// The main stream's position and the end of its current window.
    pos: u64,
    window_end: u64,
    /// The digest of the bytes the main stream passed, and what it must come to.
    hash: Option<(Hasher, Checksum)>,
    /// Failed attempts within the current window of the main stream.
    failures: u32,
}

impl std::fmt::Debug for HttpFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFile")
            .field("url", &self.url)
            .field("size", &self.size)
            .field("ranges", &self.ranges)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

/// One answer's range: `(start, end, total)` from `Content-Range: bytes a-b/total`.
fn content_range(response: &ureq::http::Response<ureq::Body>) -> Option<(u64, u64, u64)> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse::<u64>().ok()? + 1,
        total.trim().parse().ok()?,
    ))
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The validator of an answer: a strong ETag, else Last-Modified.
fn validator(response: &ureq::http::Response<ureq::Body>) -> Option<String> {
    header(response, "etag")
        .filter(|tag| !tag.starts_with("W/"))
        .or_else(|| header(response, "last-modified"))
}

impl HttpFile {
    /// Ask for the start of `url`: its size, whether it can be read by ranges, and the first
    /// window of the main stream. With `checksum`, the main stream's bytes are hashed and
    /// compared at [`RandomAccess::finish`].
    pub(crate) fn open(agent: ureq::Agent, url: &str, checksum: Option<Checksum>) -> Result<Self, SourceError> {
        let mut file = HttpFile {
            agent,
            url: url.to_owned(),
            path: PathBuf::from(url),
            size: 0,
            ranges: false,
            validator: None,
            stream: None,
            pos: 0,
            window_end: 0,
            hash: checksum.map(|c| (Hasher::for_checksum(&c), c)),
            failures: 0,
        };
        let response = file.get(0, WINDOW)?;
        let status = response.status().as_u16();
        file.validator = validator(&response);
        match status {
            206 => {
                let (start, end, total) =
                    content_range(&response).ok_or_else(|| file.error("answered 206 without a valid Content-Range"))?;
                if start != 0 || end > total {
                    return Err(file.error(format!(
                        "answered bytes {start}-{end}/{total} to a request for bytes 0-"
                    )));
                }
                (file.size, file.ranges, file.window_end) = (total, true, end);
            }
            200 => {
                let length = header(&response, "content-length").and_then(|l| l.parse().ok());
                let length = length.ok_or_else(|| {
                    file.error("gave no Content-Length and does not answer range requests; the image's size is unknown")
                })?;
                tracing::debug!(url, "the server ignores range requests: one sequential stream");
                (file.size, file.window_end) = (length, length);
            }
            // An empty file cannot satisfy "bytes=0-".
            416 => return Ok(file),
            _ => return Err(file.status_error(status, &response)),
        }
        file.stream = Some(response.into_body().into_with_config().limit(u64::MAX).reader());
        Ok(file)
    }

    /// The URL, for messages.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// True if the server answers range requests (qcow2 and VMDK need it).
    pub(crate) fn ranges(&self) -> bool {
        self.ranges
    }

    fn error(&self, reason: impl Into<String>) -> SourceError {
        SourceError::Http {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    fn status_error(&self, status: u16, response: &ureq::http::Response<ureq::Body>) -> SourceError {
        let reason = response
            .status()
            .canonical_reason()
            .map_or_else(String::new, |r| format!(" {r}"));
        let hint = match status {
            404 => "; check the URL",
            401 | 403 => "; the server refuses it to us",
            _ => "",
        };
        self.error(format!("the server answered HTTP {status}{reason}{hint}"))
    }

    /// `GET` with `Range: bytes=start-(start+len-1)`.
    fn get(&self, start: u64, len: u64) -> Result<ureq::http::Response<ureq::Body>, SourceError> {
        let last = start.saturating_add(len.max(1)) - 1;
        self.agent
            .get(&self.url)
            .header("Range", format!("bytes={start}-{last}"))
            .call()
            .map_err(|e| self.error(describe(&e)))
    }

    /// A range answer for `[start, start + len)`, checked to be of the same entity.
    fn range(&self, start: u64, len: u64) -> Result<ureq::BodyReader<'static>, SourceError> {
        let response = self.get(start, len)?;
        let status = response.status().as_u16();
        if status != 206 {
            return Err(self.status_error(status, &response));
        }
        let got = content_range(&response);
        let end = start + len.min(self.size - start);
        if got != Some((start, end, self.size)) {
            return Err(self.error(format!("answered {got:?} to a request for bytes {start}-{}", end - 1)));
        }
        if validator(&response) != self.validator {
            return Err(self.error(format!(
                "{CHANGED} while it was being read (its ETag or Last-Modified differs); nothing read after \
                 the change is used"
            )));
        }
        Ok(response.into_body().into_with_config().limit(u64::MAX).reader())
    }

    /// Read from the main stream into `buf` (at `pos`), opening windows and resuming broken
    /// connections as needed; hashes what it reads.
    fn read_main(&mut self, buf: &mut [u8]) -> Result<(), SourceError> {
        let mut done = 0;
        while done < buf.len() {
            if self.stream.is_none() || self.pos >= self.window_end {
                if self.stream.is_some() {
                    // A window read to its end: its troubles are over.
                    self.failures = 0;
                }
                self.stream = None;
                self.open_window()?;
            }
            let want = (buf.len() - done).min((self.window_end - self.pos) as usize);
            let Some(stream) = self.stream.as_mut() else { continue };
            let why = match stream.read(&mut buf[done..done + want]) {
                Ok(0) => "the connection ended".to_owned(),
                Ok(n) => {
                    if let Some((hasher, _)) = self.hash.as_mut() {
                        hasher.update(&buf[done..done + n]);
                    }
                    done += n;
                    self.pos += n as u64;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e.to_string(),
            };
            self.stream = None;
            self.failures += 1;
            if !self.ranges || self.failures >= ATTEMPTS {
                let no_ranges = if self.ranges {
                    ""
                } else {
                    ": the server does not answer range requests"
                };
                return Err(self.error(format!(
                    "the download broke at byte {} of {} ({why}) and could not be resumed{no_ranges}",
                    self.pos, self.size
                )));
            }
            tracing::warn!(url = %self.url, at = self.pos, %why, "the connection broke; resuming with a range request");
        }
        Ok(())
    }

    /// A new window of the main stream from `pos`, retried while the server fails.
    fn open_window(&mut self) -> Result<(), SourceError> {
        if !self.ranges {
            return Err(self.error(format!(
                "the connection ended at byte {} of {}, and the server does not answer range requests, so the \
                 download cannot resume",
                self.pos, self.size
            )));
        }
        let len = WINDOW.min(self.size - self.pos);
        loop {
            match self.range(self.pos, len) {
                Ok(reader) => {
                    self.stream = Some(reader);
                    self.window_end = self.pos + len;
                    return Ok(());
                }
                Err(e) if changed(&e) => return Err(e),
                Err(e) => {
                    self.failures += 1;
                    if self.failures >= ATTEMPTS {
                        return Err(self.error(format!(
                            "the download broke at byte {} of {} and could not be resumed (the last range request: {})",
                            self.pos,
                            self.size,
                            reason(&e)
                        )));
                    }
                    tracing::warn!(url = %self.url, error = %e, "range request failed; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(100 << self.failures));
                }
            }
        }
    }

    /// Move the main stream forward to `to`, reading (and hashing) what lies between.
    fn skip_to(&mut self, to: u64) -> Result<(), SourceError> {
        let mut scratch = vec![0u8; (to - self.pos).min(1 << 20) as usize];
        while self.pos < to {
            let n = (to - self.pos).min(scratch.len() as u64) as usize;
            self.read_main(&mut scratch[..n])?;
        }
        Ok(())
    }

    /// Fetch `buf` at `offset` with its own range request, retried, leaving the main stream.
    fn read_side(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let mut failures = 0;
        loop {
            let attempt = self.range(offset, buf.len() as u64).and_then(|mut reader| {
                reader
                    .read_exact(buf)
                    .map_err(|e| self.error(format!("reading bytes at {offset}: {e}")))
            });
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) => {
                    failures += 1;
                    if failures >= ATTEMPTS || !self.ranges || changed(&e) {
                        return Err(e);
                    }
                    tracing::warn!(url = %self.url, error = %e, "range request failed; trying again");
                }
            }
        }
    }
}

/// True for the error that says the file changed on the server: retrying cannot help.
fn changed(error: &SourceError) -> bool {
    matches!(error, SourceError::Http { reason, .. } if reason.starts_with(CHANGED))
}

const CHANGED: &str = "the file changed on the server";

/// What an HTTP error says, without the URL it names.
fn reason(error: &SourceError) -> String {
    match error {
        SourceError::Http { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// A ureq error in words, with what to do for the TLS ones.
fn describe(error: &ureq::Error) -> String {
    let text = error.to_string();
    if text.contains("UnknownIssuer") || text.contains("certificate") || text.contains("Certificate") {
        format!("TLS: the server's certificate is not trusted ({text}); give the CA that signed it with --ca-cert")
    } else {
        text
    }
}

impl RandomAccess for HttpFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_up_to(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = buf.len().min((self.size - offset) as usize);
        let buf = &mut buf[..n];
        let hashing = self.hash.is_some();
        let result = if offset >= self.pos && offset - self.pos <= SKIP {
            self.skip_to(offset).and_then(|()| self.read_main(buf))
        } else if hashing || !self.ranges {
            if !self.ranges {
                Err(self.error(format!(
                    "the server does not answer range requests, and the image must be read at byte {offset} \
                     (the stream is at {}); download it first",
                    self.pos
                )))
            } else {
                self.read_side(offset, buf)
            }
        } else {
            // Move the main stream: a new window from here.
            self.stream = None;
            self.pos = offset;
            self.window_end = offset;
            self.read_main(buf)
        };
        result.map(|()| n)
    }

    fn check_unchanged(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    /// With a checksum: read the rest of the file through the hash, and compare.
    fn finish(&mut self) -> Result<(), SourceError> {
        if self.hash.is_none() {
            return Ok(());
        }
        let size = self.size;
        self.skip_to(size)?;
        self.stream = None;
        if let Some((hasher, expected)) = self.hash.take() {
            let actual = hasher.finish();
            if actual != expected {
                return Err(SourceError::StreamChecksumMismatch {
                    path: self.path.clone(),
                    expected,
                    actual,
                });
            }
            tracing::debug!(url = %self.url, checksum = %actual, "streamed checksum verified");
        }
        Ok(())
    }
}

/// The main stream as a sequential reader, for raw and compressed images.
#[derive(Debug)]
pub(crate) struct HttpReader(pub(crate) HttpFile);

impl Read for HttpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let file = &mut self.0;
        if file.pos >= file.size {
            return Ok(0);
        }
        let n = buf.len().min((file.size - file.pos) as usize).min(1 << 20);
        file.read_main(&mut buf[..n]).map_err(io::Error::other)?;
        Ok(n)
    }
}

impl super::stream::Input for HttpReader {
    fn finish(&mut self) -> Result<(), SourceError> {
        self.0.finish()
    }
}

/// Fetch `url` whole into `dest`, hashed on the way; with `expected`, a mismatch is an error
/// (and `dest` is left for the caller to remove).
pub fn download_to(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    expected: Option<&Checksum>,
) -> Result<(), SourceError> {
    let error = |reason: String| SourceError::Http {
        url: url.to_owned(),
        reason,
    };
    let response = agent.get(url).call().map_err(|e| error(describe(&e)))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(error(format!("the server answered HTTP {status}")));
    }
    let mut body = super::stream::Hashed::new(
        response.into_body().into_with_config().limit(u64::MAX).reader(),
        Path::new(url),
        expected.copied(),
    );
    let mut file = std::fs::File::create(dest).map_err(|e| SourceError::open(dest, e))?;
    io::copy(&mut body, &mut file).map_err(|e| error(format!("the download broke: {e}")))?;
    file.sync_all().map_err(|e| SourceError::io(dest, 0, e))?;
    super::stream::Input::finish(&mut body).map_err(|e| match e {
        SourceError::StreamChecksumMismatch { expected, actual, .. } => SourceError::ChecksumMismatch {
            path: PathBuf::from(url),
            expected,
            actual,
        },
        other => other,
    })
}

/// Fetch `url` into a temporary file and check it against `expected` before anything else
/// reads it; the file goes when the returned path is dropped.
pub fn download(agent: &ureq::Agent, url: &str, expected: &Checksum) -> Result<tempfile::TempPath, SourceError> {
    let temp = tempfile::NamedTempFile::new().map_err(|e| SourceError::open(Path::new("$TMPDIR"), e))?;
    let path = temp.into_temp_path();
    download_to(agent, url, &path, Some(expected))?;
    tracing::debug!(url, path = %path.display(), "downloaded and checked");
    Ok(path)
}
