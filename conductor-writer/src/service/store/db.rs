//! The two databases behind the store, and the little SQL they differ in.
//!
//! The store's queries are written once, with SQLite's `?N` placeholders;
//! for PostgreSQL they become `$N`. Values and rows go through [`Value`]
//! and [`Row`], so neither driver's types leak into the store. What is
//! left differs in one place each: the row lock a read-then-write takes
//! ([`Tx::lock_rows`]), the clock leases are measured by ([`Tx::now`]: the
//! database server's, so that instances on several machines agree), where
//! the schema version lives, and the column types of the schema
//! ([`render_ddl`]).
//!
//! SQLite is one connection in this process (WAL, `synchronous=FULL`, a
//! write transaction is `BEGIN IMMEDIATE`: writers queue, even from other
//! processes on the same file). PostgreSQL is `tokio-postgres` with a
//! small pool of connections; a transaction left unfinished is rolled back
//! before its connection serves again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::StoreError;

/// Which SQL to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One value going in or coming out. Booleans travel as integers (SQLite has
/// none); times are unix seconds as reals.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    /// No count this service keeps reaches 2^63.
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    fn get(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }

    /// A text column that may be NULL.
    pub fn opt_text(&self, i: usize) -> Option<String> {
        match self.get(i) {
            Value::Text(s) => Some(s.clone()),
            Value::Int(v) => Some(v.to_string()),
            Value::Real(v) => Some(v.to_string()),
            Value::Null => None,
        }
    }

    /// A text column that must not be NULL.
    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    pub fn opt_real(&self, i: usize) -> Option<f64> {
        match self.get(i) {
            Value::Real(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            Value::Text(s) => s.parse().ok(),
            Value::Null => None,
        }
    }

    /// A real column; NULL reads as 0.
    pub fn real(&self, i: usize) -> f64 {
        self.opt_real(i).unwrap_or(0.0)
    }

    pub fn opt_int(&self, i: usize) -> Option<i64> {
        match self.get(i) {
            Value::Int(v) => Some(*v),
            Value::Real(v) => Some(*v as i64),
            Value::Text(s) => s.parse().ok(),
            Value::Null => None,
        }
    }

    /// An integer column; NULL reads as 0.
    pub fn int(&self, i: usize) -> i64 {
        self.opt_int(i).unwrap_or(0)
    }

    /// A count column (never negative).
    pub fn count(&self, i: usize) -> u64 {
        u64::try_from(self.int(i)).unwrap_or(0)
    }

    pub fn bool(&self, i: usize) -> bool {
        self.int(i) != 0
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// PostgreSQL infers each parameter's type from the statement; a value is
/// sent as that type when it fits it.
impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Value::Int(v), &Type::FLOAT8) => (*v as f64).to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT4) => (*v as f32).to_sql(ty, out),
            (Value::Text(s), _) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            (value, ty) => Err(format!("cannot send {value:?} as a PostgreSQL {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `sql` with SQLite's `?N` placeholders as PostgreSQL's `$N`. The store's
/// statements hold no `?` in string literals.
#[must_use]
pub fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The schema text with its type words for `dialect`: `{id}` an
/// auto-numbered key, `{real}` a double, `{int}` a 64-bit integer.
#[must_use]
pub fn render_ddl(ddl: &str, dialect: Dialect) -> String {
    let (id, real, int) = match dialect {
        Dialect::Sqlite => ("INTEGER PRIMARY KEY", "REAL", "INTEGER"),
        Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", "BIGINT"),
    };
    ddl.replace("{id}", id).replace("{real}", real).replace("{int}", int)
}

/// Unix seconds by this machine's clock.
#[must_use]
pub fn local_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An open database.
#[derive(Debug)]
pub enum Db {
    Sqlite(tokio::sync::Mutex<rusqlite::Connection>),
    Postgres(Pool),
}

/// A few PostgreSQL connections, made when first needed.
#[derive(Debug, Clone)]
pub struct Pool(Arc<PoolInner>);

#[derive(Debug)]
struct PoolInner {
    config: tokio_postgres::Config,
    /// Where connection errors are reported (the URL without its password).
    shown: String,
    idle: Mutex<Vec<tokio_postgres::Client>>,
    permits: Arc<Semaphore>,
}

/// Connections one instance keeps at most.
const POOL_SIZE: usize = 4;

impl Pool {
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Connect {
            url: redact(url),
            message: format!("not a PostgreSQL URL: {e}"),
        })?;
        Ok(Pool(Arc::new(PoolInner {
            config,
            shown: redact(url),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(POOL_SIZE)),
        })))
    }

    async fn get(&self) -> Result<Pooled, StoreError> {
        let permit = self
            .0
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Corrupt("the connection pool is closed".into()))?;
        let idle = loop {
            let next = self.0.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            match next {
                Some(client) if client.is_closed() => continue,
                other => break other,
            }
        };
        let client = match idle {
            Some(client) => client,
            None => {
                let connecting = self.0.config.connect(tokio_postgres::NoTls);
                let (client, connection) = tokio::time::timeout(Duration::from_secs(15), connecting)
                    .await
                    .map_err(|_| StoreError::Connect {
                        url: self.0.shown.clone(),
                        message: "no answer within 15 s".into(),
                    })?
                    .map_err(|e| StoreError::Connect {
                        url: self.0.shown.clone(),
                        message: e.to_string(),
                    })?;
                let shown = self.0.shown.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(database = %shown, error = %e, "database connection lost");
                    }
                });
                client
            }
        };
        Ok(Pooled {
            pool: self.clone(),
            client: Some(client),
            permit: Some(permit),
        })
    }

    fn put(&self, client: tokio_postgres::Client) {
        if !client.is_closed() {
            self.0.idle.lock().unwrap_or_else(PoisonError::into_inner).push(client);
        }
    }
}

