//! Reservation tests: RESERVE/RELEASE (6) between I_T nexuses, their end
//! on nexus loss and reset, and persistent reservations (PERSISTENT
//! RESERVE IN/OUT) with the access each type gives.

use super::io_tests::{pattern, read};
use super::tests::{cdb_field, good, illegal, list_field, mem_lu, nexus};
use super::*;
use iscsi_proto::pdu::Isid;
use iscsi_proto::scsi::data::{
    PrOutParameterList, ReadFullStatusData, ReadKeysData, ReadReservationData, ReportCapabilitiesData,
};
use iscsi_proto::scsi::{
    ModeSense6, PageControl, PersistentReservationType as Type, PersistentReserveIn, PersistentReserveInAction,
    PersistentReserveOut, PersistentReserveOutAction as Sa, ReadWrite,
};

fn other() -> Nexus {
    Nexus::new("iqn.2024-01.org.example:other", Isid([0x80, 0, 0, 0, 0, 2]))
}

fn third() -> Nexus {
    Nexus::new("iqn.2024-01.org.example:third", Isid([0x80, 0, 0, 0, 0, 3]))
}

fn on(lu: &LogicalUnit, n: &Nexus, cmd: Command, data_out: &[u8]) -> Completion {
    lu.execute_as(n, cmd.build().as_bytes(), data_out)
}

fn conflict(c: Completion) {
    assert_eq!(c.status, ScsiStatus::RESERVATION_CONFLICT, "{:?}", c.sense);
    assert_eq!((c.sense, c.data.len()), (None, 0));
}

fn read_on(lu: &LogicalUnit, n: &Nexus) -> Completion {
    on(lu, n, Command::Read(ReadWrite::new(1, 1)), &[])
}

fn write_on(lu: &LogicalUnit, n: &Nexus) -> Completion {
    on(lu, n, Command::Write(ReadWrite::new(1, 1)), &pattern(1, 9))
}

fn mode_sense() -> Command {
    Command::ModeSense6(ModeSense6 {
        dbd: false,
        page_control: PageControl::Current,
        page_code: 0x3F,
        subpage_code: 0,
        allocation_length: 255,
    })
}

fn inquiry() -> Command {
    Command::Inquiry {
        evpd: false,
        page_code: 0,
        allocation_length: 96,
    }
}

fn prout_cdb(service_action: Sa, pr_type: Type) -> Command {
    Command::PersistentReserveOut(PersistentReserveOut {
        service_action,
        scope: 0,
        pr_type,
        parameter_list_length: 24,
    })
}

/// PERSISTENT RESERVE OUT with the basic parameter list.
fn prout(lu: &LogicalUnit, n: &Nexus, sa: Sa, pr_type: Type, key: u64, sa_key: u64) -> Completion {
    let list = PrOutParameterList {
        reservation_key: key,
        service_action_reservation_key: sa_key,
        ..PrOutParameterList::default()
    };
    on(lu, n, prout_cdb(sa, pr_type), &list.to_bytes())
}

fn register(lu: &LogicalUnit, n: &Nexus, key: u64) {
    good(prout(lu, n, Sa::RegisterAndIgnoreExistingKey, Type(0), 0, key));
}

fn prin(lu: &LogicalUnit, n: &Nexus, service_action: PersistentReserveInAction, allocation_length: u16) -> Vec<u8> {
    let cmd = Command::PersistentReserveIn(PersistentReserveIn {
        service_action,
        allocation_length,
    });
    good(on(lu, n, cmd, &[]))
}

fn keys(lu: &LogicalUnit) -> ReadKeysData {
    ReadKeysData::parse(&prin(lu, &nexus(), PersistentReserveInAction::ReadKeys, 1024)).unwrap()
}

fn reservation(lu: &LogicalUnit) -> ReadReservationData {
    ReadReservationData::parse(&prin(lu, &nexus(), PersistentReserveInAction::ReadReservation, 1024)).unwrap()
}

fn unit_attention(lu: &LogicalUnit, n: &Nexus) -> Option<AdditionalSense> {
    lu.take_unit_attention(n)
}

