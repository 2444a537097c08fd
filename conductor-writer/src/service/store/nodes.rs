//! Nodes as the database keeps them: the nodes file's entries, each node's provision state and
//! its changes, its deploys, and the one way a state change is written (with its event, by the
//! instance that made it). This is apart from the claims because it is what the operator and
//! the views see of a node, whichever instance works on it; the claims decide which instance
//! that is, and change states through the functions here.

use super::claims::close_open_deploys;
use super::db::{self, Row, Tx};
use super::{ProvisionState, Store, StoreError, rfc3339};
use crate::service::nodes::NodeSpec;

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRow {
    pub uuid: String,
    pub name: Option<String>,
    pub provision_state: ProvisionState,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Unix seconds when the current state began (for timeouts).
    pub state_since: f64,
    /// Whether a provision request gave a config drive for the next deploys.
    pub has_configdrive: bool,
    pub conductor_group: String,
    /// The instance holding the node: a step of its deploy runs there (or
    /// ran there, until another instance takes the node over).
    pub reservation: Option<String>,
    /// Unix seconds (database clock) when the holder's claim runs out.
    pub lease_until: Option<f64>,
    /// The instance that last worked on the node.
    pub conductor: Option<String>,
    /// Bytes written so far and to write, as the holder last reported them.
    pub progress: Option<(u64, u64)>,
    /// From the nodes file; `None` once the node is no longer in it.
    #[serde(skip)]
    pub spec: Option<NodeSpec>,
}

