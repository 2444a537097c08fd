//! The address the node reports in its callbacks.
//!
//! The conductor logs in to the iSCSI target at the `address` the ramdisk
//! sends, so it must be the node's address on the provisioning network. The
//! legacy script took the kernel's `ip=` client address, else the address of
//! the PXE boot interface (`BOOTIF`). When neither helps, the first usable
//! IPv4 address of an up interface is better than failing the deploy.

use nix::net::if_::InterfaceFlags;
use nix::sys::socket::SockaddrStorage;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the node has no address to report ({detail}); pass ip=<client_ip>:... on the kernel command line")]
    NoAddress { detail: String },
    #[error("cannot list the network interfaces: {0}")]
    Interfaces(#[from] nix::Error),
}

/// One address of one interface (or none: `getifaddrs` lists every interface).
#[derive(Debug, Clone, PartialEq, Eq)]
struct IfAddr {
    name: String,
    up: bool,
    loopback: bool,
    ip: Option<IpAddr>,
}

/// Choose the address to report: `client_ip` (from `ip=`), else the boot
/// interface's first IPv4 then routable IPv6 address, else the first IPv4
/// address of an up interface that is neither loopback nor link-local.
///
/// `bootif` is a MAC, `aa:bb:..` or PXE's `01-aa-bb-..`.
pub fn node_address(client_ip: Option<IpAddr>, bootif: Option<&str>, sys_class_net: &Path) -> Result<IpAddr, NetError> {
    if let Some(ip) = client_ip {
        return Ok(ip);
    }
    let boot_interface = bootif.and_then(|mac| interface_for_mac(sys_class_net, mac));
    let addrs: Vec<IfAddr> = nix::ifaddrs::getifaddrs()?
        .map(|a| IfAddr {
            up: a.flags.contains(InterfaceFlags::IFF_UP),
            loopback: a.flags.contains(InterfaceFlags::IFF_LOOPBACK),
            ip: a.address.as_ref().and_then(ip_of),
            name: a.interface_name,
        })
        .collect();
    choose(&addrs, bootif, boot_interface.as_deref())
}

/// The interface whose MAC is `mac` (any case, `:` or `-`, with or without
/// PXE's `01-` prefix), as `{sys_class_net}/<ifname>/address` says.
pub fn interface_for_mac(sys_class_net: &Path, mac: &str) -> Option<String> {
    let wanted = normalize_mac(mac)?;
    let mut names: Vec<String> = std::fs::read_dir(sys_class_net)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().find(|name| {
        std::fs::read_to_string(sys_class_net.join(name).join("address"))
            .ok()
            .and_then(|text| normalize_mac(&text))
            .is_some_and(|found| found == wanted)
    })
}

/// `aa:bb:..` in lower case, or None if `text` is no hardware address.
fn normalize_mac(text: &str) -> Option<String> {
    let mut groups: Vec<String> = text
        .trim()
        .split([':', '-'])
        .map(|g| (!g.is_empty() && g.len() <= 2 && g.bytes().all(|b| b.is_ascii_hexdigit())).then(|| g.to_lowercase()))
        .map(|g| g.map(|g| format!("{g:0>2}")))
        .collect::<Option<_>>()?;
    // PXE's BOOTIF is `01-` (ARP type Ethernet) followed by the MAC.
    if groups.len() == 7 && groups.first().is_some_and(|g| g == "01") {
        groups.remove(0);
    }
    Some(groups.join(":"))
}

fn ip_of(addr: &SockaddrStorage) -> Option<IpAddr> {
    match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
        (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
        _ => None,
    }
}

fn is_link_local_v6(ip: &Ipv6Addr) -> bool {
    ip.segments().first().is_some_and(|s| s & 0xffc0 == 0xfe80)
}

fn choose(addrs: &[IfAddr], bootif: Option<&str>, boot_interface: Option<&str>) -> Result<IpAddr, NetError> {
    if let Some(name) = boot_interface {
        let ips = || addrs.iter().filter(|a| a.name == name).filter_map(|a| a.ip);
        // Named explicitly, even loopback counts: the operator asked for it.
        let v4 = ips().find(IpAddr::is_ipv4);
        let v6 = || ips().find(|ip| matches!(ip, IpAddr::V6(v6) if !is_link_local_v6(v6) && !v6.is_unspecified()));
        if let Some(ip) = v4.or_else(v6) {
            return Ok(ip);
        }
    }
    let usable = |a: &IfAddr| match a.ip {
        Some(IpAddr::V4(v4)) if a.up && !a.loopback => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        _ => false,
    };
    addrs
        .iter()
        .find(|a| usable(a))
        .and_then(|a| a.ip)
        .ok_or_else(|| NetError::NoAddress {
            detail: describe(addrs, bootif, boot_interface),
        })
}

