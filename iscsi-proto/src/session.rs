//! Sequence-number bookkeeping for a session and its connections
//! (RFC 7143 sections 4.2.2 and 11.4.*): the initiator's view of the
//! command window, StatSN on both sides. The target's window is
//! [`crate::target::window`].

use crate::pdu::Header;
use crate::{CmdSn, StatSn};

/// The initiator's view of the window: which CmdSN the next command takes
/// and whether the target will accept it.
#[derive(Debug, Clone)]
pub struct CommandSequencer {
    next: CmdSn,
    exp_cmd_sn: CmdSn,
    max_cmd_sn: CmdSn,
}

impl CommandSequencer {
    /// From the final Login Response: the first CmdSN to use is the one the
    /// login carried, and the target's ExpCmdSN/MaxCmdSN.
    #[must_use]
    pub fn new(next: CmdSn, exp_cmd_sn: CmdSn, max_cmd_sn: CmdSn) -> Self {
        let mut s = Self {
            next,
            exp_cmd_sn,
            max_cmd_sn: exp_cmd_sn.add(u32::MAX),
        };
        s.update(exp_cmd_sn, max_cmd_sn);
        s
    }

    /// Apply ExpCmdSN and MaxCmdSN from any target PDU that carries them.
    ///
    /// RFC 7143 4.2.2.1: "If the PDU MaxCmdSN is less than the PDU
    /// ExpCmdSN-1 (in serial arithmetic sense), they are both ignored. If the
    /// PDU MaxCmdSN is greater than the local MaxCmdSN ..., it updates the
    /// local MaxCmdSN; otherwise, it is ignored. If the PDU ExpCmdSN is
    /// greater than the local ExpCmdSN ..., it updates the local ExpCmdSN."
    pub fn update(&mut self, exp_cmd_sn: CmdSn, max_cmd_sn: CmdSn) {
        if max_cmd_sn.lt(exp_cmd_sn.add(u32::MAX)) {
            return;
        }
        if max_cmd_sn.gt(self.max_cmd_sn) {
            self.max_cmd_sn = max_cmd_sn;
        }
        if exp_cmd_sn.gt(self.exp_cmd_sn) {
            self.exp_cmd_sn = exp_cmd_sn;
        }
    }

    /// How many more non-immediate commands the window admits now.
    #[must_use]
    pub fn credits(&self) -> u32 {
        let d = self.next.serial().distance_to(self.max_cmd_sn.serial()) + 1;
        u32::try_from(d.max(0)).unwrap_or(0)
    }

    /// The CmdSN for a new non-immediate command, if the window is open.
    pub fn take(&mut self) -> Option<CmdSn> {
        (self.credits() > 0).then(|| {
            let sn = self.next;
            self.next = self.next.next();
            sn
        })
    }

    /// The CmdSN an immediate command carries (RFC 7143 3.2.2.1: the next
    /// one, without advancing).
    #[must_use]
    pub fn immediate(&self) -> CmdSn {
        self.next
    }

    #[must_use]
    pub fn exp_cmd_sn(&self) -> CmdSn {
        self.exp_cmd_sn
    }

    #[must_use]
    pub fn max_cmd_sn(&self) -> CmdSn {
        self.max_cmd_sn
    }

    /// Whether the target has acknowledged (received) every command sent.
    #[must_use]
    pub fn all_acknowledged(&self) -> bool {
        self.exp_cmd_sn == self.next
    }
}

/// The StatSN a target assigns on one connection.
#[derive(Debug, Clone)]
pub struct StatSnCounter {
    next: StatSn,
}

impl StatSnCounter {
    #[must_use]
    pub fn new(first: StatSn) -> Self {
        Self { next: first }
    }

    /// The StatSN for a new status-bearing PDU.
    pub fn take(&mut self) -> StatSn {
        let sn = self.next;
        self.next = self.next.next();
        sn
    }

    /// The StatSN carried, without consuming one, by PDUs that do not
    /// advance it (R2T, NOP-In pings, Data-In without status).
    #[must_use]
    pub fn peek(&self) -> StatSn {
        self.next
    }
}

/// Fill in the sequence numbers of a target PDU as it leaves: a StatSN
/// (consumed by status-bearing PDUs, merely carried by the others, see
/// [`Header::stat_sn`]), and the window's ExpCmdSN and MaxCmdSN.
pub fn stamp(header: &mut Header, stat_sn: &mut StatSnCounter, exp_cmd_sn: CmdSn, max_cmd_sn: CmdSn) {
    let sn = if header.stat_sn().is_some() {
        stat_sn.take()
    } else {
        stat_sn.peek()
    };
    macro_rules! set {
        ($h:expr) => {{
            $h.stat_sn = sn;
            $h.exp_cmd_sn = exp_cmd_sn;
            $h.max_cmd_sn = max_cmd_sn;
        }};
    }
    match header {
        Header::NopIn(h) => set!(h),
        Header::ScsiResponse(h) => set!(h),
        Header::TaskMgmtResponse(h) => set!(h),
        Header::LoginResponse(h) => set!(h),
        Header::TextResponse(h) => set!(h),
        Header::DataIn(h) => set!(h),
        Header::LogoutResponse(h) => set!(h),
        Header::R2t(h) => set!(h),
        Header::AsyncMessage(h) => set!(h),
        Header::Reject(h) => set!(h),
        _ => {}
    }
}

