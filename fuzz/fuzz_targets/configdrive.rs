//! Any bytes as a config drive (base64 of gzip of an ISO 9660 or VFAT image,
//! as Ironic sends it): no panic, no decompression past the cap, and a
//! drive that decodes is within the cap.

#![no_main]

use conductor_writer::deploy::configdrive;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(drive) = configdrive::decode(data, "fuzz") {
        assert!(drive.image.len() as u64 <= configdrive::MAX_CONFIG_DRIVE_BYTES);
        assert!(drive.size_mib() >= 1);
    }
});
