//! The commands behind `main.rs`: each takes parsed arguments and returns
//! what to print; errors are one line that says what failed and what to do.

use crate::disk::Disk;
use crate::initiator::{Recovery, Session};
use crate::source::{self, Checksum, FormatChoice, OpenOptions, Origin, Remote};
use crate::url::{IscsiUrl, parse_portal};
use crate::write::{Progress, Report, WriteOptions, verify_image, write_image};
use anyhow::{Context, bail};
use deploy_contract::chap::{DeployRole, for_deployment};
use iscsi_proto::Lun;
use iscsi_proto::discovery::{self, TargetRecord};
use iscsi_proto::login::{Credentials, InitiatorConfig};
use iscsi_proto::pdu::Isid;
use iscsi_proto::scsi::Command;
use iscsi_proto::text::Pair;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How to reach and log in to a target.
#[derive(Debug, Clone)]
pub struct Login {
    pub initiator_name: String,
    pub chap: Option<Credentials>,
    pub mutual: Option<Credentials>,
    pub timeout: Duration,
    /// What a session does when its connection breaks.
    pub recovery: Recovery,
    /// Require CRC32C header digests.
    pub header_digest: bool,
    /// Require CRC32C data digests.
    pub data_digest: bool,
}

impl Login {
    /// The login of one session with `isid` to `target` (discovery without).
    fn config(&self, target: Option<String>, isid: Isid) -> InitiatorConfig {
        let mut config = InitiatorConfig::new(self.initiator_name.clone(), target, isid);
        config.chap = self.chap.clone();
        config.mutual = self.mutual.clone();
        let crc32c = || vec!["CRC32C".to_owned()];
        if self.header_digest {
            config.prefs.header_digest = crc32c();
        }
        if self.data_digest {
            config.prefs.data_digest = crc32c();
        }
        config
    }

    /// CHAP both ways with the credentials a ramdisk booted with `iscsi_chap=1` derives from the
    /// same deployment: we prove ourselves as the initiator and require the ramdisk's target to
    /// prove itself back.
    pub fn set_deployment_chap(&mut self, deployment_id: &str, deployment_key: &str) {
        let derived = |role| {
            let chap = for_deployment(deployment_id, deployment_key, role);
            Some(Credentials::new(chap.name, chap.secret))
        };
        self.chap = derived(DeployRole::Initiator);
        self.mutual = derived(DeployRole::Target);
    }
}

fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

fn isid() -> Isid {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    Isid::random(bytes)
}

/// Log in to the LUN of `url` with `sessions` sessions and probe it.
pub async fn open_disk(url: &IscsiUrl, login: &Login, sessions: usize) -> anyhow::Result<Disk> {
    let addr = resolve(&url.host, url.port)?;
    let chap = url
        .user
        .clone()
        .map(|(n, s)| Credentials::new(n, s))
        .or_else(|| login.chap.clone());
    let mut opened = Vec::new();
    for _ in 0..sessions.max(1) {
        let mut config = login.config(Some(url.target.clone()), isid());
        config.chap = chap.clone();
        let session = Session::connect_with(addr, config, login.timeout, login.recovery).await?;
        opened.push(Arc::new(session));
    }
    Ok(Disk::probe(opened, Lun::from_index(url.lun)).await?)
}

/// Options of `write` and `verify`.
#[derive(Debug, Clone)]
pub struct WriteArgs {
    pub format: FormatChoice,
    pub checksum: Option<Checksum>,
    pub sessions: usize,
    pub options: WriteOptions,
    pub verify: bool,
    pub progress: bool,
    /// Follow qcow2 backing files (refuse them for untrusted images).
    pub backing_files: bool,
    /// CA certificates for `https` images (else the built-in roots).
    pub ca_cert: Option<PathBuf>,
    /// Download an `http(s)` image to a temporary file and check its checksum before
    /// anything is written (instead of checking it as it streams).
    pub checksum_first: bool,
    /// Connection and read timeout for `http(s)` images.
    pub http_timeout: Duration,
}

