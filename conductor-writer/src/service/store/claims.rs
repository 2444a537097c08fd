//! Who works on a node: a ramdisk's callback is recorded as work; an instance of the node's
//! conductor group claims it; the claim is a lease its holder renews while it works.
//!
//! ```text
//! callback (any instance) --> deploying, work recorded, unclaimed
//!     --claim (an instance of the node's group, with a free slot)--> held: reservation, token, lease
//!     --renewed every third of the lease while the step runs
//!     --finish (only with the holder's token)--> active / deploy failed / wait call-back (boot loader)
//! a lease that runs out (the holder died, or lost the database) --> claimable again: the next
//!     holder closes the old deploy as "taken over" and does the step again from the start
//! ```
//!
//! The instance that receives a callback claims the work in the same transaction when it may,
//! so in a quiet farm a node is deployed where its ramdisk called. Every claim and every change
//! of the claim checks the node's row inside one transaction (SQLite's write lock, PostgreSQL's
//! row lock), so two instances can never hold a node at once; a holder that cannot renew stops
//! writing before its lease runs out (see the service), and the deploy ramdisk serves one
//! initiator at a time (`--exclusive`), so a late writer is refused at the disk too.

use super::conductors::Conductor;
use super::db::{Row, Tx, local_now};
use super::nodes::{add_event, locked_state, set_state};
use super::{NodeRow, ProvisionState, Store, StoreError, rfc3339};
use crate::service::nodes::NodeSpec;
use std::time::Duration;

/// The step a callback asked for, kept with the node until it is done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Work {
    /// `pass_deploy_info`: log in to the ramdisk's target, partition, write,
    /// send `done`.
    Write { address: String, iqn: String, port: u16 },
    /// `pass_bootloader_install_info` said SUCCEEDED: send the second `done`.
    BootLoaderDone,
}

/// A node this instance holds, and what to do.
#[derive(Debug, Clone)]
pub struct Claim {
    pub uuid: String,
    /// Proves the claim is still this one.
    pub token: String,
    pub spec: NodeSpec,
    pub work: Work,
    /// The deploy row this step belongs to.
    pub deploy_id: i64,
    /// The callback's address (the node's, unless the spec names a portal).
    pub address: String,
    /// When the node's deploy began (unix seconds), for its duration.
    pub since: f64,
    /// The instance whose claim this one replaces, if any.
    pub took_over: Option<String>,
}

/// How a held step ended.
#[derive(Debug, Clone)]
pub enum Finish {
    /// The node is deployed; `figures` (if any) replace the deploy row's.
    Active {
        figures: Option<super::DeployRow>,
        detail: String,
    },
    Failed {
        error: String,
        figures: Option<super::DeployRow>,
    },
    /// The image is written; the ramdisk installs its boot loader and calls back.
    AwaitBootLoader { figures: super::DeployRow },
}

/// A node the callback timeout failed.
#[derive(Debug, Clone)]
pub struct Expired {
    pub uuid: String,
    pub error: String,
    /// Whether a deploy was open (its image written, or its holder gone).
    pub closed_deploy: bool,
}

const WORKING: &str = "work, reservation, claim, lease_until";
/// The claim token of a claim its instance gave up.
const RELEASED: &str = "released";