#[test]
fn nexus_names_the_initiator_port() {
    let n = nexus();
    assert_eq!(n.to_string(), "iqn.2024-01.org.example:tester,i,0x800000000001");
    assert_eq!(
        (n.initiator_name(), n.isid()),
        ("iqn.2024-01.org.example:tester", Isid([0x80, 0, 0, 0, 0, 1]))
    );
    let id = n.transport_id();
    assert_eq!(id[0], 0x45);
    assert!(id[4..].starts_with(b"iqn.2024-01.org.example:tester,i,0x800000000001\0"));
    assert_ne!(nexus(), other());
    // Same name, another ISID: another nexus.
    assert_ne!(nexus(), Nexus::new(n.initiator_name(), Isid([0x80, 0, 0, 0, 0, 9])));
}

#[test]
fn reserve_6_belongs_to_one_nexus() {
    let (_, lu) = mem_lu();
    let (a, b) = (nexus(), other());
    good(on(&lu, &a, Command::Reserve6, &[]));
    // The holder may reserve again and does everything.
    good(on(&lu, &a, Command::Reserve6, &[]));
    good(write_on(&lu, &a));
    good(read_on(&lu, &a));
    good(on(&lu, &a, mode_sense(), &[]));
    // Others: a conflict for the medium, mode pages and even TEST UNIT READY...
    conflict(on(&lu, &b, Command::Reserve6, &[]));
    conflict(read_on(&lu, &b));
    conflict(write_on(&lu, &b));
    conflict(on(&lu, &b, mode_sense(), &[]));
    conflict(on(&lu, &b, Command::TestUnitReady, &[]));
    conflict(on(
        &lu,
        &b,
        Command::SynchronizeCache(iscsi_proto::scsi::SyncRange {
            lba: 0,
            number_of_blocks: 0,
            immed: false,
            size: CdbSize::Ten,
        }),
        &[],
    ));
    // ...but not for identification, sense and capacity.
    good(on(&lu, &b, inquiry(), &[]));
    good(on(
        &lu,
        &b,
        Command::ReportLuns {
            select_report: 0,
            allocation_length: 64,
        },
        &[],
    ));
    good(on(
        &lu,
        &b,
        Command::RequestSense {
            desc: false,
            allocation_length: 18,
        },
        &[],
    ));
    good(on(&lu, &b, Command::ReadCapacity10, &[]));
    // RELEASE from another nexus is GOOD and releases nothing.
    good(on(&lu, &b, Command::Release6, &[]));
    conflict(read_on(&lu, &b));
    // plan() answers the conflict before any Data-Out is solicited.
    let refused = lu
        .plan(&b, Command::Write(ReadWrite::new(0, 1)).build().as_bytes())
        .unwrap_err();
    conflict(refused);
    assert!(
        lu.plan(&a, Command::Write(ReadWrite::new(0, 1)).build().as_bytes())
            .is_ok()
    );
    // The holder releases; now the other nexus may reserve.
    good(on(&lu, &a, Command::Release6, &[]));
    good(read_on(&lu, &b));
    good(on(&lu, &b, Command::Reserve6, &[]));
    conflict(write_on(&lu, &a));
}

#[test]
fn reserve_6_ends_with_the_nexus_and_on_reset() {
    let (_, lu) = mem_lu();
    let (a, b) = (nexus(), other());
    good(on(&lu, &a, Command::Reserve6, &[]));
    // Another nexus ending changes nothing...
    lu.nexus_lost(&b);
    conflict(read_on(&lu, &b));
    // ...the holder's ending releases.
    lu.nexus_lost(&a);
    good(on(&lu, &b, Command::Reserve6, &[]));
    conflict(read_on(&lu, &a));
    lu.reset();
    good(read_on(&lu, &a));
    good(on(&lu, &a, Command::Reserve6, &[]));
}

#[test]
fn reserve_6_refuses_third_party_and_extents() {
    let (_, lu) = mem_lu();
    let s = illegal(
        lu.execute(&[0x16, 0x10, 0, 0, 0, 0], &[]),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(1, Some(4)));
    let s = illegal(
        lu.execute(&[0x17, 0x01, 0, 0, 0, 0], &[]),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(1, Some(0)));
}

