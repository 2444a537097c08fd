//! Our own target, `target-agent serve`, on 127.0.0.1, for the same tests
//! that run against tgtd.
//!
//! The binary belongs to another package of the workspace, so Cargo does not
//! build it for these tests and `CARGO_BIN_EXE_target-agent` does not exist
//! here. Build it first (`cargo build -p target-agent`, as the test command
//! does); [`TargetAgent::binary`] then finds it in the workspace's target
//! directory. A missing binary is a test failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use tempfile::NamedTempFile;

/// How long `serve` may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `target-agent serve` on `127.0.0.1:port` exposing one backing file as
/// LUN 1. Killed on drop.
#[derive(Debug)]
pub struct TargetAgent {
    child: Child,
    /// The agent's stdout and stderr, shown when a test fails.
    log: NamedTempFile,
    pub port: u16,
    pub iqn: String,
}

impl TargetAgent {
    /// The `target-agent` binary: `$TARGET_AGENT` if set, else
    /// `<target dir>/{debug,release}/target-agent` (the profile of this test
    /// build first), where the target directory is `$CARGO_TARGET_DIR` or the
    /// workspace's `target/`. Panics with the command to run when there is
    /// none.
    pub fn binary() -> PathBuf {
        workspace_binary("target-agent", "TARGET_AGENT")
    }

    /// Start `target-agent serve --backing BACKING --iqn IQN --listen
    /// 127.0.0.1:PORT` on a free port and wait until it accepts connections.
    /// Panics (with the agent's output) if it exits or never listens.
    pub fn start(backing: &Path, iqn: &str) -> Self {
        Self::start_with(backing, iqn, &[])
    }

    /// Like [`TargetAgent::start`], with more `serve` options (CHAP, limits).
    pub fn start_with(backing: &Path, iqn: &str, extra: &[&str]) -> Self {
        let binary = Self::binary();
        let log = NamedTempFile::new().expect("a temporary file for the agent's output");
        // One open file for both streams (like 2>&1); we read it by path.
        let out = log.reopen().expect("open the log file");
        let err = out.try_clone().expect("clone the log file");
        // Port 0: the kernel picks a port at bind, and the agent logs it.
        // A port picked here and handed over could be taken in between, and
        // a connect loop could "succeed" on someone else's listener (or on a
        // TCP self-connection) before the agent listens.
        let child = Command::new(&binary)
            .arg("serve")
            .arg("--backing")
            .arg(backing)
            .args(["--iqn", iqn, "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", serving_line_filter())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut agent = Self {
            child,
            log,
            port: 0,
            iqn: iqn.to_owned(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(port) = serving_port(&agent.output()) {
                agent.port = port;
                return agent;
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!(
                    "{} serve exited at start-up ({status}); its output:\n{}",
                    binary.display(),
                    agent.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "target-agent does not listen after {START_TIMEOUT:?}; its output:\n{}",
                agent.output()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's resident memory now, in KiB, or None once it exited.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The portal address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything the agent printed so far.
    pub fn output(&self) -> String {
        std::fs::read(self.log.path()).map_or_else(
            |e| format!("(cannot read the agent's output: {e})"),
            |bytes| String::from_utf8_lossy(&bytes).into_owned(),
        )
    }
}

impl Drop for TargetAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- target-agent output ---\n{}--- end ---", self.output());
        }
    }
}

/// The caller's `RUST_LOG` (or `info`), keeping the "serving" line unless
/// the caller set the server's own level.
fn serving_line_filter() -> String {
    match std::env::var("RUST_LOG") {
        Ok(filter) if filter.contains("target_agent::server") => filter,
        Ok(filter) if !filter.is_empty() => format!("{filter},target_agent::server=info"),
        _ => "info".to_owned(),
    }
}

/// The port in the agent's "serving addr=IP:PORT iqn=..." line, once that
/// line is complete.
fn serving_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|line| line.contains(" serving addr="))?;
    let (_, rest) = line.split_once(" serving addr=")?;
    // Only a complete token: the write may still be under way.
    let (addr, _) = rest.split_once(' ')?;
    addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

/// Resident memory of process `pid` now, in KiB (VmRSS), or None if it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A binary of this workspace: `$ENV_VAR` if set, else
/// `<target dir>/{debug,release}/NAME` (the profile of this test build
/// first), where the target directory is `$CARGO_TARGET_DIR` or the
/// workspace's `target/`. Panics with the command to run when there is none.
pub fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env_var}={} does not exist", path.display());
        return path;
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profiles = if cfg!(debug_assertions) {
        ["debug", "release"]
    } else {
        ["release", "debug"]
    };
    let candidates: Vec<PathBuf> = profiles
        .iter()
        .map(|profile| target_dir.join(profile).join(name))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no {name} binary at {candidates:?}: run `cargo build -p {name}` first (or set {env_var})")
        })
}

#[cfg(test)]
mod tests {
    use super::serving_port;

    #[test]
    fn the_port_is_read_from_a_complete_serving_line_only() {
        let line = "2026-11-25T23:37:01Z  INFO target_agent::server: serving addr=127.0.0.1:25473 iqn=iqn.x\n";
        assert_eq!(serving_port(line), Some(25473));
        assert_eq!(serving_port(&line[..line.find(" iqn").unwrap() - 2]), None);
        assert_eq!(serving_port("starting\n"), None);
    }
}
