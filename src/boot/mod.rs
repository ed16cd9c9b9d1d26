//! Boot loaders: recognising them at capture and in `probe`, recording what each needs in the
//! manifest, and checking offline that a disk's boot chain is whole (`check-boot`, and after
//! every apply). GRUB on BIOS, UEFI loaders on the ESP (GRUB, shim, systemd-boot, the
//! removable fallback path) and EXTLINUX.

pub mod efivars;
pub mod esp;
pub mod extlinux;
pub mod grub_bios;

use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::disk::layout::DiskLayout;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BootLoader {
    GrubBios(grub_bios::GrubBios),
    Uefi(esp::Uefi),
    Extlinux(extlinux::Extlinux),
}

impl BootLoader {
    pub fn describe(&self) -> String {
        match self {
            BootLoader::GrubBios(g) => format!(
                "GRUB for BIOS: core image at LBA {} in the {} ({} sector-list entries)",
                g.core_lba,
                g.core_location,
                g.sector_list.len()
            ),
            BootLoader::Uefi(u) => format!(
                "UEFI on ESP partition {}: {} ({} files)",
                u.esp_partition,
                if u.loaders.is_empty() {
                    "no known loader".to_string()
                } else {
                    u.loaders.join(", ")
                },
                u.files.len()
            ),
            BootLoader::Extlinux(e) => format!(
                "EXTLINUX in partition {} (hidden sectors {})",
                e.partition, e.hidden_sectors
            ),
        }
    }
}

/// One link of a boot chain and whether it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    pub link: String,
    pub ok: bool,
    pub detail: String,
}

impl Link {
    pub fn new(link: &str, ok: bool, detail: &str) -> Link {
        Link {
            link: link.to_string(),
            ok,
            detail: detail.to_string(),
        }
    }
}

/// Every boot loader found on `disk`; problems reading one are reported as warnings.
pub fn detect(disk: &Disk, layout: &DiskLayout) -> (Vec<BootLoader>, Vec<String>) {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    match grub_bios::read(disk, layout) {
        Some(Ok(g)) => found.push(BootLoader::GrubBios(g)),
        Some(Err(why)) => warnings.push(format!(
            "GRUB boot code found but its chain is broken: {why}"
        )),
        None => {}
    }
    for p in layout.partitions.iter().filter(|p| p.role == "esp") {
        match esp::list_files(disk, p.offset, p.size) {
            Ok(files) => found.push(BootLoader::Uefi(esp::Uefi {
                esp_partition: p.number,
                loaders: esp::loaders(&files),
                files,
            })),
            Err(e) => warnings.push(format!("ESP partition {}: {e:#}", p.number)),
        }
    }
    found.extend(
        extlinux::read(disk, layout)
            .into_iter()
            .map(BootLoader::Extlinux),
    );
    (found, warnings)
}

/// The UEFI loaders recorded for a disk, if it has an ESP.
pub fn uefi_of(loaders: &[BootLoader]) -> Option<&esp::Uefi> {
    loaders.iter().find_map(|l| match l {
        BootLoader::Uefi(u) => Some(u),
        _ => None,
    })
}

/// The firmware a boot path is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

impl std::fmt::Display for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        })
    }
}

/// What a disk's boot chain is checked against: the loaders recorded in a snapshot, and
/// whether the snapshot's disk was set up to boot by BIOS (boot code, a BIOS boot partition).
#[derive(Default)]
pub struct Reference<'a> {
    pub loaders: Option<&'a [BootLoader]>,
    pub bios: bool,
    /// Links found by comparing the disk's boot bytes with the snapshot (boot regions, the
    /// BIOS boot partition, ESP files), each for one firmware path.
    pub compared: Vec<(Firmware, Link)>,
}

/// One firmware path of a disk: why the disk is set up for it, and its links.
#[derive(Clone, Debug, Serialize)]
pub struct PathReport {
    pub firmware: Firmware,
    /// Why this disk has this path ("BIOS boot partition 1", "ESP partition 1", "the snapshot").
    pub because: String,
    pub whole: bool,
    pub links: Vec<Link>,
}

impl PathReport {
    /// "bios: ok" / "bios: broken: boot code is zero"
    pub fn summary(&self) -> String {
        match self.links.iter().find(|l| !l.ok) {
            None => format!("{}: ok", self.firmware),
            Some(l) => format!("{}: broken: {}", self.firmware, l.detail),
        }
    }
}