/// What a provision request does to the config drive the node's deploys use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigDriveChange<'a> {
    Keep,
    /// A URL, or a gzipped, base64-encoded image, already checked.
    Set(&'a str),
    /// Back to the nodes file's (a torn-down node forgets its instance).
    Clear,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    pub at: String,
    pub from_state: Option<ProvisionState>,
    pub to_state: ProvisionState,
    pub detail: String,
    /// The instance that made the change.
    pub conductor: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeployRow {
    pub id: i64,
    pub uuid: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `"active"`, `"deploy failed"`, or `"taken over"` (its instance
    /// stopped and another deployed the node again).
    pub outcome: Option<String>,
    pub address: Option<String>,
    pub bytes_sent: u64,
    pub bytes_zeroed: u64,
    pub image_bytes: u64,
    pub seconds: f64,
    pub mib_per_second: f64,
    pub root_uuid: Option<String>,
    pub disk_identifier: Option<String>,
    pub error: Option<String>,
    /// The instance that ran it.
    pub conductor: Option<String>,
}

const NODE_COLUMNS: &str = "uuid, name, provision_state, last_error, created_at, updated_at, state_since, \
    configdrive IS NOT NULL, conductor_group, reservation, lease_until, conductor, progress_done, progress_total, spec";
const DEPLOY_COLUMNS: &str = "id, uuid, started_at, finished_at, outcome, address, bytes_sent, bytes_zeroed, \
    image_bytes, seconds, mib_per_second, root_uuid, disk_identifier, error, conductor";
/// The advisory lock start-up syncs take on PostgreSQL (one instance at a time).
const SYNC_LOCK: i64 = 0x636f_6e64_7563_7402;

impl Store {
    /// At start-up, the nodes file becomes the database's list of nodes: nodes not yet known are
    /// added in `wait call-back`; known ones take the file's spec (name, image, group, ...) and
    /// keep their state. Nothing running is failed: a deploy cut short is taken over once its
    /// claim runs out. Nodes no longer in the file stay in the database (history) but are no
    /// longer deployed, by any instance. Returns one line per action for the log.
    pub async fn sync_nodes(&self, specs: &[NodeSpec], by: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.db.write().await?;
        tx.serialise(SYNC_LOCK).await?;
        let now = tx.now().await?;
        let mut log = Vec::new();
        let rows = tx
            .query("SELECT uuid, name, spec FROM nodes ORDER BY created_at, uuid", &[])
            .await?;
        let mut known = Vec::with_capacity(rows.len());
        for row in rows {
            let (uuid, name, spec) = (row.text(0)?, row.opt_text(1), row.opt_text(2));
            if !specs.iter().any(|s| s.uuid == uuid) {
                if spec.is_some() {
                    tx.execute("UPDATE nodes SET spec = NULL WHERE uuid = ?1", params![&uuid])
                        .await?;
                }
                log.push(format!(
                    "node {}: not in the nodes file; its history stays in the database, no instance deploys it",
                    label(&uuid, name.as_deref())
                ));
            }
            known.push((uuid, spec));
        }
        for spec in specs {
            let json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match known.iter().find(|(uuid, _)| *uuid == spec.uuid) {
                Some((_, stored)) if stored.as_deref() == Some(json.as_str()) => {}
                Some((_, stored)) => {
                    tx.execute(
                        "UPDATE nodes SET name = ?2, spec = ?3, conductor_group = ?4 WHERE uuid = ?1",
                        params![&spec.uuid, spec.name.as_deref(), &json, &spec.conductor_group],
                    )
                    .await?;
                    if stored.is_some() {
                        log.push(format!(
                            "node {}: its entry in the nodes file changed; the database now has this file's",
                            label(&spec.uuid, spec.name.as_deref())
                        ));
                    }
                }
                None => {
                    tx.execute(
                        "INSERT INTO nodes (uuid, name, provision_state, created_at, updated_at, state_since, \
                         spec, conductor_group) VALUES (?1, ?2, ?3, ?4, ?4, ?4, ?5, ?6)",
                        params![
                            &spec.uuid,
                            spec.name.as_deref(),
                            ProvisionState::WaitCallBack,
                            now,
                            &json,
                            &spec.conductor_group
                        ],
                    )
                    .await?;
                    let added = "added from the nodes file";
                    add_event(&mut tx, &spec.uuid, None, ProvisionState::WaitCallBack, added, now, by).await?;
                    log.push(format!(
                        "node {}: added in wait call-back",
                        label(&spec.uuid, spec.name.as_deref())
                    ));
                }
            }
        }
        tx.commit().await?;
        Ok(log)
    }

    /// Changes a node's state with an event row. `error: Some` sets last_error; `None` clears it
    /// when moving to `wait call-back`, `deploying` or `active` and keeps it otherwise.
    pub async fn transition(
        &self,
        uuid: &str,
        to: ProvisionState,
        error: Option<&str>,
        detail: &str,
        by: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write().await?;
        let (from, _) = locked_state(&mut tx, uuid).await?;
        let now = tx.now().await?;
        set_state(&mut tx, uuid, from, to, error, detail, now, by).await?;
        tx.commit().await
    }

    /// Changes a node's state only if it is in one of `from` (checked and changed in one
    /// transaction, so two requests cannot both move it), and its config drive with it. A node
    /// torn down while it waited for its boot loader callback has that deploy closed. The state
    /// it was in comes back; [`StoreError::NotInState`] when it was in none of `from`, and then
    /// nothing changed.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition_if(
        &self,
        uuid: &str,
        from: &[ProvisionState],
        to: ProvisionState,
        error: Option<&str>,
        detail: &str,
        configdrive: ConfigDriveChange<'_>,
        by: &str,
    ) -> Result<ProvisionState, StoreError> {
        let mut tx = self.db.write().await?;
        let (state, holder) = locked_state(&mut tx, uuid).await?;
        if !from.contains(&state) {
            return Err(StoreError::NotInState {
                uuid: uuid.into(),
                state,
                holder,
            });
        }
        let value = match configdrive {
            ConfigDriveChange::Keep => None,
            ConfigDriveChange::Set(value) => Some(Some(value)),
            ConfigDriveChange::Clear => Some(None),
        };
        if let Some(value) = value {
            tx.execute(
                "UPDATE nodes SET configdrive = ?2 WHERE uuid = ?1",
                params![uuid, value],
            )
            .await?;
        }
        let now = tx.now().await?;
        if state == ProvisionState::WaitCallBack && to != ProvisionState::Deploying {
            let why = match to {
                ProvisionState::Available => "torn down (deleted) while waiting for the boot loader callback",
                _ => error.unwrap_or(detail),
            };
            close_open_deploys(&mut tx, uuid, "deploy failed", why, now).await?;
        }
        set_state(&mut tx, uuid, state, to, error, detail, now, by).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// The config drive a provision request gave the node, if any.
    pub async fn configdrive(&self, uuid: &str) -> Result<Option<String>, StoreError> {
        let mut tx = self.db.read().await?;
        let row = tx
            .query_opt("SELECT configdrive FROM nodes WHERE uuid = ?1", params![uuid])
            .await?
            .ok_or_else(|| StoreError::UnknownNode(uuid.into()))?;
        tx.commit().await?;
        Ok(row.opt_text(0))
    }

    pub async fn node(&self, uuid: &str) -> Result<Option<NodeRow>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE uuid = ?1");
        self.nodes_where(&sql, params![uuid])
            .await
            .map(|rows| rows.into_iter().next())
    }

    /// The node called `node` (its UUID in any case, or its name) that is in the nodes file.
    pub async fn find(&self, node: &str) -> Result<Option<(NodeRow, NodeSpec)>, StoreError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE (uuid = ?1 OR name = ?2) AND spec IS NOT NULL \
             ORDER BY uuid = ?1 DESC"
        );
        let rows = self.nodes_where(&sql, params![node.to_ascii_lowercase(), node]).await?;
        Ok(rows
            .into_iter()
            .find_map(|mut row| row.spec.take().map(|spec| (row, spec))))
    }

    /// All nodes, removed ones included, ordered by created_at then uuid.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY created_at, uuid");
        self.nodes_where(&sql, &[]).await
    }

    async fn nodes_where(&self, sql: &str, params: &[db::Value]) -> Result<Vec<NodeRow>, StoreError> {
        let mut tx = self.db.read().await?;
        let rows = tx.query(sql, params).await?;
        tx.commit().await?;
        rows.iter().map(node_row).collect()
    }

    /// A node's state changes, oldest first.
    pub async fn events(&self, uuid: &str) -> Result<Vec<EventRow>, StoreError> {
        let sql = "SELECT at, from_state, to_state, detail, conductor FROM events WHERE uuid = ?1 ORDER BY id";
        let rows = self.for_node(uuid, sql).await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    at: rfc3339(r.real(0)),
                    from_state: match r.opt_text(1) {
                        Some(_) => Some(ProvisionState::from_row(r, 1)?),
                        None => None,
                    },
                    to_state: ProvisionState::from_row(r, 2)?,
                    detail: r.text(3)?,
                    conductor: r.opt_text(4),
                })
            })
            .collect()
    }

    /// A node's deploys, oldest first.
    pub async fn deploys(&self, uuid: &str) -> Result<Vec<DeployRow>, StoreError> {
        let sql = format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE uuid = ?1 ORDER BY id");
        let rows = self.for_node(uuid, &sql).await?;
        rows.iter().map(deploy_row).collect()
    }

    /// Rows of `sql` (one `?1` = uuid); an unknown node is an error, not an empty list.
    async fn for_node(&self, uuid: &str, sql: &str) -> Result<Vec<Row>, StoreError> {
        let mut tx = self.db.read().await?;
        if tx
            .query_opt("SELECT 1 FROM nodes WHERE uuid = ?1", params![uuid])
            .await?
            .is_none()
        {
            return Err(StoreError::UnknownNode(uuid.into()));
        }
        let rows = tx.query(sql, params![uuid]).await?;
        tx.commit().await?;
        Ok(rows)
    }
}

