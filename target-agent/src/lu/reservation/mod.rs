//! Reservations: which I_T nexus may use the logical unit, and how.
//!
//! Two methods, never at once:
//!
//! - SPC-2 RESERVE (6) / RELEASE (6): the whole logical unit belongs to one
//!   I_T nexus until it releases it, its session ends, or a LOGICAL UNIT
//!   RESET or target reset happens. Other nexuses get RESERVATION CONFLICT
//!   for everything but the commands SPC-2 lets through (INQUIRY, REPORT
//!   LUNS, REQUEST SENSE, RELEASE, READ CAPACITY, ...).
//! - SPC-4 persistent reservations (PERSISTENT RESERVE IN/OUT): nexuses
//!   register keys, one reserves with a type (Write Exclusive, Exclusive
//!   Access, their Registrants Only and All Registrants forms) that says
//!   who else may read and write. They survive resets and session loss;
//!   they live in memory only, so APTPL (persist through power loss) is
//!   refused and REPORT CAPABILITIES says so.
//!
//! While a RESERVE (6) reservation exists every PERSISTENT RESERVE command
//! conflicts; while registrations exist RESERVE (6) and RELEASE (6)
//! conflict, except from a nexus the persistent reservation already lets
//! in (SPC-4 "exceptions to SPC-2 RESERVE and RELEASE behavior", CRH = 1),
//! where they succeed without doing anything.
//!
//! Unit attentions that PERSISTENT RESERVE OUT establishes for other
//! nexuses (REGISTRATIONS PREEMPTED, RESERVATIONS PREEMPTED, RESERVATIONS
//! RELEASED) are queued here, per nexus, for the transport to report.
//!
//! # Layout
//!
//! - `mod.rs` — [`Nexus`]; the reservation state of a logical unit and
//!   what it lets through: which commands conflict, RESERVE (6) and
//!   RELEASE (6), unit attentions, and the commands' way in from
//!   [`LogicalUnit`].
//! - `persistent.rs` — PERSISTENT RESERVE IN and OUT: what each service
//!   action reports from, or does to, the registrations and the
//!   persistent reservation.

mod persistent;

pub(super) use persistent::admit_persistent_reserve_out;

use super::{Completion, LogicalUnit};
use iscsi_proto::pdu::Isid;
use iscsi_proto::scsi::data::iscsi_transport_id;
use iscsi_proto::scsi::{AdditionalSense, Command, PersistentReservationType, Sense};
use std::collections::VecDeque;
use std::fmt;

/// An I_T nexus as the logical unit knows it: the initiator port (iSCSI
/// initiator name and ISID, RFC 7143 / SAM-5), there being one target port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nexus {
    initiator_name: String,
    isid: Isid,
    /// The initiator port's TransportID, for READ FULL STATUS.
    transport_id: Vec<u8>,
}

impl Nexus {
    pub fn new(initiator_name: impl Into<String>, isid: Isid) -> Self {
        let initiator_name = initiator_name.into();
        let transport_id = iscsi_transport_id(&initiator_name, isid);
        Self {
            initiator_name,
            isid,
            transport_id,
        }
    }

    pub fn initiator_name(&self) -> &str {
        &self.initiator_name
    }

    pub fn isid(&self) -> Isid {
        self.isid
    }

    /// The iSCSI initiator port TransportID (SPC-4 format 01b).
    pub fn transport_id(&self) -> &[u8] {
        &self.transport_id
    }
}

impl fmt::Display for Nexus {
    /// The iSCSI initiator port name: `<name>,i,0x<ISID>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},i,0x", self.initiator_name)?;
        self.isid.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Unit attentions waiting at most, over all nexuses (the oldest go).
const MAX_UNIT_ATTENTIONS: usize = 256;

#[derive(Debug, Clone)]
struct Registration {
    nexus: Nexus,
    key: u64,
    all_tg_pt: bool,
}

#[derive(Debug, Clone)]
struct Persistent {
    /// Who reserved; for the all registrants types every registrant holds
    /// the reservation and this is only who made it.
    holder: Nexus,
    pr_type: PersistentReservationType,
    scope: u8,
}

/// How a command fares against a persistent reservation held by another
/// nexus (SPC-4 and SBC-3 "commands allowed in the presence of various
/// reservations"), when the nexus has no registrant access of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Never conflicts (or applies its own rules, as PERSISTENT RESERVE
    /// OUT and RESERVE/RELEASE do).
    Allowed,
    /// Reads the medium or the unit's state: allowed by the Write
    /// Exclusive types, a conflict under Exclusive Access.
    Read,
    /// Changes the medium or the unit's state: a conflict.
    Write,
}

