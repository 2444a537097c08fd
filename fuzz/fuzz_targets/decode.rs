//! Any bytes through the decoder, with any framing: no panic, and whatever
//! decodes re-encodes to bytes that decode to the same PDU.

#![no_main]

use bytes::BytesMut;
use iscsi_proto::codec::{Decoded, Decoder, Direction, Encoder, Framing};
use iscsi_proto::scsi::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let framing = Framing {
        header_digest: flags & 1 != 0,
        data_digest: flags & 2 != 0,
        max_data_segment_len: if flags & 4 != 0 { 512 } else { 8192 },
    };
    let direction = if flags & 8 != 0 {
        Direction::FromInitiator
    } else {
        Direction::FromTarget
    };
    let mut decoder = Decoder::new(direction);
    decoder.set_framing(framing);
    let mut encoder = Encoder::new();
    encoder.set_framing(framing);
    let mut buf = BytesMut::from(bytes);
    for _ in 0..64 {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Pdu(pdu)) => {
                let wire = encoder
                    .to_bytes(&pdu)
                    .expect("a decoded PDU fits the framing it came in");
                let mut again = BytesMut::from(&wire[..]);
                match decoder.decode(&mut again) {
                    Ok(Decoded::Pdu(back)) => assert_eq!(back, pdu),
                    other => panic!("re-encoded PDU does not decode: {other:?}"),
                }
                assert!(again.is_empty());
                if let iscsi_proto::pdu::Header::ScsiCommand(cmd) = &pdu.header {
                    if let Ok(command) = Command::parse(&cmd.full_cdb()) {
                        assert_eq!(
                            Command::parse(command.build().as_bytes()).ok().map(|c| c.build()),
                            Some(command.build())
                        );
                    }
                }
            }
            Ok(Decoded::NeedMore(n)) => {
                assert!(n > 0);
                break;
            }
            Err(e) if e.scope() == iscsi_proto::Scope::Pdu => {}
            Err(_) => break,
        }
    }
});
