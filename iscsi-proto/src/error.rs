//! How far a protocol error reaches.
//!
//! RFC 7143 section 7 sorts failures by what must be thrown away to recover:
//! a task, a PDU, a connection or the whole session. Every error type in this
//! crate says which, so a driver can act without re-reading the RFC.

/// The smallest unit that must be abandoned after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// One task fails (e.g. with CHECK CONDITION); everything else goes on.
    Task,
    /// One PDU is discarded (and answered with a Reject); the stream stays in
    /// sync because its framing was sound.
    Pdu,
    /// The byte stream can no longer be trusted: close the connection.
    Connection,
    /// The session's state is broken: close every connection of it.
    Session,
}