fn persistent_access(cmd: &Command) -> Access {
    match cmd {
        Command::Inquiry { .. }
        | Command::ReportLuns { .. }
        | Command::RequestSense { .. }
        | Command::TestUnitReady
        | Command::ReadCapacity10
        | Command::ReadCapacity16 { .. }
        | Command::PersistentReserveIn(_)
        | Command::PersistentReserveOut(_)
        | Command::Reserve6
        | Command::Release6
        | Command::PreventAllowMediumRemoval { prevent: 0 } => Access::Allowed,
        Command::StartStopUnit(s) if s.start && s.power_condition == 0 => Access::Allowed,
        Command::Read(_)
        | Command::Verify(_)
        | Command::PreFetch(_)
        | Command::GetLbaStatus { .. }
        | Command::ModeSense6(_)
        | Command::ModeSense10(_)
        | Command::ReportSupportedOperationCodes(_) => Access::Read,
        _ => Access::Write,
    }
}

/// Whether a command goes through a RESERVE (6) reservation held by
/// another nexus (SPC-2 and its SBC table): identification, sense, capacity,
/// RELEASE (which then does nothing), and what cannot disturb the holder.
fn allowed_by_reserve_6(cmd: &Command) -> bool {
    match cmd {
        Command::Inquiry { .. }
        | Command::ReportLuns { .. }
        | Command::RequestSense { .. }
        | Command::ReadCapacity10
        | Command::ReadCapacity16 { .. }
        | Command::Release6
        | Command::PreventAllowMediumRemoval { prevent: 0 } => true,
        Command::StartStopUnit(s) => s.start && s.power_condition == 0,
        _ => false,
    }
}

/// Why a reservation command did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Conflict,
    Sense(Sense),
}

impl From<Sense> for Refusal {
    fn from(s: Sense) -> Self {
        Self::Sense(s)
    }
}

/// The reservation state of one logical unit.
#[derive(Debug, Default)]
pub(super) struct Reservations {
    /// RESERVE (6) holder.
    reserved_by: Option<Nexus>,
    /// PRGENERATION.
    generation: u32,
    registrations: Vec<Registration>,
    reservation: Option<Persistent>,
    unit_attentions: VecDeque<(Nexus, AdditionalSense)>,
}

impl Reservations {
    fn registration(&self, nexus: &Nexus) -> Option<&Registration> {
        self.registrations.iter().find(|r| r.nexus == *nexus)
    }

    /// Whether `nexus` holds the persistent reservation: the nexus that
    /// reserved, or for the all registrants types any registered one.
    fn holds(&self, nexus: &Nexus) -> bool {
        match &self.reservation {
            Some(r) if r.pr_type.all_registrants() => self.registration(nexus).is_some(),
            Some(r) => r.holder == *nexus,
            None => false,
        }
    }

    /// Whether the persistent reservation lets `nexus` do anything: it
    /// holds it, or it is registered and the type is Registrants Only.
    fn has_access(&self, nexus: &Nexus) -> bool {
        self.holds(nexus)
            || self
                .reservation
                .as_ref()
                .is_some_and(|r| r.pr_type.registrants_only() && self.registration(nexus).is_some())
    }

    /// Whether `cmd` from `nexus` is to be answered RESERVATION CONFLICT
    /// before anything else is looked at.
    pub(super) fn conflicts(&self, nexus: &Nexus, cmd: &Command) -> bool {
        if let Some(holder) = &self.reserved_by {
            // SPC-3/SPC-4 (exceptions to SPC-2 RESERVE and RELEASE): while
            // a RESERVE reservation exists every PERSISTENT RESERVE IN and
            // OUT conflicts, whichever nexus sends it and whatever the
            // service action.
            if matches!(cmd, Command::PersistentReserveIn(_) | Command::PersistentReserveOut(_)) {
                return true;
            }
            return holder != nexus && !allowed_by_reserve_6(cmd);
        }
        let Some(r) = &self.reservation else {
            return false;
        };
        if self.has_access(nexus) {
            return false;
        }
        match persistent_access(cmd) {
            Access::Allowed => false,
            Access::Read => !r.pr_type.reads_shared(),
            Access::Write => true,
        }
    }

    /// Queue a unit attention for `nexus` (once per condition).
    fn establish(&mut self, nexus: &Nexus, condition: AdditionalSense) {
        if self.unit_attentions.iter().any(|(n, c)| n == nexus && *c == condition) {
            return;
        }
        if self.unit_attentions.len() >= MAX_UNIT_ATTENTIONS {
            self.unit_attentions.pop_front();
        }
        self.unit_attentions.push_back((nexus.clone(), condition));
    }

