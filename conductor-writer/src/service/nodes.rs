//! The nodes file of `conductor-writer serve`: which nodes the service may deploy and how.
//!
//! In Ironic this lived in the database behind the API and reached the ramdisk through the PXE
//! kernel line. The stand-alone service has no API to enrol nodes, so an operator writes them in
//! one TOML file. Everything a deploy will trust later (the key a callback must echo, the image,
//! the partition sizes) is checked here, once, so a typo fails at start-up with the node and the
//! key named instead of half-way through writing a disk.

use crate::deploy::Request;
use crate::deploy::layout;
use crate::deploy::table::Label;
use deploy_contract::hints::RootDeviceHints;
use deploy_contract::kernel::{BootMode, BootOption};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

/// One `[[node]]` table. Enum-like fields stay strings, already checked against their sets.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub uuid: String,
    pub deploy_key: String,
    pub image: String,
    #[serde(default)]
    pub image_checksum: Option<String>,
    #[serde(default = "default_image_type")]
    pub image_type: String,
    #[serde(default)]
    pub root_mb: Option<u64>,
    #[serde(default)]
    pub swap_mb: u64,
    #[serde(default)]
    pub ephemeral_mb: u64,
    #[serde(default = "default_ephemeral_format")]
    pub ephemeral_format: String,
    #[serde(default)]
    pub preserve_ephemeral: bool,
    #[serde(default)]
    pub configdrive: Option<String>,
    #[serde(default = "default_boot_mode")]
    pub boot_mode: String,
    #[serde(default = "default_boot_option")]
    pub boot_option: String,
    #[serde(default)]
    pub disk_label: Option<String>,
    #[serde(default = "default_efi_mb")]
    pub efi_mb: u64,
    #[serde(default)]
    pub portal: Option<String>,
    #[serde(default = "default_notify_port")]
    pub notify_port: u16,
    #[serde(default = "default_lun")]
    pub lun: u16,
    #[serde(default)]
    pub chap: bool,
    #[serde(default)]
    pub root_device: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Only instances started with this `--conductor-group` deploy the node
    /// (Ironic's field: lowercased; empty, the default, for instances
    /// without one).
    #[serde(default)]
    pub conductor_group: String,
}

fn default_image_type() -> String {
    "partition".into()
}
fn default_ephemeral_format() -> String {
    "ext4".into()
}
fn default_boot_mode() -> String {
    "bios".into()
}
fn default_boot_option() -> String {
    "netboot".into()
}
fn default_efi_mb() -> u64 {
    550
}
fn default_notify_port() -> u16 {
    deploy_contract::done::PORT
}
fn default_lun() -> u16 {
    1
}

impl NodeSpec {
    /// The target name the ramdisk serves; Ironic's `iscsi_target_iqn` for this node.
    pub fn iqn(&self) -> String {
        format!("iqn.2008-10.org.openstack:{}", self.uuid)
    }

