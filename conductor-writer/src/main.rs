use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use conductor_writer::capture::{CaptureOptions, OutputFormat};
use conductor_writer::cli::{self, Login, WriteArgs};
use conductor_writer::deploy::layout::{self, BootMode, BootOption};
use conductor_writer::deploy::mkfs::FsFormat;
use conductor_writer::deploy::table::Label;
use conductor_writer::deploy::{DeployOptions, ImageType};
use conductor_writer::initiator::Recovery;
use conductor_writer::service::{self, ServiceOptions};
use conductor_writer::source::{Checksum, FormatChoice, OpenOptions, Origin};
use conductor_writer::url::IscsiUrl;
use conductor_writer::write::WriteOptions;
use iscsi_proto::login::Credentials;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// Writes disk images to remote disks over iSCSI, fast and verifiably.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_INITIATOR: &str = "iqn.2024-01.org.iscsi-deploy:conductor-writer";

/// `name` as the last part of an IQN: lower case letters, digits, `.` and `-`.
fn iqn_suffix(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect()
}

#[derive(Debug, clap::Args)]
struct LoginArgs {
    /// Our iSCSI name (`serve` adds `:` and its --conductor name to the default).
    #[arg(long, default_value = DEFAULT_INITIATOR)]
    initiator_name: String,
    /// CHAP name (or put user%secret@ in the URL)...
    #[arg(long, requires = "chap_secret")]
    chap_user: Option<String>,
    /// ...and secret (at least 12 characters).
    #[arg(
        long,
        env = "CONDUCTOR_WRITER_CHAP_SECRET",
        hide_env_values = true,
        requires = "chap_user"
    )]
    chap_secret: Option<String>,
    /// Require the target to prove this name (mutual CHAP)...
    #[arg(long, requires = "mutual_chap_secret")]
    mutual_chap_user: Option<String>,
    /// ...and secret (at least 12 characters).
    #[arg(
        long,
        env = "CONDUCTOR_WRITER_MUTUAL_CHAP_SECRET",
        hide_env_values = true,
        requires = "mutual_chap_user"
    )]
    mutual_chap_secret: Option<String>,
    /// Seconds to wait for a connection or a login.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// When a connection breaks, seconds to keep logging in again (session
    /// reinstatement; unanswered commands are sent again); 0: give up at once.
    #[arg(long, default_value_t = 30)]
    reconnect_timeout: u64,
    /// Seconds a target may stay silent while commands wait before the
    /// connection counts as broken (it is pinged first).
    #[arg(long, default_value_t = 20)]
    dead_after: u64,
    /// Require CRC32C header digests (every PDU header checked end to end).
    #[arg(long)]
    header_digest: bool,
    /// Require CRC32C data digests (every data segment checked end to end;
    /// data then passes through memory instead of going straight from the
    /// image file to the socket).
    #[arg(long)]
    data_digest: bool,
}

