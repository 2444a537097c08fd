//! The two callbacks to the Ironic API that drive the legacy iSCSI deploy.
//!
//! `pass_deploy_info` tells the conductor where the disk is served, and
//! `pass_bootloader_install_info` how the boot loader went. Both are plain
//! JSON POSTs to `vendor_passthru` whose bodies ([`deploy_contract::callback`],
//! shared with the conductor's service) are byte-compatible with the legacy
//! ramdisk's `curl` calls, so any Ironic from Juno to Wallaby accepts them.
//!
//! The API may be briefly down (a restarting API service, a flapping link)
//! while the conductor still waits, so connection errors, timeouts and 5xx
//! answers are retried with a doubling back-off; a 4xx is the API's final word
//! (wrong key, node not in `wait call-back`) and is returned at once.
//!
//! The HTTP client is `ureq`; `https` goes through rustls (ring), trusting the
//! CA certificates baked into the ramdisk (`tools/build-ramdisk --ca-cert`),
//! else the Mozilla roots built into the binary ([`Trust`]). Environment
//! proxies are ignored (the API sits on the provisioning network) and
//! redirects are not followed.

use deploy_contract::callback::{BootloaderInfo, DeployInfo, PASS_BOOTLOADER_INSTALL_INFO, PASS_DEPLOY_INFO};
use serde::Serialize;
use std::io::Read;
use std::time::Duration;

/// How often and how patiently a callback is tried.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Tries in all, the first included (0 counts as 1).
    pub attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 10,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl Retry {
    /// The wait after the `failures`-th failed attempt (1-based).
    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Whom an `https` API is trusted to be.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Servers whose certificate chains to one of these CA certificates (PEM).
    Ca(Vec<ureq::tls::Certificate<'static>>),
    /// The Mozilla root set built into the binary.
    BuiltIn,
    /// Anyone: no verification (`ironic_api_insecure=1`).
    Insecure,
}

impl Trust {
    /// The CA certificates of the PEM file `path` if it exists, else the built-in roots.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ApiError> {
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Trust::BuiltIn),
            Err(e) => return Err(ApiError::BadCa(format!("{}: {e}", path.display()))),
        };
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::BadCa(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ApiError::BadCa(format!("{}: no PEM certificate in it", path.display())));
        }
        Ok(Trust::Ca(certs))
    }

    fn tls_config(&self) -> ureq::tls::TlsConfig {
        let builder = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        match self {
            Trust::Ca(certs) => builder.root_certs(ureq::tls::RootCerts::new_with_certs(certs)),
            Trust::BuiltIn => builder.root_certs(ureq::tls::RootCerts::WebPki),
            Trust::Insecure => builder.disable_verification(true),
        }
        .build()
    }
}

/// A client for the callbacks of one Ironic API.
#[derive(Debug, Clone)]
pub struct Api {
    /// The API URL without a trailing `/`.
    base: String,
    token: Option<String>,
    timeout: Duration,
    retry: Retry,
    trust: Trust,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the Ironic API refused POST {url} with HTTP {status}: {body}")]
    Rejected { url: String, status: u16, body: String },
    #[error("POST {url} failed {attempts} times (last: {last}); check ironic_api_url and the provisioning network")]
    Unreachable { url: String, attempts: u32, last: String },
    #[error("bad Ironic API URL {0}")]
    BadUrl(String),
    #[error("the auth token cannot be sent in an HTTP header ({0}); check the token file")]
    BadToken(String),
    #[error(
        "the CA certificates for the Ironic API cannot be used: {0}; rebuild the ramdisk with a PEM file (tools/build-ramdisk --ca-cert)"
    )]
    BadCa(String),
}

const JSON: &str = "application/json";
/// How much of a refusal's body is kept for the error message.
const BODY_CHARS: usize = 500;

