//! The ramdisk's two callbacks, `pass_deploy_info` and
//! `pass_bootloader_install_info`, checked as the legacy Ironic conductor
//! checked them: the deploy key first, then the rest of the body, then the
//! node's state.
//!
//! The callbacks are public (a ramdisk has no API credentials): the key is
//! what authenticates them. A caller without the right key learns nothing
//! about the node and changes nothing: no state change, no database write.
//! Its attempt is logged with its address and counted; the node keeps
//! waiting for its real ramdisk until `--callback-timeout`.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::warn;

use super::metrics::Rejection;
use super::store::{ConfigDriveChange, ProvisionState, StoreError};
use super::{BootloaderWait, RequestError, Service};

/// `pass_deploy_info`'s body, once its key is proven.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DeployCallback {
    pub address: String,
    #[serde(default)]
    pub iqn: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub port: Option<Value>,
    #[serde(default)]
    pub lun: Option<Value>,
}

/// `pass_bootloader_install_info`'s body, once its key is proven.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BootloaderCallback {
    pub address: String,
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
}

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
    fn authenticate_callback<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        node: &str,
        peer: SocketAddr,
        body: &[u8],
    ) -> Result<(super::nodes::NodeSpec, T), RequestError> {
        let refuse = |why: Rejection, error: RequestError| {
            warn!(%node, %peer, method, error = %error, "callback refused");
            self.metrics.callback_rejected(why);
            error
        };
        let spec = self.spec(node).map_err(|e| refuse(Rejection::UnknownNode, e))?.clone();
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

    /// `pass_deploy_info`: check, record `deploying`, start the deploy.
    pub fn pass_deploy_info(self: &Arc<Self>, node: &str, peer: SocketAddr, body: &[u8]) -> Result<(), RequestError> {
        let method = "pass_deploy_info";
        let (spec, body): (_, DeployCallback) = self.authenticate_callback(method, node, peer, body)?;
        let wrong_state = |state: ProvisionState| {
            self.metrics.callback_rejected(Rejection::WrongState);
            let error = RequestError::WrongState {
                node: spec.uuid.clone(),
                state: state.as_str(),
                expected: ProvisionState::WaitCallBack.as_str(),
            };
            warn!(node = %spec.uuid, %peer, method, %error, "callback refused");
            error
        };
        if self.waiting_for_bootloader(&spec.uuid) {
            return Err(wrong_state(ProvisionState::WaitCallBack));
        }
        let waiting = [ProvisionState::WaitCallBack];
        if let Some(error) = body.error.as_deref().filter(|e| !e.is_empty()) {
            let error = format!("Error returned from deploy ramdisk: {error}");
            return match self.store.transition_if(
                &spec.uuid,
                &waiting,
                ProvisionState::DeployFailed,
                Some(&error),
                method,
                ConfigDriveChange::Keep,
            ) {
                Ok(_) => Ok(()),
                Err(StoreError::NotInState { state, .. }) => Err(wrong_state(state)),
                Err(e) => Err(e.into()),
            };
        }
        let iqn = body.iqn.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| spec.iqn());
        let port = body
            .port
            .as_ref()
            .and_then(|p| p.as_u64().or_else(|| p.as_str().and_then(|s| s.parse().ok())))
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(3260);
        let detail = format!("callback from {} ({peer}): {iqn} at port {port}", body.address);
        match self.store.transition_if(
            &spec.uuid,
            &waiting,
            ProvisionState::Deploying,
            None,
            &detail,
            ConfigDriveChange::Keep,
        ) {
            Ok(_) => {}
            Err(StoreError::NotInState { state, .. }) => return Err(wrong_state(state)),
            Err(e) => return Err(e.into()),
        }
        let deploy_id = self.store.start_deploy(&spec.uuid, &body.address)?;
        self.deploy_started(deploy_id);
        let service = self.clone();
        tokio::spawn(async move {
            service.run_deploy(spec, body.address, iqn, port, deploy_id).await;
        });
        Ok(())
    }

    /// `pass_bootloader_install_info`: the second `done`, then `active`.
    pub async fn pass_bootloader_install_info(
        &self,
        node: &str,
        peer: SocketAddr,
        body: &[u8],
    ) -> Result<(), RequestError> {
        let method = "pass_bootloader_install_info";
        let (spec, body): (_, BootloaderCallback) = self.authenticate_callback(method, node, peer, body)?;
        let Some(BootloaderWait {
            deploy_id,
            notify: (host, port),
            report,
        }) = self.waits().remove(&spec.uuid)
        else {
            self.metrics.callback_rejected(Rejection::WrongState);
            return Err(RequestError::WrongState {
                node: spec.uuid.clone(),
                state: self.state(&spec.uuid)?.as_str(),
                expected: "wait call-back (for the boot loader)",
            });
        };
        let failed = match body.status.as_str() {
            "SUCCEEDED" => None,
            "FAILED" => Some(format!(
                "Failed to install a bootloader when deploying node {}. Error: {}",
                spec.uuid,
                body.error.unwrap_or_default()
            )),
            other => Some(format!("unknown boot loader status {other:?}")),
        };
        if let Some(error) = failed {
            self.conclude(&spec.uuid, deploy_id, report, Some(error), "boot loader")?;
            return Ok(());
        }
        // The ramdisk waits for this done before it reboots.
        let (error, detail) = match crate::cli::notify(&host, port, self.options.login.timeout).await {
            Ok(()) => (None, "boot loader installed; done sent"),
            Err(e) => (
                Some(format!(
                    "the boot loader is installed, but done could not be sent to {host}:{port}: {e:#}"
                )),
                "done",
            ),
        };
        self.conclude(&spec.uuid, deploy_id, report, error, detail)?;
        Ok(())
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