    /// What the node asks of its disk, in the deploy's own types.
    pub fn deploy_request(&self) -> Result<Request, String> {
        fn pick<T: clap::ValueEnum>(what: &str, value: &str) -> Result<T, String> {
            T::from_str(value, true).map_err(|_| format!("bad `{what}` {value:?}"))
        }
        let label = match self.disk_label.as_deref() {
            None => None,
            Some("gpt") => Some(Label::Gpt),
            Some("msdos") => Some(Label::Msdos),
            Some(other) => return Err(format!("bad `disk_label` {other:?}")),
        };
        Ok(Request {
            image_type: pick("image_type", &self.image_type)?,
            partitions: layout::Request {
                boot_mode: pick("boot_mode", &self.boot_mode)?,
                boot_option: pick("boot_option", &self.boot_option)?,
                label,
                efi_mb: self.efi_mb,
                ephemeral_mb: self.ephemeral_mb,
                swap_mb: self.swap_mb,
                configdrive_mb: 0,
                root_mb: self.root_mb,
            },
            ephemeral_format: pick("ephemeral_format", &self.ephemeral_format)?,
            preserve_ephemeral: self.preserve_ephemeral,
            configdrive: self.configdrive.clone(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    #[error("cannot read the nodes file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the nodes file {} is not valid: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("the nodes file {}: [[node]] {node}: {problem}; fix it and start again", path.display())]
    Invalid {
        path: PathBuf,
        node: String,
        problem: String,
    },
    #[error("the nodes file {} lists node {uuid} twice; keep one [[node]] per uuid", path.display())]
    Duplicate { path: PathBuf, uuid: String },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodesFile {
    #[serde(default)]
    node: Vec<NodeSpec>,
}

/// Reads and checks the nodes file at `path`.
pub fn load(path: &Path) -> Result<Vec<NodeSpec>, NodesError> {
    let text = std::fs::read_to_string(path).map_err(|source| NodesError::Read {
        path: path.into(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and checks a nodes file; `path` only names it in errors. Uuids come back lowercased.
pub fn parse(text: &str, path: &Path) -> Result<Vec<NodeSpec>, NodesError> {
    let file: NodesFile = toml::from_str(text).map_err(|e| NodesError::Parse {
        path: path.into(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let mut nodes: Vec<NodeSpec> = Vec::with_capacity(file.node.len());
    for (index, mut spec) in file.node.into_iter().enumerate() {
        if let Err(problem) = check(&spec) {
            let named = spec.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            let node = format!("#{} uuid {:?}{named}", index + 1, spec.uuid);
            return Err(NodesError::Invalid {
                path: path.into(),
                node,
                problem,
            });
        }
        spec.uuid.make_ascii_lowercase();
        spec.conductor_group.make_ascii_lowercase();
        if nodes.iter().any(|n| n.uuid == spec.uuid) {
            return Err(NodesError::Duplicate {
                path: path.into(),
                uuid: spec.uuid,
            });
        }
        nodes.push(spec);
    }
    Ok(nodes)
}

/// Checks one node; the error names the key and says what is expected.
fn check(s: &NodeSpec) -> Result<(), String> {
    if !is_uuid(&s.uuid) {
        return Err(format!(
            "`uuid` must be a UUID like 1be26c0b-03f2-4d2d-ae87-c02d7f33c123, got {:?}",
            s.uuid
        ));
    }
    // The key is a secret: say what is wrong with it, never echo it.
    if s.deploy_key.len() < 8 || !s.deploy_key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("`deploy_key` must be at least 8 printable ASCII characters without spaces".into());
    }
    if s.image.trim().is_empty() {
        return Err("`image` must be a file path or an http(s) URL, got an empty string".into());
    }
    if let Some(sum) = &s.image_checksum {
        let ok = match sum.split_once(':') {
            Some(("sha256", hex)) => is_hex(hex, 64),
            Some(("md5", hex)) => is_hex(hex, 32),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "`image_checksum` must be sha256:<64 hex digits> or md5:<32 hex digits>, got {sum:?}"
            ));
        }
    }
    one_of("image_type", &s.image_type, &["partition", "whole-disk"])?;
    one_of(
        "ephemeral_format",
        &s.ephemeral_format,
        &["ext4", "ext3", "ext2", "vfat", "xfs"],
    )?;
    one_of("boot_mode", &s.boot_mode, &BootMode::ALL.map(BootMode::as_str))?;
    one_of("boot_option", &s.boot_option, &BootOption::ALL.map(BootOption::as_str))?;
    if let Some(label) = &s.disk_label {
        one_of("disk_label", label, &["msdos", "gpt"])?;
    }
    if let Some(key) = s.deploy_request()?.misplaced() {
        return Err(format!(
            "`{key}` only applies to partition images; remove it or set image_type = \"partition\""
        ));
    }
    if s.root_mb == Some(0) {
        return Err("`root_mb` must be > 0; omit it to give root the rest of the disk".into());
    }
    if s.efi_mb == 0 {
        return Err("`efi_mb` must be > 0".into());
    }
    if s.notify_port == 0 {
        return Err("`notify_port` must be a TCP port > 0".into());
    }
    if let Some(portal) = s.portal.as_deref().filter(|p| !is_portal(p)) {
        return Err(format!(
            "`portal` must be host:port (IPv6 as [addr]:port), got {portal:?}"
        ));
    }
    if let Some(hints) = &s.root_device {
        check_root_device(hints)?;
    }
    for (key, value) in [("configdrive", &s.configdrive), ("name", &s.name)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(format!("`{key}` is an empty string; remove the key instead"));
        }
    }
    check_conductor_group(&s.conductor_group).map_err(|e| format!("`conductor_group` {e}"))?;
    // The API finds a node by its name in a URL path, as Ironic does.
    if let Some(name) = s.name.as_deref().filter(|n| !n.is_empty()) {
        if ["detail", "validate"].contains(&name) {
            return Err(format!(
                "`name` {name:?} is reserved by the API (/v1/nodes/{name}); choose another"
            ));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)) || is_uuid(name) {
            return Err(format!(
                "`name` {name:?} must be letters, digits and . _ ~ - only, and not a UUID (Ironic's logical names)"
            ));
        }
    }
    Ok(())
}

/// Ironic's rule for a conductor group: at most 255 letters, digits, `_`, `-` and `.`.
///
/// # Errors
///
/// What is wrong with `group`, for a message that names where it came from.
pub fn check_conductor_group(group: &str) -> Result<(), String> {
    if group.len() > 255 || !group.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
        return Err(format!(
            "{group:?} must be at most 255 letters, digits, _ - and . (Ironic's conductor groups)"
        ));
    }
    Ok(())
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!("`{key}` must be one of {}, got {value:?}", allowed.join(", ")))
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, len)| is_hex(g, len))
}

fn is_portal(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// Root device hints go onto the ramdisk's kernel line as Ironic wrote them: `k=v,k=v`, values
/// percent-encoded, since a space would split the kernel line. What they say is checked by the
/// parser the ramdisk runs, so a hint refused there is refused here, at start-up.
fn check_root_device(hints: &str) -> Result<(), String> {
    if let Some(item) = hints
        .split(',')
        .find(|item| item.is_empty() || !item.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(format!(
            "`root_device` hint {item:?} needs a non-empty key=value without spaces (percent-encode them: %20)"
        ));
    }
    RootDeviceHints::parse(hints)
        .map(drop)
        .map_err(|e| format!("`root_device`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "1be26c0b-03f2-4d2d-ae87-c02d7f33c123";
    const FULL: &str = r#"
[[node]]
uuid = "1be26c0b-03f2-4d2d-ae87-c02d7f33c123"
deploy_key = "0123456789abcdefghijABCDEFGHIJ01"
image = "/srv/images/ubuntu.qcow2"      # path or http(s) URL
image_checksum = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
image_type = "partition"
root_mb = 4096
swap_mb = 512
ephemeral_mb = 0
ephemeral_format = "xfs"
preserve_ephemeral = true
configdrive = "/srv/configdrives/node1.gz.b64"
boot_mode = "uefi"
boot_option = "local"
disk_label = "gpt"
efi_mb = 200
portal = "127.0.0.1:3260"
notify_port = 10001
lun = 2
chap = true
root_device = "model=Big%20Disk,size=%3E%3D100"
name = "rack1-node1"
conductor_group = "Rack1"
"#;

    fn parse_str(text: &str) -> Result<Vec<NodeSpec>, NodesError> {
        parse(text, Path::new("/etc/nodes.toml"))
    }

    /// A minimal valid node with `lines` set (replacing a base key of the same name).
    fn node_with(lines: &[(&str, &str)]) -> String {
        let mut keys = vec![("uuid", format!("{UUID:?}")), ("deploy_key", "\"k3y-k3y-k3y\"".into())];
        keys.push(("image", "\"http://images/a.img\"".into()));
        for (key, value) in lines {
            keys.retain(|(k, _)| k != key);
            keys.push((key, (*value).to_owned()));
        }
        let body: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!("[[node]]\n{}\n", body.join("\n"))
    }

    #[test]
    fn full_example_parses_every_field() {
        let nodes = parse_str(FULL).unwrap();
        let expected = NodeSpec {
            uuid: UUID.into(),
            deploy_key: "0123456789abcdefghijABCDEFGHIJ01".into(),
            image: "/srv/images/ubuntu.qcow2".into(),
            image_checksum: Some("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
            image_type: "partition".into(),
            root_mb: Some(4096),
            swap_mb: 512,
            ephemeral_mb: 0,
            ephemeral_format: "xfs".into(),
            preserve_ephemeral: true,
            configdrive: Some("/srv/configdrives/node1.gz.b64".into()),
            boot_mode: "uefi".into(),
            boot_option: "local".into(),
            disk_label: Some("gpt".into()),
            efi_mb: 200,
            portal: Some("127.0.0.1:3260".into()),
            notify_port: 10001,
            lun: 2,
            chap: true,
            root_device: Some("model=Big%20Disk,size=%3E%3D100".into()),
            name: Some("rack1-node1".into()),
            conductor_group: "rack1".into(),
        };
        assert_eq!(nodes, vec![expected]);
        assert_eq!(
            nodes[0].iqn(),
            "iqn.2008-10.org.openstack:1be26c0b-03f2-4d2d-ae87-c02d7f33c123"
        );
    }

    #[test]
    fn defaults_and_lowercased_uuid() {
        let text = node_with(&[("uuid", "\"1BE26C0B-03F2-4D2D-AE87-C02D7F33C123\"")]);
        let node = parse_str(&text).unwrap().remove(0);
        assert_eq!(node.uuid, UUID);
        assert_eq!(
            (node.image_checksum, node.root_mb, node.swap_mb, node.ephemeral_mb),
            (None, None, 0, 0)
        );
        assert_eq!(
            (node.image_type.as_str(), node.ephemeral_format.as_str()),
            ("partition", "ext4")
        );
        assert_eq!(
            (node.boot_mode.as_str(), node.boot_option.as_str()),
            ("bios", "netboot")
        );
        assert_eq!((node.efi_mb, node.notify_port, node.lun), (550, 10000, 1));
        assert!(!node.preserve_ephemeral && !node.chap);
        assert_eq!((node.configdrive, node.disk_label, node.portal), (None, None, None));
        assert_eq!((node.root_device, node.name), (None, None));
        assert_eq!(node.conductor_group, "");
        let grouped = node_with(&[("conductor_group", "\"Rack-2.East_1\"")]);
        assert_eq!(parse_str(&grouped).unwrap()[0].conductor_group, "rack-2.east_1");
    }

    #[test]
    fn every_invalid_value_names_the_node_and_the_key() {
        let wd = ("image_type", "\"whole-disk\"");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("uuid", "\"1be26c0b-03f2-4d2d-ae87-c02d7f33c12\"")], "`uuid`"),
            (&[("uuid", "\"1be26c0b03f24d2dae87c02d7f33c123\"")], "`uuid`"),
            (&[("deploy_key", "\"short\"")], "`deploy_key`"),
            (&[("deploy_key", "\"has a space in it\"")], "`deploy_key`"),
            (&[("image", "\" \"")], "`image`"),
            (
                &[("image_checksum", "\"sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709\"")],
                "`image_checksum`",
            ),
            (&[("image_checksum", "\"md5:xyz\"")], "`image_checksum`"),
            (
                &[("image_checksum", &format!("\"sha256:{}\"", "g".repeat(64)))],
                "`image_checksum`",
            ),
            (&[("image_type", "\"qcow2\"")], "`image_type`"),
            (&[("ephemeral_format", "\"ntfs\"")], "`ephemeral_format`"),
            (&[("boot_mode", "\"efi\"")], "`boot_mode`"),
            (&[("boot_option", "\"pxe\"")], "`boot_option`"),
            (&[("disk_label", "\"dos\"")], "`disk_label`"),
            (&[wd, ("root_mb", "10")], "`root_mb`"),
            (&[wd, ("swap_mb", "1")], "`swap_mb`"),
            (&[wd, ("ephemeral_mb", "1")], "`ephemeral_mb`"),
            (&[wd, ("preserve_ephemeral", "true")], "`preserve_ephemeral`"),
            (&[("root_mb", "0")], "`root_mb`"),
            (&[("efi_mb", "0")], "`efi_mb`"),
            (&[("notify_port", "0")], "`notify_port`"),
            (&[("portal", "\"::1:3260\"")], "`portal`"),
            (&[("portal", "\"10.0.0.1\"")], "`portal`"),
            (&[("portal", "\"10.0.0.1:0\"")], "`portal`"),
            (&[("portal", "\"[not-v6]:3260\"")], "`portal`"),
            (&[("root_device", "\"colour=red\"")], "`root_device`"),
            (&[("root_device", "\"model=Big Disk\"")], "`root_device`"),
            (&[("root_device", "\"size=big\"")], "`root_device`"),
            (&[("root_device", "\"size=%3E%3Dbig\"")], "`root_device`"),
            (&[("root_device", "\"size=%3E%3\"")], "`root_device`"),
            (&[("root_device", "\"model\"")], "`root_device`"),
            (&[("root_device", "\"size=0\"")], "`root_device`"),
            (&[("root_device", "\"serial=a,serial=b\"")], "`root_device`"),
            (&[("root_device", "\"model=%3E%3D5\"")], "`root_device`"),
            (&[("root_device", "\"serial=,model=x\"")], "`root_device`"),
            (&[("configdrive", "\"\"")], "`configdrive`"),
            (&[("name", "\"\"")], "`name`"),
            (&[("name", "\"detail\"")], "`name`"),
            (&[("name", "\"rack 1\"")], "`name`"),
            (&[("name", "\"a/b\"")], "`name`"),
            (&[("name", &format!("{UUID:?}"))], "`name`"),
            (&[("conductor_group", "\"rack 2\"")], "`conductor_group`"),
            (
                &[("conductor_group", &format!("{:?}", "g".repeat(256)))],
                "`conductor_group`",
            ),
        ];
        for (lines, key) in cases {
            let err = parse_str(&node_with(lines)).unwrap_err();
            assert!(matches!(err, NodesError::Invalid { .. }), "{lines:?}: {err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(key) && msg.contains("[[node]] #1 uuid") && msg.contains("/etc/nodes.toml"),
                "{msg}"
            );
        }
        let secret = parse_str(&node_with(&[("deploy_key", "\"s3cr t\"")]))
            .unwrap_err()
            .to_string();
        assert!(!secret.contains("s3cr"), "{secret}");
        let named = node_with(&[("name", "\"rack1-node1\""), ("efi_mb", "0")]);
        assert!(
            parse_str(&named)
                .unwrap_err()
                .to_string()
                .contains(&format!("#1 uuid {UUID:?} (rack1-node1)"))
        );
    }

    #[test]
    fn accepted_edge_values() {
        let ok: &[&[(&str, &str)]] = &[
            &[("portal", "\"[fd00::1]:3260\"")],
            &[("portal", "\"target-1.example:3261\"")],
            &[("image_checksum", &format!("\"md5:{}\"", "A".repeat(32)))],
            &[("image_type", "\"whole-disk\""), ("disk_label", "\"msdos\"")],
            &[("root_device", "\"serial=S1%2C2,wwn=0x5000\"")],
        ];
        for lines in ok {
            assert!(parse_str(&node_with(lines)).is_ok(), "{lines:?}");
        }
    }

    #[test]
    fn duplicate_uuid_is_refused_whatever_its_case() {
        let second = node_with(&[("uuid", &format!("{:?}", UUID.to_uppercase()))]);
        let err = parse_str(&format!("{}{second}", node_with(&[]))).unwrap_err();
        assert!(
            matches!(&err, NodesError::Duplicate { uuid, .. } if uuid == UUID),
            "{err:?}"
        );
        assert!(err.to_string().contains(UUID));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = parse_str(&node_with(&[("imgae", "\"x\"")])).unwrap_err();
        assert!(
            matches!(err, NodesError::Parse { .. }) && err.to_string().contains("imgae"),
            "{err}"
        );
        let err = parse_str("[[nodes]]\nuuid = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("nodes"), "{err}");
        let err = parse_str(&node_with(&[("swap_mb", "-1")])).unwrap_err();
        assert!(err.to_string().contains("swap_mb"), "{err}");
    }

    #[test]
    fn empty_file_is_an_empty_list() {
        assert_eq!(parse_str("").unwrap(), vec![]);
        assert_eq!(parse_str("# no nodes yet\n\n").unwrap(), vec![]);
    }

    #[test]
    fn load_reads_the_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.toml");
        std::fs::write(&path, FULL).unwrap();
        assert_eq!(load(&path).unwrap().len(), 1);
        let err = load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(
            matches!(err, NodesError::Read { .. }) && err.to_string().contains("missing.toml"),
            "{err}"
        );
    }
}
