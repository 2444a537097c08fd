//! Sequence numbers and task tags.
//!
//! RFC 7143 section 4.2.2.1: "The iSCSI protocol uses serial number arithmetic
//! as defined in [RFC1982] ... with SERIAL_BITS = 32". Every counter that wraps
//! (`CmdSN`, `StatSN`, `DataSN`, `R2TSN`) is a newtype over a 32-bit serial
//! number so that comparisons never use plain `<` by accident.

use core::cmp::Ordering;
use core::fmt;

/// A 32-bit RFC 1982 serial number.
///
/// Comparison is partial: two numbers exactly 2^31 apart are unordered
/// (RFC 1982 section 3.2 leaves that case undefined), so `partial_cmp`
/// returns `None` for them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Serial(pub u32);

impl Serial {
    /// RFC 1982 addition: `n` must lie in `0..=2^31 - 1`; larger additions are
    /// undefined there, and here they simply wrap.
    #[must_use]
    pub const fn add(self, n: u32) -> Self {
        Self(self.0.wrapping_add(n))
    }

    /// Signed distance from `self` to `later` (positive when `later` is ahead).
    #[must_use]
    pub const fn distance_to(self, later: Self) -> i64 {
        // Two's complement wrap gives the RFC 1982 answer for every defined case.
        later.0.wrapping_sub(self.0) as i32 as i64
    }

    /// `self < other` in serial arithmetic.
    #[must_use]
    pub fn lt(self, other: Self) -> bool {
        self.partial_cmp(&other) == Some(Ordering::Less)
    }

    /// `self <= other` in serial arithmetic.
    #[must_use]
    pub fn le(self, other: Self) -> bool {
        self == other || self.lt(other)
    }

    /// `self > other` in serial arithmetic.
    #[must_use]
    pub fn gt(self, other: Self) -> bool {
        other.lt(self)
    }
}

impl PartialOrd for Serial {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let (a, b) = (self.0, other.0);
        if a == b {
            return Some(Ordering::Equal);
        }
        let d = b.wrapping_sub(a);
        match d.cmp(&(1 << 31)) {
            Ordering::Less => Some(Ordering::Less),
            Ordering::Greater => Some(Ordering::Greater),
            Ordering::Equal => None,
        }
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! serial_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub u32);

        impl $name {
            /// The serial number that follows this one.
            #[must_use]
            pub const fn next(self) -> Self {
                Self(self.0.wrapping_add(1))
            }

            /// This number advanced by `n` (RFC 1982 addition).
            #[must_use]
            pub const fn add(self, n: u32) -> Self {
                Self(self.0.wrapping_add(n))
            }

            /// The number as an RFC 1982 serial, for comparisons.
            #[must_use]
            pub const fn serial(self) -> Serial {
                Serial(self.0)
            }

            /// `self < other` in serial arithmetic.
            #[must_use]
            pub fn lt(self, other: Self) -> bool {
                self.serial().lt(other.serial())
            }

            /// `self <= other` in serial arithmetic.
            #[must_use]
            pub fn le(self, other: Self) -> bool {
                self.serial().le(other.serial())
            }

            /// `self > other` in serial arithmetic.
            #[must_use]
            pub fn gt(self, other: Self) -> bool {
                self.serial().gt(other.serial())
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                self.serial().partial_cmp(&other.serial())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

serial_newtype!(
    /// Command sequence number: orders non-immediate commands in a session.
    CmdSn
);
serial_newtype!(
    /// Status sequence number: orders responses on one connection.
    StatSn
);
serial_newtype!(
    /// Data-In / Data-Out PDU number within one task (also a SNACK's BegRun).
    DataSn
);
serial_newtype!(
    /// R2T number within one task.
    R2tSn
);

macro_rules! tag_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub u32);

        impl $name {
            /// `0xffffffff`: "reserved" / "not used" (RFC 7143 sections 11.18, 11.19).
            pub const RESERVED: Self = Self(0xffff_ffff);

            /// Whether this is the reserved all-ones value.
            #[must_use]
            pub const fn is_reserved(self) -> bool {
                self.0 == Self::RESERVED.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#010x})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#010x}", self.0)
            }
        }
    };
}

