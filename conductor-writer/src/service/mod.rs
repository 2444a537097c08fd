//! `conductor-writer serve`: a stand-alone deploy service for ramdisks that
//! speak the legacy Ironic iSCSI protocol.
//!
//! # Layout
//!
//! - [`nodes`]: the nodes file (TOML).
//! - [`store`]: SQLite: nodes, state transitions, deploys.

pub mod nodes;
pub mod store;
