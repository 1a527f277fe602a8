//! Pure decoding of the CPUID leaves that say whether Linux runs on Microsoft Hypervisor
//! and as which kind of partition. Mirrors `hv_identify_partition_type()` in
//! drivers/hv/hv_common.c (torvalds/linux) and the bit names of
//! include/hyperv/hvgdk_mini.h / asm-generic/hyperv-tlfs.h.

use serde::Serialize;

use super::sys::CpuidRegs;

/// Leaf 1 ECX bit 31: "a hypervisor is present" (reserved as 0 on bare metal).
const CPUID_HYPERVISOR_PRESENT: u32 = 1 << 31;
/// HYPERV_CPUID_VENDOR_AND_MAX_FUNCTIONS.
pub const LEAF_VENDOR: u32 = 0x4000_0000;
/// HYPERV_CPUID_VERSION: EAX = build number, EBX = major << 16 | minor.
pub const LEAF_VERSION: u32 = 0x4000_0002;
/// HYPERV_CPUID_FEATURES: EBX holds the high half of the partition privilege mask.
pub const LEAF_FEATURES: u32 = 0x4000_0003;

/// HYPERV_CPUID_FEATURES.EBX bits.
pub const HV_CREATE_PARTITIONS: u32 = 1 << 0;
pub const HV_CPU_MANAGEMENT: u32 = 1 << 12;
pub const HV_ISOLATION: u32 = 1 << 22;

pub const HV_VENDOR: &str = "Microsoft Hv";

/// What kind of partition this kernel runs in, as seen from CPUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionType {
    /// Hyper-V root partition: CreatePartitions + CpuManagement.
    Root,
    /// L1 virtualization host: CreatePartitions without CpuManagement.
    L1vh,
    /// An ordinary (or isolated/confidential) Hyper-V guest: cannot create partitions.
    Guest,
    /// Not running on Microsoft Hypervisor (bare metal or another hypervisor).
    None,
    /// No CPUID on this architecture: the type cannot be told without the device.
    Unknown,
}

impl PartitionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::L1vh => "l1vh",
            Self::Guest => "guest",
            Self::None => "none",
            Self::Unknown => "unknown",
        }
    }

    pub fn is_parent(self) -> bool {
        matches!(self, Self::Root | Self::L1vh)
    }
}

/// Facts read from the Hyper-V CPUID leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvInfo {
    pub partition_type: PartitionType,
    /// Hypervisor build number (e.g. 26102 for "10.0.26102").
    pub build: u32,
    pub major: u16,
    pub minor: u16,
    /// Raw HYPERV_CPUID_FEATURES.EBX, for diagnostics.
    pub privileges_high: u32,
    pub isolated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Not x86_64: no CPUID.
    NoCpuid,
    /// The hypervisor-present bit is clear.
    BareMetal,
    /// Some other hypervisor (vendor signature from leaf 0x40000000).
    OtherHypervisor {
        vendor: String,
    },
    HyperV(HvInfo),
}

/// Decode the vendor signature: EBX, ECX, EDX in that order for hypervisor leaves.
pub fn vendor_string(regs: CpuidRegs) -> String {
    let mut bytes = Vec::with_capacity(12);
    for reg in [regs.ebx, regs.ecx, regs.edx] {
        bytes.extend_from_slice(&reg.to_le_bytes());
    }
    let text = String::from_utf8_lossy(&bytes);
    text.trim_end_matches('\0').to_string()
}

/// Classify from already-read leaves, the way hv_identify_partition_type() does.
pub fn partition_type(features_ebx: u32) -> PartitionType {
    let create = features_ebx & HV_CREATE_PARTITIONS != 0;
    let isolated = features_ebx & HV_ISOLATION != 0;
    let cpu_mgmt = features_ebx & HV_CPU_MANAGEMENT != 0;
    match (create && !isolated, cpu_mgmt) {
        (true, true) => PartitionType::Root,
        (true, false) => PartitionType::L1vh,
        (false, _) => PartitionType::Guest,
    }
}

