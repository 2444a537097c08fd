//! Reaching a target: logging in to a LUN with one or more sessions,
//! logging out, and the legacy ramdisk's `done` on port 10000. The commands
//! of `main.rs` and the deploys of `serve` both connect through here.

use crate::disk::Disk;
use crate::initiator::{Recovery, Session};
use crate::url::{IscsiUrl, parse_portal};
use anyhow::Context;
use deploy_contract::chap::{DeployRole, for_deployment};
use iscsi_proto::Lun;
use iscsi_proto::login::{Credentials, InitiatorConfig};
use iscsi_proto::pdu::Isid;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How to reach and log in to a target.
#[derive(Debug, Clone)]
pub struct Login {
    pub initiator_name: String,
    pub chap: Option<Credentials>,
    pub mutual: Option<Credentials>,
    pub timeout: Duration,
    /// What a session does when its connection breaks.
    pub recovery: Recovery,
    /// Require CRC32C header digests.
    pub header_digest: bool,
    /// Require CRC32C data digests.
    pub data_digest: bool,
}

impl Login {
    /// The login of one session with `isid` to `target` (discovery without).
    pub(crate) fn config(&self, target: Option<String>, isid: Isid) -> InitiatorConfig {
        let mut config = InitiatorConfig::new(self.initiator_name.clone(), target, isid);
        config.chap = self.chap.clone();
        config.mutual = self.mutual.clone();
        let crc32c = || vec!["CRC32C".to_owned()];
        if self.header_digest {
            config.prefs.header_digest = crc32c();
        }
        if self.data_digest {
            config.prefs.data_digest = crc32c();
        }
        config
    }

    /// CHAP both ways with the credentials a ramdisk booted with `iscsi_chap=1` derives from the
    /// same deployment: we prove ourselves as the initiator and require the ramdisk's target to
    /// prove itself back.
    pub fn set_deployment_chap(&mut self, deployment_id: &str, deployment_key: &str) {
        self.chap = Some(for_deployment(deployment_id, deployment_key, DeployRole::Initiator));
        self.mutual = Some(for_deployment(deployment_id, deployment_key, DeployRole::Target));
    }
}

pub(crate) fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

pub(crate) fn isid() -> Isid {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    Isid::random(bytes)
}

/// Log in to the LUN of `url` with `sessions` sessions and probe it.
pub async fn open_disk(url: &IscsiUrl, login: &Login, sessions: usize) -> anyhow::Result<Disk> {
    let addr = resolve(&url.host, url.port)?;
    let chap = url
        .user
        .clone()
        .map(|(n, s)| Credentials::new(n, s))
        .or_else(|| login.chap.clone());
    let mut opened = Vec::new();
    for _ in 0..sessions.max(1) {
        let mut config = login.config(Some(url.target.clone()), isid());
        config.chap = chap.clone();
        let session = Session::connect_with(addr, config, login.timeout, login.recovery).await?;
        opened.push(Arc::new(session));
    }
    Ok(Disk::probe(opened, Lun::from_index(url.lun)).await?)
}

/// Log every session of `disk` out.
pub async fn logout(disk: Disk) {
    let sessions: Vec<_> = disk.sessions().to_vec();
    drop(disk);
    for session in sessions {
        if let Ok(session) = Arc::try_unwrap(session) {
            let _ = session.logout().await;
        }
    }
}

/// `notify ADDRESS --port 10000`: the legacy ramdisk's `done` handshake.
pub async fn notify(address: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let (host, port) = parse_portal(address, port).map_err(|e| anyhow::anyhow!("invalid address {address:?}: {e}"))?;
    let addr = resolve(&host, port)?;
    let mut stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}; is the deploy ramdisk waiting?"))?;
    stream
        .write_all(deploy_contract::done::MESSAGE)
        .await
        .with_context(|| format!("sending done to {addr}"))?;
    stream.shutdown().await.ok();
    Ok(())
}

/// [`notify`], retrying while the ramdisk is not listening yet.
pub async fn notify_retrying(host: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match notify(host, port, timeout).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "the disk is written, but the ramdisk at {host}:{port} was not told; \
                     send `conductor-writer notify {host} --port {port}` once it listens"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
