//! `target-agent deploy --no-reboot` as a process, as the node's ramdisk
//! would run it, on loopback ports of its own.

use crate::agent::workspace_binary;
use crate::tgtd::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `target-agent deploy --no-reboot`.
#[derive(Debug)]
pub struct Ramdisk {
    child: Option<Child>,
    /// The iSCSI portal's port on 127.0.0.1.
    pub port: u16,
    /// Where it waits for `done`.
    pub done_port: u16,
    log: PathBuf,
}

impl Ramdisk {
    /// Start it with `cmdline` on 127.0.0.1 (free ports) and `extra` flags.
    pub fn start(dir: &Path, cmdline: &str, extra: &[&str]) -> Self {
        Self::start_at(dir, cmdline, extra, (free_port(), free_port()))
    }

    /// The same on the given portal and done ports (chosen with
    /// [`free_port`] before the nodes file that names them was written).
    pub fn start_at(dir: &Path, cmdline: &str, extra: &[&str], (port, done_port): (u16, u16)) -> Self {
        let file = dir.join("cmdline");
        std::fs::write(&file, cmdline).expect("write the cmdline file");
        let log = dir.join("ramdisk.log");
        let child = Command::new(workspace_binary("target-agent", "TARGET_AGENT"))
            .args(["deploy", "--no-reboot", "--cmdline", file.to_str().expect("UTF-8 path")])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--done-port",
                &done_port.to_string(),
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .expect("start target-agent deploy");
        Ramdisk {
            child: Some(child),
            port,
            done_port,
            log,
        }
    }

    pub fn portal(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the agent to exit; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let mut child = self.child.take().expect("waited for once");
        match crate::wait_within(&mut child, timeout) {
            Some(status) => status.code().unwrap_or(-1),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("target-agent deploy did not exit; its log:\n{}", self.log());
            }
        }
    }
}

impl Drop for Ramdisk {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- target-agent deploy log ---\n{}--- end ---", self.log());
        }
    }
}
