//! Checksums of image files, compared with coreutils.

use std::process::Command;

use super::super::{Checksum, SourceError, verify_checksum};
use super::pattern;

fn coreutils(program: &str, path: &std::path::Path) -> String {
    let out = Command::new(program).arg(path).output().expect("spawn");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

#[test]
fn sha256_and_md5_match_coreutils() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("image.qcow2");
    std::fs::write(&path, pattern(3 * 1024 * 1024 + 17, 5)).expect("write");
    for (program, algorithm) in [("sha256sum", "sha256"), ("md5sum", "md5")] {
        let text = format!("{algorithm}:{}", coreutils(program, &path));
        let checksum: Checksum = text.parse().expect("parse");
        assert_eq!(checksum.to_string(), text, "Display round-trips");
        verify_checksum(&path, &checksum).expect("matches");
        let upper: Checksum = text.to_uppercase().parse().expect("upper case parses");
        assert_eq!(upper, checksum);
    }
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    let sha_empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    verify_checksum(&empty, &sha_empty.parse().expect("parse")).expect("empty file");
}

#[test]
fn mismatch_shows_both_digests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("image.raw");
    std::fs::write(&path, b"hello").expect("write");
    let expected: Checksum = format!("md5:{}", "0".repeat(32)).parse().expect("parse");
    let err = verify_checksum(&path, &expected).expect_err("mismatch");
    let message = err.to_string();
    assert!(matches!(err, SourceError::ChecksumMismatch { .. }), "{message}");
    assert!(message.contains(&"0".repeat(32)), "{message}");
    assert!(
        message.contains("5d41402abc4b2a76b9719d911017c592"),
        "md5 of hello: {message}"
    );
    assert!(message.contains("image.raw"), "{message}");
    let missing = verify_checksum(&dir.path().join("gone"), &expected).expect_err("missing");
    assert!(matches!(missing, SourceError::NotFound { .. }), "{missing}");
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let cases = [
        ("sha256:abc", "expected 64 hex digits, got 3"),
        (&format!("md5:{}", "g".repeat(32)), "not a hex digit"),
        (&format!("sha1:{}", "0".repeat(40)), "unknown algorithm \"sha1\""),
        (&"0".repeat(32), "md5:<digest>"),
        (&"0".repeat(64), "sha256:<digest>"),
        ("", "no algorithm"),
        (&format!("md5:{}é", "0".repeat(30)), "'é' is not a hex digit"),
        (&format!("md5:{}", "0".repeat(33)), "expected 32 hex digits, got 33"),
    ];
    for (input, expected) in cases {
        let err = input.parse::<Checksum>().expect_err(input);
        assert!(matches!(err, SourceError::InvalidChecksum { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(expected), "{input:?}: {message}");
        assert!(message.contains("sha256:<64 hex digits>"), "{message}");
    }
}
