//! PDUs on the socket, with `iscsi-wire`'s reader (buffering only what the
//! framing allows) and writer (batched, vectored, payloads not copied).

use super::ConnError;
use iscsi_wire::ReadError;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

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
