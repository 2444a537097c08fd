//! A real web server for image sources: Debian's nginx on loopback, serving a directory over
//! http and https (static files: range requests, ETags), with a CA and a server certificate
//! made here by `openssl`; and a proxy that cuts the server's answers short.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::tgtd::free_port;

/// A CA, and a certificate it signed for 127.0.0.1 (with its key), as PEM files in a directory.
#[derive(Debug)]
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    /// Make a CA named `name` and a server certificate for `127.0.0.1` under it, in `dir`,
    /// with `tools/test-certs` (which tools/e2e-vm and tools/bench use too).
    pub fn make(dir: &Path, name: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/test-certs");
        let script = script.to_str().expect("UTF-8 path");
        crate::must(script, &[dir.to_str().expect("UTF-8 path"), name, "127.0.0.1"]);
        let file = |suffix: &str| dir.join(format!("{name}-{suffix}"));
        Certs {
            ca: file("ca.pem"),
            cert: file("server.pem"),
            key: file("server.key"),
        }
    }
}

/// nginx serving `root` on `127.0.0.1:http_port` and, with TLS, `127.0.0.1:https_port`.
/// Stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
}

impl Nginx {
    /// Serve the files of `root` with the certificate of `certs`.
    pub fn start(root: &Path, certs: &Certs) -> Self {
        Self::start_with(&format!("root {};", root.display()), certs)
    }

    /// Pass every request on to `http://127.0.0.1:port` (TLS in front of a plain server).
    pub fn proxy(port: u16, certs: &Certs) -> Self {
        Self::start_with(
            &format!("location / {{ proxy_pass http://127.0.0.1:{port}; proxy_http_version 1.1; }}"),
            certs,
        )
    }

    /// nginx with `site` as the body of its one server block.
    fn start_with(site: &str, certs: &Certs) -> Self {
        let dir = tempfile::tempdir().expect("a directory for nginx");
        let (http_port, https_port) = (free_port(), free_port());
        let d = dir.path().display();
        // The worker runs as root, as the test does, so it can read a private temporary directory.
        let config = format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             \x20 default_type application/octet-stream;\n  sendfile on;\n\
             \x20 server {{\n    listen 127.0.0.1:{http_port};\n    listen 127.0.0.1:{https_port} ssl;\n\
             \x20   ssl_certificate {cert};\n    ssl_certificate_key {key};\n    {site}\n  }}\n}}\n",
            cert = certs.cert.display(),
            key = certs.key.display(),
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("nginx log");
        let child = Command::new("nginx")
            .args(["-p", &d.to_string(), "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("run nginx (Debian nginx-light; tools/install-deps)");
        let mut nginx = Nginx {
            child,
            dir,
            http_port,
            https_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(crate::listening((Ipv4Addr::LOCALHOST, http_port))
            && crate::listening((Ipv4Addr::LOCALHOST, https_port)))
        {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.log());
            }
            assert!(Instant::now() < deadline, "nginx did not come up: {}", nginx.log());
            thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn http(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.http_port)
    }

    /// `https://127.0.0.1:PORT/name`.
    pub fn https(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.https_port)
    }

    /// The error log and what nginx printed.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// Requests nginx answered with `status` (from its access log).
    pub fn answered(&self, status: u16) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        let code = format!("\" {status} ");
        log.lines().filter(|l| l.contains(&code)).count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy on 127.0.0.1 to `upstream` that closes each of its first `cuts` connections once
/// the server has sent `after` bytes through it; later ones pass untouched, or with `refuse`
/// are closed at once (a server that went away).
#[derive(Debug)]
pub struct CuttingProxy {
    pub port: u16,
    cut: Arc<AtomicUsize>,
}

impl CuttingProxy {
    pub fn start(upstream: SocketAddr, after: u64, cuts: usize, refuse: bool) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicUsize::new(0));
        let counter = cut.clone();
        thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { return };
                if n >= cuts && refuse {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let limit = if n < cuts { after } else { u64::MAX };
                let counter = counter.clone();
                let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                thread::spawn(move || pump(c2, s2, u64::MAX, None));
                thread::spawn(move || pump(server, client, limit, Some(counter)));
            }
        });
        CuttingProxy { port, cut }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn http(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

/// Copy `from` to `to` until either ends or `limit` bytes went through; then close both.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: u64, cut: Option<Arc<AtomicUsize>>) {
    let mut buf = vec![0u8; 16 << 10];
    let mut sent = 0u64;
    loop {
        let room = usize::try_from(limit - sent).unwrap_or(usize::MAX).min(buf.len());
        if room == 0 {
            if let Some(cut) = &cut {
                cut.fetch_add(1, Ordering::SeqCst);
            }
            break;
        }
        match from.read(&mut buf[..room]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n as u64;
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Peak resident memory (VmHWM) of process `pid` so far, in KiB, or None if it is gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