/// The summary of a `write`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriteSummary {
    pub image: String,
    pub target: String,
    pub image_bytes: u64,
    pub data_bytes: u64,
    /// Data bytes sent straight from the image file.
    pub stored_bytes: u64,
    pub zero_bytes: u64,
    pub seconds: f64,
    pub mib_per_second: f64,
    pub verified: bool,
    /// Times a session lost its connection and logged in again.
    pub reconnects: u64,
}

impl WriteSummary {
    fn new(image: &Origin, url: &IscsiUrl, report: &Report, verified: bool, reconnects: u64) -> Self {
        let seconds = report.elapsed.as_secs_f64();
        Self {
            image: image.to_string(),
            target: url.to_string(),
            image_bytes: report.image_bytes,
            data_bytes: report.data_bytes,
            stored_bytes: report.stored_bytes,
            zero_bytes: report.zero_bytes,
            seconds,
            mib_per_second: if seconds > 0.0 {
                report.image_bytes as f64 / seconds / 1048576.0
            } else {
                0.0
            },
            verified,
            reconnects,
        }
    }

    /// The one summary line.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "wrote {} to {}: {:.1} MiB as data, {:.1} MiB as zeroes, {:.2} s, {:.1} MiB/s{}{}",
            self.image,
            self.target,
            self.data_bytes as f64 / 1048576.0,
            self.zero_bytes as f64 / 1048576.0,
            self.seconds,
            self.mib_per_second,
            if self.verified { ", verified" } else { "" },
            match self.reconnects {
                0 => String::new(),
                n => format!(", {n} lost connection(s) recovered"),
            }
        )
    }
}

