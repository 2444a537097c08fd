//! Where each partition of a partition-image deploy goes: Ironic's
//! `make_partitions`, as a pure function of the request and the disk.
//!
//! Partitions are contiguous from 1 MiB, each a whole number of MiB, in this
//! order: EFI system partition (UEFI + local boot), BIOS boot partition (GPT +
//! BIOS + local boot), ephemeral, swap, config drive, and root, always last
//! so that cloud-init's growpart can extend it.

use super::table::{Label, PartType, Partition, Table, TableError, gpt_type, mbr_type};
use uuid::Uuid;

pub const MIB: u64 = 1 << 20;

/// How the node boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Bios,
    Uefi,
}

/// Whether the node boots from its disk or over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootOption {
    Local,
    Netboot,
}

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Role {
    #[serde(rename = "efi system partition")]
    EfiSystem,
    #[serde(rename = "BIOS Boot partition")]
    BiosBoot,
    #[serde(rename = "ephemeral")]
    Ephemeral,
    #[serde(rename = "swap")]
    Swap,
    #[serde(rename = "configdrive")]
    ConfigDrive,
    #[serde(rename = "root")]
    Root,
}

impl Role {
    /// The GPT partition name we give it.
    fn name(self) -> &'static str {
        match self {
            Role::EfiSystem => "efi-part",
            Role::BiosBoot => "bios-boot",
            Role::Ephemeral => "ephemeral0",
            Role::Swap => "swap1",
            Role::ConfigDrive => "config-2",
            Role::Root => "root",
        }
    }

    fn kind(self, label: Label) -> PartType {
        match (label, self) {
            (Label::Gpt, Role::EfiSystem) => PartType::Gpt(gpt_type::EFI_SYSTEM),
            (Label::Gpt, Role::BiosBoot) => PartType::Gpt(gpt_type::BIOS_BOOT),
            (Label::Gpt, Role::Swap) => PartType::Gpt(gpt_type::LINUX_SWAP),
            (Label::Gpt, _) => PartType::Gpt(gpt_type::LINUX_DATA),
            (Label::Msdos, Role::EfiSystem) => PartType::Mbr(mbr_type::EFI_SYSTEM),
            (Label::Msdos, Role::Swap) => PartType::Mbr(mbr_type::LINUX_SWAP),
            (Label::Msdos, _) => PartType::Mbr(mbr_type::LINUX),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::EfiSystem => "efi system partition",
            Role::BiosBoot => "BIOS Boot partition",
            Role::Ephemeral => "ephemeral",
            Role::Swap => "swap",
            Role::ConfigDrive => "configdrive",
            Role::Root => "root",
        })
    }
}

/// What the deploy asks for, sizes in MiB (0: no such partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub boot_mode: BootMode,
    pub boot_option: BootOption,
    /// None: GPT for UEFI, msdos for BIOS.
    pub label: Option<Label>,
    pub efi_mb: u64,
    pub ephemeral_mb: u64,
    pub swap_mb: u64,
    pub configdrive_mb: u64,
    /// None: the rest of the disk.
    pub root_mb: Option<u64>,
}

/// The BIOS boot partition GRUB needs on a GPT disk booted by BIOS.
pub const BIOS_BOOT_MB: u64 = 1;

/// A planned partition table and what each partition is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub table: Table,
    pub roles: Vec<(Role, u32)>,
}

impl Layout {
    /// The partition playing `role`.
    #[must_use]
    pub fn partition(&self, role: Role) -> Option<&Partition> {
        let number = self.roles.iter().find(|(r, _)| *r == role)?.1;
        self.table.partitions.iter().find(|p| p.number == number)
    }

    /// The role of partition `number`.
    #[must_use]
    pub fn role_of(&self, number: u32) -> Option<Role> {
        self.roles.iter().find(|(_, n)| *n == number).map(|(r, _)| *r)
    }
}

/// Why a layout cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error(
        "the layout needs {needed} MiB but the disk has {available} MiB for partitions \
         (from 1 MiB up to its end{}); make a partition smaller",
        if *.gpt { ", less the backup GPT" } else { "" }
    )]
    DoesNotFit { needed: u64, available: u64, gpt: bool },
    #[error("the root partition would be empty: nothing is left of the disk after the other partitions")]
    NoRoom,
    #[error("the disk's block size {0} does not divide 1 MiB")]
    BlockSize(u32),
    #[error(transparent)]
    Table(#[from] TableError),
}

