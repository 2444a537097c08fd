//! `conductor-writer serve` with TLS everywhere: its API over https (`--tls-cert`,
//! `--tls-key`), its image fetched from nginx over https (`--ca-cert`), and the deploy ramdisk
//! calling it back over https with the CA it was given, from the kernel line `pxe-config
//! --tls` prints, to `active`.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::ramdisk::Ramdisk;
use integration_tests::tgtd::free_port;
use integration_tests::web::{Certs, Nginx};
use integration_tests::{compressed_qcow2, conductor_writer as writer, ext4_image, must, output_text as text};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const UUID: &str = "1be26c0b-03f2-4d2e-ae87-000000000077";
const MIB: u64 = 1 << 20;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn serve_over_https_deploys_an_https_image_for_an_https_ramdisk() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let certs = Certs::make(d, "farm");
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    let raw = ext4_image(d, "root.raw", 16, "over tls\n");
    compressed_qcow2(&raw, &www.join("root.qcow2"));
    let nginx = Nginx::start(&www, &certs);
    let sum = format!("sha256:{}", &must("sha256sum", &[p(&www.join("root.qcow2"))])[..64]);

    let dev = d.join("dev");
    std::fs::create_dir(&dev).unwrap();
    let disk = dev.join("vda");
    std::fs::write(&disk, vec![0xee; 64 * MIB as usize]).unwrap();
    let port = free_port();
    let api = format!("https://127.0.0.1:{port}");
    let nodes = d.join("nodes.toml");
    let toml = |portal: u16, notify: u16| {
        format!(
            "[[node]]\nuuid = \"{UUID}\"\nname = \"tls\"\ndeploy_key = \"deploykey00000000000000000000077\"\n\
             image = \"{}\"\nimage_checksum = \"{sum}\"\nimage_type = \"partition\"\nswap_mb = 8\n\
             portal = \"127.0.0.1:{portal}\"\nnotify_port = {notify}\n",
            nginx.https("root.qcow2")
        )
    };
    std::fs::write(&nodes, toml(1, 1)).unwrap();
    let out = writer(&[
        "pxe-config",
        "tls",
        "--nodes",
        p(&nodes),
        "--tls",
        "--api-url",
        &api.replace("https", "http"),
    ]);
    assert!(!out.status.success() && text(&out).contains("https"), "{}", text(&out));
    let out = writer(&["pxe-config", "tls", "--nodes", p(&nodes), "--tls", "--api-url", &api]);
    assert!(out.status.success(), "{}", text(&out));
    let pxe = String::from_utf8_lossy(&out.stdout).into_owned();
    let kernel_line = pxe.lines().nth(1).unwrap();
    assert!(kernel_line.contains(&format!("ironic_api_url={api}")), "{pxe}");

    let mut ramdisk = Ramdisk::start(
        d,
        &format!("{kernel_line} ip=127.0.0.1:::255.0.0.0 disk=vda"),
        &["--dev-root", p(&dev), "--api-attempts", "20", "--ca-cert", p(&certs.ca)],
    );
    std::fs::write(&nodes, toml(ramdisk.port, ramdisk.done_port)).unwrap();
    let log = d.join("serve.log");
    let mut serve = Command::new(integration_tests::agent::workspace_binary(
        "conductor-writer",
        "CONDUCTOR_WRITER",
    ))
    .args(["serve", "--nodes", p(&nodes), "--db", p(&d.join("state.sqlite"))])
    .args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cache-dir",
        p(&d.join("cache")),
    ])
    .args([
        "--tls-cert",
        p(&certs.cert),
        "--tls-key",
        p(&certs.key),
        "--ca-cert",
        p(&certs.ca),
    ])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let status = || writer(&["status", "--url", &api, "--ca-cert", p(&certs.ca), "--json"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let node = loop {
        let out = status();
        if out.status.success() {
            let nodes: Value = serde_json::from_slice(&out.stdout).unwrap();
            let node = nodes["nodes"][0].clone();
            match node["provision_state"].as_str() {
                Some("active") => break node,
                Some("deploy failed") => panic!("{node}\n{}", std::fs::read_to_string(&log).unwrap()),
                _ => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "not active: {}\n{}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap(),
            ramdisk.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());
    assert_eq!(node["uuid"], UUID);
    // The plain-http client and an untrusting one get nothing from the TLS API.
    let out = writer(&["status", "--url", &api]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = writer(&["status", "--url", &api.replace("https", "http"), "--json"]);
    assert!(!out.status.success(), "{}", text(&out));
    let _ = serve.kill();
    let _ = serve.wait();
    // The root partition holds the image: GPT or MBR, the last partition.
    let table: Value = serde_json::from_str(&must("sfdisk", &["-J", p(&disk)])).unwrap();
    let start = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["start"]
        .as_u64()
        .unwrap()
        * 512;
    let want = std::fs::read(&raw).unwrap();
    let got = std::fs::read(&disk).unwrap();
    assert!(
        got[start as usize..start as usize + want.len()] == want[..],
        "the root holds the image"
    );
}
