//! The kernel command line the conductor wrote for the legacy Ironic bash deploy ramdisk.
//!
//! We are a drop-in for that ramdisk, so we read the same `name=value` words with the same
//! meaning (the table in the README's `target-agent deploy` section). The words the conductor
//! writes for a deploy are read by [`DeployParams`], from the crate both programs share; this
//! module adds what the node's firmware, PXE and the operator put there (`ip`, `BOOTIF`, `disk`,
//! ...). Parsing never fails: a bad value is described in [`Params::problems`] (and left out,
//! except the IQN and API URL, which are kept for the error callback), so the deploy can still
//! tell the API what was wrong instead of rebooting silently, as the bash script often did.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use deploy_contract::kernel::{self, DeployParams, flag, split_cmdline};

/// The legacy script's candidates when `disk=` is absent, in its order.
pub const DEFAULT_DISKS: [&str; 4] = ["cciss/c0d0", "sda", "hda", "vda"];

/// `ip=client:server:gateway:netmask:hostname:device:autoconf` (the kernel's `nfsroot.txt`
/// syntax); every field may be empty, and `ip=dhcp` leaves them all `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpConfig {
    pub client: Option<IpAddr>,
    pub boot_server: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub netmask: Option<IpAddr>,
    pub hostname: Option<String>,
    pub device: Option<String>,
}

/// Everything the ramdisk was told; absent parameters keep the legacy defaults.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// What the conductor wrote for this deploy.
    pub deploy: DeployParams,
    /// From `disk=a,b,c`, else [`DEFAULT_DISKS`] (filled by [`Params::parse`], not `default()`).
    pub disks: Vec<String>,
    pub ip: Option<IpConfig>,
    /// The PXE MAC, `aa:bb:cc:dd:ee:ff`, lowercase.
    pub bootif: Option<String>,
    pub boot_server: Option<String>,
    pub troubleshoot: bool,
    /// `boot_method=vmedia`: the rest comes from `parameters.txt` on a virtual floppy.
    pub vmedia: bool,
    /// `ironic_api_insecure=1`: ours; an `https` API's certificate is not verified.
    pub insecure: bool,
    /// One line per malformed value, each starting with `name=`.
    pub problems: Vec<String>,
}

impl Params {
    /// Reads a command line; unknown words are ignored and the last occurrence of a name wins.
    pub fn parse(text: &str) -> Params {
        let mut params = Params {
            disks: DEFAULT_DISKS.iter().map(|d| d.to_string()).collect(),
            ..Params::default()
        };
        for (name, value) in split_cmdline(text) {
            params.apply(&name, value.as_deref());
        }
        params
    }

    /// Required parameters that are absent or empty, by their kernel-line names.
    pub fn missing(&self) -> Vec<&'static str> {
        self.deploy.missing()
    }

    /// `boot_method=vmedia`: Ironic put the parameters in `parameters.txt` on a virtual floppy
    /// (one `name=value` a line); they override the command line's.
    pub fn merge_vmedia(&mut self, parameters_txt: &str) {
        for (name, value) in split_cmdline(parameters_txt) {
            self.apply(&name, value.as_deref());
        }
    }

    fn apply(&mut self, name: &str, value: Option<&str>) {
        let prefix = format!("{name}=");
        self.problems.retain(|p| !p.starts_with(&prefix));
        if let Err(why) = self.set(name, value) {
            self.problems
                .push(format!("{name}={value}: {why}", value = value.unwrap_or("")));
        }
    }

    fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), String> {
        if self.deploy.set(name, value)? {
            return Ok(());
        }
        let text = value.unwrap_or("").trim();
        match name {
            kernel::DISK => {
                let disks: Vec<String> = text
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(String::from)
                    .collect();
                if disks.is_empty() {
                    return Err(format!("no disk names; using {}", DEFAULT_DISKS.join(",")));
                }
                self.disks = disks;
            }
            kernel::IP => {
                self.ip = None;
                self.ip = Some(parse_ip(text)?);
            }
            kernel::BOOTIF => {
                self.bootif = None;
                self.bootif = Some(parse_bootif(text).ok_or("expected a MAC such as 01-aa-bb-cc-dd-ee-ff")?);
            }
            kernel::BOOT_SERVER => self.boot_server = Some(text.to_owned()).filter(|t| !t.is_empty()),
            kernel::TROUBLESHOOT => self.troubleshoot = flag(value)?,
            kernel::IRONIC_API_INSECURE => self.insecure = flag(value)?,
            kernel::BOOT_METHOD => self.vmedia = text.eq_ignore_ascii_case("vmedia"),
            _ => {}
        }
        Ok(())
    }
}