#[test]
fn reserve_6_and_persistent_reservations_exclude_each_other() {
    let (_, lu) = mem_lu();
    let (a, b) = (nexus(), other());
    good(on(&lu, &a, Command::Reserve6, &[]));
    // Every PERSISTENT RESERVE command conflicts, the holder's too.
    conflict(prout(&lu, &a, Sa::Register, Type(0), 0, 1));
    let prin = Command::PersistentReserveIn(PersistentReserveIn {
        service_action: PersistentReserveInAction::ReadKeys,
        allocation_length: 64,
    });
    conflict(on(&lu, &a, prin, &[]));
    assert!(lu.plan(&b, prin.build().as_bytes()).is_err());
    good(on(&lu, &a, Command::Release6, &[]));
    // With registrations, RESERVE and RELEASE conflict...
    register(&lu, &a, 0xA);
    conflict(on(&lu, &b, Command::Reserve6, &[]));
    conflict(on(&lu, &a, Command::Reserve6, &[]));
    conflict(on(&lu, &b, Command::Release6, &[]));
    // ...unless the persistent reservation already lets the nexus in: then
    // they succeed and do nothing.
    good(prout(&lu, &a, Sa::Reserve, Type::EXCLUSIVE_ACCESS, 0xA, 0));
    good(on(&lu, &a, Command::Reserve6, &[]));
    good(on(&lu, &a, Command::Release6, &[]));
    assert!(reservation(&lu).reservation.is_some());
    conflict(on(&lu, &b, Command::Reserve6, &[]));
}

#[test]
fn register_read_keys_and_unregister() {
    let (_, lu) = mem_lu();
    let (a, b) = (nexus(), other());
    assert_eq!(keys(&lu), ReadKeysData::default());
    // An unregistered nexus naming a key it does not have: conflict.
    conflict(prout(&lu, &a, Sa::Register, Type(0), 5, 0xA));
    good(prout(&lu, &a, Sa::Register, Type(0), 0, 0xA));
    register(&lu, &b, 0xB);
    assert_eq!(
        keys(&lu),
        ReadKeysData {
            generation: 2,
            keys: vec![0xA, 0xB],
        }
    );
    // REGISTER with the wrong key conflicts (libiscsi's reregister check)...
    conflict(prout(&lu, &a, Sa::Register, Type(0), 0, 0xC));
    // ...with the right one the key changes...
    good(prout(&lu, &a, Sa::Register, Type(0), 0xA, 0xC));
    // ...and REGISTER AND IGNORE EXISTING KEY needs none.
    good(prout(&lu, &a, Sa::RegisterAndIgnoreExistingKey, Type(0), 0x77, 0xD));
    assert_eq!(keys(&lu).keys, [0xD, 0xB]);
    // A zero service action key unregisters.
    good(prout(&lu, &a, Sa::Register, Type(0), 0xD, 0));
    assert_eq!(keys(&lu).keys, [0xB]);
    // Unregistering when not registered is GOOD and changes nothing.
    let generation = keys(&lu).generation;
    good(prout(&lu, &a, Sa::Register, Type(0), 0, 0));
    assert_eq!(keys(&lu).generation, generation);
    assert_eq!(generation, 5);
}

#[test]
fn read_keys_keeps_its_length_when_truncated() {
    let (_, lu) = mem_lu();
    register(&lu, &nexus(), 0x1234);
    let cut = prin(&lu, &nexus(), PersistentReserveInAction::ReadKeys, 8);
    assert_eq!(cut, [0, 0, 0, 1, 0, 0, 0, 8]);
    assert!(prin(&lu, &nexus(), PersistentReserveInAction::ReadKeys, 0).is_empty());
}

#[test]
fn registrations_are_bounded() {
    let (_, lu) = mem_lu();
    for i in 0..64u8 {
        register(&lu, &Nexus::new("iqn.x", Isid([0x80, 0, 0, 0, 1, i])), u64::from(i) + 1);
    }
    illegal(
        prout(&lu, &nexus(), Sa::RegisterAndIgnoreExistingKey, Type(0), 0, 1),
        AdditionalSense::INSUFFICIENT_REGISTRATION_RESOURCES,
    );
    assert_eq!(keys(&lu).keys.len(), 64);
}

