//! The config drive (the `config-2` volume cloud-init reads) that a deploy writes after the image.
//!
//! The legacy Ironic iSCSI deploy took it as a gzipped, base64-encoded ISO 9660 or
//! vfat image, or as a plain image, given inline by path or by `http://` URL (and `https://` here). We accept
//! the same forms so a conductor can hand us what it handed Ironic, and we check the
//! result is a real file system image before anything touches the disk: a wrong drive is
//! cheaper to refuse here than to debug on a node that boots without its metadata.
//! Every size is capped before allocation, so a hostile server or a gzip bomb costs at
//! most the 64 MiB Ironic allowed.

use std::io::{self, Read};
use std::time::Duration;

use base64::Engine as _;
use flate2::read::MultiGzDecoder;

/// Ironic's limit on a decoded config drive: 64 MiB.
pub const MAX_CONFIG_DRIVE_BYTES: u64 = 64 << 20;

/// The most we read before decoding: base64 of the largest drive, plus slack for line
/// breaks (CRLF every 76 characters adds under 3%).
const MAX_ENCODED_BYTES: u64 = (MAX_CONFIG_DRIVE_BYTES * 4).div_ceil(3) + (4 << 20);

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// The file system inside the drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigDriveKind {
    Iso9660,
    Vfat,
}

/// A decoded config drive, ready to be written to its partition.
#[derive(Debug, Clone)]
pub struct ConfigDrive {
    /// The plain ISO 9660 or vfat image.
    pub image: Vec<u8>,
    pub kind: ConfigDriveKind,
    /// Volume label, trimmed, maybe empty; cloud-init looks for `config-2`.
    pub label: String,
    /// Path or URL it came from, for messages.
    pub origin: String,
}

impl ConfigDrive {
    /// Size in whole MiB, rounded up and at least 1: the partition to make for it.
    #[must_use]
    pub fn size_mib(&self) -> u64 {
        len_u64(&self.image).div_ceil(1 << 20).max(1)
    }
}

/// Why a config drive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("config drive {origin}: cannot read it: {source}; check the path")]
    Read {
        origin: String,
        #[source]
        source: io::Error,
    },
    #[error("config drive {origin}: fetch failed: {reason}; check the URL and that the server is reachable")]
    Fetch { origin: String, reason: String },
    #[error("config drive {origin}: the server answered HTTP {status}; check the URL")]
    HttpStatus { origin: String, status: u16 },
    #[error("config drive {origin} is empty; pass a gzipped, base64-encoded ISO 9660 or vfat image")]
    Empty { origin: String },
    #[error(
        "config drive {origin} is not valid base64 ({reason}); pass a gzipped, base64-encoded ISO 9660 or vfat image"
    )]
    NotBase64 { origin: String, reason: String },
    #[error("config drive {origin}: corrupt gzip data ({source}); re-create it with `gzip -c drive.iso | base64`")]
    Gzip {
        origin: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "config drive {origin}: the {what} is neither an ISO 9660 nor a vfat image; \
         make one with `genisoimage -V config-2 -r -J`"
    )]
    NotIsoOrFat { origin: String, what: &'static str },
    #[error(
        "config drive {origin} is too large: {}{size} bytes, the limit is {MAX_CONFIG_DRIVE_BYTES} (64 MiB); \
         keep large files out of the config drive",
        if *.at_least { "more than " } else { "" }
    )]
    TooLarge { origin: String, size: u64, at_least: bool },
}

impl ConfigDriveError {
    fn too_large(origin: &str, size: u64, at_least: bool) -> Self {
        Self::TooLarge {
            origin: origin.to_owned(),
            size,
            at_least,
        }
    }

    fn not_image(origin: &str, what: &'static str) -> Self {
        Self::NotIsoOrFat {
            origin: origin.to_owned(),
            what,
        }
    }
}

/// Read a config drive from a local path or an `http://` or `https://` URL (the built-in
/// roots) and decode it.
///
/// # Errors
///
/// A file that cannot be read, a failed fetch or non-2xx answer, and everything [`decode`]
/// refuses.
pub fn load(spec: &str, timeout: Duration) -> Result<ConfigDrive, ConfigDriveError> {
    let read_err = |source| ConfigDriveError::Read {
        origin: spec.to_owned(),
        source,
    };
    let raw = if has_scheme(spec, "http://") || has_scheme(spec, "https://") {
        fetch(spec, timeout)?
    } else {
        let mut raw = Vec::new();
        let file = std::fs::File::open(spec).map_err(read_err)?;
        file.take(MAX_ENCODED_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(read_err)?;
        raw
    };
    if len_u64(&raw) > MAX_ENCODED_BYTES {
        return Err(ConfigDriveError::too_large(spec, MAX_ENCODED_BYTES, true));
    }
    decode(&raw, spec)
}

fn has_scheme(spec: &str, scheme: &str) -> bool {
    spec.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme))
}

