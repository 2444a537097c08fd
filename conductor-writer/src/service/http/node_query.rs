//! The query of `GET /v1/nodes` and `GET /v1/nodes/detail`: filters,
//! sorting, paging (`limit`, `marker`, a `next` link) and the field list,
//! each honoured as Ironic honours it, or refused as Ironic refuses it:
//! `400` for an unknown parameter or a bad value, `406` for one newer than
//! the requested version. None is ignored.
//!
//! Filters are applied to the nodes' full documents, so a filter on a field
//! this service leaves `null` (a driver, an owner) honestly matches no node.

use serde_json::{Map, Value};

use super::node_view::{check_fields, field_version};

/// Ironic's `[api] max_limit`: the most nodes one page holds.
pub const MAX_LIMIT: usize = 1000;

/// Every provision state of Ironic's state machine: a filter on any other
/// value is a mistake (`400`), a filter on one this service never uses
/// matches no node.
const IRONIC_STATES: [&str; 30] = [
    "enroll",
    "verifying",
    "manageable",
    "available",
    "active",
    "wait call-back",
    "deploying",
    "deploy failed",
    "deploy hold",
    "deleting",
    "cleaning",
    "clean wait",
    "clean failed",
    "clean hold",
    "error",
    "inspecting",
    "inspect failed",
    "inspect wait",
    "adopting",
    "adopt failed",
    "rescue",
    "rescue failed",
    "rescue wait",
    "rescuing",
    "unrescue failed",
    "unrescuing",
    "servicing",
    "service wait",
    "service failed",
    "service hold",
];

