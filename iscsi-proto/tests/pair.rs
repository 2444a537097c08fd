//! The initiator's and the target's full feature phase machines driven
//! against each other in memory: every PDU goes through the codec with the
//! framing the login negotiated, time is a value the test moves, and a toy
//! disk behind the target runs READ (10) and WRITE (10). A misbehaving peer
//! is played by handing the other machine PDUs the test wrote itself.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use iscsi_proto::codec::{Decoded, Decoder, Direction, Encoder};
use iscsi_proto::initiator::{self, Liveness, Request};
use iscsi_proto::login::{
    InitiatorConfig, InitiatorLogin, InitiatorStep, LoginOutcome, TargetAuth, TargetConfig, TargetEntry, TargetLogin,
    TargetLoginParams, TargetStep,
};
use iscsi_proto::negotiate::Preferences;
use iscsi_proto::pdu::{
    DataIn, DataOut, Header, Isid, LogoutResponseCode, Pdu, R2t, RejectReason, Residual, ScsiCommand, TaskAttribute,
    TaskFunction, TmfResponse, Tsih,
};
use iscsi_proto::scsi::{AdditionalSense, Command, ReadWrite, ScsiStatus, Sense, SenseKey};
use iscsi_proto::target::{self, Close, Event, Reset, Response, Route};
use iscsi_proto::text::Pair;
use iscsi_proto::{CmdSn, DataSn, Itt, Lun, R2tSn, StatSn, Ttt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TARGET: &str = "iqn.2024-01.test:pair";
const LUN: Lun = Lun::from_index(1);
const BLOCK: usize = 512;

/// Log in through the login machines, each PDU through the codec.
fn login(initiator: Preferences, target: Preferences) -> (LoginOutcome, LoginOutcome) {
    let mut config = TargetConfig::new(vec![TargetEntry {
        name: TARGET.into(),
        alias: None,
        auth: TargetAuth::default(),
    }]);
    config.prefs = target;
    let params = TargetLoginParams {
        tsih: Tsih(7),
        stat_sn: StatSn(0xffff_fff0),
        window: 8,
        nonce: [3; 64],
    };
    let mut t = TargetLogin::new(Arc::new(config), params);
    let mut init = InitiatorConfig::new("iqn.2024-01.test:init", Some(TARGET.into()), Isid::random([1; 6]));
    init.prefs = initiator;
    init.cmd_sn = CmdSn(u32::MAX - 2);
    let mut i = InitiatorLogin::new(init, [9; 64]);
    let mut request = i.start();
    loop {
        let (response, target_end) = match t.step(&request) {
            TargetStep::Continue(rsp) => (rsp, None),
            TargetStep::Complete(rsp, outcome) => (rsp, Some(*outcome)),
            TargetStep::Fail(_, e) => panic!("target refused: {e}"),
        };
        match i.step(&response) {
            InitiatorStep::Send(next) => request = next,
            InitiatorStep::Complete(outcome) => return (*outcome, target_end.unwrap()),
            InitiatorStep::Fail(e) => panic!("initiator failed: {e}"),
        }
    }
}

/// The toy disk's program around the target machine.
#[derive(Debug, Default)]
struct Disk {
    blocks: Vec<u8>,
    /// Commands given to the program: the CDB and the write data so far.
    commands: HashMap<Itt, (Vec<u8>, Vec<u8>)>,
    /// Ready commands the test keeps running (not answered yet).
    hold: bool,
    held: Vec<Itt>,
    aborted: Vec<Itt>,
    resets: Vec<Reset>,
    closed: Option<Close>,
    failed: Vec<Itt>,
}

struct Link {
    initiator: initiator::Connection<Bytes>,
    target: target::Connection<Bytes>,
    disk: Disk,
    now: Instant,
    /// Every PDU that crossed, in each direction.
    to_target: Vec<Header>,
    to_initiator: Vec<Header>,
    events: Vec<initiator::Event>,
    encode_i: Encoder,
    decode_t: Decoder,
    encode_t: Encoder,
    decode_i: Decoder,
}

impl Link {
    fn new(initiator: Preferences, target: Preferences) -> Self {
        let (io, to) = login(initiator, target);
        let now = Instant::now();
        let config = target::Config {
            target_name: TARGET.into(),
            portal: "192.0.2.1:3260,1".into(),
            lun: 1,
            prefs: Preferences::default(),
            queue_depth: 8,
            nop_interval: Duration::from_secs(10),
            nop_timeout: Duration::from_secs(30),
        };
        let liveness = Liveness {
            ping_after: Duration::from_secs(5),
            dead_after: Duration::from_secs(20),
        };
        let (mut encode_i, mut decode_t) = (Encoder::new(), Decoder::new(Direction::FromInitiator));
        let (mut encode_t, mut decode_i) = (Encoder::new(), Decoder::new(Direction::FromTarget));
        encode_i.set_framing(io.connection.send_framing());
        decode_i.set_framing(io.connection.receive_framing());
        encode_t.set_framing(to.connection.send_framing());
        decode_t.set_framing(to.connection.receive_framing());
        Self {
            initiator: initiator::Connection::new(&io, liveness, now),
            target: target::Connection::new(&to, config, now),
            disk: Disk {
                blocks: vec![0; 256 * BLOCK],
                ..Disk::default()
            },
            now,
            to_target: Vec::new(),
            to_initiator: Vec::new(),
            events: Vec::new(),
            encode_i,
            decode_t,
            encode_t,
            decode_i,
        }
    }

    fn defaults() -> Self {
        Self::new(Preferences::default(), Preferences::default())
    }

    fn wire(encoder: &Encoder, decoder: &Decoder, header: &Header, data: &Bytes) -> Pdu {
        let mut buf = BytesMut::from(&encoder.to_bytes(&Pdu::with_data(header.clone(), data.clone())).unwrap()[..]);
        let Decoded::Pdu(pdu) = decoder.decode(&mut buf).unwrap() else {
            panic!("short PDU")
        };
        assert!(buf.is_empty());
        pdu
    }

    /// Move PDUs both ways and run the target's program until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.initiator.poll_transmit() {
                moved = true;
                let pdu = Self::wire(&self.encode_i, &self.decode_t, &t.header, &t.data);
                self.to_target.push(pdu.header.clone());
                self.target.handle_pdu(pdu, self.now);
                self.run_target();
            }
            while let Some(t) = self.target.poll_transmit() {
                moved = true;
                let pdu = Self::wire(&self.encode_t, &self.decode_i, &t.header, &t.data);
                self.to_initiator.push(pdu.header.clone());
                self.initiator.handle_pdu(pdu, self.now);
            }
            while let Some(e) = self.initiator.poll_event() {
                self.events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    /// A PDU of the test's own straight to the target.
    fn inject(&mut self, pdu: Pdu) {
        let pdu = Self::wire(&self.encode_i, &self.decode_t, &pdu.header, &pdu.data);
        self.target.handle_pdu(pdu, self.now);
        self.run_target();
        self.pump();
    }

    /// A PDU of the test's own straight to the initiator.
    fn inject_to_initiator(&mut self, pdu: Pdu) {
        let pdu = Self::wire(&self.encode_t, &self.decode_i, &pdu.header, &pdu.data);
        self.initiator.handle_pdu(pdu, self.now);
        self.pump();
    }

    fn run_target(&mut self) {
        while let Some(event) = self.target.poll_event() {
            match event {
                Event::Command(c) => {
                    self.disk.commands.insert(c.itt, (c.cdb, Vec::new()));
                }
                Event::Data { itt, offset, data } => {
                    let (_, buf) = self.disk.commands.get_mut(&itt).unwrap();
                    assert_eq!(offset as usize, buf.len(), "data in order");
                    buf.extend_from_slice(&data);
                }
                Event::Ready(itt) => {
                    if self.disk.hold {
                        self.disk.held.push(itt);
                    } else {
                        self.execute(itt);
                    }
                }
                Event::Failed(itt) => {
                    self.disk.commands.remove(&itt);
                    self.disk.failed.push(itt);
                }
                Event::Abort(itts) => self.disk.aborted.extend(itts),
                Event::Reset(r) => self.disk.resets.push(r),
                Event::Close(why) => self.disk.closed = Some(why),
            }
        }
    }

    /// Run a held or ready command on the toy disk and answer it.
    fn execute(&mut self, itt: Itt) {
        let (cdb, data) = self.disk.commands.remove(&itt).unwrap();
        let response = match Command::parse(&cdb) {
            Ok(Command::Read(rw)) => {
                let (at, len) = (rw.lba as usize * BLOCK, rw.transfer_length as usize * BLOCK);
                let read = Bytes::copy_from_slice(&self.disk.blocks[at..at + len]);
                Response {
                    status: ScsiStatus::GOOD,
                    sense: None,
                    transfer_len: read.len() as u64,
                    data: Some(read),
                }
            }
            Ok(Command::Write(rw)) => {
                let at = rw.lba as usize * BLOCK;
                self.disk.blocks[at..at + data.len()].copy_from_slice(&data);
                Response {
                    status: ScsiStatus::GOOD,
                    sense: None,
                    data: None,
                    transfer_len: data.len() as u64,
                }
            }
            _ => Response {
                status: ScsiStatus::CHECK_CONDITION,
                sense: Some(Sense::invalid_command_operation_code()),
                data: None,
                transfer_len: 0,
            },
        };
        self.target.respond(itt, response);
    }

    fn release_held(&mut self) {
        for itt in std::mem::take(&mut self.disk.held) {
            self.execute(itt);
        }
        self.pump();
    }

    fn submit(&mut self, request: Request<Bytes>) -> Itt {
        let itt = self.initiator.submit(request, self.now);
        self.pump();
        itt
    }

    fn write(&mut self, lba: u32, data: &[u8]) -> Itt {
        let cdb = Command::Write(ReadWrite::new(u64::from(lba), (data.len() / BLOCK) as u32)).build();
        self.submit(Request::Scsi {
            lun: LUN,
            cdb: cdb.as_bytes().to_vec(),
            data_out: Bytes::copy_from_slice(data),
            read_len: 0,
        })
    }

    fn read(&mut self, lba: u32, blocks: u32) -> Itt {
        let cdb = Command::Read(ReadWrite::new(u64::from(lba), blocks)).build();
        self.submit(Request::Scsi {
            lun: LUN,
            cdb: cdb.as_bytes().to_vec(),
            data_out: Bytes::new(),
            read_len: blocks * BLOCK as u32,
        })
    }

    /// The initiator's event for `itt`.
    fn answer(&self, itt: Itt) -> Option<&initiator::Event> {
        self.events.iter().find(|e| match e {
            initiator::Event::Completed { itt: i, .. }
            | initiator::Event::Text { itt: i, .. }
            | initiator::Event::Pong { itt: i, .. }
            | initiator::Event::TaskManagement { itt: i, .. }
            | initiator::Event::LoggedOut { itt: i, .. }
            | initiator::Event::Rejected { itt: i, .. } => *i == itt,
            _ => false,
        })
    }

    fn completed(&self, itt: Itt) -> (ScsiStatus, Bytes, Option<Bytes>) {
        match self.answer(itt) {
            Some(initiator::Event::Completed {
                status, data, sense, ..
            }) => (*status, data.clone(), sense.clone()),
            other => panic!("no completion for {itt}: {other:?}"),
        }
    }

    fn lost(&self) -> Option<&str> {
        self.events.iter().find_map(|e| match e {
            initiator::Event::Lost(why) => Some(why.as_str()),
            _ => None,
        })
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.target.handle_timeout(self.now);
        self.initiator.handle_timeout(self.now);
        self.run_target();
        self.pump();
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// R2T-only settings: no immediate or unsolicited data, small segments and
/// bursts, one R2T at a time.
fn conservative() -> Preferences {
    Preferences {
        initial_r2t: true,
        immediate_data: false,
        max_recv_data_segment_length: 4096,
        max_burst_length: 8192,
        first_burst_length: 4096,
        max_outstanding_r2t: 1,
        header_digest: vec!["CRC32C".into()],
        data_digest: vec!["CRC32C".into()],
        ..Preferences::default()
    }
}

#[test]
fn writes_and_reads_round_trip_with_every_way_of_sending_data() {
    for (initiator, target) in [
        (Preferences::default(), Preferences::default()),
        (conservative(), Preferences::default()),
        (
            Preferences {
                first_burst_length: 8192,
                max_recv_data_segment_length: 2048,
                ..Preferences::default()
            },
            Preferences {
                max_recv_data_segment_length: 3072,
                max_outstanding_r2t: 2,
                ..Preferences::default()
            },
        ),
    ] {
        let mut pair = Link::new(initiator, target);
        let data = pattern(40 * BLOCK, 7);
        let w = pair.write(3, &data);
        assert_eq!(pair.completed(w).0, ScsiStatus::GOOD);
        let r = pair.read(3, 40);
        let (status, read, _) = pair.completed(r);
        assert_eq!((status, &read[..]), (ScsiStatus::GOOD, &data[..]));
        assert_eq!(&pair.disk.blocks[3 * BLOCK..43 * BLOCK], &data[..]);
        assert_eq!(pair.target.commands_in_flight(), 0, "every slot given back");
    }
}

#[test]
fn r2ts_follow_the_burst_rules_and_exp_data_sn_counts_them() {
    let mut pair = Link::new(conservative(), Preferences::default());
    let w = pair.write(0, &pattern(24 * BLOCK, 1));
    assert_eq!(pair.completed(w).0, ScsiStatus::GOOD);
    let r2ts: Vec<&R2t> = pair
        .to_initiator
        .iter()
        .filter_map(|h| match h {
            Header::R2t(r) => Some(r),
            _ => None,
        })
        .collect();
    // 12 KiB in bursts of at most 8 KiB: two R2Ts, R2TSN 0 and 1.
    assert_eq!(
        r2ts.iter()
            .map(|r| (r.r2t_sn, r.buffer_offset, r.desired_len))
            .collect::<Vec<_>>(),
        vec![(R2tSn(0), 0, 8192), (R2tSn(1), 8192, 4096)]
    );
    let response = pair.to_initiator.iter().find_map(|h| match h {
        Header::ScsiResponse(r) => Some(r),
        _ => None,
    });
    assert_eq!(
        response.unwrap().exp_data_sn,
        DataSn(2),
        "R2Ts and Data-In sent for the command"
    );
    let douts: Vec<(u32, DataSn)> = pair
        .to_target
        .iter()
        .filter_map(|h| match h {
            Header::DataOut(d) => Some((d.buffer_offset, d.data_sn)),
            _ => None,
        })
        .collect();
    // One Data-Out per burst (the target takes 1 MiB segments), DataSN
    // counting from 0 in each.
    assert_eq!(douts, vec![(0, DataSn(0)), (8192, DataSn(0))]);
}

#[test]
fn the_window_ignores_what_is_outside_it_and_holds_what_is_early() {
    let mut pair = Link::defaults();
    let w = pair.write(0, &pattern(BLOCK, 1));
    assert_eq!(pair.completed(w).0, ScsiStatus::GOOD);
    let (exp, _) = pair.initiator.window();
    let command = |itt: u32, cmd_sn: CmdSn, lba: u64| {
        let mut cmd = ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: TaskAttribute::SIMPLE,
            lun: LUN,
            itt: Itt(itt),
            expected_len: BLOCK as u32,
            cmd_sn,
            exp_stat_sn: StatSn(0),
            cdb: [0; 16],
            ext_cdb: Bytes::new(),
            bidi_read_len: None,
        };
        cmd.set_cdb(Command::Read(ReadWrite::new(lba, 1)).build().as_bytes());
        Pdu::new(cmd)
    };
    // Far outside the window, and a duplicate of what has run: ignored.
    pair.inject(command(0x100, exp.add(1000), 0));
    pair.inject(command(0x101, exp.add(u32::MAX), 0));
    assert!(pair.disk.commands.is_empty() && pair.target.commands_in_flight() == 0);
    // Early: held until the gap before it fills, then both run in order.
    pair.disk.hold = true;
    pair.inject(command(0x102, exp.add(1), 1));
    assert!(pair.disk.commands.is_empty(), "held for the gap");
    pair.inject(command(0x103, exp, 2));
    assert_eq!(pair.disk.held, vec![Itt(0x103), Itt(0x102)], "in CmdSN order");
    assert_eq!(pair.target.commands_in_flight(), 2);
    pair.disk.hold = false;
    pair.release_held();
    assert_eq!(pair.target.commands_in_flight(), 0);
}

#[test]
fn a_task_tag_in_use_is_rejected() {
    let mut pair = Link::defaults();
    pair.disk.hold = true;
    let r = pair.read(0, 1);
    // The read took the CmdSN the target had last said it expected.
    let (exp, _) = pair.initiator.window();
    let exp = exp.add(1);
    let mut again = ScsiCommand {
        immediate: false,
        final_: true,
        read: true,
        write: false,
        attr: TaskAttribute::SIMPLE,
        lun: LUN,
        itt: r,
        expected_len: BLOCK as u32,
        cmd_sn: exp,
        exp_stat_sn: StatSn(0),
        cdb: [0; 16],
        ext_cdb: Bytes::new(),
        bidi_read_len: None,
    };
    again.set_cdb(Command::Read(ReadWrite::new(0, 1)).build().as_bytes());
    pair.to_initiator.clear();
    pair.inject(Pdu::new(again));
    let reject = pair.to_initiator.iter().find_map(|h| match h {
        Header::Reject(r) => Some(r.reason),
        _ => None,
    });
    assert_eq!(reject, Some(RejectReason::TASK_IN_PROGRESS));
    assert_eq!(
        pair.target.commands_in_flight(),
        1,
        "the rejected command's slot is free again"
    );
}

#[test]
fn aborts_wait_for_the_running_task_and_suppress_its_answer() {
    let mut pair = Link::defaults();
    pair.disk.hold = true;
    let r = pair.read(0, 1);
    assert_eq!(pair.disk.held, vec![r]);
    let tmf = pair.submit(Request::TaskManagement {
        function: TaskFunction::ABORT_TASK,
        lun: LUN,
        referenced: r,
    });
    assert_eq!(pair.disk.aborted, vec![r]);
    assert!(pair.answer(tmf).is_none(), "answered only once the task stopped");
    pair.release_held();
    assert_eq!(
        pair.answer(tmf),
        Some(&initiator::Event::TaskManagement {
            itt: tmf,
            response: TmfResponse::FUNCTION_COMPLETE
        })
    );
    assert!(pair.answer(r).is_none(), "an aborted task gets no response");
    // Aborting a task that answered already finds nothing.
    pair.disk.hold = false;
    let done = pair.read(0, 1);
    assert_eq!(pair.completed(done).0, ScsiStatus::GOOD);
    let late = pair.submit(Request::TaskManagement {
        function: TaskFunction::ABORT_TASK,
        lun: LUN,
        referenced: done,
    });
    assert!(matches!(
        pair.answer(late),
        Some(initiator::Event::TaskManagement {
            response: TmfResponse::TASK_DOES_NOT_EXIST,
            ..
        })
    ));
    // A LUN reset aborts everything and tells the program.
    pair.disk.hold = true;
    pair.read(0, 1);
    pair.read(1, 1);
    let reset = pair.submit(Request::TaskManagement {
        function: TaskFunction::LOGICAL_UNIT_RESET,
        lun: LUN,
        referenced: Itt::RESERVED,
    });
    assert_eq!(pair.disk.resets, vec![Reset::LogicalUnit(1)]);
    pair.release_held();
    assert!(matches!(
        pair.answer(reset),
        Some(initiator::Event::TaskManagement {
            response: TmfResponse::FUNCTION_COMPLETE,
            ..
        })
    ));
    assert_eq!(pair.target.commands_in_flight(), 0);
    let other = pair.submit(Request::TaskManagement {
        function: TaskFunction::ABORT_TASK_SET,
        lun: Lun::from_index(5),
        referenced: Itt::RESERVED,
    });
    assert!(matches!(
        pair.answer(other),
        Some(initiator::Event::TaskManagement {
            response: TmfResponse::LUN_DOES_NOT_EXIST,
            ..
        })
    ));
}

#[test]
fn keepalives_on_both_sides() {
    let mut pair = Link::defaults();
    // The target pings a silent initiator, which answers by itself.
    pair.advance(Duration::from_secs(11));
    assert!(
        pair.to_initiator
            .iter()
            .any(|h| matches!(h, Header::NopIn(n) if n.itt.is_reserved()))
    );
    assert!(
        pair.to_target
            .iter()
            .any(|h| matches!(h, Header::NopOut(n) if n.itt.is_reserved()))
    );
    pair.advance(Duration::from_secs(31));
    assert_eq!(pair.disk.closed, None, "the ping was answered");
    // An initiator that stops answering is dropped.
    let ping_out = pair.target.poll_timeout().unwrap();
    pair.now = ping_out;
    pair.target.handle_timeout(pair.now);
    while pair.target.poll_transmit().is_some() {}
    pair.now += Duration::from_secs(31);
    pair.target.handle_timeout(pair.now);
    pair.run_target();
    assert_eq!(pair.disk.closed, Some(Close::PingUnanswered));

    // The initiator pings a target that goes silent while it waits, then
    // calls the connection lost.
    let mut pair = Link::defaults();
    pair.disk.hold = true;
    pair.read(0, 1);
    pair.now += Duration::from_secs(6);
    pair.initiator.handle_timeout(pair.now);
    let ping = pair.initiator.poll_transmit().unwrap();
    assert!(matches!(ping.header, Header::NopOut(n) if !n.itt.is_reserved()));
    pair.now += Duration::from_secs(21);
    pair.initiator.handle_timeout(pair.now);
    while let Some(e) = pair.initiator.poll_event() {
        pair.events.push(e);
    }
    assert_eq!(pair.lost(), Some("the target did not answer for 20 s"));
}

#[test]
fn logout_waits_for_commands_in_flight() {
    let mut pair = Link::defaults();
    pair.disk.hold = true;
    let r = pair.read(2, 1);
    let out = pair.submit(Request::Logout);
    assert!(
        !pair.to_target.iter().any(|h| matches!(h, Header::LogoutRequest(_))),
        "the initiator sends its logout after the last answer"
    );
    pair.release_held();
    assert_eq!(pair.completed(r).0, ScsiStatus::GOOD);
    assert_eq!(
        pair.answer(out),
        Some(&initiator::Event::LoggedOut {
            itt: out,
            response: LogoutResponseCode::CLOSED
        })
    );
    assert_eq!(pair.disk.closed, Some(Close::LoggedOut));
    assert_eq!(pair.lost(), Some("logged out"));
}

#[test]
fn unanswered_requests_come_back_in_order_for_reinstatement() {
    let mut pair = Link::defaults();
    pair.disk.hold = true;
    let a = pair.read(0, 1);
    let b = pair.write(4, &pattern(BLOCK, 3));
    let c = pair.submit(Request::Text(vec![Pair::new("SendTargets", "")]));
    assert!(pair.answer(c).is_some());
    let back: Vec<Itt> = pair.initiator.into_unanswered().iter().map(|(itt, _)| *itt).collect();
    assert_eq!(back, vec![a, b], "the text was answered; the two commands were not");
}

#[test]
fn a_target_that_breaks_the_data_rules_loses_the_connection() {
    let data_in = |itt: Itt, data_sn: u32, offset: u32| DataIn {
        final_: false,
        ack: false,
        status: None,
        residual: Residual::None,
        lun: LUN,
        itt,
        ttt: Ttt::RESERVED,
        stat_sn: StatSn(0),
        exp_cmd_sn: CmdSn(0),
        max_cmd_sn: CmdSn(0),
        data_sn: DataSn(data_sn),
        buffer_offset: offset,
    };
    for (case, wrong) in [
        ("DataSN", data_in(Itt(0), 1, 0)),
        ("offset", data_in(Itt(0), 0, 512)),
        ("beyond", data_in(Itt(0), 0, 0)),
    ] {
        let mut pair = Link::defaults();
        pair.disk.hold = true;
        let r = pair.read(0, 2);
        let mut wrong = wrong;
        wrong.itt = r;
        let len = if case == "beyond" { 4 * BLOCK } else { BLOCK };
        pair.inject_to_initiator(Pdu::with_data(wrong, vec![1u8; len]));
        let why = pair.lost().unwrap_or_else(|| panic!("{case}: not lost"));
        assert!(why.contains("Data-In"), "{case}: {why}");
    }
    let r2t = |itt: Itt, r2t_sn: u32, offset: u32, len: u32| R2t {
        lun: LUN,
        itt,
        ttt: Ttt(0x77),
        stat_sn: StatSn(0),
        exp_cmd_sn: CmdSn(0),
        max_cmd_sn: CmdSn(0),
        r2t_sn: R2tSn(r2t_sn),
        buffer_offset: offset,
        desired_len: len,
    };
    for (case, r2t_sn, offset, len, expect) in [("R2TSN", 5, 0, 512, "R2TSN"), ("range", 0, 512, 4096, "bytes")] {
        let mut pair = Link::new(conservative(), Preferences::default());
        pair.disk.hold = true;
        // The target's own R2Ts are answered by the test's, out of turn.
        let cdb = Command::Write(ReadWrite::new(0, 2)).build();
        let w = pair.initiator.submit(
            Request::Scsi {
                lun: LUN,
                cdb: cdb.as_bytes().to_vec(),
                data_out: Bytes::from(pattern(2 * BLOCK, 1)),
                read_len: 0,
            },
            pair.now,
        );
        while pair.initiator.poll_transmit().is_some() {}
        pair.inject_to_initiator(Pdu::new(r2t(w, r2t_sn, offset, len)));
        let why = pair.lost().unwrap_or_else(|| panic!("{case}: not lost"));
        assert!(why.contains(expect), "{case}: {why}");
    }
}

#[test]
fn an_initiator_that_breaks_the_data_rules_gets_its_answers() {
    let mut pair = Link::new(conservative(), Preferences::default());
    let w = pair.write(0, &pattern(8 * BLOCK, 1));
    assert_eq!(pair.completed(w).0, ScsiStatus::GOOD);
    // A command with unsolicited data under InitialR2T=Yes: answered with
    // UNEXPECTED UNSOLICITED DATA by the machine, never seen by the disk.
    let (exp, _) = pair.initiator.window();
    let mut cmd = ScsiCommand {
        immediate: false,
        final_: false,
        read: false,
        write: true,
        attr: TaskAttribute::SIMPLE,
        lun: LUN,
        itt: Itt(0x500),
        expected_len: 2 * BLOCK as u32,
        cmd_sn: exp,
        exp_stat_sn: StatSn(0),
        cdb: [0; 16],
        ext_cdb: Bytes::new(),
        bidi_read_len: None,
    };
    cmd.set_cdb(Command::Write(ReadWrite::new(0, 2)).build().as_bytes());
    pair.to_initiator.clear();
    pair.inject(Pdu::new(cmd.clone()));
    let sense = pair.to_initiator.iter().find_map(|h| match h {
        Header::ScsiResponse(r) => Some(r.status),
        _ => None,
    });
    assert_eq!(sense, Some(ScsiStatus::CHECK_CONDITION));
    assert!(!pair.disk.commands.contains_key(&Itt(0x500)));

    // Data-Out with the wrong DataSN: a Reject for the PDU, and the command
    // fails with a data phase error.
    cmd.itt = Itt(0x501);
    cmd.final_ = true;
    cmd.cmd_sn = exp.add(1);
    pair.to_initiator.clear();
    pair.inject(Pdu::new(cmd));
    let ttt = pair
        .to_initiator
        .iter()
        .find_map(|h| match h {
            Header::R2t(r) => Some(r.ttt),
            _ => None,
        })
        .unwrap();
    let dout = DataOut {
        final_: true,
        lun: LUN,
        itt: Itt(0x501),
        ttt,
        exp_stat_sn: StatSn(0),
        data_sn: DataSn(3),
        buffer_offset: 0,
    };
    pair.inject(Pdu::with_data(dout, vec![0u8; BLOCK]));
    assert_eq!(pair.disk.failed, vec![Itt(0x501)]);
    let reject = pair.to_initiator.iter().find_map(|h| match h {
        Header::Reject(r) => Some(r.reason),
        _ => None,
    });
    assert_eq!(reject, Some(RejectReason::PROTOCOL_ERROR));
    // The Reject comes first, then the command's CHECK CONDITION: libiscsi
    // fails the write on the Reject and would take the status for a stray.
    let order: Vec<&str> = pair
        .to_initiator
        .iter()
        .filter_map(|h| match h {
            Header::Reject(_) => Some("reject"),
            Header::ScsiResponse(r) if r.itt == Itt(0x501) => Some("response"),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec!["reject", "response"]);
    assert_eq!(pair.target.commands_in_flight(), 0);
    let aborted = Sense::new(SenseKey::ABORTED_COMMAND, AdditionalSense::new(0x4b, 0x00));
    assert_eq!(
        target::data_phase_answer(&iscsi_proto::transfer::TransferError::DataSn { expected: 0, got: 3 }),
        (Some(RejectReason::PROTOCOL_ERROR), aborted)
    );
}

#[test]
fn send_targets_and_long_answers_are_pulled_in_pieces() {
    let mut pair = Link::new(
        Preferences {
            max_recv_data_segment_length: 512,
            ..Preferences::default()
        },
        Preferences::default(),
    );
    let t = pair.submit(Request::Text(vec![Pair::new("SendTargets", "")]));
    let Some(initiator::Event::Text { pairs, .. }) = pair.answer(t) else {
        panic!("no text answer")
    };
    assert_eq!(
        pairs,
        &vec![
            Pair::new("TargetName", TARGET),
            Pair::new("TargetAddress", "192.0.2.1:3260,1")
        ]
    );
    // A long negotiation answer comes back in several PDUs.
    let many: Vec<Pair> = (0..60)
        .map(|i| Pair::new(format!("X-test.key{i:03}"), "a value"))
        .collect();
    let long = pair.submit(Request::Text(many));
    let Some(initiator::Event::Text { pairs, .. }) = pair.answer(long) else {
        panic!("no text answer")
    };
    assert_eq!(pairs.len(), 60);
    assert!(pairs.iter().all(|p| p.value == "NotUnderstood"));
    let responses = pair
        .to_initiator
        .iter()
        .filter(|h| matches!(h, Header::TextResponse(_)))
        .count();
    assert!(responses > 2, "{responses} Text Responses");
}

#[test]
fn routed_segments_are_accounted_for_by_their_heads() {
    use iscsi_proto::codec::Head;
    let mut pair = Link::defaults();
    let (exp, _) = pair.initiator.window();
    let mut cmd = ScsiCommand {
        immediate: false,
        final_: true,
        read: false,
        write: true,
        attr: TaskAttribute::SIMPLE,
        lun: LUN,
        itt: Itt(0x600),
        expected_len: 4 * BLOCK as u32,
        cmd_sn: exp,
        exp_stat_sn: StatSn(0),
        cdb: [0; 16],
        ext_cdb: Bytes::new(),
        bidi_read_len: None,
    };
    cmd.set_cdb(Command::Write(ReadWrite::new(8, 4)).build().as_bytes());
    let head = Head {
        header: Header::ScsiCommand(cmd),
        header_len: 48,
        data_len: 4 * BLOCK,
        padding: 0,
    };
    let route = pair.target.handle_head(&head, pair.now);
    assert_eq!(
        route,
        Route::Task {
            itt: Itt(0x600),
            offset: 0
        }
    );
    let mut events = Vec::new();
    while let Some(e) = pair.target.poll_event() {
        events.push(e);
    }
    assert!(
        matches!(events.as_slice(), [Event::Command(c)] if c.itt == Itt(0x600)),
        "{events:?}"
    );
    pair.target.segment_done();
    assert!(matches!(pair.target.poll_event(), Some(Event::Ready(Itt(0x600)))));
    pair.target.respond(
        Itt(0x600),
        Response {
            status: ScsiStatus::GOOD,
            sense: None,
            data: None,
            transfer_len: 4 * BLOCK as u64,
        },
    );
    assert!(matches!(
        pair.target.poll_transmit().map(|t| t.header),
        Some(Header::ScsiResponse(r)) if r.itt == Itt(0x600) && r.status == ScsiStatus::GOOD
    ));
    assert_eq!(pair.target.commands_in_flight(), 0);
}

#[test]
fn a_short_read_keeps_what_was_sent() {
    let mut pair = Link::defaults();
    pair.disk.blocks[..BLOCK].copy_from_slice(&pattern(BLOCK, 9));
    // 2 blocks expected, the disk's READ answers only what its CDB asked:
    // one block, and an underflow of the other.
    let cdb = Command::Read(ReadWrite::new(0, 1)).build();
    let r = pair.submit(Request::Scsi {
        lun: LUN,
        cdb: cdb.as_bytes().to_vec(),
        data_out: Bytes::new(),
        read_len: 2 * BLOCK as u32,
    });
    let (status, data, _) = pair.completed(r);
    assert_eq!((status, &data[..]), (ScsiStatus::GOOD, &pattern(BLOCK, 9)[..]));
    assert!(matches!(
        pair.answer(r),
        Some(initiator::Event::Completed {
            residual: Residual::Underflow(512),
            ..
        })
    ));
}

#[test]
fn a_long_read_is_cut_to_the_expected_length() {
    let mut pair = Link::defaults();
    pair.disk.blocks[..2 * BLOCK].copy_from_slice(&pattern(2 * BLOCK, 4));
    let cdb = Command::Read(ReadWrite::new(0, 2)).build();
    let r = pair.submit(Request::Scsi {
        lun: LUN,
        cdb: cdb.as_bytes().to_vec(),
        data_out: Bytes::new(),
        read_len: BLOCK as u32,
    });
    let (status, data, _) = pair.completed(r);
    assert_eq!((status, &data[..]), (ScsiStatus::GOOD, &pattern(2 * BLOCK, 4)[..BLOCK]));
    assert!(matches!(
        pair.answer(r),
        Some(initiator::Event::Completed {
            residual: Residual::Overflow(512),
            ..
        })
    ));
    // Status rides in the last Data-In when there is no sense.
    let last = pair.to_initiator.iter().rev().find_map(|h| match h {
        Header::DataIn(d) => Some(d.status),
        _ => None,
    });
    assert_eq!(last, Some(Some(ScsiStatus::GOOD)));
    assert!(!pair.to_initiator.iter().any(|h| matches!(h, Header::ScsiResponse(_))));
}