/// The node's state and holder, its row locked for the rest of `tx`.
pub(super) async fn locked_state(tx: &mut Tx<'_>, uuid: &str) -> Result<(ProvisionState, Option<String>), StoreError> {
    let sql = format!(
        "SELECT provision_state, reservation FROM nodes WHERE uuid = ?1{}",
        tx.lock_rows(false)
    );
    let row = tx
        .query_opt(&sql, params![uuid])
        .await?
        .ok_or_else(|| StoreError::UnknownNode(uuid.into()))?;
    Ok((ProvisionState::from_row(&row, 0)?, row.opt_text(1)))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn set_state(
    tx: &mut Tx<'_>,
    uuid: &str,
    from: ProvisionState,
    to: ProvisionState,
    error: Option<&str>,
    detail: &str,
    now: f64,
    by: &str,
) -> Result<(), StoreError> {
    let clears = matches!(
        to,
        ProvisionState::Available | ProvisionState::WaitCallBack | ProvisionState::Deploying | ProvisionState::Active
    );
    let set = "UPDATE nodes SET provision_state = ?2, updated_at = ?3, \
               state_since = CASE WHEN provision_state = ?2 THEN state_since ELSE ?3 END";
    match (error, clears) {
        (Some(_), _) | (None, true) => {
            let sql = format!("{set}, last_error = ?4 WHERE uuid = ?1");
            tx.execute(&sql, params![uuid, to, now, error]).await?;
        }
        (None, false) => {
            tx.execute(&format!("{set} WHERE uuid = ?1"), params![uuid, to, now])
                .await?;
        }
    }
    add_event(tx, uuid, Some(from), to, detail, now, by).await
}

pub(super) async fn add_event(
    tx: &mut Tx<'_>,
    uuid: &str,
    from: Option<ProvisionState>,
    to: ProvisionState,
    detail: &str,
    now: f64,
    by: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO events (uuid, at, from_state, to_state, detail, conductor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![uuid, now, from, to, detail, by],
    )
    .await?;
    Ok(())
}

fn node_row(r: &Row) -> Result<NodeRow, StoreError> {
    let spec = match r.opt_text(14) {
        Some(json) => Some(serde_json::from_str(&json).map_err(|e| {
            StoreError::Corrupt(format!(
                "the stored nodes file entry of {} does not parse: {e}",
                r.opt_text(0).unwrap_or_default()
            ))
        })?),
        None => None,
    };
    let total = r.count(13);
    Ok(NodeRow {
        uuid: r.text(0)?,
        name: r.opt_text(1),
        provision_state: ProvisionState::from_row(r, 2)?,
        last_error: r.opt_text(3),
        created_at: rfc3339(r.real(4)),
        updated_at: rfc3339(r.real(5)),
        state_since: r.real(6),
        has_configdrive: r.bool(7),
        conductor_group: r.opt_text(8).unwrap_or_default(),
        reservation: r.opt_text(9),
        lease_until: r.opt_real(10),
        conductor: r.opt_text(11),
        progress: (total > 0).then(|| (r.count(12), total)),
        spec,
    })
}

fn deploy_row(r: &Row) -> Result<DeployRow, StoreError> {
    Ok(DeployRow {
        id: r.int(0),
        uuid: r.text(1)?,
        started_at: rfc3339(r.real(2)),
        finished_at: r.opt_real(3).map(rfc3339),
        outcome: r.opt_text(4),
        address: r.opt_text(5),
        bytes_sent: r.count(6),
        bytes_zeroed: r.count(7),
        image_bytes: r.count(8),
        seconds: r.real(9),
        mib_per_second: r.real(10),
        root_uuid: r.opt_text(11),
        disk_identifier: r.opt_text(12),
        error: r.opt_text(13),
        conductor: r.opt_text(14),
    })
}

fn label(uuid: &str, name: Option<&str>) -> String {
    name.map_or_else(|| uuid.to_owned(), |name| format!("{uuid} ({name})"))
}