/// Fields Ironic refuses to sort by.
const UNSORTABLE: [&str; 15] = [
    "properties",
    "driver_info",
    "extra",
    "instance_info",
    "driver_internal_info",
    "clean_step",
    "deploy_step",
    "raid_config",
    "target_raid_config",
    "traits",
    "network_data",
    "links",
    "ports",
    "states",
    "conductor",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Equal to the field's string value.
    Text(&'static str),
    /// The same, case-insensitively (Ironic lowercases conductor groups).
    Lowercase(&'static str),
    Uuid(&'static str),
    Boolean(&'static str),
    /// `instance_uuid` set or not.
    Associated,
    State,
    /// `owner` or `lessee`.
    Project,
    /// The field contains the value.
    Contains(&'static str),
    Marker,
    Limit,
    SortKey,
    SortDir,
    Fields,
    Detail,
}

/// The parameters of the list, the minor version that added each, and
/// whether the `detail` path takes it too.
const PARAMETERS: [(&str, u32, Kind, bool); 25] = [
    ("chassis_uuid", 1, Kind::Uuid("chassis_uuid"), true),
    ("instance_uuid", 1, Kind::Uuid("instance_uuid"), true),
    ("associated", 1, Kind::Associated, true),
    ("maintenance", 1, Kind::Boolean("maintenance"), true),
    ("provision_state", 9, Kind::State, true),
    ("driver", 16, Kind::Text("driver"), true),
    ("resource_class", 21, Kind::Text("resource_class"), true),
    ("fault", 42, Kind::Text("fault"), true),
    ("conductor_group", 46, Kind::Lowercase("conductor_group"), true),
    ("conductor", 49, Kind::Text("conductor"), true),
    ("owner", 50, Kind::Text("owner"), true),
    ("description_contains", 51, Kind::Contains("description"), true),
    ("project", 1, Kind::Project, true),
    ("retired", 61, Kind::Boolean("retired"), true),
    ("lessee", 65, Kind::Text("lessee"), true),
    // Newer than the newest version served: always `406`.
    ("shard", 82, Kind::Text("shard"), true),
    ("sharded", 82, Kind::Boolean("sharded"), true),
    ("parent_node", 83, Kind::Text("parent_node"), true),
    ("include_children", 83, Kind::Boolean("include_children"), true),
    ("instance_name", 104, Kind::Text("instance_name"), true),
    ("marker", 1, Kind::Marker, true),
    ("limit", 1, Kind::Limit, true),
    ("sort_key", 1, Kind::SortKey, true),
    ("sort_dir", 1, Kind::SortDir, true),
    ("fields", 8, Kind::Fields, false),
];

/// Node documents as the list handles them.
pub type Docs = Vec<Map<String, Value>>;

/// Why a query is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    BadRequest(String),
    NotAcceptable,
    /// The marker names no node.
    NoMarker(String),
}

/// A checked list query.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    filters: Vec<(Kind, String)>,
    pub limit: usize,
    marker: Option<String>,
    sort_key: Option<String>,
    descending: bool,
    /// The fields to show; `None` for all (`detail`).
    pub fields: Option<Vec<String>>,
    /// The parameters the `next` link repeats.
    echo: Vec<(String, String)>,
}

fn bad(message: String) -> QueryError {
    QueryError::BadRequest(message)
}

/// oslo's strict boolean parsing, which Ironic uses.
fn boolean(name: &str, value: &str) -> Result<bool, QueryError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(bad(format!(
            "Invalid {name}: Unrecognized value '{value}', acceptable values are: '0', '1', 'f', 'false', \
             'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
        ))),
    }
}

/// Whether `s` is a UUID in its usual 8-4-4-4-12 form.
#[must_use]
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parse the query string of the list (`detail`: the `/detail` path) at `1.minor`.
///
/// # Errors
///
/// See [`QueryError`].
pub fn parse(query: &str, minor: u32, detail_path: bool) -> Result<ListQuery, QueryError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| bad(format!("malformed query string: {e}")))?;
    let mut seen: Vec<&str> = Vec::new();
    let mut unexpected = Vec::new();
    let mut known = Vec::new();
    for (name, value) in &pairs {
        if seen.contains(&name.as_str()) {
            return Err(bad(format!("The query parameter {name} is given more than once")));
        }
        seen.push(name);
        let found = PARAMETERS
            .iter()
            .find(|(n, _, _, on_detail)| n == name && (*on_detail || !detail_path));
        match (found, name.as_str()) {
            (Some(&(_, version, kind, _)), _) => known.push((name, value, version, kind)),
            (None, "detail") if !detail_path => known.push((name, value, 43, Kind::Detail)),
            (None, _) => unexpected.push(name.as_str()),
        }
    }
    if !unexpected.is_empty() {
        return Err(bad(format!("Unexpected arguments: {}", unexpected.join(", "))));
    }
    let mut query = ListQuery {
        filters: Vec::new(),
        limit: MAX_LIMIT,
        marker: None,
        sort_key: None,
        descending: false,
        fields: None,
        echo: Vec::new(),
    };
    let mut detail = detail_path;
    let mut detail_given = false;
    for (name, value, version, kind) in known {
        // `detail` at an older version is a bad parameter, not a newer one.
        if kind == Kind::Detail && minor < version {
            return Err(bad(format!("Invalid query parameter ?detail={value} received.")));
        }
        if minor < version {
            return Err(QueryError::NotAcceptable);
        }
        if !matches!(kind, Kind::Marker | Kind::Limit) {
            query.echo.push((name.clone(), value.clone()));
        }
        match kind {
            Kind::Uuid(_) if !is_uuid(value) => return Err(bad(format!("Expected UUID for {name}: {value}"))),
            Kind::Boolean(_) | Kind::Associated => {
                query.filters.push((kind, boolean(name, value)?.to_string()));
                continue;
            }
            Kind::State if !IRONIC_STATES.contains(&value.as_str()) => {
                return Err(bad(format!("Provision state \"{value}\" is not valid")));
            }
            Kind::Marker if !is_uuid(value) => return Err(bad(format!("Expected UUID for marker: {value}"))),
            Kind::Marker => query.marker = Some(value.to_ascii_lowercase()),
            Kind::Limit => {
                let limit: i64 = value
                    .parse()
                    .map_err(|_| bad(format!("Expected an integer for limit: {value}")))?;
                if limit <= 0 {
                    return Err(bad("Limit must be positive".into()));
                }
                query.limit = usize::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
            }
            Kind::SortKey => query.sort_key = Some(value.clone()),
            Kind::SortDir => {
                query.descending = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(bad(format!(
                            "Invalid sort direction: {value}. Acceptable values are 'asc' or 'desc'"
                        )));
                    }
                };
            }
            Kind::Fields => {
                query.fields = Some(
                    value
                        .split(',')
                        .map(|f| f.trim().to_owned())
                        .filter(|f| !f.is_empty())
                        .collect(),
                );
            }
            Kind::Detail => {
                detail = boolean(name, value)?;
                detail_given = true;
            }
            _ => {}
        }
        if !matches!(
            kind,
            Kind::Marker | Kind::Limit | Kind::SortKey | Kind::SortDir | Kind::Fields | Kind::Detail
        ) {
            query.filters.push((kind, value.clone()));
        }
    }
    if let Some(key) = &query.sort_key {
        if field_version(key).is_some_and(|v| v > minor) {
            return Err(QueryError::NotAcceptable);
        }
        let sortable = key == "id" || (field_version(key).is_some() && !UNSORTABLE.contains(&key.as_str()));
        if !sortable {
            return Err(bad(format!("The sort_key value {key} is an invalid field for sorting")));
        }
    }
    if let Some(fields) = &query.fields {
        if detail_given && detail {
            return Err(bad(
                "Can not specify ?detail=True and fields in the same request.".into()
            ));
        }
        check_fields(fields, minor).map_err(
            |(newer, message)| {
                if newer { QueryError::NotAcceptable } else { bad(message) }
            },
        )?;
    } else if !detail {
        query.fields = Some(super::node_view::default_fields());
    }
    Ok(query)
}

