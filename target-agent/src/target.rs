//! What a portal serves, and the sessions alive on it.

use crate::lu::LogicalUnit;
use iscsi_proto::login::{LoginError, TargetAuth, TargetConfig, TargetEntry};
use iscsi_proto::negotiate::Preferences;
use iscsi_proto::pdu::{Isid, Tsih};
use iscsi_proto::scsi::AdditionalSense;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Everything an operator chooses about a target.
#[derive(Debug, Clone)]
pub struct TargetOptions {
    pub iqn: String,
    pub alias: Option<String>,
    /// The LUN the disk appears at (LUN 0 answers REPORT LUNS and INQUIRY).
    pub lun: u16,
    pub auth: TargetAuth,
    pub prefs: Preferences,
    /// Commands queued per session: the CmdSN window.
    pub queue_depth: u32,
    pub max_sessions: usize,
    /// TCP connections served at once, logged in or not; more are closed
    /// as soon as they are accepted.
    pub max_connections: usize,
    /// Serve one initiator at a time: while an initiator (by name) has a
    /// normal session, logins from any other are refused. A deploy ramdisk's
    /// disk belongs to the conductor that logged in first; that conductor
    /// may still open more sessions and reinstate them.
    pub exclusive: bool,
    /// A login must finish within this time.
    pub login_timeout: Duration,
    /// Idle time before the target pings the initiator with a NOP-In.
    pub nop_interval: Duration,
    /// A ping unanswered for this long drops the connection.
    pub nop_timeout: Duration,
}

impl TargetOptions {
    /// Defaults for a target named `iqn` with its disk at LUN 1, as the
    /// legacy deploy ramdisk exposed it.
    #[must_use]
    pub fn new(iqn: impl Into<String>) -> Self {
        Self {
            iqn: iqn.into(),
            alias: None,
            lun: 1,
            auth: TargetAuth::default(),
            prefs: Preferences::default(),
            queue_depth: 64,
            max_sessions: 16,
            max_connections: 64,
            exclusive: false,
            login_timeout: Duration::from_secs(15),
            nop_interval: Duration::from_secs(10),
            nop_timeout: Duration::from_secs(30),
        }
    }
}

/// The identity of a session: its initiator's name and ISID (RFC 7143
/// 4.4.3: a new leading login with the same pair reinstates it).
pub type SessionKey = (String, Isid);

#[derive(Debug)]
struct Entry {
    tsih: Tsih,
    stop: Arc<Notify>,
    /// Unit attention conditions waiting for this I_T nexus (SAM-5 5.14).
    unit_attentions: VecDeque<AdditionalSense>,
}

/// A target portal: one target with one disk.
#[derive(Debug)]
pub struct Target {
    pub options: TargetOptions,
    pub login_config: Arc<TargetConfig>,
    pub lu: Arc<LogicalUnit>,
    sessions: Mutex<HashMap<SessionKey, Entry>>,
    /// Woken whenever a session leaves the table.
    departed: Notify,
    next_tsih: AtomicU16,
    closing: watch::Sender<bool>,
}

impl Target {
    #[must_use]
    pub fn new(options: TargetOptions, lu: Arc<LogicalUnit>) -> Self {
        let mut config = TargetConfig::new(vec![TargetEntry {
            name: options.iqn.clone(),
            alias: options.alias.clone(),
            auth: options.auth.clone(),
        }]);
        config.prefs = options.prefs.clone();
        config.discovery_auth = options.auth.clone();
        Self {
            options,
            login_config: Arc::new(config),
            lu,
            sessions: Mutex::new(HashMap::new()),
            departed: Notify::new(),
            next_tsih: AtomicU16::new(1),
            closing: watch::Sender::new(false),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A TSIH for a new session (never 0).
    pub fn allocate_tsih(&self) -> Tsih {
        loop {
            let t = self.next_tsih.fetch_add(1, Ordering::Relaxed);
            if t != 0 {
                return Tsih(t);
            }
        }
    }

    /// Number of live normal sessions.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.table().len()
    }

    /// Register a session, first ending any session with the same key
    /// (reinstatement). Returns the notifier that asks this session to stop.
    pub async fn admit(&self, key: SessionKey, tsih: Tsih) -> Result<Arc<Notify>, LoginError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let departed = self.departed.notified();
            tokio::pin!(departed);
            departed.as_mut().enable();
            {
                let mut table = self.table();
                match table.get(&key) {
                    Some(old) => old.stop.notify_one(),
                    None => {
                        if self.options.exclusive && table.keys().any(|(name, _)| *name != key.0) {
                            return Err(LoginError::NotAuthorized("another initiator is using the disk"));
                        }
                        if table.len() >= self.options.max_sessions {
                            return Err(LoginError::OutOfResources("too many sessions"));
                        }
                        let stop = Arc::new(Notify::new());
                        table.insert(
                            key,
                            Entry {
                                tsih,
                                stop: stop.clone(),
                                unit_attentions: VecDeque::new(),
                            },
                        );
                        return Ok(stop);
                    }
                }
            }
            if tokio::time::timeout_at(deadline, departed).await.is_err() {
                return Err(LoginError::Unavailable(
                    "the session being reinstated did not end in time",
                ));
            }
        }
    }

    /// Remove a session (only if it is still the one with `tsih`).
    pub fn depart(&self, key: &SessionKey, tsih: Tsih) {
        let mut table = self.table();
        if table.get(key).is_some_and(|e| e.tsih == tsih) {
            table.remove(key);
        }
        drop(table);
        self.departed.notify_waiters();
    }

    /// Establish a unit attention condition for every session (e.g. after
    /// a LOGICAL UNIT RESET: SAM-5 has it reported on every I_T nexus,
    /// including the one that asked for the reset).
    pub fn raise_unit_attention(&self, condition: AdditionalSense) {
        for entry in self.table().values_mut() {
            if !entry.unit_attentions.contains(&condition) {
                entry.unit_attentions.push_back(condition);
            }
        }
    }

    /// The oldest unit attention waiting for this session, now reported.
    pub fn take_unit_attention(&self, key: &SessionKey, tsih: Tsih) -> Option<AdditionalSense> {
        let mut table = self.table();
        let entry = table.get_mut(key).filter(|e| e.tsih == tsih)?;
        entry.unit_attentions.pop_front()
    }

    /// Ask every connection to stop: sessions finish their in-flight
    /// commands, logins and discovery sessions end.
    pub fn stop_all(&self) {
        self.closing.send_replace(true);
        for entry in self.table().values() {
            entry.stop.notify_one();
        }
    }

    /// Becomes true when the target is stopping.
    #[must_use]
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Resolves once `closing` says the target is stopping (or its sender is
/// gone).
pub async fn stopping(closing: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: drop it here, not in a select!.
    let _ = closing.wait_for(|c| *c).await;
}
