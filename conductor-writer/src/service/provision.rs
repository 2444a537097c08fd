//! `PUT /v1/nodes/{node}/states/provision`: the operator asks a node to be
//! deployed again (`rebuild`, or `active` after a failure or a tear-down) or
//! torn down (`deleted`).
//!
//! Ironic's state machine, for the states this service has:
//!
//! ```text
//! available --active--> wait call-back        (deploy; the node is then booted into the ramdisk)
//! deploy failed --active|rebuild--> wait call-back
//! active --rebuild--> wait call-back
//! active|deploy failed|wait call-back --deleted--> available
//! ```
//!
//! Anything else is Ironic's `InvalidStateRequested` (`400`), except on a
//! node whose deploy is running, which is locked (`409`, which clients
//! retry). Tearing down cannot power the node off or clean its disk (the
//! service has no power control): it stops the service from waiting for,
//! and accepting, the node's callbacks, and forgets its config drive.
//!
//! A request is checked whole before anything changes: its target, its
//! arguments, and its config drive (decoded, as the deploy will).

use serde_json::Value;
use tracing::info;

use super::store::{ConfigDriveChange, ProvisionState, StoreError};
use super::{RequestError, Service};
use crate::deploy::configdrive;

/// The provision targets this service serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Active,
    Rebuild,
    Deleted,
}

/// A checked provision request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionRequest {
    pub target: Target,
    /// As given: a URL, or a (gzipped) base64-encoded image that decodes.
    pub configdrive: Option<String>,
    /// The target as the client spelt it, for messages.
    pub verb: String,
}

/// Ironic's verbs this service does not serve (it deploys; nothing else).
const OTHER_VERBS: [&str; 10] = [
    "manage", "provide", "inspect", "abort", "clean", "adopt", "rescue", "unrescue", "unhold", "service",
];

/// The API version that added `deploy` and `undeploy`.
const DEPLOY_VERBS: u32 = 73;
/// The API version from which `rebuild` takes a config drive.
const REBUILD_CONFIGDRIVE: u32 = 35;
/// The API version from which a config drive may be a JSON object.
const CONFIGDRIVE_DICT: u32 = 56;

impl Target {
    /// The states it may start from, and the state it leads to.
    fn transition(self) -> (&'static [ProvisionState], ProvisionState) {
        use ProvisionState::{Active, Available, DeployFailed, WaitCallBack};
        match self {
            Target::Active => (&[Available, DeployFailed], WaitCallBack),
            Target::Rebuild => (&[Active, DeployFailed], WaitCallBack),
            Target::Deleted => (&[Active, DeployFailed, WaitCallBack], Available),
        }
    }
}

