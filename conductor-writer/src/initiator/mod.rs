//! A pipelined iSCSI initiator over tokio.
//!
//! [`Session::connect`] logs in; [`Session::command`] may be called from
//! many tasks at once. One task per connection runs the protocol machine
//! ([`iscsi_proto::initiator::Connection`]): commands go out as the
//! target's CmdSN window allows, write data rides as immediate data,
//! unsolicited Data-Out and R2T answers exactly as negotiated, and what the
//! target sends is checked before it is believed. A lost connection is
//! replaced by a new login and the commands it took with it are sent again
//! ([`Recovery`]).

mod connection;
mod wire;

pub use connection::Completion;

use connection::{Reply, Request, RequestKind};
use iscsi_proto::login::{InitiatorConfig, InitiatorLogin, InitiatorStep, LoginError, LoginOutcome};
use iscsi_proto::pdu::{LogoutResponseCode, TaskFunction, TmfResponse};
use iscsi_proto::text::Pair;
use iscsi_proto::{Itt, Lun};
use iscsi_wire::Payload;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};
use wire::{PduReader, PduWriter};

/// Why a session operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("login to {addr} failed: {error}")]
    Login { addr: SocketAddr, error: LoginError },
    #[error("login to {addr} timed out")]
    LoginTimeout { addr: SocketAddr },
    #[error("connection to the target lost: {0}")]
    ConnectionLost(String),
    #[error(
        "lost the connection to {addr} ({lost}) and could not log in again within {} s: {last}; is the target still up?",
        within.as_secs()
    )]
    Unrecoverable {
        addr: SocketAddr,
        lost: String,
        within: Duration,
        last: Box<SessionError>,
    },
    #[error("the target rejected a PDU: {0}")]
    Rejected(String),
    #[error("protocol error from the target: {0}")]
    Protocol(String),
}

impl SessionError {
    /// Whether logging in again may help: the target was unreachable, or
    /// refused for now (status class 3, RFC 7143 11.13.5). Refusals of the
    /// initiator itself (wrong secret, unknown target) are final.
    fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::LoginTimeout { .. } | Self::ConnectionLost(_) => true,
            Self::Login {
                error: LoginError::Refused { status, .. },
                ..
            } => status.class == 3,
            _ => false,
        }
    }
}

/// How a session notices a dead target and survives a lost connection:
/// error recovery level 0, session reinstatement (RFC 7143 6.3.5). A new
/// leading login with the same ISID replaces the old session, and every
/// command that had not completed is sent again on the new connection. The
/// writer's commands (READ, WRITE, WRITE SAME, SYNCHRONIZE CACHE) are
/// idempotent, so one that ran before the connection broke may run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Keep trying to log in again for this long; zero turns recovery off.
    pub within: Duration,
    /// With commands outstanding, ping the target after this much silence.
    pub ping_after: Duration,
    /// With commands outstanding, call the connection lost after this much
    /// silence (the ping unanswered too).
    pub dead_after: Duration,
}

impl Default for Recovery {
    fn default() -> Self {
        Self {
            within: Duration::from_secs(30),
            ping_after: Duration::from_secs(5),
            dead_after: Duration::from_secs(20),
        }
    }
}

/// One logged-in connection and the task that serves it.
#[derive(Debug)]
struct Link {
    requests: mpsc::Sender<Request>,
    outcome: Arc<LoginOutcome>,
    /// Counts the logins of a session: which link a failure belongs to.
    generation: u64,
}

impl Link {
    async fn call(&self, kind: RequestKind) -> Result<Reply, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request { kind, reply })
            .await
            .map_err(|_| SessionError::ConnectionLost("the session has ended".into()))?;
        rx.await
            .map_err(|_| SessionError::ConnectionLost("the session has ended".into()))?
    }
}

