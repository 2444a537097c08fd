//! Ironic's root device hints, so the ramdisk picks the disk the operator meant.
//!
//! On a node with several disks the kernel's naming order is not stable, so Ironic lets the
//! operator describe the root disk (`size`, `serial`, `wwn`, ...) and the conductor writes those
//! hints on the kernel line as `root_device=k=v,k=v`, values percent-encoded because a PXE config
//! cannot hold spaces. The legacy bash ramdisk matched them by exact string; ironic-lib (and later
//! ironic-python-agent) added oslo's operators (`>= 100`, `<in> foo`, `<or> a <or> b`). We accept
//! both, with ironic-lib's meaning, so a hint copied from inspection data selects the same disk.
//! Unlike the legacy script we also honour `name`, which it silently ignored.
//!
//! The conductor checks an operator's hints with [`RootDeviceHints::parse`] when it reads its nodes
//! file, and the ramdisk parses them again from its kernel line with the same function: hints one
//! side accepts are hints the other can match.

use std::fmt;
use std::path::PathBuf;

/// Parsed `root_device` hints. String hints keep the decoded, trimmed expression as written
/// (operator included); it is checked by [`RootDeviceHints::parse`] and read again when matching.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootDeviceHints {
    pub name: Option<String>,
    pub size_gib: Option<SizeHint>,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub wwn_with_extension: Option<String>,
    pub wwn_vendor_extension: Option<String>,
}

/// A size in whole GiB (device bytes / 2^30, rounded down) with Ironic's numeric operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeHint {
    Eq(u64),
    Ge(u64),
    Le(u64),
    Gt(u64),
    Lt(u64),
    Ne(u64),
}

/// What a block device is: Ironic never installs on loop, RAM or optical devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Disk,
    Loop,
    Ram,
    CdRom,
    Other,
}

/// One block device as the matcher sees it; unknown facts are `None` and never match a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Kernel name as in `/sys/block` (`sda`, `nvme0n1`, `cciss!c0d0`).
    pub name: String,
    /// The device node.
    pub path: PathBuf,
    pub size_bytes: u64,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub wwn_with_extension: Option<String>,
    pub wwn_vendor_extension: Option<String>,
    pub kind: DeviceKind,
}

const KEYS: &str = "size, model, vendor, serial, wwn, wwn_with_extension, wwn_vendor_extension, name";

/// Why a `root_device` value was refused; the deploy should fail rather than guess a disk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HintError {
    #[error("root_device is empty; give at least one hint such as size=100 or serial=...")]
    NoHints,
    #[error("root device hint `{item}` is not of the form key=value")]
    NotKeyValue { item: String },
    #[error("unknown root device hint `{key}` (known: {KEYS})")]
    UnknownKey { key: String },
    #[error("root device hint `{key}` is given twice")]
    Duplicate { key: String },
    #[error("root device hint `{key}` has an empty value")]
    Empty { key: String },
    #[error(
        "root device hint size `{value}` is not a positive whole number of GiB (optionally after ==, !=, >=, <=, >, <)"
    )]
    BadSize { value: String },
    #[error(
        "root device hint `{key}` cannot use operator `{op}`; text hints take s==, s!=, s<, s<=, s>, s>=, <in> or <or>"
    )]
    BadOperator { key: String, op: String },
    #[error("root device hint `{key}` has bad percent-encoding in `{value}` (need %XX hex escapes of UTF-8)")]
    BadPercentEncoding { key: String, value: String },
}

