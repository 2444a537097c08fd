//! `conductor-writer serve`: a stand-alone deploy service for ramdisks that
//! speak the legacy Ironic iSCSI protocol.
//!
//! It answers the ramdisk's two callbacks, runs each deploy (the
//! [`crate::deploy`] code, then `done`), walks each node through Ironic's
//! provision states and remembers everything in SQLite, written before it
//! is acted on.
//!
//! ```text
//! wait call-back --pass_deploy_info--> deploying --image written, done--> active
//!       ^                                  |  (local boot: wait call-back
//!       |                                  |   --pass_bootloader_install_info--> active)
//!       +--- PUT .../states/provision      +--> deploy failed (last_error)
//!            (rebuild, active, deleted --> available)
//! ```
//!
//! # Layout
//!
//! - [`nodes`]: the nodes file (TOML).
//! - [`store`]: SQLite: nodes, state transitions, deploys.
//! - [`images`]: one checked local file per image, shared by its deploys.
//! - [`callbacks`]: the ramdisk's callbacks, authenticated by the deploy key.
//! - [`provision`]: the operator's provision requests and their state machine.
//! - [`metrics`]: the counters `GET /metrics` shows.
//! - [`http`]: the HTTP API: Ironic's routes, versions, errors, authentication.
//! - [`client`]: `pxe-config` and `status`, the operator's side.
//! - this file: the engine: callbacks to deploys to states.

pub mod callbacks;
pub mod client;
pub mod http;
pub mod images;
pub mod metrics;
pub mod nodes;
pub mod provision;
pub mod store;

use crate::cli::{Login, open_disk};
use crate::deploy::layout::{self, BootMode, BootOption};
use crate::deploy::mkfs::FsFormat;
use crate::deploy::table::Label;
use crate::deploy::{self as deployer, DeployOptions, DeployReport, ImageType};
use crate::source::OpenOptions;
use crate::url::{IscsiUrl, parse_portal};
use crate::write::WriteOptions;
use iscsi_proto::login::{Credentials, DeployRole};
use nodes::NodeSpec;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{ConfigDriveChange, DeployRow, ProvisionState, Store};
use tracing::{info, warn};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub nodes_file: PathBuf,
    pub listen: SocketAddr,
    pub db: PathBuf,
    pub max_parallel: usize,
    /// A node waiting longer than this for its ramdisk fails.
    pub callback_timeout: Duration,
    /// Where http:// and https:// images are downloaded.
    pub cache_dir: PathBuf,
    pub login: Login,
    pub write: WriteOptions,
    pub sessions: usize,
    /// Who may use the API (the ramdisk callbacks and version documents are public).
    pub auth: http::auth::ApiAuth,
    /// CA certificates for https images (else the built-in roots).
    pub ca_cert: Option<PathBuf>,
    /// Serve the API over TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A deploy's progress, for the read side.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// The shared state of a running service.
#[derive(Debug)]
pub struct Service {
    pub store: Store,
    specs: HashMap<String, NodeSpec>,
    options: ServiceOptions,
    slots: tokio::sync::Semaphore,
    images: images::Images,
    progress: Mutex<HashMap<String, Progress>>,
    /// Nodes whose image is written and that now wait for the boot loader callback.
    bootloader: Mutex<HashMap<String, BootloaderWait>>,
    /// When each running deploy's callback came, by deploy id.
    started: Mutex<HashMap<i64, Instant>>,
    pub metrics: metrics::Metrics,
    /// This machine's name: the host a running deploy locks its node from.
    pub host: String,
}

/// What the second `done` needs.
#[derive(Debug, Clone)]
struct BootloaderWait {
    deploy_id: i64,
    notify: (String, u16),
    report: DeployRow,
}

/// Why a request was refused; the HTTP layer maps each to Ironic's status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("Node {0} could not be found.")]
    UnknownNode(String),
    #[error("{0}")]
    BadRequest(String),
    /// A callback whose key is wrong or missing, as the legacy conductor said it.
    #[error("Deploy key does not match")]
    WrongKey,
    #[error("node {node} is in state {state}, not {expected}")]
    WrongState {
        node: String,
        state: &'static str,
        expected: &'static str,
    },
    /// Ironic's `InvalidStateRequested`.
    #[error(
        "The requested action \"{action}\" can not be performed on node \"{node}\" while it is in state \"{state}\"."
    )]
    InvalidState {
        action: String,
        node: String,
        state: &'static str,
    },
    /// Ironic's `NodeLocked`: a deploy runs.
    #[error("Node {node} is locked by host {host}, please retry after the current operation is completed.")]
    Locked { node: String, host: String },
    /// Not available at the requested API version.
    #[error("Request not acceptable.")]
    NotAcceptable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<store::StoreError> for RequestError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::UnknownNode(node) => RequestError::UnknownNode(node),
            e => RequestError::Internal(e.to_string()),
        }
    }
}

