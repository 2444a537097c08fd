//! The service's HTTP API: the legacy ramdisk's callbacks as Ironic served
//! them, and the part of the Bare Metal API that python-ironicclient
//! (`baremetal`) and openstacksdk use for nodes.
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `GET /v1` | version documents (public) |
//! | `POST /v1/nodes/{node}/vendor_passthru/{method}` (and `?method=`) | `pass_deploy_info`, `pass_bootloader_install_info` (public; the deploy key authenticates) |
//! | `GET /v1/nodes`, `GET /v1/nodes/detail` | the nodes, filtered, sorted, paged |
//! | `GET /v1/nodes/{node}` | one node, by UUID or name |
//! | `PUT /v1/nodes/{node}/states/provision` | `active`, `rebuild`, `deleted` (and `deploy`, `undeploy`) |
//! | `GET /v1/conductors`, `GET /v1/conductors/{name}` | the instances sharing the database (1.49) |
//! | `GET /metrics` | Prometheus metrics |
//!
//! As in Ironic, a path may omit `/v1` and end with `/`; every response
//! carries the microversion headers; errors are
//! `{"error_message": "{\"faultstring\": ..., \"faultcode\": ..., \"debuginfo\": null}"}`.
//! Routing is by hand over the path's segments: a node named `detail` or
//! a trailing slash cannot change which handler runs.
//!
//! # Layout
//!
//! - [`auth`]: HTTP basic authentication against an htpasswd file.
//! - [`version`]: microversions and the version documents.
//! - [`node_view`]: a node under Ironic's field names.
//! - [`node_query`]: the list's filters, sorting, paging and fields.

pub mod auth;
pub mod node_query;
pub mod node_view;
pub mod version;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use deploy_contract::callback::{PASS_BOOTLOADER_INSTALL_INFO, PASS_DEPLOY_INFO};
use serde_json::{Map, Value, json};

use super::provision::{check_configdrive, parse_request};
use super::store::ProvisionState;
use super::{RequestError, Service};
use auth::{AuthError, Verifier};
use node_query::QueryError;
use node_view::{NodeFacts, ironic_document, render};

/// The most a callback or any small request may send.
const SMALL_BODY: usize = 64 << 10;
/// A provision request may carry a config drive: 64 MiB, gzipped, base64.
const PROVISION_BODY: usize = 96 << 20;

#[derive(Debug)]
struct Api {
    service: Arc<Service>,
    /// `None`: the API is open.
    verifier: Option<Arc<Verifier>>,
}

/// The routes over `service`; `verifier` guards all but the public ones.
pub fn router(service: Arc<Service>, verifier: Option<Verifier>) -> Router {
    let api = Api {
        service,
        verifier: verifier.map(Arc::new),
    };
    Router::new().fallback(handle).with_state(Arc::new(api))
}

/// An answer: a status and a JSON body (or none), or an Ironic error.
#[derive(Debug)]
enum Answer {
    Json(StatusCode, Value),
    Empty(StatusCode),
    Text(String),
    Error(ApiError),
}

/// An error in Ironic's form.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    /// Extra headers (`WWW-Authenticate`, `Allow`).
    headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "The resource could not be found.")
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let status = match &e {
            RequestError::UnknownNode(_) => StatusCode::NOT_FOUND,
            RequestError::BadRequest(_) | RequestError::WrongKey | RequestError::InvalidState { .. } => {
                StatusCode::BAD_REQUEST
            }
            RequestError::WrongState { .. } | RequestError::Locked { .. } => StatusCode::CONFLICT,
            RequestError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            QueryError::NotAcceptable => ApiError::from(RequestError::NotAcceptable),
            QueryError::NoMarker(marker) => ApiError::from(RequestError::UnknownNode(marker)),
        }
    }
}

/// The body of an Ironic error.
fn error_body(status: StatusCode, message: &str) -> Value {
    let faultcode = if status.is_server_error() { "Server" } else { "Client" };
    let fault = json!({"faultstring": message, "faultcode": faultcode, "debuginfo": null});
    json!({"error_message": fault.to_string()})
}

/// What the router found for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Root,
    V1,
    Callback { node: String, method: Option<String> },
    List { detail: bool },
    Show(String),
    Provision(String),
    Conductors,
    Conductor(String),
    Metrics,
}

impl Route {
    /// Routes anyone may call.
    fn is_public(&self) -> bool {
        matches!(self, Route::Root | Route::V1 | Route::Callback { .. })
    }