/// Connect to `addr`, log in with `config` and start the connection's task.
async fn login(
    addr: SocketAddr,
    config: InitiatorConfig,
    timeout: Duration,
    recovery: Recovery,
    generation: u64,
) -> Result<Link, SessionError> {
    let connect = TcpStream::connect(addr);
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| SessionError::Connect {
            addr,
            message: "timed out".into(),
        })?
        .map_err(|e| SessionError::Connect {
            addr,
            message: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = PduReader::new(read, iscsi_proto::codec::Direction::FromTarget);
    let mut writer = PduWriter::new(write);
    let login = async {
        let mut nonce = [0u8; 64];
        getrandom::fill(&mut nonce).map_err(|e| SessionError::Protocol(format!("no randomness: {e}")))?;
        let mut login = InitiatorLogin::new(config, nonce);
        let mut request = login.start();
        loop {
            writer
                .send(&request)
                .await
                .map_err(|e| SessionError::ConnectionLost(e.to_string()))?;
            let response = reader
                .next()
                .await
                .map_err(|e| SessionError::ConnectionLost(e.to_string()))?;
            match login.step(&response) {
                InitiatorStep::Send(next) => request = next,
                InitiatorStep::Complete(outcome) => return Ok(*outcome),
                InitiatorStep::Fail(error) => return Err(SessionError::Login { addr, error }),
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, login)
        .await
        .map_err(|_| SessionError::LoginTimeout { addr })??;
    reader.set_framing(outcome.connection.receive_framing());
    writer.set_framing(outcome.connection.send_framing());
    let outcome = Arc::new(outcome);
    let (requests, rx) = mpsc::channel(1024);
    let span = info_span!("session", %addr, tsih = outcome.tsih.0);
    let liveness = iscsi_proto::initiator::Liveness {
        ping_after: recovery.ping_after,
        dead_after: recovery.dead_after,
    };
    let task = connection::run(reader, writer, outcome.clone(), rx, liveness);
    tokio::spawn(task.instrument(span));
    Ok(Link {
        requests,
        outcome,
        generation,
    })
}

/// A logged-in session (one connection at a time), logging in again when
/// its connection is lost, as its [`Recovery`] says.
#[derive(Debug)]
pub struct Session {
    addr: SocketAddr,
    config: InitiatorConfig,
    timeout: Duration,
    recovery: Recovery,
    link: Mutex<Arc<Link>>,
    /// Held while logging in again, so that one task does it.
    relogin: tokio::sync::Mutex<()>,
}

impl Session {
    /// Connect to `addr` and log in with `config`, with the default [`Recovery`].
    pub async fn connect(addr: SocketAddr, config: InitiatorConfig, timeout: Duration) -> Result<Self, SessionError> {
        Self::connect_with(addr, config, timeout, Recovery::default()).await
    }

    /// Connect to `addr` and log in with `config`.
    pub async fn connect_with(
        addr: SocketAddr,
        config: InitiatorConfig,
        timeout: Duration,
        recovery: Recovery,
    ) -> Result<Self, SessionError> {
        let link = login(addr, config.clone(), timeout, recovery, 0).await?;
        Ok(Self {
            addr,
            config,
            timeout,
            recovery,
            link: Mutex::new(Arc::new(link)),
            relogin: tokio::sync::Mutex::new(()),
        })
    }

    fn link(&self) -> Arc<Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// What the latest login negotiated.
    #[must_use]
    pub fn outcome(&self) -> Arc<LoginOutcome> {
        self.link().outcome.clone()
    }

    /// How many times the session has logged in again.
    #[must_use]
    pub fn reinstatements(&self) -> u64 {
        self.link().generation
    }

    /// Send `kind` and wait for its reply. If the connection is lost first,
    /// log in again and send it again (SCSI commands, text, pings).
    async fn call(&self, mut kind: RequestKind) -> Result<Reply, SessionError> {
        loop {
            let link = self.link();
            let again = kind.retriable().then(|| kind.clone());
            match link.call(kind).await {
                Err(SessionError::ConnectionLost(lost)) if !self.recovery.within.is_zero() => {
                    let Some(again) = again else {
                        return Err(SessionError::ConnectionLost(lost));
                    };
                    self.reinstate(link.generation, lost).await?;
                    kind = again;
                }
                other => return other,
            }
        }
    }

    /// Replace the lost link of `generation` by a new login (unless another
    /// caller already has), trying for [`Recovery::within`].
    async fn reinstate(&self, generation: u64, lost: String) -> Result<(), SessionError> {
        let _only_one = self.relogin.lock().await;
        if self.link().generation != generation {
            return Ok(());
        }
        warn!(addr = %self.addr, %lost, "connection lost; logging in again (session reinstatement)");
        let deadline = tokio::time::Instant::now() + self.recovery.within;
        let mut pause = Duration::from_millis(100);
        loop {
            let attempt = login(
                self.addr,
                self.config.clone(),
                self.timeout,
                self.recovery,
                generation + 1,
            );
            let error = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(link)) => {
                    info!(addr = %self.addr, tsih = link.outcome.tsih.0, "session reinstated");
                    *self.link.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(link);
                    return Ok(());
                }
                Ok(Err(e)) if e.is_transient() => e,
                Ok(Err(e)) => return Err(e),
                Err(_) => SessionError::LoginTimeout { addr: self.addr },
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(SessionError::Unrecoverable {
                    addr: self.addr,
                    lost,
                    within: self.recovery.within,
                    last: Box::new(error),
                });
            }
            debug!(%error, "logging in again failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Run a SCSI command: `cdb` on `lun`, sending `data_out`, receiving up
    /// to `read_len` bytes.
    pub async fn command(
        &self,
        lun: Lun,
        cdb: &[u8],
        data_out: impl Into<Payload>,
        read_len: u32,
    ) -> Result<Completion, SessionError> {
        match self
            .call(RequestKind::Scsi {
                lun,
                cdb: cdb.to_vec(),
                data_out: data_out.into(),
                read_len,
            })
            .await?
        {
            Reply::Scsi(c) => Ok(c),
            other => Err(SessionError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// A Text Request exchange (e.g. SendTargets).
    pub async fn text(&self, pairs: Vec<Pair>) -> Result<Vec<Pair>, SessionError> {
        match self.call(RequestKind::Text(pairs)).await? {
            Reply::Text(pairs) => Ok(pairs),
            other => Err(SessionError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Ping the target.
    pub async fn ping(&self) -> Result<(), SessionError> {
        match self.call(RequestKind::Ping(bytes::Bytes::new())).await? {
            Reply::Pong => Ok(()),
            other => Err(SessionError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// A task management function.
    pub async fn task_management(
        &self,
        function: TaskFunction,
        lun: Lun,
        referenced: Itt,
    ) -> Result<TmfResponse, SessionError> {
        match self
            .call(RequestKind::TaskManagement {
                function,
                lun,
                referenced,
            })
            .await?
        {
            Reply::TaskManagement(r) => Ok(r),
            other => Err(SessionError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Log out (after every command in flight has completed) and close.
    pub async fn logout(self) -> Result<LogoutResponseCode, SessionError> {
        let link = self.link();
        let result = match link.call(RequestKind::Logout).await? {
            Reply::Logout(code) => Ok(code),
            other => Err(SessionError::Protocol(format!("unexpected reply {other:?}"))),
        };
        // The connection's task ends (and closes the socket) after the answer.
        link.requests.closed().await;
        result
    }
}
