//! `target-agent deploy`: what the legacy Ironic bash deploy ramdisk did,
//! driven by the same kernel parameters and talking to the same API.
//!
//! 1. Read the parameters (`/proc/cmdline`, or `parameters.txt` on the
//!    virtual floppy with `boot_method=vmedia`).
//! 2. Find the install disk (root device hints, or the `disk` list),
//!    waiting for it to appear.
//! 3. Serve it as LUN 1 under `iscsi_target_iqn` (CHAP derived from the
//!    deployment id and key when `iscsi_chap=1`).
//! 4. Call back `pass_deploy_info`, then wait for `done` on TCP 10000, with
//!    a timeout instead of forever.
//! 5. Stop the target cleanly; with `boot_option=local`, install the boot
//!    loader, call back `pass_bootloader_install_info`, wait for `done`.
//!
//! A failure before the callback is reported to the API in `error` when the
//! API is known, as the legacy script did.
//!
//! # Layout
//!
//! - [`params`]: the kernel command line and `parameters.txt` (the deploy's
//!   own parameters, the hints among them, are read by `deploy_contract`).
//! - [`disks`]: block devices as sysfs and udev describe them; waiting for one.
//! - [`net`]: the address the node reports.
//! - [`tftp`]: the legacy auth token, fetched from the boot server.
//! - [`api`]: the two vendor-passthru callbacks (bodies from `deploy_contract`), retried.
//! - [`bootloader`]: GRUB installed into the deployed root, as the legacy script did.

pub mod api;
pub mod bootloader;
pub mod disks;
pub mod net;
pub mod params;
pub mod tftp;

use crate::backend::{BlockDevice, FileDevice, FileOptions};
use crate::lu::{Identity, LogicalUnit};
use crate::server;
use crate::target::{Target, TargetOptions};
use api::{Api, Retry, Trust};
use deploy_contract::callback::{self, BootloaderInfo, DeployInfo};
use deploy_contract::chap::{DeployRole, for_deployment};
use deploy_contract::kernel::BootOption;
use disks::HardwareRoot;
use iscsi_proto::login::TargetAuth;
use params::Params;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// How to run a deploy.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Where the kernel command line is read from.
    pub cmdline: PathBuf,
    /// The iSCSI portal; its host is also where `done` is listened for.
    pub listen: SocketAddr,
    pub done_port: u16,
    /// How long to wait for each `done` (the conductor's callback timeout).
    pub done_timeout: Duration,
    /// How long to wait for the install disk to appear.
    pub disk_timeout: Duration,
    /// Where block devices and network interfaces are described.
    pub hardware: HardwareRoot,
    /// `/sys/class/net`.
    pub sys_class_net: PathBuf,
    /// The virtual floppy's contents with `boot_method=vmedia` (None: mount
    /// the floppy labelled `ir-vfd-dev` at `/vfloppy`).
    pub vmedia_dir: Option<PathBuf>,
    /// The boot server's TFTP port (69).
    pub tftp_port: u16,
    /// Require CHAP even without `iscsi_chap=1`.
    pub chap: bool,
    /// Back-off for the API callbacks.
    pub retry: Retry,
    /// Where the deployed root file system is mounted for a local boot.
    pub mount_point: PathBuf,
    /// The CA certificates (PEM) an `https` Ironic API is checked against;
    /// the built-in roots when the file does not exist.
    pub ca_cert: PathBuf,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            cmdline: "/proc/cmdline".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 3260)),
            done_port: deploy_contract::done::PORT,
            done_timeout: Duration::from_secs(1800),
            disk_timeout: Duration::from_secs(60),
            hardware: HardwareRoot::default(),
            sys_class_net: "/sys/class/net".into(),
            vmedia_dir: None,
            tftp_port: 69,
            chap: false,
            retry: Retry::default(),
            mount_point: "/mnt/rootfs".into(),
            ca_cert: "/etc/deploy-ca.pem".into(),
        }
    }
}

/// A deploy that did not finish.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeployFailure {
    pub message: String,
    /// `troubleshoot` was on the kernel line: a shell instead of a reboot.
    pub troubleshoot: bool,
}