impl Api {
    /// `token` is the token file's content; surrounding whitespace is dropped
    /// and an empty token means none. `trust` says whom an `https` API must be.
    pub fn new(
        api_url: &str,
        token: Option<String>,
        timeout: Duration,
        retry: Retry,
        trust: Trust,
    ) -> Result<Self, ApiError> {
        let base = api_url.trim().trim_end_matches('/');
        let uri: ureq::http::Uri = base
            .parse()
            .map_err(|e| ApiError::BadUrl(format!("{api_url:?}: {e}")))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
            _ => return Err(ApiError::BadUrl(format!("{api_url:?}: not an http:// or https:// URL"))),
        }
        if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
            return Err(ApiError::BadUrl(format!(
                "{api_url:?}: expected http(s)://host[:port][/path]"
            )));
        }
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        if let Some(t) = &token {
            ureq::http::HeaderValue::from_str(t).map_err(|e| ApiError::BadToken(e.to_string()))?;
        }
        if matches!(trust, Trust::Insecure) && uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
            tracing::warn!(
                url = base,
                "ironic_api_insecure: the Ironic API's certificate is NOT verified; anyone on the path can \
                 impersonate it and receive the deployment key"
            );
        }
        Ok(Api {
            base: base.to_owned(),
            token,
            timeout,
            retry,
            trust,
        })
    }

    /// `{base}/v1/nodes/{node}/vendor_passthru/{method}`; very old ramdisks
    /// were given a base already ending in `/v1`.
    pub fn url(&self, node: &str, method: &str) -> String {
        let v1 = if self.base.ends_with("/v1") { "" } else { "/v1" };
        format!(
            "{}{v1}/nodes/{}/vendor_passthru/{}",
            self.base,
            segment(node),
            segment(method)
        )
    }

    pub fn pass_deploy_info(&self, node: &str, info: &DeployInfo) -> Result<u16, ApiError> {
        self.post(node, PASS_DEPLOY_INFO, info)
    }

    pub fn pass_bootloader_install_info(&self, node: &str, info: &BootloaderInfo) -> Result<u16, ApiError> {
        self.post(node, PASS_BOOTLOADER_INSTALL_INFO, info)
    }

    /// POST `body` as JSON; Ok(status) for any 2xx.
    fn post(&self, node: &str, method: &str, body: &impl Serialize) -> Result<u16, ApiError> {
        let url = self.url(node, method);
        // Cannot fail: the bodies are structs of strings.
        let body = serde_json::to_vec(body).unwrap_or_default();
        // A fresh agent per call: a pooled connection would be stale after the
        // half hour the conductor may take between the two callbacks.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.timeout))
            .max_redirects(0)
            .proxy(None)
            .tls_config(self.trust.tls_config())
            .build()
            .into();
        let attempts = self.retry.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                std::thread::sleep(self.retry.delay(attempt - 1));
            }
            let mut request = agent.post(&url).header("Accept", JSON).header("Content-Type", JSON);
            if let Some(token) = &self.token {
                request = request.header("X-Auth-Token", token);
            }
            match request.send(&body[..]) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if response.status().is_success() {
                        return Ok(status);
                    }
                    let text = body_text(response.body_mut());
                    if !response.status().is_server_error() {
                        return Err(ApiError::Rejected {
                            url,
                            status,
                            body: text,
                        });
                    }
                    last = format!("HTTP {status}: {text}");
                }
                Err(e @ (ureq::Error::BadUri(_) | ureq::Error::Http(_))) => {
                    return Err(ApiError::BadUrl(format!("{url}: {e}")));
                }
                Err(e) => last = describe(&e),
            }
        }
        Err(ApiError::Unreachable { url, attempts, last })
    }
}

/// A client error in words; a certificate that is not trusted says what to do.
fn describe(error: &ureq::Error) -> String {
    let text = error.to_string();
    if text.contains("UnknownIssuer") || text.contains("certificate") || text.contains("Certificate") {
        format!(
            "TLS: the API's certificate is not trusted ({text}); build the ramdisk with its CA \
             (tools/build-ramdisk --ca-cert), or boot with ironic_api_insecure=1"
        )
    } else {
        text
    }
}

