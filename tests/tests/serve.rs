//! `conductor-writer serve`, the stand-alone deploy service, with real
//! ramdisks (`target-agent deploy --no-reboot`) on loopback: nodes walk
//! Ironic's provision states to `active`, the database keeps the history
//! across restarts, and every refusal leaves the disks alone.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::workspace_binary;
use integration_tests::ramdisk::Ramdisk;
use integration_tests::rootfs::{Loop, debugfs_cat, grub_recording_tree};
use integration_tests::tgtd::free_port;
use integration_tests::{compressed_qcow2, ext4_image, must, output_text as text};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const MIB: u64 = 1 << 20;

/// A running `conductor-writer serve`, killed on drop.
struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Serve {
    /// Serve `dir/nodes.toml` with `dir/state.sqlite` on 127.0.0.1:`port`.
    fn start(dir: &Path, port: u16, extra: &[&str]) -> Self {
        let log = dir.join(format!("serve-{port}.log"));
        let child = Command::new(workspace_binary("conductor-writer", "CONDUCTOR_WRITER"))
            .args(["serve", "--nodes", dir.join("nodes.toml").to_str().unwrap()])
            .args(["--db", dir.join("state.sqlite").to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let serve = Serve { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while request("GET", &serve.url("/v1"), None).0 != 200 {
            assert!(Instant::now() < deadline, "serve did not come up: {}", serve.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        serve
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn node(&self, uuid: &str) -> Value {
        let (status, body) = request("GET", &self.url(&format!("/v1/nodes/{uuid}")), None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Wait until the node reaches `state`; its JSON.
    fn wait_for(&self, uuid: &str, state: &str, timeout: Duration) -> Value {
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

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// One HTTP request: (status, body); status 0 when nothing answered.
fn request(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let result = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("POST", Some(body)) => agent.post(url).content_type("application/json").send(body),
        ("PUT", Some(body)) => agent.put(url).content_type("application/json").send(body),
        _ => panic!("unsupported request {method}"),
    };
    match result {
        Ok(mut response) => (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

/// A node of the nodes file whose target and done port are at `portal` and `notify`.
fn node_toml(n: u32, image: &Path, portal: u16, notify: u16, extra: &str) -> String {
    format!(
        "[[node]]\nuuid = \"{}\"\ndeploy_key = \"{}\"\nimage = \"{}\"\nimage_type = \"partition\"\n\
         swap_mb = 8\nportal = \"127.0.0.1:{portal}\"\nnotify_port = {notify}\n{extra}\n",
        uuid(n),
        key(n),
        image.display()
    )
}

fn uuid(n: u32) -> String {
    format!("1be26c0b-03f2-4d2e-ae87-{n:012}")
}

fn key(n: u32) -> String {
    format!("deploykey{n:023}")
}

/// The ramdisk's kernel line for node `n`, calling back `serve`.
fn cmdline(n: u32, serve_port: u16, disk: &str) -> String {
    format!(
        "deployment_id={} deployment_key={} iscsi_target_iqn=iqn.2008-10.org.openstack:{} \
         ironic_api_url=http://127.0.0.1:{serve_port} ip=127.0.0.1:::255.0.0.0 disk={disk}",
        uuid(n),
        key(n),
        uuid(n)
    )
}

/// A node's disk: a file under its own `dev` directory.
fn disk(dir: &Path, n: u32) -> (PathBuf, PathBuf) {
    let dev = dir.join(format!("dev{n}"));
    std::fs::create_dir_all(&dev).unwrap();
    let disk = dev.join("vda");
    std::fs::write(&disk, vec![0xeeu8; (64 * MIB) as usize]).unwrap();
    (dev, disk)
}

/// The root partition (the last one) of `disk` holds `image`.
fn root_holds(disk: &Path, image: &Path) -> bool {
    let table: Value = serde_json::from_str(&must("sfdisk", &["-J", disk.to_str().unwrap()])).unwrap();
    let last = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let start = last["start"].as_u64().unwrap() * 512;
    let want = std::fs::read(image).unwrap();
    let got = std::fs::read(disk).unwrap();
    got.get(start as usize..start as usize + want.len()) == Some(&want[..])
}

fn states(node: &Value) -> Vec<String> {
    node["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_state"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn one_node_walks_to_active_and_the_history_survives_a_restart() {
    let dir = TempDir::new().unwrap();
    let image = ext4_image(dir.path(), "root.raw", 20, "served\n");
    let (dev, disk) = disk(dir.path(), 1);
    let serve_port = free_port();
    let ramdisk_dir = dir.path().join("r1");
    std::fs::create_dir_all(&ramdisk_dir).unwrap();
    // The ramdisk boots with what `pxe-config` prints (its ports are not in it).
    let nodes_file = dir.path().join("nodes.toml");
    std::fs::write(&nodes_file, node_toml(1, &image, 1, 1, "name = \"n1\"")).unwrap();
    let api = format!("http://127.0.0.1:{serve_port}");
    let pxe = must(
        workspace_binary("conductor-writer", "CONDUCTOR_WRITER")
            .to_str()
            .unwrap(),
        &[
            "pxe-config",
            "n1",
            "--nodes",
            nodes_file.to_str().unwrap(),
            "--api-url",
            &api,
        ],
    );
    let kernel_line = pxe.lines().nth(1).unwrap();
    assert!(kernel_line.starts_with("deployment_id="), "{pxe}");
    let mut ramdisk = Ramdisk::start(
        &ramdisk_dir,
        &format!("{kernel_line} ip=127.0.0.1:::255.0.0.0 disk=vda"),
        &["--dev-root", dev.to_str().unwrap(), "--api-attempts", "20"],
    );
    let nodes = node_toml(1, &image, ramdisk.port, ramdisk.done_port, "name = \"n1\"");
    std::fs::write(&nodes_file, nodes).unwrap();
    let serve = Serve::start(dir.path(), serve_port, &[]);

    let node = serve.wait_for(&uuid(1), "active", Duration::from_secs(60));
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());
    assert!(root_holds(&disk, &image), "the root partition holds the image");
    assert_eq!(states(&node), ["wait call-back", "deploying", "active"]);
    let deploy = &node["deploys"][0];
    assert_eq!(deploy["outcome"], "active");
    assert!(deploy["bytes_sent"].as_u64().unwrap() > 0);
    assert!(deploy["root_uuid"].as_str().is_some_and(|u| u.len() == 36), "{deploy}");
    assert!(node["last_error"].is_null());

    // The operator's view.
    let status = Command::new(workspace_binary("conductor-writer", "CONDUCTOR_WRITER"))
        .args(["status", "--url", &serve.url("")])
        .output()
        .unwrap();
    let table = text(&status);
    assert!(
        status.status.success() && table.contains(&uuid(1)) && table.contains("active"),
        "{table}"
    );

    // A restart keeps nodes and history.
    serve.stop();
    let serve = Serve::start(dir.path(), serve_port, &[]);
    let again = serve.node(&uuid(1));
    assert_eq!(again["provision_state"], "active");
    assert_eq!(states(&again), ["wait call-back", "deploying", "active"]);
    assert_eq!(again["deploys"][0]["root_uuid"], deploy["root_uuid"]);
}

#[test]
fn four_nodes_at_once_share_one_image() {
    let dir = TempDir::new().unwrap();
    let raw = ext4_image(dir.path(), "root.raw", 20, "served\n");
    let qcow2 = dir.path().join("root.qcow2");
    compressed_qcow2(&raw, &qcow2);
    let sum = must("sha256sum", &[qcow2.to_str().unwrap()]);
    let checksum = format!("image_checksum = \"sha256:{}\"", &sum[..64]);
    let serve_port = free_port();
    let mut ramdisks = Vec::new();
    let mut nodes = String::new();
    let mut disks = Vec::new();
    for n in 1..=4 {
        let (dev, disk) = disk(dir.path(), n);
        let rdir = dir.path().join(format!("r{n}"));
        std::fs::create_dir_all(&rdir).unwrap();
        let ramdisk = Ramdisk::start(
            &rdir,
            &cmdline(n, serve_port, "vda"),
            &["--dev-root", dev.to_str().unwrap(), "--api-attempts", "20"],
        );
        nodes.push_str(&node_toml(n, &qcow2, ramdisk.port, ramdisk.done_port, &checksum));
        ramdisks.push(ramdisk);
        disks.push(disk);
    }
    std::fs::write(dir.path().join("nodes.toml"), nodes).unwrap();
    let serve = Serve::start(dir.path(), serve_port, &[]);
    for n in 1..=4 {
        serve.wait_for(&uuid(n), "active", Duration::from_secs(120));
    }
    for (ramdisk, disk) in ramdisks.iter_mut().zip(&disks) {
        assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());
        assert!(root_holds(disk, &raw), "{} holds the image", disk.display());
    }
    let log = serve.log();
    assert_eq!(
        log.matches("image checked").count(),
        1,
        "one check for four deploys: {log}"
    );
}

#[test]
fn refusals_fail_only_their_node_and_touch_no_disk() {
    let dir = TempDir::new().unwrap();
    let image = ext4_image(dir.path(), "root.raw", 20, "served\n");
    let serve_port = free_port();
    // Node 1: its ramdisk has the wrong key. Node 2: receives a bad body.
    // Node 3: never calls back (timeout). Node 4: its deploy is running
    // (its portal answers nothing) when the service stops.
    let (dev1, disk1) = disk(dir.path(), 1);
    let before = std::fs::read(&disk1).unwrap();
    let rdir = dir.path().join("r1");
    std::fs::create_dir_all(&rdir).unwrap();
    let wrong = cmdline(1, serve_port, "vda").replace(&key(1), "not-the-deploy-key");
    let mut ramdisk = Ramdisk::start(
        &rdir,
        &wrong,
        &["--dev-root", dev1.to_str().unwrap(), "--api-attempts", "20"],
    );
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let nodes = [
        node_toml(1, &image, ramdisk.port, ramdisk.done_port, ""),
        node_toml(2, &image, free_port(), free_port(), ""),
        node_toml(3, &image, free_port(), free_port(), ""),
        node_toml(4, &image, silent_port, free_port(), ""),
    ]
    .concat();
    std::fs::write(dir.path().join("nodes.toml"), nodes).unwrap();
    let serve = Serve::start(dir.path(), serve_port, &[]);

    // Wrong key: the node fails, the ramdisk is told no, its disk is untouched.
    let node = serve.wait_for(&uuid(1), "deploy failed", Duration::from_secs(30));
    assert!(
        node["last_error"]
            .as_str()
            .unwrap()
            .contains("Deploy key does not match"),
        "{node}"
    );
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 1, "{}", ramdisk.log());
    assert!(std::fs::read(&disk1).unwrap() == before, "the disk was written");

    // A malformed body: 400 with an Ironic-style error; the node still waits.
    let url = serve.url(&format!("/v1/nodes/{}/vendor_passthru/pass_deploy_info", uuid(2)));
    let (status, body) = request("POST", &url, Some(r#"{"address": "127.0.0.1"}"#));
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let fault: Value = serde_json::from_str(error["error_message"].as_str().unwrap()).unwrap();
    assert!(fault["faultstring"].as_str().unwrap().contains("key"), "{fault}");
    let (status, _) = request("POST", &url, Some("not json"));
    assert_eq!(status, 400);
    assert_eq!(serve.node(&uuid(2))["provision_state"], "wait call-back");

    // An unknown node: 404 (also in the legacy path forms).
    for path in [
        "/v1/nodes/00000000-0000-0000-0000-000000000000/vendor_passthru/pass_deploy_info",
        "/nodes/00000000-0000-0000-0000-000000000000/vendor_passthru/pass_deploy_info",
        "/v1/nodes/00000000-0000-0000-0000-000000000000/vendor_passthru?method=pass_deploy_info",
    ] {
        let body = json!({"address": "127.0.0.1", "key": "x", "iqn": "iqn.x", "error": ""}).to_string();
        assert_eq!(request("POST", &serve.url(path), Some(&body)).0, 404, "{path}");
    }

    // A deploy running when the service stops is failed at the restart.
    let body = json!({"address": "127.0.0.1", "key": key(4), "iqn": "iqn.x", "error": ""}).to_string();
    let url = serve.url(&format!(
        "/v1/nodes/{}/vendor_passthru?method=pass_deploy_info",
        uuid(4)
    ));
    assert_eq!(request("POST", &url, Some(&body)).0, 202);
    serve.wait_for(&uuid(4), "deploying", Duration::from_secs(10));
    serve.stop();
    drop(silent);
    let serve = Serve::start(dir.path(), serve_port, &[]);
    let node = serve.node(&uuid(4));
    assert_eq!(node["provision_state"], "deploy failed");
    assert!(
        node["last_error"].as_str().unwrap().contains("service stopped"),
        "{node}"
    );
    assert_eq!(states(&node), ["wait call-back", "deploying", "deploy failed"]);
    serve.stop();

    // No callback within the timeout: the waiting nodes fail.
    let serve = Serve::start(dir.path(), serve_port, &["--callback-timeout", "1"]);
    let node = serve.wait_for(&uuid(3), "deploy failed", Duration::from_secs(20));
    assert!(
        node["last_error"].as_str().unwrap().contains("Timeout reached"),
        "{node}"
    );
    // The node that failed on its key stays as it was.
    assert!(
        serve.node(&uuid(1))["last_error"]
            .as_str()
            .unwrap()
            .contains("Deploy key")
    );
}

#[test]
fn a_local_boot_waits_for_the_boot_loader_and_a_second_done() {
    let dir = TempDir::new().unwrap();
    let backing = dir.path().join("disk.img");
    std::fs::File::create(&backing).unwrap().set_len(96 * MIB).unwrap();
    let device = Loop::attach(&backing);
    let name = device.0.trim_start_matches("/dev/").to_owned();
    let tree = grub_recording_tree(dir.path(), "grub");
    let image = dir.path().join("root.img");
    std::fs::File::create(&image).unwrap().set_len(24 * MIB).unwrap();
    let (tree, path) = (tree.to_str().unwrap(), image.to_str().unwrap());
    must("mke2fs", &["-q", "-F", "-t", "ext4", "-d", tree, path]);
    let serve_port = free_port();
    let rdir = dir.path().join("r1");
    std::fs::create_dir_all(&rdir).unwrap();
    let line = format!("{} boot_option=local", cmdline(1, serve_port, &name));
    let mut ramdisk = Ramdisk::start(
        &rdir,
        &line,
        &[
            "--api-attempts",
            "20",
            "--mount-point",
            dir.path().join("mnt").to_str().unwrap(),
        ],
    );
    let extra = "boot_option = \"local\"";
    std::fs::write(
        dir.path().join("nodes.toml"),
        node_toml(1, &image, ramdisk.port, ramdisk.done_port, extra),
    )
    .unwrap();
    let serve = Serve::start(dir.path(), serve_port, &[]);
    let node = serve.wait_for(&uuid(1), "active", Duration::from_secs(60));
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());
    assert_eq!(
        states(&node),
        ["wait call-back", "deploying", "wait call-back", "active"],
        "{node}"
    );
    let root = format!("{}p2", device.0);
    assert_eq!(debugfs_cat(&root, "/grub-install.log").trim(), device.0);
    assert_eq!(node["deploys"][0]["outcome"], "active");
}
