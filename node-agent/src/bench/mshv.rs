//! The mshv backend (`mshv-ioctls` 0.7): the same guest on Microsoft Hypervisor.
//!
//! It follows the crate's own guest-running test, `test_run_code`
//! (rust-vmm/mshv@mshv-ioctls-v0.7.0 mshv-ioctls/src/ioctls/vcpu.rs:2009-2158): create the
//! partition, `initialize`, create vCPU 0, `map_user_memory` with WRITABLE|EXECUTABLE over a
//! shared anonymous mapping, set registers, `run` until `HVMSG_X64_HALT`, advancing RIP past
//! each `out dx, al` (one byte) on `HVMSG_X64_IO_PORT_INTERCEPT`. Where that test stays in
//! real mode this one sets long mode through `set_sregs` (the crate's `SpecialRegisters`,
//! vcpu.rs:866), like the KVM backend.
//!
//! NOT RUN HERE: the machine this was written on has no `/dev/mshv` (kvm_pvm only), so this
//! file is compiled and type-checked but has never executed a guest. The driver, payload and
//! statistics it relies on are the ones the KVM backend runs end to end. Unknowns an L1VH
//! run must settle: whether CPUID is answered by the hypervisor without an intercept (an
//! `HVMSG_X64_CPUID_INTERCEPT` is reported as an unexpected exit, not hidden), and whether
//! the driver pins mapped pages (then first-touch measures only the second-level fault).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::IntoRawFd;

use mshv_bindings::{
    MSHV_SET_MEM_BIT_EXECUTABLE, MSHV_SET_MEM_BIT_WRITABLE, SegmentRegister,
    hv_message_type_HVMSG_X64_HALT, hv_message_type_HVMSG_X64_IO_PORT_INTERCEPT,
    hv_partition_property_code_HV_PARTITION_PROPERTY_PROCESSOR_FEATURES0,
    hv_partition_property_code_HV_PARTITION_PROPERTY_PROCESSOR_FEATURES1, hv_register_assoc,
    hv_register_name_HV_X64_REGISTER_RIP, hv_register_value, mshv_user_mem_region,
};
use mshv_ioctls::{Mshv, VcpuFd, VmFd};

use super::backend::{BenchError, Exit, GuestVm, Hypervisor, HypervisorKind, refused};
use super::memory::GuestMemory;
use super::payload;

pub struct MshvHypervisor {
    mshv: Mshv,
}

impl MshvHypervisor {
    /// Take an open `/dev/mshv` (read-write).
    pub fn from_file(file: File) -> Self {
        // SAFETY: `into_raw_fd` hands over sole ownership of a freshly opened /dev/mshv fd,
        // the contract of `Mshv::new_with_fd_number` (mshv-ioctls 0.7.1 src/ioctls/system.rs:45); `Mshv` closes it on drop.
        let mshv = unsafe { Mshv::new_with_fd_number(file.into_raw_fd()) };
        Self { mshv }
    }
}

struct Region {
    mem: GuestMemory,
    region: mshv_user_mem_region,
}

/// Field order is drop order: vCPU and partition fds close before the memory is unmapped.
pub struct MshvVm {
    vcpu: VcpuFd,
    vm: VmFd,
    scratch: Option<Region>,
    _main: Region,
}

fn mem_flags() -> u8 {
    (1u8 << MSHV_SET_MEM_BIT_WRITABLE) | (1u8 << MSHV_SET_MEM_BIT_EXECUTABLE)
}

fn map(vm: &VmFd, gpa: u64, mem: GuestMemory) -> Result<Region, BenchError> {
    let region = mshv_user_mem_region {
        flags: mem_flags(),
        guest_pfn: gpa / payload::PAGE_SIZE,
        size: mem.size() as u64,
        userspace_addr: mem.host_addr(),
        ..Default::default()
    };
    vm.map_user_memory(region)
        .map_err(|e| refused("MSHV_SET_GUEST_MEMORY (map)", e.errno()))?;
    Ok(Region { mem, region })
}