/// What the ramdisk learnt before it could serve the disk.
struct Context {
    params: Params,
    api: Option<Api>,
    address: Option<IpAddr>,
}

impl Context {
    /// Fail with `message`, without telling the API (after the callback,
    /// or when the API itself refused).
    fn stop(&self, message: String) -> DeployFailure {
        DeployFailure {
            message,
            troubleshoot: self.params.troubleshoot,
        }
    }

    /// Tell the API about `error` (if it is known), and fail with it.
    async fn fail(&self, error: String) -> DeployFailure {
        warn!(%error, "deploy failed");
        if let (Some(api), Some(node)) = (&self.api, &self.params.deploy.deployment_id) {
            let info = DeployInfo {
                address: self.address.map(|a| a.to_string()).unwrap_or_default(),
                key: self.params.deploy.deployment_key.clone().unwrap_or_default(),
                iqn: self.params.deploy.iqn.clone().unwrap_or_default(),
                error: error.clone(),
                port: None,
            };
            let (api, node) = (api.clone(), node.clone());
            match tokio::task::spawn_blocking(move || api.pass_deploy_info(&node, &info)).await {
                Ok(Ok(_)) => info!("the error was reported to the API"),
                Ok(Err(e)) => warn!(error = %e, "could not report the error to the API"),
                Err(e) => warn!(error = %e, "could not report the error to the API"),
            }
        }
        self.stop(error)
    }
}

