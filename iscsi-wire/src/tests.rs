//! The reader and writer against each other: in memory, and over loopback
//! TCP for the zero-copy paths.

use crate::{FileRange, Frame, Payload, PduReader, PduWriter, PipeChunk, PipePool, ReadError};
use bytes::{Bytes, BytesMut};
use iscsi_proto::codec::{Direction, Encoder, Framing};
use iscsi_proto::pdu::{DataIn, DataOut, Header, Pdu, Residual};
use iscsi_proto::{CmdSn, DataSn, Itt, Lun, StatSn, Ttt};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

fn data_in(n: u32, len: usize) -> Pdu {
    Pdu::with_data(data_in_header(n), Bytes::from(vec![n as u8; len]))
}

fn data_in_header(n: u32) -> DataIn {
    DataIn {
        final_: true,
        ack: false,
        status: None,
        residual: Residual::None,
        lun: Lun::from_index(1),
        itt: Itt(n),
        ttt: Ttt::RESERVED,
        stat_sn: StatSn(0),
        exp_cmd_sn: CmdSn(0),
        max_cmd_sn: CmdSn(0),
        data_sn: DataSn(0),
        buffer_offset: 0,
    }
}

fn data_out(n: u32, offset: u32) -> Header {
    Header::DataOut(DataOut {
        final_: true,
        lun: Lun::from_index(1),
        itt: Itt(n),
        ttt: Ttt(7),
        exp_stat_sn: StatSn(1),
        data_sn: DataSn(0),
        buffer_offset: offset,
    })
}

fn framing(digests: bool) -> Framing {
    Framing {
        header_digest: digests,
        data_digest: digests,
        max_data_segment_len: 1 << 20,
    }
}

/// Pseudo-random bytes, different for each `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<std::fs::File>) {
    let mut temp = tempfile::NamedTempFile::new().expect("a temporary file");
    temp.write_all(bytes).expect("write");
    let file = Arc::new(temp.reopen().expect("reopen"));
    (temp, file)
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.expect("connect"), server.expect("accept").0)
}

/// What the writer sends the reader gets back: the same PDUs, in order,
/// with digests on, through a pipe too small to take a batch in one
/// write; then the end of the stream.
#[tokio::test]
async fn what_is_written_is_read_back() {
    let (client, server) = tokio::io::duplex(4096);
    let mut writer = PduWriter::new(client);
    writer.set_framing(framing(true));
    let pdus: Vec<Pdu> = (0..40).map(|n| data_in(n, (n as usize * 7919) % 70_000 + 1)).collect();
    let expected = pdus.clone();
    let send = tokio::spawn(async move {
        for pdu in &pdus {
            writer.queue(&pdu.header, pdu.data.clone()).await.expect("queue");
        }
        writer.shutdown().await;
    });
    let mut reader = PduReader::new(server, Direction::FromTarget);
    reader.set_framing(framing(true));
    for want in expected {
        assert_eq!(reader.next().await.expect("a PDU"), want);
    }
    assert!(matches!(reader.next().await, Err(ReadError::Eof)));
    send.await.expect("writer");
}

/// A corrupted header digest is a decode error, not a PDU.
#[tokio::test]
async fn a_bad_header_digest_is_an_error() {
    let framing = Framing {
        data_digest: false,
        ..framing(true)
    };
    let mut encoder = Encoder::new();
    encoder.set_framing(framing);
    let mut bytes = BytesMut::new();
    encoder.encode(&data_in(1, 10), &mut bytes).expect("encode");
    bytes[50] ^= 1;
    let mut reader = PduReader::new(&bytes[..], Direction::FromTarget);
    reader.set_framing(framing);
    assert!(matches!(reader.next().await, Err(ReadError::Decode(_))));
}

