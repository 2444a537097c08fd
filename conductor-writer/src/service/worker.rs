//! The instance's work: claiming what the database says is to do, keeping
//! each claim while its step runs, and running the steps (write a node's
//! disk and send `done`; send the second `done` after the boot loader).
//!
//! A step runs against its claim's lease: renewed every third of the lease;
//! if the claim is taken (it ran out) or cannot be renewed for two thirds of
//! the lease, the step is dropped at once, its iSCSI sessions with it, a
//! third of the lease before another instance may take the node, and
//! nothing more is recorded. A step that ends records its outcome only
//! while its claim is still this one.
//!
//! The housekeeping loop beats this instance's heart, fails nodes that
//! waited past the callback timeout, and claims work while slots are free:
//! nodes whose callback went to an instance of another conductor group, and
//! nodes whose holder stopped (taken over, their step done again from the
//! start).

use super::nodes::NodeSpec;
use super::store::{Claim, DeployRow, Finish, Work};
use super::{Progress, Service, metrics};
use crate::connect::{self, open_disk};
use crate::deploy::{self as deployer, DeployOptions, DeployReport};
use crate::initiator::SessionError;
use crate::source::OpenOptions;
use crate::url::{IscsiUrl, parse_portal};
use iscsi_proto::login::LoginError;
use iscsi_proto::pdu::LoginStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

/// How long a deploy keeps trying to log in while the node's target still
/// serves another initiator (the instance it took the node from, whose
/// connection the target has not dropped yet: its NOP-In pings do that).
const IN_USE_WAIT: Duration = Duration::from_secs(60);

/// What a step achieved.
#[derive(Debug)]
enum Done {
    /// `done` sent: the node is deployed.
    Active(Option<DeployRow>, &'static str),
    /// The image is written; `done` goes to this address once the node
    /// waits for its boot loader callback.
    AwaitBootLoader(DeployRow, (String, u16)),
}

/// Beat, expire, claim: until the process stops or the name is taken.
pub(super) async fn housekeeping(service: Arc<Service>, fatal: tokio::sync::oneshot::Sender<anyhow::Error>) {
    let mut tick = tokio::time::interval(service.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let beat = tokio::select! {
            _ = tick.tick() => true,
            () = service.wake.notified() => false,
        };
        if beat {
            match service.store.heartbeat(&service.me).await {
                Ok(true) => {}
                Ok(false) => {
                    let _ = fatal.send(anyhow::anyhow!(
                        "another process registered as conductor {:?} on this database; this one stops",
                        service.me.name
                    ));
                    return;
                }
                Err(e) => warn!(error = %e, "cannot record this instance's heartbeat"),
            }
            service.expire().await;
        }
        service.claim_work().await;
    }
}

impl Service {
    /// A free slot, if this instance may take work of `group` now.
    pub(super) fn slot_for(&self, group: &str) -> Option<OwnedSemaphorePermit> {
        if group != self.me.group || *self.stopping.borrow() {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Claim work while slots are free.
    async fn claim_work(self: &Arc<Self>) {
        while let Some(slot) = self.slot_for(&self.me.group) {
            match self.store.claim_next(&self.me, self.options.lease).await {
                Ok(Some(claim)) => self.start(claim, slot),
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "cannot look for work in the database");
                    return;
                }
            }
        }
    }

    /// Run `claim`'s step in its own task, holding `slot`.
    pub(super) fn start(self: &Arc<Self>, claim: Claim, slot: OwnedSemaphorePermit) {
        let service = self.clone();
        tokio::spawn(async move {
            service.run_claim(claim).await;
            drop(slot);
            service.wake.notify_one();
        });
    }

