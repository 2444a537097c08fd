//! Fixtures for the cross-crate tests.
//!
//! - [`tgtd`]: a private tgtd (the legacy ramdisk's target) on loopback, with
//!   file-backed LUNs, started and stopped by the test.
//! - [`agent`]: our own `target-agent serve` as a process, for the same tests.
//! - [`ironic`]: a stand-in for the Ironic API that records the callbacks.
//! - [`ramdisk`]: `target-agent deploy` as a process, the node's ramdisk.
//! - [`rootfs`]: a GRUB-recording root file system and loop devices, for local boots.
//! - [`tftpd`]: a private tftpd-hpa, the boot server with the auth token.
//! - [`proxy`]: a TCP proxy that cuts or freezes connections at chosen points.
//! - [`pyenv`]: a Python virtual environment with Ironic's own clients.
//! - [`postgres`]: a private PostgreSQL server (initdb in a temporary
//!   directory, loopback only), for several `serve` instances to share.
//! - [`serve`]: `conductor-writer serve` as a process, an HTTP client for its
//!   API, and the nodes and disks it deploys.
//! - [`web`]: Debian's nginx on loopback (http and https, with a CA made
//!   here), a proxy that cuts its answers short, peak memory of a process.
//! - [`initiator`]: a deliberately simple blocking initiator over
//!   `iscsi-proto`, one command at a time, to drive any target from a test.
//!
//! Tests that use them need root (tgtd) and the Debian packages the README's
//! test command installs.

pub mod agent;
pub mod initiator;
pub mod ironic;
pub mod postgres;
pub mod proxy;
pub mod pyenv;
pub mod ramdisk;
pub mod rootfs;
pub mod serve;
pub mod tftpd;
pub mod tgtd;
pub mod web;

/// A seed for a test's random choices: `$VAR` if set, else from the clock.
/// Printed as `VAR=SEED`, so that a failing run can be repeated.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(1, |d| d.as_nanos() as u64 | 1)
    });
    eprintln!("{var}={seed}");
    seed
}

/// xorshift64: reproducible test data and fault points from a [`seed`]
/// (never zero).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Whether something accepts TCP connections at `addr`. A connection to
/// itself (source port equal to the destination port, possible where the
/// kernel's ephemeral port range covers `addr`) does not count: it
/// "succeeds" with nobody listening.
pub fn listening(addr: impl std::net::ToSocketAddrs) -> bool {
    std::net::TcpStream::connect(addr).is_ok_and(|stream| stream.local_addr().ok() != stream.peer_addr().ok())
}

