//! `iscsi://[user%secret@]host[:port]/iqn/lun`, the URL form libiscsi and
//! QEMU use for a LUN.

use std::fmt;

/// A parsed iSCSI URL.
#[derive(Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    pub host: String,
    pub port: u16,
    pub target: String,
    pub lun: u16,
    /// CHAP name and secret given in the URL.
    pub user: Option<(String, String)>,
}

impl fmt::Debug for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        write!(f, "{self}")
    }
}

impl fmt::Display for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "iscsi://{host}:{}/{}/{}", self.port, self.target, self.lun)
    }
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid iSCSI URL {url:?}: {reason}; expected iscsi://HOST[:PORT]/IQN/LUN")]
pub struct UrlError {
    pub url: String,
    pub reason: &'static str,
}

/// Split `host[:port]` (IPv6 in brackets), with `default_port`.
pub fn parse_portal(portal: &str, default_port: u16) -> Result<(String, u16), &'static str> {
    if let Some(rest) = portal.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in the host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "invalid port")?,
            None if after.is_empty() => default_port,
            None => return Err("unexpected text after the IPv6 address"),
        };
        return Ok((host.to_owned(), port));
    }
    match portal.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((host.to_owned(), port.parse().map_err(|_| "invalid port")?)),
        Some(_) => Err("an IPv6 address must be in brackets"),
        None => Ok((portal.to_owned(), default_port)),
    }
    .and_then(|(h, p): (String, u16)| if h.is_empty() { Err("missing host") } else { Ok((h, p)) })
}

impl std::str::FromStr for IscsiUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let err = |reason| UrlError {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("iscsi://")
            .ok_or_else(|| err("it does not start with iscsi://"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| err("missing /IQN/LUN"))?;
        let (user, portal) = match authority.rsplit_once('@') {
            Some((creds, portal)) => {
                let (name, secret) = creds
                    .split_once('%')
                    .ok_or_else(|| err("credentials must be user%secret"))?;
                (Some((name.to_owned(), secret.to_owned())), portal)
            }
            None => (None, authority),
        };
        let (host, port) = parse_portal(portal, 3260).map_err(err)?;
        let (target, lun) = path.rsplit_once('/').ok_or_else(|| err("missing the LUN"))?;
        if target.is_empty() {
            return Err(err("missing the target name"));
        }
        let lun = lun.parse().map_err(|_| err("the LUN is not a number"))?;
        Ok(Self {
            host,
            port,
            target: target.to_owned(),
            lun,
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libiscsi_urls() {
        let u: IscsiUrl = "iscsi://127.0.0.1/iqn.2008-10.org.openstack:node/1".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str(), u.lun),
            ("127.0.0.1", 3260, "iqn.2008-10.org.openstack:node", 1)
        );
        let u: IscsiUrl = "iscsi://me%s3cret@[::1]:3261/iqn.x:y/0".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.lun), ("::1", 3261, 0));
        assert_eq!(u.user, Some(("me".into(), "s3cret".into())));
        assert_eq!(u.to_string(), "iscsi://[::1]:3261/iqn.x:y/0");
        assert!(!format!("{u:?}").contains("s3cret"));
        for bad in [
            "http://x/iqn/1",
            "iscsi://host",
            "iscsi://host/iqn",
            "iscsi://host//1",
            "iscsi://host/iqn/x",
            "iscsi://:99/iqn/1",
            "iscsi://::1/iqn/1",
            "iscsi://h:99999/iqn/1",
        ] {
            assert!(bad.parse::<IscsiUrl>().is_err(), "{bad}");
        }
    }
}
