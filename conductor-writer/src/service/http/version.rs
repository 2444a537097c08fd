//! Ironic API microversions: which one a request asks for, and the version
//! documents at `/` and `/v1` that clients discover them from.
//!
//! The service speaks 1.1 to 1.75. 1.75 is the newest version whose node
//! resource and provision verbs this service can honestly serve: it covers
//! what python-ironicclient and openstacksdk use for listing, showing and
//! provisioning nodes (fields and the `detail` query, the provision state
//! filter, rebuild with a config drive, `deploy`/`undeploy`). Later versions
//! add node fields and APIs (history, firmware, shards, ...) that it has no
//! data for. A request without a version gets 1.1, as from Ironic.

use axum::http::HeaderMap;
use serde_json::{Value, json};

/// The oldest and newest minor versions of API 1.
pub const MIN: u32 = 1;
pub const MAX: u32 = 75;

/// The request and response header of the version (and its bounds).
pub const HEADER: &str = "X-OpenStack-Ironic-API-Version";
pub const MIN_HEADER: &str = "X-OpenStack-Ironic-API-Minimum-Version";
pub const MAX_HEADER: &str = "X-OpenStack-Ironic-API-Maximum-Version";

/// The minor version a request asks for: `OpenStack-API-Version: baremetal
/// 1.N` or the legacy header, `latest` for the newest; 1.1 without either.
///
/// # Errors
///
/// The `406` message: a malformed version, another major version, or a minor
/// version out of range.
pub fn requested(headers: &HeaderMap) -> Result<u32, String> {
    let modern = headers
        .get_all("openstack-api-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|entry| {
            let mut words = entry.split_whitespace();
            (words.next()?.eq_ignore_ascii_case("baremetal")).then(|| words.next().unwrap_or_default().to_owned())
        });
    let invalid = || format!("Invalid value for {HEADER} header");
    let text = match modern {
        Some(text) => text,
        None => match headers.get(HEADER) {
            Some(value) => value.to_str().map_err(|_| invalid())?.trim().to_owned(),
            None => return Ok(MIN),
        },
    };
    if text.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let (major, minor) = text.split_once('.').ok_or_else(invalid)?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (major, minor) = (number(major).ok_or_else(invalid)?, number(minor).ok_or_else(invalid)?);
    let range = format!("[1.{MIN}, 1.{MAX}]");
    if major != 1 {
        return Err(format!(
            "Mutually exclusive versions requested. Version {major}.{minor} requested but not supported \
             by this service. The supported version range is: {range}."
        ));
    }
    if !(MIN..=MAX).contains(&minor) {
        return Err(format!(
            "Version 1.{minor} was requested but the minor version is not supported by this service. \
             The supported version range is: {range}."
        ));
    }
    Ok(minor)
}

/// Version 1 as `GET /` lists it.
fn version_1(public_url: &str) -> Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{public_url}/v1/"), "rel": "self"}],
        "status": "CURRENT",
        "min_version": format!("1.{MIN}"),
        "version": format!("1.{MAX}"),
    })
}

/// `GET /`.
#[must_use]
pub fn root_document(public_url: &str) -> Value {
    json!({
        "name": "conductor-writer serve",
        "description": "A deploy service for legacy Ironic iSCSI deploy ramdisks, speaking the \
                        Bare Metal API for its nodes.",
        "default_version": version_1(public_url),
        "versions": [version_1(public_url)],
    })
}

/// `GET /v1`: the version and the one resource served, nodes.
#[must_use]
pub fn v1_document(public_url: &str) -> Value {
    json!({
        "id": "v1",
        "links": [
            {"href": format!("{public_url}/v1/"), "rel": "self"},
            {"href": "https://docs.openstack.org/ironic/latest/contributor/webapi.html",
             "rel": "describedby", "type": "text/html"},
        ],
        "media_types": {"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"},
        "nodes": [
            {"href": format!("{public_url}/v1/nodes/"), "rel": "self"},
            {"href": format!("{public_url}/nodes/"), "rel": "bookmark"},
        ],
        "version": version_1(public_url),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(pairs: &[(&str, &str)]) -> Result<u32, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        requested(&headers)
    }

    #[test]
    fn versions_from_either_header() {
        assert_eq!(ask(&[]), Ok(1));
        assert_eq!(ask(&[(HEADER, "1.31")]), Ok(31));
        assert_eq!(ask(&[(HEADER, "latest")]), Ok(MAX));
        assert_eq!(ask(&[("OpenStack-API-Version", "baremetal 1.9")]), Ok(9));
        assert_eq!(
            ask(&[("OpenStack-API-Version", "compute 2.1, baremetal LATEST")]),
            Ok(MAX)
        );
        // The modern header wins, as in microversion-parse.
        assert_eq!(
            ask(&[("OpenStack-API-Version", "baremetal 1.5"), (HEADER, "1.6")]),
            Ok(5)
        );
    }

    #[test]
    fn out_of_range_and_malformed_are_refused() {
        let range = format!("[1.1, 1.{MAX}]");
        for (value, says) in [
            ("1.0", "minor version is not supported"),
            ("1.76", "minor version is not supported"),
            ("2.1", "Mutually exclusive versions"),
            ("1", "Invalid value"),
            ("1.x", "Invalid value"),
            ("1.-1", "Invalid value"),
            ("", "Invalid value"),
        ] {
            let err = ask(&[(HEADER, value)]).unwrap_err();
            assert!(err.contains(says), "{value}: {err}");
            if !says.starts_with("Invalid") {
                assert!(err.contains(&range), "{err}");
            }
        }
    }

    #[test]
    fn documents_name_the_range_and_the_links() {
        let root = root_document("http://10.0.0.1:6385");
        assert_eq!(root["default_version"]["version"], format!("1.{MAX}"));
        assert_eq!(root["versions"][0]["min_version"], "1.1");
        assert_eq!(root["versions"][0]["links"][0]["href"], "http://10.0.0.1:6385/v1/");
        let v1 = v1_document("http://h");
        assert_eq!(v1["id"], "v1");
        assert_eq!(v1["version"]["status"], "CURRENT");
        assert_eq!(v1["nodes"][0]["href"], "http://h/v1/nodes/");
    }
}
