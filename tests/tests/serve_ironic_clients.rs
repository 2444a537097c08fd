//! `conductor-writer serve` driven by Ironic's own clients, installed from
//! the Python package index into a virtual environment the test makes
//! (`integration_tests::pyenv`): python-ironicclient's `baremetal` command
//! and openstacksdk, with `http_basic` credentials from a clouds.yaml, while
//! real ramdisks (`target-agent deploy --no-reboot`) deploy and redeploy the
//! nodes. On the same service: a thousand callbacks with wrong keys change
//! nothing, and `/metrics`, read by prometheus_client's own parser, counts
//! exactly the deploys and refusals that happened.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::pyenv;
use integration_tests::ramdisk::Ramdisk;
use integration_tests::serve::{Serve, cmdline, disk, http_on, key, node_toml, root_holds, states, uuid};
use integration_tests::tgtd::free_port;
use integration_tests::{config_drive_iso, ext4_image, must, output_within, wait_within};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const USER: &str = "operator";
const PASSWORD: &str = "s3cret pass";

/// How the clients reach the service: the venv, and a clouds.yaml with a
/// good, a wrong and no password.
struct Clients {
    venv: PathBuf,
    home: PathBuf,
    clouds: PathBuf,
}

impl Clients {
    fn new(dir: &Path, port: u16) -> Self {
        let venv = pyenv::ironic_clients();
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let clouds = dir.join("clouds.yaml");
        let endpoint = format!("http://127.0.0.1:{port}");
        std::fs::write(
            &clouds,
            format!(
                "clouds:\n\
                 \x20 farm:\n    auth_type: http_basic\n    auth:\n      username: {USER}\n      password: {PASSWORD}\n    baremetal_endpoint_override: {endpoint}\n\
                 \x20 wrong:\n    auth_type: http_basic\n    auth:\n      username: {USER}\n      password: not-it\n    baremetal_endpoint_override: {endpoint}\n\
                 \x20 anonymous:\n    auth_type: none\n    baremetal_endpoint_override: {endpoint}\n"
            ),
        )
        .unwrap();
        Clients { venv, home, clouds }
    }

    /// `program` of the venv with the clients' environment, as `cloud`.
    fn command(&self, program: &str, cloud: &str) -> Command {
        let mut command = Command::new(self.venv.join("bin").join(program));
        command
            .env("HOME", &self.home)
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("OS_CLIENT_CONFIG_FILE", &self.clouds)
            .env("OS_CLOUD", cloud)
            .env_remove("OS_AUTH_TYPE")
            .env_remove("OS_ENDPOINT")
            .env_remove("OS_USERNAME")
            .env_remove("OS_PASSWORD");
        command
    }

    fn run(&self, program: &str, cloud: &str, args: &[&str]) -> Output {
        let mut command = self.command(program, cloud);
        command.args(args);
        let (out, killed) = output_within(&mut command, Duration::from_secs(180)).unwrap();
        assert!(!killed, "{program} {args:?} did not finish: {}", text(&out));
        out
    }