fn bar(total: u64, show: bool, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// An image ready to be read, and the temporary download it may live in.
struct Opened {
    source: Box<dyn source::Source>,
    /// Where a `--checksum-first` download went; deleted when dropped.
    download: Option<tempfile::TempPath>,
}

/// Check everything that can be checked before a block is written: the
/// image opens, its checksum matches (for a stream: as it goes, unless
/// `checksum_first` downloads and checks it first), it fits.
fn open_image(image: &Origin, args: &WriteArgs) -> anyhow::Result<Opened> {
    let options = OpenOptions {
        format: args.format,
        backing_files: args.backing_files,
        ..OpenOptions::default()
    };
    let agent = crate::tls::http_agent(args.ca_cert.as_deref(), args.http_timeout)
        .context("cannot use the CA certificates given with --ca-cert")?;
    if args.checksum_first
        && let Origin::Url(url) = image
    {
        let expected = args
            .checksum
            .context("--checksum-first checks a download against --checksum, and none was given")?;
        let download = source::download(&agent, url, &expected)?;
        let source = source::open(&download, &options)?;
        return Ok(Opened {
            source,
            download: Some(download),
        });
    }
    if let (Some(expected), Origin::Path(path)) = (&args.checksum, image) {
        source::verify_checksum(path, expected)?;
    }
    let remote = Remote {
        agent,
        checksum: args.checksum,
    };
    Ok(Opened {
        source: source::open_origin(image, &options, &remote)?,
        download: None,
    })
}

/// `write IMAGE URL`.
pub async fn write(image: &Origin, url: &IscsiUrl, login: &Login, args: &WriteArgs) -> anyhow::Result<WriteSummary> {
    if args.verify && !image.rereadable() {
        bail!(
            "--verify reads the image a second time, and standard input cannot be; write without it, then run \
             `conductor-writer verify FILE {url}` against the image file"
        );
    }
    let opened = tokio::task::block_in_place(|| open_image(image, args))?;
    let disk = open_disk(url, login, args.sessions).await?;
    let size = opened.source.size();
    let known = opened.source.length_known();
    let progress = bar(
        if known { size } else { disk.geometry.capacity() },
        args.progress,
        "writing",
    );
    let report = write_image(&disk, opened.source, &args.options, |p: Progress| {
        progress.set_position(p.done_bytes)
    })
    .await?;
    progress.finish_and_clear();
    if args.verify {
        // The downloaded copy, when there is one: it is the image that was checked.
        let again = match &opened.download {
            Some(path) => Origin::Path(path.to_path_buf()),
            None => image.clone(),
        };
        check_read_back(&again, &disk, args).await?;
    }
    let reconnects = disk.sessions().iter().map(|s| s.reinstatements()).sum();
    logout(disk).await;
    Ok(WriteSummary::new(image, url, &report, args.verify, reconnects))
}

async fn check_read_back(image: &Origin, disk: &Disk, args: &WriteArgs) -> anyhow::Result<()> {
    let opened = tokio::task::block_in_place(|| {
        open_image(
            image,
            &WriteArgs {
                checksum: None,
                checksum_first: false,
                ..args.clone()
            },
        )
    })?;
    let progress = bar(opened.source.size(), args.progress, "verifying");
    let mismatch = verify_image(disk, opened.source, &args.options, |p| {
        progress.set_position(p.done_bytes)
    })
    .await?;
    progress.finish_and_clear();
    if let Some(m) = mismatch {
        bail!(
            "verification failed: the disk differs from {image} at byte {}",
            m.offset
        );
    }
    Ok(())
}

/// `verify IMAGE URL`: compare only.
pub async fn verify(image: &Origin, url: &IscsiUrl, login: &Login, args: &WriteArgs) -> anyhow::Result<()> {
    if !image.rereadable() {
        bail!("verify needs the image file or its URL: standard input is read once, by write");
    }
    let disk = open_disk(url, login, args.sessions).await?;
    check_read_back(image, &disk, args).await?;
    logout(disk).await;
    Ok(())
}

/// `read URL OUTPUT`: the LUN into a sparse raw file or a qcow2.
pub async fn read(
    url: &IscsiUrl,
    output: &std::path::Path,
    login: &Login,
    sessions: usize,
    options: &crate::capture::CaptureOptions,
    show_progress: bool,
) -> anyhow::Result<crate::capture::CaptureReport> {
    if options.compress && options.format != crate::capture::OutputFormat::Qcow2 {
        bail!("--compress compresses qcow2 clusters; add --format qcow2");
    }
    let disk = open_disk(url, login, sessions).await?;
    let progress = bar(disk.geometry.capacity(), show_progress, "reading");
    let result = crate::capture::capture(&disk, output, options, |done| progress.set_position(done)).await;
    progress.finish_and_clear();
    logout(disk).await;
    Ok(result?)
}

/// The one line `read` prints.
#[must_use]
pub fn capture_line(url: &IscsiUrl, report: &crate::capture::CaptureReport) -> String {
    let mib = |b: u64| b as f64 / 1048576.0;
    format!(
        "read {url} into {} ({}): {:.1} MiB disk, {:.1} MiB read, {:.1} MiB unmapped (not read), {:.1} MiB stored, \
         file {:.1} MiB on disk, {:.2} s, {:.1} MiB/s, sha256:{}",
        report.output,
        report.format,
        mib(report.disk_bytes),
        mib(report.read_bytes),
        mib(report.unmapped_bytes),
        mib(report.stored_bytes),
        mib(report.file_bytes),
        report.seconds,
        report.mib_per_second,
        report.sha256
    )
}

/// Log every session of `disk` out.
pub(crate) async fn logout(disk: Disk) {
    let sessions: Vec<_> = disk.sessions().to_vec();
    drop(disk);
    for session in sessions {
        if let Ok(session) = Arc::try_unwrap(session) {
            let _ = session.logout().await;
        }
    }
}

/// `deploy`: partition, format and image a node's disk, then (with
/// `notify`) tell its ramdisk we are done.
pub async fn deploy(
    url: &IscsiUrl,
    login: &Login,
    sessions: usize,
    options: &crate::deploy::DeployOptions,
    show_progress: bool,
    notify_port: Option<u16>,
) -> anyhow::Result<crate::deploy::DeployReport> {
    let disk = open_disk(url, login, sessions).await?;
    let progress = bar(0, show_progress, "deploying");
    let result = crate::deploy::deploy(&disk, options, |p| {
        progress.set_length(p.total_bytes);
        progress.set_position(p.done_bytes);
    })
    .await;
    progress.finish_and_clear();
    logout(disk).await;
    let mut report = result?;
    if let Some(port) = notify_port {
        notify_retrying(&url.host, port, login.timeout).await?;
        report.notified = true;
    }
    Ok(report)
}

/// [`notify`], retrying while the ramdisk is not listening yet.
async fn notify_retrying(host: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match notify(host, port, timeout).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "the disk is written, but the ramdisk at {host}:{port} was not told; \
                     send `conductor-writer notify {host} --port {port}` once it listens"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// `discover HOST[:PORT]`: SendTargets=All in a discovery session.
pub async fn discover(portal: &str, login: &Login) -> anyhow::Result<Vec<TargetRecord>> {
    let (host, port) = parse_portal(portal, 3260).map_err(|e| anyhow::anyhow!("invalid portal {portal:?}: {e}"))?;
    let addr = resolve(&host, port)?;
    let session = Session::connect(addr, login.config(None, isid()), login.timeout).await?;
    let pairs = session.text(vec![Pair::new("SendTargets", "All")]).await?;
    let _ = session.logout().await;
    Ok(discovery::parse_answer(&pairs))
}

/// What `inquiry URL` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inquiry {
    pub vendor: String,
    pub product: String,
    pub revision: String,
    pub capacity_bytes: u64,
    pub block_size: u32,
    pub thin_provisioning: bool,
    pub unmap_reads_zeroes: bool,
}

impl Inquiry {
    /// The one line `inquiry` prints.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "{} {} {}: {} bytes in {}-byte blocks, thin provisioning {}, unmapped blocks read {}",
            self.vendor,
            self.product,
            self.revision,
            self.capacity_bytes,
            self.block_size,
            if self.thin_provisioning { "yes" } else { "no" },
            if self.unmap_reads_zeroes {
                "as zeroes"
            } else {
                "undefined"
            },
        )
    }
}

