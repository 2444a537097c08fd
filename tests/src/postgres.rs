//! A private PostgreSQL server for one test: Debian's `postgresql` binaries,
//! a cluster made by `initdb` in a temporary directory, run as the
//! `postgres` user the package creates (the server refuses to run as root),
//! listening on 127.0.0.1 only (a free port; its unix socket stays in the
//! temporary directory), with password (SCRAM) authentication. Stopped
//! (fast shutdown) and removed when dropped.

use crate::tgtd::free_port;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser's and the service role's password.
const PASSWORD: &str = "farm-test-password";

/// A running PostgreSQL; its database `farm` belongs to the role `farm`.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// initdb, start, and make the database `farm`; panics with the
    /// server's log if any of it fails.
    pub fn start() -> Self {
        let bin = bin_dir();
        let (uid, gid) = postgres_user();
        let dir = tempfile::TempDir::new().expect("make the cluster directory");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("give the directory to postgres");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write the password file");
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown the password file");
        let data = dir.path().join("data");
        let out = as_postgres(Command::new(bin.join("initdb")), uid, gid)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb (Debian postgresql; tools/install-deps installs it)");
        assert!(out.status.success(), "initdb: {}", crate::output_text(&out));
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let child = as_postgres(Command::new(bin.join("postgres")), uid, gid)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            // A test's cluster: speed over durability.
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=60",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the server log"))
            .spawn()
            .expect("start postgres");
        let mut server = Postgres {
            child: Some(child),
            dir,
            bin,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.ready() {
            let exited = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "postgres did not start ({exited:?}): {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server.psql_as(
            "postgres",
            "postgres",
            &format!("CREATE ROLE farm LOGIN PASSWORD '{PASSWORD}'"),
        );
        // Not in a transaction block: a statement of its own.
        server.psql_as("postgres", "postgres", "CREATE DATABASE farm OWNER farm");
        server
    }

    /// What `serve --db` takes.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://farm:{PASSWORD}@127.0.0.1:{}/farm", self.port)
    }

    /// The same database through the server's unix socket.
    #[must_use]
    pub fn socket_url(&self) -> String {
        format!(
            "postgresql:///farm?host={}&port={}&user=farm&password={PASSWORD}",
            self.dir.path().display(),
            self.port
        )
    }

    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `sql` in the database `farm` as `farm`: psql's unaligned output.
    #[must_use]
    pub fn psql(&self, sql: &str) -> String {
        self.psql_as("farm", "farm", sql)
    }

    fn psql_as(&self, user: &str, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", user, "-d", database, "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql (Debian postgresql-client)");
        assert!(out.status.success(), "psql {sql}: {}", crate::output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SIGINT: fast shutdown (backends end, the postmaster exits).
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        if crate::wait_within(&mut child, Duration::from_secs(20)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}--- end ---", self.log());
        }
    }
}

/// `command` to run as the `postgres` user, without root's groups.
fn as_postgres(mut command: Command, uid: u32, gid: u32) -> Command {
    command.uid(uid).gid(gid).env("LC_ALL", "C").current_dir("/");
    command
}

/// The uid and gid of the `postgres` user Debian's package made.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .expect("no postgres user: install Debian's postgresql (tools/install-deps)")
}

/// The newest `/usr/lib/postgresql/VERSION/bin`.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .expect("no /usr/lib/postgresql: install Debian's postgresql (tools/install-deps)")
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL server under /usr/lib/postgresql")
}