/// Read and decode. `cpuid` is the seam (`Sys::cpuid`).
pub fn identify(cpuid: impl Fn(u32) -> Option<CpuidRegs>) -> Identity {
    let Some(basic) = cpuid(1) else {
        return Identity::NoCpuid;
    };
    if basic.ecx & CPUID_HYPERVISOR_PRESENT == 0 {
        return Identity::BareMetal;
    }
    let Some(vendor_regs) = cpuid(LEAF_VENDOR) else {
        return Identity::NoCpuid;
    };
    let vendor = vendor_string(vendor_regs);
    if vendor != HV_VENDOR || vendor_regs.eax < LEAF_FEATURES {
        return Identity::OtherHypervisor { vendor };
    }
    let version = cpuid(LEAF_VERSION).unwrap_or_default();
    let features = cpuid(LEAF_FEATURES).unwrap_or_default();
    Identity::HyperV(HvInfo {
        partition_type: partition_type(features.ebx),
        build: version.eax,
        major: (version.ebx >> 16) as u16,
        minor: (version.ebx & 0xffff) as u16,
        privileges_high: features.ebx,
        isolated: features.ebx & HV_ISOLATION != 0,
    })
}

/// Registers a Hyper-V host of the given kind would return; used by tests and the bench.
pub fn fake_hyperv_leaf(leaf: u32, features_ebx: u32, build: u32) -> Option<CpuidRegs> {
    let word = |s: &[u8; 4]| u32::from_le_bytes(*s);
    Some(match leaf {
        1 => CpuidRegs {
            ecx: CPUID_HYPERVISOR_PRESENT,
            ..CpuidRegs::default()
        },
        LEAF_VENDOR => CpuidRegs {
            eax: 0x4000_000B,
            ebx: word(b"Micr"),
            ecx: word(b"osof"),
            edx: word(b"t Hv"),
        },
        LEAF_VERSION => CpuidRegs {
            eax: build,
            ebx: 10 << 16,
            ..CpuidRegs::default()
        },
        LEAF_FEATURES => CpuidRegs {
            ebx: features_ebx,
            ..CpuidRegs::default()
        },
        _ => CpuidRegs::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_the_kernel() {
        assert_eq!(
            partition_type(HV_CREATE_PARTITIONS | HV_CPU_MANAGEMENT),
            PartitionType::Root
        );
        assert_eq!(partition_type(HV_CREATE_PARTITIONS), PartitionType::L1vh);
        assert_eq!(
            partition_type(HV_CREATE_PARTITIONS | HV_ISOLATION | HV_CPU_MANAGEMENT),
            PartitionType::Guest
        );
        assert_eq!(partition_type(HV_CPU_MANAGEMENT), PartitionType::Guest);
        assert_eq!(partition_type(0), PartitionType::Guest);
    }

    #[test]
    fn identifies_l1vh() {
        let id = identify(|leaf| fake_hyperv_leaf(leaf, HV_CREATE_PARTITIONS, 26102));
        let Identity::HyperV(info) = id else {
            panic!("expected Hyper-V, got {id:?}")
        };
        assert_eq!(info.partition_type, PartitionType::L1vh);
        assert_eq!(info.build, 26102);
        assert_eq!((info.major, info.minor), (10, 0));
    }

    #[test]
    fn identifies_other_hypervisors_and_bare_metal() {
        let kvm = |leaf| {
            Some(match leaf {
                1 => CpuidRegs {
                    ecx: CPUID_HYPERVISOR_PRESENT,
                    ..CpuidRegs::default()
                },
                LEAF_VENDOR => CpuidRegs {
                    eax: 0x4000_0001,
                    ebx: u32::from_le_bytes(*b"KVMK"),
                    ecx: u32::from_le_bytes(*b"VMKV"),
                    edx: u32::from_le_bytes(*b"M\0\0\0"),
                },
                _ => CpuidRegs::default(),
            })
        };
        assert_eq!(
            identify(kvm),
            Identity::OtherHypervisor {
                vendor: "KVMKVMKVM".into()
            }
        );
        assert_eq!(
            identify(|_| Some(CpuidRegs::default())),
            Identity::BareMetal
        );
        assert_eq!(identify(|_| None), Identity::NoCpuid);
    }
}