    /// The method the route takes (`GET` routes take `HEAD` too).
    fn method(&self) -> Method {
        match self {
            Route::Callback { .. } => Method::POST,
            Route::Provision(_) => Method::PUT,
            _ => Method::GET,
        }
    }
}

/// The route of `path`: trailing slashes and a missing `/v1` do not matter,
/// as in Ironic; `/metrics` is ours and outside `/v1`.
fn route(path: &str) -> Option<Route> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Some(Route::Root);
    }
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    if segments == ["metrics"] {
        return Some(Route::Metrics);
    }
    let rest = match segments.split_first() {
        Some((&"v1", rest)) => rest,
        _ => &segments[..],
    };
    let owned = |s: &str| s.to_owned();
    Some(match rest {
        [] => Route::V1,
        ["nodes"] => Route::List { detail: false },
        ["nodes", "detail"] => Route::List { detail: true },
        ["nodes", node] if !node.is_empty() => Route::Show(owned(node)),
        ["nodes", node, "states", "provision"] => Route::Provision(owned(node)),
        ["conductors"] => Route::Conductors,
        ["conductors", name] if !name.is_empty() => Route::Conductor(owned(name)),
        ["nodes", node, "vendor_passthru"] => Route::Callback {
            node: owned(node),
            method: None,
        },
        ["nodes", node, "vendor_passthru", method] => Route::Callback {
            node: owned(node),
            method: Some(owned(method)),
        },
        _ => return None,
    })
}

/// `http://HOST[:PORT]` as the client reached us.
fn public_url(headers: &HeaderMap, api: &Api) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| api.service.options.listen.to_string(), ToOwned::to_owned);
    let scheme = if api.service.options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

/// Who called: the peer's address, behind the plain and the TLS listener alike.
#[derive(Debug, Clone, Copy)]
pub struct Caller(SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

async fn handle(State(api): State<Arc<Api>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<Caller>>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0.0);
    let (parts, body) = request.into_parts();
    let minor = version::requested(&parts.headers);
    let answer = answer(
        &api,
        peer,
        &parts.method,
        &parts.uri,
        &parts.headers,
        body,
        minor.clone(),
    )
    .await;
    let mut response = match answer {
        Answer::Json(status, value) => (status, axum::Json(value)).into_response(),
        Answer::Empty(status) => status.into_response(),
        Answer::Text(text) => ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response(),
        Answer::Error(error) => {
            let mut response = (error.status, axum::Json(error_body(error.status, &error.message))).into_response();
            for (name, value) in error.headers {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(version::MIN_HEADER, HeaderValue::from_static("1.1"));
    if let Ok(max) = HeaderValue::from_str(&format!("1.{}", version::MAX)) {
        headers.insert(version::MAX_HEADER, max);
    }
    if let Ok(value) = minor.and_then(|minor| HeaderValue::from_str(&format!("1.{minor}")).map_err(|e| e.to_string())) {
        headers.insert(version::HEADER, value);
    }
    response
}

async fn answer(
    api: &Arc<Api>,
    peer: SocketAddr,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
    minor: Result<u32, String>,
) -> Answer {
    let Some(route) = route(uri.path()) else {
        return Answer::Error(ApiError::not_found());
    };
    let wanted = route.method();
    if method != wanted && !(wanted == Method::GET && method == Method::HEAD) {
        let mut error = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "The method specified is not allowed for this resource.",
        );
        error.headers.push((header::ALLOW, wanted.to_string()));
        return Answer::Error(error);
    }
    if let Some(verifier) = api.verifier.as_ref().filter(|_| !route.is_public()) {
        let credentials = headers
            .get(header::AUTHORIZATION)
            .map(|h| h.to_str().unwrap_or("").to_owned());
        let verifier = verifier.clone();
        let checked = tokio::task::spawn_blocking(move || verifier.verify(credentials.as_deref()))
            .await
            .unwrap_or_else(|e| Err(AuthError::File(format!("the credential check failed: {e}"))));
        if let Err(e) = checked {
            return Answer::Error(refused(api, peer, uri, e));
        }
    }
    let minor = match minor {
        Ok(minor) => minor,
        Err(message) => return Answer::Error(ApiError::new(StatusCode::NOT_ACCEPTABLE, message)),
    };
    let limit = if matches!(route, Route::Provision(_)) {
        PROVISION_BODY
    } else {
        SMALL_BODY
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            return Answer::Error(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {limit} bytes"),
            ));
        }
    };
    let public = public_url(headers, api);
    let result = match route {
        Route::Root => Ok(Answer::Json(StatusCode::OK, version::root_document(&public))),
        Route::V1 => Ok(Answer::Json(StatusCode::OK, version::v1_document(&public))),
        Route::Metrics => metrics(&api.service).await.map(Answer::Text),
        Route::Callback { node, method } => {
            let method = method.or_else(|| query_value(uri.query(), "method"));
            callback(&api.service, &node, method.as_deref(), peer, &body).await
        }
        Route::List { detail } => list(&api.service, &public, uri.query().unwrap_or(""), minor, detail).await,
        Route::Show(node) => show(&api.service, &public, &node, uri.query().unwrap_or(""), minor).await,
        Route::Provision(node) => provision(&api.service, &node, &body, minor).await,
        Route::Conductors => conductors(&api.service, &public, None, uri.query().unwrap_or(""), minor).await,
        Route::Conductor(name) => {
            conductors(&api.service, &public, Some(&name), uri.query().unwrap_or(""), minor).await
        }
    };
    result.unwrap_or_else(Answer::Error)
}

