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

impl RootDeviceHints {
    /// The hints as the conductor writes them on the kernel line, as Ironic wrote them: keys
    /// sorted, values percent-encoded (Python's `quote`). [`RootDeviceHints::parse`] reads back
    /// exactly these hints, whatever the text they were first read from.
    #[must_use]
    pub fn to_kernel_value(&self) -> String {
        let size = self.size_gib.map(|s| s.to_string());
        let sorted = [
            ("model", &self.model),
            ("name", &self.name),
            ("serial", &self.serial),
            ("size", &size),
            ("vendor", &self.vendor),
            ("wwn", &self.wwn),
            ("wwn_vendor_extension", &self.wwn_vendor_extension),
            ("wwn_with_extension", &self.wwn_with_extension),
        ];
        let items: Vec<String> = sorted
            .iter()
            .filter_map(|(key, value)| value.as_deref().map(|v| format!("{key}={}", percent_encode(v))))
            .collect();
        items.join(",")
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

/// `%XX` for every byte but letters, digits, `-._~` and `/`, as Python's `quote` leaves them: no
/// space, comma or `=` is left to split the kernel line or the hints.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
mod tests;
