//! A node as the Bare Metal API shows it: every field Ironic has at the
//! requested version, under Ironic's names, `null` (or Ironic's empty value)
//! where this service has nothing to say, and a few fields of our own.
//!
//! What the service knows: the UUID, name, times, provision state and its
//! target while a deploy is under way, the last error, the instance holding
//! the node while a step of its deploy runs there (`reservation`), the
//! instance serving it (`conductor`: the holder, else the last instance
//! that worked on it), its `conductor_group`, its boot mode, its deploy interface (`iscsi`), and in `instance_info`
//! the image it deploys. Power, drivers, ports, inspection, cleaning and the
//! other Ironic features it does not have are `null`, `{}` or `[]`.
//!
//! Our own fields, in full views only: `progress` (the running deploy's
//! bytes), `last_deploy`, and for one node `events` (every state change) and
//! `deploys` (every deploy).

use serde_json::{Map, Value, json};

use super::super::nodes::NodeSpec;
use super::super::store::{NodeRow, ProvisionState, rfc3339};

/// Ironic's node fields and the minor version that added each.
const FIELDS: [(&str, u32); 62] = [
    ("uuid", 1),
    ("created_at", 1),
    ("updated_at", 1),
    ("chassis_uuid", 1),
    ("console_enabled", 1),
    ("driver", 1),
    ("driver_info", 1),
    ("extra", 1),
    ("instance_info", 1),
    ("instance_uuid", 1),
    ("last_error", 1),
    ("maintenance", 1),
    ("maintenance_reason", 1),
    ("power_state", 1),
    ("properties", 1),
    ("provision_state", 1),
    ("provision_updated_at", 1),
    ("reservation", 1),
    ("target_power_state", 1),
    ("target_provision_state", 1),
    ("ports", 1),
    ("driver_internal_info", 3),
    ("name", 5),
    ("inspection_finished_at", 6),
    ("inspection_started_at", 6),
    ("clean_step", 7),
    ("raid_config", 12),
    ("target_raid_config", 12),
    ("states", 14),
    ("network_interface", 20),
    ("resource_class", 21),
    ("portgroups", 24),
    ("boot_interface", 31),
    ("console_interface", 31),
    ("deploy_interface", 31),
    ("inspect_interface", 31),
    ("management_interface", 31),
    ("power_interface", 31),
    ("raid_interface", 31),
    ("vendor_interface", 31),
    ("volume", 32),
    ("storage_interface", 33),
    ("traits", 37),
    ("rescue_interface", 38),
    ("bios_interface", 40),
    ("fault", 42),
    ("deploy_step", 44),
    ("conductor_group", 46),
    ("automated_clean", 47),
    ("protected", 48),
    ("protected_reason", 48),
    ("conductor", 49),
    ("owner", 50),
    ("description", 51),
    ("allocation_uuid", 52),
    ("retired", 61),
    ("retired_reason", 61),
    ("lessee", 65),
    ("network_data", 66),
    ("boot_mode", 75),
    ("secure_boot", 75),
    ("links", 1),
];

/// Link lists that only a full view carries.
const LINK_FIELDS: [&str; 4] = ["ports", "states", "portgroups", "volume"];

/// Our fields, at any version.
pub const OWN_FIELDS: [&str; 4] = ["progress", "last_deploy", "events", "deploys"];

/// Fields of Ironic's plain list (`GET /v1/nodes` without `detail`).
pub const DEFAULT_FIELDS: [&str; 6] = [
    "instance_uuid",
    "maintenance",
    "power_state",
    "provision_state",
    "uuid",
    "name",
];

fn ironic_fields() -> impl Iterator<Item = (&'static str, u32)> {
    FIELDS.iter().copied()
}

/// The minor version that added `field`; ours are in every version; `None`
/// for a name that is no field.
#[must_use]
pub fn field_version(field: &str) -> Option<u32> {
    if OWN_FIELDS.contains(&field) {
        return Some(1);
    }
    ironic_fields().find(|(name, _)| *name == field).map(|(_, v)| v)
}

