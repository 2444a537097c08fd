//! PDUs on the socket, with `iscsi-wire`'s reader and writer (batched,
//! vectored: write data is never copied).

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub(crate) type PduReader = iscsi_wire::PduReader<OwnedReadHalf>;
pub(crate) type PduWriter = iscsi_wire::PduWriter<OwnedWriteHalf>;