impl Service {
    /// Load the nodes, open the database, recover what a previous run left.
    pub fn open(options: ServiceOptions) -> anyhow::Result<Arc<Self>> {
        let specs = nodes::load(&options.nodes_file)?;
        let store = Store::open(&options.db)?;
        for line in store.sync_nodes(&specs)? {
            warn!("{line}");
        }
        let agent = crate::tls::http_agent(options.ca_cert.as_deref(), Duration::from_secs(60))?;
        let images = images::Images::new(options.cache_dir.clone(), agent);
        Ok(Arc::new(Service {
            store,
            specs: specs.into_iter().map(|s| (s.uuid.clone(), s)).collect(),
            slots: tokio::sync::Semaphore::new(options.max_parallel.max(1)),
            images,
            options,
            progress: Mutex::new(HashMap::new()),
            bootloader: Mutex::new(HashMap::new()),
            started: Mutex::new(HashMap::new()),
            metrics: metrics::Metrics::default(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into()),
        }))
    }

    /// The node's spec; a node id is its UUID or its name.
    pub fn spec(&self, node: &str) -> Result<&NodeSpec, RequestError> {
        let lower = node.to_ascii_lowercase();
        self.specs
            .get(&lower)
            .or_else(|| self.specs.values().find(|s| s.name.as_deref() == Some(node)))
            .ok_or_else(|| RequestError::UnknownNode(node.to_owned()))
    }

    /// The node's current state, from the database.
    fn state(&self, uuid: &str) -> Result<ProvisionState, RequestError> {
        self.store
            .node(uuid)?
            .map(|n| n.provision_state)
            .ok_or_else(|| RequestError::UnknownNode(uuid.to_owned()))
    }

