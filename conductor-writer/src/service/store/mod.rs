//! What `conductor-writer serve` remembers: each node's provision state, its history, its deploys,
//! and which instance is working on it.
//!
//! A deploy outlives the request that started it and a ramdisk may call back long after. Every
//! state change is committed before the service acts on it, with the instance that made it, so
//! after a crash or restart the operator sees where each node was, and another instance (or the
//! same one, restarted) can pick up what was cut short.
//!
//! One storage layer over two databases: embedded SQLite (the default: a file, nothing to install)
//! or PostgreSQL (several instances on several machines). The queries, the schema and its
//! migrations are the same for both; [`db`] holds the little that differs.
//!
//! # Layout
//!
//! - [`db`]: the two drivers behind one transaction type.
//! - [`schema`]: the schema and its migrations.
//! - `nodes.rs`: nodes, their states and history, their deploys.
//! - [`claims`]: callbacks recorded as work, claims and their leases, takeovers.
//! - `conductors.rs`: the instances sharing the database, their registrations and heartbeats.
//! - this file: where the database is and opening it, its errors, and what every part uses:
//!   provision states, times as Ironic prints them.

macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::service::store::db::Value::from($v)),*][..] };
}

pub mod claims;
mod conductors;
pub mod db;
mod nodes;
pub mod schema;

use std::path::{Path, PathBuf};

use db::{Db, Row};

pub use claims::{Claim, Expired, Finish, Work};
pub use conductors::{Conductor, ConductorRow, Registered};
pub use db::Dialect;
pub use nodes::{ConfigDriveChange, DeployRow, EventRow, NodeRow};

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

    fn from_row(row: &Row, i: usize) -> Result<Self, StoreError> {
        let text = row.text(i)?;
        Self::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("unknown provision state {text:?}")))
    }
}

impl From<ProvisionState> for db::Value {
    fn from(state: ProvisionState) -> Self {
        db::Value::Text(state.as_str().to_owned())
    }
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl Location {
    /// A PostgreSQL URL, or else a SQLite file's path.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Location::Postgres(text.to_owned())
        } else {
            Location::Sqlite(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&db::redact(url)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot connect to the state database {url}: {message}")]
    Connect { url: String, message: String },
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("state database: {0}")]
    Corrupt(String),
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
    NotInState {
        uuid: String,
        state: ProvisionState,
        /// The instance holding the node, if one does.
        holder: Option<String>,
    },
    /// The node's claim is no longer this one: it ran out and another
    /// instance took the node over.
    #[error("node {0} is no longer held by this instance: its claim ran out and another instance took it over")]
    ClaimLost(String),
}

/// tokio-postgres prints "db error" alone; the server's message says what.
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// The state database, shared by the service's tasks (and by other instances).
#[derive(Debug)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Open (SQLite: create) the database at `location` and bring its schema up to date.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        let db = match location {
            Location::Sqlite(path) => Db::Sqlite(tokio::sync::Mutex::new(open_sqlite(path)?)),
            Location::Postgres(url) => Db::Postgres(db::Pool::new(url)?),
        };
        Self::init(db).await
    }

    pub async fn open_in_memory() -> Result<Store, StoreError> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Self::init(Db::Sqlite(tokio::sync::Mutex::new(conn))).await
    }

    async fn init(db: Db) -> Result<Store, StoreError> {
        let mut tx = db.write().await?;
        schema::migrate(&mut tx).await?;
        tx.commit().await?;
        Ok(Store { db })
    }

    #[must_use]
    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// Test hook: the raw schema version.
    #[cfg(test)]
    async fn version(&self) -> Result<i64, StoreError> {
        let mut tx = self.db.read().await?;
        let row = tx.query_opt("PRAGMA user_version", &[]).await?;
        Ok(row.map_or(0, |r| r.int(0)))
    }
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let open = || -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(conn)
    };
    open().map_err(|source| StoreError::Open {
        path: path.into(),
        source,
    })
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