impl RootDeviceHints {
    /// Parses `k=v,k=v` as the conductor writes it on the kernel line.
    pub fn parse(value: &str) -> Result<Self, HintError> {
        let mut hints = Self::default();
        let mut seen = false;
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            seen = true;
            let (key, raw) = item
                .split_once('=')
                .ok_or_else(|| HintError::NotKeyValue { item: item.into() })?;
            let key = key.trim();
            if key != "size" && hints.text_slot(key).is_none() {
                return Err(HintError::UnknownKey { key: key.into() });
            }
            let decoded = percent_decode(raw).ok_or_else(|| HintError::BadPercentEncoding {
                key: key.into(),
                value: raw.into(),
            })?;
            let text = decoded.trim();
            if text.is_empty() {
                return Err(HintError::Empty { key: key.into() });
            }
            let duplicate = match hints.text_slot(key) {
                Some(slot) => {
                    StrExpr::parse(key, text)?;
                    slot.replace(text.to_owned()).is_some()
                }
                None => hints.size_gib.replace(SizeHint::parse(text)?).is_some(),
            };
            if duplicate {
                return Err(HintError::Duplicate { key: key.into() });
            }
        }
        if seen { Ok(hints) } else { Err(HintError::NoHints) }
    }

    fn text_slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "name" => &mut self.name,
            "model" => &mut self.model,
            "vendor" => &mut self.vendor,
            "serial" => &mut self.serial,
            "wwn" => &mut self.wwn,
            "wwn_with_extension" => &mut self.wwn_with_extension,
            "wwn_vendor_extension" => &mut self.wwn_vendor_extension,
            _ => return None,
        })
    }

    /// True when every given hint holds for `dev` (no hints: any device).
    pub fn matches(&self, dev: &DeviceFacts) -> bool {
        let strings = [
            (&self.model, &dev.model),
            (&self.vendor, &dev.vendor),
            (&self.serial, &dev.serial),
            (&self.wwn, &dev.wwn),
            (&self.wwn_with_extension, &dev.wwn_with_extension),
            (&self.wwn_vendor_extension, &dev.wwn_vendor_extension),
        ];
        self.size_gib.is_none_or(|s| s.holds(dev.size_bytes >> 30))
            && strings
                .iter()
                .all(|(hint, fact)| hint.as_deref().is_none_or(|h| matches_text(h, fact.as_deref())))
            && self.name.as_deref().is_none_or(|h| matches_name(h, dev))
    }

    /// The first device, in the order given, that may hold a root file system and matches.
    pub fn select<'a>(&self, devices: &'a [DeviceFacts]) -> Option<&'a DeviceFacts> {
        devices
            .iter()
            .filter(|d| !matches!(d.kind, DeviceKind::Loop | DeviceKind::Ram | DeviceKind::CdRom))
            .find(|d| self.matches(d))
    }
}

/// The hints in their kernel-line form (not percent-encoded), for messages.
impl fmt::Display for RootDeviceHints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = self.size_gib.map(|s| s.to_string());
        let all = [
            ("name", &self.name),
            ("size", &size),
            ("model", &self.model),
            ("vendor", &self.vendor),
            ("serial", &self.serial),
            ("wwn", &self.wwn),
            ("wwn_with_extension", &self.wwn_with_extension),
            ("wwn_vendor_extension", &self.wwn_vendor_extension),
        ];
        let mut sep = "";
        for (key, value) in all.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))) {
            write!(f, "{sep}{key}={value}")?;
            sep = ",";
        }
        Ok(())
    }
}

impl SizeHint {
    /// Ironic's numeric operators; its legacy `=` means `>=` (oslo `specs_matcher`).
    fn parse(text: &str) -> Result<Self, HintError> {
        type Make = fn(u64) -> SizeHint;
        const OPS: [(&str, Make); 7] = [
            (">=", SizeHint::Ge),
            ("<=", SizeHint::Le),
            ("==", SizeHint::Eq),
            ("!=", SizeHint::Ne),
            (">", SizeHint::Gt),
            ("<", SizeHint::Lt),
            ("=", SizeHint::Ge),
        ];
        let (make, number) = OPS
            .iter()
            .find_map(|(op, make)| text.strip_prefix(op).map(|rest| (*make, rest)))
            .unwrap_or((SizeHint::Eq, text));
        match number.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(make(n)),
            _ => Err(HintError::BadSize { value: text.into() }),
        }
    }

    fn holds(self, gib: u64) -> bool {
        match self {
            Self::Eq(n) => gib == n,
            Self::Ge(n) => gib >= n,
            Self::Le(n) => gib <= n,
            Self::Gt(n) => gib > n,
            Self::Lt(n) => gib < n,
            Self::Ne(n) => gib != n,
        }
    }
}

impl fmt::Display for SizeHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eq(n) => write!(f, "{n}"),
            Self::Ge(n) => write!(f, ">={n}"),
            Self::Le(n) => write!(f, "<={n}"),
            Self::Gt(n) => write!(f, ">{n}"),
            Self::Lt(n) => write!(f, "<{n}"),
            Self::Ne(n) => write!(f, "!={n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Or,
}

/// A string hint: operator and lowercased values (ironic-lib compares lowercased text).
#[derive(Debug)]
struct StrExpr {
    op: StrOp,
    values: Vec<String>,
}

