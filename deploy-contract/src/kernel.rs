//! The kernel command line: how the conductor tells the deploy ramdisk what to do.
//!
//! The legacy Ironic conductor wrote a deploy's parameters into the PXE config's kernel line and
//! the bash ramdisk read them from `/proc/cmdline` (or from `parameters.txt` on a virtual floppy,
//! one `name=value` a line). Both programs are drop-ins for those halves, so the names and their
//! meaning are Ironic's (the table in the README's `target-agent deploy` section); `iscsi_chap`
//! and `ironic_api_insecure` are ours.
//!
//! [`DeployParams`] is the part the conductor writes: it renders itself as kernel-line words
//! (`Display`) and the ramdisk reads those back one word at a time ([`DeployParams::set`]); the
//! tests below check that one reads exactly what the other wrote. The ramdisk reads the words
//! nobody but PXE, the kernel or the operator writes (`ip`, `BOOTIF`, `disk`, ...) itself, by the
//! names declared here.

use std::fmt;

use crate::hints::RootDeviceHints;

/// The node's UUID: the callbacks go to `/v1/nodes/{deployment_id}/vendor_passthru/...`.
pub const DEPLOYMENT_ID: &str = "deployment_id";
/// The node's random deploy key, echoed in every callback as `key`.
pub const DEPLOYMENT_KEY: &str = "deployment_key";
/// The IQN the ramdisk serves the disk under.
pub const ISCSI_TARGET_IQN: &str = "iscsi_target_iqn";
/// Where the callbacks go (with or without `/v1`).
pub const IRONIC_API_URL: &str = "ironic_api_url";
/// Root device hints (see [`crate::hints`]).
pub const ROOT_DEVICE: &str = "root_device";
/// [`BootOption`].
pub const BOOT_OPTION: &str = "boot_option";
/// [`BootMode`].
pub const BOOT_MODE: &str = "boot_mode";
/// Ours: serve the disk only to the holder of CHAP credentials derived from the deployment
/// ([`crate::chap`]).
pub const ISCSI_CHAP: &str = "iscsi_chap";
/// Candidate disk names when there are no root device hints.
pub const DISK: &str = "disk";
/// The kernel's `ip=client:server:gateway:netmask:hostname:device:autoconf`.
pub const IP: &str = "ip";
/// The PXE MAC, added by pxelinux (`ipappend 2`) or by the iPXE script.
pub const BOOTIF: &str = "BOOTIF";
/// The TFTP server of the legacy auth token when `ip` does not name one.
pub const BOOT_SERVER: &str = "boot_server";
/// On error, a shell instead of a reboot.
pub const TROUBLESHOOT: &str = "troubleshoot";
/// `vmedia`: the parameters are in `parameters.txt` on a virtual floppy.
pub const BOOT_METHOD: &str = "boot_method";
/// Ours: do not verify an `https` API's certificate.
pub const IRONIC_API_INSECURE: &str = "ironic_api_insecure";

/// Splits a command line into `name=value` (at the first `=`) or bare `name` words. Words are
/// separated by whitespace; double quotes group (`a="b c"`) and are removed, as the kernel does.
#[must_use]
pub fn split_cmdline(text: &str) -> Vec<(String, Option<String>)> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut started) = (String::new(), false, false);
    for c in text.chars().chain([' ']) {
        if c == '"' {
            (quoted, started) = (!quoted, true);
        } else if !c.is_whitespace() || quoted {
            word.push(c);
            started = true;
        } else if std::mem::take(&mut started) {
            let word = std::mem::take(&mut word);
            match word.split_once('=') {
                Some(("", _)) => {}
                Some((name, value)) => words.push((name.to_owned(), Some(value.to_owned()))),
                None if word.is_empty() => {}
                None => words.push((word, None)),
            }
        }
    }
    words
}