/// Parse and check a provision body at API version `1.minor`; a config drive
/// is not decoded here (see [`check_configdrive`]).
///
/// # Errors
///
/// What Ironic refuses, with Ironic's status: a missing or unknown target or
/// argument (`400`), a verb newer than the version (`406`), a config drive
/// for another target or in a form this service cannot use (`400`).
pub fn parse_request(body: &[u8], minor: u32) -> Result<ProvisionRequest, RequestError> {
    let bad = |m: String| RequestError::BadRequest(m);
    let json: Value = serde_json::from_slice(body).map_err(|e| bad(format!("malformed provision body: {e}")))?;
    let Value::Object(fields) = json else {
        return Err(bad("the provision body must be a JSON object".into()));
    };
    const KNOWN: [&str; 8] = [
        "target",
        "configdrive",
        "clean_steps",
        "deploy_steps",
        "rescue_password",
        "disable_ramdisk",
        "service_steps",
        "runbook",
    ];
    let unknown: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| !KNOWN.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(bad(format!("Unexpected arguments: {}", unknown.join(", "))));
    }
    let verb = match fields.get("target") {
        Some(Value::String(t)) => t.clone(),
        Some(other) => return Err(bad(format!("Expected string for target: {other}"))),
        None => return Err(bad("Missing mandatory parameter: target".into())),
    };
    let target = match verb.as_str() {
        "active" => Target::Active,
        "rebuild" => Target::Rebuild,
        "deleted" => Target::Deleted,
        "deploy" | "undeploy" if minor < DEPLOY_VERBS => return Err(RequestError::NotAcceptable),
        "deploy" => Target::Active,
        "undeploy" => Target::Deleted,
        other if OTHER_VERBS.contains(&other) => {
            return Err(bad(format!(
                "The requested action \"{other}\" is not served by conductor-writer, which deploys \
                 nodes only; it accepts active, rebuild and deleted"
            )));
        }
        other => {
            return Err(bad(format!(
                "The requested action \"{other}\" could not be understood."
            )));
        }
    };
    for key in [
        "clean_steps",
        "deploy_steps",
        "service_steps",
        "runbook",
        "rescue_password",
        "disable_ramdisk",
    ] {
        let given = match fields.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Array(steps)) => !steps.is_empty(),
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if given {
            return Err(bad(format!(
                "\"{key}\" is not supported by conductor-writer: its deploys have fixed steps"
            )));
        }
    }
    let configdrive = match fields.get("configdrive") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::Object(o)) if o.is_empty() => None,
        Some(given) => {
            let allowed = match target {
                Target::Active => true,
                Target::Rebuild => minor >= REBUILD_CONFIGDRIVE,
                Target::Deleted => false,
            };
            if !allowed {
                let targets = if minor >= REBUILD_CONFIGDRIVE {
                    "active, rebuild"
                } else {
                    "active"
                };
                return Err(bad(format!(
                    "Adding a config drive is only supported when setting provision state to {targets}"
                )));
            }
            match given {
                Value::String(s) => Some(s.clone()),
                Value::Object(_) if minor < CONFIGDRIVE_DICT => {
                    return Err(bad(format!(
                        "Providing a JSON object for configdrive is only supported starting with API version 1.{CONFIGDRIVE_DICT}"
                    )));
                }
                Value::Object(_) => {
                    return Err(bad(
                        "conductor-writer cannot build a config drive from meta_data, user_data and \
                         network_data; pass a gzipped, base64-encoded ISO 9660 or vfat image, or its http:// URL"
                            .into(),
                    ));
                }
                other => {
                    return Err(bad(format!(
                        "Invalid configdrive format: {other} is neither a JSON object nor a string"
                    )));
                }
            }
        }
    };
    Ok(ProvisionRequest {
        target,
        configdrive,
        verb,
    })
}

/// A config drive given inline must decode, as the deploy will decode it; a
/// URL is fetched by the deploy, before it writes anything.
///
/// # Errors
///
/// A URL of another scheme, or content that is not a config drive image.
pub fn check_configdrive(value: &str) -> Result<(), RequestError> {
    if let Some((scheme, _)) = value.split_once("://") {
        return if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
            Ok(())
        } else {
            Err(RequestError::BadRequest(format!(
                "Invalid configdrive format: a {scheme}:// URL; give an http:// URL or the drive itself"
            )))
        };
    }
    configdrive::decode(value.as_bytes(), "configdrive")
        .map(drop)
        .map_err(|e| RequestError::BadRequest(format!("Invalid configdrive format: {e}")))
}

