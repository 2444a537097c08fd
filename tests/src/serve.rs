//! `conductor-writer serve` as a process on loopback, an HTTP client for its
//! API, and the nodes, ramdisk command lines and disks its tests deploy.

use crate::agent::workspace_binary;
use crate::must;
use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// A running `conductor-writer serve`, killed on drop.
#[derive(Debug)]
pub struct Serve {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// Sent with every request of [`Serve::get`] and [`Serve::node`].
    pub credentials: Option<(String, String)>,
}

impl Serve {
    /// Serve `dir/nodes.toml` with `dir/state.sqlite` on 127.0.0.1:`port`;
    /// waits until its (public) version document answers.
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> Self {
        Self::start_on(dir, port, dir.join("state.sqlite").to_str().expect("UTF-8 path"), extra)
    }

    /// The same with the database `db` (a SQLite file or a PostgreSQL URL);
    /// its log goes to `dir/serve-PORT.log`, appended to across restarts.
    pub fn start_on(dir: &Path, port: u16, db: &str, extra: &[&str]) -> Self {
        let log = dir.join(format!("serve-{port}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the serve log");
        let child = Command::new(workspace_binary("conductor-writer", "CONDUCTOR_WRITER"))
            .args(["serve", "--nodes", dir.join("nodes.toml").to_str().expect("UTF-8 path")])
            .args(["--db", db])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start conductor-writer serve");
        let mut serve = Serve {
            child,
            port,
            log,
            credentials: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http("GET", &serve.url("/v1"), &[], None).status != 200 {
            let exited = serve.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "serve did not come up ({exited:?}): {}",
                serve.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        serve
    }

    /// The same, with HTTP basic credentials for every later request.
    #[must_use]
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Authorization` for the credentials, if any.
    #[must_use]
    pub fn authorization(&self) -> Option<String> {
        self.credentials.as_ref().map(|(u, p)| basic(u, p))
    }

    /// `METHOD path` with the credentials and `extra` headers.
    pub fn call(&self, method: &str, path: &str, extra: &[(&str, &str)], body: Option<&str>) -> Reply {
        let auth = self.authorization();
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        http(method, &self.url(path), &headers, body)
    }

    /// `GET path` at the newest API version, as JSON; panics unless 200.
    pub fn get(&self, path: &str) -> Value {
        let reply = self.call("GET", path, &[("X-OpenStack-Ironic-API-Version", "latest")], None);
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        serde_json::from_str(&reply.body).expect("JSON")
    }

    pub fn node(&self, uuid: &str) -> Value {
        self.get(&format!("/v1/nodes/{uuid}"))
    }

    /// Wait until the node reaches `state`; its JSON.
    pub fn wait_for(&self, uuid: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.node(uuid);
            if node["provision_state"] == state {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "node {uuid} is {} (last_error {}), not {state}; serve log:\n{}",
                node["provision_state"],
                node["last_error"],
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: the process dies where it is, as in a crash.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the clean shutdown; its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        crate::wait_within(&mut self.child, Duration::from_secs(20)).and_then(|s| s.code())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- serve log ---\n{}--- end ---", self.log());
        }
    }
}

/// `Basic ...` for `user` and `password`.
#[must_use]
pub fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// An HTTP answer; status 0 when nothing answered.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `faultstring` of an Ironic error body; panics on another body.
    #[must_use]
    pub fn fault(&self) -> String {
        let outer = self.json();
        let inner = outer["error_message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error_message: {}", self.body));
        let fault: Value = serde_json::from_str(inner).expect("error_message holds JSON");
        assert!(
            fault.get("faultcode").is_some() && fault.get("debuginfo").is_some(),
            "{fault}"
        );
        fault["faultstring"].as_str().expect("faultstring").to_owned()
    }
}

/// One request on a fresh connection.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    http_on(&agent, method, url, headers, body)
}

/// One request with `agent` (which keeps connections alive).
pub fn http_on(agent: &ureq::Agent, method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    macro_rules! with_headers {
        ($request:expr) => {{
            let mut request = $request;
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request
        }};
    }
    let result = match method {
        "GET" => with_headers!(agent.get(url)).call(),
        "HEAD" => with_headers!(agent.head(url)).call(),
        "DELETE" => with_headers!(agent.delete(url)).call(),
        "POST" => with_headers!(agent.post(url).content_type("application/json")).send(body.unwrap_or("")),
        "PUT" => with_headers!(agent.put(url).content_type("application/json")).send(body.unwrap_or("")),
        _ => panic!("unsupported request {method}"),
    };
    match result {
        Ok(mut response) => Reply {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: response.body_mut().read_to_string().unwrap_or_default(),
        },
        Err(_) => Reply::default(),
    }
}

/// The old two-value form: (status, body).
pub fn request(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let reply = http(method, url, &[], body);
    (reply.status, reply.body)
}

/// Node `n`'s UUID.
#[must_use]
pub fn uuid(n: u32) -> String {
    format!("1be26c0b-03f2-4d2e-ae87-{n:012}")
}

/// Node `n`'s deploy key.
#[must_use]
pub fn key(n: u32) -> String {
    format!("deploykey{n:023}")
}

/// A node of the nodes file whose target and done port are at `portal` and `notify`.
#[must_use]
pub fn node_toml(n: u32, image: &Path, portal: u16, notify: u16, extra: &str) -> String {
    format!(
        "[[node]]\nuuid = \"{}\"\ndeploy_key = \"{}\"\nimage = \"{}\"\nimage_type = \"partition\"\n\
         swap_mb = 8\nportal = \"127.0.0.1:{portal}\"\nnotify_port = {notify}\n{extra}\n",
        uuid(n),
        key(n),
        image.display()
    )
}

/// The ramdisk's kernel line for node `n`, calling back `serve_port`.
#[must_use]
pub fn cmdline(n: u32, serve_port: u16, disk: &str) -> String {
    format!(
        "deployment_id={} deployment_key={} iscsi_target_iqn=iqn.2008-10.org.openstack:{} \
         ironic_api_url=http://127.0.0.1:{serve_port} ip=127.0.0.1:::255.0.0.0 disk={disk}",
        uuid(n),
        key(n),
        uuid(n)
    )
}

/// Node `n`'s disk: a 64 MiB file `vda` under its own `dev` directory.
#[must_use]
pub fn disk(dir: &Path, n: u32) -> (PathBuf, PathBuf) {
    let dev = dir.join(format!("dev{n}"));
    std::fs::create_dir_all(&dev).expect("make the dev directory");
    let disk = dev.join("vda");
    std::fs::write(&disk, vec![0xeeu8; 64 * MIB]).expect("make the disk");
    (dev, disk)
}

/// Whether the root partition (the last one) of `disk` holds `image`.
#[must_use]
pub fn root_holds(disk: &Path, image: &Path) -> bool {
    let table: Value =
        serde_json::from_str(&must("sfdisk", &["-J", disk.to_str().expect("UTF-8 path")])).expect("sfdisk JSON");
    let Some(last) = table["partitiontable"]["partitions"].as_array().and_then(|p| p.last()) else {
        return false;
    };
    let start = usize::try_from(last["start"].as_u64().unwrap_or(0) * 512).unwrap_or(usize::MAX);
    let want = std::fs::read(image).expect("read the image");
    let got = std::fs::read(disk).expect("read the disk");
    got.get(start..start.saturating_add(want.len())) == Some(&want[..])
}

/// The states a node went through, from its `events`.
#[must_use]
pub fn states(node: &Value) -> Vec<String> {
    node["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["to_state"].as_str().unwrap_or_default().to_owned())
        .collect()
}