    async fn run_claim(self: &Arc<Self>, claim: Claim) {
        let step = match &claim.work {
            Work::Write { .. } => "write",
            Work::BootLoaderDone => "done after the boot loader",
        };
        match &claim.took_over {
            Some(from) => info!(node = %claim.uuid, step, from = %from, "took the node over"),
            None => info!(node = %claim.uuid, step, "claimed"),
        }
        let mut stopping = self.stopping.subscribe();
        let outcome = tokio::select! {
            outcome = self.perform(&claim) => Some(outcome),
            lost = self.keep_claim(&claim) => {
                warn!(node = %claim.uuid, "{lost}; stopped the deploy, recording nothing");
                None
            }
            () = stopped(&mut stopping) => {
                info!(node = %claim.uuid, "the service stops: giving the node up for another instance");
                if let Err(e) = self.store.release(&claim).await {
                    warn!(node = %claim.uuid, error = %e, "cannot release the claim; it runs out by itself");
                }
                None
            }
        };
        self.set_progress(&claim.uuid, None);
        if let Some(outcome) = outcome {
            self.record(&claim, outcome).await;
        }
    }

    /// Renew `claim` every third of the lease; returns why it cannot go on.
    async fn keep_claim(&self, claim: &Claim) -> String {
        let lease = self.options.lease;
        let every = lease / 3;
        let mut valid_until = Instant::now() + lease;
        loop {
            tokio::time::sleep(every).await;
            let sent = Instant::now();
            let progress = self
                .progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&claim.uuid)
                .map_or((0, 0), |p| (p.done_bytes, p.total_bytes));
            let problem = match tokio::time::timeout(every, self.store.renew(claim, lease, progress)).await {
                Ok(Ok(true)) => {
                    valid_until = sent + lease;
                    continue;
                }
                Ok(Ok(false)) => return "another instance holds the node now (this one's claim ran out)".into(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {} ms", every.as_millis()),
            };
            warn!(node = %claim.uuid, %problem, "cannot renew the claim");
            if Instant::now() + every >= valid_until {
                return format!(
                    "the claim could not be renewed ({problem}) and runs out soon; stopping so that no \
                     other instance writes the disk at the same time"
                );
            }
        }
    }

    async fn perform(&self, claim: &Claim) -> Result<Done, String> {
        let spec = &claim.spec;
        match &claim.work {
            Work::Write { iqn, port, .. } => {
                let (report, notify) = self.deploy_node(spec, &claim.address, iqn, *port).await?;
                let row = deploy_row(&spec.uuid, &claim.address, &report);
                if local_boot(spec) {
                    return Ok(Done::AwaitBootLoader(row, notify));
                }
                self.notify(notify, "the image is written").await?;
                Ok(Done::Active(Some(row), "done sent"))
            }
            Work::BootLoaderDone => {
                let notify = notify_address(spec, &claim.address)?;
                self.notify(notify, "the boot loader is installed").await?;
                Ok(Done::Active(None, "boot loader installed; done sent"))
            }
        }
    }

    async fn notify(&self, (host, port): (String, u16), what: &str) -> Result<(), String> {
        connect::notify(&host, port, self.options.login.timeout)
            .await
            .map_err(|e| format!("{what}, but done could not be sent to {host}:{port}: {e:#}"))
    }

    /// Record how `claim`'s step ended (only while the claim is still this one).
    async fn record(&self, claim: &Claim, outcome: Result<Done, String>) {
        let uuid = &claim.uuid;
        let (finish, counted, notify) = match outcome {
            Ok(Done::Active(figures, detail)) => {
                let counted = figures.clone().unwrap_or_default();
                let finish = Finish::Active {
                    figures,
                    detail: detail.into(),
                };
                (finish, Some((metrics::DeployResult::Succeeded, counted)), None)
            }
            Ok(Done::AwaitBootLoader(figures, notify)) => (Finish::AwaitBootLoader { figures }, None, Some(notify)),
            Err(error) => {
                warn!(node = %uuid, %error, "deploy failed");
                let finish = Finish::Failed { error, figures: None };
                (
                    finish,
                    Some((metrics::DeployResult::Failed, DeployRow::default())),
                    None,
                )
            }
        };
        if let Err(e) = self.store.finish(claim, finish, &self.me.name).await {
            warn!(node = %uuid, error = %e, "cannot record the end of the deploy step");
            return;
        }
        if let Some((result, row)) = counted {
            self.count_deploy(result, claim.since, &row);
        }
        // The node waits for its boot loader callback before the ramdisk hears done.
        if let Some(notify) = notify
            && let Err(error) = self.notify(notify, "the image is written").await
        {
            warn!(node = %uuid, %error, "deploy failed");
            let failed = self
                .store
                .fail_boot_loader_wait(uuid, Some(claim.deploy_id), &error, "deploy failed", &self.me.name)
                .await;
            match failed {
                Ok(()) => self.count_deploy(metrics::DeployResult::Failed, claim.since, &DeployRow::default()),
                Err(e) => warn!(node = %uuid, error = %e, "cannot record the failed deploy"),
            }
        }
    }

