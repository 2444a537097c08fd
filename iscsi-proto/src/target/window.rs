//! The target's command window (RFC 7143 4.2.2.1): ExpCmdSN and MaxCmdSN
//! for one session, and a slot for every command admitted in order.
//!
//! The window closes as commands are admitted and reopens as they end.
//! Each admitted command holds a [`Slot`]; dropping the slot reopens the
//! window by one, so a command that ends by any path (answered, aborted,
//! failed, its connection gone) frees its slot exactly once.

use crate::CmdSn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// What the target does with an arriving request that carries a CmdSN.
#[derive(Debug)]
pub enum Admission {
    /// Immediate delivery: CmdSN not advanced, no slot taken.
    Immediate,
    /// The next command in order: deliver it; it holds `Slot` until it ends.
    InOrder(Slot),
    /// Inside the window but ahead of a gap: hold it until the gap fills.
    Early,
    /// "An iSCSI target MUST silently ignore any non-immediate command
    /// outside of this range or non-immediate duplicates within the range."
    Ignore,
}

/// One command's place in the window, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// ExpCmdSN and MaxCmdSN of one session, `depth` commands wide. MaxCmdSN
/// tells the initiator exactly how many more commands the target will
/// queue, and never moves backwards.
#[derive(Debug)]
pub struct Window {
    exp_cmd_sn: CmdSn,
    depth: u32,
    in_flight: Arc<AtomicU32>,
}

impl Window {
    /// A window whose first expected command is `first` (the CmdSN of the
    /// leading Login Request), `depth` commands wide (at least 1).
    #[must_use]
    pub fn new(first: CmdSn, depth: u32) -> Self {
        Self {
            exp_cmd_sn: first,
            depth: depth.max(1),
            in_flight: Arc::default(),
        }
    }

    #[must_use]
    pub fn exp_cmd_sn(&self) -> CmdSn {
        self.exp_cmd_sn
    }

    /// Commands admitted whose slots are still held.
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// ExpCmdSN - 1 when the window is closed ("MaxCmdSN ... ExpCmdSN-1
    /// ... the window is closed").
    #[must_use]
    pub fn max_cmd_sn(&self) -> CmdSn {
        let open = self.depth.saturating_sub(self.in_flight());
        self.exp_cmd_sn.add(open.wrapping_sub(1))
    }

    /// Decide about a request with `cmd_sn`.
    pub fn admit(&mut self, cmd_sn: CmdSn, immediate: bool) -> Admission {
        if immediate {
            return Admission::Immediate;
        }
        if cmd_sn == self.exp_cmd_sn && self.in_flight() < self.depth {
            self.exp_cmd_sn = self.exp_cmd_sn.next();
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Admission::InOrder(Slot(self.in_flight.clone()));
        }
        if self.exp_cmd_sn.lt(cmd_sn) && cmd_sn.le(self.max_cmd_sn()) {
            return Admission::Early;
        }
        Admission::Ignore
    }

    /// Whether `cmd_sn` is inside the window's range ExpCmdSN..=MaxCmdSN
    /// and before `before` (RFC 7143 11.5.1's RefCmdSN rule for a task not
    /// received yet).
    #[must_use]
    pub fn expects_before(&self, cmd_sn: CmdSn, before: CmdSn) -> bool {
        self.exp_cmd_sn.le(cmd_sn) && cmd_sn.lt(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_opens_and_closes() {
        let mut w = Window::new(CmdSn(u32::MAX - 1), 3);
        assert_eq!(w.max_cmd_sn(), CmdSn(0));
        let first = w.admit(CmdSn(u32::MAX - 1), false);
        assert!(matches!(first, Admission::InOrder(_)));
        assert!(
            matches!(w.admit(CmdSn(0), false), Admission::Early),
            "ahead of the gap at u32::MAX"
        );
        assert!(matches!(w.admit(CmdSn(1), false), Admission::Ignore), "beyond MaxCmdSN");
        let second = w.admit(CmdSn(u32::MAX), false);
        let third = w.admit(CmdSn(0), false);
        assert!(matches!(
            (&second, &third),
            (Admission::InOrder(_), Admission::InOrder(_))
        ));
        assert_eq!(w.max_cmd_sn(), CmdSn(0), "closed: MaxCmdSN = ExpCmdSN - 1");
        assert!(matches!(w.admit(CmdSn(1), false), Admission::Ignore), "window closed");
        assert!(matches!(w.admit(CmdSn(1), true), Admission::Immediate));
        drop(first);
        assert_eq!(w.max_cmd_sn(), CmdSn(1), "a dropped slot reopens the window");
        assert!(matches!(w.admit(CmdSn(0), false), Admission::Ignore), "duplicate");
        assert!(matches!(w.admit(CmdSn(1), false), Admission::InOrder(_)));
    }

    proptest! {
        /// Against a model: however commands arrive and end, MaxCmdSN never
        /// goes back and the window holds exactly the commands not ended.
        #[test]
        fn slots_match_a_model(steps in proptest::collection::vec((0u32..6, any::<bool>()), 1..200)) {
            let mut w = Window::new(CmdSn(10), 4);
            let mut held: Vec<Slot> = Vec::new();
            let mut max = w.max_cmd_sn();
            for (delta, end_one) in steps {
                if end_one && !held.is_empty() {
                    held.remove(0);
                } else if let Admission::InOrder(slot) = w.admit(w.exp_cmd_sn().add(delta), false) {
                    prop_assert_eq!(delta, 0);
                    held.push(slot);
                }
                prop_assert_eq!(w.in_flight() as usize, held.len());
                prop_assert!(!w.max_cmd_sn().lt(max), "MaxCmdSN went back");
                max = w.max_cmd_sn();
            }
        }
    }
}