/// Access for a registered and an unregistered nexus under each type
/// (read, write): what libiscsi's ProutReserve.Access tests check.
#[test]
fn each_type_gives_its_access() {
    let table = [
        (Type::WRITE_EXCLUSIVE, (true, false), (true, false)),
        (Type::EXCLUSIVE_ACCESS, (false, false), (false, false)),
        (Type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY, (true, true), (true, false)),
        (Type::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, (true, true), (false, false)),
        (Type::WRITE_EXCLUSIVE_ALL_REGISTRANTS, (true, true), (true, false)),
        (Type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS, (true, true), (false, false)),
    ];
    let allowed = |c: Completion| match c.status {
        ScsiStatus::GOOD => true,
        ScsiStatus::RESERVATION_CONFLICT => false,
        s => panic!("{s:?} {:?}", c.sense),
    };
    for (pr_type, registered, unregistered) in table {
        let (_, lu) = mem_lu();
        let (a, b) = (nexus(), other());
        register(&lu, &a, 0xA);
        register(&lu, &b, 0xB);
        good(prout(&lu, &a, Sa::Reserve, pr_type, 0xA, 0));
        good(read_on(&lu, &a));
        good(write_on(&lu, &a));
        assert_eq!(
            (allowed(read_on(&lu, &b)), allowed(write_on(&lu, &b))),
            registered,
            "{pr_type:?}"
        );
        good(prout(&lu, &b, Sa::Register, Type(0), 0xB, 0));
        assert_eq!(
            (allowed(read_on(&lu, &b)), allowed(write_on(&lu, &b))),
            unregistered,
            "{pr_type:?}"
        );
        // Identification, capacity and TEST UNIT READY always go through;
        // MODE SENSE only where reads are shared.
        good(on(&lu, &b, inquiry(), &[]));
        good(on(&lu, &b, Command::TestUnitReady, &[]));
        good(on(&lu, &b, Command::ReadCapacity16 { allocation_length: 32 }, &[]));
        assert_eq!(
            allowed(on(&lu, &b, mode_sense(), &[])),
            pr_type.reads_shared(),
            "{pr_type:?}"
        );
        // The unregistered nexus cannot reserve, release or clear.
        conflict(prout(&lu, &b, Sa::Reserve, pr_type, 0, 0));
        conflict(prout(&lu, &b, Sa::Release, pr_type, 0, 0));
        conflict(prout(&lu, &b, Sa::Clear, Type(0), 0, 0));
        good(prout(&lu, &a, Sa::Release, pr_type, 0xA, 0));
        good(write_on(&lu, &b));
    }
}

#[test]
fn read_reservation_and_reserve_rules() {
    let (_, lu) = mem_lu();
    let (a, b) = (nexus(), other());
    assert_eq!(reservation(&lu).reservation, None);
    register(&lu, &a, 0xA);
    register(&lu, &b, 0xB);
    // The key must be the nexus's own.
    conflict(prout(&lu, &a, Sa::Reserve, Type::WRITE_EXCLUSIVE, 0xB, 0));
    good(prout(&lu, &a, Sa::Reserve, Type::WRITE_EXCLUSIVE, 0xA, 0));
    let r = reservation(&lu);
    assert_eq!(r.generation, 2, "RESERVE does not count");
    let held = r.reservation.unwrap();
    assert_eq!((held.key, held.scope, held.pr_type), (0xA, 0, Type::WRITE_EXCLUSIVE));
    // The holder reserving the same again: GOOD; another type, or another
    // nexus: conflict.
    good(prout(&lu, &a, Sa::Reserve, Type::WRITE_EXCLUSIVE, 0xA, 0));
    conflict(prout(&lu, &a, Sa::Reserve, Type::EXCLUSIVE_ACCESS, 0xA, 0));
    conflict(prout(&lu, &b, Sa::Reserve, Type::WRITE_EXCLUSIVE, 0xB, 0));
    // A key change by the holder shows in READ RESERVATION.
    good(prout(&lu, &a, Sa::Register, Type(0), 0xA, 0xAA));
    assert_eq!(reservation(&lu).reservation.unwrap().key, 0xAA);
    // A non-holder's RELEASE is GOOD and does nothing; the holder's with
    // the wrong type is INVALID RELEASE OF PERSISTENT RESERVATION.
    good(prout(&lu, &b, Sa::Release, Type::WRITE_EXCLUSIVE, 0xB, 0));
    illegal(
        prout(&lu, &a, Sa::Release, Type::EXCLUSIVE_ACCESS, 0xAA, 0),
        AdditionalSense::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
    );
    assert!(reservation(&lu).reservation.is_some());
    good(prout(&lu, &a, Sa::Release, Type::WRITE_EXCLUSIVE, 0xAA, 0));
    assert_eq!(reservation(&lu).reservation, None);
    // All registrants: the key reads as zero and any registrant holds it.
    good(prout(
        &lu,
        &b,
        Sa::Reserve,
        Type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        0xB,
        0,
    ));
    let held = reservation(&lu).reservation.unwrap();
    assert_eq!((held.key, held.pr_type), (0, Type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS));
    good(prout(
        &lu,
        &a,
        Sa::Reserve,
        Type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        0xAA,
        0,
    ));
    good(prout(
        &lu,
        &a,
        Sa::Release,
        Type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        0xAA,
        0,
    ));
    assert_eq!(reservation(&lu).reservation, None);
    // Other registrants hear that an all registrants reservation went.
    assert_eq!(unit_attention(&lu, &b), Some(AdditionalSense::RESERVATIONS_RELEASED));
    assert_eq!(unit_attention(&lu, &b), None);
    assert_eq!(unit_attention(&lu, &a), None);
}