/// Plan the partitions of a partition-image deploy on a disk of
/// `disk_blocks` blocks. `guid` makes each new GPT partition GUID.
pub fn plan(
    request: &Request,
    block_size: u32,
    disk_blocks: u64,
    disk_signature: u32,
    disk_guid: Uuid,
    mut guid: impl FnMut() -> Uuid,
) -> Result<Layout, LayoutError> {
    if block_size == 0 || !MIB.is_multiple_of(u64::from(block_size)) {
        return Err(LayoutError::BlockSize(block_size));
    }
    let label = request.label.unwrap_or(match request.boot_mode {
        BootMode::Uefi => Label::Gpt,
        BootMode::Bios => Label::Msdos,
    });
    let local = request.boot_option == BootOption::Local;
    let mut sizes = Vec::new();
    if request.boot_mode == BootMode::Uefi && local {
        sizes.push((Role::EfiSystem, request.efi_mb));
    }
    if request.boot_mode == BootMode::Bios && local && label == Label::Gpt {
        sizes.push((Role::BiosBoot, BIOS_BOOT_MB));
    }
    sizes.push((Role::Ephemeral, request.ephemeral_mb));
    sizes.push((Role::Swap, request.swap_mb));
    sizes.push((Role::ConfigDrive, request.configdrive_mb));
    sizes.retain(|&(_, mb)| mb > 0);

    let mut table = Table::new(label, block_size, disk_blocks, disk_signature, disk_guid);
    let per_mib = MIB / u64::from(block_size);
    // The last whole MiB before the end of the usable area.
    let end_mib = table.usable_end() / per_mib;
    let others: u64 = sizes.iter().map(|&(_, mb)| mb).sum();
    let available = end_mib.saturating_sub(1);
    let root_mb = match request.root_mb {
        Some(mb) => mb,
        None => available
            .checked_sub(others)
            .filter(|&mb| mb > 0)
            .ok_or(LayoutError::NoRoom)?,
    };
    let needed = others + root_mb;
    if root_mb == 0 || needed > available {
        return Err(LayoutError::DoesNotFit {
            needed,
            available,
            gpt: label == Label::Gpt,
        });
    }
    sizes.push((Role::Root, root_mb));

    let mut roles = Vec::new();
    let mut start_mib = 1;
    for (i, (role, mb)) in sizes.into_iter().enumerate() {
        let number = i as u32 + 1;
        let bootable = match role {
            Role::Root => request.boot_mode == BootMode::Bios && local && label == Label::Msdos,
            Role::EfiSystem => label == Label::Msdos,
            _ => false,
        };
        table.partitions.push(Partition {
            number,
            first_lba: start_mib * per_mib,
            blocks: mb * per_mib,
            kind: role.kind(label),
            guid: if label == Label::Gpt { guid() } else { Uuid::nil() },
            name: if label == Label::Gpt {
                role.name().into()
            } else {
                String::new()
            },
            bootable,
            attributes: 0,
        });
        roles.push((role, number));
        start_mib += mb;
    }
    table.validate()?;
    Ok(Layout { table, roles })
}