/// Check a requested field list at `minor`: `Err(true)` if a field is newer
/// than the version (`406`), `Err(false)` with the unknown names (`400`).
///
/// # Errors
///
/// As above, with the message.
pub fn check_fields(fields: &[String], minor: u32) -> Result<(), (bool, String)> {
    if fields
        .iter()
        .any(|f| field_version(f).is_some_and(|v| v > minor) || LINK_FIELDS.contains(&f.as_str()))
    {
        return Err((true, "Request not acceptable.".into()));
    }
    let unknown: Vec<&str> = fields
        .iter()
        .map(String::as_str)
        .filter(|f| field_version(f).is_none() || *f == "links")
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err((false, format!("Field(s) \"{}\" are not valid", unknown.join(", "))))
    }
}

/// What the node document is built from.
#[derive(Debug)]
pub struct NodeFacts<'a> {
    pub row: &'a NodeRow,
    /// `None` for a node no longer in the nodes file.
    pub spec: Option<&'a NodeSpec>,
    pub public_url: &'a str,
}

/// Every Ironic field of the node at the newest version, and its links.
#[must_use]
pub fn ironic_document(facts: &NodeFacts<'_>) -> Map<String, Value> {
    let row = facts.row;
    let state = row.provision_state;
    let target = match state {
        ProvisionState::WaitCallBack | ProvisionState::Deploying | ProvisionState::DeployFailed => json!("active"),
        ProvisionState::Active | ProvisionState::Available => Value::Null,
    };
    let reservation = json!(row.reservation);
    let conductor = json!(row.reservation.as_ref().or(row.conductor.as_ref()));
    let mut instance_info = Map::new();
    if let Some(spec) = facts.spec {
        instance_info.insert("image_source".into(), json!(spec.image));
        if let Some(sum) = &spec.image_checksum {
            instance_info.insert("image_checksum".into(), json!(sum));
        }
        instance_info.insert("image_type".into(), json!(spec.image_type));
        instance_info.insert(
            "capabilities".into(),
            json!({"boot_mode": spec.boot_mode, "boot_option": spec.boot_option}),
        );
        if row.has_configdrive || spec.configdrive.is_some() {
            // Ironic masks it too: it can hold secrets.
            instance_info.insert("configdrive".into(), json!("******"));
        }
    }
    let mut doc = Map::new();
    for (name, _) in ironic_fields() {
        let value = match name {
            "uuid" => json!(row.uuid),
            "name" => json!(row.name),
            "created_at" => json!(row.created_at),
            "updated_at" => json!(row.updated_at),
            "provision_state" => json!(state.as_str()),
            "target_provision_state" => target.clone(),
            "provision_updated_at" => json!(rfc3339(row.state_since)),
            "last_error" => json!(row.last_error),
            "reservation" => reservation.clone(),
            "conductor" => conductor.clone(),
            "deploy_interface" => json!("iscsi"),
            "boot_mode" => json!(facts.spec.map(|s| s.boot_mode.as_str())),
            "instance_info" => Value::Object(instance_info.clone()),
            "maintenance" | "console_enabled" | "protected" | "retired" => json!(false),
            "conductor_group" => json!(row.conductor_group),
            "traits" => json!([]),
            "driver_info"
            | "driver_internal_info"
            | "extra"
            | "properties"
            | "raid_config"
            | "target_raid_config"
            | "clean_step"
            | "deploy_step"
            | "network_data" => json!({}),
            "links" => json!([
                {"href": format!("{}/v1/nodes/{}", facts.public_url, row.uuid), "rel": "self"},
                {"href": format!("{}/nodes/{}", facts.public_url, row.uuid), "rel": "bookmark"},
            ]),
            _ => Value::Null,
        };
        doc.insert(name.to_owned(), value);
    }
    doc
}

/// The node as a client at `1.minor` sees it: fields newer than its version
/// hidden, `available` as `null` before 1.2 (Ironic's old "no state"), and
/// only `fields` (and the links) when given; the link lists only without.
#[must_use]
pub fn render(mut doc: Map<String, Value>, minor: u32, fields: Option<&[String]>) -> Value {
    doc.retain(|name, _| field_version(name).is_none_or(|v| v <= minor));
    if minor < 2 && doc.get("provision_state") == Some(&json!("available")) {
        doc.insert("provision_state".into(), Value::Null);
    }
    if let Some(fields) = fields {
        doc.retain(|name, _| name == "links" || fields.iter().any(|f| f == name));
    }
    Value::Object(doc)
}

