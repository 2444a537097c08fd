//! A private tgtd instance on 127.0.0.1, for interoperability tests.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A tgtd listening on `127.0.0.1:port`, controlled through its own socket
/// number so that it never touches a system tgtd. Stopped on drop.
#[derive(Debug)]
pub struct Tgtd {
    child: Child,
    control: u16,
    pub port: u16,
}

/// A loopback port nobody listens on right now, and that no other call in
/// this process handed out. It comes from below the kernel's ephemeral
/// range (32768 and up): a port from that range can be taken, between now
/// and the server's bind, as the source port of any outgoing connection.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    let seed = RandomState::new();
    for attempt in 0u64..10_000 {
        let port = 20_000 + (seed.hash_one((std::process::id(), attempt)) % 12_000) as u16;
        if !given.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

impl Tgtd {
    /// Start tgtd; panics with a clear message when it cannot (not root,
    /// package missing).
    pub fn start() -> Self {
        let port = free_port();
        // tgtd's control socket is /var/run/tgtd/socket.N with N below 32768;
        // derive N from the (ephemeral, unique) port so that parallel tests
        // never share one.
        let control = port % 32768;
        let child = Command::new("tgtd")
            .args([
                "-f",
                "-C",
                &control.to_string(),
                "--iscsi",
                &format!("portal=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tgtd (install the Debian package `tgt`; tests run as root)");
        let mut tgtd = Self { child, control, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(tgtd.admin(&["--op", "show", "--mode", "system"]).is_ok()
            && crate::listening((Ipv4Addr::LOCALHOST, port)))
        {
            assert!(Instant::now() < deadline, "tgtd did not come up on port {port}");
            if let Ok(Some(status)) = tgtd.child.try_wait() {
                panic!("tgtd exited at start-up: {status}");
            }
            sleep(Duration::from_millis(50));
        }
        tgtd
    }

    /// The portal address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Run `tgtadm -C <ours> --lld iscsi ARGS`.
    pub fn admin(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("tgtadm")
            .args(["-C", &self.control.to_string(), "--lld", "iscsi"])
            .args(args)
            .output()
            .map_err(|e| format!("tgtadm: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("tgtadm {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn must(&self, args: &[&str]) {
        if let Err(e) = self.admin(args) {
            panic!("{e}");
        }
    }

    /// A target `iqn` (number `tid`) with `backing` as LUN 1, open to all.
    pub fn add_target(&self, tid: u32, iqn: &str, backing: &Path) {
        let tid = tid.to_string();
        self.must(&["--op", "new", "--mode", "target", "--tid", &tid, "-T", iqn]);
        let path = backing.to_str().expect("UTF-8 path");
        self.must(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            &tid,
            "--lun",
            "1",
            "-b",
            path,
        ]);
        self.must(&["--op", "bind", "--mode", "target", "--tid", &tid, "-I", "ALL"]);
    }

    /// Set a target parameter (e.g. `HeaderDigest`, `InitialR2T`).
    pub fn set_param(&self, tid: u32, name: &str, value: &str) {
        let tid = tid.to_string();
        self.must(&[
            "--op", "update", "--mode", "target", "--tid", &tid, "--name", name, "--value", value,
        ]);
    }

    /// A CHAP account bound to target `tid`: incoming (the initiator proves
    /// itself) or outgoing (the target proves itself, mutual CHAP).
    pub fn add_account(&self, tid: u32, user: &str, secret: &str, outgoing: bool) {
        self.must(&["--op", "new", "--mode", "account", "--user", user, "--password", secret]);
        let tid = tid.to_string();
        let mut args = vec!["--op", "bind", "--mode", "account", "--tid", &tid, "--user", user];
        if outgoing {
            args.push("--outgoing");
        }
        self.must(&args);
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        // tgtd ignores SIGTERM while targets exist; delete them, then the system.
        if let Ok(show) = self.admin(&["--op", "show", "--mode", "target"]) {
            for line in show.lines().filter(|l| l.starts_with("Target ")) {
                if let Some(tid) = line.split([' ', ':']).nth(1) {
                    let _ = self.admin(&["--op", "delete", "--mode", "target", "--tid", tid, "--force"]);
                }
            }
        }
        let _ = self.admin(&["--op", "delete", "--mode", "system"]);
        let _ = crate::wait_within(&mut self.child, Duration::from_secs(5));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}", self.control));
        let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}.lock", self.control));
    }
}