impl Service {
    /// Carry out a checked provision request on `node` (its UUID or name).
    ///
    /// # Errors
    ///
    /// An unknown node (`404`), a target not possible from the node's state
    /// (`400`), a node whose deploy runs (`409`).
    pub async fn provision(&self, node: &str, request: &ProvisionRequest) -> Result<(), RequestError> {
        let (row, _) = self.find(node).await?;
        let uuid = row.uuid;
        let (from, to) = request.target.transition();
        let configdrive = match (request.target, &request.configdrive) {
            (Target::Deleted, _) => ConfigDriveChange::Clear,
            (_, Some(drive)) => ConfigDriveChange::Set(drive),
            (_, None) => ConfigDriveChange::Keep,
        };
        let detail = format!("provision target {}", request.verb);
        let moved = self
            .store
            .transition_if(&uuid, from, to, None, &detail, configdrive, &self.me.name)
            .await;
        let was = match moved {
            Ok(was) => was,
            Err(StoreError::NotInState {
                state: ProvisionState::Deploying,
                holder,
                ..
            }) => {
                return Err(RequestError::Locked {
                    node: uuid,
                    host: holder.unwrap_or_else(|| {
                        "(none yet: the deploy waits for an instance of its conductor group)".into()
                    }),
                });
            }
            Err(StoreError::NotInState { state, .. }) => {
                return Err(RequestError::InvalidState {
                    action: request.verb.clone(),
                    node: uuid,
                    state: state.as_str(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        info!(node = %uuid, target = %request.verb, from = was.as_str(), to = to.as_str(), "provision state changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, minor: u32) -> Result<ProvisionRequest, RequestError> {
        parse_request(body.as_bytes(), minor)
    }

    fn message(result: Result<ProvisionRequest, RequestError>) -> String {
        match result {
            Err(RequestError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn targets_and_aliases() {
        for (body, minor, target) in [
            (r#"{"target": "active"}"#, 1, Target::Active),
            (r#"{"target": "rebuild"}"#, 1, Target::Rebuild),
            (r#"{"target": "deleted"}"#, 1, Target::Deleted),
            (r#"{"target": "deploy"}"#, 73, Target::Active),
            (r#"{"target": "undeploy", "configdrive": null}"#, 75, Target::Deleted),
        ] {
            assert_eq!(parse(body, minor).unwrap().target, target, "{body}");
        }
        assert!(matches!(
            parse(r#"{"target": "deploy"}"#, 72),
            Err(RequestError::NotAcceptable)
        ));
    }

    #[test]
    fn refusals_say_why() {
        assert!(message(parse("{}", 75)).contains("Missing mandatory parameter: target"));
        assert!(message(parse("[]", 75)).contains("JSON object"));
        assert!(message(parse("not json", 75)).contains("malformed"));
        assert!(message(parse(r#"{"target": "manage"}"#, 75)).contains("\"manage\" is not served"));
        assert!(message(parse(r#"{"target": "fly"}"#, 75)).contains("could not be understood"));
        assert!(message(parse(r#"{"target": "active", "colour": 1}"#, 75)).contains("Unexpected arguments: colour"));
        assert!(
            message(parse(r#"{"target": "active", "deploy_steps": [{"step": "x"}]}"#, 75)).contains("deploy_steps")
        );
        let drive = r#"{"target": "rebuild", "configdrive": "H4sI"}"#;
        assert!(message(parse(drive, 34)).contains("only supported when setting provision state to active"));
        assert_eq!(parse(drive, 35).unwrap().configdrive.as_deref(), Some("H4sI"));
        let torn = r#"{"target": "deleted", "configdrive": "H4sI"}"#;
        assert!(message(parse(torn, 75)).contains("active, rebuild"));
        let dict = r#"{"target": "active", "configdrive": {"meta_data": {}}}"#;
        assert!(message(parse(dict, 55)).contains("starting with API version 1.56"));
        assert!(message(parse(dict, 56)).contains("cannot build a config drive"));
        assert!(message(parse(r#"{"target": "active", "configdrive": 5}"#, 75)).contains("Invalid configdrive"));
        // Empty values are no config drive, as in Ironic.
        assert_eq!(
            parse(r#"{"target": "active", "configdrive": ""}"#, 75)
                .unwrap()
                .configdrive,
            None
        );
    }

    #[test]
    fn inline_drives_must_decode_and_urls_must_be_http() {
        assert!(check_configdrive("http://images.example/drive.gz.b64").is_ok());
        assert!(check_configdrive("https://images.example/drive").is_ok());
        assert!(matches!(
            check_configdrive("ftp://x/y"),
            Err(RequestError::BadRequest(_))
        ));
        for garbage in ["H4sI", "not base64 !", "aGVsbG8gd29ybGQ="] {
            assert!(
                matches!(check_configdrive(garbage), Err(RequestError::BadRequest(m)) if m.starts_with("Invalid configdrive format"))
            );
        }
    }

    #[test]
    fn the_state_machine_is_ironics_for_our_states() {
        use ProvisionState::*;
        let can = |target: Target, state| target.transition().0.contains(&state);
        assert!(can(Target::Active, Available) && can(Target::Active, DeployFailed));
        assert!(!can(Target::Active, Active) && !can(Target::Active, WaitCallBack) && !can(Target::Active, Deploying));
        assert!(can(Target::Rebuild, Active) && can(Target::Rebuild, DeployFailed));
        assert!(!can(Target::Rebuild, Available) && !can(Target::Rebuild, WaitCallBack));
        assert!(
            can(Target::Deleted, WaitCallBack) && !can(Target::Deleted, Available) && !can(Target::Deleted, Deploying)
        );
        assert_eq!(Target::Deleted.transition().1, Available);
        assert_eq!(Target::Rebuild.transition().1, WaitCallBack);
    }
}
