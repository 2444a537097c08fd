//! What `conductor-writer serve` remembers: each node's provision state, its history and its deploys.
//!
//! A deploy outlives the request that started it and a ramdisk may call back long after. Every
//! state change is committed (WAL, `synchronous=FULL`) before the service acts on it, so after a
//! crash or restart the operator sees where each node was, and a deploy that was cut short is
//! reported as failed with the reason instead of hanging in `deploying` forever.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, Transaction, TransactionBehavior, params};

use super::nodes::NodeSpec;

/// Ironic's provision states, the subset this service goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ProvisionState {
    /// Torn down (`deleted`): no deploy expected, callbacks refused.
    #[serde(rename = "available")]
    Available,
    #[serde(rename = "wait call-back")]
    WaitCallBack,
    #[serde(rename = "deploying")]
    Deploying,
    #[serde(rename = "active")]
    Active,
    #[serde(rename = "deploy failed")]
    DeployFailed,
}

impl ProvisionState {
    pub const ALL: [Self; 5] = [
        Self::Available,
        Self::WaitCallBack,
        Self::Deploying,
        Self::Active,
        Self::DeployFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::WaitCallBack => "wait call-back",
            Self::Deploying => "deploying",
            Self::Active => "active",
            Self::DeployFailed => "deploy failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

impl ToSql for ProvisionState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ProvisionState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Self::parse(text).ok_or_else(|| FromSqlError::Other(format!("unknown provision state {text:?}").into()))
    }
}

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
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeployRow {
    pub id: i64,
    pub uuid: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `"active"` or `"deploy failed"`.
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
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the state database has schema version {found}, newer than this program's {supported}; \
         run a newer conductor-writer or use another database"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("unknown node {0}: add it to the nodes file and restart the service")]
    UnknownNode(String),
    #[error("deploy {0} does not exist or is already finished")]
    DeployNotOpen(i64),
    #[error("node {uuid} is in state {}", state.as_str())]
    NotInState { uuid: String, state: ProvisionState },
}