impl LoginArgs {
    fn login(&self) -> Login {
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
enum Format {
    Auto,
    Raw,
    Qcow2,
}

#[derive(Debug, clap::Args)]
struct ImageArgs {
    /// The image: a file, an http:// or https:// URL, or - for standard input (raw, or a
    /// gzip, zstd or xz stream of raw).
    image: Origin,
    /// The LUN: iscsi://[user%secret@]HOST[:PORT]/IQN/LUN
    url: IscsiUrl,
    /// Image format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// CA certificates (PEM) that https images are signed by (default: the built-in roots).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    #[command(flatten)]
    io: TransferArgs,
}

/// How to talk to the target and to the user; shared by the commands that
/// move images.
#[derive(Debug, clap::Args)]
struct TransferArgs {
    /// Sessions to spread commands over.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Commands in flight.
    #[arg(long, default_value_t = 32)]
    queue_depth: usize,
    /// Refuse qcow2 images that name a backing file.
    #[arg(long)]
    no_backing_files: bool,
    #[command(flatten)]
    login: LoginArgs,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl TransferArgs {
    fn progress(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

impl Format {
    fn choice(self) -> FormatChoice {
        match self {
            Format::Auto => FormatChoice::Auto,
            Format::Raw => FormatChoice::Raw,
            Format::Qcow2 => FormatChoice::Qcow2,
        }
    }
}

impl ImageArgs {
    fn write_args(
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
enum Command {
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
        #[arg(long, default_value_t = 10000)]
        port: u16,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The nodes file (TOML, one [[node]] table per node).
    #[arg(long)]
    nodes: PathBuf,
    /// Where the API listens (6385 is Ironic's port).
    #[arg(long, default_value = "0.0.0.0:6385")]
    listen: std::net::SocketAddr,
    /// Where states and history live: a SQLite file (made if missing), or
    /// a PostgreSQL URL (postgres://USER:PASSWORD@HOST[:PORT]/DB, or
    /// postgres:///DB?host=/run/postgresql for a unix socket) that several
    /// instances share.
    #[arg(long, default_value = "conductor-writer.sqlite", value_name = "FILE|URL")]
    db: String,
    /// This instance's name in the database, the same across its restarts
    /// (default: HOSTNAME:PORT of --listen). Several instances on one
    /// database need one name each.
    #[arg(long, value_name = "NAME")]
    conductor: Option<String>,
    /// Deploy only nodes whose conductor_group is this (Ironic's conductor
    /// groups); without it, only nodes without one.
    #[arg(long, default_value = "", value_name = "GROUP")]
    conductor_group: String,
    /// Seconds a claim on a node lasts unless its instance renews it (every
    /// third of it); an instance that stops is taken over after this long.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    lease_timeout: u64,
    /// Deploys running at once.
    #[arg(long, default_value_t = 4)]
    max_parallel: usize,
    /// Seconds a node may wait for its ramdisk's callback.
    #[arg(long, default_value_t = 1800)]
    callback_timeout: u64,
    /// Where http:// images are downloaded (default: next to the database).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Sessions per deploy.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Require HTTP basic authentication for the API against this Apache
    /// htpasswd file of bcrypt entries (`htpasswd -cB FILE USER`). The ramdisk
    /// callbacks and the version documents stay public.
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth")]
    htpasswd: Option<PathBuf>,
    /// Serve the API without authentication on a non-loopback address.
    #[arg(long)]
    no_auth: bool,
    /// Serve the API over TLS with this certificate chain (PEM)...
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ...and its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that https images are signed by (default: the built-in roots).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    #[command(flatten)]
    login: LoginArgs,
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// The node's address (its iSCSI portal and done port).
    #[arg(long)]
    address: String,
    #[arg(long, default_value_t = 3260)]
    port: u16,
    /// The target the ramdisk serves the disk under.
    #[arg(long)]
    iqn: String,
    #[arg(long, default_value_t = 1)]
    lun: u16,
    /// The image file (raw or qcow2).
    #[arg(long)]
    image: PathBuf,
    #[arg(long, value_enum)]
    image_type: ImageType,
    /// Image format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// sha256:HEX or md5:HEX of the image file, checked before anything is written.
    #[arg(long)]
    checksum: Option<Checksum>,
    /// Root partition size (partition images; default: the rest of the disk).
    #[arg(long)]
    root_mb: Option<u64>,
    #[arg(long, default_value_t = 0)]
    swap_mb: u64,
    #[arg(long, default_value_t = 0)]
    ephemeral_mb: u64,
    #[arg(long, value_enum, default_value_t = FsFormat::Ext4)]
    ephemeral_format: FsFormat,
    /// Keep the ephemeral partition and its data (the layout must put it where it is).
    #[arg(long)]
    preserve_ephemeral: bool,
    /// Config drive: a file (gzip+base64, or a plain ISO 9660/vfat image) or an http(s):// URL.
    #[arg(long)]
    configdrive: Option<String>,
    #[arg(long, value_enum, default_value_t = BootMode::Bios)]
    boot_mode: BootMode,
    #[arg(long, value_enum, default_value_t = BootOption::Netboot)]
    boot_option: BootOption,
    /// Partition table (default: gpt for uefi, msdos for bios).
    #[arg(long, value_enum)]
    disk_label: Option<DiskLabel>,
    /// EFI system partition size (UEFI local boot).
    #[arg(long, default_value_t = 550)]
    efi_mb: u64,
    /// Send `done` to the ramdisk when finished (the default).
    #[arg(long, overrides_with = "no_notify")]
    notify: bool,
    /// Do not send `done`.
    #[arg(long)]
    no_notify: bool,
    #[arg(long, default_value_t = 10000)]
    notify_port: u16,
    /// The node's deployment id (its UUID)... With --deployment-key, log in
    /// with the CHAP credentials a ramdisk booted with `iscsi_chap=1`
    /// derives from them, and require the target to prove the same (mutual).
    #[arg(long, requires = "deployment_key")]
    deployment_id: Option<String>,
    /// ...and its deployment key.
    #[arg(
        long,
        env = "CONDUCTOR_WRITER_DEPLOYMENT_KEY",
        hide_env_values = true,
        requires = "deployment_id"
    )]
    deployment_key: Option<String>,
    #[command(flatten)]
    io: TransferArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DiskLabel {
    Msdos,
    Gpt,
}

impl DeployArgs {
    /// The login, with CHAP derived from the deployment when asked.
    fn login(&self) -> Login {
        let mut login = self.io.login.login();
        if let (Some(id), Some(key)) = (&self.deployment_id, &self.deployment_key) {
            login.set_deployment_chap(id, key);
        }
        login
    }

    fn options(&self) -> anyhow::Result<DeployOptions> {
        if self.image_type == ImageType::WholeDisk
            && (self.root_mb.is_some() || self.swap_mb > 0 || self.ephemeral_mb > 0 || self.preserve_ephemeral)
        {
            anyhow::bail!(
                "--root-mb, --swap-mb, --ephemeral-mb and --preserve-ephemeral are for partition images; \
                 a whole-disk image brings its own partitions"
            );
        }
        Ok(DeployOptions {
            image: self.image.clone(),
            image_type: self.image_type,
            open: OpenOptions {
                format: self.format.choice(),
                backing_files: !self.io.no_backing_files,
                ..OpenOptions::default()
            },
            checksum: self.checksum,
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
            write: WriteOptions {
                queue_depth: self.io.queue_depth.max(1),
                ..WriteOptions::default()
            },
            fetch_timeout: Duration::from_secs(self.io.login.timeout.max(1) * 3),
        })
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Deploy(args) => {
            let options = args.options()?;
            let url = IscsiUrl {
                host: args.address.clone(),
                port: args.port,
                target: args.iqn.clone(),
                lun: args.lun,
                user: None,
            };
            let progress = args.io.progress();
            let notify = (!args.no_notify).then_some(args.notify_port);
            let report = cli::deploy(&url, &args.login(), args.io.sessions.max(1), &options, progress, notify).await?;
            if args.io.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.text());
            }
        }
        Command::Write {
            image,
            verify,
            checksum,
            checksum_first,
            skip_zeroes,
        } => {
            let args = image.write_args(checksum, verify, skip_zeroes, checksum_first);
            let summary = cli::write(&image.image, &image.url, &image.io.login.login(), &args).await?;
            if image.io.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{}", summary.line());
            }
        }
        Command::Verify { image } => {
            let args = image.write_args(None, true, false, false);
            cli::verify(&image.image, &image.url, &image.io.login.login(), &args).await?;
            if image.io.json {
                println!(
                    "{}",
                    serde_json::json!({ "image": image.image.to_string(), "target": image.url.to_string(), "verified": true })
                );
            } else {
                println!("{} matches {}", image.url, image.image);
            }
        }
        Command::Read {
            url,
            output,
            format,
            compress,
            io,
        } => {
            let options = CaptureOptions {
                format,
                compress,
                queue_depth: io.queue_depth.max(1),
                max_io: WriteOptions::default().max_io,
            };
            let report = cli::read(
                &url,
                &output,
                &io.login.login(),
                io.sessions.max(1),
                &options,
                io.progress(),
            )
            .await?;
            if io.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", cli::capture_line(&url, &report));
            }
        }
        Command::Discover { portal, login, json } => {
            let targets = cli::discover(&portal, &login.login()).await?;
            if json {
                let list: Vec<_> = targets
                    .iter()
                    .map(|t| serde_json::json!({ "name": t.name, "addresses": t.addresses }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for t in targets {
                    println!("{} {}", t.name, t.addresses.join(" "));
                }
            }
        }
        Command::Inquiry { url, login, json } => {
            let answer = cli::inquiry(&url, &login.login()).await?;
            if json {
                println!("{}", serde_json::to_string(&answer)?);
            } else {
                println!("{}", answer.line());
            }
        }
        Command::Serve(args) => {
            let db = service::store::Location::parse(&args.db);
            let cache_dir = args.cache_dir.clone().unwrap_or_else(|| match &db {
                service::store::Location::Sqlite(path) => path
                    .parent()
                    .map_or_else(|| PathBuf::from("."), PathBuf::from)
                    .join("image-cache"),
                service::store::Location::Postgres(_) => PathBuf::from("image-cache"),
            });
            let group = args.conductor_group.to_ascii_lowercase();
            service::nodes::check_conductor_group(&group).map_err(|e| anyhow::anyhow!("--conductor-group {e}"))?;
            let conductor = args
                .conductor
                .clone()
                .unwrap_or_else(|| format!("{}:{}", service::hostname(), args.listen.port()));
            anyhow::ensure!(
                !conductor.trim().is_empty() && conductor.len() <= 255,
                "--conductor must be a name of 1 to 255 characters"
            );
            let mut login = args.login.login();
            // Each instance logs in under its own name, so that a ramdisk serving
            // one initiator at a time tells instances apart.
            if login.initiator_name == DEFAULT_INITIATOR {
                login.initiator_name = format!("{DEFAULT_INITIATOR}:{}", iqn_suffix(&conductor));
            }
            let options = ServiceOptions {
                nodes_file: args.nodes,
                listen: args.listen,
                db,
                max_parallel: args.max_parallel.max(1),
                callback_timeout: Duration::from_secs(args.callback_timeout.max(1)),
                cache_dir,
                login,
                write: WriteOptions::default(),
                sessions: args.sessions.max(1),
                auth: match args.htpasswd {
                    Some(file) => service::http::auth::ApiAuth::Htpasswd(file),
                    None => service::http::auth::ApiAuth::Open { explicit: args.no_auth },
                },
                ca_cert: args.ca_cert,
                tls: match (&args.tls_cert, &args.tls_key) {
                    (Some(cert), Some(key)) => Some(conductor_writer::tls::server_config(cert, key)?),
                    _ => None,
                },
                conductor,
                conductor_group: group,
                lease: Duration::from_secs(args.lease_timeout.max(1)),
            };
            service::run(options, iscsi_wire::shutdown_signal()).await?;
        }
        Command::PxeConfig {
            node,
            nodes,
            api_url,
            tls,
            kernel,
            ramdisk,
        } => {
            let api_url = service::client::api_url(api_url.as_deref(), tls)?;
            let specs = service::nodes::load(&nodes)?;
            let spec = specs
                .iter()
                .find(|s| s.uuid.eq_ignore_ascii_case(&node) || s.name.as_deref() == Some(node.as_str()))
                .with_context(|| format!("no node {node} in {}", nodes.display()))?;
            print!("{}", service::client::pxe_config(spec, &api_url, &kernel, &ramdisk)?);
        }
        Command::Status {
            url,
            user,
            ca_cert,
            json,
        } => {
            let credentials = match user {
                Some(user) => Some((
                    user,
                    std::env::var("OS_PASSWORD")
                        .context("--user (or $OS_USERNAME) needs the password in $OS_PASSWORD")?,
                )),
                None => None,
            };
            let agent = conductor_writer::tls::http_agent(ca_cert.as_deref(), Duration::from_secs(10))?;
            let nodes =
                tokio::task::spawn_blocking(move || service::client::fetch_nodes(&agent, &url, credentials.as_ref()))
                    .await??;
            if json {
                println!("{nodes}");
            } else {
                print!("{}", service::client::status_table(&nodes));
            }
        }
        Command::Notify { address, port } => cli::notify(&address, port, Duration::from_secs(30)).await?,
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    // A service logs what it does; a one-shot command only what goes wrong.
    let level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = result {
        eprintln!("conductor-writer: {e:#}");
        std::process::exit(1);
    }
}