/// `01-aa-bb-cc-dd-ee-ff` (pxelinux: hardware type, then the MAC) to `aa:bb:cc:dd:ee:ff`.
fn parse_bootif(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split(['-', ':']).collect();
    let mac = match groups.len() {
        7 => groups.get(1..)?,
        6 => &groups[..],
        _ => return None,
    };
    let hex = |g: &&str| g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit());
    groups.iter().all(hex).then(|| mac.join(":").to_ascii_lowercase())
}

/// Autoconfiguration methods the kernel and dracut accept in place of a static address.
const AUTOCONF: [&str; 10] = [
    "dhcp", "on", "any", "bootp", "rarp", "both", "dhcp6", "auto6", "off", "none",
];

fn parse_ip(text: &str) -> Result<IpConfig, String> {
    if text.is_empty() || AUTOCONF.contains(&text.to_ascii_lowercase().as_str()) {
        return Ok(IpConfig::default());
    }
    let fields = split_ip_fields(text);
    let field = |i: usize| fields.get(i).map(|f| f.trim()).filter(|f| !f.is_empty());
    if let [device, method] = fields.as_slice() {
        // dracut's `ip=<interface>:dhcp`.
        if AUTOCONF.contains(&method.to_ascii_lowercase().as_str()) {
            let device = Some(device.trim().to_owned()).filter(|d| !d.is_empty());
            return Ok(IpConfig {
                device,
                ..IpConfig::default()
            });
        }
    }
    let addr = |i: usize, what: &str| -> Result<Option<IpAddr>, String> {
        let Some(f) = field(i) else { return Ok(None) };
        let bare = f.strip_prefix('[').and_then(|f| f.strip_suffix(']')).unwrap_or(f);
        bare.parse()
            .map(Some)
            .map_err(|_| format!("{what} `{f}` is not an IP address (IPv6 goes in brackets)"))
    };
    let client = addr(0, "client address")?;
    let netmask = match field(3).map(|f| (f, f.parse::<u32>())) {
        Some((_, Ok(prefix))) => Some(prefix_mask(prefix, client).ok_or(format!("netmask /{prefix} is too long"))?),
        _ => addr(3, "netmask")?,
    };
    Ok(IpConfig {
        client,
        boot_server: addr(1, "boot server")?,
        gateway: addr(2, "gateway")?,
        netmask,
        hostname: field(4).map(String::from),
        device: field(5).map(String::from),
    })
}