impl Store {
    /// `pass_deploy_info` with the right key: a node waiting for it (and not for its boot
    /// loader) goes to `deploying` with `work` recorded, claimed at once by `me` when `claim`
    /// gives a lease and the node is in `me`'s conductor group.
    pub async fn accept_callback(
        &self,
        uuid: &str,
        work: &Work,
        detail: &str,
        me: &Conductor,
        claim: Option<Duration>,
    ) -> Result<Option<Claim>, StoreError> {
        let mut tx = self.db.write().await?;
        let sql = format!(
            "SELECT provision_state, reservation, conductor_group FROM nodes WHERE uuid = ?1{}",
            tx.lock_rows(false)
        );
        let row = tx
            .query_opt(&sql, params![uuid])
            .await?
            .ok_or_else(|| StoreError::UnknownNode(uuid.into()))?;
        let state = ProvisionState::from_row(&row, 0)?;
        let boot_loader = state == ProvisionState::WaitCallBack && open_deploy(&mut tx, uuid).await?.is_some();
        let expected = match work {
            Work::Write { .. } => state == ProvisionState::WaitCallBack && !boot_loader,
            Work::BootLoaderDone => boot_loader,
        };
        if !expected {
            return Err(StoreError::NotInState {
                uuid: uuid.into(),
                state,
                holder: row.opt_text(1),
            });
        }
        let now = tx.now().await?;
        set_state(
            &mut tx,
            uuid,
            state,
            ProvisionState::Deploying,
            None,
            detail,
            now,
            &me.name,
        )
        .await?;
        let json = serde_json::to_string(work).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            "UPDATE nodes SET work = ?2, reservation = NULL, claim = NULL, lease_until = NULL WHERE uuid = ?1",
            params![uuid, json],
        )
        .await?;
        let claimed = match claim {
            Some(lease) if row.opt_text(2).unwrap_or_default() == me.group => {
                claim_node(&mut tx, uuid, me, lease, now).await?
            }
            _ => None,
        };
        tx.commit().await?;
        Ok(claimed)
    }

    /// `pass_bootloader_install_info` said FAILED (or `done` could not follow the image): the
    /// node waiting for its boot loader fails, and its deploy with it. With `deploy_id`, only if
    /// that deploy is the one still waiting.
    pub async fn fail_boot_loader_wait(
        &self,
        uuid: &str,
        deploy_id: Option<i64>,
        error: &str,
        detail: &str,
        by: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write().await?;
        let (state, holder) = locked_state(&mut tx, uuid).await?;
        let open = open_deploy(&mut tx, uuid).await?;
        let waiting = state == ProvisionState::WaitCallBack && open.is_some();
        if !waiting || deploy_id.is_some_and(|id| open != Some(id)) {
            return Err(StoreError::NotInState {
                uuid: uuid.into(),
                state,
                holder,
            });
        }
        let now = tx.now().await?;
        close_open_deploys(&mut tx, uuid, "deploy failed", error, now).await?;
        set_state(
            &mut tx,
            uuid,
            state,
            ProvisionState::DeployFailed,
            Some(error),
            detail,
            now,
            by,
        )
        .await?;
        tx.commit().await
    }

    /// The oldest work of `me`'s conductor group that nobody holds (never claimed, or its claim
    /// ran out), now held by `me` for `lease`.
    pub async fn claim_next(&self, me: &Conductor, lease: Duration) -> Result<Option<Claim>, StoreError> {
        let mut tx = self.db.write().await?;
        let now = tx.now().await?;
        let sql = format!(
            "SELECT uuid FROM nodes WHERE provision_state = ?1 AND conductor_group = ?2 \
             AND (lease_until IS NULL OR lease_until < ?3) ORDER BY state_since, uuid LIMIT 1{}",
            tx.lock_rows(true)
        );
        let row = tx
            .query_opt(&sql, params![ProvisionState::Deploying, &me.group, now])
            .await?;
        let claimed = match row {
            Some(row) => claim_node(&mut tx, &row.text(0)?, me, lease, now).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(claimed)
    }

    /// Extend `claim` by `lease` from now and record the step's progress. `false`: the claim is
    /// no longer this one (it ran out and another instance holds the node).
    pub async fn renew(&self, claim: &Claim, lease: Duration, progress: (u64, u64)) -> Result<bool, StoreError> {
        let mut tx = self.db.write().await?;
        let until = tx.now().await? + lease.as_secs_f64();
        let changed = tx
            .execute(
                "UPDATE nodes SET lease_until = ?3, progress_done = ?4, progress_total = ?5 \
                 WHERE uuid = ?1 AND claim = ?2",
                params![&claim.uuid, &claim.token, until, progress.0, progress.1],
            )
            .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Give `claim` up at once (this instance stops): the next instance need not wait for the
    /// lease to run out. (The claim runs out now, not long ago: the callback timeout counts
    /// from here.)
    pub async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        let mut tx = self.db.write().await?;
        let now = tx.now().await?;
        tx.execute(
            "UPDATE nodes SET lease_until = ?3, claim = ?4 WHERE uuid = ?1 AND claim = ?2",
            params![&claim.uuid, &claim.token, now, RELEASED],
        )
        .await?;
        tx.commit().await
    }

    /// End the held step: the deploy row and the node take the outcome, and the claim ends.
    /// [`StoreError::ClaimLost`] (and nothing changes) if the claim is no longer this one.
    pub async fn finish(&self, claim: &Claim, finish: Finish, by: &str) -> Result<(), StoreError> {
        let mut tx = self.db.write().await?;
        let sql = format!(
            "SELECT provision_state, claim FROM nodes WHERE uuid = ?1{}",
            tx.lock_rows(false)
        );
        let row = tx.query_opt(&sql, params![&claim.uuid]).await?;
        let state = match &row {
            Some(row) if row.opt_text(1).as_deref() == Some(claim.token.as_str()) => ProvisionState::from_row(row, 0)?,
            _ => return Err(StoreError::ClaimLost(claim.uuid.clone())),
        };
        let now = tx.now().await?;
        let (figures, to, error, detail, closes) = match finish {
            Finish::Active { figures, detail } => (figures, ProvisionState::Active, None, detail, true),
            Finish::Failed { error, figures } => {
                let detail = "deploy failed".to_owned();
                (figures, ProvisionState::DeployFailed, Some(error), detail, true)
            }
            Finish::AwaitBootLoader { figures } => {
                let detail = "image written; waiting for the boot loader callback".to_owned();
                (Some(figures), ProvisionState::WaitCallBack, None, detail, false)
            }
        };
        if let Some(f) = figures {
            tx.execute(
                "UPDATE deploys SET bytes_sent = ?2, bytes_zeroed = ?3, image_bytes = ?4, seconds = ?5, \
                 mib_per_second = ?6, root_uuid = ?7, disk_identifier = ?8 WHERE id = ?1",
                params![
                    claim.deploy_id,
                    f.bytes_sent,
                    f.bytes_zeroed,
                    f.image_bytes,
                    f.seconds,
                    f.mib_per_second,
                    f.root_uuid,
                    f.disk_identifier
                ],
            )
            .await?;
        }
        if closes {
            tx.execute(
                "UPDATE deploys SET finished_at = ?2, outcome = ?3, error = ?4 WHERE id = ?1 AND finished_at IS NULL",
                params![claim.deploy_id, now, to, error.as_deref()],
            )
            .await?;
        }
        tx.execute(
            &format!(
                "UPDATE nodes SET progress_done = 0, progress_total = 0, {} WHERE uuid = ?1",
                unset(WORKING)
            ),
            params![&claim.uuid],
        )
        .await?;
        set_state(&mut tx, &claim.uuid, state, to, error.as_deref(), &detail, now, by).await?;
        tx.commit().await
    }

    /// Fail the nodes that waited too long: in `wait call-back` for more than `timeout` (no
    /// ramdisk called), or in `deploying` with nobody holding them for that long since the
    /// callback or since their last claim ran out (no instance of their conductor group runs).
    pub async fn expire(&self, timeout: Duration, by: &str) -> Result<Vec<Expired>, StoreError> {
        let mut tx = self.db.write().await?;
        let now = tx.now().await?;
        let before = now - timeout.as_secs_f64();
        let sql = format!(
            "SELECT uuid, provision_state, conductor_group FROM nodes WHERE spec IS NOT NULL AND state_since < ?1 \
             AND (provision_state = ?2 OR (provision_state = ?3 AND (lease_until IS NULL OR lease_until < ?1))) \
             ORDER BY uuid{}",
            tx.lock_rows(true)
        );
        let rows = tx
            .query(
                &sql,
                params![before, ProvisionState::WaitCallBack, ProvisionState::Deploying],
            )
            .await?;
        let mut expired = Vec::new();
        for row in rows {
            let (uuid, state, group) = (row.text(0)?, ProvisionState::from_row(&row, 1)?, row.text(2)?);
            let seconds = timeout.as_secs();
            let error = if state == ProvisionState::WaitCallBack {
                format!("Timeout reached while waiting for callback for node {uuid} ({seconds} s)")
            } else {
                let flag = if group.is_empty() {
                    "without --conductor-group".to_owned()
                } else {
                    format!("with --conductor-group {group}")
                };
                format!(
                    "no conductor of the node's conductor group took up its deploy within {seconds} s; \
                     start one {flag}"
                )
            };
            let closed_deploy = close_open_deploys(&mut tx, &uuid, "deploy failed", &error, now).await? > 0;
            tx.execute(
                &format!("UPDATE nodes SET {} WHERE uuid = ?1", unset(WORKING)),
                params![&uuid],
            )
            .await?;
            let detail = "callback timeout";
            set_state(
                &mut tx,
                &uuid,
                state,
                ProvisionState::DeployFailed,
                Some(&error),
                detail,
                now,
                by,
            )
            .await?;
            expired.push(Expired {
                uuid,
                error,
                closed_deploy,
            });
        }
        tx.commit().await?;
        Ok(expired)
    }
}

