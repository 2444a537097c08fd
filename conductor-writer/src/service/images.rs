//! Images as the service uses them: one local, checked file per image,
//! however many nodes deploy it at once.
//!
//! A path is checksummed once (and again only if the file changes); an
//! `http://` or `https://` URL is downloaded once into the cache directory,
//! then checked.
//! Concurrent deploys of the same image wait for the one check.

use crate::source::{self, Checksum};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::OnceCell;

/// What identifies one check of one image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    image: String,
    checksum: Option<String>,
}

type Ready = Result<PathBuf, String>;

/// A local file's size and modification time, when the check was made.
type Stamp = Option<(u64, SystemTime)>;

/// One image's check: the file it was made on, and its result once known.
type Check = (Stamp, Arc<OnceCell<Ready>>);

/// The images checked (or being checked) so far.
#[derive(Debug)]
pub struct Images {
    cache_dir: PathBuf,
    /// The HTTP(S) client: its TLS roots and timeouts.
    agent: ureq::Agent,
    checked: Mutex<HashMap<Key, Check>>,
}

impl Images {
    #[must_use]
    pub fn new(cache_dir: PathBuf, agent: ureq::Agent) -> Self {
        Images {
            cache_dir,
            agent,
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// The local path of `image`, its checksum verified; the error says why not.
    pub async fn get(&self, image: &str, checksum: Option<&str>) -> Ready {
        let key = Key {
            image: image.to_owned(),
            checksum: checksum.map(str::to_owned),
        };
        let stamp = file_stamp(Path::new(image));
        let cell = {
            let mut checked = self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = checked.entry(key).or_insert_with(|| (stamp, Arc::new(OnceCell::new())));
            // A local file that changed since its check is checked again.
            if entry.0 != stamp {
                *entry = (stamp, Arc::new(OnceCell::new()));
            }
            entry.1.clone()
        };
        let (image, checksum) = (image.to_owned(), checksum.map(str::to_owned));
        let (dir, agent) = (self.cache_dir.clone(), self.agent.clone());
        cell.get_or_init(|| async move {
            tokio::task::spawn_blocking(move || prepare(&image, checksum.as_deref(), &dir, &agent))
                .await
                .unwrap_or_else(|e| Err(format!("internal error: {e}")))
        })
        .await
        .clone()
    }
}

fn file_stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

fn prepare(image: &str, checksum: Option<&str>, cache_dir: &Path, agent: &ureq::Agent) -> Ready {
    let path = if image.starts_with("http://") || image.starts_with("https://") {
        download(image, cache_dir, agent)?
    } else {
        PathBuf::from(image)
    };
    if let Some(checksum) = checksum {
        let expected: Checksum = checksum
            .parse()
            .map_err(|e| format!("{image}: bad checksum {checksum}: {e}"))?;
        source::verify_checksum(&path, &expected).map_err(|e| e.to_string())?;
    } else if !path.is_file() {
        return Err(format!("{}: no such image file", path.display()));
    }
    tracing::info!(image, path = %path.display(), "image checked");
    Ok(path)
}

/// Fetch `url` into the cache directory (once: a finished download is reused).
fn download(url: &str, cache_dir: &Path, agent: &ureq::Agent) -> Result<PathBuf, String> {
    use sha2::Digest as _;
    let name: String = sha2::Sha256::digest(url.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = cache_dir.join(format!("image-{name}"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| format!("cannot make {}: {e}", cache_dir.display()))?;
    let partial = path.with_extension("partial");
    source::download_to(agent, url, &partial, None).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, &path).map_err(|e| format!("cannot keep {}: {e}", path.display()))?;
    Ok(path)
}