    /// Queue `condition` for every registrant but `except`.
    fn establish_for_registrants(&mut self, except: &Nexus, condition: AdditionalSense) {
        let others: Vec<Nexus> = self
            .registrations
            .iter()
            .filter(|r| r.nexus != *except)
            .map(|r| r.nexus.clone())
            .collect();
        for n in &others {
            self.establish(n, condition);
        }
    }

    fn take_unit_attention(&mut self, nexus: &Nexus) -> Option<AdditionalSense> {
        let at = self.unit_attentions.iter().position(|(n, _)| n == nexus)?;
        self.unit_attentions.remove(at).map(|(_, c)| c)
    }

    /// SPC-4 5.7.3 (CRH = 1): while registrations exist, RESERVE and
    /// RELEASE "shall complete with GOOD status" without effect when they
    /// come from the persistent reservation holder or, for the Registrants
    /// Only and All Registrants types, from a registrant; from anyone else
    /// they conflict.
    fn compatible_reservation_handling(&self, nexus: &Nexus) -> Result<(), Refusal> {
        let lets_in = self.holds(nexus)
            || self.reservation.as_ref().is_some_and(|r| {
                (r.pr_type.registrants_only() || r.pr_type.all_registrants()) && self.registration(nexus).is_some()
            });
        if lets_in { Ok(()) } else { Err(Refusal::Conflict) }
    }

    fn reserve_6(&mut self, nexus: &Nexus) -> Result<(), Refusal> {
        if !self.registrations.is_empty() {
            return self.compatible_reservation_handling(nexus);
        }
        match &self.reserved_by {
            // SPC-2: a reservation held by another initiator conflicts; the
            // holder may reserve again.
            Some(holder) if holder != nexus => Err(Refusal::Conflict),
            _ => {
                self.reserved_by = Some(nexus.clone());
                Ok(())
            }
        }
    }

    /// SPC-2: RELEASE from a nexus that does not hold the reservation is
    /// GOOD and releases nothing.
    fn release_6(&mut self, nexus: &Nexus) -> Result<(), Refusal> {
        if !self.registrations.is_empty() {
            return self.compatible_reservation_handling(nexus);
        }
        if self.reserved_by.as_ref() == Some(nexus) {
            self.reserved_by = None;
        }
        Ok(())
    }

    /// The end of `nexus`: its RESERVE (6) reservation goes.
    fn nexus_lost(&mut self, nexus: &Nexus) {
        if self.reserved_by.as_ref() == Some(nexus) {
            self.reserved_by = None;
        }
    }
}

impl LogicalUnit {
    /// RESERVE (6), RELEASE (6), PERSISTENT RESERVE IN and OUT from
    /// `nexus`, after the checks every command passes.
    pub(super) fn reservation_command(&self, nexus: &Nexus, cmd: &Command, data_out: &[u8]) -> Completion {
        let mut state = self.reservations();
        let outcome = match cmd {
            Command::Reserve6 => state.reserve_6(nexus).map(|()| Vec::new()),
            Command::Release6 => state.release_6(nexus).map(|()| Vec::new()),
            Command::PersistentReserveIn(r) => Ok(state.persistent_reserve_in(r)),
            Command::PersistentReserveOut(r) => state.persistent_reserve_out(nexus, r, data_out).map(|()| Vec::new()),
            _ => Err(Refusal::Sense(Sense::invalid_command_operation_code())),
        };
        drop(state);
        match outcome {
            Ok(data) => Completion::good(data),
            Err(Refusal::Conflict) => {
                tracing::debug!(%nexus, ?cmd, "reservation conflict");
                Completion::reservation_conflict()
            }
            Err(Refusal::Sense(sense)) => Completion::check_condition(sense),
        }
    }

    /// The I_T nexus is gone (logout, connection loss, reinstatement):
    /// SPC-2 has its RESERVE (6) reservation released. Persistent
    /// reservations and registrations stay, as SPC-4 requires.
    pub fn nexus_lost(&self, nexus: &Nexus) {
        self.reservations().nexus_lost(nexus);
    }

    /// LOGICAL UNIT RESET, TARGET WARM RESET or TARGET COLD RESET: SAM-5
    /// has a reset release reservations made with RESERVE (persistent
    /// reservations are unaffected) and, as a hard reset, return mode
    /// parameters to their defaults (we save none): the write cache to its
    /// configured state, software write protect off.
    pub fn reset(&self) {
        self.reservations().reserved_by = None;
        self.write_cache
            .store(self.default_write_cache, std::sync::atomic::Ordering::Relaxed);
        self.swp.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The oldest unit attention a PERSISTENT RESERVE OUT from another
    /// nexus established for `nexus`, now reported (and so cleared).
    pub fn take_unit_attention(&self, nexus: &Nexus) -> Option<AdditionalSense> {
        self.reservations().take_unit_attention(nexus)
    }
}