/// Checks every firmware path the disk was set up for, offline. A BIOS path exists when the
/// disk has a BIOS boot partition, GRUB or EXTLINUX boot code, or the reference says so; a UEFI
/// path when it has an ESP (or the reference's loaders include one). `only` narrows the check
/// to one firmware.
pub fn check(
    disk: &Disk,
    layout: &DiskLayout,
    reference: &Reference,
    only: Option<Firmware>,
) -> Vec<PathReport> {
    let ss = u64::from(disk.logical_sector_size);
    let lba0 = disk.read_vec(0, ss).unwrap_or_default();
    let detected;
    let loaders = match reference.loaders {
        Some(c) => c,
        None => {
            detected = detect(disk, layout).0;
            &detected[..]
        }
    };
    let captured = reference.loaders.is_some();
    let mut paths = Vec::new();

    // BIOS: boot code in LBA 0, then whatever it loads.
    let bios_part = layout.partitions.iter().find(|p| p.role == "bios-boot");
    let extlinux_vbrs = extlinux::read(disk, layout);
    let bios_because = if let Some(p) = bios_part {
        Some(format!("BIOS boot partition {}", p.number))
    } else if grub_bios::is_grub_boot_code(&lba0) {
        Some("GRUB boot code in LBA 0".to_string())
    } else if !extlinux_vbrs.is_empty() {
        Some("an EXTLINUX volume boot record".to_string())
    } else if loaders
        .iter()
        .any(|l| matches!(l, BootLoader::GrubBios(_) | BootLoader::Extlinux(_)))
    {
        Some("the snapshot's BIOS boot loader".to_string())
    } else if reference.bios {
        Some("the snapshot's boot code".to_string())
    } else {
        None
    };
    if let Some(because) = bios_because {
        let sig = lba0.len() >= 512 && lba0[510] == 0x55 && lba0[511] == 0xAA;
        let mut links = vec![Link::new(
            "boot signature",
            sig,
            if sig {
                "LBA 0 ends in 0x55AA"
            } else {
                "LBA 0 lacks the 0x55AA boot signature"
            },
        )];
        let code = &lba0[..lba0.len().min(440)];
        let zero = code.iter().all(|&b| b == 0);
        links.push(Link::new(
            "boot code",
            !zero,
            &if zero {
                "boot code is zero".to_string()
            } else {
                recognise_boot_code(&lba0)
            },
        ));
        let mut bios_loaders = 0;
        for l in loaders {
            match l {
                BootLoader::GrubBios(g) => {
                    bios_loaders += 1;
                    links.extend(grub_bios::check(disk, layout, captured.then_some(g)));
                }
                BootLoader::Extlinux(e) => {
                    bios_loaders += 1;
                    links.extend(extlinux::check(disk, layout, e));
                }
                BootLoader::Uefi(_) => {}
            }
        }
        if bios_loaders == 0 && !captured {
            // Nothing recognised: a GRUB whose chain is broken still says where.
            match grub_bios::read(disk, layout) {
                Some(Err(why)) => links.push(Link::new("grub-bios: core image", false, &why)),
                _ if bios_part.is_some() => links.push(Link::new(
                    "grub-bios: boot code",
                    false,
                    "the disk has a BIOS boot partition but LBA 0 holds no GRUB boot code",
                )),
                _ => {}
            }
        }
        links.extend(
            reference
                .compared
                .iter()
                .filter(|(f, _)| *f == Firmware::Bios)
                .map(|(_, l)| l.clone()),
        );
        paths.push(PathReport {
            firmware: Firmware::Bios,
            because,
            whole: links.iter().all(|l| l.ok),
            links,
        });
    }

    // UEFI: an ESP, its files, NVRAM entries that name it.
    let esp_part = layout.partitions.iter().find(|p| p.role == "esp");
    let uefi = uefi_of(loaders);
    let uefi_because = match (esp_part, uefi) {
        (Some(p), _) => Some(format!("ESP partition {}", p.number)),
        (None, Some(u)) => Some(format!("the snapshot's ESP partition {}", u.esp_partition)),
        (None, None) => None,
    };
    if let Some(because) = uefi_because {
        let mut links = match (uefi, esp_part) {
            (Some(u), _) => check_uefi(disk, layout, u, captured),
            (None, Some(p)) => {
                let why = match esp::list_files(disk, p.offset, p.size) {
                    Err(e) => format!("{e:#}"),
                    Ok(_) => "no UEFI loader recorded for it".to_string(),
                };
                vec![Link::new(
                    &format!("uefi (ESP partition {}): FAT filesystem", p.number),
                    false,
                    &why,
                )]
            }
            (None, None) => Vec::new(),
        };
        links.extend(
            reference
                .compared
                .iter()
                .filter(|(f, _)| *f == Firmware::Uefi)
                .map(|(_, l)| l.clone()),
        );
        paths.push(PathReport {
            firmware: Firmware::Uefi,
            because,
            whole: links.iter().all(|l| l.ok),
            links,
        });
    }
    if let Some(f) = only {
        paths.retain(|p| p.firmware == f);
    }
    paths
}

