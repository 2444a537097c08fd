//! A private tftpd-hpa (`in.tftpd`) on loopback: the boot server that
//! handed the legacy ramdisk its auth token.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `in.tftpd --foreground --address 127.0.0.1:PORT --secure DIR`, stopped on drop.
#[derive(Debug)]
pub struct Tftpd {
    child: Child,
    pub port: u16,
}

impl Tftpd {
    /// Serve `root` (made world-readable: in.tftpd drops to `nobody`).
    /// Needs root and Debian's tftpd-hpa.
    pub fn start(root: &Path) -> Self {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod the TFTP root");
        for entry in std::fs::read_dir(root).expect("TFTP root").flatten() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod a file");
        }
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let child = Command::new("in.tftpd")
            .args(["--foreground", "--address", &format!("127.0.0.1:{port}"), "--secure"])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start in.tftpd (install Debian's tftpd-hpa; tests run as root)");
        let mut tftpd = Tftpd { child, port };
        // Up once the port is taken.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            if let Ok(Some(status)) = tftpd.child.try_wait() {
                panic!("in.tftpd exited at start-up: {status}");
            }
            assert!(Instant::now() < deadline, "in.tftpd did not bind 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        tftpd
    }
}

impl Drop for Tftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