/// What was looked at, for the error message.
fn describe(addrs: &[IfAddr], bootif: Option<&str>, boot_interface: Option<&str>) -> String {
    let boot = match (bootif, boot_interface) {
        (Some(mac), None) => format!("BOOTIF {mac} matches no interface; "),
        (_, Some(name)) => format!("the boot interface {name} has no usable address; "),
        (None, None) => String::new(),
    };
    let mut names: Vec<&str> = Vec::new();
    for a in addrs {
        if !names.contains(&a.name.as_str()) {
            names.push(&a.name);
        }
    }
    let seen: Vec<String> = names
        .into_iter()
        .map(|name| {
            let mine = || addrs.iter().filter(move |a| a.name == name);
            let state = if mine().any(|a| a.up) { "up" } else { "down" };
            let ips: Vec<String> = mine().filter_map(|a| a.ip.map(|ip| ip.to_string())).collect();
            if ips.is_empty() {
                format!("{name} ({state})")
            } else {
                format!("{name} ({state}: {})", ips.join(", "))
            }
        })
        .collect();
    let seen = if seen.is_empty() {
        "none".to_owned()
    } else {
        seen.join(", ")
    };
    format!("{boot}interfaces seen: {seen}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sys() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, mac) in [
            ("lo", "00:00:00:00:00:00\n"),
            ("eth0", "52:54:00:AB:cd:01\n"),
            ("tunl0", "00:00:00:00\n"),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("address"), mac).unwrap();
        }
        std::fs::create_dir(dir.path().join("noaddr")).unwrap();
        std::fs::write(dir.path().join("bonding_masters"), "").unwrap();
        dir
    }

    #[test]
    fn interfaces_are_found_by_mac() {
        let sys = fake_sys();
        let find = |mac| interface_for_mac(sys.path(), mac);
        for mac in [
            "52:54:00:ab:cd:01",
            "52:54:00:AB:CD:01",
            "01-52-54-00-ab-cd-01",
            "52-54-00-ab-cd-01",
        ] {
            assert_eq!(find(mac).as_deref(), Some("eth0"), "{mac}");
        }
        assert_eq!(find("00:00:00:00:00:00").as_deref(), Some("lo"));
        assert_eq!(find("00:00:00:00").as_deref(), Some("tunl0"));
        for mac in [
            "52:54:00:ab:cd:02",
            "",
            "zz:54:00:ab:cd:01",
            "52:54:00:ab:cd:01:99",
            "52::54",
        ] {
            assert_eq!(find(mac), None, "{mac}");
        }
        assert_eq!(
            interface_for_mac(&sys.path().join("missing"), "52:54:00:ab:cd:01"),
            None
        );
    }

    #[test]
    fn client_ip_wins() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(
            node_address(Some(ip), Some("52:54:00:ab:cd:01"), Path::new("/nonexistent")).unwrap(),
            ip
        );
    }

    #[test]
    fn bootif_naming_loopback_gives_its_address() {
        let lo = node_address(None, Some("00:00:00:00:00:00"), Path::new("/sys/class/net")).unwrap();
        assert_eq!(lo, IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn fallback_on_this_machine() {
        match node_address(None, None, Path::new("/sys/class/net")) {
            Ok(IpAddr::V4(v4)) => assert!(!v4.is_loopback() && !v4.is_link_local(), "{v4}"),
            Ok(other) => panic!("the fallback only takes IPv4: {other}"),
            Err(NetError::NoAddress { detail }) => assert!(detail.contains("lo ("), "{detail}"),
            Err(e) => panic!("{e}"),
        }
    }

    fn addr(name: &str, up: bool, ip: Option<&str>) -> IfAddr {
        IfAddr {
            name: name.into(),
            up,
            loopback: name == "lo",
            ip: ip.map(|ip| ip.parse().unwrap()),
        }
    }

    #[test]
    fn choice_order() {
        let addrs = [
            addr("lo", true, Some("127.0.0.1")),
            addr("eth0", true, None),
            addr("eth0", true, Some("fe80::1")),
            addr("eth0", true, Some("2001:db8::5")),
            addr("eth0", true, Some("192.0.2.5")),
            addr("eth1", false, Some("198.51.100.1")),
            addr("eth2", true, Some("169.254.1.1")),
            addr("eth3", true, Some("203.0.113.3")),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            choose(&addrs, Some("m"), Some("eth0")).unwrap(),
            ip("192.0.2.5"),
            "IPv4 before IPv6"
        );
        assert_eq!(
            choose(&addrs[..4], Some("m"), Some("eth0")).unwrap(),
            ip("2001:db8::5"),
            "not link-local"
        );
        assert_eq!(choose(&addrs, Some("m"), Some("lo")).unwrap(), ip("127.0.0.1"));
        assert_eq!(choose(&addrs, None, None).unwrap(), ip("192.0.2.5"));
        assert_eq!(
            choose(&addrs[5..], Some("m"), Some("eth9")).unwrap(),
            ip("203.0.113.3"),
            "down, link-local"
        );
        let unusable = [addrs[0].clone(), addrs[2].clone(), addrs[5].clone(), addrs[6].clone()];
        let Err(NetError::NoAddress { detail }) = choose(&unusable, Some("aa:bb"), None) else {
            panic!()
        };
        let seen = "interfaces seen: lo (up: 127.0.0.1), eth0 (up: fe80::1), eth1 (down: 198.51.100.1), eth2 (up: 169.254.1.1)";
        assert_eq!(detail, format!("BOOTIF aa:bb matches no interface; {seen}"));
        let Err(NetError::NoAddress { detail }) = choose(&unusable, Some("m"), Some("eth0")) else {
            panic!()
        };
        assert_eq!(detail, format!("the boot interface eth0 has no usable address; {seen}"));
        let Err(NetError::NoAddress { detail }) = choose(&[], None, None) else {
            panic!()
        };
        assert_eq!(detail, "interfaces seen: none");
    }
}