impl ListQuery {
    fn matches(&self, doc: &Map<String, Value>) -> bool {
        let text = |field: &str| doc.get(field).and_then(Value::as_str);
        self.filters.iter().all(|(kind, value)| match *kind {
            Kind::Text(field) => text(field) == Some(value.as_str()),
            Kind::Lowercase(field) => text(field).is_some_and(|t| t.eq_ignore_ascii_case(value)),
            Kind::Uuid(field) => text(field).is_some_and(|t| t.eq_ignore_ascii_case(value)),
            Kind::Boolean(field) => doc.get(field).and_then(Value::as_bool).unwrap_or(false).to_string() == *value,
            Kind::Associated => (text("instance_uuid").is_some()).to_string() == *value,
            Kind::State => text("provision_state") == Some(value.as_str()),
            Kind::Project => text("owner") == Some(value.as_str()) || text("lessee") == Some(value.as_str()),
            Kind::Contains(field) => text(field).is_some_and(|t| t.contains(value.as_str())),
            _ => true,
        })
    }

    /// This page of `docs` (every node's full document, oldest first) and,
    /// when the page is full, the `next` link's query.
    ///
    /// # Errors
    ///
    /// A marker that names no node.
    pub fn page(&self, mut docs: Docs) -> Result<(Docs, Option<String>), QueryError> {
        if let Some(key) = self.sort_key.as_deref().filter(|k| *k != "id") {
            docs.sort_by(|a, b| order(a.get(key), b.get(key)));
        }
        if self.descending {
            docs.reverse();
        }
        let start = match &self.marker {
            None => 0,
            Some(marker) => {
                let at = docs
                    .iter()
                    .position(|d| d.get("uuid").and_then(Value::as_str) == Some(marker.as_str()))
                    .ok_or_else(|| QueryError::NoMarker(marker.clone()))?;
                at + 1
            }
        };
        let page: Vec<_> = docs
            .into_iter()
            .skip(start)
            .filter(|d| self.matches(d))
            .take(self.limit)
            .collect();
        // As Ironic: a full page has a next link, even if nothing follows.
        let next = (page.len() == self.limit).then(|| {
            let last = page
                .last()
                .and_then(|d| d.get("uuid"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut args = self.echo.clone();
            args.push(("limit".into(), self.limit.to_string()));
            args.push(("marker".into(), last.to_owned()));
            serde_urlencoded::to_string(&args).unwrap_or_default()
        });
        Ok((page, next))
    }
}

/// Ascending order of two JSON values as a database sorts a column: nulls
/// first, then booleans, numbers and strings in their natural order.
fn order(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(_) => 3,
        }
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(std::cmp::Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nodes() -> Vec<Map<String, Value>> {
        [
            ("c", "active", "n1"),
            ("a", "wait call-back", "n2"),
            ("b", "active", "n3"),
        ]
        .iter()
        .map(|(letter, state, name)| {
            let uuid = format!("{}-0000-4000-8000-000000000000", letter.repeat(8));
            json!({"uuid": uuid, "provision_state": state, "name": name, "driver": null,
                       "maintenance": false, "instance_uuid": null, "owner": null, "conductor_group": ""})
            .as_object()
            .unwrap()
            .clone()
        })
        .collect()
    }

    fn names(query: &str, minor: u32) -> (Vec<String>, Option<String>) {
        let (page, next) = parse(query, minor, false).unwrap().page(nodes()).unwrap();
        (
            page.iter().map(|d| d["name"].as_str().unwrap().to_owned()).collect(),
            next,
        )
    }

    #[test]
    fn filters_are_honoured() {
        assert_eq!(names("", 75).0, ["n1", "n2", "n3"]);
        assert_eq!(names("provision_state=active", 75).0, ["n1", "n3"]);
        assert_eq!(names("provision_state=wait%20call-back", 75).0, ["n2"]);
        assert_eq!(names("provision_state=manageable", 75).0, Vec::<String>::new());
        assert_eq!(names("maintenance=false", 75).0.len(), 3);
        assert_eq!(names("maintenance=True", 75).0.len(), 0);
        assert_eq!(names("associated=no", 75).0.len(), 3);
        assert_eq!(names("driver=ipmi", 75).0.len(), 0, "no node has a driver");
        assert_eq!(names("owner=alice&project=alice", 75).0.len(), 0);
        assert_eq!(names("conductor_group=", 75).0.len(), 3);
    }

    #[test]
    fn paging_sorting_and_the_next_link() {
        let (first, next) = names("provision_state=active&limit=1", 75);
        assert_eq!(first, ["n1"]);
        let next = next.unwrap();
        assert_eq!(
            next,
            "provision_state=active&limit=1&marker=cccccccc-0000-4000-8000-000000000000"
        );
        assert_eq!(
            names(&next, 75),
            (
                vec!["n3".to_owned()],
                Some("provision_state=active&limit=1&marker=bbbbbbbb-0000-4000-8000-000000000000".to_owned())
            )
        );
        assert_eq!(names("limit=5", 75).1, None, "a page that is not full is the last");
        assert_eq!(names("sort_key=uuid", 75).0, ["n2", "n3", "n1"]);
        assert_eq!(names("sort_key=name&sort_dir=desc", 75).0, ["n3", "n2", "n1"]);
        assert_eq!(
            names("sort_key=uuid&marker=aaaaaaaa-0000-4000-8000-000000000000", 75).0,
            ["n3", "n1"]
        );
        let missing = parse("marker=dddddddd-0000-4000-8000-000000000000", 75, false)
            .unwrap()
            .page(nodes());
        assert!(matches!(missing, Err(QueryError::NoMarker(_))));
    }

    #[test]
    fn fields_and_detail() {
        let plain = parse("", 75, false).unwrap();
        assert_eq!(plain.fields.as_ref().map(Vec::len), Some(6), "Ironic's default fields");
        assert_eq!(parse("", 75, true).unwrap().fields, None, "the detail path");
        assert_eq!(parse("detail=true", 75, false).unwrap().fields, None);
        let some = parse("fields=uuid,name", 75, false).unwrap();
        assert_eq!(some.fields, Some(vec!["uuid".to_owned(), "name".to_owned()]));
        assert!(
            matches!(parse("fields=uuid&detail=True", 75, false), Err(QueryError::BadRequest(m)) if m.contains("detail=True and fields"))
        );
    }

    #[test]
    fn refusals() {
        let refused = |query: &str, minor: u32, detail: bool| parse(query, minor, detail).unwrap_err();
        let says = |e: QueryError, text: &str| matches!(e, QueryError::BadRequest(ref m) if m.contains(text));
        assert!(says(refused("colour=red", 75, false), "Unexpected arguments: colour"));
        assert!(says(refused("fields=uuid", 75, true), "Unexpected arguments: fields"));
        assert!(says(refused("detail=true", 75, true), "Unexpected arguments: detail"));
        assert!(says(
            refused("provision_state=flying", 75, false),
            "Provision state \"flying\" is not valid"
        ));
        assert!(says(refused("limit=0", 75, false), "Limit must be positive"));
        assert!(says(refused("limit=ten", 75, false), "Expected an integer for limit"));
        assert!(says(refused("marker=node-1", 75, false), "Expected UUID for marker"));
        assert!(says(refused("maintenance=perhaps", 75, false), "Invalid maintenance"));
        assert!(says(
            refused("sort_key=properties", 75, false),
            "invalid field for sorting"
        ));
        assert!(says(refused("sort_key=colour", 75, false), "invalid field for sorting"));
        assert!(says(refused("sort_dir=up", 75, false), "Invalid sort direction"));
        assert!(says(refused("fields=colour", 75, false), "\"colour\""));
        assert!(says(
            refused("detail=true", 42, false),
            "Invalid query parameter ?detail=true"
        ));
        assert!(says(refused("limit=1&limit=2", 75, false), "more than once"));
        assert_eq!(refused("provision_state=active", 8, false), QueryError::NotAcceptable);
        assert_eq!(refused("fields=uuid", 7, false), QueryError::NotAcceptable);
        assert_eq!(refused("fields=boot_mode", 74, false), QueryError::NotAcceptable);
        assert_eq!(refused("owner=x", 49, false), QueryError::NotAcceptable);
        assert_eq!(refused("shard=x", 75, false), QueryError::NotAcceptable);
        assert_eq!(refused("sort_key=lessee", 64, false), QueryError::NotAcceptable);
        assert_eq!(parse("limit=5000", 75, false).unwrap().limit, MAX_LIMIT);
    }
}
