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
mod tests;