fn len_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn fetch(url: &str, timeout: Duration) -> Result<Vec<u8>, ConfigDriveError> {
    let fetch_err = |e: ureq::Error| ConfigDriveError::Fetch {
        origin: url.to_owned(),
        reason: e.to_string(),
    };
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false);
    let agent = ureq::Agent::new_with_config(config.build());
    let mut response = agent.get(url).call().map_err(fetch_err)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ConfigDriveError::HttpStatus {
            origin: url.to_owned(),
            status: status.as_u16(),
        });
    }
    // ureq reads one byte past the limit to tell "exactly at" from "over".
    let body = response.body_mut().with_config().limit(MAX_ENCODED_BYTES);
    body.read_to_vec().map_err(|e| match e {
        ureq::Error::BodyExceedsLimit(_) => ConfigDriveError::too_large(url, MAX_ENCODED_BYTES, true),
        e => fetch_err(e),
    })
}

/// Decode a config drive given as a plain image, gzip, base64 text, or base64 of gzip.
///
/// # Errors
///
/// Empty input, text that is not base64, corrupt gzip, content that is no ISO 9660 or
/// vfat image, or an image over [`MAX_CONFIG_DRIVE_BYTES`].
pub fn decode(raw: &[u8], origin: &str) -> Result<ConfigDrive, ConfigDriveError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigDriveError::Empty {
            origin: origin.to_owned(),
        });
    }
    if let Some(drive) = plain(raw, origin)? {
        return Ok(drive);
    }
    if raw.starts_with(GZIP_MAGIC) {
        let image = gunzip(raw, origin)?;
        return plain(&image, origin)?.ok_or_else(|| ConfigDriveError::not_image(origin, "gzip content"));
    }
    // Python's b64decode, which Ironic used, skips line breaks; so do we.
    let text: Vec<u8> = raw.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let padding = text.iter().rev().take(2).filter(|&&b| b == b'=').count();
    let size = (len_u64(&text) / 4 * 3).saturating_sub(u64::try_from(padding).unwrap_or(0));
    if size > MAX_CONFIG_DRIVE_BYTES {
        return Err(ConfigDriveError::too_large(origin, size, false));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(&text).map_err(|e| {
        if text.iter().all(u8::is_ascii_graphic) {
            ConfigDriveError::NotBase64 {
                origin: origin.to_owned(),
                reason: e.to_string(),
            }
        } else {
            // Binary that is no image: saying "not base64" would mislead.
            ConfigDriveError::not_image(origin, "content (not gzip or base64 either)")
        }
    })?;
    if decoded.is_empty() {
        return Err(ConfigDriveError::Empty {
            origin: origin.to_owned(),
        });
    }
    if decoded.starts_with(GZIP_MAGIC) {
        let image = gunzip(&decoded, origin)?;
        return plain(&image, origin)?.ok_or_else(|| ConfigDriveError::not_image(origin, "gunzipped base64 content"));
    }
    plain(&decoded, origin)?.ok_or_else(|| ConfigDriveError::not_image(origin, "base64 content"))
}

/// `Some` if `image` is a plain ISO 9660 or vfat image within the size limit.
fn plain(image: &[u8], origin: &str) -> Result<Option<ConfigDrive>, ConfigDriveError> {
    let Some((kind, label)) = probe(image) else {
        return Ok(None);
    };
    let size = len_u64(image);
    if size > MAX_CONFIG_DRIVE_BYTES {
        return Err(ConfigDriveError::too_large(origin, size, false));
    }
    Ok(Some(ConfigDrive {
        image: image.to_vec(),
        kind,
        label,
        origin: origin.to_owned(),
    }))
}

