use anyhow::Context;
use clap::{Parser, Subcommand};
use iscsi_proto::login::{Credentials, TargetAuth};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use target_agent::backend::{FileDevice, FileOptions};
use target_agent::deploy::DeployOptions;
use target_agent::deploy::api::Retry;
use target_agent::deploy::disks::HardwareRoot;
use target_agent::lu::{Identity, LogicalUnit};
use target_agent::server;
use target_agent::target::{Target, TargetOptions};

/// The deploy ramdisk's iSCSI target agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a file or block device as an iSCSI LUN until interrupted.
    Serve(ServeArgs),
    /// The deploy ramdisk's program: read the kernel parameters, serve the
    /// install disk, call back the Ironic API, wait for `done`, reboot.
    Deploy(DeployArgs),
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// Read the kernel parameters from this file.
    #[arg(long, default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// Exit (0 on success) instead of rebooting.
    #[arg(long)]
    no_reboot: bool,
    /// The iSCSI portal; `done` is listened for on the same address.
    #[arg(long, default_value = "0.0.0.0:3260")]
    listen: SocketAddr,
    /// Where the conductor sends `done`.
    #[arg(long, default_value_t = deploy_contract::done::PORT)]
    done_port: u16,
    /// Seconds to wait for each `done` (the conductor's own callback timeout).
    #[arg(long, default_value_t = 1800)]
    callback_timeout: u64,
    /// Seconds to wait for the install disk to appear.
    #[arg(long, default_value_t = 60)]
    disk_timeout: u64,
    /// Require CHAP derived from the deployment id and key, as if the
    /// kernel line had `iscsi_chap=1`.
    #[arg(long)]
    chap: bool,
    /// Where the deployed root is mounted to install the boot loader.
    #[arg(long, default_value = "/mnt/rootfs")]
    mount_point: PathBuf,
    /// CA certificates (PEM) for an https Ironic API (tools/build-ramdisk
    /// --ca-cert puts them here); without the file, the built-in roots.
    #[arg(long, default_value = "/etc/deploy-ca.pem")]
    ca_cert: PathBuf,
    /// sysfs (tests point this at a prepared tree).
    #[arg(long, default_value = "/sys", hide = true)]
    sysfs_root: PathBuf,
    /// Device nodes.
    #[arg(long, default_value = "/dev", hide = true)]
    dev_root: PathBuf,
    /// The udev database.
    #[arg(long, default_value = "/run/udev/data", hide = true)]
    udev_root: PathBuf,
    /// The virtual floppy's contents, already mounted.
    #[arg(long, hide = true)]
    vmedia_dir: Option<PathBuf>,
    /// The boot server's TFTP port.
    #[arg(long, default_value_t = 69, hide = true)]
    tftp_port: u16,
    /// Attempts per API callback.
    #[arg(long, default_value_t = 10, hide = true)]
    api_attempts: u32,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The disk to serve: a regular file or a block device.
    #[arg(long)]
    backing: PathBuf,
    /// The target's iSCSI name (e.g. iqn.2008-10.org.openstack:NODE-UUID).
    #[arg(long)]
    iqn: String,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:3260")]
    listen: SocketAddr,
    /// The LUN the disk appears at (LUN 0 answers REPORT LUNS and INQUIRY).
    #[arg(long, default_value_t = 1)]
    lun: u16,
    /// Refuse writes (DATA PROTECT).
    #[arg(long)]
    read_only: bool,
    /// Open the backing store with O_DIRECT (bypass the page cache).
    #[arg(long)]
    direct: bool,
    /// Logical block size of a regular file (512 or 4096); block devices
    /// report their own.
    #[arg(long)]
    block_size: Option<u32>,
    /// Require initiators to pass CHAP with this name...
    #[arg(long, requires = "chap_secret")]
    chap_user: Option<String>,
    /// ...and this secret (at least 12 characters).
    #[arg(
        long,
        env = "TARGET_AGENT_CHAP_SECRET",
        hide_env_values = true,
        requires = "chap_user"
    )]
    chap_secret: Option<String>,
    /// The target's own name for mutual CHAP...
    #[arg(long, requires_all = ["mutual_chap_secret", "chap_user"])]
    mutual_chap_user: Option<String>,
    /// ...and its secret (at least 12 characters).
    #[arg(
        long,
        env = "TARGET_AGENT_MUTUAL_CHAP_SECRET",
        hide_env_values = true,
        requires = "mutual_chap_user"
    )]
    mutual_chap_secret: Option<String>,
    /// A human-readable alias for the target.
    #[arg(long)]
    alias: Option<String>,
    /// Commands queued per session (the CmdSN window).
    #[arg(long, default_value_t = 64)]
    queue_depth: u32,
    /// Sessions served at once.
    #[arg(long, default_value_t = 16)]
    max_sessions: usize,
    /// TCP connections served at once (logged in or not); more are closed at once.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Serve one initiator at a time: while one has a session, refuse the others.
    #[arg(long)]
    exclusive: bool,
    /// Seconds a login may take.
    #[arg(long, default_value_t = 15)]
    login_timeout: u64,
    /// Seconds of silence before the target pings an initiator.
    #[arg(long, default_value_t = 10)]
    nop_interval: u64,
    /// Seconds an unanswered ping may wait before the connection is dropped.
    #[arg(long, default_value_t = 30)]
    nop_timeout: u64,
}