/// A yes/no parameter: a bare word or `1`/`yes`/`true`/`on` is on; `0`/`no`/`false`/`off` or
/// empty is off.
///
/// # Errors
///
/// Any other value, in words (the caller takes it as off).
pub fn flag(value: Option<&str>) -> Result<bool, String> {
    let Some(value) = value else { return Ok(true) };
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "" | "0" | "no" | "false" | "off" => Ok(false),
        _ => Err("expected 1, yes, true, on or 0, no, false, off; taken as off".into()),
    }
}

/// `boot_option`: whether the ramdisk installs a boot loader once the image is written (`local`)
/// or the node keeps booting from the network (`netboot`, Ironic's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootOption {
    Local,
    #[default]
    Netboot,
}

impl BootOption {
    pub const ALL: [Self; 2] = [Self::Local, Self::Netboot];

    /// The value on the kernel line.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Netboot => "netboot",
        }
    }

    /// Case-insensitive, as the ramdisk reads it.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for BootOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `boot_mode`: which boot loader a local boot installs, and whether the disk has an EFI
/// system partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootMode {
    #[default]
    Bios,
    Uefi,
}

impl BootMode {
    pub const ALL: [Self; 2] = [Self::Bios, Self::Uefi];

    /// The value on the kernel line.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bios => "bios",
            Self::Uefi => "uefi",
        }
    }

    /// Case-insensitive, as the ramdisk reads it.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the conductor tells the ramdisk about one deploy.
///
/// The four names are `Option`s because the ramdisk must go on reading past a missing or
/// malformed one: it reports every problem to the API rather than rebooting silently, as the
/// bash script often did. Values never hold whitespace (the conductor's nodes file refuses it),
/// so the words need no quoting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployParams {
    pub deployment_id: Option<String>,
    pub deployment_key: Option<String>,
    /// `iscsi_target_iqn`, kept even when malformed, for the error callback.
    pub iqn: Option<String>,
    /// `ironic_api_url`, kept even when malformed, for the error callback.
    pub api_url: Option<String>,
    pub root_device: Option<RootDeviceHints>,
    pub boot_option: BootOption,
    pub boot_mode: BootMode,
    /// `iscsi_chap=1`.
    pub chap: bool,
}

