//! PERSISTENT RESERVE IN and OUT: the service actions that register keys,
//! reserve, release, clear and preempt, and the reports of what is
//! registered and reserved. They are apart from the reservation state they
//! change because they hold most of the rules and all of the parameter
//! data, while the state's own job, deciding whether a command from a
//! nexus conflicts, runs before every command and needs none of them.

use super::{Nexus, Persistent, Refusal, Registration, Reservations};
use iscsi_proto::scsi::data::{
    FullStatusDescriptor, PrOutParameterList, ReadFullStatusData, ReadKeysData, ReadReservationData,
    ReportCapabilitiesData, ReservationDescriptor, truncate_to_allocation_length,
};
use iscsi_proto::scsi::{
    AdditionalSense, PersistentReservationType, PersistentReserveIn, PersistentReserveInAction, PersistentReserveOut,
    PersistentReserveOutAction, Sense,
};

/// Registrations kept at most; one more is INSUFFICIENT REGISTRATION
/// RESOURCES. Bounds the memory a peer can make the target hold.
const MAX_REGISTRATIONS: usize = 64;
/// RELATIVE TARGET PORT IDENTIFIER of the only target port (as the Device
/// Identification VPD page reports it).
const RELATIVE_TARGET_PORT: u16 = 1;

impl Reservations {
    pub(super) fn persistent_reserve_in(&self, r: &PersistentReserveIn) -> Vec<u8> {
        let mut data = match r.service_action {
            PersistentReserveInAction::ReadKeys => ReadKeysData {
                generation: self.generation,
                keys: self.registrations.iter().map(|r| r.key).collect(),
            }
            .to_bytes(),
            PersistentReserveInAction::ReadReservation => ReadReservationData {
                generation: self.generation,
                reservation: self.reservation.as_ref().map(|r| ReservationDescriptor {
                    // SPC-4: zero for the all registrants types.
                    key: if r.pr_type.all_registrants() {
                        0
                    } else {
                        self.registration(&r.holder).map_or(0, |reg| reg.key)
                    },
                    scope: r.scope,
                    pr_type: r.pr_type,
                }),
            }
            .to_bytes(),
            PersistentReserveInAction::ReportCapabilities => ReportCapabilitiesData {
                crh: true,
                // One target port: registering "all target ports" is
                // registering this one.
                atp_c: true,
                tmv: true,
                // 001b: TEST UNIT READY is allowed through Write Exclusive
                // and Exclusive Access reservations.
                allow_commands: 1,
                type_mask: [
                    PersistentReservationType::WRITE_EXCLUSIVE,
                    PersistentReservationType::EXCLUSIVE_ACCESS,
                    PersistentReservationType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
                    PersistentReservationType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
                    PersistentReservationType::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
                    PersistentReservationType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
                ]
                .iter()
                .fold(0, |mask, t| mask | t.type_mask_bit()),
                ..ReportCapabilitiesData::default()
            }
            .to_bytes()
            .to_vec(),
            PersistentReserveInAction::ReadFullStatus => ReadFullStatusData {
                generation: self.generation,
                descriptors: self
                    .registrations
                    .iter()
                    .map(|reg| {
                        let holder = self.holds(&reg.nexus);
                        let (scope, pr_type) = match (&self.reservation, holder) {
                            (Some(r), true) => (r.scope, r.pr_type),
                            _ => (0, PersistentReservationType(0)),
                        };
                        FullStatusDescriptor {
                            key: reg.key,
                            all_tg_pt: reg.all_tg_pt,
                            reservation_holder: holder,
                            scope,
                            pr_type,
                            relative_target_port: RELATIVE_TARGET_PORT,
                            transport_id: reg.nexus.transport_id().to_vec(),
                        }
                    })
                    .collect(),
            }
            .to_bytes(),
        };
        truncate_to_allocation_length(&mut data, u32::from(r.allocation_length));
        data
    }

