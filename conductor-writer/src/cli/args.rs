//! The command line: every subcommand, flag and default, and how they
//! become the library's options.

use super::WriteArgs;
use crate::capture::OutputFormat;
use crate::connect::Login;
use crate::deploy::layout::{self, BootMode, BootOption};
use crate::deploy::mkfs::FsFormat;
use crate::deploy::table::Label;
use crate::deploy::{DeployOptions, ImageType, Request};
use crate::initiator::Recovery;
use crate::source::{Checksum, FormatChoice, OpenOptions, Origin};
use crate::url::IscsiUrl;
use crate::write::WriteOptions;
use clap::{Parser, Subcommand, ValueEnum};
use iscsi_proto::login::Credentials;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// Writes disk images to remote disks over iSCSI, fast and verifiably.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

pub(crate) const DEFAULT_INITIATOR: &str = "iqn.2024-01.org.iscsi-deploy:conductor-writer";

/// `name` as the last part of an IQN: lower case letters, digits, `.` and `-`.
pub(crate) fn iqn_suffix(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect()
}

#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// Our iSCSI name (`serve` adds `:` and its --conductor name to the default).
    #[arg(long, default_value = DEFAULT_INITIATOR)]
    pub(crate) initiator_name: String,
    /// CHAP name (or put user%secret@ in the URL)...
    #[arg(long, requires = "chap_secret")]
    pub(crate) chap_user: Option<String>,
    /// ...and secret (at least 12 characters).
    #[arg(
        long,
        env = "CONDUCTOR_WRITER_CHAP_SECRET",
        hide_env_values = true,
        requires = "chap_user"
    )]
    pub(crate) chap_secret: Option<String>,
    /// Require the target to prove this name (mutual CHAP)...
    #[arg(long, requires = "mutual_chap_secret")]
    pub(crate) mutual_chap_user: Option<String>,
    /// ...and secret (at least 12 characters).
    #[arg(
        long,
        env = "CONDUCTOR_WRITER_MUTUAL_CHAP_SECRET",
        hide_env_values = true,
        requires = "mutual_chap_user"
    )]
    pub(crate) mutual_chap_secret: Option<String>,
    /// Seconds to wait for a connection or a login.
    #[arg(long, default_value_t = 20)]
    pub(crate) timeout: u64,
    /// When a connection breaks, seconds to keep logging in again (session
    /// reinstatement; unanswered commands are sent again); 0: give up at once.
    #[arg(long, default_value_t = 30)]
    pub(crate) reconnect_timeout: u64,
    /// Seconds a target may stay silent while commands wait before the
    /// connection counts as broken (it is pinged first).
    #[arg(long, default_value_t = 20)]
    pub(crate) dead_after: u64,
    /// Require CRC32C header digests (every PDU header checked end to end).
    #[arg(long)]
    pub(crate) header_digest: bool,
    /// Require CRC32C data digests (every data segment checked end to end;
    /// data then passes through memory instead of going straight from the
    /// image file to the socket).
    #[arg(long)]
    pub(crate) data_digest: bool,
}