/// The ExpStatSN an initiator acknowledges on one connection.
#[derive(Debug, Clone)]
pub struct ExpStatSn {
    exp: StatSn,
}

impl ExpStatSn {
    #[must_use]
    pub fn new(exp: StatSn) -> Self {
        Self { exp }
    }

    /// Note a status with `stat_sn`; only forward movement counts.
    pub fn received(&mut self, stat_sn: StatSn) {
        if stat_sn.next().gt(self.exp) {
            self.exp = stat_sn.next();
        }
    }

    #[must_use]
    pub fn get(&self) -> StatSn {
        self.exp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::window::{Admission, Window};
    use proptest::prelude::*;

    #[test]
    fn sequencer_ignores_stale_and_bogus_updates() {
        let mut s = CommandSequencer::new(CmdSn(10), CmdSn(10), CmdSn(12));
        assert_eq!(s.credits(), 3);
        assert_eq!(s.take(), Some(CmdSn(10)));
        s.update(CmdSn(11), CmdSn(9));
        assert_eq!(s.max_cmd_sn(), CmdSn(12), "MaxCmdSN < ExpCmdSN - 1: both ignored");
        assert_eq!(s.exp_cmd_sn(), CmdSn(10));
        s.update(CmdSn(11), CmdSn(11));
        assert_eq!(s.max_cmd_sn(), CmdSn(12), "no shrinking");
        assert_eq!(s.exp_cmd_sn(), CmdSn(11));
        assert_eq!(s.take(), Some(CmdSn(11)));
        assert_eq!(s.take(), Some(CmdSn(12)));
        assert_eq!(s.take(), None);
        assert_eq!(s.immediate(), CmdSn(13));
        s.update(CmdSn(13), CmdSn(20));
        assert!(s.all_acknowledged());
        assert_eq!(s.credits(), 8);
    }

    #[test]
    fn stat_sn_tracking() {
        let mut c = StatSnCounter::new(StatSn(u32::MAX));
        assert_eq!(c.take(), StatSn(u32::MAX));
        assert_eq!(c.peek(), StatSn(0));
        let mut e = ExpStatSn::new(StatSn(5));
        e.received(StatSn(7));
        e.received(StatSn(6));
        assert_eq!(e.get(), StatSn(8));
    }

    #[test]
    fn stamping_consumes_stat_sn_only_for_status() {
        use crate::pdu::{NopIn, R2t, Reject, RejectReason};
        use crate::{Itt, Lun, R2tSn, Ttt};
        let mut counter = StatSnCounter::new(StatSn(7));
        let mut r2t = Header::R2t(R2t {
            lun: Lun::ZERO,
            itt: Itt(1),
            ttt: Ttt(2),
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
            r2t_sn: R2tSn(0),
            buffer_offset: 0,
            desired_len: 1,
        });
        stamp(&mut r2t, &mut counter, CmdSn(3), CmdSn(9));
        let Header::R2t(h) = &r2t else { unreachable!() };
        assert_eq!((h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn), (StatSn(7), CmdSn(3), CmdSn(9)));
        let mut reject = Header::Reject(Reject::new(RejectReason::PROTOCOL_ERROR, StatSn(0), CmdSn(0), CmdSn(0)));
        stamp(&mut reject, &mut counter, CmdSn(3), CmdSn(9));
        assert_eq!(reject.stat_sn(), Some(StatSn(7)));
        let mut ping = Header::NopIn(NopIn {
            lun: Lun::ZERO,
            itt: Itt::RESERVED,
            ttt: Ttt(5),
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
        });
        stamp(&mut ping, &mut counter, CmdSn(3), CmdSn(9));
        assert_eq!(
            counter.peek(),
            StatSn(8),
            "a ping carries the next StatSN without using it"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Send,
        Complete,
        Immediate,
    }

    proptest! {
        /// The target window and initiator sequencer, driven together from
        /// any starting CmdSN, agree with a model in unbounded integers.
        #[test]
        fn window_matches_model(
            start: u32,
            depth in 1u32..16,
            ops in proptest::collection::vec(prop_oneof![Just(Op::Send), Just(Op::Complete), Just(Op::Immediate)], 0..200),
        ) {
            let mut window = Window::new(CmdSn(start), depth);
            let mut slots = std::collections::VecDeque::new();
            let mut seq = CommandSequencer::new(CmdSn(start), window.exp_cmd_sn(), window.max_cmd_sn());
            let (mut sent, mut done) = (0u64, 0u64);
            for op in ops {
                match op {
                    Op::Send => match seq.take() {
                        Some(sn) => {
                            prop_assert!(sent - done < u64::from(depth));
                            prop_assert_eq!(sn, CmdSn(start.wrapping_add(sent as u32)));
                            let Admission::InOrder(slot) = window.admit(sn, false) else {
                                return Err(TestCaseError::fail("an in-order command not admitted"));
                            };
                            slots.push_back(slot);
                            sent += 1;
                        }
                        None => prop_assert_eq!(sent - done, u64::from(depth)),
                    },
                    Op::Complete => if done < sent {
                        slots.pop_front();
                        done += 1;
                    },
                    Op::Immediate => prop_assert!(matches!(window.admit(seq.immediate(), true), Admission::Immediate)),
                }
                seq.update(window.exp_cmd_sn(), window.max_cmd_sn());
                prop_assert_eq!(u64::from(seq.credits()), u64::from(depth) - (sent - done));
                prop_assert_eq!(u64::from(window.in_flight()), sent - done);
            }
        }
    }
}
