//! `target-agent deploy`, the ramdisk's program, through the whole legacy
//! handshake on loopback: a kernel command line in a file, a real HTTP
//! server standing in for the Ironic API, a real TFTP server (tftpd-hpa)
//! with the auth token, and `conductor-writer deploy` writing through the
//! served target and sending `done`.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::initiator::Session;
use integration_tests::ironic::{FakeIronic, Request};
use integration_tests::ramdisk::Ramdisk;
use integration_tests::rootfs::{Loop, debugfs_cat, grub_recording_tree};
use integration_tests::tftpd::Tftpd;
use integration_tests::{conductor_writer as writer, must, output_text as text};
use iscsi_proto::login::{InitiatorConfig, LoginError};
use iscsi_proto::pdu::{Isid, LoginStatus};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tempfile::TempDir;

const ID: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
const KEY: &str = "0123456789abcdef0123456789ABCDEF";
const IQN: &str = "iqn.2008-10.org.openstack:1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
const MIB: u64 = 1 << 20;
/// conductor-writer's default initiator name.
const CONDUCTOR: &str = "iqn.2024-01.org.iscsi-deploy:conductor-writer";

/// A `dev` directory holding one disk file `vda` of `size` bytes.
fn dev_tree(dir: &Path, size: u64) -> (PathBuf, PathBuf) {
    let dev = dir.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    let disk = dev.join("vda");
    std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
    (dev, disk)
}

/// A small ext4 root image.
fn root_image(dir: &Path, tree: Option<&Path>) -> PathBuf {
    let image = dir.join("root.img");
    std::fs::File::create(&image).unwrap().set_len(24 * MIB).unwrap();
    let mut args = vec!["-q", "-F", "-t", "ext4", "-L", "rootfs"];
    if let Some(tree) = tree {
        args.extend(["-d", tree.to_str().unwrap()]);
    }
    args.push(image.to_str().unwrap());
    must("mke2fs", &args);
    image
}

fn cmdline(api: &FakeIronic, extra: &str) -> String {
    format!(
        "BOOT_IMAGE=/deploy_kernel ro text nofb nomodeset vga=normal deployment_id={ID} \
         deployment_key={KEY} iscsi_target_iqn={IQN} ironic_api_url={} \
         ip=127.0.0.1:127.0.0.1:127.0.0.1:255.0.0.0 BOOTIF=01-52-54-00-12-34-56 {extra}\n",
        api.url()
    )
}

