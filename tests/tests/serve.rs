//! `conductor-writer serve`, the stand-alone deploy service, with real
//! ramdisks (`target-agent deploy --no-reboot`) on loopback: nodes walk
//! Ironic's provision states to `active`, the database keeps the history
//! across restarts, and every refusal leaves the disks alone.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::workspace_binary;
use integration_tests::ramdisk::Ramdisk;
use integration_tests::rootfs::{Loop, debugfs_cat, grub_recording_tree};
use integration_tests::serve::{Serve, cmdline, disk, key, node_toml, request, root_holds, states, uuid};
use integration_tests::tgtd::free_port;
use integration_tests::{compressed_qcow2, ext4_image, must, output_text as text};
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

const MIB: u64 = 1 << 20;

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

    // A restart keeps nodes and history; a clean stop (SIGTERM) takes the
    // instance offline, so that its name is free again at once.
    assert_eq!(serve.terminate(), Some(0));
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
fn refusals_change_no_node_and_touch_no_disk() {
    let dir = TempDir::new().unwrap();
    let image = ext4_image(dir.path(), "root.raw", 20, "served\n");
    let serve_port = free_port();
    // Node 1: a ramdisk with the wrong key calls first, then its real one.
    // Node 2: receives bad bodies. Node 3: never calls back (timeout).
    // Node 4: its deploy is running (its portal answers nothing) when the
    // service stops.
    let (dev1, disk1) = disk(dir.path(), 1);
    let before = std::fs::read(&disk1).unwrap();
    let (impostor_dir, real_dir) = (dir.path().join("r1-impostor"), dir.path().join("r1"));
    std::fs::create_dir_all(&impostor_dir).unwrap();
    std::fs::create_dir_all(&real_dir).unwrap();
    let real_ports = (free_port(), free_port());
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let nodes = [
        node_toml(1, &image, real_ports.0, real_ports.1, ""),
        node_toml(2, &image, free_port(), free_port(), ""),
        node_toml(3, &image, free_port(), free_port(), ""),
        node_toml(4, &image, silent_port, free_port(), ""),
    ]
    .concat();
    std::fs::write(dir.path().join("nodes.toml"), nodes).unwrap();
    let serve = Serve::start(dir.path(), serve_port, &[]);

    // Wrong key: refused with Ironic's words; the node still waits, unchanged,
    // and the attempt is logged with the caller's address.
    let wrong = cmdline(1, serve_port, "vda").replace(&key(1), "not-the-deploy-key");
    let mut impostor = Ramdisk::start(
        &impostor_dir,
        &wrong,
        &["--dev-root", dev1.to_str().unwrap(), "--api-attempts", "20"],
    );
    assert_eq!(impostor.wait(Duration::from_secs(30)), 1, "{}", impostor.log());
    assert!(
        impostor.log().contains("Deploy key does not match"),
        "{}",
        impostor.log()
    );
    let node = serve.node(&uuid(1));
    assert_eq!(node["provision_state"], "wait call-back", "{node}");
    assert_eq!(states(&node), ["wait call-back"]);
    assert!(node["last_error"].is_null(), "{node}");
    assert!(std::fs::read(&disk1).unwrap() == before, "the disk was written");
    let log = serve.log();
    assert!(
        log.lines().any(|l| l.contains("wrong or missing deploy key")
            && l.contains(&uuid(1))
            && l.contains("peer=127.0.0.1:")),
        "{log}"
    );
    // The node's own ramdisk then deploys it.
    let mut real = Ramdisk::start_at(
        &real_dir,
        &cmdline(1, serve_port, "vda"),
        &["--dev-root", dev1.to_str().unwrap(), "--api-attempts", "20"],
        real_ports,
    );
    let node = serve.wait_for(&uuid(1), "active", Duration::from_secs(60));
    assert_eq!(real.wait(Duration::from_secs(30)), 0, "{}", real.log());
    assert!(root_holds(&disk1, &image), "the root partition holds the image");
    assert_eq!(states(&node), ["wait call-back", "deploying", "active"]);

    // Malformed bodies: 400 with an Ironic-style error; the node still waits.
    let url = serve.url(&format!("/v1/nodes/{}/vendor_passthru/pass_deploy_info", uuid(2)));
    let (status, body) = request("POST", &url, Some(r#"{"address": "127.0.0.1"}"#));
    assert_eq!(status, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    let fault: serde_json::Value = serde_json::from_str(error["error_message"].as_str().unwrap()).unwrap();
    assert_eq!(fault["faultstring"], "Deploy key does not match", "{fault}");
    let (status, _) = request("POST", &url, Some("not json"));
    assert_eq!(status, 400);
    let with_key = json!({"key": key(2)}).to_string();
    let (status, body) = request("POST", &url, Some(&with_key));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("address"), "the right key, but no address: {body}");
    assert_eq!(serve.node(&uuid(2))["provision_state"], "wait call-back");
    assert_eq!(states(&serve.node(&uuid(2))), ["wait call-back"]);

    // An unknown node: 404 (also in the legacy path forms).
    for path in [
        "/v1/nodes/00000000-0000-0000-0000-000000000000/vendor_passthru/pass_deploy_info",
        "/nodes/00000000-0000-0000-0000-000000000000/vendor_passthru/pass_deploy_info",
        "/v1/nodes/00000000-0000-0000-0000-000000000000/vendor_passthru?method=pass_deploy_info",
    ] {
        let body = json!({"address": "127.0.0.1", "key": "x", "iqn": "iqn.x", "error": ""}).to_string();
        assert_eq!(request("POST", &serve.url(path), Some(&body)).0, 404, "{path}");
    }

    // A deploy running when the service dies is taken over by the same
    // instance, restarted, once its claim runs out: deployed again from the
    // start. Here its ramdisk is gone meanwhile, so the second attempt fails.
    serve.stop();
    let lease = ["--lease-timeout", "2"];
    let serve = Serve::start(dir.path(), serve_port, &lease);
    let body = json!({"address": "127.0.0.1", "key": key(4), "iqn": "iqn.x", "error": ""}).to_string();
    let url = serve.url(&format!(
        "/v1/nodes/{}/vendor_passthru?method=pass_deploy_info",
        uuid(4)
    ));
    assert_eq!(request("POST", &url, Some(&body)).0, 202);
    let node = serve.wait_for(&uuid(4), "deploying", Duration::from_secs(10));
    assert!(node["reservation"].is_string(), "held by the instance: {node}");
    serve.stop();
    drop(silent);
    let serve = Serve::start(dir.path(), serve_port, &lease);
    let node = serve.wait_for(&uuid(4), "deploy failed", Duration::from_secs(30));
    assert!(
        node["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the node's disk"),
        "{node}"
    );
    assert_eq!(
        states(&node),
        ["wait call-back", "deploying", "deploying", "deploy failed"]
    );
    let deploys = node["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 2, "{node}");
    assert_eq!(deploys[0]["outcome"], "taken over");
    assert!(
        deploys[0]["error"]
            .as_str()
            .unwrap()
            .contains("stopped renewing its claim"),
        "{node}"
    );
    assert_eq!(deploys[1]["outcome"], "deploy failed");
    assert_eq!(
        deploys[0]["conductor"], deploys[1]["conductor"],
        "the same instance, restarted"
    );
    serve.stop();

    // No callback within the timeout: the waiting nodes fail.
    let serve = Serve::start(
        dir.path(),
        serve_port,
        &["--callback-timeout", "1", "--lease-timeout", "2"],
    );
    let node = serve.wait_for(&uuid(3), "deploy failed", Duration::from_secs(20));
    assert!(
        node["last_error"].as_str().unwrap().contains("Timeout reached"),
        "{node}"
    );
    // The node that was deployed stays as it was.
    assert_eq!(serve.node(&uuid(1))["provision_state"], "active");
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
        ["wait call-back", "deploying", "wait call-back", "deploying", "active"],
        "{node}"
    );
    let root = format!("{}p2", device.0);
    assert_eq!(debugfs_cat(&root, "/grub-install.log").trim(), device.0);
    assert_eq!(node["deploys"][0]["outcome"], "active");
}