impl LoginArgs {
    pub(crate) fn login(&self) -> Login {
        let creds =
            |n: &Option<String>, s: &Option<String>| n.clone().zip(s.clone()).map(|(n, s)| Credentials::new(n, s));
        Login {
            initiator_name: self.initiator_name.clone(),
            chap: creds(&self.chap_user, &self.chap_secret),
            mutual: creds(&self.mutual_chap_user, &self.mutual_chap_secret),
            timeout: Duration::from_secs(self.timeout.max(1)),
            recovery: Recovery {
                within: Duration::from_secs(self.reconnect_timeout),
                ping_after: Duration::from_secs((self.dead_after / 4).max(1)),
                dead_after: Duration::from_secs(self.dead_after.max(2)),
            },
            header_digest: self.header_digest,
            data_digest: self.data_digest,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Auto,
    Raw,
    Qcow2,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImageArgs {
    /// The image: a file, an http:// or https:// URL, or - for standard input (raw, or a
    /// gzip, zstd or xz stream of raw).
    pub(crate) image: Origin,
    /// The LUN: iscsi://[user%secret@]HOST[:PORT]/IQN/LUN
    pub(crate) url: IscsiUrl,
    /// Image format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub(crate) format: Format,
    /// CA certificates (PEM) that https images are signed by (default: the built-in roots).
    #[arg(long)]
    pub(crate) ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) io: TransferArgs,
}

/// How to talk to the target and to the user; shared by the commands that
/// move images.
#[derive(Debug, clap::Args)]
pub(crate) struct TransferArgs {
    /// Sessions to spread commands over.
    #[arg(long, default_value_t = 1)]
    pub(crate) sessions: usize,
    /// Commands in flight.
    #[arg(long, default_value_t = 32)]
    pub(crate) queue_depth: usize,
    /// Refuse qcow2 images that name a backing file.
    #[arg(long)]
    pub(crate) no_backing_files: bool,
    #[command(flatten)]
    pub(crate) login: LoginArgs,
    /// No progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

impl TransferArgs {
    pub(crate) fn progress(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

impl Format {
    pub(crate) fn choice(self) -> FormatChoice {
        match self {
            Format::Auto => FormatChoice::Auto,
            Format::Raw => FormatChoice::Raw,
            Format::Qcow2 => FormatChoice::Qcow2,
        }
    }
}

impl ImageArgs {
    pub(crate) fn write_args(
        &self,
        checksum: Option<Checksum>,
        verify: bool,
        skip_zeroes: bool,
        checksum_first: bool,
    ) -> WriteArgs {
        WriteArgs {
            format: self.format.choice(),
            checksum,
            sessions: self.io.sessions.max(1),
            options: WriteOptions {
                queue_depth: self.io.queue_depth.max(1),
                skip_zeroes,
                ..WriteOptions::default()
            },
            verify,
            progress: self.io.progress(),
            backing_files: !self.io.no_backing_files,
            ca_cert: self.ca_cert.clone(),
            checksum_first,
            http_timeout: Duration::from_secs(self.io.login.timeout.max(1)),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write IMAGE onto the LUN at URL.
    Write {
        #[command(flatten)]
        image: ImageArgs,
        /// Read the disk back and compare.
        #[arg(long)]
        verify: bool,
        /// sha256:HEX or md5:HEX of the image file: checked before writing for a local
        /// file, on the bytes as they stream for a URL or standard input.
        #[arg(long)]
        checksum: Option<Checksum>,
        /// For a URL: download to a temporary file and check --checksum before writing.
        #[arg(long, requires = "checksum")]
        checksum_first: bool,
        /// Leave zero runs untouched (for disks known to be zeroed).
        #[arg(long)]
        skip_zeroes: bool,
    },
    /// Compare the LUN at URL with IMAGE.
    Verify {
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Read the LUN at URL into OUTPUT: a sparse raw file or a qcow2 (capture).
    Read {
        /// The LUN: iscsi://[user%secret@]HOST[:PORT]/IQN/LUN
        url: IscsiUrl,
        /// The file to write (replaced if it exists).
        output: PathBuf,
        /// The output's format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Raw)]
        format: OutputFormat,
        /// qcow2: zstd-compressed clusters.
        #[arg(long)]
        compress: bool,
        #[command(flatten)]
        io: TransferArgs,
    },
    /// List the targets a portal offers (SendTargets).
    Discover {
        /// HOST[:PORT]
        portal: String,
        #[command(flatten)]
        login: LoginArgs,
        #[arg(long)]
        json: bool,
    },
    /// Describe the LUN at URL.
    Inquiry {
        url: IscsiUrl,
        #[command(flatten)]
        login: LoginArgs,
        #[arg(long)]
        json: bool,
    },
    /// Partition, format and image a node's disk as Ironic's iSCSI deploy
    /// did, then tell its ramdisk we are done.
    Deploy(Box<DeployArgs>),
    /// Run the deploy service: answer ramdisk callbacks, deploy nodes,
    /// remember what happened.
    Serve(ServeArgs),
    /// Print the kernel parameters (and pxelinux/iPXE snippets) that boot
    /// the deploy ramdisk for NODE.
    PxeConfig {
        /// The node's UUID or name.
        node: String,
        /// The nodes file.
        #[arg(long)]
        nodes: PathBuf,
        /// Where the ramdisk calls back: this service's URL as the node reaches it
        /// (default http://127.0.0.1:6385, https with --tls).
        #[arg(long)]
        api_url: Option<String>,
        /// The service serves its API over TLS (serve --tls-cert): the URL is https.
        #[arg(long)]
        tls: bool,
        /// The deploy kernel's path on the boot server.
        #[arg(long, default_value = "deploy-kernel")]
        kernel: String,
        /// The deploy ramdisk's path on the boot server.
        #[arg(long, default_value = "deploy-ramdisk.cpio.gz")]
        ramdisk: String,
    },
    /// Show every node of a running deploy service.
    Status {
        /// The service's URL.
        #[arg(long, default_value = "http://127.0.0.1:6385")]
        url: String,
        /// The user of a service with --htpasswd; the password comes from
        /// $OS_PASSWORD, as for the OpenStack clients.
        #[arg(long, env = "OS_USERNAME")]
        user: Option<String>,
        /// CA certificates (PEM) of an https service (default: the built-in roots).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Tell a legacy deploy ramdisk we are done (sends "done" to port 10000).
    Notify {
        address: String,
        #[arg(long, default_value_t = deploy_contract::done::PORT)]
        port: u16,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The nodes file (TOML, one [[node]] table per node).
    #[arg(long)]
    pub(crate) nodes: PathBuf,
    /// Where the API listens (6385 is Ironic's port).
    #[arg(long, default_value = "0.0.0.0:6385")]
    pub(crate) listen: std::net::SocketAddr,
    /// Where states and history live: a SQLite file (made if missing), or
    /// a PostgreSQL URL (postgres://USER:PASSWORD@HOST[:PORT]/DB, or
    /// postgres:///DB?host=/run/postgresql for a unix socket) that several
    /// instances share.
    #[arg(long, default_value = "conductor-writer.sqlite", value_name = "FILE|URL")]
    pub(crate) db: String,
    /// This instance's name in the database, the same across its restarts
    /// (default: HOSTNAME:PORT of --listen). Several instances on one
    /// database need one name each.
    #[arg(long, value_name = "NAME")]
    pub(crate) conductor: Option<String>,
    /// Deploy only nodes whose conductor_group is this (Ironic's conductor
    /// groups); without it, only nodes without one.
    #[arg(long, default_value = "", value_name = "GROUP")]
    pub(crate) conductor_group: String,
    /// Seconds a claim on a node lasts unless its instance renews it (every
    /// third of it); an instance that stops is taken over after this long.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub(crate) lease_timeout: u64,
    /// Deploys running at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) max_parallel: usize,
    /// Seconds a node may wait for its ramdisk's callback.
    #[arg(long, default_value_t = 1800)]
    pub(crate) callback_timeout: u64,
    /// Where http:// images are downloaded (default: next to the database).
    #[arg(long)]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Sessions per deploy.
    #[arg(long, default_value_t = 1)]
    pub(crate) sessions: usize,
    /// Require HTTP basic authentication for the API against this Apache
    /// htpasswd file of bcrypt entries (`htpasswd -cB FILE USER`). The ramdisk
    /// callbacks and the version documents stay public.
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth")]
    pub(crate) htpasswd: Option<PathBuf>,
    /// Serve the API without authentication on a non-loopback address.
    #[arg(long)]
    pub(crate) no_auth: bool,
    /// Serve the API over TLS with this certificate chain (PEM)...
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// ...and its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that https images are signed by (default: the built-in roots).
    #[arg(long)]
    pub(crate) ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) login: LoginArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    /// The node's address (its iSCSI portal and done port).
    #[arg(long)]
    pub(crate) address: String,
    #[arg(long, default_value_t = 3260)]
    pub(crate) port: u16,
    /// The target the ramdisk serves the disk under.
    #[arg(long)]
    pub(crate) iqn: String,
    #[arg(long, default_value_t = 1)]
    pub(crate) lun: u16,
    /// The image file (raw or qcow2).
    #[arg(long)]
    pub(crate) image: PathBuf,
    #[arg(long, value_enum)]
    pub(crate) image_type: ImageType,
    /// Image format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub(crate) format: Format,
    /// sha256:HEX or md5:HEX of the image file, checked before anything is written.
    #[arg(long)]
    pub(crate) checksum: Option<Checksum>,
    /// Root partition size (partition images; default: the rest of the disk).
    #[arg(long)]
    pub(crate) root_mb: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub(crate) swap_mb: u64,
    #[arg(long, default_value_t = 0)]
    pub(crate) ephemeral_mb: u64,
    #[arg(long, value_enum, default_value_t = FsFormat::Ext4)]
    pub(crate) ephemeral_format: FsFormat,
    /// Keep the ephemeral partition and its data (the layout must put it where it is).
    #[arg(long)]
    pub(crate) preserve_ephemeral: bool,
    /// Config drive: a file (gzip+base64, or a plain ISO 9660/vfat image) or an http(s):// URL.
    #[arg(long)]
    pub(crate) configdrive: Option<String>,
    #[arg(long, value_enum, default_value_t = BootMode::Bios)]
    pub(crate) boot_mode: BootMode,
    #[arg(long, value_enum, default_value_t = BootOption::Netboot)]
    pub(crate) boot_option: BootOption,
    /// Partition table (default: gpt for uefi, msdos for bios).
    #[arg(long, value_enum)]
    pub(crate) disk_label: Option<DiskLabel>,
    /// EFI system partition size (UEFI local boot).
    #[arg(long, default_value_t = 550)]
    pub(crate) efi_mb: u64,
    /// Send `done` to the ramdisk when finished (the default).
    #[arg(long, overrides_with = "no_notify")]
    pub(crate) notify: bool,
    /// Do not send `done`.
    #[arg(long)]
    pub(crate) no_notify: bool,
    #[arg(long, default_value_t = deploy_contract::done::PORT)]
    pub(crate) notify_port: u16,
    /// The node's deployment id (its UUID)... With --deployment-key, log in
    /// with the CHAP credentials a ramdisk booted with `iscsi_chap=1`
    /// derives from them, and require the target to prove the same (mutual).
    #[arg(long, requires = "deployment_key")]
    pub(crate) deployment_id: Option<String>,
    /// ...and its deployment key.
    #[arg(
        long,
        env = "CONDUCTOR_WRITER_DEPLOYMENT_KEY",
        hide_env_values = true,
        requires = "deployment_id"
    )]
    pub(crate) deployment_key: Option<String>,
    #[command(flatten)]
    pub(crate) io: TransferArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DiskLabel {
    Msdos,
    Gpt,
}

impl DeployArgs {
    /// The login, with CHAP derived from the deployment when asked.
    pub(crate) fn login(&self) -> Login {
        let mut login = self.io.login.login();
        if let (Some(id), Some(key)) = (&self.deployment_id, &self.deployment_key) {
            login.set_deployment_chap(id, key);
        }
        login
    }

    pub(crate) fn options(&self) -> anyhow::Result<DeployOptions> {
        let request = Request {
            image_type: self.image_type,
            partitions: layout::Request {
                boot_mode: self.boot_mode,
                boot_option: self.boot_option,
                label: self.disk_label.map(|l| match l {
                    DiskLabel::Msdos => Label::Msdos,
                    DiskLabel::Gpt => Label::Gpt,
                }),
                efi_mb: self.efi_mb,
                ephemeral_mb: self.ephemeral_mb,
                swap_mb: self.swap_mb,
                configdrive_mb: 0,
                root_mb: self.root_mb,
            },
            ephemeral_format: self.ephemeral_format,
            preserve_ephemeral: self.preserve_ephemeral,
            configdrive: self.configdrive.clone(),
        };
        if let Some(key) = request.misplaced() {
            anyhow::bail!(
                "--{} is for partition images; a whole-disk image brings its own partitions",
                key.replace('_', "-")
            );
        }
        Ok(DeployOptions {
            open: OpenOptions {
                format: self.format.choice(),
                backing_files: !self.io.no_backing_files,
                ..OpenOptions::default()
            },
            checksum: self.checksum,
            write: WriteOptions {
                queue_depth: self.io.queue_depth.max(1),
                ..WriteOptions::default()
            },
            fetch_timeout: Duration::from_secs(self.io.login.timeout.max(1) * 3),
            ..DeployOptions::new(self.image.clone(), request)
        })
    }
}
