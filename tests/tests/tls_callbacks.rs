//! The deploy ramdisk calling an `https` Ironic API: Debian's nginx terminates TLS (with a CA
//! made here) in front of the recording API stand-in. The ramdisk trusts the CA it is given
//! (as `tools/build-ramdisk --ca-cert` bakes it in), refuses a server signed by another, and
//! with `ironic_api_insecure=1` trusts anyone, saying so. The callback used is the one a
//! ramdisk without its disk makes, so no disk is needed.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::ironic::FakeIronic;
use integration_tests::ramdisk::Ramdisk;
use integration_tests::web::{Certs, Nginx};
use std::time::Duration;
use tempfile::TempDir;

const ID: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c125";
const KEY: &str = "0123456789abcdef0123456789ABCDEF";

fn cmdline(api_url: &str, extra: &str) -> String {
    format!(
        "deployment_id={ID} deployment_key={KEY} iscsi_target_iqn=iqn.2008-10.org.openstack:{ID} \
         ironic_api_url={api_url} ip=127.0.0.1:::255.0.0.0 disk=sdq {extra}\n"
    )
}

#[test]
fn the_ramdisk_calls_back_over_https_with_its_own_ca() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let api = FakeIronic::start();
    let good = Certs::make(d, "api");
    let other = Certs::make(d, "other");
    let nginx = Nginx::proxy(api.port, &good);
    let url = format!("https://127.0.0.1:{}", nginx.https_port);
    let dev = d.join("dev");
    std::fs::create_dir(&dev).unwrap();
    let run = |name: &str, ca: &std::path::Path, extra: &str| {
        let sub = d.join(name);
        std::fs::create_dir(&sub).unwrap();
        let mut ramdisk = Ramdisk::start(
            &sub,
            &cmdline(&url, extra),
            &[
                "--dev-root",
                dev.to_str().unwrap(),
                "--disk-timeout",
                "0",
                "--api-attempts",
                "1",
                "--ca-cert",
                ca.to_str().unwrap(),
            ],
        );
        let code = ramdisk.wait(Duration::from_secs(60));
        (code, ramdisk.log())
    };

    // Its CA: the callback arrives, through TLS, byte for byte what the API expects.
    let (code, log) = run("good", &good.ca, "");
    assert_eq!(code, 1, "the deploy fails for want of a disk: {log}");
    let requests = api.wait_for(1, Duration::from_secs(5));
    assert_eq!(requests.len(), 1, "{log}");
    assert_eq!(
        requests[0].path,
        format!("/v1/nodes/{ID}/vendor_passthru/pass_deploy_info")
    );
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["key"], KEY);
    assert!(body["error"].as_str().unwrap().contains("sdq"), "{body}");

    // Another CA: refused, nothing reaches the API, and the log says what to do.
    let (code, log) = run("other", &other.ca, "");
    assert_ne!(code, 0);
    assert!(log.contains("not trusted") && log.contains("--ca-cert"), "{log}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api.requests().len(), 1, "a callback went to an untrusted server");

    // ironic_api_insecure=1: anyone is trusted, with a warning in the log.
    let (_, log) = run("insecure", &other.ca, "ironic_api_insecure=1");
    assert!(log.contains("NOT verified"), "{log}");
    assert_eq!(api.wait_for(2, Duration::from_secs(5)).len(), 2, "{log}");
    assert!(nginx.answered(202) >= 2, "{}", nginx.log());
}