    pub(super) fn count_deploy(&self, result: metrics::DeployResult, since: f64, row: &DeployRow) {
        let seconds = (super::store::db::local_now() - since).max(0.0);
        self.metrics
            .deploy_finished(result, seconds, row.bytes_sent, row.bytes_zeroed);
    }

    /// Fail the nodes that waited past the callback timeout.
    async fn expire(&self) {
        match self.store.expire(self.options.callback_timeout, &self.me.name).await {
            Ok(expired) => {
                for node in expired {
                    warn!(node = %node.uuid, "{}", node.error);
                    if node.closed_deploy {
                        self.metrics.deploy_finished(metrics::DeployResult::Failed, 0.0, 0, 0);
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot check the callback timeouts"),
        }
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
        let mut options = DeployOptions {
            // Images come from the operator's file, but a qcow2 naming a
            // backing file could pull any local file onto a node: refuse.
            open: OpenOptions {
                backing_files: false,
                ..OpenOptions::default()
            },
            // The checksum is checked once for every node by the image cache.
            ..DeployOptions::new(image, spec.deploy_request()?)
        };
        // A config drive from a provision request wins over the nodes file's;
        // one given inline goes through a file that lives as long as the deploy.
        let _drive_file = match self.store.configdrive(&spec.uuid).await.map_err(|e| e.to_string())? {
            Some(url) if url.contains("://") => {
                options.request.configdrive = Some(url);
                None
            }
            Some(drive) => {
                let dir = self.options.cache_dir.clone();
                let file = tokio::task::spawn_blocking(move || spill(&dir, drive.as_bytes()))
                    .await
                    .map_err(|e| e.to_string())??;
                options.request.configdrive = Some(file.path().display().to_string());
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
            login.set_deployment_chap(&spec.uuid, &spec.deploy_key);
        }
        info!(node = %spec.uuid, %url, "deploying");
        let in_use_until = Instant::now() + IN_USE_WAIT;
        let disk = loop {
            match open_disk(&url, &login, self.options.sessions).await {
                Ok(disk) => break disk,
                Err(e) if in_use(&e) && Instant::now() < in_use_until => {
                    info!(node = %spec.uuid, "the node's target still serves another initiator; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(format!("cannot reach the node's disk at {url}: {e:#}")),
            }
        };
        let uuid = spec.uuid.clone();
        let result = deployer::deploy(&disk, &options, |p| {
            let progress = Progress {
                done_bytes: p.done_bytes,
                total_bytes: p.total_bytes,
            };
            self.set_progress(&uuid, Some(progress));
        })
        .await;
        connect::logout(disk).await;
        let report = result.map_err(|e| format!("{e:#}"))?;
        info!(node = %spec.uuid, seconds = report.seconds, mib_per_second = report.mib_per_second, "image written");
        Ok((report, (host, spec.notify_port)))
    }
}

/// Resolves once the service stops (the watch's guard is not Send: it is
/// dropped in here, not held across a select).
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Whether a login was refused because the target serves another
/// initiator (`target-agent --exclusive`: Authorization failure).
fn in_use(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<SessionError>(),
            Some(SessionError::Login {
                error: LoginError::Refused { status, .. },
                ..
            }) if *status == LoginStatus::AUTHORIZATION_FAILURE
        )
    })
}

/// Where the ramdisk waits for `done`: the portal's host, or the callback's address.
fn notify_address(spec: &NodeSpec, address: &str) -> Result<(String, u16), String> {
    let host = match &spec.portal {
        Some(portal) => {
            parse_portal(portal, 3260)
                .map_err(|e| format!("bad portal {portal}: {e}"))?
                .0
        }
        None => address.to_owned(),
    };
    Ok((host, spec.notify_port))
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