/// The body of a callback as JSON, checking its headers on the way.
fn callback(request: &Request, method: &str, token: Option<&str>) -> Value {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/v1/nodes/{ID}/vendor_passthru/{method}"));
    assert_eq!(
        request.headers.get("accept").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        request.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(request.headers.get("x-auth-token").map(String::as_str), token);
    serde_json::from_slice(&request.body).unwrap()
}

/// `conductor-writer deploy` through the ramdisk's target.
fn conductor(ramdisk: &Ramdisk, image: &Path, extra: &[&str]) -> Output {
    let (port, done) = (ramdisk.port.to_string(), ramdisk.done_port.to_string());
    let mut args = vec![
        "deploy",
        "--address",
        "127.0.0.1",
        "--port",
        &port,
        "--iqn",
        IQN,
        "--image",
    ];
    args.push(image.to_str().unwrap());
    args.extend(["--image-type", "partition", "--swap-mb", "8", "--notify-port", &done]);
    args.extend(extra);
    writer(&args)
}

#[test]
fn the_legacy_handshake_end_to_end_with_a_tftp_token() {
    let dir = TempDir::new().unwrap();
    let api = FakeIronic::start();
    let tftp_root = dir.path().join("tftpboot");
    std::fs::create_dir_all(&tftp_root).unwrap();
    std::fs::write(tftp_root.join(format!("token-{ID}")), "a-keystone-token\n").unwrap();
    let tftpd = Tftpd::start(&tftp_root);
    let (dev, disk) = dev_tree(dir.path(), 96 * MIB);
    let image = root_image(dir.path(), None);
    let tftp_port = tftpd.port.to_string();
    let mut ramdisk = Ramdisk::start(
        dir.path(),
        &cmdline(&api, "disk=vdz,vda boot_option=netboot boot_mode=bios"),
        &[
            "--dev-root",
            dev.to_str().unwrap(),
            "--tftp-port",
            &tftp_port,
            "--disk-timeout",
            "5",
        ],
    );

    let requests = api.wait_for(1, Duration::from_secs(20));
    let body = callback(&requests[0], "pass_deploy_info", Some("a-keystone-token"));
    // Exactly the legacy fields, in the legacy order.
    assert_eq!(
        requests[0].text(),
        format!(r#"{{"address":"127.0.0.1","key":"{KEY}","iqn":"{IQN}","error":""}}"#)
    );
    assert_eq!(body["error"], "");

    // While one initiator has a session, the disk is its alone.
    let login = |name: &str, isid: u8| {
        let config = InitiatorConfig::new(name, Some(IQN.into()), Isid::random([isid; 6]));
        Session::login(&ramdisk.portal(), config).unwrap()
    };
    let first = login("iqn.2024-01.test.ramdisk:first", 1).unwrap();
    match login("iqn.2024-01.test.ramdisk:second", 2) {
        Err(LoginError::Refused { status, .. }) => assert_eq!(status, LoginStatus::AUTHORIZATION_FAILURE),
        other => panic!(
            "a second initiator must be refused: {:?}",
            other.map(|s| s.outcome.tsih)
        ),
    }
    first.logout().unwrap();
    // Once it has gone, the conductor may log in.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while login(CONDUCTOR, 3).map(|s| s.logout()).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first initiator's session never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = conductor(&ramdisk, &image, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());
    let log = ramdisk.log();
    assert!(log.contains("target stopped"), "{log}");
    assert!(
        !integration_tests::listening(ramdisk.portal()),
        "the portal is closed: no login after done"
    );
    // The disk behind the target holds the deploy.
    let table = must("sfdisk", &["-d", disk.to_str().unwrap()]);
    assert!(table.contains("type=82") && table.contains("type=83"), "{table}");
    assert_eq!(api.requests().len(), 1, "netboot: one callback only");
}

#[test]
fn no_done_within_the_timeout_stops_the_target_and_fails() {
    let dir = TempDir::new().unwrap();
    let api = FakeIronic::start();
    let (dev, _) = dev_tree(dir.path(), 16 * MIB);
    let mut ramdisk = Ramdisk::start(
        dir.path(),
        &cmdline(&api, "disk=vda"),
        &["--dev-root", dev.to_str().unwrap(), "--callback-timeout", "2"],
    );
    api.wait_for(1, Duration::from_secs(20));
    assert_eq!(ramdisk.wait(Duration::from_secs(20)), 1);
    let log = ramdisk.log();
    assert!(log.contains("did not send done"), "{log}");
    assert!(log.contains("target stopped"), "{log}");
}

#[test]
fn a_missing_disk_is_reported_to_the_api() {
    let dir = TempDir::new().unwrap();
    let api = FakeIronic::start();
    let (dev, _) = dev_tree(dir.path(), 16 * MIB);
    let mut ramdisk = Ramdisk::start(
        dir.path(),
        &cmdline(&api, "disk=sdq,nvme9n1"),
        &["--dev-root", dev.to_str().unwrap(), "--disk-timeout", "1"],
    );
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 1);
    let requests = api.wait_for(1, Duration::from_secs(1));
    let body = callback(&requests[0], "pass_deploy_info", None);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("could not find the disk") && error.contains("nvme9n1"),
        "{error}"
    );
    assert_eq!(body["key"], KEY);
    assert!(!integration_tests::listening(ramdisk.portal()), "nothing was served");
}