/// `a = NULL, b = NULL, ...` for the columns in `columns`.
fn unset(columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{c} = NULL"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The deploy row of `uuid` still open, if any.
async fn open_deploy(tx: &mut Tx<'_>, uuid: &str) -> Result<Option<i64>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT id FROM deploys WHERE uuid = ?1 AND finished_at IS NULL ORDER BY id DESC",
            params![uuid],
        )
        .await?;
    Ok(row.map(|r| r.int(0)))
}

/// Close every open deploy row of `uuid` with `outcome` and `error`; how many there were.
pub(super) async fn close_open_deploys(
    tx: &mut Tx<'_>,
    uuid: &str,
    outcome: &str,
    error: &str,
    now: f64,
) -> Result<u64, StoreError> {
    tx.execute(
        "UPDATE deploys SET finished_at = ?2, outcome = ?3, error = ?4 WHERE uuid = ?1 AND finished_at IS NULL",
        params![uuid, now, outcome, error],
    )
    .await
}

/// Claim `uuid` (locked by the caller, in `deploying`) for `me`. A claim that replaces another
/// is recorded as a takeover; work that cannot be done (a node gone from the nodes file, a
/// deploy cut short by a release that did not record its work) fails the node instead.
async fn claim_node(
    tx: &mut Tx<'_>,
    uuid: &str,
    me: &Conductor,
    lease: Duration,
    now: f64,
) -> Result<Option<Claim>, StoreError> {
    let sql = "SELECT spec, work, reservation, lease_until, state_since, claim FROM nodes WHERE uuid = ?1";
    let row = tx
        .query_opt(sql, params![uuid])
        .await?
        .ok_or_else(|| StoreError::UnknownNode(uuid.into()))?;
    let previous = row.opt_real(3).and(row.opt_text(2));
    let takeover = previous.as_ref().map(|holder| takeover_note(&row, holder));
    let parsed = parse_claimable(&row);
    let (spec, work) = match parsed {
        Ok(found) => found,
        Err(why) => {
            let error = match &takeover {
                Some(note) => format!("{note}; {why}"),
                None => why,
            };
            close_open_deploys(tx, uuid, "deploy failed", &error, now).await?;
            tx.execute(
                &format!("UPDATE nodes SET {} WHERE uuid = ?1", unset(WORKING)),
                params![uuid],
            )
            .await?;
            let state = ProvisionState::Deploying;
            set_state(
                tx,
                uuid,
                state,
                ProvisionState::DeployFailed,
                Some(&error),
                "cannot deploy",
                now,
                &me.name,
            )
            .await?;
            return Ok(None);
        }
    };
    let (deploy_id, address, since) = match &work {
        Work::Write { address, .. } => {
            if let Some(note) = &takeover {
                let error = format!("{note}; {} deploys the node again from the start", me.name);
                close_open_deploys(tx, uuid, "taken over", &error, now).await?;
            }
            let id = tx
                .query_opt(
                    "INSERT INTO deploys (uuid, started_at, address, conductor) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    params![uuid, now, address, &me.name],
                )
                .await?
                .map(|r| r.int(0))
                .ok_or_else(|| StoreError::Corrupt("no id for a new deploy".into()))?;
            (id, address.clone(), row.real(4))
        }
        Work::BootLoaderDone => {
            let open = tx
                .query_opt(
                    "SELECT id, address, started_at FROM deploys WHERE uuid = ?1 AND finished_at IS NULL ORDER BY id DESC",
                    params![uuid],
                )
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("node {uuid} waits for done without an open deploy")))?;
            (open.int(0), open.opt_text(1).unwrap_or_default(), open.real(2))
        }
    };
    if let Some(note) = &takeover {
        let again = match work {
            Work::Write { .. } => "deploying again from the start",
            Work::BootLoaderDone => "sending done again",
        };
        let detail = format!("{note}; {} took the node over, {again}", me.name);
        let state = ProvisionState::Deploying;
        add_event(tx, uuid, Some(state), state, &detail, now, &me.name).await?;
    }
    let token = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "UPDATE nodes SET reservation = ?2, claim = ?3, lease_until = ?4, conductor = ?2, \
         progress_done = 0, progress_total = 0 WHERE uuid = ?1",
        params![uuid, &me.name, &token, now + lease.as_secs_f64()],
    )
    .await?;
    Ok(Some(Claim {
        uuid: uuid.to_owned(),
        token,
        spec,
        work,
        deploy_id,
        address,
        since,
        took_over: previous,
    }))
}

/// Why the previous holder no longer holds the node, from its row.
fn takeover_note(row: &Row, holder: &str) -> String {
    if row.opt_text(5).as_deref() == Some(RELEASED) {
        return format!("conductor {holder} released the node when it stopped");
    }
    format!(
        "conductor {holder} stopped renewing its claim, which ran out at {}",
        rfc3339(row.real(3))
    )
}

fn parse_claimable(row: &Row) -> Result<(NodeSpec, Work), String> {
    let spec = row.opt_text(0).ok_or("the node is no longer in the nodes file")?;
    let spec: NodeSpec =
        serde_json::from_str(&spec).map_err(|e| format!("its nodes file entry does not parse: {e}"))?;
    let work = row.opt_text(1).ok_or(
        "the service stopped while the deploy was running, and this database's older version did not keep \
         the callback; retry the deploy",
    )?;
    let work = serde_json::from_str(&work).map_err(|e| format!("its recorded callback does not parse: {e}"))?;
    Ok((spec, work))
}

/// Whether `row`'s claim (if any) is still in force at `now` by this machine's clock; for views.
#[must_use]
pub fn held(row: &NodeRow) -> bool {
    row.reservation.is_some() && row.lease_until.is_some_and(|until| until > local_now())
}
