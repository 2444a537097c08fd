//! The listener: one task per connection, until shutdown.

use crate::conn;
use crate::target::Target;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Accept connections on `listener` until `shutdown` completes, then stop
/// every session (in-flight commands finish) and wait for them.
pub async fn serve(listener: TcpListener, target: Arc<Target>, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    info!(addr = %listener.local_addr()?, iqn = %target.options.iqn, "serving");
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    if connections.len() >= target.options.max_connections {
                        // Dropping the stream closes it; each log line is one refused peer.
                        debug!(%peer, limit = target.options.max_connections, "too many connections; closed");
                        continue;
                    }
                    connections.spawn(conn::run(stream, peer, next_id, target.clone()));
                }
                // Out of file descriptors and the like: keep serving the others.
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    info!("stopping: finishing in-flight commands");
    target.stop_all();
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), drain).await.is_err() {
        warn!("connections did not finish in 30 s; aborting them");
        connections.shutdown().await;
    }
    Ok(())
}
