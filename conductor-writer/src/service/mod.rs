//! `conductor-writer serve`: a stand-alone deploy service for ramdisks that
//! speak the legacy Ironic iSCSI protocol.
//!
//! It answers the ramdisk's two callbacks, runs each deploy (the
//! [`crate::deploy`] code, then `done`), walks each node through Ironic's
//! provision states and remembers everything in a database (SQLite, or
//! PostgreSQL shared by several instances), written before it is acted on.
//!
//! ```text
//! wait call-back --pass_deploy_info--> deploying --image written, done--> active
//!       ^                                  |  (local boot: wait call-back
//!       |                                  |   --pass_bootloader_install_info--> deploying --done--> active)
//!       +--- PUT .../states/provision      +--> deploy failed (last_error)
//!            (rebuild, active, deleted --> available)
//! ```
//!
//! Any instance answers any callback; the work is recorded with the node
//! and done by one instance of the node's conductor group, which claims it
//! in the database and renews its claim while it works. An instance that
//! dies leaves claims that run out; another instance (or the same one,
//! restarted) takes them over and does the step again from the start (see
//! [`store::claims`] and [`worker`]).
//!
//! # Layout
//!
//! - [`nodes`]: the nodes file (TOML).
//! - [`store`]: the database: nodes, state transitions, deploys, claims, instances.
//! - [`images`]: one checked local file per image, shared by its deploys.
//! - [`callbacks`]: the ramdisk's callbacks, authenticated by the deploy key.
//! - [`provision`]: the operator's provision requests and their state machine.
//! - [`worker`]: claiming work, keeping claims, running the deploy steps.
//! - [`metrics`]: the counters `GET /metrics` shows.
//! - [`http`]: the HTTP API: Ironic's routes, versions, errors, authentication.
//! - [`client`]: `pxe-config` and `status`, the operator's side.
//! - this file: the service's state, start-up and shutdown.

pub mod callbacks;
pub mod client;
pub mod http;
pub mod images;
pub mod metrics;
pub mod nodes;
pub mod provision;
pub mod store;
pub mod worker;

use crate::connect::Login;
use crate::write::WriteOptions;
use nodes::NodeSpec;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use store::{Conductor, Location, NodeRow, Registered, Store};
use tracing::{info, warn};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub nodes_file: PathBuf,
    pub listen: SocketAddr,
    pub db: Location,
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
    /// This instance's name, the same across its restarts.
    pub conductor: String,
    /// The conductor group whose nodes this instance deploys.
    pub conductor_group: String,
    /// How long a claim on a node lasts unless renewed (every third of it).
    pub lease: Duration,
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
    options: ServiceOptions,
    /// One permit per deploy step this instance may run at once.
    slots: Arc<tokio::sync::Semaphore>,
    images: images::Images,
    /// Live progress of the steps running here (others' comes from the database).
    progress: Mutex<HashMap<String, Progress>>,
    pub metrics: metrics::Metrics,
    /// This instance.
    pub me: Conductor,
    /// Wakes the claim loop: work was recorded or a slot freed.
    wake: tokio::sync::Notify,
    /// Becomes true when the service stops: running steps give their claims up.
    stopping: tokio::sync::watch::Sender<bool>,
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

