//! Walk raw iSCSI byte streams PDU by PDU with the crate's own decoder.
//!
//! ```text
//! cargo run -q -p iscsi-proto --example pdu_walk -- [-v] [--digests auto|none|header|data|both] STREAM...
//! ```
//!
//! Each STREAM is one direction of one or more TCP connections, concatenated
//! in connection order (as `tools/capture-testdata` writes them):
//! `NAME.i2t.bin` holds what the initiator sent, `NAME.t2i.bin` what the
//! target sent. A Login PDU after the full feature phase starts the next
//! connection, without digests until its login completes.
//!
//! `--digests auto` (the default) takes the HeaderDigest and DataDigest each
//! connection negotiated from the target's Login Responses (in the stream
//! itself, or in its `.t2i.bin` sibling). Every digest is checked; a PDU
//! that does not decode, a bad digest, or bytes left over after the last
//! PDU fail the walk.
//!
//! Prints, per stream, its size, the PDUs, connections and opcodes seen
//! (with `-v`, every PDU's header), and exits 1 if any stream failed.

use bytes::BytesMut;
use iscsi_proto::codec::{Decoded, Decoder, Direction, Framing};
use iscsi_proto::pdu::{Header, Opcode, Pdu, Stage};
use iscsi_proto::text;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// Header and data digests of each connection, or one setting for all.
#[derive(Debug, Clone)]
enum Digests {
    Fixed(bool, bool),
    PerConnection(Vec<(bool, bool)>),
}

impl Digests {
    fn of(&self, connection: usize) -> (bool, bool) {
        match self {
            Self::Fixed(h, d) => (*h, *d),
            Self::PerConnection(all) => all.get(connection).copied().unwrap_or((false, false)),
        }
    }
}

/// One decoded PDU and where it was.
#[derive(Debug)]
struct Walked {
    offset: usize,
    connection: usize,
    pdu: Pdu,
}

fn is_login(header: &Header) -> bool {
    matches!(header, Header::LoginRequest(_) | Header::LoginResponse(_))
}

fn ends_login(header: &Header) -> bool {
    match header {
        Header::LoginRequest(r) => r.transit && r.nsg == Stage::FULL_FEATURE_PHASE,
        Header::LoginResponse(r) => r.transit && r.nsg == Stage::FULL_FEATURE_PHASE,
        _ => false,
    }
}

/// Decode `stream` to its end, switching digests on after each login.
fn walk(stream: &[u8], direction: Direction, digests: &Digests) -> Result<Vec<Walked>, String> {
    let mut buf = BytesMut::from(stream);
    let mut decoder = Decoder::new(direction);
    let mut walked = Vec::new();
    // So that the first Login starts connection 0.
    let mut full_feature = true;
    let mut connection = 0;
    let framing = |header_digest, data_digest| Framing {
        header_digest,
        data_digest,
        max_data_segment_len: 1 << 24,
    };
    while !buf.is_empty() {
        let offset = stream.len() - buf.len();
        let opcode = Opcode(buf[0] & 0x3f);
        if full_feature && matches!(opcode, Opcode::LOGIN_REQUEST | Opcode::LOGIN_RESPONSE) {
            if !walked.is_empty() {
                connection += 1;
            }
            full_feature = false;
            decoder.set_framing(framing(false, false));
        }
        let pdu = match decoder.decode(&mut buf) {
            Ok(Decoded::Pdu(pdu)) => pdu,
            Ok(Decoded::NeedMore(n)) => {
                return Err(format!("offset {offset}: the stream ends {n} bytes short of a PDU"));
            }
            Err(e) => return Err(format!("offset {offset}: {e}")),
        };
        if is_login(&pdu.header) && ends_login(&pdu.header) {
            full_feature = true;
            let (h, d) = digests.of(connection);
            decoder.set_framing(framing(h, d));
        }
        walked.push(Walked {
            offset,
            connection,
            pdu,
        });
    }
    Ok(walked)
}