impl DeployParams {
    /// Reads one word of the command line if it is one of these parameters: `Ok(false)` when it
    /// is not, `Ok(true)` when it was taken.
    ///
    /// # Errors
    ///
    /// What is wrong with a value, in words. A malformed IQN or API URL is kept anyway (the error
    /// callback needs them); any other bad value leaves the parameter as it was.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<bool, String> {
        let text = value.unwrap_or("").trim();
        let some = || Some(text.to_owned()).filter(|t| !t.is_empty());
        match name {
            DEPLOYMENT_ID => self.deployment_id = some(),
            DEPLOYMENT_KEY => self.deployment_key = some(),
            ISCSI_TARGET_IQN => {
                self.iqn = some();
                let lower = text.to_ascii_lowercase();
                let prefixed = ["iqn.", "eui.", "naa.", "iqn-"]
                    .iter()
                    .any(|p| lower.len() > p.len() && lower.starts_with(p));
                if !text.is_empty() && !prefixed {
                    return Err("not an iSCSI name (expected iqn.…, eui.…, naa.… or iqn-<uuid>)".into());
                }
            }
            IRONIC_API_URL => {
                self.api_url = some();
                let lower = text.to_ascii_lowercase();
                let scheme = ["http://", "https://"]
                    .iter()
                    .any(|s| lower.len() > s.len() && lower.starts_with(s));
                if !text.is_empty() && !scheme {
                    return Err("the Ironic API URL must start with http:// or https://".into());
                }
            }
            ROOT_DEVICE => {
                self.root_device = None;
                if !text.is_empty() {
                    self.root_device = Some(RootDeviceHints::parse(text).map_err(|e| e.to_string())?);
                }
            }
            BOOT_OPTION => {
                self.boot_option = BootOption::parse(text).ok_or("expected local or netboot; using netboot")?;
            }
            BOOT_MODE => self.boot_mode = BootMode::parse(text).ok_or("expected bios or uefi; using bios")?,
            ISCSI_CHAP => self.chap = flag(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Required parameters that are absent or empty, by their kernel-line names.
    #[must_use]
    pub fn missing(&self) -> Vec<&'static str> {
        let given = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        [
            (DEPLOYMENT_ID, &self.deployment_id),
            (DEPLOYMENT_KEY, &self.deployment_key),
            (ISCSI_TARGET_IQN, &self.iqn),
            (IRONIC_API_URL, &self.api_url),
        ]
        .into_iter()
        .filter(|&(_, v)| !given(v))
        .map(|(name, _)| name)
        .collect()
    }
}

/// The words the conductor puts on the kernel line, space-separated: the four required ones
/// (those given), `boot_option` and `boot_mode` always, then `root_device` and `iscsi_chap=1`
/// when they apply.
impl fmt::Display for DeployParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = [
            (DEPLOYMENT_ID, &self.deployment_id),
            (DEPLOYMENT_KEY, &self.deployment_key),
            (ISCSI_TARGET_IQN, &self.iqn),
            (IRONIC_API_URL, &self.api_url),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
        .collect();
        words.push(format!("{BOOT_OPTION}={}", self.boot_option));
        words.push(format!("{BOOT_MODE}={}", self.boot_mode));
        if let Some(hints) = &self.root_device {
            words.push(format!("{ROOT_DEVICE}={}", hints.to_kernel_value()));
        }
        if self.chap {
            words.push(format!("{ISCSI_CHAP}=1"));
        }
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The ramdisk's side: every word offered to [`DeployParams::set`], problems kept.
    fn read(line: &str) -> (DeployParams, Vec<String>) {
        let mut params = DeployParams::default();
        let mut problems = Vec::new();
        for (name, value) in split_cmdline(line) {
            if let Err(why) = params.set(&name, value.as_deref()) {
                problems.push(format!("{name}: {why}"));
            }
        }
        (params, problems)
    }

    fn full() -> DeployParams {
        DeployParams {
            deployment_id: Some("1be26c0b-03f2-4d2d-ae87-c02d7f33c123".into()),
            deployment_key: Some("k3y-k3y-k3y".into()),
            iqn: Some("iqn.2008-10.org.openstack:1be26c0b-03f2-4d2d-ae87-c02d7f33c123".into()),
            api_url: Some("http://10.0.0.1:6385".into()),
            root_device: Some(RootDeviceHints::parse("model=Big%20Disk,size=%3E%3D100").unwrap()),
            boot_option: BootOption::Local,
            boot_mode: BootMode::Uefi,
            chap: true,
        }
    }

    #[test]
    fn the_conductor_writes_what_the_ramdisk_reads() {
        let line = full().to_string();
        assert_eq!(
            line,
            "deployment_id=1be26c0b-03f2-4d2d-ae87-c02d7f33c123 deployment_key=k3y-k3y-k3y \
             iscsi_target_iqn=iqn.2008-10.org.openstack:1be26c0b-03f2-4d2d-ae87-c02d7f33c123 \
             ironic_api_url=http://10.0.0.1:6385 boot_option=local boot_mode=uefi \
             root_device=model=Big%20Disk,size=%3E%3D100 iscsi_chap=1"
        );
        assert_eq!(read(&line), (full(), vec![]));
        let plain = DeployParams {
            root_device: None,
            chap: false,
            boot_option: BootOption::Netboot,
            boot_mode: BootMode::Bios,
            ..full()
        };
        assert!(
            plain.to_string().ends_with(" boot_option=netboot boot_mode=bios"),
            "{plain}"
        );
        assert_eq!(read(&plain.to_string()), (plain, vec![]));
    }

    #[test]
    fn reading_leaves_other_words_to_the_caller() {
        let mut p = DeployParams::default();
        for (name, value) in [("ip", Some("dhcp")), ("BOOTIF", Some("01-aa")), ("troubleshoot", None)] {
            assert_eq!(p.set(name, value), Ok(false), "{name}");
        }
        assert_eq!(p, DeployParams::default());
        assert_eq!(
            p.missing(),
            ["deployment_id", "deployment_key", "iscsi_target_iqn", "ironic_api_url"]
        );
    }

    #[test]
    fn malformed_values_are_described() {
        for (word, needle) in [
            ("iscsi_target_iqn=target0", "not an iSCSI name"),
            ("iscsi_target_iqn=iqn.", "not an iSCSI name"),
            ("ironic_api_url=192.0.2.1:6385", "http:// or https://"),
            ("boot_option=disk", "local or netboot"),
            ("boot_mode=efi", "bios or uefi"),
            ("root_device=size=big", "size `big`"),
            ("root_device=colour=red", "unknown root device hint `colour`"),
            ("iscsi_chap=2", "taken as off"),
        ] {
            let (p, problems) = read(word);
            assert_eq!(problems.len(), 1, "{word}: {problems:?}");
            assert!(problems[0].contains(needle), "{word}: {problems:?}");
            assert_eq!((p.root_device, p.chap), (None, false), "{word}");
        }
        let (p, _) = read("iscsi_target_iqn=target0 ironic_api_url=nope");
        assert_eq!(
            (p.iqn.as_deref(), p.api_url.as_deref()),
            (Some("target0"), Some("nope")),
            "kept for the error callback"
        );
        let (p, _) = read("boot_option=LOCAL boot_mode=UEFI boot_option=disk");
        assert_eq!((p.boot_option, p.boot_mode), (BootOption::Local, BootMode::Uefi));
    }

    #[test]
    fn splits_quoted_values_and_bare_words() {
        let words = split_cmdline("a=\"b c\"  bare\n\"d=e f\" g==h i= \"\" =x");
        let want = [
            ("a", Some("b c")),
            ("bare", None),
            ("d", Some("e f")),
            ("g", Some("=h")),
            ("i", Some("")),
        ];
        let want: Vec<_> = want.iter().map(|(n, v)| (n.to_string(), v.map(String::from))).collect();
        assert_eq!(words, want);
    }

    #[test]
    fn flags() {
        for on in [None, Some("1"), Some("yes"), Some("TRUE"), Some(" on ")] {
            assert_eq!(flag(on), Ok(true), "{on:?}");
        }
        for off in [Some(""), Some("0"), Some("no"), Some("false"), Some("OFF")] {
            assert_eq!(flag(off), Ok(false), "{off:?}");
        }
        assert!(flag(Some("maybe")).is_err());
    }

    proptest! {
        #[test]
        fn every_deploy_the_conductor_can_write_reads_back(
            id in "[0-9a-f-]{1,36}",
            key in "[!-~&&[^\"]]{1,40}",
            iqn in "(iqn\\.|eui\\.|naa\\.)[a-z0-9.:-]{1,30}",
            api_url in "https?://[a-z0-9.:/-]{1,30}",
            hints in proptest::option::of("(size=%3E%3D[1-9][0-9]{0,3}|serial=[A-Za-z0-9]{1,12}(%2C1)?|name=/dev/[a-z]{3})"),
            boot_option in proptest::sample::select(&BootOption::ALL[..]),
            boot_mode in proptest::sample::select(&BootMode::ALL[..]),
            chap: bool,
        ) {
            let written = DeployParams {
                deployment_id: Some(id),
                deployment_key: Some(key),
                iqn: Some(iqn),
                api_url: Some(api_url),
                root_device: hints.map(|h| RootDeviceHints::parse(&h)).transpose().unwrap(),
                boot_option,
                boot_mode,
                chap,
            };
            prop_assert_eq!(read(&written.to_string()), (written, vec![]));
        }
    }
}
