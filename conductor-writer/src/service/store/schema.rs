//! The schema, the same for SQLite and PostgreSQL, and its migrations.
//!
//! The first version is what the first release made; each migration takes
//! one version to the next, in one transaction with the version it
//! records. Type words are the dialect's ([`render_ddl`]). SQLite keeps the
//! version in `PRAGMA user_version`, as databases of earlier releases
//! already do; PostgreSQL in the table `conductor_writer_schema`.

use super::StoreError;
use super::db::{Dialect, Tx, render_ddl};

pub const SCHEMA_VERSION: i64 = 3;

/// Version 1.
pub const BASE: &str = "
CREATE TABLE nodes (uuid TEXT PRIMARY KEY NOT NULL, name TEXT, provision_state TEXT NOT NULL, last_error TEXT,
    created_at {real} NOT NULL, updated_at {real} NOT NULL, state_since {real} NOT NULL);
CREATE TABLE events (id {id}, uuid TEXT NOT NULL REFERENCES nodes(uuid), at {real} NOT NULL,
    from_state TEXT, to_state TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX events_by_node ON events(uuid, id);
CREATE TABLE deploys (id {id}, uuid TEXT NOT NULL REFERENCES nodes(uuid), started_at {real} NOT NULL,
    finished_at {real}, outcome TEXT, address TEXT, bytes_sent {int} NOT NULL DEFAULT 0,
    bytes_zeroed {int} NOT NULL DEFAULT 0, image_bytes {int} NOT NULL DEFAULT 0, seconds {real} NOT NULL DEFAULT 0,
    mib_per_second {real} NOT NULL DEFAULT 0, root_uuid TEXT, disk_identifier TEXT, error TEXT);
CREATE INDEX deploys_by_node ON deploys(uuid, id);
";

/// `MIGRATIONS[v - 1]` takes version `v` to `v + 1`.
pub const MIGRATIONS: [&str; 2] = [
    // 2: a config drive given by a provision request.
    "ALTER TABLE nodes ADD COLUMN configdrive TEXT;",
    // 3: several instances on one database. Each node keeps its spec from
    // the nodes file, its conductor group, the work its callback asked for,
    // and the claim (holder, token, lease) of the instance doing it; every
    // event and deploy names the instance that made it; instances register.
    "
ALTER TABLE nodes ADD COLUMN spec TEXT;
ALTER TABLE nodes ADD COLUMN conductor_group TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN conductor TEXT;
ALTER TABLE nodes ADD COLUMN reservation TEXT;
ALTER TABLE nodes ADD COLUMN claim TEXT;
ALTER TABLE nodes ADD COLUMN lease_until {real};
ALTER TABLE nodes ADD COLUMN work TEXT;
ALTER TABLE nodes ADD COLUMN progress_done {int} NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN progress_total {int} NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN conductor TEXT;
ALTER TABLE deploys ADD COLUMN conductor TEXT;
CREATE INDEX nodes_by_state ON nodes(provision_state);
CREATE TABLE conductors (name TEXT PRIMARY KEY NOT NULL, conductor_group TEXT NOT NULL, hostname TEXT NOT NULL,
    incarnation TEXT NOT NULL, online {int} NOT NULL, started_at {real} NOT NULL, heartbeat_at {real} NOT NULL);
",
];

/// An arbitrary constant: the advisory lock schema changes take on PostgreSQL.
const MIGRATION_LOCK: i64 = 0x636f_6e64_7563_7401;

/// Bring the database to [`SCHEMA_VERSION`] (in `tx`, which the caller commits).
pub async fn migrate(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    let dialect = tx.dialect();
    tx.serialise(MIGRATION_LOCK).await?;
    let found = version(tx).await?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        tx.batch(&render_ddl(BASE, dialect)).await?;
    }
    for migration in &MIGRATIONS[usize::try_from(found.max(1) - 1).unwrap_or(0)..] {
        tx.batch(&render_ddl(migration, dialect)).await?;
    }
    if found != SCHEMA_VERSION {
        set_version(tx, SCHEMA_VERSION).await?;
    }
    Ok(())
}

async fn version(tx: &mut Tx<'_>) -> Result<i64, StoreError> {
    match tx.dialect() {
        Dialect::Sqlite => Ok(tx.query_opt("PRAGMA user_version", &[]).await?.map_or(0, |r| r.int(0))),
        Dialect::Postgres => {
            tx.batch("CREATE TABLE IF NOT EXISTS conductor_writer_schema (version BIGINT NOT NULL)")
                .await?;
            Ok(tx
                .query_opt("SELECT max(version) FROM conductor_writer_schema", &[])
                .await?
                .map_or(0, |r| r.int(0)))
        }
    }
}

/// Record `version` (part of the caller's transaction).
pub async fn set_version(tx: &mut Tx<'_>, version: i64) -> Result<(), StoreError> {
    match tx.dialect() {
        Dialect::Sqlite => tx.batch(&format!("PRAGMA user_version = {version}")).await,
        Dialect::Postgres => {
            tx.batch(&format!(
                "DELETE FROM conductor_writer_schema; INSERT INTO conductor_writer_schema VALUES ({version})"
            ))
            .await
        }
    }
}