fn check_uefi(disk: &Disk, layout: &DiskLayout, want: &esp::Uefi, compare: bool) -> Vec<Link> {
    let name = format!("uefi (ESP partition {})", want.esp_partition);
    let Some(p) = layout
        .partitions
        .iter()
        .find(|p| p.number == want.esp_partition && p.role == "esp")
    else {
        return vec![Link::new(
            &name,
            false,
            "the ESP is gone from the partition table",
        )];
    };
    let files = match esp::list_files(disk, p.offset, p.size) {
        Ok(f) => f,
        Err(e) => {
            return vec![Link::new(
                &format!("{name}: FAT filesystem"),
                false,
                &format!("{e:#}"),
            )];
        }
    };
    let mut links = vec![Link::new(
        &format!("{name}: FAT filesystem"),
        true,
        &format!("{} files", files.len()),
    )];
    links.extend(check_nvram_entries(
        layout,
        &files,
        u64::from(disk.logical_sector_size),
    ));
    let fallback = esp::find(&files, esp::FALLBACK).is_some();
    links.push(Link::new(
        &format!("{name}: fallback loader"),
        fallback,
        if fallback {
            "\\EFI\\BOOT\\BOOTX64.EFI exists"
        } else {
            "\\EFI\\BOOT\\BOOTX64.EFI is missing"
        },
    ));
    if compare {
        for f in want
            .files
            .iter()
            .filter(|f| f.path.to_ascii_lowercase().ends_with(".efi"))
        {
            let ok = esp::find(&files, &f.path).is_some_and(|now| now.hash == f.hash);
            links.push(Link::new(
                &format!("{name}: {}", f.path),
                ok,
                if ok {
                    "hashes as captured"
                } else {
                    "missing or different from the snapshot"
                },
            ));
        }
    }
    links
}

/// Names the boot code in the first 440 bytes of LBA 0.
pub fn recognise_boot_code(lba0: &[u8]) -> String {
    let code = &lba0[..lba0.len().min(440)];
    let contains = |needle: &[u8]| code.windows(needle.len()).any(|w| w == needle);
    if code.iter().all(|&b| b == 0) {
        "none (boot code is zero)".into()
    } else if grub_bios::is_grub_boot_code(lba0) {
        "GRUB (i386-pc boot.img)".into()
    } else if contains(b"Multiple active partitions") {
        "SYSLINUX MBR (boots the active partition)".into()
    } else {
        format!(
            "unrecognised boot code ({} non-zero bytes)",
            code.iter().filter(|&&b| b != 0).count()
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainReport {
    pub disk: String,
    /// Every firmware path checked is whole (and at least one exists).
    pub whole: bool,
    pub paths: Vec<PathReport>,
    /// Every link of every path, in order (a link shared by paths is listed once per path).
    pub links: Vec<Link>,
}

/// Reads the disk's current layout and checks each firmware path; a table that cannot be
/// read is a broken link, not an error, and a disk with no boot path at all is not whole.
pub fn check_disk(disk: &Disk, reference: &Reference, only: Option<Firmware>) -> ChainReport {
    let paths = match crate::disk::layout::read_layout(disk) {
        Ok(layout) => check(disk, &layout, reference, only),
        Err(e) => vec![PathReport {
            firmware: only.unwrap_or(Firmware::Bios),
            because: "the disk".into(),
            whole: false,
            links: vec![Link::new("partition table", false, &format!("{e:#}"))],
        }],
    };
    let mut links: Vec<Link> = paths.iter().flat_map(|p| p.links.clone()).collect();
    if paths.is_empty() {
        links.push(Link::new(
            "boot loader",
            false,
            &match only {
                Some(f) => format!("the disk is not set up to boot by {f}"),
                None => "no boot loader recognised on this disk (no boot code, BIOS boot partition or ESP)".into(),
            },
        ));
    }
    ChainReport {
        disk: disk.path.display().to_string(),
        whole: !paths.is_empty() && paths.iter().all(|p| p.whole),
        paths,
        links,
    }
}

/// On a UEFI system: every Boot#### entry that names a partition of this disk (by its GUID)
/// must point at that partition's number and start, and at a file that exists on the ESP.
fn check_nvram_entries(layout: &DiskLayout, files: &[esp::EspFile], sector_size: u64) -> Vec<Link> {
    let Some(dir) = efivars::efivars_dir() else {
        return Vec::new();
    };
    let mut links = Vec::new();
    for (n, opt) in efivars::boot_entries(&dir) {
        let Some(hd) = &opt.hard_drive else { continue };
        let Some(p) = layout.partitions.iter().find(|p| {
            p.guid
                .as_deref()
                .and_then(crate::disk::gpt::guid_from_string)
                == Some(hd.guid)
        }) else {
            continue;
        };
        let name = format!("nvram: Boot{n:04X} ({})", opt.description);
        let file = opt.file.clone().unwrap_or_default();
        let problem =
            if p.number != hd.partition || hd.start_lba.saturating_mul(sector_size) != p.offset {
                Some(format!(
                    "points at partition {} at LBA {}, but that partition is number {} at byte {}",
                    hd.partition, hd.start_lba, p.number, p.offset
                ))
            } else if esp::find(files, &file.replace('\\', "/")).is_none() {
                Some(format!("points at {file}, which does not exist on the ESP"))
            } else {
                None
            };
        links.push(match problem {
            Some(why) => Link::new(&name, false, &why),
            None => Link::new(
                &name,
                true,
                &format!("points at {file} on partition {}", p.number),
            ),
        });
    }
    links
}
