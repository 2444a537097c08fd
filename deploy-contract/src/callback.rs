//! The ramdisk's callbacks to the Ironic API: `POST
//! {ironic_api_url}/v1/nodes/{deployment_id}/vendor_passthru/{method}` with a JSON body.
//!
//! The ramdisk sends these types and `conductor-writer serve` receives them, so the field names
//! are written once, and they are the legacy ones: any Ironic from Juno to Wallaby accepts what
//! the ramdisk sends, and a legacy bash ramdisk's `curl` bodies are what serve reads.
//!
//! Sending, a body is exactly the legacy ramdisk's (the fields in its order, nothing more).
//! Receiving is as lenient as Ironic was: unknown fields are ignored, `iqn` and `error` may be
//! absent or `null`, and `port` may be a number or a string.

use serde::{Deserialize, Deserializer, Serialize};

/// The callback that says where the disk is served (or why it is not).
pub const PASS_DEPLOY_INFO: &str = "pass_deploy_info";
/// The callback that says how installing the boot loader went (`boot_option=local`).
pub const PASS_BOOTLOADER_INSTALL_INFO: &str = "pass_bootloader_install_info";

/// [`BootloaderInfo::status`] when the boot loader is installed.
pub const SUCCEEDED: &str = "SUCCEEDED";
/// [`BootloaderInfo::status`] when it is not; [`BootloaderInfo::error`] says why.
pub const FAILED: &str = "FAILED";

/// The body of `pass_deploy_info`: `{"address", "key", "iqn", "error"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployInfo {
    /// The node's address, where its target listens.
    pub address: String,
    /// The deployment key from the kernel line; the receiver checks it before anything else.
    pub key: String,
    /// The IQN served; empty means the node's usual one.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub iqn: String,
    /// Empty on success; a non-empty error fails the deploy.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub error: String,
    /// The target's TCP port, which Ironic took from a ramdisk that sent one (3260 otherwise). The
    /// legacy ramdisk never sent it, so it is left out when `None`; a value that is no port is
    /// read as `None`, as Ironic's default then applied. (Ironic's `lun` is not read: the LUN
    /// comes from the conductor's own record of the node.)
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_port")]
    pub port: Option<u16>,
}

/// The body of `pass_bootloader_install_info`: `{"address", "status", "key", "error"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootloaderInfo {
    pub address: String,
    /// [`SUCCEEDED`] or [`FAILED`]; kept as text so the receiver can name any other value.
    pub status: String,
    pub key: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub error: String,
}

/// A string field that a ramdisk may also send as `null`.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A port as a number or a numeric string; anything else is no port.
fn lenient_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(value
        .and_then(|p| p.as_u64().or_else(|| p.as_str().and_then(|s| s.parse().ok())))
        .and_then(|p| u16::try_from(p).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy_info() -> DeployInfo {
        DeployInfo {
            address: "10.0.0.5".into(),
            key: "k3y".into(),
            iqn: "iqn.2008-10.org.openstack:n1".into(),
            error: String::new(),
            port: None,
        }
    }

    #[test]
    fn the_ramdisk_sends_the_legacy_bodies_exactly() {
        assert_eq!(
            serde_json::to_string(&deploy_info()).unwrap(),
            r#"{"address":"10.0.0.5","key":"k3y","iqn":"iqn.2008-10.org.openstack:n1","error":""}"#
        );
        let bootloader = BootloaderInfo {
            address: "::1".into(),
            status: FAILED.into(),
            key: "k".into(),
            error: "grub \"x\"".into(),
        };
        assert_eq!(
            serde_json::to_string(&bootloader).unwrap(),
            r#"{"address":"::1","status":"FAILED","key":"k","error":"grub \"x\""}"#
        );
    }

    #[test]
    fn the_receiver_reads_what_the_ramdisk_sends() {
        let sent = serde_json::to_vec(&deploy_info()).unwrap();
        assert_eq!(serde_json::from_slice::<DeployInfo>(&sent).unwrap(), deploy_info());
        let with_port = DeployInfo {
            port: Some(3261),
            ..deploy_info()
        };
        let sent = serde_json::to_vec(&with_port).unwrap();
        assert_eq!(serde_json::from_slice::<DeployInfo>(&sent).unwrap(), with_port);
        let bootloader = BootloaderInfo {
            address: "10.0.0.5".into(),
            status: SUCCEEDED.into(),
            key: "k".into(),
            error: String::new(),
        };
        let sent = serde_json::to_vec(&bootloader).unwrap();
        assert_eq!(serde_json::from_slice::<BootloaderInfo>(&sent).unwrap(), bootloader);
    }

    #[test]
    fn the_receiver_is_as_lenient_as_ironic() {
        let read = |json: &str| serde_json::from_str::<DeployInfo>(json);
        let minimal = read(r#"{"address": "a", "key": "k"}"#).unwrap();
        assert_eq!(
            (minimal.iqn.as_str(), minimal.error.as_str(), minimal.port),
            ("", "", None)
        );
        let nulls = read(r#"{"address": "a", "key": "k", "iqn": null, "error": null, "port": null}"#).unwrap();
        assert_eq!(nulls, minimal);
        let extra = read(r#"{"address": "a", "key": "k", "lun": "1", "root_uuid": 7}"#).unwrap();
        assert_eq!(extra, minimal, "unknown fields are ignored");
        for (port, want) in [
            ("3261", Some(3261)),
            ("\"3262\"", Some(3262)),
            ("\"x\"", None),
            ("70000", None),
            ("-1", None),
            ("3260.5", None),
            ("true", None),
            ("[1]", None),
        ] {
            let info = read(&format!(r#"{{"address": "a", "key": "k", "port": {port}}}"#)).unwrap();
            assert_eq!(info.port, want, "{port}");
        }
        for bad in [
            r#"{"key": "k"}"#,
            r#"{"address": null, "key": "k"}"#,
            r#"{"address": "a", "key": "k", "iqn": 5}"#,
            r#"{"address": "a", "key": "k", "error": ["x"]}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let bootloader: BootloaderInfo =
            serde_json::from_str(r#"{"address": "a", "status": "MAYBE", "key": "k", "error": null}"#).unwrap();
        assert_eq!((bootloader.status.as_str(), bootloader.error.as_str()), ("MAYBE", ""));
        assert!(serde_json::from_str::<BootloaderInfo>(r#"{"address": "a", "key": "k"}"#).is_err());
    }
}