/// Run a whole deploy. Ok once the conductor said `done` (twice for a local
/// boot) and the target is stopped.
pub async fn run(options: &DeployOptions) -> Result<(), DeployFailure> {
    let context = prepare(options).await?;
    let params = &context.params;
    let problems = problems(params);
    if !problems.is_empty() {
        return Err(context.fail(problems.join("; ")).await);
    }
    let Some(address) = context.address else {
        return Err(context.fail("the node has no address to report".into()).await);
    };
    let (id, key, iqn) = (
        params.deploy.deployment_id.clone().unwrap_or_default(),
        params.deploy.deployment_key.clone().unwrap_or_default(),
        params.deploy.iqn.clone().unwrap_or_default(),
    );

    let disk = {
        let (hardware, hints, names, timeout) = (
            options.hardware.clone(),
            params.deploy.root_device.clone(),
            params.disks.clone(),
            options.disk_timeout,
        );
        let found = tokio::task::spawn_blocking(move || {
            disks::wait_for_disk(&hardware, hints.as_ref(), &names, timeout, Duration::from_secs(1))
        })
        .await;
        match found {
            Ok(Ok(disk)) => disk,
            Ok(Err(e)) => return Err(context.fail(format!("could not find the disk to use: {e}")).await),
            Err(e) => return Err(context.fail(format!("internal error: {e}")).await),
        }
    };
    info!(disk = %disk.display(), "install disk");

    let device = match FileDevice::open(&disk, FileOptions::default()) {
        Ok(device) => Arc::new(device),
        Err(e) => return Err(context.fail(format!("cannot open {}: {e}", disk.display())).await),
    };
    let chap = options.chap || params.deploy.chap;
    let target = Arc::new(Target::new(
        target_options(&iqn, chap.then_some((id.as_str(), key.as_str()))),
        Arc::new(LogicalUnit::new(device.clone(), Identity::new(&iqn, 1))),
    ));
    let portal = match TcpListener::bind(options.listen).await {
        Ok(l) => l,
        Err(e) => return Err(context.fail(format!("cannot listen on {}: {e}", options.listen)).await),
    };
    let done_addr = SocketAddr::new(options.listen.ip(), options.done_port);
    let done = match TcpListener::bind(done_addr).await {
        Ok(l) => l,
        Err(e) => {
            return Err(context
                .fail(format!("cannot listen for done on {done_addr}: {e}"))
                .await);
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(portal, target, async {
        let _ = stopped.await;
    }));
    info!(%iqn, listen = %options.listen, chap, "serving the disk");

    let api = context.api.clone();
    let info = DeployInfo {
        address: address.to_string(),
        key: key.clone(),
        iqn: iqn.clone(),
        error: String::new(),
        port: None,
    };
    if let Some(api) = api.clone() {
        let node = id.clone();
        match tokio::task::spawn_blocking(move || api.pass_deploy_info(&node, &info)).await {
            Ok(Ok(status)) => info!(status, "pass_deploy_info accepted"),
            Ok(Err(e)) => {
                stop_target(stop, server, device.as_ref()).await;
                return Err(context.stop(format!("the API refused pass_deploy_info: {e}")));
            }
            Err(e) => return Err(context.fail(format!("internal error: {e}")).await),
        }
    }

    let waited = wait_for_done(&done, options.done_timeout).await;
    stop_target(stop, server, device.as_ref()).await;
    if let Err(e) = waited {
        return Err(context.stop(e));
    }

    if params.deploy.boot_option == BootOption::Local {
        let request = bootloader::Request {
            disk: disk.clone(),
            boot_mode: params.deploy.boot_mode,
            mount_point: options.mount_point.clone(),
            sys_block: options.hardware.sys.join("block"),
        };
        let result = tokio::task::spawn_blocking(move || bootloader::install(&request))
            .await
            .unwrap_or_else(|e| Err(format!("internal error: {e}")));
        let (status, error) = match &result {
            Ok(()) => (callback::SUCCEEDED, String::new()),
            Err(e) => (callback::FAILED, e.clone()),
        };
        info!(status, %error, "boot loader");
        if let Some(api) = api {
            let info = BootloaderInfo {
                address: address.to_string(),
                status: status.into(),
                key,
                error,
            };
            let node = id.clone();
            match tokio::task::spawn_blocking(move || api.pass_bootloader_install_info(&node, &info)).await {
                Ok(Ok(status)) => info!(status, "pass_bootloader_install_info accepted"),
                Ok(Err(e)) => {
                    return Err(context.stop(format!("the API refused pass_bootloader_install_info: {e}")));
                }
                Err(e) => {
                    return Err(context.stop(format!("internal error: {e}")));
                }
            }
        }
        wait_for_done(&done, options.done_timeout)
            .await
            .map_err(|message| context.stop(message))?;
        if let Err(e) = result {
            return Err(context.stop(format!("installing the boot loader failed: {e}")));
        }
    }
    info!("deploy finished");
    Ok(())
}

/// Everything the ramdisk can learn before it looks for the disk: the
/// parameters, the API with its token, the node's address.
async fn prepare(options: &DeployOptions) -> Result<Context, DeployFailure> {
    let cmdline = tokio::fs::read_to_string(&options.cmdline)
        .await
        .map_err(|e| DeployFailure {
            message: format!("cannot read the kernel command line {}: {e}", options.cmdline.display()),
            troubleshoot: false,
        })?;
    let mut params = Params::parse(&cmdline);
    let mut vmedia_token = None;
    if params.vmedia {
        match vmedia_dir(options) {
            Ok(dir) => {
                match std::fs::read_to_string(dir.join("parameters.txt")) {
                    Ok(text) => params.merge_vmedia(&text),
                    Err(e) => params.problems.push(format!(
                        "boot_method=vmedia but {}: {e}",
                        dir.join("parameters.txt").display()
                    )),
                }
                vmedia_token = std::fs::read_to_string(dir.join("token")).ok();
            }
            Err(e) => params.problems.push(e),
        }
    }
    let token = match vmedia_token {
        Some(token) => Some(token),
        None if params.vmedia => None,
        None => fetch_token(&params, options.tftp_port).await,
    };
    let trust = if params.insecure {
        Ok(Trust::Insecure)
    } else {
        Trust::from_file(&options.ca_cert)
    };
    let api = params.deploy.api_url.as_deref().and_then(|url| {
        trust
            .and_then(|trust| Api::new(url, token, Duration::from_secs(30), options.retry.clone(), trust))
            .map_err(|e| warn!(error = %e, "the API cannot be called"))
            .ok()
    });
    let (client, bootif, net) = (
        params.ip.as_ref().and_then(|ip| ip.client),
        params.bootif.clone(),
        options.sys_class_net.clone(),
    );
    let address = match net::node_address(client, bootif.as_deref(), &net) {
        Ok(a) => Some(a),
        Err(e) => {
            params.problems.push(format!("cannot tell the node's address: {e}"));
            None
        }
    };
    Ok(Context { params, api, address })
}

/// Everything wrong with the parameters, in one list.
fn problems(params: &Params) -> Vec<String> {
    let mut all: Vec<String> = params
        .missing()
        .iter()
        .map(|name| format!("the kernel parameter {name} is missing"))
        .collect();
    all.extend(params.problems.iter().cloned());
    all
}

/// `boot_method=vmedia`: the virtual floppy's contents.
fn vmedia_dir(options: &DeployOptions) -> Result<PathBuf, String> {
    if let Some(dir) = &options.vmedia_dir {
        return Ok(dir.clone());
    }
    let dir = PathBuf::from("/vfloppy");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let status = std::process::Command::new("mount")
        .args(["/dev/disk/by-label/ir-vfd-dev"])
        .arg(&dir)
        .status()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !status.success() {
        return Err("boot_method=vmedia but the virtual floppy (label ir-vfd-dev) cannot be mounted".into());
    }
    Ok(dir)
}

/// Juno/Kilo conductors left `token-<deployment_id>` on the boot server;
/// later ones made the callbacks public. Without one, go on.
async fn fetch_token(params: &Params, port: u16) -> Option<String> {
    let id = params.deploy.deployment_id.clone()?;
    let server: IpAddr = params
        .ip
        .as_ref()
        .and_then(|ip| ip.boot_server)
        .or_else(|| params.boot_server.as_deref().and_then(|s| s.parse().ok()))?;
    let file = format!("token-{id}");
    let addr = SocketAddr::new(server, port);
    let fetched = tokio::task::spawn_blocking(move || tftp::fetch(addr, &file, Duration::from_secs(5), 64 << 10)).await;
    match fetched {
        Ok(Ok(token)) => {
            info!(%addr, "fetched the auth token");
            Some(String::from_utf8_lossy(&token).trim().to_owned())
        }
        Ok(Err(e)) => {
            info!(%addr, error = %e, "no auth token from the boot server; going on without");
            None
        }
        Err(_) => None,
    }
}

fn target_options(iqn: &str, chap: Option<(&str, &str)>) -> TargetOptions {
    let mut options = TargetOptions::new(iqn.to_owned());
    options.lun = 1;
    // The disk is the conductor's that logged in first, until done.
    options.exclusive = true;
    if let Some((id, key)) = chap {
        options.auth = TargetAuth {
            chap: Some(for_deployment(id, key, DeployRole::Initiator)),
            mutual: Some(for_deployment(id, key, DeployRole::Target)),
        };
    }
    options
}

/// Accept one connection on `done` and read what it says (the legacy
/// ramdisk ignored the content; so do we, but it is logged).
async fn wait_for_done(done: &TcpListener, timeout: Duration) -> Result<(), String> {
    let port = done.local_addr().map(|a| a.port()).unwrap_or_default();
    info!(port, "waiting for done");
    let (mut stream, peer) = match tokio::time::timeout(timeout, done.accept()).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => return Err(format!("waiting for done on port {port}: {e}")),
        Err(_) => {
            return Err(format!(
                "the conductor did not send done on port {port} within {} s; giving up",
                timeout.as_secs()
            ));
        }
    };
    let mut said = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut said))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    info!(%peer, said = %String::from_utf8_lossy(&said[..n]).trim(), "done");
    Ok(())
}

/// Stop serving: in-flight commands finish, sessions close, the disk is flushed.
async fn stop_target(
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    device: &dyn BlockDevice,
) {
    let _ = stop.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "the target stopped with an error"),
        Err(e) => warn!(error = %e, "the target task failed"),
    }
    if let Err(e) = device.flush() {
        warn!(error = %e, "flushing the disk failed");
    }
    info!("target stopped");
}

/// Whether `path` names an executable shell (for `troubleshoot`).
#[must_use]
pub fn shell() -> Option<&'static Path> {
    ["/bin/sh", "/bin/bash", "/bin/ash"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
}