/// The digests each connection of a target-to-initiator stream negotiated.
fn negotiated(responses: &[u8]) -> Result<Vec<(bool, bool)>, String> {
    // Logins carry no digests, so any setting walks the logins; keep the
    // first that walks the whole stream.
    let mut last = String::new();
    for (h, d) in [(false, false), (true, false), (true, true), (false, true)] {
        match walk(responses, Direction::FromTarget, &Digests::Fixed(h, d)) {
            Ok(walked) => {
                let mut per = Vec::new();
                for w in walked
                    .iter()
                    .filter(|w| matches!(w.pdu.header, Header::LoginResponse(_)))
                {
                    per.resize(w.connection + 1, (false, false));
                    for pair in text::parse(&w.pdu.data).map_err(|e| e.to_string())? {
                        match pair.key.as_str() {
                            "HeaderDigest" => per[w.connection].0 = pair.value == "CRC32C",
                            "DataDigest" => per[w.connection].1 = pair.value == "CRC32C",
                            _ => {}
                        }
                    }
                }
                return Ok(per);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Which side sent `stream`: by its name, else by its first PDU.
fn direction(path: &Path, stream: &[u8]) -> Direction {
    let name = path.to_string_lossy();
    if name.ends_with(".i2t.bin") {
        Direction::FromInitiator
    } else if name.ends_with(".t2i.bin") || stream.first().is_some_and(|b| Opcode(b & 0x3f).0 & 0x20 != 0) {
        Direction::FromTarget
    } else {
        Direction::FromInitiator
    }
}

/// The report on the stream at `path`.
fn run(path: &Path, verbose: bool, digests: Option<Digests>) -> Result<String, String> {
    let stream = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let direction = direction(path, &stream);
    let digests = match digests {
        Some(fixed) => fixed,
        None => {
            let name = path.to_string_lossy();
            let responses = match name.strip_suffix(".i2t.bin") {
                Some(base) => std::fs::read(format!("{base}.t2i.bin")).unwrap_or_default(),
                None => stream.clone(),
            };
            Digests::PerConnection(negotiated(&responses).unwrap_or_default())
        }
    };
    let walked = walk(&stream, direction, &digests)?;
    let connections = walked.last().map_or(0, |w| w.connection + 1);
    let mut out = format!(
        "{}: {} bytes, {} PDUs, {connections} connection(s), walked to exact end\n",
        path.display(),
        stream.len(),
        walked.len()
    );
    let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
    for w in &walked {
        *counts.entry(w.pdu.header.opcode().0).or_default() += 1;
        if verbose {
            let _ = writeln!(
                out,
                "  @{:<6} conn{} dlen={:<5} {:?}",
                w.offset,
                w.connection,
                w.pdu.data.len(),
                w.pdu.header
            );
        }
    }
    for (opcode, count) in counts {
        let _ = writeln!(out, "  {opcode:#04x} {:<26} {count}", format!("{:?}", Opcode(opcode)));
    }
    let checked = (0..connections).filter(|&c| digests.of(c) != (false, false)).count();
    if checked > 0 {
        let _ = writeln!(out, "  digests checked on {checked} connection(s), all good");
    }
    Ok(out)
}

fn main() -> ExitCode {
    let mut verbose = false;
    let mut digests = None;
    let mut streams = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-v" | "--verbose" => verbose = true,
            "--digests" => {
                digests = match args.next().as_deref() {
                    Some("auto") => None,
                    Some("none") => Some(Digests::Fixed(false, false)),
                    Some("header") => Some(Digests::Fixed(true, false)),
                    Some("data") => Some(Digests::Fixed(false, true)),
                    Some("both") => Some(Digests::Fixed(true, true)),
                    other => {
                        eprintln!("--digests takes auto, none, header, data or both, not {other:?}");
                        return ExitCode::from(2);
                    }
                }
            }
            _ => streams.push(arg),
        }
    }
    if streams.is_empty() {
        eprintln!("usage: pdu_walk [-v] [--digests auto|none|header|data|both] STREAM...");
        return ExitCode::from(2);
    }
    let mut failed = false;
    let mut stdout = std::io::stdout().lock();
    for stream in &streams {
        let report = run(Path::new(stream), verbose, digests.clone()).unwrap_or_else(|e| {
            failed = true;
            format!("{stream}: ERROR {e}\n")
        });
        // A reader that went away (`| head`) is no failure of the walk.
        if stdout.write_all(report.as_bytes()).is_err() {
            break;
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