/// File and pipe payloads go out as the same bytes a buffer would, with
/// and without digests (with digests they are read into memory first), and
/// odd lengths get their padding.
#[tokio::test]
async fn file_and_pipe_payloads_arrive_as_bytes() {
    let image = noise(3, 3 << 20);
    let (_temp, file) = file_with(&image);
    for digests in [false, true] {
        let (client, server) = tcp_pair().await;
        let (_, write) = client.into_split();
        let (read, _) = server.into_split();
        let mut writer = PduWriter::new(write);
        writer.set_framing(framing(digests));
        assert_eq!(writer.zero_copy(), !digests);
        let pool = PipePool::new(4);
        let sent = tokio::spawn({
            let file = file.clone();
            async move {
                let range = FileRange::new(file.clone(), 1000, (1 << 20) - 3);
                writer
                    .queue(&data_in_header(1).into(), range)
                    .await
                    .expect("queue a file range");
                let mut pipe = pool.take().expect("a pipe");
                let len = pipe.capacity().min(300_001);
                let job = tokio::task::spawn_blocking(move || pipe.fill_from(&file, 5, len).map(|()| pipe));
                let pipe = PipeChunk::whole(job.await.expect("join").expect("fill the pipe"));
                let whole = Payload::Pipe(pipe);
                let first = whole.slice(0..100_000);
                let rest = whole.slice(100_000..len);
                writer.queue(&data_in_header(2).into(), first).await.expect("queue");
                writer.queue(&data_in_header(3).into(), rest).await.expect("queue");
                writer
                    .queue(&data_in_header(4).into(), Bytes::from_static(b"tail"))
                    .await
                    .expect("queue");
                writer.flush().await.expect("flush");
                len
            }
        });
        let mut reader = PduReader::new(read, Direction::FromTarget);
        reader.set_framing(framing(digests));
        let one = reader.next().await.expect("PDU 1");
        assert_eq!(&one.data[..], &image[1000..1000 + (1 << 20) - 3]);
        let two = reader.next().await.expect("PDU 2");
        let three = reader.next().await.expect("PDU 3");
        let len = sent.await.expect("writer");
        assert_eq!(&two.data[..], &image[5..100_005]);
        assert_eq!(&three.data[..], &image[100_005..5 + len]);
        assert_eq!(&reader.next().await.expect("PDU 4").data[..], b"tail");
    }
}

/// A large data segment comes as a head and is spliced into a file at an
/// offset; the stream stays in step for the PDUs after it, small ones
/// decoded whole, and a segment whose file write fails is still consumed.
#[tokio::test]
async fn segments_are_spliced_into_files() {
    let (client, server) = tcp_pair().await;
    let (_, write) = client.into_split();
    let (read, _) = server.into_split();
    let mut writer = PduWriter::new(write);
    writer.set_framing(framing(false));
    let big = noise(5, (1 << 20) - 2);
    let small = noise(6, 512);
    let sent = {
        let (big, small) = (big.clone(), small.clone());
        tokio::spawn(async move {
            writer
                .queue(&data_out(1, 0), Bytes::from(big.clone()))
                .await
                .expect("queue");
            writer.queue(&data_out(2, 0), Bytes::from(small)).await.expect("queue");
            writer.queue(&data_out(3, 0), Bytes::from(big)).await.expect("queue");
            writer
                .queue(&data_out(4, 0), Bytes::from_static(b"end!"))
                .await
                .expect("queue");
            writer.flush().await.expect("flush");
            writer
        })
    };
    let mut reader = PduReader::new(read, Direction::FromInitiator);
    reader.set_framing(framing(false));
    assert!(reader.set_heads(64 * 1024, Duration::from_secs(5)));
    let target = tempfile::NamedTempFile::new().expect("a temporary file");
    target.as_file().set_len(4 << 20).expect("size");
    let dest = Arc::new(target.reopen().expect("reopen"));

    let Frame::Head(head) = reader.next_frame().await.expect("frame") else {
        panic!("a 1 MiB segment on a fresh socket comes as a head")
    };
    assert_eq!(head.data_len, big.len());
    let file = dest.clone();
    let wrote = reader
        .segment_into(&head, move |segment| segment.to_file(&file, 4096))
        .await
        .expect("segment");
    wrote.expect("spliced into the file");
    let Frame::Pdu(second) = reader.next_frame().await.expect("frame") else {
        panic!("a small segment comes whole")
    };
    assert_eq!(&second.data[..], &small[..]);

    // The third goes to a file opened read-only: the write fails, the
    // stream does not.
    let Frame::Head(head) = reader.next_frame().await.expect("frame") else {
        panic!("a head")
    };
    let read_only = Arc::new(std::fs::File::open(target.path()).expect("open read-only"));
    let failed = reader
        .segment_into(&head, move |segment| segment.to_file(&read_only, 0))
        .await
        .expect("the connection survives a failed file write");
    assert!(failed.is_err());
    assert_eq!(&reader.next().await.expect("PDU 4").data[..], b"end!");
    drop(sent.await.expect("writer"));

    let on_disk = std::fs::read(target.path()).expect("read back");
    assert_eq!(&on_disk[4096..4096 + big.len()], &big[..]);
    assert!(on_disk[..4096].iter().all(|&b| b == 0));
    assert!(on_disk[4096 + big.len()..].iter().all(|&b| b == 0));
}