/// A connection of the pool, given back when dropped.
#[derive(Debug)]
struct Pooled {
    pool: Pool,
    client: Option<tokio_postgres::Client>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Pooled {
    fn client(&self) -> &tokio_postgres::Client {
        // Present until drop.
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("a pooled connection is taken only on drop"))
    }
}

/// `postgres://user:secret@host/db` without its secret, for messages.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority
        .rsplit_once('@')
        .and_then(|(user, host)| Some((user.split_once(':')?.0, host)))
    {
        Some((user, host)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// One transaction. Dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub struct Tx<'a> {
    conn: Conn<'a>,
    open: bool,
    now: Option<f64>,
}

#[derive(Debug)]
enum Conn<'a> {
    Sqlite(tokio::sync::MutexGuard<'a, rusqlite::Connection>),
    Postgres(Pooled),
}

impl Db {
    /// A transaction that writes (SQLite takes its write lock at once, so a
    /// read-then-write cannot interleave with another writer).
    pub async fn write(&self) -> Result<Tx<'_>, StoreError> {
        self.begin(true).await
    }

    /// A transaction that only reads.
    pub async fn read(&self) -> Result<Tx<'_>, StoreError> {
        self.begin(false).await
    }

    async fn begin(&self, write: bool) -> Result<Tx<'_>, StoreError> {
        let conn = match self {
            Db::Sqlite(conn) => {
                let conn = conn.lock().await;
                conn.execute_batch(if write { "BEGIN IMMEDIATE" } else { "BEGIN" })?;
                Conn::Sqlite(conn)
            }
            Db::Postgres(pool) => {
                let conn = pool.get().await?;
                conn.client().batch_execute("BEGIN").await?;
                Conn::Postgres(conn)
            }
        };
        Ok(Tx {
            conn,
            open: true,
            now: None,
        })
    }

    #[must_use]
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }
}

impl Tx<'_> {
    #[must_use]
    pub fn dialect(&self) -> Dialect {
        match self.conn {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// `sql` (SQLite placeholders) with its parameters; rows changed.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
            }
            Conn::Postgres(conn) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                Ok(conn.client().execute(&postgres_sql(sql), &refs).await?)
            }
        }
    }

    /// Several statements without parameters (schema changes).
    pub async fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => conn.execute_batch(sql)?,
            Conn::Postgres(conn) => conn.client().batch_execute(sql).await?,
        }
        Ok(())
    }

    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        match &mut self.conn {
            Conn::Sqlite(conn) => sqlite_rows(conn, sql, params),
            Conn::Postgres(conn) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let rows = conn.client().query(&postgres_sql(sql), &refs).await?;
                rows.iter().map(postgres_row).collect()
            }
        }
    }

    pub async fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// What a `SELECT` that goes on to change the rows it read ends with:
    /// PostgreSQL locks them (`FOR UPDATE`, skipping rows another
    /// transaction holds when `skip_locked`); SQLite's write transaction
    /// holds the whole database already.
    #[must_use]
    pub fn lock_rows(&self, skip_locked: bool) -> &'static str {
        match (self.dialect(), skip_locked) {
            (Dialect::Sqlite, _) => "",
            (Dialect::Postgres, false) => " FOR UPDATE",
            (Dialect::Postgres, true) => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Let one such transaction at a time through (start-up sync, schema
    /// changes): PostgreSQL's advisory lock on `key`; SQLite's write
    /// transaction serialises them already.
    pub async fn serialise(&mut self, key: i64) -> Result<(), StoreError> {
        if self.dialect() == Dialect::Postgres {
            self.query("SELECT pg_advisory_xact_lock(?1)::text", params![key])
                .await?;
        }
        Ok(())
    }

    /// The time, the same for the whole transaction: the database server's
    /// clock for PostgreSQL (instances on several machines compare leases
    /// by it), this machine's for SQLite (whose writers share the machine).
    pub async fn now(&mut self) -> Result<f64, StoreError> {
        if let Some(now) = self.now {
            return Ok(now);
        }
        let now = match self.dialect() {
            Dialect::Sqlite => local_now(),
            Dialect::Postgres => self
                .query_opt("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
                .await?
                .map_or_else(local_now, |r| r.real(0)),
        };
        self.now = Some(now);
        Ok(now)
    }

    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        match &mut self.conn {
            Conn::Sqlite(conn) => conn.execute_batch("COMMIT")?,
            Conn::Postgres(conn) => conn.client().batch_execute("COMMIT").await?,
        }
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        match &mut self.conn {
            Conn::Sqlite(conn) => {
                if self.open {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
            Conn::Postgres(conn) => {
                let Some(client) = conn.client.take() else { return };
                let (pool, permit) = (conn.pool.clone(), conn.permit.take());
                if !self.open {
                    pool.put(client);
                    return;
                }
                // Rolled back before the connection serves again; if the
                // runtime is gone, the dropped connection rolls back.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if client.batch_execute("ROLLBACK").await.is_ok() {
                            pool.put(client);
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
}

fn sqlite_rows(conn: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            });
        }
        out.push(Row(values));
    }
    Ok(out)
}

fn postgres_row(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|v| Value::Int(v.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|v| Value::Int(v.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(|v| Value::Int(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(|v| Value::Real(v.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            ref other => {
                return Err(StoreError::Corrupt(format!(
                    "column {} has type {other}, which the store does not read",
                    column.name()
                )));
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
