//! A Python virtual environment with Ironic's own clients
//! (python-ironicclient's `baremetal`, openstacksdk) and prometheus_client's
//! text parser, installed from the Python package index with the versions
//! pinned in `tests/python/requirements.txt`.
//!
//! It is made once, under the target directory, in a folder named after a
//! hash of the requirements: later runs reuse it, a changed file makes a new
//! one, and a fresh machine builds it (about 20 s) with Debian's `python3`
//! and `python3-venv` (`tools/install-deps`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// `tests/python/`: the requirements and the scripts the tests run.
#[must_use]
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// FNV-1a: a stable name for a file's content.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn run(command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(out.status.success(), "{command:?} failed: {}", crate::output_text(&out));
}

/// The environment's directory (`bin/python`, `bin/baremetal`), made if needed.
pub fn ironic_clients() -> PathBuf {
    static MADE: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MADE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let requirements = scripts_dir().join("requirements.txt");
    let text = std::fs::read(&requirements).expect("read tests/python/requirements.txt");
    let venv = target_dir()
        .join("python")
        .join(format!("ironic-clients-{:016x}", fnv1a(&text)));
    let done = venv.join(".complete");
    if done.is_file() {
        return venv;
    }
    // A half-made environment (an interrupted run) is made again.
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(venv.parent().expect("a parent")).expect("make target/python");
    // Debian's interpreter: the one tools/install-deps installs venv for.
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("-c")
                .arg("import venv, ensurepip")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("python3 with venv and ensurepip (Debian: apt-get install python3-venv; tools/install-deps does)");
    run(Command::new(python).args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "--no-input", "-r"])
        .arg(&requirements));
    std::fs::write(&done, "").expect("mark the environment complete");
    venv
}
