//! The ramdisk's two callbacks, `pass_deploy_info` and
//! `pass_bootloader_install_info`, checked as the legacy Ironic conductor
//! checked them: the deploy key first, then the rest of the body, then the
//! node's state. The bodies are [`deploy_contract::callback`]'s, the types
//! the ramdisk sends.
//!
//! The callbacks are public (a ramdisk has no API credentials): the key is
//! what authenticates them. A caller without the right key learns nothing
//! about the node and changes nothing: no state change, no database write.
//! Its attempt is logged with its address and counted; the node keeps
//! waiting for its real ramdisk until `--callback-timeout`.

use std::net::SocketAddr;
use std::sync::Arc;

use deploy_contract::callback::{
    BootloaderInfo, DeployInfo, FAILED, PASS_BOOTLOADER_INSTALL_INFO, PASS_DEPLOY_INFO, SUCCEEDED,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::metrics::Rejection;
use super::nodes::NodeSpec;
use super::store::{ConfigDriveChange, ProvisionState, StoreError, Work};
use super::{RequestError, Service};

/// Whether `given` is `expected`, in time that depends on neither: both are
/// hashed first, so even their lengths stay hidden.
fn key_matches(given: &str, expected: &str) -> bool {
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into()
}

impl Service {
    /// The node named in a callback, its key checked against `body`; the
    /// body comes back parsed. Every refusal is logged and counted.
    async fn authenticate_callback<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        node: &str,
        peer: SocketAddr,
        body: &[u8],
    ) -> Result<(NodeSpec, T), RequestError> {
        let refuse = |why: Rejection, error: RequestError| {
            warn!(%node, %peer, method, error = %error, "callback refused");
            self.metrics.callback_rejected(why);
            error
        };
        let spec = match self.find(node).await {
            Ok((_, spec)) => spec,
            Err(e @ RequestError::UnknownNode(_)) => return Err(refuse(Rejection::UnknownNode, e)),
            Err(e) => return Err(e),
        };
        let json: Value = serde_json::from_slice(body).map_err(|e| {
            let error = RequestError::BadRequest(format!("malformed {method} body: {e}"));
            refuse(Rejection::Malformed, error)
        })?;
        let key = json.get("key").and_then(Value::as_str).unwrap_or_default();
        if !key_matches(key, &spec.deploy_key) {
            let claimed = json.get("address").and_then(Value::as_str).unwrap_or("none");
            let error = RequestError::WrongKey;
            warn!(node = %spec.uuid, %peer, claimed_address = claimed, method, "callback with a wrong or missing deploy key refused; the node keeps waiting");
            self.metrics.callback_rejected(Rejection::WrongKey);
            return Err(error);
        }
        let parsed = serde_json::from_value(json).map_err(|e| {
            let error = RequestError::BadRequest(format!("malformed {method} body: {e}"));
            refuse(Rejection::Malformed, error)
        })?;
        Ok((spec, parsed))
    }

    /// A callback's refusal because the node does not wait for it.
    fn wrong_state(
        &self,
        uuid: &str,
        peer: SocketAddr,
        method: &str,
        state: ProvisionState,
        expected: &'static str,
    ) -> RequestError {
        self.metrics.callback_rejected(Rejection::WrongState);
        let error = RequestError::WrongState {
            node: uuid.to_owned(),
            state: state.as_str(),
            expected,
        };
        warn!(node = %uuid, %peer, method, %error, "callback refused");
        error
    }

    /// Record `work` for the node (a step of its deploy), claimed here at
    /// once when this instance deploys the node's conductor group and has a
    /// free slot; otherwise an instance that does claims it.
    async fn accept(
        self: &Arc<Self>,
        spec: &NodeSpec,
        work: Work,
        detail: &str,
        peer: SocketAddr,
        method: &str,
        expected: &'static str,
    ) -> Result<(), RequestError> {
        let slot = self.slot_for(&spec.conductor_group);
        let lease = slot.as_ref().map(|_| self.lease());
        match self
            .store
            .accept_callback(&spec.uuid, &work, detail, &self.me, lease)
            .await
        {
            Ok(Some(claim)) => {
                if let Some(slot) = slot {
                    self.start(claim, slot);
                }
                Ok(())
            }
            Ok(None) => {
                if spec.conductor_group != self.me.group {
                    info!(node = %spec.uuid, group = %spec.conductor_group, "recorded; an instance of the node's conductor group deploys it");
                }
                Ok(())
            }
            Err(StoreError::NotInState { state, .. }) => {
                Err(self.wrong_state(&spec.uuid, peer, method, state, expected))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `pass_deploy_info`: check, record `deploying` with the work, start the
    /// deploy here or leave it to an instance of the node's group.
    pub async fn pass_deploy_info(
        self: &Arc<Self>,
        node: &str,
        peer: SocketAddr,
        body: &[u8],
    ) -> Result<(), RequestError> {
        let method = PASS_DEPLOY_INFO;
        let (spec, body): (_, DeployInfo) = self.authenticate_callback(method, node, peer, body).await?;
        let expected = ProvisionState::WaitCallBack.as_str();
        if !body.error.is_empty() {
            let error = format!("Error returned from deploy ramdisk: {}", body.error);
            return match self
                .store
                .transition_if(
                    &spec.uuid,
                    &[ProvisionState::WaitCallBack],
                    ProvisionState::DeployFailed,
                    Some(&error),
                    method,
                    ConfigDriveChange::Keep,
                    &self.me.name,
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(StoreError::NotInState { state, .. }) => {
                    Err(self.wrong_state(&spec.uuid, peer, method, state, expected))
                }
                Err(e) => Err(e.into()),
            };
        }
        let iqn = Some(body.iqn).filter(|i| !i.is_empty()).unwrap_or_else(|| spec.iqn());
        let port = body.port.unwrap_or(3260);
        let detail = format!("callback from {} ({peer}): {iqn} at port {port}", body.address);
        let work = Work::Write {
            address: body.address,
            iqn,
            port,
        };
        self.accept(&spec, work, &detail, peer, method, expected).await
    }

    /// `pass_bootloader_install_info`: FAILED fails the node; SUCCEEDED
    /// records the second `done` as work, sent here or by an instance of the
    /// node's group, then `active`.
    pub async fn pass_bootloader_install_info(
        self: &Arc<Self>,
        node: &str,
        peer: SocketAddr,
        body: &[u8],
    ) -> Result<(), RequestError> {
        let method = PASS_BOOTLOADER_INSTALL_INFO;
        let (spec, body): (_, BootloaderInfo) = self.authenticate_callback(method, node, peer, body).await?;
        let expected = "wait call-back (for the boot loader)";
        let failed = match body.status.as_str() {
            SUCCEEDED => None,
            FAILED => Some(format!(
                "Failed to install a bootloader when deploying node {}. Error: {}",
                spec.uuid, body.error
            )),
            other => Some(format!("unknown boot loader status {other:?}")),
        };
        if let Some(error) = failed {
            return match self
                .store
                .fail_boot_loader_wait(&spec.uuid, None, &error, "boot loader", &self.me.name)
                .await
            {
                Ok(()) => {
                    self.metrics
                        .deploy_finished(super::metrics::DeployResult::Failed, 0.0, 0, 0);
                    Ok(())
                }
                Err(StoreError::NotInState { state, .. }) => {
                    Err(self.wrong_state(&spec.uuid, peer, method, state, expected))
                }
                Err(e) => Err(e.into()),
            };
        }
        let detail = format!("boot loader installed ({} at {peer}); sending done", body.address);
        self.accept(&spec, Work::BootLoaderDone, &detail, peer, method, expected)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::key_matches;

    #[test]
    fn keys_match_only_exactly() {
        assert!(key_matches("0123456789abcdef", "0123456789abcdef"));
        for wrong in [
            "",
            "0123456789abcdeF",
            "0123456789abcde",
            "0123456789abcdef0",
            " 0123456789abcdef",
        ] {
            assert!(!key_matches(wrong, "0123456789abcdef"), "{wrong:?}");
        }
    }
}