/// The start of a response body, as text for an error message.
fn body_text(body: &mut ureq::Body) -> String {
    let mut bytes = Vec::new();
    let _ = body.as_reader().take(4 * BODY_CHARS as u64).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    match text.char_indices().nth(BODY_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Percent-encode everything but RFC 3986 "unreserved" characters, so that a
/// node name cannot change the path.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::thread::{self, JoinHandle};

    /// One request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        }
    }

    enum Reply {
        Status(u16, &'static str),
        /// Read the request, then never answer.
        Hang,
    }

    /// An HTTP/1.1 server answering one connection per reply, in order.
    fn server(replies: Vec<Reply>) -> (String, JoinHandle<Vec<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let (mut seen, mut hung) = (Vec::new(), Vec::new());
            for reply in replies {
                let (mut stream, _) = listener.accept().unwrap();
                seen.push(read_request(&mut stream));
                match reply {
                    Reply::Status(status, body) => {
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        stream.write_all(head.as_bytes()).unwrap();
                        stream.write_all(body.as_bytes()).unwrap();
                    }
                    Reply::Hang => hung.push(stream),
                }
            }
            seen
        });
        (base, handle)
    }

    fn read_request(stream: &mut TcpStream) -> Seen {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed inside the request head");
            data.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap().split(' ');
        let (method, path) = (
            request_line.next().unwrap().to_owned(),
            request_line.next().unwrap().to_owned(),
        );
        let headers: Vec<(String, String)> = lines
            .map(|l| l.split_once(':').unwrap())
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .unwrap()
            .1
            .parse()
            .unwrap();
        let mut body = data[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        Seen {
            method,
            path,
            headers,
            body,
        }
    }

    fn quick(attempts: u32) -> Retry {
        Retry {
            attempts,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    fn api(base: &str, token: Option<&str>, attempts: u32) -> Api {
        Api::new(
            base,
            token.map(str::to_owned),
            Duration::from_secs(5),
            quick(attempts),
            Trust::BuiltIn,
        )
        .unwrap()
    }

    fn deploy_info() -> DeployInfo {
        DeployInfo {
            address: "10.0.0.5".into(),
            key: "k3y".into(),
            iqn: "iqn.2008-10.org.openstack:n1".into(),
            error: "".into(),
            port: None,
        }
    }

    #[test]
    fn url_forms() {
        let want = "http://ironic:6385/v1/nodes/n1/vendor_passthru/pass_deploy_info";
        for base in [
            "http://ironic:6385",
            "http://ironic:6385/",
            "http://ironic:6385/v1",
            " http://ironic:6385/v1/\n",
        ] {
            assert_eq!(api(base, None, 1).url("n1", "pass_deploy_info"), want, "{base:?}");
        }
        let proxied = api("http://h/baremetal", None, 1);
        assert_eq!(
            proxied.url("a/b?c", "m"),
            "http://h/baremetal/v1/nodes/a%2Fb%3Fc/vendor_passthru/m"
        );
    }

    #[test]
    fn bad_urls_and_tokens() {
        let new = |url: &str, token: Option<&str>| {
            Api::new(
                url,
                token.map(str::to_owned),
                Duration::from_secs(1),
                quick(1),
                Trust::BuiltIn,
            )
        };
        assert!(new("https://ironic:6385", None).is_ok());
        for url in [
            "ftp://ironic",
            "ironic:6385",
            "",
            "http://",
            "http://h/?q=1",
            "http://h h",
        ] {
            assert!(matches!(new(url, None), Err(ApiError::BadUrl(_))), "{url:?}");
        }
        assert!(matches!(new("http://h", Some("a\nb")), Err(ApiError::BadToken(_))));
        assert_eq!(new("http://h", Some(" tok\n")).unwrap().token.as_deref(), Some("tok"));
        assert_eq!(new("http://h", Some("\n")).unwrap().token, None);
    }

    #[test]
    fn back_off_doubles_up_to_the_limit() {
        let retry = Retry::default();
        let secs: Vec<u64> = (1..=8).map(|n| retry.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn deploy_info_is_posted_with_headers_and_exact_json() {
        let (base, handle) = server(vec![Reply::Status(202, "")]);
        let api = api(&format!("{base}/"), Some("s3cret\n"), 3);
        assert_eq!(api.pass_deploy_info("n1", &deploy_info()).unwrap(), 202);
        let seen = handle.join().unwrap();
        let [request] = &seen[..] else { panic!("{seen:?}") };
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/nodes/n1/vendor_passthru/pass_deploy_info");
        assert_eq!(request.header("accept"), ["application/json"]);
        assert_eq!(request.header("content-type"), ["application/json"]);
        assert_eq!(request.header("x-auth-token"), ["s3cret"]);
        let want = br#"{"address":"10.0.0.5","key":"k3y","iqn":"iqn.2008-10.org.openstack:n1","error":""}"#;
        assert_eq!(String::from_utf8_lossy(&request.body), String::from_utf8_lossy(want));
    }

    #[test]
    fn bootloader_info_without_a_token() {
        let (base, handle) = server(vec![Reply::Status(200, "{}")]);
        let info = BootloaderInfo {
            address: "::1".into(),
            status: "FAILED".into(),
            key: "k".into(),
            error: "grub \"x\"".into(),
        };
        assert_eq!(
            api(&format!("{base}/v1"), None, 1)
                .pass_bootloader_install_info("n2", &info)
                .unwrap(),
            200
        );
        let seen = handle.join().unwrap();
        assert_eq!(
            seen[0].path,
            "/v1/nodes/n2/vendor_passthru/pass_bootloader_install_info"
        );
        assert!(seen[0].header("x-auth-token").is_empty());
        assert_eq!(
            seen[0].body,
            br#"{"address":"::1","status":"FAILED","key":"k","error":"grub \"x\""}"#
        );
    }

    #[test]
    fn server_errors_and_timeouts_are_retried() {
        let (base, handle) = server(vec![Reply::Status(503, "busy"), Reply::Hang, Reply::Status(202, "")]);
        let api = Api::new(&base, None, Duration::from_millis(300), quick(3), Trust::BuiltIn).unwrap();
        assert_eq!(api.pass_deploy_info("n1", &deploy_info()).unwrap(), 202);
        let seen = handle.join().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s.body == seen[0].body));
    }

    #[test]
    fn server_errors_until_the_attempts_run_out() {
        let (base, handle) = server(vec![Reply::Status(500, "boom"), Reply::Status(503, "still")]);
        let result = api(&base, None, 2).pass_deploy_info("n1", &deploy_info());
        assert!(matches!(result, Err(ApiError::Unreachable { attempts: 2, ref last, .. }) if last.contains("503")));
        assert_eq!(handle.join().unwrap().len(), 2);
    }

    #[test]
    fn client_errors_are_not_retried() {
        let (base, handle) = server(vec![Reply::Status(400, r#"{"error_message": "bad deploy key"}"#)]);
        let result = api(&base, None, 5).pass_deploy_info("n1", &deploy_info());
        let Err(ApiError::Rejected { url, status, body }) = result else {
            panic!("{result:?}")
        };
        assert_eq!((status, url.ends_with("/pass_deploy_info")), (400, true));
        assert!(body.contains("bad deploy key"), "{body}");
        assert_eq!(handle.join().unwrap().len(), 1);
    }

    #[test]
    fn long_bodies_are_truncated() {
        let long: &'static str = "é".repeat(2000).leak();
        let (base, _handle) = server(vec![Reply::Status(409, long)]);
        let Err(ApiError::Rejected { body, .. }) = api(&base, None, 1).pass_deploy_info("n", &deploy_info()) else {
            panic!()
        };
        assert_eq!(body.chars().count(), BODY_CHARS + 3);
    }

    #[test]
    fn connection_refused_is_retried_then_unreachable() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let result = api(&format!("http://127.0.0.1:{port}"), None, 3).pass_deploy_info("n1", &deploy_info());
        let Err(ApiError::Unreachable { url, attempts, last }) = result else {
            panic!("{result:?}")
        };
        assert_eq!(attempts, 3);
        assert_eq!(
            url,
            format!("http://127.0.0.1:{port}/v1/nodes/n1/vendor_passthru/pass_deploy_info")
        );
        assert!(!last.is_empty());
    }
}