/// A `401` (or `400`, `500`) for credentials that did not prove a user.
fn refused(api: &Api, peer: SocketAddr, uri: &axum::http::Uri, e: AuthError) -> ApiError {
    api.service.metrics.unauthorized();
    tracing::warn!(%peer, path = uri.path(), error = %e, "API request refused");
    let status = match e {
        AuthError::Missing | AuthError::Wrong => StatusCode::UNAUTHORIZED,
        AuthError::Malformed(_) => StatusCode::BAD_REQUEST,
        AuthError::File(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut error = ApiError::new(status, e.to_string());
    if status == StatusCode::UNAUTHORIZED {
        error
            .headers
            .push((header::WWW_AUTHENTICATE, "Basic realm=\"Baremetal API\"".into()));
    }
    error
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or("")).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

async fn callback(
    service: &Arc<Service>,
    node: &str,
    method: Option<&str>,
    peer: SocketAddr,
    body: &Bytes,
) -> Result<Answer, ApiError> {
    match method {
        Some(PASS_DEPLOY_INFO) => service.pass_deploy_info(node, peer, body).await?,
        Some(PASS_BOOTLOADER_INSTALL_INFO) => service.pass_bootloader_install_info(node, peer, body).await?,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "No vendor passthru method {other:?}: conductor-writer serves pass_deploy_info and pass_bootloader_install_info"
                ),
            ));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "Missing mandatory parameter: method",
            ));
        }
    }
    Ok(Answer::Empty(StatusCode::ACCEPTED))
}

/// Every node's full document (Ironic's fields at the newest version, and
/// ours when `own`), oldest first.
async fn documents(service: &Service, public: &str, own: bool) -> Result<Vec<Map<String, Value>>, ApiError> {
    let rows = service.store.nodes().await.map_err(RequestError::from)?;
    let mut docs = Vec::with_capacity(rows.len());
    for row in &rows {
        let facts = NodeFacts {
            row,
            spec: row.spec.as_ref(),
            public_url: public,
        };
        let mut doc = ironic_document(&facts);
        if own {
            doc.insert("progress".into(), json!(service.progress(row)));
            let last = service.store.deploys(&row.uuid).await.ok().and_then(|mut d| d.pop());
            doc.insert("last_deploy".into(), json!(last));
        }
        docs.push(doc);
    }
    Ok(docs)
}

async fn list(service: &Service, public: &str, query: &str, minor: u32, detail: bool) -> Result<Answer, ApiError> {
    let query = node_query::parse(query, minor, detail)?;
    let own = query
        .fields
        .as_ref()
        .is_none_or(|f| f.iter().any(|f| node_view::OWN_FIELDS.contains(&f.as_str())));
    let (page, next) = query.page(documents(service, public, own).await?)?;
    let nodes: Vec<Value> = page
        .into_iter()
        .map(|doc| render(doc, minor, query.fields.as_deref()))
        .collect();
    let mut body = json!({ "nodes": nodes });
    if let Some(next) = next {
        let path = if detail { "nodes/detail" } else { "nodes" };
        body["next"] = json!(format!("{public}/v1/{path}?{next}"));
    }
    Ok(Answer::Json(StatusCode::OK, body))
}

