//! PDUs on the socket, with `iscsi-wire`'s reader (buffering only what the
//! framing allows) and writer (batched, vectored, payloads not copied).

use super::ConnError;
use iscsi_proto::target::Transmit;
use iscsi_wire::Payload;
use iscsi_wire::ReadError;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tracing::debug;

pub(crate) type PduReader = iscsi_wire::PduReader<OwnedReadHalf>;
pub(crate) type PduWriter = iscsi_wire::PduWriter<OwnedWriteHalf>;

impl From<ReadError> for ConnError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Decode(e) => ConnError::Decode(e),
            ReadError::Io(e) => ConnError::Io(e),
            ReadError::Eof => ConnError::Eof,
        }
    }
}

/// What the writer task is sent.
#[derive(Debug)]
pub(super) enum Out {
    Batch(Vec<Transmit<Payload>>),
    /// Flush and close the socket.
    Close,
}

/// The writer task: PDUs as the machine stamped them, in few writes.
pub(super) async fn write_loop(mut writer: PduWriter, mut rx: mpsc::UnboundedReceiver<Out>) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Out::Batch(batch) => {
                    for t in batch {
                        if let Err(e) = writer.queue(&t.header, t.data).await {
                            debug!("writer stops: {e}");
                            return;
                        }
                    }
                }
                Out::Close => {
                    writer.shutdown().await;
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    writer.shutdown().await;
}
