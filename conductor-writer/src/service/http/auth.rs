//! Who may use the API: HTTP basic authentication against an Apache
//! htpasswd file of bcrypt entries, as stand-alone Ironic's
//! `auth_strategy = http_basic` does (`htpasswd -B` writes them).
//!
//! The file is read again for every request (users are added or removed
//! without a restart) and checked whole at start-up, so a typo stops the
//! service instead of locking everyone out later. bcrypt is slow on purpose:
//! checks run on the blocking pool, and a proven user, password and entry
//! is remembered (as a SHA-256, never the password) so that a client polling
//! a node pays for bcrypt once.
//!
//! Without a file the API is open, which `serve` allows only on a loopback
//! address or with `--no-auth`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// Who may use the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAuth {
    /// HTTP basic authentication against this htpasswd file.
    Htpasswd(PathBuf),
    /// No authentication; `explicit` when `--no-auth` asked for it.
    Open { explicit: bool },
}

/// Why credentials were refused; the HTTP layer answers each as Ironic does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `401`: no `Authorization` header.
    #[error("Authorization required")]
    Missing,
    /// `401`: an unknown user or a wrong password.
    #[error("Incorrect username or password")]
    Wrong,
    /// `400`: a header that is not `Basic` credentials.
    #[error("{0}")]
    Malformed(String),
    /// `500`: the htpasswd file cannot be used.
    #[error("{0}")]
    File(String),
}

/// A parsed htpasswd file: user names and their bcrypt hashes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Htpasswd {
    entries: Vec<(String, String)>,
}

impl Htpasswd {
    /// Parse the text of `path`: `user:hash` lines, blank lines and `#`
    /// comments; every hash must be bcrypt (`$2y$`, `$2a$`, `$2b$`).
    ///
    /// # Errors
    ///
    /// A line without `:`, an empty user name, or a hash of another kind,
    /// named by its line number.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AuthError> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: String| {
                AuthError::File(format!(
                    "the htpasswd file {} line {}: {problem}",
                    path.display(),
                    n + 1
                ))
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(bad("not user:hash".into()));
            };
            if user.is_empty() {
                return Err(bad("an empty user name".into()));
            }
            if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
                return Err(bad(format!(
                    "user {user}: only bcrypt entries are supported; make it with `htpasswd -B {} {user}`",
                    path.display()
                )));
            }
            entries.push((user.to_owned(), hash.to_owned()));
        }
        Ok(Htpasswd { entries })
    }

    /// Read and parse `path`.
    ///
    /// # Errors
    ///
    /// An unreadable file, or what [`Htpasswd::parse`] refuses.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::File(format!("cannot read the htpasswd file {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// The hash of `user` (the first entry, as Apache reads the file).
    fn hash(&self, user: &str) -> Option<&str> {
        self.entries.iter().find(|(u, _)| u == user).map(|(_, h)| h.as_str())
    }
}

/// User name and password out of an `Authorization: Basic ...` value.
///
/// # Errors
///
/// Another scheme, or a token that is not base64 of `user:password`.
pub fn parse_basic(header: &str) -> Result<(String, Vec<u8>), AuthError> {
    let (scheme, token) = header
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| AuthError::Malformed("Could not parse Authorization header".into()))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Malformed(format!(
            "Unsupported authorization type \"{scheme}\""
        )));
    }
    let pair = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| AuthError::Malformed("Could not decode authorization token".into()))?;
    let colon = pair
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| AuthError::Malformed("Could not decode authorization token".into()))?;
    let user = String::from_utf8(pair[..colon].to_vec())
        .map_err(|_| AuthError::Malformed("Could not decode authorization token".into()))?;
    Ok((user, pair[colon + 1..].to_vec()))
}

/// Checks credentials against the htpasswd file.
#[derive(Debug)]
pub struct Verifier {
    path: PathBuf,
    /// SHA-256 of user, password and hash for credentials already proven.
    proven: Mutex<HashSet<[u8; 32]>>,
}

/// How many proven credentials are remembered before the memory is cleared.
const PROVEN_MAX: usize = 1024;

