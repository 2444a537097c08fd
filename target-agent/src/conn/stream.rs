//! Data segments the reader leaves on the socket: the machine routes each
//! one, and a placed WRITE's data is spliced from the socket straight into
//! the disk. The segments of the large PDUs right behind it follow in the
//! same blocking job (see [`iscsi_wire::Blocking`]): a stream of writes
//! goes back to the reactor only when it pauses.

use super::ConnError;
use super::command::Traffic;
use super::link::{Link, Shared};
use super::wire::PduReader;
use iscsi_proto::Itt;
use iscsi_proto::codec::Head;
use iscsi_proto::target::Route;
use iscsi_wire::Blocking;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a stream of writes may pause before its job hands the socket
/// back to the reactor.
const STREAM_PAUSE: Duration = Duration::from_millis(2);

/// Move `head`'s segment, and those of the large PDUs behind it, where the
/// machine routes them.
pub(super) async fn take_segment(
    link: &Link,
    reader: &mut PduReader,
    head: Head,
    closing: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let route = {
        let mut shared = link.lock();
        let route = shared.machine.handle_head(&head, Instant::now());
        link.drain(&mut shared);
        route
    };
    let link = link.clone();
    reader
        .blocking(head, move |lent, head| stream(&link, lent, head, route, &closing))
        .await?
        .map_err(ConnError::from)
}
/// In a blocking job: move `head`'s segment where `route` says, then the
/// segments of the large PDUs that follow, until one is not or the stream
/// pauses.
fn stream(
    link: &Link,
    lent: &mut Blocking,
    mut head: Head,
    mut route: Route,
    closing: &watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        match route {
            Route::Task { itt, offset } => {
                let placed_at = link.lock().jobs.get_mut(itt).and_then(|job| job.placed_at(offset));
                let moved = match placed_at {
                    Some(at) => {
                        let segment = lent.segment(&head);
                        let written = link
                            .lu
                            .place(|file| segment.to_file(file, at))
                            .unwrap_or_else(|| Err(std::io::Error::other("the disk cannot take placed data")));
                        lent.end_segment(&head)?;
                        Moved::Placed(written)
                    }
                    None => Moved::Memory(lent.read_segment(head.clone())?.data),
                };
                let mut shared = link.lock();
                match moved {
                    Moved::Placed(Ok(())) => Traffic::add(&link.traffic.spliced_in, head.data_len),
                    Moved::Placed(Err(e)) => placed_error(&mut shared, itt, e),
                    Moved::Memory(data) => {
                        Traffic::add(&link.traffic.buffered_in, data.len());
                        if let Some(job) = shared.jobs.get_mut(itt) {
                            job.take(offset, data);
                        }
                    }
                }
                shared.machine.segment_done();
                link.drain(&mut shared);
            }
            Route::Memory => {
                let pdu = lent.read_segment(head)?;
                let mut shared = link.lock();
                shared.machine.handle_pdu(pdu, Instant::now());
                link.drain(&mut shared);
            }
            Route::Discard => {
                lent.read_segment(head)?;
            }
        }
        if *closing.borrow() || link.lock().closed.is_some() {
            return Ok(());
        }
        let Some(next) = lent.next_head(STREAM_PAUSE)? else {
            return Ok(());
        };
        head = next;
        let mut shared = link.lock();
        route = shared.machine.handle_head(&head, Instant::now());
        link.drain(&mut shared);
    }
}

/// Where a routed segment went.
enum Moved {
    Placed(std::io::Result<()>),
    Memory(bytes::Bytes),
}

/// A placed WRITE could not put its data on the disk: it answers with the
/// error once its data is in.
fn placed_error(shared: &mut Shared, itt: Itt, error: std::io::Error) {
    if let Some(placed) = shared.jobs.get_mut(itt).and_then(|job| job.placed.as_mut()) {
        placed.error.get_or_insert(error);
    }
}