impl MshvHypervisor {
    /// `Mshv::create_vm` *panics* when the host partition property hypercalls it makes fail
    /// (`.unwrap()` in `make_default_partition_create_arg`, mshv-ioctls 0.7.1
    /// src/ioctls/system.rs:117-126, and in `make_default_synthetic_features_mask`,
    /// system.rs:204): e.g. on a kernel without `MSHV_ROOT_HVCALL`, where the probe's
    /// self-query answers ENOTTY. The release profile aborts on panic, so the agent would
    /// die. Make the same queries first, which return errors; what remains is the
    /// assignable-features query at system.rs:229-233 (private, reached only when the VMM
    /// capabilities below say it is supported).
    fn precheck(&self) -> Result<(), BenchError> {
        const OP: &str = "create partition (host partition properties, MSHV_ROOT_HVCALL)";
        for code in [
            hv_partition_property_code_HV_PARTITION_PROPERTY_PROCESSOR_FEATURES0,
            hv_partition_property_code_HV_PARTITION_PROPERTY_PROCESSOR_FEATURES1,
        ] {
            self.mshv
                .get_host_partition_property(code)
                .map_err(|e| refused(OP, e.errno()))?;
        }
        self.mshv
            .get_vmm_caps()
            .map_err(|e| refused(OP, e.errno()))?;
        Ok(())
    }
}

impl Hypervisor for MshvHypervisor {
    type Vm = MshvVm;

    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Mshv
    }

    fn create_vm(&self, image: &[u8]) -> Result<MshvVm, BenchError> {
        self.precheck()?;
        let vm = self
            .mshv
            .create_vm()
            .map_err(|e| refused("create partition (MSHV_CREATE_PARTITION)", e.errno()))?;
        vm.initialize()
            .map_err(|e| refused("create partition (MSHV_INITIALIZE_PARTITION)", e.errno()))?;
        let mut mem = GuestMemory::new(payload::MAIN_SIZE, true)?;
        mem.write(image)?;
        let main = map(&vm, 0, mem)?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| refused("MSHV_CREATE_VP", e.errno()))?;
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| refused("get special registers", e.errno()))?;
        let code = SegmentRegister {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x8,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = SegmentRegister {
            selector: 0x10,
            type_: 0x3,
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
        vcpu.set_sregs(&sregs)
            .map_err(|e| refused("set special registers", e.errno()))?;
        Ok(MshvVm {
            vcpu,
            vm,
            scratch: None,
            _main: main,
        })
    }
}

impl GuestVm for MshvVm {
    fn enter(&mut self, entry: u64, rcx: u64) -> Result<(), BenchError> {
        let mut regs = self
            .vcpu
            .get_regs()
            .map_err(|e| refused("get registers", e.errno()))?;
        regs.rip = entry;
        regs.rcx = rcx;
        regs.rflags = 0x2;
        self.vcpu
            .set_regs(&regs)
            .map_err(|e| refused("set registers", e.errno()))
    }

    fn run(&mut self) -> Result<Exit, BenchError> {
        let msg = self
            .vcpu
            .run()
            .map_err(|e| refused("MSHV_RUN_VP", e.errno()))?;
        let kind = msg.header.message_type;
        if kind == hv_message_type_HVMSG_X64_HALT {
            return Ok(Exit::Hlt);
        }
        if kind == hv_message_type_HVMSG_X64_IO_PORT_INTERCEPT {
            let io = msg
                .to_ioport_info()
                .map_err(|e| refused("decode I/O port intercept", e.errno()))?;
            // The intercept stops *at* the instruction; skip it like vcpu.rs:2125-2133 does
            // (`out dx, al` is one byte, one register write) so the next run continues.
            self.vcpu
                .set_reg(&[hv_register_assoc {
                    name: hv_register_name_HV_X64_REGISTER_RIP,
                    value: hv_register_value {
                        reg64: io.header.rip + 1,
                    },
                    ..Default::default()
                }])
                .map_err(|e| refused("set RIP", e.errno()))?;
            return Ok(Exit::IoOut {
                port: io.port_number,
            });
        }
        Ok(Exit::Other(format!("hv message type {kind:#x}")))
    }

    fn map_scratch(&mut self, gpa: u64, pages: u64) -> Result<(), BenchError> {
        self.unmap_scratch()?;
        let size = usize::try_from(pages * payload::PAGE_SIZE).unwrap_or(usize::MAX);
        let mem = GuestMemory::new(size, true)?;
        self.scratch = Some(map(&self.vm, gpa, mem)?);
        Ok(())
    }

    fn unmap_scratch(&mut self) -> Result<(), BenchError> {
        let Some(r) = self.scratch.take() else {
            return Ok(());
        };
        match self.vm.unmap_user_memory(r.region) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The partition may still map the pages: leak them rather than free memory a
                // guest can reach; closing the partition releases them.
                std::mem::forget(r.mem);
                Err(refused("MSHV_SET_GUEST_MEMORY (unmap)", e.errno()))
            }
        }
    }
}