/// What libiscsi's ProutReserve.Ownership tests check: the holder
/// unregistering ends the reservation, except an all registrants one,
/// which lasts while any registrant is left.
#[test]
fn unregistering_the_holder_ends_the_reservation() {
    for (pr_type, shared) in [
        (Type::WRITE_EXCLUSIVE, false),
        (Type::EXCLUSIVE_ACCESS, false),
        (Type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY, false),
        (Type::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, false),
        (Type::WRITE_EXCLUSIVE_ALL_REGISTRANTS, true),
        (Type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS, true),
    ] {
        let (_, lu) = mem_lu();
        let (a, b) = (nexus(), other());
        register(&lu, &a, 0xA);
        register(&lu, &b, 0xB);
        good(prout(&lu, &a, Sa::Reserve, pr_type, 0xA, 0));
        good(prout(&lu, &a, Sa::Register, Type(0), 0xA, 0));
        assert_eq!(reservation(&lu).reservation.is_some(), shared, "{pr_type:?}");
        let told = unit_attention(&lu, &b);
        if pr_type.registrants_only() {
            assert_eq!(told, Some(AdditionalSense::RESERVATIONS_RELEASED));
        } else {
            assert_eq!(told, None, "{pr_type:?}");
        }
        if shared {
            good(prout(&lu, &b, Sa::Release, pr_type, 0xB, 0));
        }
        good(prout(&lu, &b, Sa::Register, Type(0), 0xB, 0));
        assert_eq!(reservation(&lu).reservation, None);
        assert!(keys(&lu).keys.is_empty());
    }
}

#[test]
fn clear_removes_everything() {
    let (_, lu) = mem_lu();
    let (a, b) = (nexus(), other());
    register(&lu, &a, 0xA);
    register(&lu, &b, 0xB);
    good(prout(&lu, &a, Sa::Reserve, Type::EXCLUSIVE_ACCESS, 0xA, 0));
    let generation = keys(&lu).generation;
    conflict(prout(&lu, &b, Sa::Clear, Type(0), 0xA, 0));
    good(prout(&lu, &b, Sa::Clear, Type(0), 0xB, 0));
    assert_eq!(
        keys(&lu),
        ReadKeysData {
            generation: generation + 1,
            keys: vec![],
        }
    );
    assert_eq!(reservation(&lu).reservation, None);
    good(write_on(&lu, &third()));
    assert_eq!(unit_attention(&lu, &a), Some(AdditionalSense::RESERVATIONS_PREEMPTED));
    assert_eq!(unit_attention(&lu, &b), None);
}

