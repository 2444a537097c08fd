//! CHAP credentials both ends of a deploy derive from what they already share.
//!
//! The legacy flow served the disk to anyone on the provisioning network. With `iscsi_chap=1`
//! the ramdisk requires CHAP, and neither side needs a new secret handed to it: the node's
//! deployment id is on the ramdisk's kernel line and in the conductor's records, and so is its
//! random deployment key. Both programs must turn them into the same names and secrets, forever,
//! which is why the rule is here. It is not RFC 7143: the CHAP exchange itself is `iscsi-proto`'s,
//! and these are its [`Credentials`].

use iscsi_proto::login::Credentials;
use sha2::{Digest as _, Sha256};

/// Which side of a deploy a set of derived credentials authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployRole {
    /// The conductor's initiator, proving itself to the ramdisk's target.
    Initiator,
    /// The ramdisk's target, proving itself back (mutual CHAP).
    Target,
}

/// The credentials `role` uses in the deploy of `deployment_id`.
///
/// The name is the deployment id (prefixed `ramdisk-` for the target); the secret is 32 hex
/// digits of SHA-256 over a label, the role, the key and the id, so the two directions get
/// different secrets and the key itself never crosses the wire.
#[must_use]
pub fn for_deployment(deployment_id: &str, deployment_key: &str, role: DeployRole) -> Credentials {
    let role_label: &[u8] = match role {
        DeployRole::Initiator => b"initiator",
        DeployRole::Target => b"target",
    };
    let digest = Sha256::new()
        .chain_update(b"iscsi-deploy CHAP v1\0")
        .chain_update(role_label)
        .chain_update([0])
        .chain_update(deployment_key.as_bytes())
        .chain_update([0])
        .chain_update(deployment_id.as_bytes())
        .finalize();
    let secret: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let name = match role {
        DeployRole::Initiator => deployment_id.to_owned(),
        DeployRole::Target => format!("ramdisk-{deployment_id}"),
    };
    Credentials::new(name, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_credentials_differ_by_role_key_and_id() {
        let i = for_deployment("node-1", "k".repeat(32).as_str(), DeployRole::Initiator);
        let t = for_deployment("node-1", "k".repeat(32).as_str(), DeployRole::Target);
        assert_eq!(i.name, "node-1");
        assert_eq!(t.name, "ramdisk-node-1");
        assert_eq!(i.secret.len(), 32);
        assert!(i.secret.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(i.secret, t.secret);
        let other_key = for_deployment("node-1", "j".repeat(32).as_str(), DeployRole::Initiator);
        let other_id = for_deployment("node-2", "k".repeat(32).as_str(), DeployRole::Initiator);
        assert_ne!(i.secret, other_key.secret);
        assert_ne!(i.secret, other_id.secret);
        // Stable: both programs, and every version of them, must agree.
        assert_eq!(
            for_deployment("a", "b", DeployRole::Initiator).secret,
            b"4bada8570a19474c94eb4608b4737f8c"
        );
    }

    #[test]
    fn secret_is_not_printed() {
        let c = for_deployment("node-1", "key", DeployRole::Target);
        let secret = String::from_utf8(c.secret.clone()).unwrap();
        assert!(!format!("{c:?}").contains(&secret));
    }
}