impl StrExpr {
    fn parse(key: &str, text: &str) -> Result<Self, HintError> {
        const OPS: [(&str, StrOp); 8] = [
            ("<or>", StrOp::Or),
            ("<in>", StrOp::In),
            ("s==", StrOp::Eq),
            ("s!=", StrOp::Ne),
            ("s<=", StrOp::Le),
            ("s<", StrOp::Lt),
            ("s>=", StrOp::Ge),
            ("s>", StrOp::Gt),
        ];
        const NOT_FOR_TEXT: [&str; 9] = ["<all-in>", "<range-in>", "==", "!=", ">=", "<=", ">", "<", "="];
        let text = text.trim().to_lowercase();
        let (op, rest) = OPS
            .iter()
            .find_map(|(name, op)| text.strip_prefix(name).map(|rest| (*op, rest)))
            .unwrap_or((StrOp::Eq, text.as_str()));
        let unprefixed = rest.len() == text.len();
        if let Some(bad) = NOT_FOR_TEXT.iter().find(|bad| unprefixed && text.starts_with(*bad)) {
            return Err(HintError::BadOperator {
                key: key.into(),
                op: (*bad).into(),
            });
        }
        let values: Vec<String> = match op {
            StrOp::Or => rest
                .split("<or>")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(String::from)
                .collect(),
            _ => Some(rest.trim())
                .filter(|v| !v.is_empty())
                .map(String::from)
                .into_iter()
                .collect(),
        };
        if values.is_empty() {
            return Err(HintError::Empty { key: key.into() });
        }
        Ok(Self { op, values })
    }

    /// Whether the expression holds for a device value known under any of `candidates`
    /// (for `s!=`: for none of them).
    fn holds(&self, candidates: &[String]) -> bool {
        let Some(v) = self.values.first().map(String::as_str) else {
            return false;
        };
        let one = |c: &str| match self.op {
            StrOp::Eq | StrOp::Ne => c == v,
            StrOp::Lt => c < v,
            StrOp::Le => c <= v,
            StrOp::Gt => c > v,
            StrOp::Ge => c >= v,
            StrOp::In => c.contains(v),
            StrOp::Or => self.values.iter().any(|x| x == c),
        };
        let any = candidates.iter().any(|c| one(c));
        if self.op == StrOp::Ne { !any } else { any }
    }
}

fn matches_text(hint: &str, fact: Option<&str>) -> bool {
    let Some(fact) = fact.map(str::trim).filter(|f| !f.is_empty()) else {
        return false;
    };
    StrExpr::parse("", hint).is_ok_and(|e| e.holds(&[fact.to_lowercase()]))
}

/// `name` is `/dev/sda` or `sda` (Ironic reports `/dev/<kname>`), or a literal path such as
/// `/dev/disk/by-path/...` compared with the device node.
fn matches_name(hint: &str, dev: &DeviceFacts) -> bool {
    let Ok(mut expr) = StrExpr::parse("name", hint) else {
        return false;
    };
    if expr.op != StrOp::In {
        for v in &mut expr.values {
            if !v.starts_with('/') {
                *v = format!("/dev/{v}");
            }
        }
    }
    let node = format!("/dev/{}", dev.name.replace('!', "/")).to_lowercase();
    expr.holds(&[node, dev.path.to_string_lossy().to_lowercase()])
}