    /// `baremetal ARGS -f json` as the good user: its JSON.
    fn baremetal(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let out = self.run("baremetal", "farm", &all);
        assert!(out.status.success(), "baremetal {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("baremetal {args:?}: {e}: {}", text(&out)))
    }

    /// `python sdk_check.py ARGS` as `cloud`.
    fn sdk(&self, cloud: &str, args: &[&str]) -> Output {
        let mut all = vec![pyenv::scripts_dir().join("sdk_check.py").display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.run("python", cloud, &refs)
    }

    fn sdk_json(&self, args: &[&str]) -> Value {
        let out = self.sdk("farm", args);
        assert!(out.status.success(), "sdk {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A client process in the background (it waits for a deploy).
    fn spawn(&self, mut command: Command, dir: &Path, name: &str) -> Child {
        command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    integration_tests::output_text(out)
}

/// Wait for `child` (a client started by [`Clients::spawn`]) to succeed.
fn finish(mut child: Child, dir: &Path, name: &str) -> String {
    let status = wait_within(&mut child, Duration::from_secs(180));
    let out = std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "{name} failed ({status:?}):\n{out}\n{err}"
    );
    out
}

/// Wait until the node has `events` state changes and is in `state`.
fn wait_for_event(serve: &Serve, n: u32, events: usize, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let node = serve.node(&uuid(n));
        if states(&node).len() >= events && node["provision_state"] == state {
            assert_eq!(node["target_provision_state"], "active", "{node}");
            return;
        }
        assert!(Instant::now() < deadline, "node {n}: {node}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A config drive as Ironic takes it: a gzipped, base64-encoded ISO 9660 labelled config-2.
fn config_drive(dir: &Path) -> (PathBuf, Vec<u8>) {
    let iso = config_drive_iso(dir, "cd.iso", r#"{"uuid": "rack1-node2", "hostname": "node2"}"#);
    let encoded = dir.join("cd.gz.b64");
    let script = format!("gzip -c {} | base64 -w0 > {}", iso.display(), encoded.display());
    must("sh", &["-c", &script]);
    (encoded, std::fs::read(&iso).unwrap())
}

/// Whether a partition of `disk` starts with `iso`.
fn has_partition_with(disk: &Path, iso: &[u8]) -> bool {
    let table: Value = serde_json::from_str(&must("sfdisk", &["-J", disk.to_str().unwrap()])).unwrap();
    let bytes = std::fs::read(disk).unwrap();
    table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| {
            let start = usize::try_from(p["start"].as_u64().unwrap() * 512).unwrap();
            bytes.get(start..start + iso.len()) == Some(iso)
        })
}

fn ramdisk(dir: &Path, name: &str, n: u32, serve_port: u16, dev: &Path, ports: (u16, u16)) -> Ramdisk {
    let rdir = dir.join(name);
    std::fs::create_dir_all(&rdir).unwrap();
    let args = ["--dev-root", dev.to_str().unwrap(), "--api-attempts", "20"];
    Ramdisk::start_at(&rdir, &cmdline(n, serve_port, "vda"), &args, ports)
}

/// One sample of the parsed metrics.
fn sample(metrics: &Value, name: &str, labels: &Value) -> f64 {
    metrics["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == name && &s[1] == labels)
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no {name} {labels} in {metrics}"))
}

#[test]
fn ironic_clients_list_show_and_redeploy_nodes_with_basic_auth() {
    let dir = TempDir::new().unwrap();
    let dir = dir.path();
    let image = ext4_image(dir, "root.raw", 20, "served\n");
    let htpasswd = dir.join("htpasswd");
    must("htpasswd", &["-cbB", htpasswd.to_str().unwrap(), USER, PASSWORD]);
    let serve_port = free_port();
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let (dev1, disk1) = disk(dir, 1);
    let (dev2, disk2) = disk(dir, 2);
    let nodes = [
        node_toml(1, &image, ports[0].0, ports[0].1, "name = \"rack1-node1\""),
        node_toml(2, &image, ports[1].0, ports[1].1, "name = \"rack1-node2\""),
    ]
    .concat();
    std::fs::write(dir.join("nodes.toml"), nodes).unwrap();
    let serve =
        Serve::start(dir, serve_port, &["--htpasswd", htpasswd.to_str().unwrap()]).with_credentials(USER, PASSWORD);
    let clients = Clients::new(dir, serve_port);

    // Node 1 deploys through its ramdisk.
    let started = Instant::now();
    let mut first = ramdisk(dir, "r1", 1, serve_port, &dev1, ports[0]);
    serve.wait_for(&uuid(1), "active", Duration::from_secs(60));
    let first_deploy = started.elapsed();
    assert_eq!(first.wait(Duration::from_secs(30)), 0, "{}", first.log());

    // A thousand callbacks with wrong (or no) keys for the waiting node 2:
    // each is refused with Ironic's words, none changes the node.
    let before = serve.node(&uuid(2));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build(),
    );
    let url = serve.url(&format!("/v1/nodes/{}/vendor_passthru/pass_deploy_info", uuid(2)));
    let started = Instant::now();
    for i in 0..1000 {
        let body = match i % 4 {
            0 => json!({"address": "127.0.0.1", "iqn": "iqn.x", "error": ""}),
            1 => json!({"address": "127.0.0.1", "key": "", "iqn": "iqn.x", "error": ""}),
            2 => json!({"address": "127.0.0.1", "key": format!("{}x", key(2)), "iqn": "iqn.x", "error": ""}),
            _ => json!({"address": "10.6.6.6", "key": format!("guess-{i}"), "iqn": "iqn.x", "error": "boom"}),
        };
        let reply = http_on(&agent, "POST", &url, &[], Some(&body.to_string()));
        assert_eq!(
            (reply.status, reply.fault()),
            (400, "Deploy key does not match".to_owned()),
            "post {i}"
        );
    }
    let wrong_posts = started.elapsed();
    let after = serve.node(&uuid(2));
    for field in [
        "provision_state",
        "provision_updated_at",
        "updated_at",
        "last_error",
        "events",
        "deploys",
    ] {
        assert_eq!(after[field], before[field], "{field} changed");
    }
    assert_eq!(after["provision_state"], "wait call-back");

    // The CLI while node 1 is active and node 2 waits.
    let listed = clients.baremetal(&["node", "list"]);
    let rows: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["provision_state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("rack1-node1".to_owned(), "active".to_owned()),
            ("rack1-node2".to_owned(), "wait call-back".to_owned())
        ]
    );
    let long = clients.baremetal(&["node", "list", "--long"]);
    assert_eq!(long[1]["target_provision_state"], "active", "{long}");
    assert_eq!(long[0]["target_provision_state"], Value::Null, "{long}");
    assert_eq!(long[0]["deploy_interface"], "iscsi", "{long}");
    assert_eq!(long[0]["uuid"], uuid(1));
    let active = clients.baremetal(&["node", "list", "--provision-state", "active"]);
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    assert_eq!(active[0]["name"], "rack1-node1");
    let waiting = clients.baremetal(&["node", "list", "--provision-state", "wait call-back", "--limit", "1"]);
    assert_eq!(waiting.as_array().map(Vec::len), Some(1), "{waiting}");
    assert_eq!(waiting[0]["name"], "rack1-node2");
    let shown = clients.baremetal(&["node", "show", "rack1-node1"]);
    assert_eq!(
        (&shown["uuid"], &shown["provision_state"]),
        (&json!(uuid(1)), &json!("active"))
    );
    assert_eq!(shown["last_deploy"]["outcome"], "active", "{shown}");

    // Wrong or missing credentials: both clients refuse, and say why.
    let out = clients.run("baremetal", "wrong", &["node", "list"]);
    assert!(
        !out.status.success() && text(&out).contains("Incorrect username or password (HTTP 401)"),
        "{}",
        text(&out)
    );
    let out = clients.run("baremetal", "anonymous", &["node", "list"]);
    assert!(
        !out.status.success() && text(&out).contains("Authorization required (HTTP 401)"),
        "{}",
        text(&out)
    );
    let out = clients.sdk("wrong", &["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("401") && text(&out).contains("Incorrect username or password"),
        "{}",
        text(&out)
    );
    let out = clients.sdk("anonymous", &["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("401") && text(&out).contains("Authorization required"),
        "{}",
        text(&out)
    );

    // Node 2's own ramdisk deploys it after all.
    let started = Instant::now();
    let mut second = ramdisk(dir, "r2", 2, serve_port, &dev2, ports[1]);
    serve.wait_for(&uuid(2), "active", Duration::from_secs(60));
    let second_deploy = started.elapsed();
    assert_eq!(second.wait(Duration::from_secs(30)), 0, "{}", second.log());
    assert!(root_holds(&disk2, &image));

    // `baremetal node rebuild --wait` on the active node 1: it waits while
    // the node boots its ramdisk again and deploys, and ends active.
    let mut command = clients.command("baremetal", "farm");
    command.args(["node", "rebuild", "rack1-node1", "--wait", "150"]);
    let rebuild = clients.spawn(command, dir, "rebuild");
    wait_for_event(&serve, 1, 4, "wait call-back");
    std::fs::write(&disk1, vec![0u8; 64 << 20]).unwrap();
    let mut again = ramdisk(dir, "r1-again", 1, serve_port, &dev1, ports[0]);
    finish(rebuild, dir, "rebuild");
    assert_eq!(again.wait(Duration::from_secs(30)), 0, "{}", again.log());
    let node = serve.node(&uuid(1));
    assert_eq!(node["provision_state"], "active");
    assert_eq!(
        states(&node),
        [
            "wait call-back",
            "deploying",
            "active",
            "wait call-back",
            "deploying",
            "active"
        ]
    );
    assert!(root_holds(&disk1, &image), "the rebuild wrote the image again");

    // The SDK: list with details, get one, and rebuild node 2 with a config drive.
    let listed = clients.sdk_json(&["list"]);
    let names: Vec<&str> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rack1-node1", "rack1-node2"]);
    assert_eq!(listed["nodes"][0]["deploy_interface"], "iscsi");
    let got = clients.sdk_json(&["get", "rack1-node2"]);
    assert_eq!(
        (&got["id"], &got["provision_state"]),
        (&json!(uuid(2)), &json!("active"))
    );
    let (drive, iso) = config_drive(dir);
    let mut command = clients.command("python", "farm");
    command
        .arg(pyenv::scripts_dir().join("sdk_check.py"))
        .args(["provision", "rack1-node2", "rebuild"])
        .arg(&drive);
    let provision = clients.spawn(command, dir, "sdk-rebuild");
    wait_for_event(&serve, 2, 4, "wait call-back");
    let mut again = ramdisk(dir, "r2-again", 2, serve_port, &dev2, ports[1]);
    let out = finish(provision, dir, "sdk-rebuild");
    assert_eq!(again.wait(Duration::from_secs(30)), 0, "{}", again.log());
    let done: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&done["provision_state"], &done["target_provision_state"]),
        (&json!("active"), &Value::Null)
    );
    assert!(
        has_partition_with(&disk2, &iso),
        "the config drive given to the SDK is on the disk"
    );
    assert!(root_holds(&disk2, &image));

    // /metrics needs the credentials too; prometheus_client's parser reads it.
    assert_eq!(
        integration_tests::serve::http("GET", &serve.url("/metrics"), &[], None).status,
        401
    );
    let out = clients.run(
        "python",
        "farm",
        &[
            pyenv::scripts_dir().join("metrics_check.py").to_str().unwrap(),
            &serve.url("/metrics"),
            USER,
            PASSWORD,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let metrics: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        metrics["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let deploys: Vec<Value> = [1, 2]
        .iter()
        .flat_map(|&n| serve.node(&uuid(n))["deploys"].as_array().unwrap().clone())
        .collect();
    assert_eq!(deploys.len(), 4);
    let total = |field: &str| deploys.iter().map(|d| d[field].as_f64().unwrap()).sum::<f64>();
    let none = json!({});
    let succeeded = json!({"result": "succeeded"});
    assert_eq!(sample(&metrics, "conductor_writer_deploys_total", &succeeded), 4.0);
    assert_eq!(
        sample(&metrics, "conductor_writer_deploys_total", &json!({"result": "failed"})),
        0.0
    );
    assert_eq!(
        sample(&metrics, "conductor_writer_deploy_bytes_sent_total", &none),
        total("bytes_sent")
    );
    assert_eq!(
        sample(&metrics, "conductor_writer_deploy_bytes_zeroed_total", &none),
        total("bytes_zeroed")
    );
    assert!(total("bytes_sent") > 0.0);
    assert_eq!(
        sample(&metrics, "conductor_writer_deploy_duration_seconds_count", &succeeded),
        4.0
    );
    let inf = json!({"result": "succeeded", "le": "+Inf"});
    assert_eq!(
        sample(&metrics, "conductor_writer_deploy_duration_seconds_bucket", &inf),
        4.0
    );
    assert!(sample(&metrics, "conductor_writer_deploy_duration_seconds_sum", &succeeded) > 0.0);
    assert_eq!(
        metrics["families"]["conductor_writer_deploy_duration_seconds"],
        "histogram"
    );
    for (state, count) in [
        ("active", 2.0),
        ("wait call-back", 0.0),
        ("deploying", 0.0),
        ("deploy failed", 0.0),
    ] {
        assert_eq!(
            sample(&metrics, "conductor_writer_nodes", &json!({"provision_state": state})),
            count,
            "{state}"
        );
    }
    let rejected = |reason: &str| {
        sample(
            &metrics,
            "conductor_writer_callbacks_rejected_total",
            &json!({"reason": reason}),
        )
    };
    assert_eq!(rejected("wrong_key"), 1000.0);
    assert_eq!(
        (rejected("malformed"), rejected("unknown_node"), rejected("wrong_state")),
        (0.0, 0.0, 0.0)
    );
    // The three refused client calls and the anonymous scrape, at least.
    assert!(sample(&metrics, "conductor_writer_api_unauthorized_total", &none) >= 4.0);

    eprintln!(
        "timings: node 1's first deploy {:.2} s (ramdisk start to active); 1000 wrong-key callbacks {:.2} s \
         ({:.2} ms each); node 2's deploy right after them {:.2} s",
        first_deploy.as_secs_f64(),
        wrong_posts.as_secs_f64(),
        wrong_posts.as_secs_f64(),
        second_deploy.as_secs_f64()
    );
}
