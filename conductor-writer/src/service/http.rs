//! The service's HTTP API: the legacy ramdisk's two callbacks, as Ironic
//! served them, and a read side with Ironic's field names.
//!
//! - `POST /v1/nodes/{node}/vendor_passthru/{method}` (also without `/v1`,
//!   and `.../vendor_passthru?method={method}`): `202` on acceptance, `400`
//!   with an Ironic-style error for a malformed body or a wrong key, `404`
//!   for an unknown node, `409` for a node not waiting for that callback.
//! - `GET /v1/nodes`, `GET /v1/nodes/{node}` (with its events and deploys).
//! - `PUT /v1/nodes/{node}/states/provision` `{"target": "active"|"rebuild"}`.
//!
//! Bodies are parsed by hand rather than by axum's `Json`, which answers a
//! missing field with 422: Ironic's clients expect 400.

use super::{BootloaderCallback, CallbackError, DeployCallback, Service};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The routes over `service`.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/nodes", get(list))
        .route("/v1/nodes/{node}", get(show))
        .route("/v1/nodes/{node}/states/provision", put(provision))
        .route("/v1/nodes/{node}/vendor_passthru/{method}", post(passthru))
        .route("/nodes/{node}/vendor_passthru/{method}", post(passthru))
        .route("/v1/nodes/{node}/vendor_passthru", post(passthru_query))
        .route("/nodes/{node}/vendor_passthru", post(passthru_query))
        .route("/", get(root))
        .route("/v1", get(root))
        .with_state(service)
}

/// An Ironic-style error: `error_message` holds a JSON string with
/// `faultstring`, as python-ironicclient expects.
fn error(status: StatusCode, message: &str) -> Response {
    let fault = json!({ "faultstring": message, "faultcode": if status.is_server_error() { "Server" } else { "Client" }, "debuginfo": null });
    (status, Json(json!({ "error_message": fault.to_string() }))).into_response()
}

impl IntoResponse for CallbackError {
    fn into_response(self) -> Response {
        let status = match &self {
            CallbackError::UnknownNode(_) => StatusCode::NOT_FOUND,
            CallbackError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CallbackError::WrongState { .. } => StatusCode::CONFLICT,
            CallbackError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, &self.to_string())
    }
}

async fn root() -> Json<Value> {
    Json(json!({ "name": "conductor-writer", "description": "a deploy service for legacy Ironic iSCSI ramdisks" }))
}

async fn passthru(
    State(service): State<Arc<Service>>,
    Path((node, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    callback(&service, &node, &method, &body).await
}

async fn passthru_query(
    State(service): State<Arc<Service>>,
    Path(node): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(method) = query.get("method") else {
        return error(StatusCode::BAD_REQUEST, "vendor_passthru needs a method");
    };
    callback(&service, &node, method, &body).await
}

/// Parse a callback body, or say precisely what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(method: &str, body: &[u8]) -> Result<T, CallbackError> {
    serde_json::from_slice(body).map_err(|e| CallbackError::BadRequest(format!("malformed {method} body: {e}")))
}

async fn callback(service: &Arc<Service>, node: &str, method: &str, body: &[u8]) -> Response {
    let result = match method {
        "pass_deploy_info" => match parse::<DeployCallback>(method, body) {
            Ok(body) => service.pass_deploy_info(node, body),
            Err(e) => Err(e),
        },
        "pass_bootloader_install_info" => match parse::<BootloaderCallback>(method, body) {
            Ok(body) => service.pass_bootloader_install_info(node, body).await,
            Err(e) => Err(e),
        },
        other => Err(CallbackError::BadRequest(format!(
            "no vendor passthru method {other:?}"
        ))),
    };
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => {
            tracing::warn!(%node, method, error = %e, "callback refused");
            e.into_response()
        }
    }
}

/// One node as the read side shows it.
fn node_json(service: &Service, row: &super::store::NodeRow) -> Value {
    let deploys = service.store.deploys(&row.uuid).unwrap_or_default();
    json!({
        "uuid": row.uuid,
        "name": row.name,
        "provision_state": row.provision_state,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "progress": service.progress(&row.uuid),
        "last_deploy": deploys.last(),
    })
}

async fn list(State(service): State<Arc<Service>>) -> Response {
    match service.store.nodes() {
        Ok(rows) => {
            Json(json!({ "nodes": rows.iter().map(|r| node_json(&service, r)).collect::<Vec<_>>() })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn show(State(service): State<Arc<Service>>, Path(node): Path<String>) -> Response {
    let uuid = match service.spec(&node) {
        Ok(spec) => spec.uuid.clone(),
        Err(_) => node.to_ascii_lowercase(),
    };
    match service.store.node(&uuid) {
        Ok(Some(row)) => {
            let mut value = node_json(&service, &row);
            value["events"] = json!(service.store.events(&uuid).unwrap_or_default());
            value["deploys"] = json!(service.store.deploys(&uuid).unwrap_or_default());
            Json(value).into_response()
        }
        Ok(None) => CallbackError::UnknownNode(node).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn provision(State(service): State<Arc<Service>>, Path(node): Path<String>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Target {
        target: String,
    }
    let result = parse::<Target>("provision", &body).and_then(|t| service.provision(&node, &t.target));
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}