impl Verifier {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Verifier {
            path,
            proven: Mutex::new(HashSet::new()),
        }
    }

    /// Check an `Authorization` header value (or its absence); blocking (bcrypt).
    /// The proven user name comes back.
    ///
    /// # Errors
    ///
    /// See [`AuthError`].
    pub fn verify(&self, header: Option<&str>) -> Result<String, AuthError> {
        let (user, password) = parse_basic(header.ok_or(AuthError::Missing)?)?;
        let file = Htpasswd::load(&self.path)?;
        let hash = file.hash(&user).ok_or(AuthError::Wrong)?;
        let mut digest = Sha256::new();
        for part in [user.as_bytes(), &password, hash.as_bytes()] {
            digest.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
            digest.update(part);
        }
        let digest: [u8; 32] = digest.finalize().into();
        if self.memory().contains(&digest) {
            return Ok(user);
        }
        if !bcrypt::verify(&password, hash).unwrap_or(false) {
            return Err(AuthError::Wrong);
        }
        let mut proven = self.memory();
        if proven.len() >= PROVEN_MAX {
            proven.clear();
        }
        proven.insert(digest);
        Ok(user)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.proven.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// At start-up: the verifier for `auth`, or none for an open API, which is
/// refused on anything but a loopback address unless asked for explicitly.
/// Logs which it is.
///
/// # Errors
///
/// An open API on the network without `--no-auth`; an htpasswd file that
/// cannot be read, has a non-bcrypt entry, or has no user.
pub fn start(auth: &ApiAuth, listen: SocketAddr) -> anyhow::Result<Option<Verifier>> {
    match auth {
        ApiAuth::Htpasswd(path) => {
            let file = Htpasswd::load(path)?;
            if file.entries.is_empty() {
                anyhow::bail!(
                    "the htpasswd file {} has no user; add one with `htpasswd -B {} USER`",
                    path.display(),
                    path.display()
                );
            }
            info!(
                file = %path.display(),
                users = file.entries.len(),
                "the API requires HTTP basic authentication (the ramdisk callbacks and version documents are public)"
            );
            Ok(Some(Verifier::new(path.clone())))
        }
        ApiAuth::Open { explicit: true } => {
            warn!(%listen, "--no-auth: anyone who reaches {listen} can read every node and redeploy any of them");
            Ok(None)
        }
        ApiAuth::Open { explicit: false } if listen.ip().is_loopback() => {
            warn!(%listen, "no --htpasswd: the API is open to every user of this machine (it listens on loopback only)");
            Ok(None)
        }
        ApiAuth::Open { explicit: false } => anyhow::bail!(
            "refusing to serve the API on {listen} without authentication: anyone who reaches it could \
             redeploy (wipe) any node. Give --htpasswd FILE (make it with `htpasswd -cB FILE USER`), \
             listen on a loopback address, or pass --no-auth to run without authentication"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -nbB operator 's3cret pass'` and `htpasswd -nbB -C 4 admin 'x:y'`.
    const FILE: &str = "# the farm's operators\n\
        operator:$2y$05$IKTosXp5zgVBgE0M099gX.FFxwTqCzj64mITO/tv9YuN2sbVqxeIm\n\n\
        admin:$2y$04$bMy/5IkUb9jfhICoNxVaQu9gcxU/zwj1IMUxeTW8THZ/gVpEQrpSy\n";

    fn basic(user: &str, password: &str) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    }

    fn verifier(dir: &tempfile::TempDir, text: &str) -> Verifier {
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, text).unwrap();
        Verifier::new(path)
    }

    #[test]
    fn bcrypt_entries_prove_their_users_only() {
        let dir = tempfile::tempdir().unwrap();
        let v = verifier(&dir, FILE);
        assert_eq!(v.verify(Some(&basic("operator", "s3cret pass"))), Ok("operator".into()));
        assert_eq!(
            v.verify(Some(&basic("operator", "s3cret pass"))),
            Ok("operator".into()),
            "remembered"
        );
        assert_eq!(
            v.verify(Some(&basic("admin", "x:y"))),
            Ok("admin".into()),
            "a colon in a password"
        );
        assert_eq!(v.verify(Some(&basic("operator", "s3cret"))), Err(AuthError::Wrong));
        assert_eq!(v.verify(Some(&basic("nobody", "s3cret pass"))), Err(AuthError::Wrong));
        assert_eq!(v.verify(None), Err(AuthError::Missing));
        assert!(matches!(v.verify(Some("Bearer abc")), Err(AuthError::Malformed(m)) if m.contains("Bearer")));
        assert!(matches!(v.verify(Some("Basic !!!")), Err(AuthError::Malformed(_))));
        assert!(matches!(v.verify(Some("Basic")), Err(AuthError::Malformed(_))));
        // The file is read for every request: a removed user is out at once,
        // even one whose credentials were remembered.
        std::fs::write(dir.path().join("htpasswd"), FILE.replace("operator:", "someone:")).unwrap();
        assert_eq!(v.verify(Some(&basic("operator", "s3cret pass"))), Err(AuthError::Wrong));
    }

    #[test]
    fn only_bcrypt_entries_are_accepted() {
        let path = Path::new("/etc/serve/htpasswd");
        let md5 = "md5user:$apr1$cqAy/RL7$wxuc3..gdbBn60Kxv2rBG0\n";
        let err = Htpasswd::parse(&format!("{FILE}{md5}"), path).unwrap_err().to_string();
        assert!(
            err.contains("line 5") && err.contains("md5user") && err.contains("htpasswd -B"),
            "{err}"
        );
        let err = Htpasswd::parse("no colon here\n", path).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("user:hash"), "{err}");
        assert!(Htpasswd::parse(":$2y$05$x\n", path).is_err());
        assert_eq!(Htpasswd::parse(FILE, path).unwrap().entries.len(), 2);
    }

    #[test]
    fn an_open_api_only_on_loopback_or_when_asked() {
        let open = ApiAuth::Open { explicit: false };
        let anywhere: SocketAddr = "0.0.0.0:6385".parse().unwrap();
        let err = start(&open, anywhere).unwrap_err().to_string();
        assert!(err.contains("--htpasswd") && err.contains("--no-auth"), "{err}");
        assert!(start(&open, "[::]:6385".parse().unwrap()).is_err());
        assert!(start(&open, "127.0.0.1:6385".parse().unwrap()).unwrap().is_none());
        assert!(start(&open, "[::1]:6385".parse().unwrap()).unwrap().is_none());
        assert!(start(&ApiAuth::Open { explicit: true }, anywhere).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# nobody yet\n").unwrap();
        assert!(
            start(&ApiAuth::Htpasswd(empty), anywhere)
                .unwrap_err()
                .to_string()
                .contains("no user")
        );
        let missing = ApiAuth::Htpasswd(dir.path().join("missing"));
        assert!(
            start(&missing, anywhere)
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }
}
