//! One TCP connection: login, then the full feature phase.
//!
//! After login, the full feature phase is a loop around the protocol
//! machine ([`ffp`]): this task reads and hands PDUs to the machine, a
//! writer task batches what the machine sends into few writes ([`wire`]),
//! each command becomes a job with what SCSI decides before its data moves
//! ([`jobs`]), and runs on its own task with its disk IO on the blocking
//! pool ([`command`]), so a slow disk never stalls the socket. The machine
//! and the jobs live behind one lock ([`link`]); large write segments are
//! moved by [`stream`].

mod command;
mod ffp;
mod jobs;
mod link;
mod stream;
mod wire;

use crate::target::Target;
use iscsi_proto::StatSn;
use iscsi_proto::codec::Direction;
use iscsi_proto::login::{self, LoginOutcome, TargetLogin, TargetLoginParams, TargetStep};
use iscsi_proto::negotiate::SessionType;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, info_span, warn};
use wire::{PduReader, PduWriter};

/// Serve one connection until it ends. Never panics on peer input; every
/// error ends here as a log line.
pub async fn run(stream: TcpStream, peer: SocketAddr, id: u64, target: Arc<Target>) {
    let span = info_span!("conn", id, %peer);
    async move {
        if let Err(e) = serve(stream, peer, target).await {
            info!("closed: {e}");
        } else {
            debug!("closed");
        }
    }
    .instrument(span)
    .await;
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Eof,
    #[error("{0}")]
    Decode(#[from] iscsi_proto::codec::DecodeError),
    #[error("login: {0}")]
    Login(#[from] login::LoginError),
    #[error("login did not finish in time")]
    LoginTimeout,
    #[error("{0}")]
    Protocol(String),
}

fn nonce() -> [u8; 64] {
    let mut n = [0u8; 64];
    // Without randomness CHAP challenges repeat; refuse to go on silently.
    if let Err(e) = getrandom::fill(&mut n) {
        warn!("no randomness for CHAP challenges: {e}");
    }
    n
}

async fn serve(stream: TcpStream, peer: SocketAddr, target: Arc<Target>) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let (read, write) = stream.into_split();
    let mut reader = PduReader::new(read, Direction::FromInitiator);
    let mut writer = PduWriter::new(write);
    let mut closing = target.closing();

    let login = login(&mut reader, &mut writer, &target);
    let outcome = tokio::select! {
        result = tokio::time::timeout(target.options.login_timeout, login) => {
            result.map_err(|_| ConnError::LoginTimeout)??
        }
        () = crate::target::stopping(&mut closing) => return Ok(()),
    };
    let Some((outcome, stop)) = outcome else { return Ok(()) };
    reader.set_framing(outcome.connection.receive_framing());
    writer.set_framing(outcome.connection.send_framing());
    let span = info_span!("session", tsih = outcome.tsih.0, initiator = %outcome.initiator_name);
    info!(parent: &span, kind = ?outcome.session_type, ?peer, chap = outcome.chap_name.as_deref().unwrap_or("none"), "logged in");
    let key = (outcome.initiator_name.clone(), outcome.isid);
    let tsih = outcome.tsih;
    let result = ffp::run(reader, writer, outcome, target.clone(), local, stop)
        .instrument(span)
        .await;
    target.depart(&key, tsih);
    result
}

/// Run the login phase. `None` when the login failed and was answered.
async fn login(
    reader: &mut PduReader,
    writer: &mut PduWriter,
    target: &Arc<Target>,
) -> Result<Option<(LoginOutcome, Arc<tokio::sync::Notify>)>, ConnError> {
    let nonce = nonce();
    let params = TargetLoginParams {
        tsih: target.allocate_tsih(),
        // A random first StatSN catches initiators that assume zero.
        stat_sn: StatSn(u32::from_le_bytes([nonce[8], nonce[9], nonce[10], nonce[11]])),
        window: target.options.queue_depth,
        nonce,
    };
    let mut login = TargetLogin::new(target.login_config.clone(), params);
    loop {
        let pdu = reader.next().await?;
        match login.step(&pdu) {
            TargetStep::Continue(rsp) => writer.send(&rsp).await?,
            TargetStep::Fail(rsp, err) => {
                writer.send(&rsp).await?;
                info!("login refused: {err}");
                return Ok(None);
            }
            TargetStep::Complete(rsp, outcome) => {
                let stop = match outcome.session_type {
                    SessionType::Discovery => Arc::new(tokio::sync::Notify::new()),
                    SessionType::Normal => {
                        let key = (outcome.initiator_name.clone(), outcome.isid);
                        match target.admit(key, outcome.tsih).await {
                            Ok(stop) => stop,
                            Err(e) => {
                                writer.send(&login::refuse(rsp, &e)).await?;
                                info!("login refused: {e}");
                                return Ok(None);
                            }
                        }
                    }
                };
                writer.send(&rsp).await?;
                return Ok(Some((*outcome, stop)));
            }
        }
    }
}