/// `inquiry URL`.
pub async fn inquiry(url: &IscsiUrl, login: &Login) -> anyhow::Result<Inquiry> {
    let disk = open_disk(url, login, 1).await?;
    let standard = Command::Inquiry {
        evpd: false,
        page_code: 0,
        allocation_length: 96,
    };
    let data = disk.run("INQUIRY", &standard, bytes::Bytes::new(), 96).await?.data;
    let text = |range: std::ops::Range<usize>| {
        String::from_utf8_lossy(data.get(range).unwrap_or(&[]))
            .trim()
            .to_owned()
    };
    let g = disk.geometry.clone();
    let answer = Inquiry {
        vendor: text(8..16),
        product: text(16..32),
        revision: text(32..36),
        capacity_bytes: g.capacity(),
        block_size: g.block_size,
        thin_provisioning: g.unmap_write_same,
        unmap_reads_zeroes: g.zeroes_after_unmap,
    };
    logout(disk).await;
    Ok(answer)
}

/// `notify ADDRESS --port 10000`: the legacy ramdisk's `done` handshake.
pub async fn notify(address: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let (host, port) = parse_portal(address, port).map_err(|e| anyhow::anyhow!("invalid address {address:?}: {e}"))?;
    let addr = resolve(&host, port)?;
    let mut stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}; is the deploy ramdisk waiting?"))?;
    stream
        .write_all(b"done")
        .await
        .with_context(|| format!("sending done to {addr}"))?;
    stream.shutdown().await.ok();
    Ok(())
}