/// Where a whole-disk image's config drive partition goes: the last 64 MiB
/// of the disk (of the first 2 TiB for an MBR), as Ironic put it.
pub fn configdrive_slot(table: &Table, size_mb: u64) -> Result<Partition, LayoutError> {
    let per_mib = MIB / u64::from(table.block_size.max(1));
    let end_mib = table.usable_end() / per_mib;
    let start_mib = end_mib.saturating_sub(size_mb);
    let used_end = table.partitions.iter().map(Partition::end_lba).max().unwrap_or(0);
    let first = start_mib * per_mib;
    if first < used_end.max(table.first_usable()) || start_mib == 0 {
        return Err(LayoutError::DoesNotFit {
            needed: used_end.div_ceil(per_mib) + size_mb,
            available: end_mib,
            gpt: table.label == Label::Gpt,
        });
    }
    let number = table
        .free_number()
        .ok_or(TableError::TooManyPrimaries(table.partitions.len() + 1))?;
    Ok(Partition {
        number,
        first_lba: first,
        blocks: size_mb * per_mib,
        kind: Role::ConfigDrive.kind(table.label),
        guid: Uuid::new_v4(),
        name: if table.label == Label::Gpt {
            Role::ConfigDrive.name().into()
        } else {
            String::new()
        },
        bootable: false,
        attributes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024;

    fn request(boot_mode: BootMode, boot_option: BootOption) -> Request {
        Request {
            boot_mode,
            boot_option,
            label: None,
            efi_mb: 550,
            ephemeral_mb: 0,
            swap_mb: 0,
            configdrive_mb: 0,
            root_mb: None,
        }
    }

    fn layout(r: &Request, disk_mb: u64) -> Result<Layout, LayoutError> {
        let mut n = 0u128;
        plan(r, 512, disk_mb * 2048, 0x1234, Uuid::from_u128(9), || {
            n += 1;
            Uuid::from_u128(n)
        })
    }

    /// (role, start MiB, size MiB) of each partition.
    fn shape(l: &Layout) -> Vec<(Role, u64, u64)> {
        l.table
            .partitions
            .iter()
            .map(|p| (l.role_of(p.number).expect("role"), p.first_lba / 2048, p.blocks / 2048))
            .collect()
    }

    #[test]
    fn uefi_local_boot_gets_an_esp_first_and_gpt() {
        let mut r = request(BootMode::Uefi, BootOption::Local);
        r.swap_mb = 512;
        r.ephemeral_mb = 1024;
        r.configdrive_mb = 1;
        r.root_mb = Some(4 * GIB);
        let l = layout(&r, 10 * GIB).expect("fits");
        assert_eq!(l.table.label, Label::Gpt);
        assert_eq!(
            shape(&l),
            vec![
                (Role::EfiSystem, 1, 550),
                (Role::Ephemeral, 551, 1024),
                (Role::Swap, 1575, 512),
                (Role::ConfigDrive, 2087, 1),
                (Role::Root, 2088, 4 * GIB),
            ]
        );
        assert!(l.table.partitions.iter().all(|p| !p.bootable));
    }

    #[test]
    fn bios_local_boot_flags_root_on_msdos_and_adds_bios_boot_on_gpt() {
        let r = request(BootMode::Bios, BootOption::Local);
        let l = layout(&r, 2 * GIB).expect("fits");
        assert_eq!(l.table.label, Label::Msdos);
        assert_eq!(shape(&l), vec![(Role::Root, 1, 2 * GIB - 1)]);
        assert!(l.table.partitions[0].bootable);

        let gpt = Request {
            label: Some(Label::Gpt),
            ..r
        };
        let l = layout(&gpt, 2 * GIB).expect("fits");
        // The backup GPT takes the disk's last MiB away from root.
        assert_eq!(shape(&l), vec![(Role::BiosBoot, 1, 1), (Role::Root, 2, 2 * GIB - 3)]);
        assert!(!l.table.partitions[1].bootable);
    }

    #[test]
    fn netboot_has_neither_esp_nor_boot_flag() {
        let mut r = request(BootMode::Uefi, BootOption::Netboot);
        r.swap_mb = 64;
        let l = layout(&r, GIB).expect("fits");
        assert_eq!(shape(&l), vec![(Role::Swap, 1, 64), (Role::Root, 65, GIB - 66)]);
    }

    #[test]
    fn too_big_layouts_are_refused_with_the_numbers() {
        let mut r = request(BootMode::Bios, BootOption::Netboot);
        r.root_mb = Some(GIB);
        assert_eq!(
            layout(&r, GIB).unwrap_err(),
            LayoutError::DoesNotFit {
                needed: GIB,
                available: GIB - 1,
                gpt: false
            }
        );
        r.root_mb = None;
        r.swap_mb = GIB - 1;
        assert_eq!(layout(&r, GIB).unwrap_err(), LayoutError::NoRoom);
        // UEFI on msdos with every partition: five primaries.
        let r = Request {
            label: Some(Label::Msdos),
            ephemeral_mb: 10,
            swap_mb: 10,
            configdrive_mb: 10,
            ..request(BootMode::Uefi, BootOption::Local)
        };
        assert_eq!(
            layout(&r, 2 * GIB).unwrap_err(),
            LayoutError::Table(TableError::TooManyPrimaries(5))
        );
    }

    #[test]
    fn whole_disk_config_drive_goes_in_the_last_64_mib() {
        let mut t = Table::new(Label::Msdos, 512, GIB * 2048, 1, Uuid::nil());
        t.partitions.push(Partition {
            number: 1,
            first_lba: 2048,
            blocks: 512 * 2048,
            kind: PartType::Mbr(mbr_type::LINUX),
            guid: Uuid::nil(),
            name: String::new(),
            bootable: true,
            attributes: 0,
        });
        let slot = configdrive_slot(&t, 64).expect("room");
        assert_eq!(
            (slot.number, slot.first_lba / 2048, slot.blocks / 2048),
            (2, GIB - 64, 64)
        );
        t.partitions[0].blocks = (GIB - 10) * 2048;
        assert!(matches!(configdrive_slot(&t, 64), Err(LayoutError::DoesNotFit { .. })));
    }
}