const SCHEMA_VERSION: i64 = 2;
const SCHEMA: &str = "
CREATE TABLE nodes (uuid TEXT PRIMARY KEY NOT NULL, name TEXT, provision_state TEXT NOT NULL, last_error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, state_since REAL NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL REFERENCES nodes(uuid), at REAL NOT NULL,
    from_state TEXT, to_state TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX events_by_node ON events(uuid, id);
CREATE TABLE deploys (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL REFERENCES nodes(uuid), started_at REAL NOT NULL,
    finished_at REAL, outcome TEXT, address TEXT, bytes_sent INTEGER NOT NULL DEFAULT 0,
    bytes_zeroed INTEGER NOT NULL DEFAULT 0, image_bytes INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0,
    mib_per_second REAL NOT NULL DEFAULT 0, root_uuid TEXT, disk_identifier TEXT, error TEXT);
CREATE INDEX deploys_by_node ON deploys(uuid, id);
PRAGMA user_version = 1;
";
/// From each version to the next: `MIGRATIONS[v - 1]` takes version `v` to `v + 1`.
const MIGRATIONS: [&str; 1] = ["ALTER TABLE nodes ADD COLUMN configdrive TEXT; PRAGMA user_version = 2;"];
const NODE_COLUMNS: &str =
    "uuid, name, provision_state, last_error, created_at, updated_at, state_since, configdrive IS NOT NULL";
const DEPLOY_COLUMNS: &str = "id, uuid, started_at, finished_at, outcome, address, bytes_sent, bytes_zeroed, \
    image_bytes, seconds, mib_per_second, root_uuid, disk_identifier, error";

/// The state database; one connection behind a mutex, shared by the service's tasks.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
            Ok(conn)
        };
        Self::init(open().map_err(|source| StoreError::Open {
            path: path.into(),
            source,
        })?)
    }

    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == 0 {
            tx.execute_batch(SCHEMA)?;
        }
        for migration in &MIGRATIONS[usize::try_from(found.max(1) - 1).unwrap_or(0)..] {
            tx.execute_batch(migration)?;
        }
        tx.commit()?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// A panic while the lock was held dropped its transaction, which rolled back: the data is whole.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one immediate (write) transaction and commits it.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// At start-up: nodes in `specs` not yet known are added in `wait call-back`; known nodes keep
    /// their state, except `deploying` (and a `wait call-back` whose deploy row is still open) which
    /// become `deploy failed` with the reason, and every open deploy row is closed with that reason.
    /// Nodes no longer in the file stay in the database (history) and are reported as removed.
    /// Returns one line per action for the log.
    pub fn sync_nodes(&self, specs: &[NodeSpec]) -> Result<Vec<String>, StoreError> {
        self.write(|tx| {
            let now = now();
            let mut log = Vec::new();
            let known: Vec<(String, Option<String>, ProvisionState, f64)> = tx
                .prepare("SELECT uuid, name, provision_state, state_since FROM nodes ORDER BY created_at, uuid")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            for (uuid, name, state, since) in &known {
                let label = label(uuid, name.as_deref());
                if let Some(line) = recover(tx, uuid, &label, *state, *since, now)? {
                    log.push(line);
                }
                if !specs.iter().any(|s| s.uuid == *uuid) {
                    log.push(format!(
                        "node {label}: removed from the nodes file; its history stays in the database"
                    ));
                }
            }
            for spec in specs {
                match known.iter().find(|(uuid, ..)| *uuid == spec.uuid) {
                    Some((_, name, ..)) if *name == spec.name => {}
                    Some(_) => {
                        tx.execute(
                            "UPDATE nodes SET name = ?2 WHERE uuid = ?1",
                            params![spec.uuid, spec.name],
                        )?;
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO nodes (uuid, name, provision_state, created_at, updated_at, state_since) \
                             VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
                            params![spec.uuid, spec.name, ProvisionState::WaitCallBack, now],
                        )?;
                        add_event(
                            tx,
                            &spec.uuid,
                            None,
                            ProvisionState::WaitCallBack,
                            "added from the nodes file",
                            now,
                        )?;
                        log.push(format!(
                            "node {}: added in wait call-back",
                            label(&spec.uuid, spec.name.as_deref())
                        ));
                    }
                }
            }
            Ok(log)
        })
    }

    /// Changes a node's state with an event row. `error: Some` sets last_error; `None` clears it
    /// when moving to `wait call-back`, `deploying` or `active` and keeps it otherwise.
    pub fn transition(
        &self,
        uuid: &str,
        to: ProvisionState,
        error: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let from: ProvisionState = tx
                .query_row("SELECT provision_state FROM nodes WHERE uuid = ?1", [uuid], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or_else(|| StoreError::UnknownNode(uuid.into()))?;
            set_state(tx, uuid, from, to, error, detail, now())
        })
    }

    /// Changes a node's state only if it is in one of `from` (checked and changed in one
    /// transaction, so two requests cannot both move it), and its config drive with it.
    /// The state it was in comes back; [`StoreError::NotInState`] when it was in none of
    /// `from`, and then nothing changed.
    pub fn transition_if(
        &self,
        uuid: &str,
        from: &[ProvisionState],
        to: ProvisionState,
        error: Option<&str>,
        detail: &str,
        configdrive: ConfigDriveChange<'_>,
    ) -> Result<ProvisionState, StoreError> {
        self.write(|tx| {
            let state: ProvisionState = tx
                .query_row("SELECT provision_state FROM nodes WHERE uuid = ?1", [uuid], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or_else(|| StoreError::UnknownNode(uuid.into()))?;
            if !from.contains(&state) {
                return Err(StoreError::NotInState {
                    uuid: uuid.into(),
                    state,
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
                )?;
            }
            set_state(tx, uuid, state, to, error, detail, now())?;
            Ok(state)
        })
    }

    /// The config drive a provision request gave the node, if any.
    pub fn configdrive(&self, uuid: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        let found = conn
            .query_row("SELECT configdrive FROM nodes WHERE uuid = ?1", [uuid], |r| r.get(0))
            .optional()?;
        found.ok_or_else(|| StoreError::UnknownNode(uuid.into()))
    }

    pub fn start_deploy(&self, uuid: &str, address: &str) -> Result<i64, StoreError> {
        self.write(|tx| {
            require_node(tx, uuid)?;
            tx.execute(
                "INSERT INTO deploys (uuid, started_at, address) VALUES (?1, ?2, ?3)",
                params![uuid, now(), address],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Closes deploy `id` now with the outcome and figures of `row` (its id, uuid, address and
    /// times are ignored).
    pub fn finish_deploy(&self, id: i64, row: &DeployRow) -> Result<(), StoreError> {
        self.write(|tx| {
            let [sent, zeroed, image] = [row.bytes_sent, row.bytes_zeroed, row.image_bytes].map(to_i64);
            let changed = tx.execute(
                "UPDATE deploys SET finished_at = ?2, outcome = ?3, bytes_sent = ?4, bytes_zeroed = ?5, \
                 image_bytes = ?6, seconds = ?7, mib_per_second = ?8, root_uuid = ?9, disk_identifier = ?10, \
                 error = ?11 WHERE id = ?1 AND finished_at IS NULL",
                params![
                    id,
                    now(),
                    row.outcome,
                    sent,
                    zeroed,
                    image,
                    row.seconds,
                    row.mib_per_second,
                    row.root_uuid,
                    row.disk_identifier,
                    row.error
                ],
            )?;
            if changed == 0 {
                Err(StoreError::DeployNotOpen(id))
            } else {
                Ok(())
            }
        })
    }

    pub fn node(&self, uuid: &str) -> Result<Option<NodeRow>, StoreError> {
        let conn = self.lock();
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE uuid = ?1");
        Ok(conn.query_row(&sql, [uuid], node_row).optional()?)
    }

    /// All nodes, removed ones included, ordered by created_at then uuid.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY created_at, uuid"))?;
        Ok(stmt.query_map([], node_row)?.collect::<Result<_, _>>()?)
    }

    /// A node's state changes, oldest first.
    pub fn events(&self, uuid: &str) -> Result<Vec<EventRow>, StoreError> {
        self.for_node(
            uuid,
            "SELECT at, from_state, to_state, detail FROM events WHERE uuid = ?1 ORDER BY id",
            |r| {
                Ok(EventRow {
                    at: rfc3339(r.get(0)?),
                    from_state: r.get(1)?,
                    to_state: r.get(2)?,
                    detail: r.get(3)?,
                })
            },
        )
    }

    /// A node's deploys, oldest first.
    pub fn deploys(&self, uuid: &str) -> Result<Vec<DeployRow>, StoreError> {
        let sql = format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE uuid = ?1 ORDER BY id");
        self.for_node(uuid, &sql, deploy_row)
    }

    /// Rows of `sql` (one `?1` = uuid); an unknown node is an error, not an empty list.
    fn for_node<T>(
        &self,
        uuid: &str,
        sql: &str,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.lock();
        let tx = conn.unchecked_transaction()?;
        require_node(&tx, uuid)?;
        let rows = tx.prepare(sql)?.query_map([uuid], map)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// No deploy survives a restart: close the node's open deploy rows and fail a node that was in
/// the middle of one (`deploying`, or `wait call-back` for the boot loader with its row open).
fn recover(
    tx: &Transaction<'_>,
    uuid: &str,
    label: &str,
    state: ProvisionState,
    since: f64,
    now: f64,
) -> Result<Option<String>, StoreError> {
    let sql = "SELECT MIN(started_at) FROM deploys WHERE uuid = ?1 AND finished_at IS NULL";
    let open: Option<f64> = tx.query_row(sql, [uuid], |r| r.get(0))?;
    if state != ProvisionState::Deploying && open.is_none() {
        return Ok(None);
    }
    let reason = format!(
        "the service stopped while the deploy was running (started at {}); nothing more was written; retry the deploy",
        rfc3339(open.unwrap_or(since))
    );
    let sql = "UPDATE deploys SET finished_at = ?2, outcome = ?3, error = ?4 WHERE uuid = ?1 AND finished_at IS NULL";
    tx.execute(sql, params![uuid, now, ProvisionState::DeployFailed.as_str(), reason])?;
    let was = state.as_str();
    if matches!(state, ProvisionState::Deploying | ProvisionState::WaitCallBack) {
        set_state(
            tx,
            uuid,
            state,
            ProvisionState::DeployFailed,
            Some(&reason),
            &reason,
            now,
        )?;
        Ok(Some(format!("node {label}: was {was}; now deploy failed: {reason}")))
    } else {
        Ok(Some(format!(
            "node {label}: closed a deploy left open in {was}: {reason}"
        )))
    }
}

fn require_node(conn: &Connection, uuid: &str) -> Result<(), StoreError> {
    let found = conn
        .query_row("SELECT 1 FROM nodes WHERE uuid = ?1", [uuid], |_| Ok(()))
        .optional()?;
    found.ok_or_else(|| StoreError::UnknownNode(uuid.into()))
}

fn set_state(
    tx: &Transaction<'_>,
    uuid: &str,
    from: ProvisionState,
    to: ProvisionState,
    error: Option<&str>,
    detail: &str,
    now: f64,
) -> Result<(), StoreError> {
    let clears = matches!(
        to,
        ProvisionState::Available | ProvisionState::WaitCallBack | ProvisionState::Deploying | ProvisionState::Active
    );
    tx.execute(
        "UPDATE nodes SET provision_state = ?2, updated_at = ?3, \
         state_since = CASE WHEN provision_state = ?2 THEN state_since ELSE ?3 END, \
         last_error = CASE WHEN ?4 IS NOT NULL THEN ?4 WHEN ?5 THEN NULL ELSE last_error END WHERE uuid = ?1",
        params![uuid, to, now, error, clears],
    )?;
    add_event(tx, uuid, Some(from), to, detail, now)
}

fn add_event(
    tx: &Transaction<'_>,
    uuid: &str,
    from: Option<ProvisionState>,
    to: ProvisionState,
    detail: &str,
    now: f64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO events (uuid, at, from_state, to_state, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![uuid, now, from, to, detail],
    )?;
    Ok(())
}

fn node_row(r: &Row<'_>) -> rusqlite::Result<NodeRow> {
    Ok(NodeRow {
        uuid: r.get(0)?,
        name: r.get(1)?,
        provision_state: r.get(2)?,
        last_error: r.get(3)?,
        created_at: rfc3339(r.get(4)?),
        updated_at: rfc3339(r.get(5)?),
        state_since: r.get(6)?,
        has_configdrive: r.get(7)?,
    })
}

fn deploy_row(r: &Row<'_>) -> rusqlite::Result<DeployRow> {
    let count = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
    Ok(DeployRow {
        id: r.get(0)?,
        uuid: r.get(1)?,
        started_at: rfc3339(r.get(2)?),
        finished_at: r.get::<_, Option<f64>>(3)?.map(rfc3339),
        outcome: r.get(4)?,
        address: r.get(5)?,
        bytes_sent: count(6)?,
        bytes_zeroed: count(7)?,
        image_bytes: count(8)?,
        seconds: r.get(9)?,
        mib_per_second: r.get(10)?,
        root_uuid: r.get(11)?,
        disk_identifier: r.get(12)?,
        error: r.get(13)?,
    })
}

fn label(uuid: &str, name: Option<&str>) -> String {
    name.map_or_else(|| uuid.to_owned(), |name| format!("{uuid} ({name})"))
}

/// SQLite integers are signed; no byte count reaches 2^63.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `unix_seconds` as RFC 3339 UTC with microseconds and `+00:00`, the way Ironic prints times.
pub fn rfc3339(unix_seconds: f64) -> String {
    // Float to int casts saturate (NaN gives 0): no input can panic here.
    let micros = (unix_seconds * 1e6).round() as i64;
    let (secs, micro) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a proleptic Gregorian date, by 400-year eras of 146097 days
    // starting on 0000-03-01 so that the leap day is the last day of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{micro:06}+00:00")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::ProvisionState::*;
    use super::*;

    const A: &str = "11111111-1111-4111-8111-111111111111";
    const B: &str = "22222222-2222-4222-8222-222222222222";
    const C: &str = "33333333-3333-4333-8333-333333333333";
    const D: &str = "44444444-4444-4444-8444-444444444444";

    fn spec(uuid: &str, name: Option<&str>) -> NodeSpec {
        let text = format!("[[node]]\nuuid = {uuid:?}\ndeploy_key = \"0123456789abcdef\"\nimage = \"/i.img\"\n");
        let mut node = super::super::nodes::parse(&text, Path::new("t.toml"))
            .unwrap()
            .remove(0);
        node.name = name.map(Into::into);
        node
    }

    fn state(store: &Store, uuid: &str) -> (ProvisionState, Option<String>) {
        let node = store.node(uuid).unwrap().unwrap();
        (node.provision_state, node.last_error)
    }

    #[test]
    fn provision_state_strings_are_ironics() {
        for (state, text) in [
            (WaitCallBack, "wait call-back"),
            (Deploying, "deploying"),
            (Active, "active"),
        ] {
            assert_eq!((state.as_str(), ProvisionState::parse(text)), (text, Some(state)));
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("{text:?}"));
        }
        assert_eq!(ProvisionState::parse("deploy failed"), Some(DeployFailed));
        assert_eq!(ProvisionState::parse("DEPLOYWAIT"), None);
    }

    #[test]
    fn sync_adds_nodes_in_wait_call_back() {
        let store = Store::open_in_memory().unwrap();
        let log = store
            .sync_nodes(&[spec(B, None), spec(A, Some("rack1-node1"))])
            .unwrap();
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(
            log.iter()
                .any(|l| l.contains(A) && l.contains("rack1-node1") && l.contains("added")),
            "{log:?}"
        );
        let nodes = store.nodes().unwrap();
        assert_eq!(nodes.iter().map(|n| n.uuid.as_str()).collect::<Vec<_>>(), [A, B]);
        assert!(
            nodes
                .iter()
                .all(|n| n.provision_state == WaitCallBack && n.last_error.is_none())
        );
        assert_eq!(nodes[0].name.as_deref(), Some("rack1-node1"));
        assert_eq!(store.events(A).unwrap()[0].to_state, WaitCallBack);
        assert!(store.node(C).unwrap().is_none());
        assert!(matches!(store.events(C), Err(StoreError::UnknownNode(_))));
        assert!(matches!(
            store.transition(C, Active, None, "x"),
            Err(StoreError::UnknownNode(_))
        ));
        assert!(matches!(
            store.start_deploy(C, "10.0.0.9"),
            Err(StoreError::UnknownNode(_))
        ));
        // A second sync with the same file changes nothing.
        assert_eq!(
            store
                .sync_nodes(&[spec(A, Some("rack1-node1")), spec(B, None)])
                .unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(store.events(A).unwrap().len(), 1);
    }

    #[test]
    fn transitions_write_events_in_order_and_keep_last_error_by_the_rules() {
        let store = Store::open_in_memory().unwrap();
        store.sync_nodes(&[spec(A, None)]).unwrap();
        store.transition(A, Deploying, None, "callback from 10.0.0.5").unwrap();
        store
            .transition(A, DeployFailed, Some("login refused"), "deploy failed")
            .unwrap();
        assert_eq!(state(&store, A), (DeployFailed, Some("login refused".into())));
        let failed_since = store.node(A).unwrap().unwrap().state_since;
        std::thread::sleep(Duration::from_millis(5));
        store.transition(A, DeployFailed, None, "still failed").unwrap();
        let again = store.node(A).unwrap().unwrap();
        assert_eq!(again.state_since, failed_since, "the same state keeps its start");
        assert!(again.updated_at > again.created_at);
        assert_eq!(
            state(&store, A),
            (DeployFailed, Some("login refused".into())),
            "None keeps in deploy failed"
        );
        store.transition(A, WaitCallBack, None, "retry").unwrap();
        assert!(
            store.node(A).unwrap().unwrap().state_since > failed_since,
            "a new state starts now"
        );
        assert_eq!(state(&store, A), (WaitCallBack, None), "None clears on wait call-back");
        store
            .transition(A, Deploying, Some("warning kept"), "callback")
            .unwrap();
        assert_eq!(
            state(&store, A),
            (Deploying, Some("warning kept".into())),
            "Some always sets"
        );
        store.transition(A, Active, None, "done").unwrap();
        assert_eq!(state(&store, A), (Active, None));
        let events = store.events(A).unwrap();
        let path: Vec<_> = events
            .iter()
            .map(|e| (e.from_state, e.to_state, e.detail.as_str()))
            .collect();
        assert_eq!(
            path,
            [
                (None, WaitCallBack, "added from the nodes file"),
                (Some(WaitCallBack), Deploying, "callback from 10.0.0.5"),
                (Some(Deploying), DeployFailed, "deploy failed"),
                (Some(DeployFailed), DeployFailed, "still failed"),
                (Some(DeployFailed), WaitCallBack, "retry"),
                (Some(WaitCallBack), Deploying, "callback"),
                (Some(Deploying), Active, "done"),
            ]
        );
    }

    #[test]
    fn deploy_rows_start_and_finish() {
        let store = Store::open_in_memory().unwrap();
        store.sync_nodes(&[spec(A, None)]).unwrap();
        let id = store.start_deploy(A, "10.0.0.5").unwrap();
        let open = store.deploys(A).unwrap();
        assert_eq!(
            (open[0].id, open[0].address.as_deref(), &open[0].finished_at),
            (id, Some("10.0.0.5"), &None)
        );
        let done = DeployRow {
            outcome: Some("active".into()),
            bytes_sent: 5 << 30,
            bytes_zeroed: 1 << 20,
            image_bytes: 7 << 30,
            seconds: 12.5,
            mib_per_second: 409.6,
            root_uuid: Some("c0ffee00-0000-4000-8000-000000000000".into()),
            ..DeployRow::default()
        };
        store.finish_deploy(id, &done).unwrap();
        assert!(matches!(store.finish_deploy(id, &done), Err(StoreError::DeployNotOpen(i)) if i == id));
        assert!(matches!(
            store.finish_deploy(999, &done),
            Err(StoreError::DeployNotOpen(999))
        ));
        let row = store.deploys(A).unwrap().remove(0);
        assert!(row.finished_at.is_some() && row.started_at.ends_with("+00:00"));
        assert_eq!(
            (
                row.outcome.as_deref(),
                row.bytes_sent,
                row.bytes_zeroed,
                row.image_bytes
            ),
            (Some("active"), 5 << 30, 1 << 20, 7 << 30)
        );
        assert_eq!(
            (row.seconds, row.mib_per_second, row.root_uuid, row.error),
            (12.5, 409.6, done.root_uuid, None)
        );
        let second = store.start_deploy(A, "10.0.0.6").unwrap();
        assert_eq!(
            store.deploys(A).unwrap().iter().map(|d| d.id).collect::<Vec<_>>(),
            [id, second]
        );
    }

    #[test]
    fn reopen_keeps_everything_and_fails_interrupted_deploys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let (deploying_id, waiting_id) = {
            let store = Store::open(&path).unwrap();
            store
                .sync_nodes(&[spec(A, Some("a")), spec(B, None), spec(C, None), spec(D, None)])
                .unwrap();
            // A: called back and was writing; B: waiting for the boot-loader callback; C: done;
            // D: stopped between its callback and its deploy row.
            store.transition(D, Deploying, None, "callback").unwrap();
            store.transition(A, Deploying, None, "callback").unwrap();
            let a = store.start_deploy(A, "10.0.0.1").unwrap();
            store.transition(B, Deploying, None, "callback").unwrap();
            let b = store.start_deploy(B, "10.0.0.2").unwrap();
            store
                .transition(B, WaitCallBack, None, "waiting for pass_bootloader_install_info")
                .unwrap();
            store.transition(C, Active, None, "done").unwrap();
            (a, b)
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(store.events(C).unwrap().len(), 2, "history survives the reopen");
        let log = store
            .sync_nodes(&[spec(A, Some("a")), spec(B, None), spec(D, None)])
            .unwrap();
        assert_eq!(log.len(), 4, "{log:?}");
        assert!(
            log[0].contains(&format!("{A} (a): was deploying; now deploy failed")),
            "{log:?}"
        );
        assert!(log[1].contains(B) && log[1].contains("was wait call-back"), "{log:?}");
        assert!(log[2].contains(C) && log[2].contains("removed"), "{log:?}");
        assert!(log[3].contains(D) && log[3].contains("was deploying"), "{log:?}");
        let d = store.node(D).unwrap().unwrap();
        assert_eq!(d.provision_state, DeployFailed);
        let began = store.events(D).unwrap().remove(1).at;
        assert!(
            d.last_error
                .unwrap_or_default()
                .contains(&format!("(started at {began})"))
        );
        assert!(store.deploys(D).unwrap().is_empty());
        for (uuid, id) in [(A, deploying_id), (B, waiting_id)] {
            let (st, err) = state(&store, uuid);
            let err = err.unwrap_or_default();
            assert_eq!(st, DeployFailed);
            assert!(
                err.starts_with("the service stopped while the deploy was running (started at 20"),
                "{err}"
            );
            assert!(err.ends_with("nothing more was written; retry the deploy"), "{err}");
            let row = store.deploys(uuid).unwrap().remove(0);
            assert_eq!(
                (row.id, row.outcome.as_deref(), row.error.as_deref()),
                (id, Some("deploy failed"), Some(&*err))
            );
            assert!(row.finished_at.is_some());
            let last = store.events(uuid).unwrap().pop().unwrap();
            assert_eq!((last.to_state, last.detail), (DeployFailed, err));
        }
        assert_eq!(state(&store, C), (Active, None));
        assert_eq!(store.nodes().unwrap().len(), 4, "a removed node keeps its row");
        // Recovered once: the next start finds nothing to do but the removed node.
        let again = store
            .sync_nodes(&[spec(A, Some("a")), spec(B, None), spec(D, None)])
            .unwrap();
        assert_eq!(again.len(), 1, "{again:?}");
    }

    #[test]
    fn transition_if_changes_state_and_config_drive_together_or_nothing() {
        let store = Store::open_in_memory().unwrap();
        store.sync_nodes(&[spec(A, None)]).unwrap();
        let refused = store.transition_if(A, &[Active], WaitCallBack, None, "rebuild", ConfigDriveChange::Set("x"));
        assert!(
            matches!(
                refused,
                Err(StoreError::NotInState {
                    state: WaitCallBack,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(store.configdrive(A).unwrap(), None, "a refused change sets nothing");
        assert_eq!(store.events(A).unwrap().len(), 1);
        let from = store
            .transition_if(
                A,
                &[WaitCallBack],
                Available,
                None,
                "deleted",
                ConfigDriveChange::Set("H4sI"),
            )
            .unwrap();
        assert_eq!(from, WaitCallBack);
        let node = store.node(A).unwrap().unwrap();
        assert_eq!((node.provision_state, node.has_configdrive), (Available, true));
        assert_eq!(store.configdrive(A).unwrap().as_deref(), Some("H4sI"));
        store
            .transition_if(A, &[Available], WaitCallBack, None, "active", ConfigDriveChange::Keep)
            .unwrap();
        assert_eq!(store.configdrive(A).unwrap().as_deref(), Some("H4sI"), "kept");
        store
            .transition_if(A, &[WaitCallBack], Available, None, "deleted", ConfigDriveChange::Clear)
            .unwrap();
        assert!(!store.node(A).unwrap().unwrap().has_configdrive);
        assert!(matches!(store.configdrive(C), Err(StoreError::UnknownNode(_))));
        assert!(matches!(
            store.transition_if(C, &[Active], Active, None, "x", ConfigDriveChange::Keep),
            Err(StoreError::UnknownNode(_))
        ));
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO nodes (uuid, name, provision_state, created_at, updated_at, state_since) \
             VALUES (?1, 'n', 'active', 1, 1, 1)",
            [A],
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        let node = store.node(A).unwrap().unwrap();
        assert_eq!((node.provision_state, node.has_configdrive), (Active, false));
        let version: i64 = store.lock().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn open_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::SchemaTooNew { found: 7, supported: 2 })
        ));
        let err = Store::open(&dir.path().join("no/such/dir/db")).unwrap_err();
        assert!(
            matches!(err, StoreError::Open { .. }) && err.to_string().contains("no/such/dir"),
            "{err}"
        );
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(rfc3339(951_782_400.5), "2000-02-29T00:00:00.500000+00:00");
        assert_eq!(rfc3339(1_795_633_384.123_456), "2026-11-25T19:03:04.123456+00:00");
        assert_eq!(rfc3339(951_868_799.0), "2000-02-29T23:59:59.000000+00:00");
        assert_eq!(rfc3339(4_107_542_400.0), "2100-03-01T00:00:00.000000+00:00");
        assert_eq!(rfc3339(-1.0), "1969-12-31T23:59:59.000000+00:00");
        assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00.000000+00:00");
        let _ = rfc3339(f64::INFINITY);
    }

    #[test]
    fn store_is_shared_between_threads() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let uuids = [A, B, C];
        store.sync_nodes(&uuids.map(|u| spec(u, None))).unwrap();
        let handles: Vec<_> = uuids
            .into_iter()
            .map(|uuid| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for round in 0..20 {
                        store
                            .transition(uuid, Deploying, None, &format!("round {round}"))
                            .unwrap();
                        let id = store.start_deploy(uuid, "10.0.0.1").unwrap();
                        let row = DeployRow {
                            outcome: Some("active".into()),
                            ..DeployRow::default()
                        };
                        store.finish_deploy(id, &row).unwrap();
                        store.transition(uuid, Active, None, &format!("round {round}")).unwrap();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        for uuid in uuids {
            let events = store.events(uuid).unwrap();
            assert_eq!(events.len(), 41);
            assert_eq!(events.last().map(|e| e.detail.as_str()), Some("round 19"));
            assert!(store.deploys(uuid).unwrap().iter().all(|d| d.finished_at.is_some()));
        }
    }
}