    /// Progress of running deploys.
    #[must_use]
    pub fn progress(&self, uuid: &str) -> Option<Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(uuid)
            .copied()
    }

    fn waiting_for_bootloader(&self, uuid: &str) -> bool {
        self.waits().contains_key(uuid)
    }

    fn deploy_started(&self, deploy_id: i64) {
        self.starts().insert(deploy_id, Instant::now());
    }

    fn starts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.started.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One deploy, start to finish; its failure is its own.
    async fn run_deploy(self: Arc<Self>, spec: NodeSpec, address: String, iqn: String, port: u16, deploy_id: i64) {
        let _slot = self.slots.acquire().await;
        let uuid = spec.uuid.clone();
        let written = self.deploy_node(&spec, &address, &iqn, port).await;
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&uuid);
        if let Err(error) = self.after_write(&spec, &address, deploy_id, written).await {
            warn!(node = %uuid, %error, "deploy failed");
            if let Err(e) = self.conclude(&uuid, deploy_id, DeployRow::default(), Some(error), "deploy failed") {
                warn!(node = %uuid, error = %e, "cannot record the failed deploy");
            }
        }
    }

    /// The image is written: send `done`, and either finish (`active`) or,
    /// for a local boot, wait for the boot loader callback.
    async fn after_write(
        &self,
        spec: &NodeSpec,
        address: &str,
        deploy_id: i64,
        written: Result<(DeployReport, (String, u16)), String>,
    ) -> Result<(), String> {
        let (report, (host, port)) = written?;
        let row = deploy_row(&spec.uuid, address, &report);
        let timeout = self.options.login.timeout;
        if local_boot(spec) {
            let wait = BootloaderWait {
                deploy_id,
                notify: (host.clone(), port),
                report: row,
            };
            self.waits().insert(spec.uuid.clone(), wait);
            self.record(
                &spec.uuid,
                ProvisionState::WaitCallBack,
                None,
                "image written; waiting for the boot loader callback",
            );
            if let Err(e) = crate::cli::notify(&host, port, timeout).await {
                self.waits().remove(&spec.uuid);
                return Err(format!(
                    "the image is written, but done could not be sent to {host}:{port}: {e:#}"
                ));
            }
            return Ok(());
        }
        crate::cli::notify(&host, port, timeout)
            .await
            .map_err(|e| format!("the image is written, but done could not be sent to {host}:{port}: {e:#}"))?;
        self.conclude(&spec.uuid, deploy_id, row, None, "done sent")
            .map_err(|e| e.to_string())
    }

    fn waits(&self) -> std::sync::MutexGuard<'_, HashMap<String, BootloaderWait>> {
        self.bootloader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Log in, write, log out. The address to send `done` to comes back.
    async fn deploy_node(
        &self,
        spec: &NodeSpec,
        address: &str,
        iqn: &str,
        port: u16,
    ) -> Result<(DeployReport, (String, u16)), String> {
        let image = self.images.get(&spec.image, spec.image_checksum.as_deref()).await?;
        let mut options = deploy_options(spec, image)?;
        // A config drive from a provision request wins over the nodes file's;
        // one given inline goes through a file that lives as long as the deploy.
        let _drive_file = match self.store.configdrive(&spec.uuid).map_err(|e| e.to_string())? {
            Some(url) if url.contains("://") => {
                options.configdrive = Some(url);
                None
            }
            Some(drive) => {
                let dir = self.options.cache_dir.clone();
                let file = tokio::task::spawn_blocking(move || spill(&dir, drive.as_bytes()))
                    .await
                    .map_err(|e| e.to_string())??;
                options.configdrive = Some(file.path().display().to_string());
                Some(file)
            }
            None => None,
        };
        let (host, port) = match &spec.portal {
            Some(portal) => parse_portal(portal, 3260).map_err(|e| format!("bad portal {portal}: {e}"))?,
            None => (address.to_owned(), port),
        };
        let url = IscsiUrl {
            host: host.clone(),
            port,
            target: iqn.to_owned(),
            lun: spec.lun,
            user: None,
        };
        let mut login = self.options.login.clone();
        if spec.chap {
            login.chap = Some(Credentials::for_deployment(
                &spec.uuid,
                &spec.deploy_key,
                DeployRole::Initiator,
            ));
            login.mutual = Some(Credentials::for_deployment(
                &spec.uuid,
                &spec.deploy_key,
                DeployRole::Target,
            ));
        }
        info!(node = %spec.uuid, %url, "deploying");
        let disk = open_disk(&url, &login, self.options.sessions)
            .await
            .map_err(|e| format!("cannot reach the node's disk at {url}: {e:#}"))?;
        let uuid = spec.uuid.clone();
        let result = deployer::deploy(&disk, &options, |p| {
            self.progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    uuid.clone(),
                    Progress {
                        done_bytes: p.done_bytes,
                        total_bytes: p.total_bytes,
                    },
                );
        })
        .await;
        crate::cli::logout(disk).await;
        let report = result.map_err(|e| format!("{e:#}"))?;
        info!(node = %spec.uuid, seconds = report.seconds, mib_per_second = report.mib_per_second, "image written");
        Ok((report, (host, spec.notify_port)))
    }

    /// End deploy `deploy_id`: its row takes the outcome (`active`, or
    /// `deploy failed` with `error`), then the node the same state.
    fn conclude(
        &self,
        uuid: &str,
        deploy_id: i64,
        mut row: DeployRow,
        error: Option<String>,
        detail: &str,
    ) -> Result<(), store::StoreError> {
        let state = if error.is_some() {
            ProvisionState::DeployFailed
        } else {
            ProvisionState::Active
        };
        row.outcome = Some(state.as_str().into());
        row.error.clone_from(&error);
        self.count_deploy(deploy_id, &row);
        // The node's state is recorded even if its deploy row cannot be.
        let finished = self.store.finish_deploy(deploy_id, &row);
        let moved = self.store.transition(uuid, state, error.as_deref(), detail);
        finished.and(moved)
    }

    /// End deploy `deploy_id` as failed with `error`, leaving its node's
    /// state to the caller.
    fn close_deploy(&self, deploy_id: i64, mut row: DeployRow, error: &str) {
        row.outcome = Some(ProvisionState::DeployFailed.as_str().into());
        row.error = Some(error.to_owned());
        self.count_deploy(deploy_id, &row);
        if let Err(e) = self.store.finish_deploy(deploy_id, &row) {
            warn!(deploy = deploy_id, error = %e, "cannot record the end of a deploy");
        }
    }

    fn count_deploy(&self, deploy_id: i64, row: &DeployRow) {
        let seconds = self
            .starts()
            .remove(&deploy_id)
            .map_or(0.0, |start| start.elapsed().as_secs_f64());
        let result = if row.error.is_some() {
            metrics::DeployResult::Failed
        } else {
            metrics::DeployResult::Succeeded
        };
        self.metrics
            .deploy_finished(result, seconds, row.bytes_sent, row.bytes_zeroed);
    }

    fn record(&self, uuid: &str, to: ProvisionState, error: Option<&str>, detail: &str) {
        if let Err(e) = self.store.transition(uuid, to, error, detail) {
            warn!(node = %uuid, error = %e, "cannot record a state change");
        }
    }

    /// Fail nodes that waited for their ramdisk longer than the callback timeout.
    pub fn expire(&self, now: f64) {
        let Ok(nodes) = self.store.nodes() else { return };
        let limit = self.options.callback_timeout.as_secs_f64();
        for node in nodes {
            if node.provision_state == ProvisionState::WaitCallBack
                && now - node.state_since > limit
                && self.specs.contains_key(&node.uuid)
            {
                let error = format!(
                    "Timeout reached while waiting for callback for node {} ({} s)",
                    node.uuid,
                    self.options.callback_timeout.as_secs()
                );
                warn!(node = %node.uuid, "{error}");
                let wait = self.waits().remove(&node.uuid);
                let recorded = match wait {
                    // The image is written: its deploy row ends with the node.
                    Some(wait) => {
                        self.conclude(&node.uuid, wait.deploy_id, wait.report, Some(error), "callback timeout")
                    }
                    // Unless a callback just came: the state is checked as it changes.
                    None => match self.store.transition_if(
                        &node.uuid,
                        &[ProvisionState::WaitCallBack],
                        ProvisionState::DeployFailed,
                        Some(&error),
                        "callback timeout",
                        ConfigDriveChange::Keep,
                    ) {
                        Err(store::StoreError::NotInState { .. }) => Ok(()),
                        other => other.map(drop),
                    },
                };
                if let Err(e) = recorded {
                    warn!(node = %node.uuid, error = %e, "cannot record the timeout");
                }
            }
        }
    }
}