async fn show(service: &Service, public: &str, node: &str, query: &str, minor: u32) -> Result<Answer, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut fields = None;
    for (name, value) in pairs {
        match name.as_str() {
            "fields" if minor < 8 => return Err(RequestError::NotAcceptable.into()),
            "fields" => fields = Some(value.split(',').map(|f| f.trim().to_owned()).collect::<Vec<_>>()),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Unexpected arguments: {other}"),
                ));
            }
        }
    }
    if let Some(fields) = &fields {
        node_view::check_fields(fields, minor).map_err(|(newer, message)| {
            if newer {
                ApiError::from(RequestError::NotAcceptable)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, message)
            }
        })?;
    }
    // A node in the nodes file by UUID or name; one removed from it by UUID.
    let row = match service.store.find(node).await.map_err(RequestError::from)? {
        Some((mut row, spec)) => {
            row.spec = Some(spec);
            row
        }
        None => service
            .store
            .node(&node.to_ascii_lowercase())
            .await
            .map_err(RequestError::from)?
            .ok_or_else(|| RequestError::UnknownNode(node.to_owned()))?,
    };
    let facts = NodeFacts {
        row: &row,
        spec: row.spec.as_ref(),
        public_url: public,
    };
    let mut doc = ironic_document(&facts);
    let deploys = service.store.deploys(&row.uuid).await.unwrap_or_default();
    doc.insert("progress".into(), json!(service.progress(&row)));
    doc.insert("last_deploy".into(), json!(deploys.last()));
    let events = service.store.events(&row.uuid).await.unwrap_or_default();
    doc.insert("events".into(), json!(events));
    doc.insert("deploys".into(), json!(deploys));
    Ok(Answer::Json(StatusCode::OK, render(doc, minor, fields.as_deref())))
}

async fn provision(service: &Arc<Service>, node: &str, body: &Bytes, minor: u32) -> Result<Answer, ApiError> {
    // The node first: an unknown node is a 404 whatever the body says.
    service.find(node).await?;
    let request = parse_request(body, minor)?;
    if let Some(drive) = request.configdrive.clone() {
        tokio::task::spawn_blocking(move || check_configdrive(&drive))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    }
    service.provision(node, &request).await?;
    Ok(Answer::Empty(StatusCode::ACCEPTED))
}

/// The API version that added conductors.
const CONDUCTORS: u32 = 49;

/// Ironic's conductors: the instances on this database (`hostname` is the
/// instance's `--conductor` name), alive if heard from within the lease.
async fn conductors(
    service: &Service,
    public: &str,
    one: Option<&str>,
    query: &str,
    minor: u32,
) -> Result<Answer, ApiError> {
    if minor < CONDUCTORS {
        return Err(ApiError::not_found());
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut detail = one.is_some();
    for (name, value) in pairs {
        match (name.as_str(), value.to_ascii_lowercase().as_str()) {
            ("detail", "true" | "1") if one.is_none() => detail = true,
            ("detail", "false" | "0") if one.is_none() => {}
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Unexpected arguments: {name}"),
                ));
            }
        }
    }
    let rows = service
        .store
        .conductors(service.lease())
        .await
        .map_err(RequestError::from)?;
    let doc = |row: &super::store::ConductorRow| {
        let mut doc = json!({
            "hostname": row.name,
            "conductor_group": row.conductor_group,
            "alive": row.alive,
            "links": [
                {"href": format!("{public}/v1/conductors/{}", row.name), "rel": "self"},
                {"href": format!("{public}/conductors/{}", row.name), "rel": "bookmark"},
            ],
        });
        if detail {
            doc["drivers"] = json!(["iscsi"]);
            doc["created_at"] = json!(row.started_at);
            doc["updated_at"] = json!(row.heartbeat_at);
        }
        doc
    };
    match one {
        Some(name) => rows
            .iter()
            .find(|row| row.name == name)
            .map(|row| Answer::Json(StatusCode::OK, doc(row)))
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Conductor {name} could not be found."))),
        None => Ok(Answer::Json(
            StatusCode::OK,
            json!({"conductors": rows.iter().map(doc).collect::<Vec<_>>()}),
        )),
    }
}

async fn metrics(service: &Service) -> Result<String, ApiError> {
    let rows = service.store.nodes().await.map_err(RequestError::from)?;
    let counts: Vec<(ProvisionState, u64)> = ProvisionState::ALL
        .iter()
        .map(|&state| {
            let n = rows.iter().filter(|r| r.provision_state == state).count();
            (state, u64::try_from(n).unwrap_or(u64::MAX))
        })
        .collect();
    Ok(service.metrics.render(&counts))
}

#[cfg(test)]
mod tests;