    pub(super) fn persistent_reserve_out(
        &mut self,
        nexus: &Nexus,
        r: &PersistentReserveOut,
        data_out: &[u8],
    ) -> Result<(), Refusal> {
        use PersistentReserveOutAction as Sa;
        let list = PrOutParameterList::parse(data_out, r.parameter_list_length).map_err(|e| e.sense())?;
        // No TransportID lists (SIP_C = 0)...
        if list.spec_i_pt {
            return Err(Sense::invalid_field_in_parameter_list(20, Some(3)).into());
        }
        let registering = matches!(r.service_action, Sa::Register | Sa::RegisterAndIgnoreExistingKey);
        // ...and nothing survives power loss (PTPL_C = 0). SPC-4 has APTPL
        // looked at only by the registering service actions.
        if registering && list.aptpl {
            return Err(Sense::invalid_field_in_parameter_list(20, Some(0)).into());
        }
        match r.service_action {
            Sa::Register => self.register(nexus, &list, false),
            Sa::RegisterAndIgnoreExistingKey => self.register(nexus, &list, true),
            Sa::Reserve => self.reserve(nexus, r, &list),
            Sa::Release => self.release(nexus, r, &list),
            Sa::Clear => self.clear(nexus, &list),
            // PREEMPT AND ABORT preempts the same way; commands the
            // preempted nexuses have in flight are not aborted (each runs to
            // completion on its own session), a simplification SAM-5's task
            // management cannot express from here.
            Sa::Preempt | Sa::PreemptAndAbort => self.preempt(nexus, r, &list),
            // Refused in `admit_persistent_reserve_out`.
            Sa::RegisterAndMove => Err(Sense::invalid_field_in_cdb(1, Some(4)).into()),
        }
    }

    /// The key a registered `nexus` proved, or the conflict SPC-4 answers
    /// an unregistered nexus or a wrong RESERVATION KEY with.
    fn check_key(&self, nexus: &Nexus, list: &PrOutParameterList) -> Result<(), Refusal> {
        match self.registration(nexus) {
            Some(reg) if reg.key == list.reservation_key => Ok(()),
            _ => Err(Refusal::Conflict),
        }
    }