fn credentials(name: Option<String>, secret: Option<String>) -> anyhow::Result<Option<Credentials>> {
    match (name, secret) {
        (Some(name), Some(secret)) => {
            // The login machine would refuse it at each login; say so at start-up instead.
            let credentials = Credentials::new(name, secret);
            credentials.check()?;
            Ok(Some(credentials))
        }
        _ => Ok(None),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = FileOptions {
        read_only: args.read_only,
        direct: args.direct,
        block_size: args.block_size,
    };
    let device =
        FileDevice::open(&args.backing, options).with_context(|| format!("cannot serve {}", args.backing.display()))?;
    let identity = Identity::new(&args.iqn, args.lun);
    let lu = Arc::new(LogicalUnit::new(Arc::new(device), identity));
    let mut target_options = TargetOptions::new(args.iqn);
    target_options.alias = args.alias;
    target_options.lun = args.lun;
    target_options.auth = TargetAuth {
        chap: credentials(args.chap_user, args.chap_secret)?,
        mutual: credentials(args.mutual_chap_user, args.mutual_chap_secret)?,
    };
    target_options.queue_depth = args.queue_depth.max(1);
    target_options.max_sessions = args.max_sessions;
    target_options.max_connections = args.max_connections.max(1);
    target_options.exclusive = args.exclusive;
    target_options.login_timeout = Duration::from_secs(args.login_timeout);
    target_options.nop_interval = Duration::from_secs(args.nop_interval.max(1));
    target_options.nop_timeout = Duration::from_secs(args.nop_timeout.max(1));
    let target = Arc::new(Target::new(target_options, lu));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    server::serve(listener, target, iscsi_wire::shutdown_signal()).await?;
    Ok(())
}

/// `deploy`: run it, then reboot, exit, or (with `troubleshoot`) open a shell.
fn deploy(runtime: &tokio::runtime::Runtime, args: DeployArgs) -> anyhow::Result<()> {
    let options = DeployOptions {
        cmdline: args.cmdline,
        listen: args.listen,
        done_port: args.done_port,
        done_timeout: Duration::from_secs(args.callback_timeout.max(1)),
        disk_timeout: Duration::from_secs(args.disk_timeout),
        sys_class_net: args.sysfs_root.join("class/net"),
        hardware: HardwareRoot {
            sys: args.sysfs_root,
            dev: args.dev_root,
            udev: args.udev_root,
        },
        vmedia_dir: args.vmedia_dir,
        tftp_port: args.tftp_port,
        chap: args.chap,
        retry: Retry {
            attempts: args.api_attempts.max(1),
            ..Retry::default()
        },
        mount_point: args.mount_point,
        ca_cert: args.ca_cert,
    };
    let result = runtime.block_on(target_agent::deploy::run(&options));
    if let Err(failure) = &result {
        eprintln!("target-agent: deploy failed: {failure}");
        if failure.troubleshoot
            && let Some(shell) = target_agent::deploy::shell()
        {
            eprintln!("target-agent: troubleshoot is set: starting {}", shell.display());
            let _ = std::process::Command::new(shell).status();
        }
    }
    if !args.no_reboot {
        nix::unistd::sync();
        eprintln!("target-agent: rebooting");
        nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT).context("reboot(2)")?;
    }
    result.map_err(anyhow::Error::from)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Deploy(args) => deploy(&runtime, args),
    }
}