#[test]
fn preempt_removes_registrations_and_takes_reservations() {
    let (_, lu) = mem_lu();
    let (a, b, c) = (nexus(), other(), third());
    // Without a reservation: the registrations with the key go.
    register(&lu, &a, 0xA);
    register(&lu, &b, 0xB);
    let generation = keys(&lu).generation;
    good(prout(&lu, &b, Sa::Preempt, Type::EXCLUSIVE_ACCESS, 0xB, 0xA));
    assert_eq!(
        keys(&lu),
        ReadKeysData {
            generation: generation + 1,
            keys: vec![0xB],
        }
    );
    assert_eq!(reservation(&lu).reservation, None);
    assert_eq!(unit_attention(&lu, &a), Some(AdditionalSense::REGISTRATIONS_PREEMPTED));
    // A key nobody holds: conflict; zero without an all registrants
    // reservation: INVALID FIELD IN PARAMETER LIST.
    conflict(prout(&lu, &b, Sa::Preempt, Type::EXCLUSIVE_ACCESS, 0xB, 0xA));
    let s = illegal(
        prout(&lu, &b, Sa::Preempt, Type::EXCLUSIVE_ACCESS, 0xB, 0),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(8, None));
    // The unregistered cannot preempt.
    conflict(prout(&lu, &a, Sa::Preempt, Type::EXCLUSIVE_ACCESS, 0, 0xB));
    // Preempting the holder takes the reservation over, with the new type.
    register(&lu, &a, 0xA);
    register(&lu, &c, 0xC);
    good(prout(&lu, &b, Sa::Reserve, Type::WRITE_EXCLUSIVE, 0xB, 0));
    good(prout(&lu, &a, Sa::PreemptAndAbort, Type::EXCLUSIVE_ACCESS, 0xA, 0xB));
    let held = reservation(&lu).reservation.unwrap();
    assert_eq!((held.key, held.pr_type), (0xA, Type::EXCLUSIVE_ACCESS));
    assert_eq!(keys(&lu).keys, [0xA, 0xC]);
    assert_eq!(unit_attention(&lu, &b), Some(AdditionalSense::REGISTRATIONS_PREEMPTED));
    assert_eq!(unit_attention(&lu, &c), Some(AdditionalSense::RESERVATIONS_RELEASED));
    conflict(read_on(&lu, &b));
    good(read_on(&lu, &a));
    // Under an all registrants reservation, zero preempts every other
    // registrant.
    good(prout(&lu, &a, Sa::Release, Type::EXCLUSIVE_ACCESS, 0xA, 0));
    good(prout(
        &lu,
        &c,
        Sa::Reserve,
        Type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        0xC,
        0,
    ));
    good(prout(&lu, &a, Sa::Preempt, Type::WRITE_EXCLUSIVE, 0xA, 0));
    assert_eq!(keys(&lu).keys, [0xA]);
    let held = reservation(&lu).reservation.unwrap();
    assert_eq!((held.key, held.pr_type), (0xA, Type::WRITE_EXCLUSIVE));
}

#[test]
fn report_capabilities_and_full_status() {
    let (_, lu) = mem_lu();
    let caps = prin(&lu, &nexus(), PersistentReserveInAction::ReportCapabilities, 64);
    assert_eq!(caps, [0, 8, 0x14, 0x90, 0xEA, 0x01, 0, 0]);
    let caps = ReportCapabilitiesData::parse(&caps).unwrap();
    assert!(caps.crh && caps.atp_c && caps.tmv && !caps.ptpl_c && !caps.sip_c);
    let (a, b) = (nexus(), other());
    register(&lu, &a, 0xA);
    register(&lu, &b, 0xB);
    good(prout(
        &lu,
        &b,
        Sa::Reserve,
        Type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
        0xB,
        0,
    ));
    let full = ReadFullStatusData::parse(&prin(&lu, &a, PersistentReserveInAction::ReadFullStatus, 4096)).unwrap();
    assert_eq!(full.generation, 2);
    let d: Vec<_> = full
        .descriptors
        .iter()
        .map(|d| (d.key, d.reservation_holder, d.pr_type, d.relative_target_port))
        .collect();
    assert_eq!(
        d,
        [
            (0xA, false, Type(0), 1),
            (0xB, true, Type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY, 1),
        ]
    );
    assert_eq!(full.descriptors[0].transport_id, a.transport_id());
    assert_eq!(full.descriptors[1].transport_id, b.transport_id());
}