/// A blocking job moves one large segment after another, reading each
/// next header itself, and leaves the first PDU that is not one (a short
/// segment here) for the async reader, which goes on from there.
#[tokio::test]
async fn a_blocking_job_moves_segment_after_segment() {
    let (client, server) = tcp_pair().await;
    let (_, write) = client.into_split();
    let (read, _) = server.into_split();
    let mut writer = PduWriter::new(write);
    writer.set_framing(framing(false));
    let big: Vec<Vec<u8>> = (0..3).map(|n| noise(10 + n, 300_000 + n as usize * 4)).collect();
    let sent = {
        let big = big.clone();
        tokio::spawn(async move {
            writer
                .queue(&data_out(1, 0), Bytes::from(big[0].clone()))
                .await
                .expect("queue");
            writer
                .queue(&data_out(2, 0), Bytes::from(big[1].clone()))
                .await
                .expect("queue");
            writer
                .queue(&data_out(3, 0), Bytes::from_static(b"short"))
                .await
                .expect("queue");
            writer
                .queue(&data_out(4, 0), Bytes::from(big[2].clone()))
                .await
                .expect("queue");
            writer.flush().await.expect("flush");
            writer
        })
    };
    let mut reader = PduReader::new(read, Direction::FromInitiator);
    reader.set_framing(framing(false));
    assert!(reader.set_heads(64 * 1024, Duration::from_secs(5)));
    let target = tempfile::NamedTempFile::new().expect("a temporary file");
    target.as_file().set_len(2 << 20).expect("size");
    let dest = Arc::new(target.reopen().expect("reopen"));

    let Frame::Head(head) = reader.next_frame().await.expect("frame") else {
        panic!("a head")
    };
    let file = dest.clone();
    let moved = reader
        .blocking(head, move |lent, mut head| {
            let mut offsets = Vec::new();
            let mut at = 0u64;
            loop {
                lent.segment(&head).to_file(&file, at).expect("to the file");
                lent.end_segment(&head).expect("end");
                offsets.push(at);
                at += head.data_len as u64;
                match lent.next_head(Duration::from_secs(5)).expect("next") {
                    Some(next) => head = next,
                    None => return offsets,
                }
            }
        })
        .await
        .expect("the job");
    assert_eq!(moved, vec![0, 300_000], "two segments in one job");
    let Frame::Pdu(third) = reader.next_frame().await.expect("frame") else {
        panic!("the short one comes whole")
    };
    assert_eq!(&third.data[..], b"short");
    let Frame::Head(fourth) = reader.next_frame().await.expect("frame") else {
        panic!("a head again")
    };
    assert_eq!(fourth.data_len, big[2].len());
    let pdu = reader.read_segment(fourth).await.expect("read");
    assert_eq!(&pdu.data[..], &big[2][..]);
    drop(sent.await.expect("writer"));
    let on_disk = std::fs::read(target.path()).expect("read back");
    assert_eq!(&on_disk[..300_000], &big[0][..]);
    assert_eq!(&on_disk[300_000..600_004], &big[1][..]);
}