/// `bytes` in a new file under `dir`, removed when the handle is dropped.
fn spill(dir: &std::path::Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, String> {
    use std::io::Write as _;
    let failed = |e: std::io::Error| format!("cannot write the config drive under {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut file = tempfile::Builder::new()
        .prefix("configdrive-")
        .tempfile_in(dir)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    Ok(file)
}

fn local_boot(spec: &NodeSpec) -> bool {
    spec.boot_option == "local" && spec.image_type == "partition"
}

fn deploy_row(uuid: &str, address: &str, report: &DeployReport) -> DeployRow {
    DeployRow {
        uuid: uuid.to_owned(),
        address: Some(address.to_owned()),
        bytes_sent: report.bytes_sent,
        bytes_zeroed: report.bytes_zeroed,
        image_bytes: report.image_bytes,
        seconds: report.seconds,
        mib_per_second: report.mib_per_second,
        root_uuid: report.root_uuid.clone(),
        disk_identifier: Some(report.disk_identifier.clone()),
        ..DeployRow::default()
    }
}

/// The `deploy` options a node's spec asks for.
fn deploy_options(spec: &NodeSpec, image: PathBuf) -> Result<DeployOptions, String> {
    fn pick<T: clap::ValueEnum>(uuid: &str, what: &str, value: &str) -> Result<T, String> {
        T::from_str(value, true).map_err(|_| format!("node {uuid}: bad {what} {value:?}"))
    }
    let uuid = spec.uuid.as_str();
    let image_type: ImageType = pick(uuid, "image_type", &spec.image_type)?;
    let boot_mode: BootMode = pick(uuid, "boot_mode", &spec.boot_mode)?;
    let boot_option: BootOption = pick(uuid, "boot_option", &spec.boot_option)?;
    let ephemeral_format: FsFormat = pick(uuid, "ephemeral_format", &spec.ephemeral_format)?;
    let bad = |what: &str, value: &str| format!("node {uuid}: bad {what} {value:?}");
    let label = match spec.disk_label.as_deref() {
        None => None,
        Some("gpt") => Some(Label::Gpt),
        Some("msdos") => Some(Label::Msdos),
        Some(other) => return Err(bad("disk_label", other)),
    };
    Ok(DeployOptions {
        image,
        image_type,
        open: OpenOptions {
            // Images come from the operator's file, but a qcow2 naming a
            // backing file could pull any local file onto a node: refuse.
            backing_files: false,
            ..OpenOptions::default()
        },
        // Checked once for every node by the image cache.
        checksum: None,
        partitions: layout::Request {
            boot_mode,
            boot_option,
            label,
            efi_mb: spec.efi_mb,
            ephemeral_mb: spec.ephemeral_mb,
            swap_mb: spec.swap_mb,
            configdrive_mb: 0,
            root_mb: spec.root_mb,
        },
        ephemeral_format,
        preserve_ephemeral: spec.preserve_ephemeral,
        configdrive: spec.configdrive.clone(),
        write: WriteOptions::default(),
        fetch_timeout: Duration::from_secs(60),
    })
}

/// Run the service until `shutdown` completes.
pub async fn run(options: ServiceOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listen = options.listen;
    // Before anything else: an open API on the network is refused, not started.
    let verifier = http::auth::start(&options.auth, listen)?;
    let service = Service::open(options)?;
    let watchdog = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            watchdog.expire(now);
        }
    });
    let tls = service.options.tls.clone();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let app = http::router(service, verifier).into_make_service_with_connect_info::<http::Caller>();
    if let Some(config) = tls {
        info!(%listen, "serving the deploy API over TLS");
        let listener = crate::tls::TlsListener::new(listener, config)?;
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    } else {
        info!(%listen, "serving the deploy API");
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    }
    Ok(())
}
