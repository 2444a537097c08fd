//! The full feature phase of one connection: a socket-and-task loop around
//! the protocol machine ([`iscsi_proto::target::Connection`]).
//!
//! The reader hands each PDU to the machine; a WRITE's large data segment
//! that the machine routes to its command is spliced from the socket
//! straight into the disk when the command's data can be placed there.
//! Each command runs on a task of its own (its disk IO on the blocking
//! pool) and answers through the machine. What the machine has to send goes,
//! in the order it was stamped, to a writer task that batches it into few
//! writes.

use super::ConnError;
use super::jobs::Jobs;
use super::link::{Link, Shared};
use super::stream;
use super::wire::{Out, PduReader, PduWriter, write_loop};
use crate::target::Target;
use iscsi_proto::Scope;
use iscsi_proto::login::LoginOutcome;
use iscsi_proto::negotiate::SessionType;
use iscsi_proto::target::{self, Close};
use iscsi_wire::{Frame, PipePool, ReadError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tracing::{Instrument, debug, info};

/// Data segments at least this long are spliced from the socket into the
/// backing file when their command's data can be placed there; shorter ones
/// cost less through memory than a trip to the blocking pool.
const SPLICE_MIN: usize = 64 * 1024;

/// Pipes for READ data per connection (each holds one READ's data on its
/// way from the page cache to the socket).
const READ_PIPES: usize = 32;

/// Run the full feature phase until logout, a fatal error or `stop`.
pub(crate) async fn run(
    mut reader: PduReader,
    writer: PduWriter,
    outcome: LoginOutcome,
    target: Arc<Target>,
    local: SocketAddr,
    stop: Arc<Notify>,
) -> Result<(), ConnError> {
    let portal = match local {
        SocketAddr::V4(a) => format!("{}:{},{}", a.ip(), a.port(), target.login_config.portal_group_tag),
        SocketAddr::V6(a) => format!("[{}]:{},{}", a.ip(), a.port(), target.login_config.portal_group_tag),
    };
    let config = target::Config {
        target_name: target.options.iqn.clone(),
        portal,
        lun: target.options.lun,
        prefs: target.options.prefs.clone(),
        queue_depth: target.options.queue_depth,
        nop_interval: target.options.nop_interval,
        nop_timeout: target.options.nop_timeout,
    };
    // Without a data digest, READ and WRITE data can skip our memory.
    let zero_copy = outcome.session_type == SessionType::Normal
        && !outcome.connection.send_framing().data_digest
        && target.lu.device().page_cache_file().is_some();
    if zero_copy {
        reader.set_heads(SPLICE_MIN, target.options.nop_timeout);
    }
    let (out, out_rx) = mpsc::unbounded_channel();
    let writing = tokio::spawn(write_loop(writer, out_rx).in_current_span());
    let key = (outcome.initiator_name.clone(), outcome.isid);
    let discovery = outcome.session_type == SessionType::Discovery;
    let link = Link {
        shared: Arc::new(Mutex::new(Shared {
            machine: target::Connection::new(&outcome, config, Instant::now()),
            jobs: Jobs::new(target.clone(), key, outcome.tsih),
            closed: None,
        })),
        out,
        pipes: zero_copy.then(|| PipePool::new(READ_PIPES)),
        traffic: Arc::default(),
        lu: target.lu.clone(),
        commands: Arc::default(),
    };
    let mut closing = target.closing();
    let result = loop {
        let due = link.lock().machine.poll_timeout();
        let timer = tokio::time::sleep_until(due.map_or_else(far_future, tokio::time::Instant::from_std));
        tokio::select! {
            frame = reader.next_frame() => {
                let step = match frame {
                    Ok(Frame::Pdu(pdu)) => {
                        let mut shared = link.lock();
                        shared.machine.handle_pdu(pdu, Instant::now());
                        link.drain(&mut shared);
                        Ok(())
                    }
                    Ok(Frame::Head(head)) => stream::take_segment(&link, &mut reader, head, target.closing()).await,
                    Err(ReadError::Decode(e)) if e.scope() == Scope::Pdu => {
                        debug!("rejecting a PDU: {e}");
                        let mut shared = link.lock();
                        shared.machine.handle_decode_error(&e, Instant::now());
                        link.drain(&mut shared);
                        Ok(())
                    }
                    Err(e) => Err(ConnError::from(e)),
                };
                if let Err(e) = step {
                    break Err(e);
                }
            }
            () = timer => {
                let mut shared = link.lock();
                shared.machine.handle_timeout(Instant::now());
                link.drain(&mut shared);
            }
            () = stop.notified() => {
                info!("stopping at the target's request");
                break Ok(());
            }
            () = crate::target::stopping(&mut closing) => break Ok(()),
        }
        match link.lock().closed.clone() {
            Some(Close::LoggedOut) => {
                info!("logged out");
                break Ok(());
            }
            Some(Close::ColdReset) => break Ok(()),
            Some(why) => break Err(ConnError::Protocol(why.to_string())),
            None => {}
        }
    };
    // Commands in flight finish; what they answer is sent before the close.
    let mut commands = std::mem::take(&mut *link.commands.lock().unwrap_or_else(PoisonError::into_inner));
    while commands.join_next().await.is_some() {}
    if !discovery {
        // SPC-2: the end of the I_T nexus releases its RESERVE.
        link.lu.nexus_lost(&link.lock().jobs.nexus);
    }
    link.traffic.report();
    let _ = link.out.send(Out::Close);
    let _ = tokio::time::timeout(Duration::from_secs(10), writing).await;
    result
}

/// A deadline that never comes, for a machine that needs no wake-up.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