/// Splits at `:` outside `[...]`, so bracketed IPv6 addresses stay whole.
fn split_ip_fields(text: &str) -> Vec<&str> {
    let (mut fields, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                fields.push(text.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(text.get(start..).unwrap_or(""));
    fields
}

/// dracut also takes a prefix length as the netmask; the client's family decides its width.
fn prefix_mask(prefix: u32, client: Option<IpAddr>) -> Option<IpAddr> {
    match client {
        Some(IpAddr::V6(_)) if prefix <= 128 => {
            Some(Ipv6Addr::from(u128::MAX.checked_shl(128 - prefix).unwrap_or(0)).into())
        }
        Some(IpAddr::V6(_)) => None,
        _ if prefix <= 32 => Some(Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0)).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_contract::hints::SizeHint;
    use deploy_contract::kernel::{BootMode, BootOption};
    use proptest::prelude::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const LEGACY: &str = "BOOT_IMAGE=/deploy_kernel nofb nomodeset vga=normal console=ttyS0,115200n8 \
        deployment_id=1be26c0b-03f2-4d2e-ae87-c02d7f33c123 deployment_key=MD5VW0GTQMZ4Y3VYJ9NMCTC8UIW8DA8K \
        iscsi_target_iqn=iqn.2008-10.org.openstack:1be26c0b-03f2-4d2e-ae87-c02d7f33c123 \
        ironic_api_url=http://192.0.2.1:6385 disk=nvme0n1,sda troubleshoot boot_option=local boot_mode=uefi \
        ip=[fd00::10]:[fd00::1]:[fd00::fe]:64:node-1:eth0:none BOOTIF=01-52-54-00-AB-CD-EF \
        boot_server=192.0.2.1 root_device=model=QEMU%20HARDDISK,size=%3E%3D%2010 \
        coreos.config=\"http://x/y z\" boot_method=pxe iscsi_chap=yes\n";

    #[test]
    fn reads_a_full_legacy_command_line() {
        let p = Params::parse(LEGACY);
        assert_eq!(p.problems, Vec::<String>::new());
        assert!(p.missing().is_empty());
        assert_eq!(
            p.deploy.deployment_id.as_deref(),
            Some("1be26c0b-03f2-4d2e-ae87-c02d7f33c123")
        );
        assert_eq!(
            p.deploy.deployment_key.as_deref(),
            Some("MD5VW0GTQMZ4Y3VYJ9NMCTC8UIW8DA8K")
        );
        assert_eq!(
            p.deploy.iqn.as_deref(),
            Some("iqn.2008-10.org.openstack:1be26c0b-03f2-4d2e-ae87-c02d7f33c123")
        );
        assert_eq!(p.deploy.api_url.as_deref(), Some("http://192.0.2.1:6385"));
        assert_eq!(p.disks, ["nvme0n1", "sda"]);
        let hints = p.deploy.root_device.as_ref().unwrap();
        assert_eq!(
            (hints.model.as_deref(), hints.size_gib),
            (Some("QEMU HARDDISK"), Some(SizeHint::Ge(10)))
        );
        assert_eq!(
            (p.deploy.boot_option, p.deploy.boot_mode),
            (BootOption::Local, BootMode::Uefi)
        );
        let want = IpConfig {
            client: ip("fd00::10"),
            boot_server: ip("fd00::1"),
            gateway: ip("fd00::fe"),
            netmask: ip("ffff:ffff:ffff:ffff::"),
            hostname: Some("node-1".into()),
            device: Some("eth0".into()),
        };
        assert_eq!(p.ip, Some(want));
        assert_eq!(p.bootif.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(p.boot_server.as_deref(), Some("192.0.2.1"));
        assert!(p.troubleshoot && p.deploy.chap && !p.vmedia);
    }

    #[test]
    fn defaults_and_missing_required_parameters() {
        let p = Params::parse("quiet");
        assert_eq!(
            p.missing(),
            ["deployment_id", "deployment_key", "iscsi_target_iqn", "ironic_api_url"]
        );
        assert_eq!(p.disks, DEFAULT_DISKS);
        assert_eq!(
            (p.deploy.boot_option, p.deploy.boot_mode, p.troubleshoot, p.deploy.chap),
            (BootOption::Netboot, BootMode::Bios, false, false)
        );
        let p = Params::parse("deployment_id=x deployment_key= iscsi_target_iqn=iqn-1234 ironic_api_url");
        assert_eq!(p.missing(), ["deployment_key", "ironic_api_url"]);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(
            Params::parse("deployment_key=short").deploy.deployment_key.as_deref(),
            Some("short")
        );
    }

    #[test]
    fn reports_every_malformed_value() {
        for (word, needle) in [
            ("iscsi_target_iqn=target0", "not an iSCSI name"),
            ("iscsi_target_iqn=iqn.", "not an iSCSI name"),
            ("ironic_api_url=192.0.2.1:6385", "http:// or https://"),
            ("boot_option=disk", "local or netboot"),
            ("boot_mode=efi", "bios or uefi"),
            ("BOOTIF=01-aa-bb-cc", "MAC"),
            ("BOOTIF=01-aa-bb-cc-dd-ee-gg", "MAC"),
            (
                "ip=192.0.2.300::192.0.2.1:255.255.255.0",
                "client address `192.0.2.300`",
            ),
            ("ip=192.0.2.3:fd00::1", "boot server `fd00`"),
            ("ip=192.0.2.3:::33", "netmask /33"),
            ("ip=192.0.2.3:::255.255.0", "netmask `255.255.0`"),
            ("root_device=size=big", "size `big`"),
            ("root_device=colour=red", "unknown root device hint `colour`"),
            ("root_device=model=%zz", "percent-encoding"),
            ("troubleshoot=maybe", "taken as off"),
            ("iscsi_chap=2", "taken as off"),
            ("disk=,", "no disk names"),
        ] {
            let p = Params::parse(word);
            assert_eq!(p.problems.len(), 1, "{word}: {:?}", p.problems);
            assert!(
                p.problems[0].starts_with(&format!("{word}: ")),
                "{word}: {:?}",
                p.problems
            );
            assert!(p.problems[0].contains(needle), "{word}: {:?}", p.problems);
        }
        let p = Params::parse("boot_option=disk boot_mode=efi ip=x BOOTIF=y root_device=z disk=, iscsi_chap=2");
        assert_eq!(
            (p.deploy.boot_option, p.deploy.boot_mode, &p.ip, &p.bootif),
            (BootOption::Netboot, BootMode::Bios, &None, &None)
        );
        assert_eq!(
            (p.deploy.root_device, p.disks, p.deploy.chap),
            (None, DEFAULT_DISKS.map(String::from).to_vec(), false)
        );
        assert_eq!(p.problems.len(), 7);
    }

    #[test]
    fn ip_forms() {
        for auto in ["dhcp", "on", "any", "DHCP", ""] {
            assert_eq!(
                Params::parse(&format!("ip={auto}")).ip,
                Some(IpConfig::default()),
                "{auto}"
            );
        }
        let v4 = Params::parse("ip=192.0.2.10::192.0.2.1:255.255.255.0:::off:192.0.2.53")
            .ip
            .unwrap();
        assert_eq!(
            (v4.client, v4.boot_server, v4.gateway),
            (ip("192.0.2.10"), None, ip("192.0.2.1"))
        );
        assert_eq!((v4.netmask, v4.hostname, v4.device), (ip("255.255.255.0"), None, None));
        assert_eq!(
            Params::parse("ip=192.0.2.10:::24").ip.unwrap().netmask,
            ip("255.255.255.0")
        );
        let eth1 = IpConfig {
            device: Some("eth1".into()),
            ..IpConfig::default()
        };
        assert_eq!(Params::parse("ip=eth1:dhcp").ip, Some(eth1));
    }

    #[test]
    fn last_occurrence_wins_and_clears_earlier_problems() {
        let p = Params::parse(
            "boot_mode=uefi boot_mode=bios ironic_api_url=nope ironic_api_url=https://api disk=sda disk=vdb",
        );
        assert_eq!(p.deploy.boot_mode, BootMode::Bios);
        assert_eq!(p.deploy.api_url.as_deref(), Some("https://api"));
        assert_eq!(p.disks, ["vdb"]);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert!(!Params::parse("troubleshoot troubleshoot=0").troubleshoot);
        assert!(Params::parse("troubleshoot=0 troubleshoot=TRUE").troubleshoot);
        assert!(Params::parse("iscsi_chap").deploy.chap && Params::parse("iscsi_chap=on").deploy.chap);
        assert!(Params::parse("ironic_api_insecure=1").insecure && !Params::parse("iscsi_chap=1").insecure);
    }

    #[test]
    fn vmedia_parameters_override_the_command_line() {
        let mut p = Params::parse("boot_method=vmedia deployment_id=old ironic_api_url=bad boot_option=local");
        assert!(p.vmedia);
        assert_eq!(p.problems.len(), 1);
        p.merge_vmedia(
            "deployment_id=new\ndeployment_key=KEY\niscsi_target_iqn=iqn.2008-10.org.openstack:n\n\
             ironic_api_url=http://192.0.2.1:6385 boot_option=netboot\n",
        );
        assert_eq!(p.deploy.deployment_id.as_deref(), Some("new"));
        assert_eq!(p.deploy.api_url.as_deref(), Some("http://192.0.2.1:6385"));
        assert_eq!(p.deploy.boot_option, BootOption::Netboot);
        assert!(p.missing().is_empty() && p.problems.is_empty(), "{:?}", p.problems);
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC*", words in "[a-zA-Z_=\" ,:%\\[\\]0-9.\n-]{0,120}") {
            let mut p = Params::parse(&text);
            p.merge_vmedia(&words);
            let _ = (Params::parse(&words).missing(), p.missing());
            for (name, _) in split_cmdline(&text) {
                prop_assert!(!name.is_empty());
            }
        }
    }
}