    fn bump_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// REGISTER and REGISTER AND IGNORE EXISTING KEY: register, change or
    /// (with a zero SERVICE ACTION RESERVATION KEY) remove the key.
    fn register(&mut self, nexus: &Nexus, list: &PrOutParameterList, ignore_existing: bool) -> Result<(), Refusal> {
        let new_key = list.service_action_reservation_key;
        match self.registrations.iter().position(|r| r.nexus == *nexus) {
            None => {
                if !ignore_existing && list.reservation_key != 0 {
                    return Err(Refusal::Conflict);
                }
                if new_key == 0 {
                    // SPC-4: an unregistered nexus unregistering is GOOD
                    // and changes nothing.
                    return Ok(());
                }
                if self.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(Sense::illegal_request(AdditionalSense::INSUFFICIENT_REGISTRATION_RESOURCES).into());
                }
                self.registrations.push(Registration {
                    nexus: nexus.clone(),
                    key: new_key,
                    all_tg_pt: list.all_tg_pt,
                });
            }
            Some(at) => {
                if !ignore_existing && self.registrations[at].key != list.reservation_key {
                    return Err(Refusal::Conflict);
                }
                if new_key == 0 {
                    self.unregister(at);
                } else {
                    self.registrations[at].key = new_key;
                }
            }
        }
        self.bump_generation();
        Ok(())
    }

    /// Remove registration `at`, and with it the reservation it held:
    /// SPC-4 releases a reservation whose holder unregisters (for the all
    /// registrants types, when the last registrant goes) and, for the
    /// Registrants Only types, tells the other registrants RESERVATIONS
    /// RELEASED.
    fn unregister(&mut self, at: usize) {
        let gone = self.registrations.remove(at);
        let Some(r) = &self.reservation else { return };
        if r.pr_type.all_registrants() {
            if self.registrations.is_empty() {
                self.reservation = None;
            }
        } else if r.holder == gone.nexus {
            let registrants_only = r.pr_type.registrants_only();
            self.reservation = None;
            if registrants_only {
                self.establish_for_registrants(&gone.nexus, AdditionalSense::RESERVATIONS_RELEASED);
            }
        }
    }

    fn reserve(&mut self, nexus: &Nexus, r: &PersistentReserveOut, list: &PrOutParameterList) -> Result<(), Refusal> {
        self.check_key(nexus, list)?;
        match &self.reservation {
            // SPC-4: the holder reserving again with the same scope and type
            // changes nothing; with another, or anyone else reserving, it
            // is a conflict.
            Some(held) if self.holds(nexus) && held.pr_type == r.pr_type && held.scope == r.scope => Ok(()),
            Some(_) => Err(Refusal::Conflict),
            None => {
                self.reservation = Some(Persistent {
                    holder: nexus.clone(),
                    pr_type: r.pr_type,
                    scope: r.scope,
                });
                Ok(())
            }
        }
    }

    fn release(&mut self, nexus: &Nexus, r: &PersistentReserveOut, list: &PrOutParameterList) -> Result<(), Refusal> {
        self.check_key(nexus, list)?;
        let Some(held) = &self.reservation else {
            return Ok(());
        };
        if !self.holds(nexus) {
            return Ok(());
        }
        if held.pr_type != r.pr_type || held.scope != r.scope {
            return Err(Sense::illegal_request(AdditionalSense::INVALID_RELEASE_OF_PERSISTENT_RESERVATION).into());
        }
        let tell_registrants = held.pr_type.registrants_only() || held.pr_type.all_registrants();
        self.reservation = None;
        if tell_registrants {
            self.establish_for_registrants(nexus, AdditionalSense::RESERVATIONS_RELEASED);
        }
        Ok(())
    }

    fn clear(&mut self, nexus: &Nexus, list: &PrOutParameterList) -> Result<(), Refusal> {
        self.check_key(nexus, list)?;
        self.establish_for_registrants(nexus, AdditionalSense::RESERVATIONS_PREEMPTED);
        self.registrations.clear();
        self.reservation = None;
        self.bump_generation();
        Ok(())
    }

    /// PREEMPT: remove the registrations holding the SERVICE ACTION
    /// RESERVATION KEY (never the preempting nexus's own) and, when that
    /// key is the reservation holder's (or zero under an all registrants
    /// reservation), take the reservation over with the CDB's type.
    fn preempt(&mut self, nexus: &Nexus, r: &PersistentReserveOut, list: &PrOutParameterList) -> Result<(), Refusal> {
        self.check_key(nexus, list)?;
        let target_key = list.service_action_reservation_key;
        let takes_over = match &self.reservation {
            Some(held) if held.pr_type.all_registrants() => target_key == 0,
            Some(held) => self.registration(&held.holder).is_some_and(|reg| reg.key == target_key),
            None => false,
        };
        let all_registrants = self.reservation.as_ref().is_some_and(|h| h.pr_type.all_registrants());
        if !takes_over && target_key == 0 {
            // SPC-4: a zero SERVICE ACTION RESERVATION KEY that does not
            // preempt an all registrants reservation is INVALID FIELD IN
            // PARAMETER LIST.
            return Err(Sense::invalid_field_in_parameter_list(8, None).into());
        }
        let preempted: Vec<Nexus> = self
            .registrations
            .iter()
            .filter(|reg| reg.nexus != *nexus && (reg.key == target_key || (all_registrants && target_key == 0)))
            .map(|reg| reg.nexus.clone())
            .collect();
        if preempted.is_empty() && !takes_over {
            // SPC-4: a key no registration holds is a RESERVATION CONFLICT.
            return Err(Refusal::Conflict);
        }
        self.registrations.retain(|reg| !preempted.contains(&reg.nexus));
        for n in &preempted {
            self.establish(n, AdditionalSense::REGISTRATIONS_PREEMPTED);
        }
        if takes_over {
            let changed = self
                .reservation
                .as_ref()
                .is_some_and(|held| held.pr_type != r.pr_type || held.scope != r.scope);
            self.reservation = Some(Persistent {
                holder: nexus.clone(),
                pr_type: r.pr_type,
                scope: r.scope,
            });
            if changed {
                self.establish_for_registrants(nexus, AdditionalSense::RESERVATIONS_RELEASED);
            }
        }
        self.bump_generation();
        Ok(())
    }
}

/// PERSISTENT RESERVE OUT checks made before the parameter list is
/// transferred: the service action, SCOPE and TYPE (where the service
/// action uses them) and the PARAMETER LIST LENGTH, which must be 24 with
/// no TransportID lists supported (a longer one is refused before any of
/// it is collected).
pub(in crate::lu) fn admit_persistent_reserve_out(r: &PersistentReserveOut) -> Result<(), Sense> {
    use PersistentReserveOutAction as Sa;
    if r.service_action == Sa::RegisterAndMove {
        return Err(Sense::invalid_field_in_cdb(1, Some(4)));
    }
    if matches!(
        r.service_action,
        Sa::Reserve | Sa::Release | Sa::Preempt | Sa::PreemptAndAbort
    ) {
        if r.scope != PersistentReservationType::LU_SCOPE {
            return Err(Sense::invalid_field_in_cdb(2, Some(7)));
        }
        if !r.pr_type.is_defined() {
            return Err(Sense::invalid_field_in_cdb(2, Some(3)));
        }
    }
    if r.parameter_list_length != PrOutParameterList::LEN as u32 {
        return Err(Sense::parameter_list_length_error());
    }
    Ok(())
}