#[test]
fn persistent_reserve_out_checks() {
    let (_, lu) = mem_lu();
    let a = nexus();
    let plan_err = |cmd: Command| lu.plan(&a, cmd.build().as_bytes()).unwrap_err().sense.unwrap();
    // PARAMETER LIST LENGTH must be 24, refused before any data moves.
    for len in [0, 23, 25, 1 << 30] {
        let cmd = Command::PersistentReserveOut(PersistentReserveOut {
            service_action: Sa::Register,
            scope: 0,
            pr_type: Type(0),
            parameter_list_length: len,
        });
        assert_eq!(plan_err(cmd), Sense::parameter_list_length_error(), "{len}");
    }
    // REGISTER AND MOVE is not supported.
    assert_eq!(
        plan_err(prout_cdb(Sa::RegisterAndMove, Type(0))).field_pointer,
        cdb_field(1, Some(4))
    );
    // SCOPE and TYPE where they are used; REGISTER ignores them.
    assert_eq!(
        plan_err(prout_cdb(Sa::Reserve, Type(2))).field_pointer,
        cdb_field(2, Some(3))
    );
    let scoped = Command::PersistentReserveOut(PersistentReserveOut {
        service_action: Sa::Release,
        scope: 1,
        pr_type: Type::WRITE_EXCLUSIVE,
        parameter_list_length: 24,
    });
    assert_eq!(plan_err(scoped).field_pointer, cdb_field(2, Some(7)));
    assert!(
        lu.plan(&a, prout_cdb(Sa::Register, Type(0xF)).build().as_bytes())
            .is_ok()
    );
    // APTPL (no persistence through power loss) and SPEC_I_PT are refused.
    let list = |f: fn(&mut PrOutParameterList)| {
        let mut l = PrOutParameterList {
            service_action_reservation_key: 1,
            ..PrOutParameterList::default()
        };
        f(&mut l);
        l.to_bytes()
    };
    let s = illegal(
        on(&lu, &a, prout_cdb(Sa::Register, Type(0)), &list(|l| l.aptpl = true)),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(20, Some(0)));
    let s = illegal(
        on(&lu, &a, prout_cdb(Sa::Register, Type(0)), &list(|l| l.spec_i_pt = true)),
        AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field_pointer, list_field(20, Some(3)));
    // ALL_TG_PT is accepted: there is one target port.
    good(on(
        &lu,
        &a,
        prout_cdb(Sa::Register, Type(0)),
        &list(|l| l.all_tg_pt = true),
    ));
    // A short Data-Out is a PARAMETER LIST LENGTH ERROR too.
    illegal(
        on(&lu, &a, prout_cdb(Sa::Register, Type(0)), &[0; 16]),
        AdditionalSense::PARAMETER_LIST_LENGTH_ERROR,
    );
    // A reserved PERSISTENT RESERVE IN service action.
    let s = illegal(
        lu.execute(&[0x5E, 0x04, 0, 0, 0, 0, 0, 0x40, 0, 0], &[]),
        AdditionalSense::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field_pointer, cdb_field(1, Some(4)));
}

/// Persistent reservations outlive the nexus and resets; only RESERVE
/// (6) ones end there.
#[test]
fn persistent_reservations_survive_nexus_loss_and_reset() {
    let (_, lu) = mem_lu();
    let (a, b) = (nexus(), other());
    register(&lu, &a, 0xA);
    good(prout(&lu, &a, Sa::Reserve, Type::EXCLUSIVE_ACCESS, 0xA, 0));
    lu.nexus_lost(&a);
    lu.reset();
    conflict(read_on(&lu, &b));
    assert_eq!(keys(&lu).keys, [0xA]);
}

#[test]
fn orwrite_conflicts_like_a_write() {
    let (_, lu) = mem_lu();
    let (a, b) = (nexus(), other());
    register(&lu, &a, 0xA);
    good(prout(&lu, &a, Sa::Reserve, Type::WRITE_EXCLUSIVE, 0xA, 0));
    let orwrite = Command::OrWrite(iscsi_proto::scsi::OrWrite {
        lba: 0,
        transfer_length: 1,
        dpo: false,
        fua: false,
    });
    conflict(on(&lu, &b, orwrite, &pattern(1, 1)));
    good(on(&lu, &a, orwrite, &pattern(1, 1)));
    assert_eq!(good(read(&lu, 0, 1)), pattern(1, 1));
}