tag_newtype!(
    /// Initiator Task Tag: names a task within a session, chosen by the initiator.
    Itt
);
tag_newtype!(
    /// Target Transfer Tag: names a solicited transfer, chosen by the target.
    Ttt
);

/// Hands out task tags that are unique among the ones in use and never the
/// reserved `0xffffffff`.
///
/// The allocator only counts; the caller knows which tags are still live and
/// calls [`TagAllocator::next_free`] with that knowledge.
#[derive(Debug, Clone, Default)]
pub struct TagAllocator {
    next: u32,
}

impl TagAllocator {
    /// An allocator whose first tag is `first` (or 0 when that is reserved).
    #[must_use]
    pub const fn starting_at(first: u32) -> Self {
        Self { next: first }
    }

    /// The next tag, skipping the reserved value.
    pub fn next_tag(&mut self) -> u32 {
        if self.next == u32::MAX {
            self.next = 0;
        }
        let tag = self.next;
        self.next = self.next.wrapping_add(1);
        tag
    }

    /// The next tag for which `in_use` is false. Gives up (returns `None`)
    /// after `limit` candidates, so a full table cannot loop forever.
    pub fn next_free(&mut self, limit: u32, mut in_use: impl FnMut(u32) -> bool) -> Option<u32> {
        (0..limit).map(|_| self.next_tag()).find(|&tag| !in_use(tag))
    }

    /// The next initiator task tag.
    pub fn next_itt(&mut self) -> Itt {
        Itt(self.next_tag())
    }

    /// The next target transfer tag.
    pub fn next_ttt(&mut self) -> Ttt {
        Ttt(self.next_tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The RFC 1982 definition, spelled out literally (section 3.2).
    fn model_lt(i1: u32, i2: u32) -> Option<bool> {
        let (i1, i2) = (u64::from(i1), u64::from(i2));
        let half = 1u64 << 31;
        if i1 == i2 {
            return Some(false);
        }
        if (i1 < i2 && i2 - i1 < half) || (i1 > i2 && i1 - i2 > half) {
            return Some(true);
        }
        if (i1 < i2 && i2 - i1 > half) || (i1 > i2 && i1 - i2 < half) {
            return Some(false);
        }
        None
    }

    #[test]
    fn wraps_around() {
        assert!(CmdSn(0xffff_ffff).lt(CmdSn(0)));
        assert!(CmdSn(0).gt(CmdSn(0xffff_fff0)));
        assert_eq!(CmdSn(0xffff_ffff).next(), CmdSn(0));
        assert_eq!(Serial(5).partial_cmp(&Serial(5 + (1 << 31))), None);
        assert_eq!(Serial(10).distance_to(Serial(3)), -7);
        assert_eq!(Serial(0xffff_fffe).distance_to(Serial(1)), 3);
    }

    #[test]
    fn tags_skip_reserved() {
        let mut tags = TagAllocator::starting_at(0xffff_fffe);
        assert_eq!(tags.next_tag(), 0xffff_fffe);
        assert_eq!(tags.next_tag(), 0);
        assert_eq!(tags.next_tag(), 1);
        let mut tags = TagAllocator::default();
        assert_eq!(tags.next_free(10, |t| t < 3), Some(3));
        assert_eq!(tags.next_free(10, |_| true), None);
    }

    proptest! {
        #[test]
        fn comparison_agrees_with_rfc1982_model(a: u32, b: u32) {
            let ours = match Serial(a).partial_cmp(&Serial(b)) {
                Some(Ordering::Less) => Some(true),
                Some(_) => Some(false),
                None => None,
            };
            prop_assert_eq!(ours, model_lt(a, b));
        }

        #[test]
        fn near_neighbours_compare_like_integers(a: u32, d in 1u32..(1 << 31)) {
            let b = a.wrapping_add(d);
            prop_assert!(Serial(a).lt(Serial(b)));
            prop_assert!(Serial(b).gt(Serial(a)));
            prop_assert_eq!(Serial(a).distance_to(Serial(b)), i64::from(d));
        }
    }
}