#[test]
fn bad_parameters_are_reported_when_the_api_is_known() {
    let dir = TempDir::new().unwrap();
    let api = FakeIronic::start();
    let (dev, _) = dev_tree(dir.path(), 16 * MIB);
    let line = format!(
        "deployment_id={ID} deployment_key={KEY} ironic_api_url={} boot_option=sideways disk=vda \
         ip=127.0.0.1:::",
        api.url()
    );
    let mut ramdisk = Ramdisk::start(dir.path(), &line, &["--dev-root", dev.to_str().unwrap()]);
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 1);
    let requests = api.wait_for(1, Duration::from_secs(1));
    let error = callback(&requests[0], "pass_deploy_info", None)["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("iscsi_target_iqn"), "{error}");
    assert!(error.contains("sideways"), "{error}");

    // Without an API to tell, the error is only in the log and the exit code.
    let dir2 = TempDir::new().unwrap();
    let mut ramdisk = Ramdisk::start(
        dir2.path(),
        "deployment_id=x disk=vda",
        &["--dev-root", dev.to_str().unwrap()],
    );
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 1);
    assert!(ramdisk.log().contains("ironic_api_url"), "{}", ramdisk.log());
}

#[test]
fn chap_from_the_deployment_is_required_when_asked() {
    let dir = TempDir::new().unwrap();
    let api = FakeIronic::start();
    let (dev, disk) = dev_tree(dir.path(), 64 * MIB);
    let before = std::fs::read(&disk).unwrap();
    let image = root_image(dir.path(), None);
    let mut ramdisk = Ramdisk::start(
        dir.path(),
        &cmdline(&api, "disk=vda iscsi_chap=1"),
        &["--dev-root", dev.to_str().unwrap()],
    );
    api.wait_for(1, Duration::from_secs(20));
    // A legacy conductor without CHAP is refused, and writes nothing.
    let out = conductor(&ramdisk, &image, &["--no-notify"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).to_lowercase().contains("auth"), "{}", text(&out));
    // The wrong key is refused too.
    let out = conductor(
        &ramdisk,
        &image,
        &["--no-notify", "--deployment-id", ID, "--deployment-key", "not-the-key"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "a refused login changed the disk"
    );
    // The conductor that knows the deployment gets in (and checks the target back).
    let out = conductor(&ramdisk, &image, &["--deployment-id", ID, "--deployment-key", KEY]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());
}

fn local_boot(boot_mode: &str, grub: &str) {
    let dir = TempDir::new().unwrap();
    let api = FakeIronic::start();
    let backing = dir.path().join("disk.img");
    std::fs::File::create(&backing).unwrap().set_len(160 * MIB).unwrap();
    let device = Loop::attach(&backing);
    let name = device.0.trim_start_matches("/dev/").to_owned();
    let image = root_image(dir.path(), Some(&grub_recording_tree(dir.path(), grub)));
    let mount = dir.path().join("mnt");
    let mut ramdisk = Ramdisk::start(
        dir.path(),
        &cmdline(&api, &format!("disk={name} boot_option=local boot_mode={boot_mode}")),
        &["--mount-point", mount.to_str().unwrap()],
    );
    api.wait_for(1, Duration::from_secs(20));
    let out = conductor(
        &ramdisk,
        &image,
        &["--boot-option", "local", "--boot-mode", boot_mode, "--efi-mb", "40"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let requests = api.wait_for(2, Duration::from_secs(30));
    let body = callback(&requests[1], "pass_bootloader_install_info", None);
    let done = ramdisk.done_port.to_string();
    let out = writer(&["notify", "127.0.0.1", "--port", &done]);
    assert!(out.status.success(), "{}", text(&out));
    // Some kernels (this CI's among them) cannot mount FAT: the ESP step
    // then fails, and that failure must reach the API as FAILED.
    let fat = std::fs::read_to_string("/proc/filesystems").unwrap().contains("vfat");
    if boot_mode == "uefi" && !fat {
        assert_eq!(body["status"], "FAILED", "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("boot/efi") && error.contains("vfat"), "{error}");
        assert_eq!(ramdisk.wait(Duration::from_secs(30)), 1, "{}", ramdisk.log());
        assert!(!mount.join("bin").exists(), "everything was unmounted");
        return;
    }
    assert_eq!(body["status"], "SUCCEEDED", "{body}");
    assert_eq!(
        requests[1].text(),
        format!(r#"{{"address":"127.0.0.1","status":"SUCCEEDED","key":"{KEY}","error":""}}"#)
    );
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());

    // The root partition is the last one; GRUB was run on the whole disk.
    let partitions = must("sfdisk", &["-d", &device.0]);
    let last = partitions.lines().filter(|l| l.starts_with(&device.0)).count();
    let root = format!("{}p{last}", device.0);
    assert_eq!(debugfs_cat(&root, "/grub-install.log").trim(), device.0);
    assert_eq!(
        debugfs_cat(&root, "/grub-mkconfig.log").trim(),
        format!("-o /boot/{grub}/grub.cfg")
    );
    let esp = if boot_mode == "uefi" { "mounted" } else { "absent" };
    assert_eq!(debugfs_cat(&root, "/efi.log").trim(), esp, "the ESP on /boot/efi");
    assert!(!mount.join("bin").exists(), "everything was unmounted");
}

#[test]
fn local_boot_installs_grub_in_the_deployed_root_bios() {
    local_boot("bios", "grub");
}

#[test]
fn local_boot_installs_grub2_in_the_deployed_root_uefi() {
    local_boot("uefi", "grub2");
}

#[test]
fn root_device_hints_pick_the_disk_from_sysfs() {
    let dir = TempDir::new().unwrap();
    let api = FakeIronic::start();
    // Two disks as sysfs and udev describe them, and their device nodes.
    let (sys, dev, udev) = (dir.path().join("sys"), dir.path().join("dev"), dir.path().join("udev"));
    for (name, dev_no, sectors, model, serial) in [
        ("sda", "8:0", 2 * 1024 * 1024 * 2, "SMALL SSD", "S1"),
        ("sdb", "8:16", 300 * 1024 * 1024 * 2, "Big Disk", "S2"),
    ] {
        let block = sys.join("block").join(name);
        std::fs::create_dir_all(block.join("device")).unwrap();
        std::fs::write(block.join("size"), format!("{sectors}\n")).unwrap();
        std::fs::write(block.join("dev"), format!("{dev_no}\n")).unwrap();
        std::fs::write(block.join("device/model"), format!("{model}\n")).unwrap();
        std::fs::create_dir_all(&udev).unwrap();
        std::fs::write(udev.join(format!("b{dev_no}")), format!("E:ID_SERIAL_SHORT={serial}\n")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::File::create(dev.join(name))
            .unwrap()
            .set_len(48 * MIB)
            .unwrap();
    }
    let image = root_image(dir.path(), None);
    let mut ramdisk = Ramdisk::start(
        dir.path(),
        &cmdline(&api, "root_device=model=big%20disk,serial=S2,size=%3E%3D100"),
        &[
            "--sysfs-root",
            sys.to_str().unwrap(),
            "--dev-root",
            dev.to_str().unwrap(),
            "--udev-root",
            udev.to_str().unwrap(),
        ],
    );
    api.wait_for(1, Duration::from_secs(20));
    let out = conductor(&ramdisk, &image, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ramdisk.wait(Duration::from_secs(30)), 0, "{}", ramdisk.log());
    let sdb = must("sfdisk", &["-d", dev.join("sdb").to_str().unwrap()]);
    assert!(sdb.contains("type=83"), "the deploy went to sdb: {sdb}");
    let sda = std::fs::read(dev.join("sda")).unwrap();
    assert!(
        sda.iter().all(|&b| b == 0),
        "sda, which the hints rule out, is untouched"
    );
}
