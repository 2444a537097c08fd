//! The hints' tests: parsing, matching, selecting, and the kernel-line form.

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
fn kernel_form_is_sorted_and_percent_encoded_as_ironic_wrote_it() {
    let h = hints("size=%3E%3D%20100,serial=S4EW%2BX,model=Big%20Disk,name=/dev/sda,vendor=<in>%20ata");
    assert_eq!(
        h.to_kernel_value(),
        "model=Big%20Disk,name=/dev/sda,serial=S4EW%2BX,size=%3E%3D100,vendor=%3Cin%3E%20ata"
    );
    assert_eq!(RootDeviceHints::parse(&h.to_kernel_value()), Ok(h));
    assert_eq!(hints("serial=S1").to_kernel_value(), "serial=S1");
    assert_eq!(hints("size=100").to_kernel_value(), "size=100");
    let text = hints("wwn_with_extension=0x6006%2C1,wwn_vendor_extension=0x1b,wwn=0x5");
    assert_eq!(
        text.to_kernel_value(),
        "wwn=0x5,wwn_vendor_extension=0x1b,wwn_with_extension=0x6006%2C1"
    );
}

proptest::proptest! {
    /// Whatever text the hints were read from, their kernel form reads back as the same hints.
    #[test]
    fn kernel_form_reads_back_the_same_hints(
        items in proptest::collection::vec(
            (
                proptest::sample::select(&["size", "model", "vendor", "serial", "wwn", "name"][..]),
                "(s==|s!=|<in>|<or>|%3E%3D|<|)[ a-zA-Z0-9%=<>/,._~+-]{0,16}",
            ),
            1..5,
        )
    ) {
        let text: Vec<String> = items.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Ok(h) = RootDeviceHints::parse(&text.join(",")) {
            let kernel = h.to_kernel_value();
            proptest::prop_assert!(kernel.bytes().all(|b| b.is_ascii_graphic()), "{}", kernel);
            proptest::prop_assert_eq!(RootDeviceHints::parse(&kernel), Ok(h));
        }
    }
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
