//! The instances sharing the database: each registers its name at start-up, beats its heart
//! while it runs and goes offline when it stops; `GET /v1/conductors` lists them. This is apart
//! from the claims because it is about processes, not nodes: a claim's lease is what keeps two
//! instances off one node, while a registration only keeps two processes from running under one
//! name and tells the operator which instances are alive.

use super::{Store, StoreError, rfc3339};
use std::time::Duration;

/// This instance, as the database knows it.
#[derive(Debug, Clone)]
pub struct Conductor {
    /// Stable across restarts: the restarted instance is the same conductor.
    pub name: String,
    pub group: String,
    pub hostname: String,
    /// New with each start: tells a restart from a second process with the same name.
    pub incarnation: String,
}

/// An instance that registered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConductorRow {
    pub name: String,
    pub conductor_group: String,
    pub hostname: String,
    pub started_at: String,
    pub heartbeat_at: String,
    /// Online and heard from within the lease time.
    pub alive: bool,
}

/// The answer to registering a name.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    Yes,
    /// Another process with this name beat its heart at `heartbeat_at` (unix seconds).
    Busy {
        heartbeat_at: f64,
    },
}

impl Store {
    /// Register `me` as online. Another process that uses the name and was heard from within
    /// `lease` makes it [`Registered::Busy`] (a restart after a crash waits that long once).
    pub async fn register(&self, me: &Conductor, lease: Duration) -> Result<Registered, StoreError> {
        let mut tx = self.db.write().await?;
        let now = tx.now().await?;
        let sql = format!(
            "SELECT incarnation, online, heartbeat_at FROM conductors WHERE name = ?1{}",
            tx.lock_rows(false)
        );
        if let Some(row) = tx.query_opt(&sql, params![&me.name]).await? {
            let heartbeat_at = row.real(2);
            if row.text(0)? != me.incarnation && row.bool(1) && heartbeat_at > now - lease.as_secs_f64() {
                return Ok(Registered::Busy { heartbeat_at });
            }
            tx.execute("DELETE FROM conductors WHERE name = ?1", params![&me.name])
                .await?;
        }
        tx.execute(
            "INSERT INTO conductors (name, conductor_group, hostname, incarnation, online, started_at, heartbeat_at) \
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
            params![&me.name, &me.group, &me.hostname, &me.incarnation, now],
        )
        .await?;
        tx.commit().await?;
        Ok(Registered::Yes)
    }

    /// `false`: the name was registered again by another process (see [`Store::register`]).
    pub async fn heartbeat(&self, me: &Conductor) -> Result<bool, StoreError> {
        let mut tx = self.db.write().await?;
        let now = tx.now().await?;
        let changed = tx
            .execute(
                "UPDATE conductors SET heartbeat_at = ?3, online = 1 WHERE name = ?1 AND incarnation = ?2",
                params![&me.name, &me.incarnation, now],
            )
            .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    pub async fn unregister(&self, me: &Conductor) -> Result<(), StoreError> {
        let mut tx = self.db.write().await?;
        tx.execute(
            "UPDATE conductors SET online = 0 WHERE name = ?1 AND incarnation = ?2",
            params![&me.name, &me.incarnation],
        )
        .await?;
        tx.commit().await
    }

    /// Every instance that ever registered; alive if online and heard from within `lease`.
    pub async fn conductors(&self, lease: Duration) -> Result<Vec<ConductorRow>, StoreError> {
        let mut tx = self.db.read().await?;
        let now = tx.now().await?;
        let rows = tx
            .query(
                "SELECT name, conductor_group, hostname, started_at, heartbeat_at, online FROM conductors ORDER BY name",
                &[],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(ConductorRow {
                    name: r.text(0)?,
                    conductor_group: r.text(1)?,
                    hostname: r.text(2)?,
                    started_at: rfc3339(r.real(3)),
                    heartbeat_at: rfc3339(r.real(4)),
                    alive: r.bool(5) && r.real(4) > now - lease.as_secs_f64(),
                })
            })
            .collect()
    }
}