/// Gunzip with a hard cap: one pass counts, so the second allocates exactly once.
fn gunzip(data: &[u8], origin: &str) -> Result<Vec<u8>, ConfigDriveError> {
    let gzip_err = |source| ConfigDriveError::Gzip {
        origin: origin.to_owned(),
        source,
    };
    let mut counting = MultiGzDecoder::new(data).take(MAX_CONFIG_DRIVE_BYTES + 1);
    let size = io::copy(&mut counting, &mut io::sink()).map_err(gzip_err)?;
    if size > MAX_CONFIG_DRIVE_BYTES {
        return Err(ConfigDriveError::too_large(origin, MAX_CONFIG_DRIVE_BYTES, true));
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    MultiGzDecoder::new(data).read_to_end(&mut out).map_err(gzip_err)?;
    Ok(out)
}

/// The file system and volume label of a plain image, if it is ISO 9660 or FAT.
fn probe(image: &[u8]) -> Option<(ConfigDriveKind, String)> {
    // ECMA-119 8.4: the primary volume descriptor (type 1, "CD001") is at sector 16.
    if image.get(32768) == Some(&1) && image.get(32769..32774) == Some(b"CD001") {
        return Some((ConfigDriveKind::Iso9660, label_text(image.get(32808..32840)?)));
    }
    if image.get(510..512) != Some(&[0x55, 0xaa]) {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes([*image.get(11)?, *image.get(12)?]);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return None;
    }
    // FAT12/16 keep the type string at 54 and the label at 43; FAT32 at 82 and 71.
    let label = if image.get(54..57) == Some(b"FAT") {
        image.get(43..54)?
    } else if image.get(82..85) == Some(b"FAT") {
        image.get(71..82)?
    } else {
        return None;
    };
    let label = Some(label_text(label)).filter(|l| l != "NO NAME").unwrap_or_default();
    Some((ConfigDriveKind::Vfat, label))
}

fn label_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    use std::net::TcpListener;
    use std::path::Path;
    use std::process::Command;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn iso(dir: &Path) -> Vec<u8> {
        let src = dir.join("src/openstack/latest");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("meta_data.json"),
            br#"{"uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38"}"#,
        )
        .unwrap();
        let out = dir.join("drive.iso");
        run(Command::new("genisoimage")
            .args(["-quiet", "-V", "config-2", "-r", "-J", "-o"])
            .arg(&out)
            .arg(dir.join("src")));
        std::fs::read(out).unwrap()
    }

    fn vfat(dir: &Path) -> Vec<u8> {
        let out = dir.join("drive.vfat");
        run(Command::new("mkfs.vfat")
            .args(["-n", "config-2", "-C"])
            .arg(&out)
            .arg("2048"));
        std::fs::read(out).unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn base64_lines(data: &[u8]) -> Vec<u8> {
        let text = STANDARD.encode(data);
        text.as_bytes()
            .chunks(76)
            .flat_map(|line| line.iter().chain(b"\n"))
            .copied()
            .collect()
    }

    fn check(drive: &ConfigDrive, image: &[u8], kind: ConfigDriveKind) {
        assert_eq!(drive.kind, kind);
        assert_eq!(drive.label, "config-2");
        assert!(drive.image == image, "decoded image differs from the original");
    }

    #[test]
    fn iso_in_every_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let image = iso(dir.path());
        check(&decode(&image, "plain").unwrap(), &image, ConfigDriveKind::Iso9660);
        check(&decode(&gzip(&image), "gz").unwrap(), &image, ConfigDriveKind::Iso9660);
        let encoded = base64_lines(&gzip(&image));
        assert!(encoded.contains(&b'\n'));
        check(&decode(&encoded, "b64gz").unwrap(), &image, ConfigDriveKind::Iso9660);
        check(
            &decode(STANDARD.encode(&image).as_bytes(), "b64").unwrap(),
            &image,
            ConfigDriveKind::Iso9660,
        );
        let drive = decode(&image, "plain").unwrap();
        assert_eq!(
            drive.size_mib(),
            u64::try_from(image.len()).unwrap().div_ceil(1 << 20).max(1)
        );
        assert_eq!(serde_json::to_string(&drive.kind).unwrap(), "\"iso9660\"");
    }

    #[test]
    fn vfat_plain_and_base64_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let image = vfat(dir.path());
        check(&decode(&image, "plain").unwrap(), &image, ConfigDriveKind::Vfat);
        let drive = decode(&base64_lines(&gzip(&image)), "b64gz").unwrap();
        check(&drive, &image, ConfigDriveKind::Vfat);
        assert_eq!(drive.size_mib(), 2);
    }

    #[test]
    fn refuses_bad_input() {
        let garbage: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        assert!(matches!(
            decode(&garbage, "g"),
            Err(ConfigDriveError::NotIsoOrFat { .. })
        ));
        let text_garbage = STANDARD.encode(&garbage);
        assert!(matches!(
            decode(text_garbage.as_bytes(), "g"),
            Err(ConfigDriveError::NotIsoOrFat { .. })
        ));
        assert!(matches!(
            decode(&gzip(&garbage), "g"),
            Err(ConfigDriveError::NotIsoOrFat { .. })
        ));
        let err = decode(b"this is not base64!", "x.b64").unwrap_err();
        assert!(matches!(err, ConfigDriveError::NotBase64 { .. }), "{err}");
        assert!(err.to_string().contains("x.b64"), "{err}");
        let mut corrupt = gzip(&garbage);
        corrupt.truncate(corrupt.len() / 2);
        assert!(matches!(decode(&corrupt, "c"), Err(ConfigDriveError::Gzip { .. })));
        assert!(matches!(
            decode(base64_lines(&corrupt).as_slice(), "c"),
            Err(ConfigDriveError::Gzip { .. })
        ));
        assert!(matches!(decode(b"", "e"), Err(ConfigDriveError::Empty { .. })));
        assert!(matches!(decode(b" \n", "e"), Err(ConfigDriveError::Empty { .. })));
    }

    #[test]
    fn too_large_is_refused_at_the_cap() {
        let bomb = gzip(&vec![0u8; 65 << 20]);
        for raw in [bomb.clone(), base64_lines(&bomb)] {
            let err = decode(&raw, "bomb").unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigDriveError::TooLarge {
                        size: MAX_CONFIG_DRIVE_BYTES,
                        at_least: true,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("more than 67108864 bytes"), "{err}");
        }
        // A plain image over the limit says its exact size.
        let mut big = vec![0u8; (64 << 20) + 4096];
        big[32768] = 1;
        big[32769..32774].copy_from_slice(b"CD001");
        let err = decode(&big, "big").unwrap_err();
        assert!(
            matches!(err, ConfigDriveError::TooLarge { size, at_least: false, .. } if size == 67_112_960),
            "{err}"
        );
    }

    #[test]
    fn load_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let image = iso(dir.path());
        let path = dir.path().join("drive.b64");
        std::fs::write(&path, base64_lines(&gzip(&image))).unwrap();
        let drive = load(path.to_str().unwrap(), TIMEOUT).unwrap();
        check(&drive, &image, ConfigDriveKind::Iso9660);
        assert_eq!(drive.origin, path.to_str().unwrap());
        let missing = dir.path().join("nope.iso");
        let err = load(missing.to_str().unwrap(), TIMEOUT).unwrap_err();
        assert!(
            matches!(err, ConfigDriveError::Read { .. }) && err.to_string().contains("nope.iso"),
            "{err}"
        );
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = load(&format!("HTTPS://127.0.0.1:{closed}/drive"), TIMEOUT).unwrap_err();
        assert!(matches!(err, ConfigDriveError::Fetch { .. }), "https is fetched: {err}");
    }

    /// Serve one request on 127.0.0.1 with `status` and `body`; return the URL.
    fn serve_once(status: &'static str, body: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/configdrive", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).unwrap();
            conn.write_all(&body).unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, server)
    }

    #[test]
    fn load_over_http() {
        let dir = tempfile::tempdir().unwrap();
        let image = iso(dir.path());
        let (url, server) = serve_once("200 OK", base64_lines(&gzip(&image)));
        let drive = load(&url, TIMEOUT).unwrap();
        check(&drive, &image, ConfigDriveKind::Iso9660);
        assert_eq!(drive.origin, url);
        assert!(server.join().unwrap().starts_with("GET /configdrive HTTP/1.1\r\n"));

        let (url, server) = serve_once("404 Not Found", b"no such drive".to_vec());
        let err = load(&url, TIMEOUT).unwrap_err();
        assert!(matches!(err, ConfigDriveError::HttpStatus { status: 404, .. }), "{err}");
        assert!(err.to_string().contains(&url), "{err}");
        server.join().unwrap();
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..4096), form in 0u8..4) {
            let raw = match form {
                0 => raw,
                1 => [GZIP_MAGIC, &raw].concat(),
                2 => STANDARD.encode(&raw).into_bytes(),
                _ => STANDARD.encode([GZIP_MAGIC, &raw].concat()).into_bytes(),
            };
            let _ = decode(&raw, "fuzz");
        }
    }

    #[test]
    fn unreachable_server_is_a_fetch_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = load(&format!("http://127.0.0.1:{port}/x"), TIMEOUT).unwrap_err();
        assert!(matches!(err, ConfigDriveError::Fetch { .. }), "{err}");
    }
}