/// This machine's name.
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Service {
    /// Load the nodes, open the database, put this nodes file in it.
    pub async fn open(options: ServiceOptions) -> anyhow::Result<Arc<Self>> {
        let specs = nodes::load(&options.nodes_file)?;
        let store = Store::open(&options.db).await?;
        let me = Conductor {
            name: options.conductor.clone(),
            group: options.conductor_group.clone(),
            hostname: hostname(),
            incarnation: uuid::Uuid::new_v4().to_string(),
        };
        for line in store.sync_nodes(&specs, &me.name).await? {
            warn!("{line}");
        }
        let agent = crate::tls::http_agent(options.ca_cert.as_deref(), Duration::from_secs(60))?;
        let images = images::Images::new(options.cache_dir.clone(), agent);
        Ok(Arc::new(Service {
            store,
            slots: Arc::new(tokio::sync::Semaphore::new(options.max_parallel.max(1))),
            images,
            options,
            progress: Mutex::new(HashMap::new()),
            metrics: metrics::Metrics::default(),
            me,
            wake: tokio::sync::Notify::new(),
            stopping: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// The node called `node` (UUID or name) that is in the nodes file, with its spec.
    pub async fn find(&self, node: &str) -> Result<(NodeRow, NodeSpec), RequestError> {
        self.store
            .find(node)
            .await?
            .ok_or_else(|| RequestError::UnknownNode(node.to_owned()))
    }

    /// Progress of a running step: live if it runs here, else as its holder last reported it.
    #[must_use]
    pub fn progress(&self, row: &NodeRow) -> Option<Progress> {
        let local = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&row.uuid)
            .copied();
        local.or_else(|| {
            row.progress
                .filter(|_| row.provision_state == store::ProvisionState::Deploying)
                .map(|(done_bytes, total_bytes)| Progress {
                    done_bytes,
                    total_bytes,
                })
        })
    }

    fn set_progress(&self, uuid: &str, progress: Option<Progress>) {
        let mut map = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        match progress {
            Some(p) => map.insert(uuid.to_owned(), p),
            None => map.remove(uuid),
        };
    }

    /// The lease a claim gets, and how often it is renewed and work is looked for.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.options.lease
    }

    fn tick(&self) -> Duration {
        (self.options.lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }

    /// Register this instance under its name; a name another live process
    /// uses is waited for (the previous run of a restarted instance, whose
    /// heartbeat stops) or refused (a second process with the same name,
    /// whose heartbeat goes on).
    async fn register(&self) -> anyhow::Result<()> {
        let mut seen: Option<f64> = None;
        loop {
            match self.store.register(&self.me, self.options.lease).await? {
                Registered::Yes => return Ok(()),
                Registered::Busy { heartbeat_at } => {
                    if seen.is_some_and(|before| before != heartbeat_at) {
                        anyhow::bail!(
                            "another conductor-writer serve named {:?} is running on this database (its \
                             heartbeat goes on); give each instance its own --conductor",
                            self.me.name
                        );
                    }
                    if seen.is_none() {
                        warn!(
                            conductor = %self.me.name,
                            "this name was heard from {:.1} s ago: waiting up to {} s for that run to time out \
                             (the run before a restart), or to show it is alive (then this one stops)",
                            (store::db::local_now() - heartbeat_at).max(0.0),
                            self.options.lease.as_secs()
                        );
                    }
                    seen = Some(heartbeat_at);
                    tokio::time::sleep(self.tick()).await;
                }
            }
        }
    }
}

/// Run the service until `shutdown` completes.
pub async fn run(options: ServiceOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listen = options.listen;
    // Before anything else: an open API on the network is refused, not started.
    let verifier = http::auth::start(&options.auth, listen)?;
    let service = Service::open(options).await?;
    service.register().await?;
    info!(
        conductor = %service.me.name,
        group = %service.me.group,
        database = %service.options.db,
        lease_seconds = service.options.lease.as_secs_f64(),
        "registered"
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let (fatal_tx, fatal) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let housekeeping = tokio::spawn(worker::housekeeping(service.clone(), fatal_tx));
    let app = http::router(service.clone(), verifier).into_make_service_with_connect_info::<http::Caller>();
    let stop = async move {
        tokio::select! {
            () = shutdown => None,
            error = fatal => error.ok(),
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let graceful = async move {
        let _ = stop_tx.send(stop.await);
    };
    if let Some(config) = service.options.tls.clone() {
        info!(%listen, "serving the deploy API over TLS");
        let listener = crate::tls::TlsListener::new(listener, config)?;
        axum::serve(listener, app).with_graceful_shutdown(graceful).await?;
    } else {
        info!(%listen, "serving the deploy API");
        axum::serve(listener, app).with_graceful_shutdown(graceful).await?;
    }
    let error = stop_rx.await.ok().flatten();
    housekeeping.abort();
    service.stop().await;
    error.map_or(Ok(()), Err)
}

impl Service {
    /// Stop: running steps give their claims up (another instance takes them
    /// at once), and this instance goes offline.
    async fn stop(&self) {
        self.stopping.send_replace(true);
        let all = u32::try_from(self.options.max_parallel.max(1)).unwrap_or(u32::MAX);
        if tokio::time::timeout(Duration::from_secs(10), self.slots.acquire_many(all))
            .await
            .is_err()
        {
            warn!("running deploy steps did not stop within 10 s");
        }
        if let Err(e) = self.store.unregister(&self.me).await {
            warn!(error = %e, "cannot record that this instance stopped");
        }
        info!(conductor = %self.me.name, "stopped");
    }
}