/// Decodes `%XX` escapes; `+` stays a `+` (Python's `quote`, not form encoding).
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.bytes().all(|h| h.is_ascii_hexdigit()))?,
            );
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, size_bytes: u64, kind: DeviceKind) -> DeviceFacts {
        DeviceFacts {
            name: name.into(),
            path: PathBuf::from("/dev").join(name.replace('!', "/")),
            size_bytes,
            model: None,
            vendor: None,
            serial: None,
            wwn: None,
            wwn_with_extension: None,
            wwn_vendor_extension: None,
            kind,
        }
    }

    fn hints(text: &str) -> RootDeviceHints {
        RootDeviceHints::parse(text).unwrap()
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn parses_every_key_with_percent_decoding() {
        let h = hints(
            "model=Samsung%20SSD%20970,name=/dev/sda,serial=S4EW%2BX,size=100,vendor=%20ATA%20,\
             wwn=0x5000c500680510cb,wwn_vendor_extension=0x1b9a,wwn_with_extension=0x600605b0060547c0%2C1",
        );
        assert_eq!(h.model.as_deref(), Some("Samsung SSD 970"));
        assert_eq!(h.name.as_deref(), Some("/dev/sda"));
        assert_eq!(h.serial.as_deref(), Some("S4EW+X"));
        assert_eq!(h.size_gib, Some(SizeHint::Eq(100)));
        assert_eq!(h.vendor.as_deref(), Some("ATA"));
        assert_eq!(h.wwn.as_deref(), Some("0x5000c500680510cb"));
        assert_eq!(h.wwn_vendor_extension.as_deref(), Some("0x1b9a"));
        assert_eq!(h.wwn_with_extension.as_deref(), Some("0x600605b0060547c0,1"));
        assert_eq!(hints("serial=a+b").serial.as_deref(), Some("a+b"), "'+' is not a space");
        assert_eq!(hints("model=s%3D%3D%20x%20y").model.as_deref(), Some("s== x y"));
        assert!(
            h.to_string()
                .starts_with("name=/dev/sda,size=100,model=Samsung SSD 970,vendor=ATA,"),
            "{h}"
        );
    }

    #[test]
    fn parses_size_operators() {
        for (text, want) in [
            ("100", SizeHint::Eq(100)),
            ("== 100", SizeHint::Eq(100)),
            (">= 100", SizeHint::Ge(100)),
            ("<=200", SizeHint::Le(200)),
            ("!= 50", SizeHint::Ne(50)),
            ("> 10", SizeHint::Gt(10)),
            ("< 500", SizeHint::Lt(500)),
            ("= 7", SizeHint::Ge(7)),
        ] {
            let encoded = text.replace(' ', "%20").replace('=', "%3D");
            assert_eq!(hints(&format!("size={encoded}")).size_gib, Some(want), "{text}");
        }
    }

    #[test]
    fn refuses_bad_hints_with_clear_errors() {
        use HintError::*;
        let err = |text: &str| RootDeviceHints::parse(text).unwrap_err();
        assert_eq!((err(""), err(" , ")), (NoHints, NoHints));
        assert!(matches!(err("rotational=true"), UnknownKey { key } if key == "rotational"));
        assert!(
            matches!(err("foo=%zz"), UnknownKey { key } if key == "foo"),
            "the key is checked first"
        );
        assert!(
            err("rotational=true")
                .to_string()
                .contains("(known: size, model, vendor, serial, wwn,")
        );
        assert!(matches!(err("model"), NotKeyValue { item } if item == "model"));
        assert!(matches!(err("model=a,model=b"), Duplicate { key } if key == "model"));
        assert!(matches!(err("size=1,size=2"), Duplicate { key } if key == "size"));
        assert!(matches!(err("serial=%20"), Empty { key } if key == "serial"));
        assert!(matches!(err("serial=<or>%20<or>"), Empty { key } if key == "serial"));
        for bad in ["0", "-1", "abc", "1.5", "s%3D%3D%201", "10GiB", ">%3D", "<in>%201"] {
            assert!(matches!(err(&format!("size={bad}")), BadSize { .. }), "{bad}");
        }
        for bad in ["%G1", "%2", "abc%", "%ff%fe", "%+f"] {
            assert!(matches!(err(&format!("model={bad}")), BadPercentEncoding { value, .. } if value == bad));
        }
        assert!(matches!(err("model=%3E%3D%205"), BadOperator { key, op } if key == "model" && op == ">="));
        assert!(matches!(err("serial=<all-in>%20a"), BadOperator { op, .. } if op == "<all-in>"));
        assert!(err("serial=%3C%20a").to_string().contains("text hints take s==, s!=,"));
    }

    #[test]
    fn size_is_whole_gib_rounded_down() {
        let d = dev("sda", 100 * GIB + 512 * 1024 * 1024, DeviceKind::Disk);
        assert!(hints("size=100").matches(&d));
        assert!(!hints("size=101").matches(&d));
        assert!(hints("size=%3E%3D100").matches(&d));
        assert!(!hints("size=%3E100").matches(&d));
        assert!(hints("size=%3C101").matches(&d));
        assert!(!hints("size=%21%3D100").matches(&d));
        assert!(hints("size=%3C%3D100").matches(&dev("sdb", 100 * GIB - 1, DeviceKind::Disk)));
    }

    #[test]
    fn text_hints_are_trimmed_case_insensitive_and_take_operators() {
        let mut d = dev("sda", GIB, DeviceKind::Disk);
        d.model = Some("  Samsung SSD 970 EVO  ".into());
        d.vendor = Some("ATA".into());
        d.serial = Some("S4EWNX0N123456".into());
        d.wwn = Some("0x5000C500680510CB".into());
        assert!(hints("model=samsung%20ssd%20970%20evo,vendor=ata,serial=s4ewnx0n123456").matches(&d));
        assert!(hints("wwn=0x5000c500680510cb").matches(&d));
        assert!(!hints("model=samsung").matches(&d));
        assert!(hints("model=<in>%20SSD%20970").matches(&d));
        assert!(!hints("model=<in>%20intel").matches(&d));
        assert!(hints("vendor=<or>%20hp%20<or>%20ata").matches(&d));
        assert!(!hints("vendor=<or>%20hp%20<or>%20dell").matches(&d));
        assert!(hints("serial=s%21%3D%20other").matches(&d));
        assert!(!hints("serial=s%21%3D%20S4EWNX0N123456").matches(&d));
        assert!(hints("vendor=s%3D%3D%20ata").matches(&d));
        assert!(hints("vendor=s%3C%20b").matches(&d) && !hints("vendor=s%3E%20b").matches(&d));
    }

    #[test]
    fn unknown_facts_never_match() {
        let d = dev("sda", GIB, DeviceKind::Disk);
        assert!(!hints("serial=abc").matches(&d));
        assert!(
            !hints("serial=s%21%3D%20abc").matches(&d),
            "even s!= needs a known value"
        );
        let mut blank = d.clone();
        blank.wwn = Some("  ".into());
        assert!(!hints("wwn=<in>%20x").matches(&blank));
        assert!(RootDeviceHints::default().matches(&d), "no hints: any device");
        let forged = RootDeviceHints {
            model: Some("==".into()),
            ..Default::default()
        };
        assert!(!forged.matches(&d), "an expression that does not parse matches nothing");
    }

    #[test]
    fn name_matches_short_dev_and_literal_paths() {
        let sda = dev("sda", GIB, DeviceKind::Disk);
        assert!(hints("name=sda").matches(&sda));
        assert!(hints("name=/dev/sda").matches(&sda));
        assert!(!hints("name=sdb").matches(&sda));
        assert!(!hints("name=/dev/sda1").matches(&sda));
        let cciss = dev("cciss!c0d0", GIB, DeviceKind::Disk);
        assert!(hints("name=cciss/c0d0").matches(&cciss));
        assert!(hints("name=/dev/cciss/c0d0").matches(&cciss));
        let mut by_path = dev("sdc", GIB, DeviceKind::Disk);
        by_path.path = PathBuf::from("/dev/disk/by-path/pci-0000:00:1f.2-ata-1");
        assert!(hints("name=/dev/disk/by-path/pci-0000:00:1f.2-ata-1").matches(&by_path));
        assert!(hints("name=/dev/sdc").matches(&by_path));
        assert!(!hints("name=/dev/disk/by-path/pci-0000:00:1f.2-ata-2").matches(&by_path));
        assert!(hints("name=<in>%20nvme").matches(&dev("nvme0n1", GIB, DeviceKind::Disk)));
        assert!(!hints("name=s%21%3D%20sda").matches(&sda));
    }

    #[test]
    fn select_skips_loop_ram_cdrom_and_takes_the_first_match() {
        let devices = [
            dev("loop0", 100 * GIB, DeviceKind::Loop),
            dev("ram0", 100 * GIB, DeviceKind::Ram),
            dev("sr0", 100 * GIB, DeviceKind::CdRom),
            dev("sda", 50 * GIB, DeviceKind::Disk),
            dev("sdb", 100 * GIB, DeviceKind::Disk),
            dev("sdc", 100 * GIB, DeviceKind::Disk),
        ];
        assert_eq!(hints("size=100").select(&devices).map(|d| d.name.as_str()), Some("sdb"));
        assert_eq!(hints("name=loop0").select(&devices), None);
        assert_eq!(
            RootDeviceHints::default().select(&devices).map(|d| d.name.as_str()),
            Some("sda")
        );
        assert_eq!(hints("size=%3E1000").select(&devices), None);
    }
}