/// Run `qemu-img ARGS` (Debian qemu-utils); panics with its message on failure.
pub fn qemu_img(args: &[&str]) {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img (Debian qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img convert` a raw image into a qcow2 with compressed clusters.
pub fn compressed_qcow2(raw: &std::path::Path, qcow2: &std::path::Path) {
    let (raw, qcow2) = (raw.to_str().expect("UTF-8 path"), qcow2.to_str().expect("UTF-8 path"));
    qemu_img(&["convert", "-c", "-f", "raw", "-O", "qcow2", raw, qcow2]);
}

/// A config drive ISO as Ironic's images carry it: ISO 9660 with Rock Ridge
/// and Joliet, labelled `config-2`, holding `openstack/latest/meta_data.json`
/// = `meta_data`; made in `dir` as `name`.
pub fn config_drive_iso(dir: &std::path::Path, name: &str, meta_data: &str) -> std::path::PathBuf {
    let root = dir.join(format!("{name}.tree"));
    let tree = root.join("openstack/latest");
    std::fs::create_dir_all(&tree).expect("config drive tree");
    std::fs::write(tree.join("meta_data.json"), meta_data).expect("meta_data.json");
    let iso = dir.join(name);
    let (iso_arg, root_arg) = (iso.to_str().expect("UTF-8 path"), root.to_str().expect("UTF-8 path"));
    must(
        "genisoimage",
        &["-quiet", "-V", "config-2", "-r", "-J", "-o", iso_arg, root_arg],
    );
    iso
}

/// A finished command's stdout then stderr, for assertion messages.
#[must_use]
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `program ARGS`; panics with its output unless it succeeds. Its stdout.
pub fn must(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait up to `limit` for `child` to exit: its status, or None if it still
/// runs then (or cannot be polled).
pub fn wait_within(child: &mut std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => return None,
        }
    }
}

/// Run `command` for at most `limit`, killed then: its output, and whether
/// it had to be killed. Output goes to files, not pipes, so a chatty
/// program never blocks on a full pipe and nothing must drain it meanwhile.
pub fn output_within(
    command: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::io::Result<(std::process::Output, bool)> {
    output_within_from(command, std::process::Stdio::null(), limit)
}

/// [`output_within`] with `stdin` as the command's standard input.
pub fn output_within_from(
    command: &mut std::process::Command,
    stdin: std::process::Stdio,
    limit: std::time::Duration,
) -> std::io::Result<(std::process::Output, bool)> {
    let stdout = tempfile::tempfile()?;
    let stderr = tempfile::tempfile()?;
    let mut child = command
        .stdin(stdin)
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()?;
    let (status, killed) = match wait_within(&mut child, limit) {
        Some(status) => (status, false),
        None => {
            let _ = child.kill();
            (child.wait()?, true)
        }
    };
    let read = |mut file: std::fs::File| {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        file.rewind().and_then(|()| file.read_to_end(&mut bytes)).map(|_| bytes)
    };
    let output = std::process::Output {
        status,
        stdout: read(stdout)?,
        stderr: read(stderr)?,
    };
    Ok((output, killed))
}

/// How long one `conductor-writer` run of a test may take before it is
/// killed: a hang fails its test with the output so far, never the run.
const WRITER_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// `conductor-writer ARGS`, this workspace's build, killed after
/// [`WRITER_LIMIT`] (its stderr then says so).
pub fn conductor_writer(args: &[&str]) -> std::process::Output {
    conductor_writer_with(args, &[])
}

/// [`conductor_writer`] with `envs` added to its environment.
pub fn conductor_writer_with(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    conductor_writer_from(args, envs, std::process::Stdio::null())
}

/// [`conductor_writer_with`], reading `stdin`.
pub fn conductor_writer_from(args: &[&str], envs: &[(&str, &str)], stdin: std::process::Stdio) -> std::process::Output {
    let binary = agent::workspace_binary("conductor-writer", "CONDUCTOR_WRITER");
    let mut command = std::process::Command::new(binary);
    command.args(args).envs(envs.iter().copied());
    let (mut out, killed) = output_within_from(&mut command, stdin, WRITER_LIMIT).expect("run conductor-writer");
    if killed {
        let note = format!("\n(conductor-writer {args:?} still ran after {WRITER_LIMIT:?}: killed)\n");
        out.stderr.extend_from_slice(note.as_bytes());
    }
    out
}

/// A populated ext4 image `dir/name` of `mb` MiB, labelled `rootfs`, whose
/// `/etc/hostname` says `content`.
pub fn ext4_image(dir: &std::path::Path, name: &str, mb: u64, content: &str) -> std::path::PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("etc")).expect("make the tree");
    std::fs::write(tree.join("etc/hostname"), content).expect("write the tree");
    let image = dir.join(name);
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(mb << 20))
        .expect("make the image file");
    let (tree, path) = (tree.to_str().expect("UTF-8 path"), image.to_str().expect("UTF-8 path"));
    must("mke2fs", &["-q", "-F", "-t", "ext4", "-L", "rootfs", "-d", tree, path]);
    image
}

#[cfg(test)]
mod tests {
    use super::output_within;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn a_run_keeps_its_output_and_is_killed_at_its_limit() {
        let (out, killed) = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(!killed);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!((&out.stdout[..], &out.stderr[..]), (&b"out\n"[..], &b"err\n"[..]));

        let start = Instant::now();
        let (out, killed) = output_within(
            Command::new("sh").args(["-c", "echo before; exec sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(killed && !out.status.success());
        assert_eq!(out.stdout, b"before\n");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    }
}
