//! Any bytes as a CDB and as sense data: no panic; a CDB that parses builds
//! back to bytes that parse to the same command; sense that parses emits
//! fixed and descriptor forms that parse again.

#![no_main]

use iscsi_proto::scsi::{Command, Sense};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = Command::parse(data) {
        let cdb = command.build();
        let again = Command::parse(cdb.as_bytes()).expect("a built CDB parses");
        assert_eq!(again.build().as_bytes(), cdb.as_bytes());
    }
    if let Ok(sense) = Sense::parse(data) {
        let mut buf = [0u8; 260];
        let n = sense.emit_fixed(&mut buf);
        let fixed = Sense::parse(&buf[..n]).expect("emitted fixed sense parses");
        assert_eq!((fixed.key, fixed.additional_sense), (sense.key, sense.additional_sense));
        let n = sense.emit_descriptor(&mut buf);
        let desc = Sense::parse(&buf[..n]).expect("emitted descriptor sense parses");
        assert_eq!(desc, sense);
    }
});
