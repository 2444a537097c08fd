//! Any text as the deploy ramdisk's kernel command line, as `parameters.txt`
//! from virtual media, and as a `root_device` hint: no panic; every value
//! the parser keeps came from the text; hints that parse can be matched.

#![no_main]

use libfuzzer_sys::fuzz_target;
use deploy_contract::hints::{DeviceFacts, DeviceKind, RootDeviceHints};
use std::path::PathBuf;
use deploy_contract::kernel::split_cmdline;
use target_agent::deploy::params::Params;

fn device(name: &str, size_bytes: u64, text: &str) -> DeviceFacts {
    DeviceFacts {
        name: name.into(),
        path: PathBuf::from("/dev").join(name),
        size_bytes,
        model: Some(text.into()),
        vendor: Some(text.to_uppercase()),
        serial: Some(text.chars().rev().collect()),
        wwn: Some(format!("0x{:x}", text.len())),
        wwn_with_extension: None,
        wwn_vendor_extension: Some(text.into()),
        kind: DeviceKind::Disk,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (name, value) in split_cmdline(&text) {
        assert!(!name.is_empty() || value.is_some());
        assert!(!name.contains(char::is_whitespace) || text.contains('"'));
    }
    let mut params = Params::parse(&text);
    let _ = params.missing();
    if let Some(id) = &params.deploy.deployment_id {
        assert!(text.contains(id.as_str()) || text.contains('"'));
    }
    params.merge_vmedia(&text);

    let hints = RootDeviceHints::parse(&text);
    if let Ok(hints) = hints {
        let devices = [device("sda", 8 << 30, &text), device("nvme0n1", 1 << 40, "disk"), device("loop0", 0, "")];
        let chosen = hints.select(&devices);
        if let Some(dev) = chosen {
            assert!(hints.matches(dev));
        }
    }
});
