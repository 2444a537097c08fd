//! The end of a deploy: once the disk is written, the conductor opens a TCP
//! connection to the ramdisk on port 10000 and sends `done`; the ramdisk
//! stops its target and reboots into what was written. The legacy bash
//! ramdisk waited with `nc -l 10000` and took any connection as the word,
//! so a ramdisk logs what was said rather than insisting on it.

/// The port the ramdisk listens on for `done`.
pub const PORT: u16 = 10000;

/// What the conductor sends.
pub const MESSAGE: &[u8] = b"done";
