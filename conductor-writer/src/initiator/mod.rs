//! A pipelined iSCSI initiator over tokio.
//!
//! [`Session::connect`] logs in; [`Session::command`] may be called from
//! many tasks at once: commands go out as the target's CmdSN window allows,
//! write data rides as immediate data, unsolicited Data-Out and R2T answers
//! exactly as negotiated, and read data is gathered from Data-In. One task
//! per connection owns the protocol state; a reader task keeps decoding so
//! a long write never stops us from hearing the target.

mod connection;
mod wire;

pub use connection::Completion;

use bytes::Bytes;
use connection::{Reply, Request, RequestKind};
use iscsi_proto::login::{InitiatorConfig, InitiatorLogin, InitiatorStep, LoginError, LoginOutcome};
use iscsi_proto::pdu::{LogoutResponseCode, TaskFunction, TmfResponse};
use iscsi_proto::text::Pair;
use iscsi_proto::{Itt, Lun};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, info_span};
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
    #[error("the target rejected a PDU: {0}")]
    Rejected(String),
    #[error("protocol error from the target: {0}")]
    Protocol(String),
}

/// A logged-in session (one connection).
#[derive(Debug)]
pub struct Session {
    requests: mpsc::Sender<Request>,
    outcome: Arc<LoginOutcome>,
    task: JoinHandle<()>,
}

impl Session {
    /// Connect to `addr` and log in with `config`.
    pub async fn connect(addr: SocketAddr, config: InitiatorConfig, timeout: Duration) -> Result<Self, SessionError> {
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
        let task = tokio::spawn(connection::run(reader, writer, outcome.clone(), rx).instrument(span));
        Ok(Self {
            requests,
            outcome,
            task,
        })
    }

    /// What login negotiated.
    #[must_use]
    pub fn outcome(&self) -> &LoginOutcome {
        &self.outcome
    }

    async fn call(&self, kind: RequestKind) -> Result<Reply, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request { kind, reply })
            .await
            .map_err(|_| SessionError::ConnectionLost("the session has ended".into()))?;
        rx.await
            .map_err(|_| SessionError::ConnectionLost("the session has ended".into()))?
    }

    /// Run a SCSI command: `cdb` on `lun`, sending `data_out`, receiving up
    /// to `read_len` bytes.
    pub async fn command(
        &self,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        read_len: u32,
    ) -> Result<Completion, SessionError> {
        match self
            .call(RequestKind::Scsi {
                lun,
                cdb: cdb.to_vec(),
                data_out,
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
        match self.call(RequestKind::Ping).await? {
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
        let result = match self.call(RequestKind::Logout).await? {
            Reply::Logout(code) => Ok(code),
            other => Err(SessionError::Protocol(format!("unexpected reply {other:?}"))),
        };
        let _ = self.task.await;
        result
    }
}
