//! The KVM backend (`kvm-ioctls`): the part of the bench that really runs on this machine.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use super::backend::{BenchError, Exit, GuestVm, Hypervisor, HypervisorKind, refused};
use super::memory::GuestMemory;
use super::payload;

const MAIN_SLOT: u32 = 0;
const SCRATCH_SLOT: u32 = 1;

pub struct KvmHypervisor {
    kvm: Kvm,
    /// What KVM_GET_SUPPORTED_CPUID offers, given to every vCPU: without a CPUID the guest's
    /// view of paging features is empty, and on kvm_pvm a 1 GiB-page identity map ended in a
    /// shutdown exit (issue 17's measurement; this payload uses 2 MiB pages either way).
    cpuid: CpuId,
}

impl KvmHypervisor {
    /// Take an open `/dev/kvm` (read-write) and read the supported CPUID.
    pub fn from_file(file: File) -> Result<Self, BenchError> {
        // SAFETY: `into_raw_fd` hands over sole ownership of a freshly opened fd, which is
        // what `Kvm::from_raw_fd` requires; `Kvm` closes it on drop.
        let kvm = unsafe { Kvm::from_raw_fd(file.into_raw_fd()) };
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| refused("KVM_GET_SUPPORTED_CPUID", e.errno()))?;
        Ok(Self { kvm, cpuid })
    }
}

/// Field order is drop order: the vCPU and VM fds close before the memory they map is
/// unmapped.
pub struct KvmVm {
    vcpu: VcpuFd,
    vm: VmFd,
    scratch: Option<GuestMemory>,
    _main: GuestMemory,
}

impl Hypervisor for KvmHypervisor {
    type Vm = KvmVm;

    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Kvm
    }

    fn create_vm(&self, image: &[u8]) -> Result<KvmVm, BenchError> {
        let vm = self
            .kvm
            .create_vm()
            .map_err(|e| refused("create VM (KVM_CREATE_VM)", e.errno()))?;
        let mut main = GuestMemory::new(payload::MAIN_SIZE, false)?;
        main.write(image)?;
        set_region(&vm, MAIN_SLOT, 0, &main)?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| refused("KVM_CREATE_VCPU", e.errno()))?;
        vcpu.set_cpuid2(&self.cpuid)
            .map_err(|e| refused("KVM_SET_CPUID2", e.errno()))?;
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| refused("KVM_GET_SREGS", e.errno()))?;
        long_mode(&mut sregs);
        vcpu.set_sregs(&sregs)
            .map_err(|e| refused("KVM_SET_SREGS", e.errno()))?;
        Ok(KvmVm {
            vcpu,
            vm,
            scratch: None,
            _main: main,
        })
    }
}

/// 64-bit mode with the payload's identity map; flat segments (no GDT is needed: the guest
/// never loads a selector).
fn long_mode(sregs: &mut kvm_bindings::kvm_sregs) {
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x8,
        type_: 0xb, // execute/read, accessed
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: 0x10,
        type_: 0x3, // read/write, accessed
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr3 = payload::PML4_GPA;
    sregs.cr4 = payload::CR4;
    sregs.cr0 = payload::CR0;
    sregs.efer = payload::EFER;
}

fn set_region(vm: &VmFd, slot: u32, gpa: u64, mem: &GuestMemory) -> Result<(), BenchError> {
    let region = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: gpa,
        memory_size: mem.size() as u64,
        userspace_addr: mem.host_addr(),
    };
    // SAFETY: `mem` is a live mapping of `memory_size` bytes that outlives the region: the
    // region is deleted (size 0) before a scratch mapping is dropped, and the main mapping
    // is dropped only after the VM fd (`KvmVm` field order).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| refused("KVM_SET_USER_MEMORY_REGION", e.errno()))
}

impl GuestVm for KvmVm {
    fn enter(&mut self, entry: u64, rcx: u64) -> Result<(), BenchError> {
        let mut regs = self
            .vcpu
            .get_regs()
            .map_err(|e| refused("KVM_GET_REGS", e.errno()))?;
        regs.rip = entry;
        regs.rcx = rcx;
        regs.rflags = 0x2;
        self.vcpu
            .set_regs(&regs)
            .map_err(|e| refused("KVM_SET_REGS", e.errno()))
    }

    fn run(&mut self) -> Result<Exit, BenchError> {
        match self.vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) => Ok(Exit::IoOut { port }),
            Ok(VcpuExit::Hlt) => Ok(Exit::Hlt),
            Ok(other) => Ok(Exit::Other(format!("KVM exit {other:?}"))),
            Err(e) => Err(refused("KVM_RUN", e.errno())),
        }
    }

    fn map_scratch(&mut self, gpa: u64, pages: u64) -> Result<(), BenchError> {
        self.unmap_scratch()?;
        let size = usize::try_from(pages * payload::PAGE_SIZE).unwrap_or(usize::MAX);
        let mem = GuestMemory::new(size, false)?;
        set_region(&self.vm, SCRATCH_SLOT, gpa, &mem)?;
        self.scratch = Some(mem);
        Ok(())
    }

    fn unmap_scratch(&mut self) -> Result<(), BenchError> {
        let Some(mem) = self.scratch.take() else {
            return Ok(());
        };
        let region = kvm_userspace_memory_region {
            slot: SCRATCH_SLOT,
            flags: 0,
            guest_phys_addr: payload::SCRATCH_GPA,
            memory_size: 0,
            userspace_addr: mem.host_addr(),
        };
        // SAFETY: size 0 deletes the slot; KVM stops using the mapping before `mem` drops.
        let deleted = unsafe { self.vm.set_user_memory_region(region) };
        match deleted {
            Ok(()) => Ok(()),
            Err(e) => {
                // KVM may still reference the pages: leak them rather than unmap memory a
                // guest can reach. Dropping the VM releases the slot and the fd.
                std::mem::forget(mem);
                Err(refused("KVM_SET_USER_MEMORY_REGION (delete)", e.errno()))
            }
        }
    }
}
