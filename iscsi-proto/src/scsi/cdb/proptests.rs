//! Property tests: every command this module can represent survives
//! build-then-parse, and no input makes the parser panic.

use super::*;
use proptest::prelude::*;

fn size_any() -> impl Strategy<Value = CdbSize> {
    prop_oneof![
        Just(CdbSize::Six),
        Just(CdbSize::Ten),
        Just(CdbSize::Twelve),
        Just(CdbSize::Sixteen)
    ]
}

/// An LBA/length pair together with a size whose fields hold them, so the
/// parsed command equals the built one exactly.
fn sized_range(sizes: &'static [CdbSize]) -> impl Strategy<Value = (u64, u32, CdbSize)> {
    proptest::sample::select(sizes).prop_flat_map(|size| {
        let (lba, len): (BoxedStrategy<u64>, BoxedStrategy<u32>) = match size {
            CdbSize::Six => ((0u64..=0x1F_FFFF).boxed(), (1u32..=256).boxed()),
            CdbSize::Ten => ((0..=u64::from(u32::MAX)).boxed(), (0..=u32::from(u16::MAX)).boxed()),
            CdbSize::Twelve => ((0..=u64::from(u32::MAX)).boxed(), any::<u32>().boxed()),
            CdbSize::Sixteen => (any::<u64>().boxed(), any::<u32>().boxed()),
        };
        (lba, len, Just(size))
    })
}

const ALL: &[CdbSize] = &[CdbSize::Six, CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen];
const NO_SIX: &[CdbSize] = &[CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen];
const TEN_16: &[CdbSize] = &[CdbSize::Ten, CdbSize::Sixteen];

fn page_control() -> impl Strategy<Value = PageControl> {
    prop_oneof![
        Just(PageControl::Current),
        Just(PageControl::Changeable),
        Just(PageControl::Default),
        Just(PageControl::Saved)
    ]
}

fn read_write() -> impl Strategy<Value = ReadWrite> {
    (sized_range(ALL), any::<bool>(), any::<bool>()).prop_map(|((lba, len, size), dpo, fua)| {
        let six = size == CdbSize::Six;
        ReadWrite {
            lba,
            transfer_length: len,
            dpo: dpo && !six,
            fua: fua && !six,
            size,
        }
    })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::TestUnitReady),
        Just(Command::ReadCapacity10),
        (any::<bool>(), any::<u8>()).prop_map(|(desc, allocation_length)| {
            Command::RequestSense {
                desc,
                allocation_length,
            }
        }),
        (any::<bool>(), any::<u8>(), any::<u16>()).prop_map(|(evpd, page, allocation_length)| {
            Command::Inquiry {
                evpd,
                page_code: if evpd { page } else { 0 },
                allocation_length,
            }
        }),
        any::<u32>().prop_map(|allocation_length| Command::ReadCapacity16 { allocation_length }),
        read_write().prop_map(Command::Read),
        read_write().prop_map(Command::Write),
        (sized_range(NO_SIX), any::<bool>(), 0usize..3).prop_map(|((lba, len, size), dpo, b)| {
            let bytchk = [ByteCheck::MediumOnly, ByteCheck::Compare, ByteCheck::CompareSingleBlock][b];
            Command::Verify(Verify {
                lba,
                verification_length: len,
                dpo,
                bytchk,
                size,
            })
        }),
        (sized_range(NO_SIX), any::<bool>(), any::<bool>()).prop_map(|((lba, len, size), dpo, bytchk)| {
            Command::WriteAndVerify(WriteAndVerify {
                lba,
                transfer_length: len,
                dpo,
                bytchk,
                size,
            })
        }),
        (sized_range(TEN_16), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |((lba, n, size), unmap, anchor, ndob)| {
                Command::WriteSame(WriteSame {
                    lba,
                    number_of_blocks: n,
                    unmap,
                    anchor: anchor && unmap,
                    ndob: ndob && size == CdbSize::Sixteen,
                    size,
                })
            }
        ),
        (any::<bool>(), any::<u16>()).prop_map(|(anchor, parameter_list_length)| {
            Command::Unmap {
                anchor,
                parameter_list_length,
            }
        }),
        (sized_range(TEN_16), any::<bool>(), any::<bool>()).prop_map(|((lba, n, size), immed, sync)| {
            let r = SyncRange {
                lba,
                number_of_blocks: n,
                immed,
                size,
            };
            if sync {
                Command::SynchronizeCache(r)
            } else {
                Command::PreFetch(r)
            }
        }),
        (any::<bool>(), page_control(), 0u8..64, any::<u8>(), any::<u8>()).prop_map(|(dbd, pc, page, sub, alloc)| {
            Command::ModeSense6(ModeSense6 {
                dbd,
                page_control: pc,
                page_code: page,
                subpage_code: sub,
                allocation_length: alloc,
            })
        }),
        (
            any::<bool>(),
            any::<bool>(),
            page_control(),
            0u8..64,
            any::<u8>(),
            any::<u16>()
        )
            .prop_map(|(llbaa, dbd, pc, page, sub, alloc)| Command::ModeSense10(ModeSense10 {
                llbaa,
                dbd,
                page_control: pc,
                page_code: page,
                subpage_code: sub,
                allocation_length: alloc,
            })),
        (any::<bool>(), any::<bool>(), any::<u8>()).prop_map(|(pf, sp, parameter_list_length)| {
            Command::ModeSelect6(ModeSelect6 {
                pf,
                sp,
                parameter_list_length,
            })
        }),
        (any::<bool>(), any::<bool>(), any::<u16>()).prop_map(|(pf, sp, parameter_list_length)| {
            Command::ModeSelect10(ModeSelect10 {
                pf,
                sp,
                parameter_list_length,
            })
        }),
        (any::<u8>(), any::<u32>()).prop_map(|(select_report, allocation_length)| {
            Command::ReportLuns {
                select_report,
                allocation_length,
            }
        }),
        (any::<bool>(), 0usize..4, any::<u8>(), any::<u16>(), any::<u32>()).prop_map(|(rctd, ro, op, sa, alloc)| {
            let reporting_options = [
                ReportingOptions::All,
                ReportingOptions::OneCommand,
                ReportingOptions::OneServiceAction,
                ReportingOptions::OneCommandOrServiceAction,
            ][ro];
            Command::ReportSupportedOperationCodes(ReportSupportedOperationCodes {
                rctd,
                reporting_options,
                requested_operation_code: OperationCode(op),
                requested_service_action: sa,
                allocation_length: alloc,
            })
        }),
        (
            any::<bool>(),
            0u8..16,
            0u8..16,
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(immed, pcm, pc, no_flush, loej, start)| {
                Command::StartStopUnit(StartStopUnit {
                    immed,
                    power_condition_modifier: pcm,
                    power_condition: pc,
                    no_flush,
                    loej,
                    start,
                })
            }),
        (0u8..4).prop_map(|prevent| Command::PreventAllowMediumRemoval { prevent }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(lba, allocation_length)| { Command::GetLbaStatus { lba, allocation_length } }),
        (any::<u64>(), any::<u8>(), any::<bool>(), any::<bool>()).prop_map(|(lba, n, dpo, fua)| {
            Command::CompareAndWrite(CompareAndWrite {
                lba,
                number_of_blocks: n,
                dpo,
                fua,
            })
        }),
        (any::<u64>(), any::<u32>(), any::<bool>(), any::<bool>()).prop_map(|(lba, transfer_length, dpo, fua)| {
            Command::OrWrite(OrWrite {
                lba,
                transfer_length,
                dpo,
                fua,
            })
        }),
        Just(Command::Reserve6),
        Just(Command::Release6),
        (0u8..4, any::<u16>()).prop_map(|(sa, allocation_length)| {
            Command::PersistentReserveIn(PersistentReserveIn {
                service_action: PersistentReserveInAction::from_code(sa).unwrap_or(PersistentReserveInAction::ReadKeys),
                allocation_length,
            })
        }),
        (0u8..8, 0u8..16, 0u8..16, any::<u32>()).prop_map(|(sa, scope, t, parameter_list_length)| {
            Command::PersistentReserveOut(PersistentReserveOut {
                service_action: PersistentReserveOutAction::from_code(sa)
                    .unwrap_or(PersistentReserveOutAction::Register),
                scope,
                pr_type: PersistentReservationType(t),
                parameter_list_length,
            })
        }),
    ]
}

