//! The task that serves one connection: a socket-and-task loop around the
//! protocol machine ([`iscsi_proto::initiator::Connection`]).
//!
//! Requests come in on a channel, each with the sender its caller waits on;
//! the machine decides what goes out and when (CmdSN window, R2Ts, pings of
//! a silent target) and checks what comes back. A reader task keeps
//! decoding, so a long write never stops us from hearing the target.

use super::SessionError;
use super::wire::{PduReader, PduWriter};
use bytes::Bytes;
use iscsi_proto::Itt;
use iscsi_proto::initiator::{self, Event, Liveness, Request as Kind};
use iscsi_proto::login::LoginOutcome;
use iscsi_proto::pdu::{LogoutResponseCode, Residual, TmfResponse};
use iscsi_proto::scsi::ScsiStatus;
use iscsi_proto::text::Pair;
use iscsi_wire::Payload;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace, warn};

/// How a SCSI command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub status: ScsiStatus,
    /// Sense data, when the status carried some.
    pub sense: Option<Vec<u8>>,
    /// Data read (already cut to what the target sent).
    pub data: Bytes,
    pub residual: Residual,
}

/// What a caller asks; the machine's request with our payload type.
pub(crate) type RequestKind = Kind<Payload>;

#[derive(Debug)]
pub(crate) enum Reply {
    Scsi(Completion),
    Text(Vec<Pair>),
    Pong,
    TaskManagement(TmfResponse),
    Logout(LogoutResponseCode),
}

#[derive(Debug)]
pub(crate) struct Request {
    pub kind: RequestKind,
    pub reply: oneshot::Sender<Result<Reply, SessionError>>,
}

type Responder = oneshot::Sender<Result<Reply, SessionError>>;

/// Serve requests until logout or a lost connection.
pub(crate) async fn run(
    mut reader: PduReader,
    mut writer: PduWriter,
    outcome: Arc<LoginOutcome>,
    mut requests: mpsc::Receiver<Request>,
    liveness: Liveness,
) {
    let (pdus_tx, mut pdus) = mpsc::channel(256);
    let reading = tokio::spawn(async move {
        loop {
            let pdu = reader.next().await;
            let end = pdu.is_err();
            if pdus_tx.send(pdu).await.is_err() || end {
                return;
            }
        }
    });
    let mut machine = initiator::Connection::new(&outcome, liveness, Instant::now());
    let mut waiting: HashMap<Itt, Responder> = HashMap::new();
    let mut accepting = true;
    let error = loop {
        // What the machine has to send must go out within `dead_after`: a
        // target that takes no bytes for that long counts as gone.
        if let Err(e) = within(liveness.dead_after, send(&mut machine, &mut writer)).await {
            break SessionError::ConnectionLost(e.to_string());
        }
        if let Some(lost) = answer(&mut machine, &mut waiting) {
            break lost;
        }
        let due = machine.poll_timeout();
        let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(
            due.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400)),
        ));
        tokio::select! {
            () = timer, if due.is_some() => machine.handle_timeout(Instant::now()),
            request = requests.recv(), if accepting => match request {
                Some(Request { kind, reply }) => {
                    let logout = matches!(kind, Kind::Logout);
                    let itt = machine.submit(kind, Instant::now());
                    trace!(%itt, "request");
                    waiting.insert(itt, reply);
                    accepting = !logout;
                }
                // Every handle is gone: log out quietly.
                None => {
                    machine.submit(Kind::Logout, Instant::now());
                    accepting = false;
                }
            },
            pdu = pdus.recv() => match pdu {
                Some(Ok(pdu)) => machine.handle_pdu(pdu, Instant::now()),
                Some(Err(e)) => break SessionError::ConnectionLost(e.to_string()),
                None => break SessionError::ConnectionLost("the reader stopped".into()),
            },
        }
    };
    reading.abort();
    // A peer that reads nothing must not keep us here.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
    for (_, reply) in waiting.drain() {
        let _ = reply.send(Err(error.clone()));
    }
    // Requests still in the channel fail with the same reason.
    requests.close();
    while let Ok(request) = requests.try_recv() {
        let _ = request.reply.send(Err(error.clone()));
    }
}

/// Queue and write what the machine has to send.
async fn send(machine: &mut initiator::Connection<Payload>, writer: &mut PduWriter) -> std::io::Result<()> {
    while let Some(t) = machine.poll_transmit() {
        writer.queue(&t.header, t.data).await?;
    }
    writer.flush().await
}

/// Hand the machine's answers to their callers; the connection's end, if
/// it came.
fn answer(machine: &mut initiator::Connection<Payload>, waiting: &mut HashMap<Itt, Responder>) -> Option<SessionError> {
    while let Some(event) = machine.poll_event() {
        let (itt, reply) = match event {
            Event::Completed {
                itt,
                status,
                sense,
                data,
                residual,
            } => (
                itt,
                Ok(Reply::Scsi(Completion {
                    status,
                    sense: sense.map(|s| s.to_vec()),
                    data,
                    residual,
                })),
            ),
            Event::Text { itt, pairs } => (itt, Ok(Reply::Text(pairs))),
            Event::Pong { itt, .. } => (itt, Ok(Reply::Pong)),
            Event::TaskManagement { itt, response } => (itt, Ok(Reply::TaskManagement(response))),
            Event::LoggedOut { itt, response } => (itt, Ok(Reply::Logout(response))),
            Event::Rejected { itt, reason } => {
                warn!(?reason, "the target rejected a PDU");
                (itt, Err(SessionError::Rejected(format!("{reason:?}"))))
            }
            Event::LogoutRequested { within } => {
                debug!("the target asks us to log out within {within} s");
                continue;
            }
            Event::Lost(why) => return Some(SessionError::ConnectionLost(why)),
        };
        trace!(%itt, "answered");
        if let Some(reply_to) = waiting.remove(&itt) {
            let _ = reply_to.send(reply);
        }
    }
    None
}

/// The error of a send that made no progress for `limit`.
fn stalled(limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the target took no data for {} s", limit.as_secs()),
    )
}

/// `io` if it finishes within `limit`, else [`stalled`].
async fn within(limit: Duration, io: impl Future<Output = std::io::Result<()>>) -> std::io::Result<()> {
    tokio::time::timeout(limit, io)
        .await
        .unwrap_or_else(|_| Err(stalled(limit)))
}