/// Only the default fields of the plain list (and the links).
#[must_use]
pub fn default_fields() -> Vec<String> {
    DEFAULT_FIELDS.iter().map(|f| (*f).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: ProvisionState) -> NodeRow {
        NodeRow {
            uuid: "1be26c0b-03f2-4d2d-ae87-c02d7f33c123".into(),
            name: Some("rack1-node1".into()),
            provision_state: state,
            last_error: None,
            created_at: "2026-01-01T00:00:00.000000+00:00".into(),
            updated_at: "2026-01-01T00:00:01.000000+00:00".into(),
            state_since: 0.0,
            has_configdrive: true,
            conductor_group: "rack2".into(),
            reservation: (state == ProvisionState::Deploying).then(|| "conductor1".into()),
            lease_until: None,
            conductor: Some("conductor0".into()),
            progress: None,
            spec: None,
        }
    }

    fn doc(state: ProvisionState) -> Map<String, Value> {
        let row = row(state);
        let facts = NodeFacts {
            row: &row,
            spec: None,
            public_url: "http://h:6385",
        };
        ironic_document(&facts)
    }

    #[test]
    fn the_target_and_the_lock_follow_the_deploy() {
        let waiting = doc(ProvisionState::WaitCallBack);
        assert_eq!(
            (&waiting["target_provision_state"], &waiting["reservation"]),
            (&json!("active"), &Value::Null)
        );
        let running = doc(ProvisionState::Deploying);
        assert_eq!(running["reservation"], "conductor1");
        assert_eq!(
            (&running["conductor"], &running["conductor_group"]),
            (&json!("conductor1"), &json!("rack2"))
        );
        assert_eq!(
            waiting["conductor"], "conductor0",
            "the last instance that worked on it"
        );
        assert_eq!(doc(ProvisionState::DeployFailed)["target_provision_state"], "active");
        assert_eq!(doc(ProvisionState::Active)["target_provision_state"], Value::Null);
        assert_eq!(
            waiting["links"][0]["href"],
            "http://h:6385/v1/nodes/1be26c0b-03f2-4d2d-ae87-c02d7f33c123"
        );
    }

    #[test]
    fn versions_hide_newer_fields_and_old_states() {
        let at = |minor| render(doc(ProvisionState::Available), minor, None);
        let old = at(1);
        assert!(old.get("name").is_none() && old.get("boot_mode").is_none(), "{old}");
        assert_eq!(old["provision_state"], Value::Null);
        let new = at(75);
        assert_eq!(new["provision_state"], "available");
        assert_eq!(new["deploy_interface"], "iscsi");
        assert_eq!(new["name"], "rack1-node1");
        assert!(new.get("boot_mode").is_some() && new.get("lessee").is_some());
        assert_eq!(new.as_object().map(Map::len), Some(FIELDS.len()));
        assert!(at(64).get("lessee").is_none() && at(65).get("lessee").is_some());
    }

    #[test]
    fn field_lists_keep_what_was_asked_and_the_links() {
        let fields = vec!["uuid".to_owned(), "provision_state".to_owned()];
        let shown = render(doc(ProvisionState::Active), 75, Some(&fields));
        let mut keys: Vec<&str> = shown.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["links", "provision_state", "uuid"]);
        assert_eq!(check_fields(&fields, 8), Ok(()));
        assert!(check_fields(&["name".into()], 4).unwrap_err().0, "name is 1.5");
        assert!(check_fields(&["ports".into()], 75).unwrap_err().0);
        let (newer, message) = check_fields(&["uuid".into(), "colour".into()], 75).unwrap_err();
        assert!(!newer && message.contains("\"colour\""), "{message}");
        assert_eq!(check_fields(&["progress".into(), "last_deploy".into()], 1), Ok(()));
    }
}