proptest! {
    #[test]
    fn build_then_parse_is_identity(cmd in command()) {
        let cdb = cmd.build();
        prop_assert_eq!(cdb.len(), cdb.operation_code().cdb_len().unwrap_or(0));
        prop_assert_eq!(Command::parse(cdb.as_bytes()), Ok(cmd));
        // The iSCSI form, zero-padded to 16 bytes, parses the same.
        prop_assert_eq!(Command::parse(&cdb.padded()), Ok(cmd));
    }

    #[test]
    fn widened_block_commands_keep_their_range(
        lba in any::<u64>(), len in any::<u32>(), size in size_any(),
        dpo in any::<bool>(), fua in any::<bool>(),
    ) {
        let rw = ReadWrite { lba, transfer_length: len, dpo, fua, size };
        let Ok(Command::Read(back)) = Command::parse(Command::Read(rw).build().as_bytes()) else {
            return Err(TestCaseError::fail("READ did not parse back"));
        };
        prop_assert_eq!((back.lba, back.transfer_length, back.dpo, back.fua), (lba, len, dpo, fua));
        prop_assert!(back.size >= size);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
        if let Err(e) = Command::parse(&bytes) {
            let _ = e.sense();
        }
    }

    #[test]
    fn parse_any_16_bytes_of_known_opcodes(
        op in proptest::sample::select(vec![
            0x00u8, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2E, 0x2F,
            0x16, 0x17, 0x34, 0x35, 0x41, 0x42, 0x55, 0x5A, 0x5E, 0x5F, 0x88, 0x89, 0x8A, 0x8B, 0x8E,
            0x8F, 0x90, 0x91, 0x93, 0x9E, 0xA0, 0xA3, 0xA8, 0xAA, 0xAE, 0xAF,
        ]),
        rest in proptest::array::uniform15(any::<u8>()),
    ) {
        let mut b = [0u8; 16];
        b[0] = op;
        b[1..].copy_from_slice(&rest);
        // Whatever parses must build back into something that parses equal.
        if let Ok(cmd) = Command::parse(&b) {
            prop_assert_eq!(Command::parse(cmd.build().as_bytes()), Ok(cmd));
        }
    }
}
