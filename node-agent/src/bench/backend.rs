//! The seam between the driver and a hypervisor: create a VM with the guest image loaded,
//! point its vCPU at a snippet, run it to the next exit, map and unmap fresh pages.
//! Dropping a [`GuestVm`] releases everything it holds (vCPU, VM, guest memory, fds).

use std::fmt;

use serde::Serialize;
use thiserror::Error;

use crate::probe::sys::errno_name;

/// Which hypervisor (also the `hypervisor` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    Kvm,
    Mshv,
}

impl HypervisorKind {
    pub const ALL: [HypervisorKind; 2] = [HypervisorKind::Kvm, HypervisorKind::Mshv];

    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorKind::Kvm => "kvm",
            HypervisorKind::Mshv => "mshv",
        }
    }

    /// The device node, relative to the host root.
    pub fn device(self) -> &'static str {
        match self {
            HypervisorKind::Kvm => "dev/kvm",
            HypervisorKind::Mshv => "dev/mshv",
        }
    }
}

impl fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a VM exited to this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `out` to `port` (the vCPU continues after the instruction on the next run).
    IoOut {
        port: u16,
    },
    Hlt,
    /// Anything else: named as the hypervisor names it (e.g. `KVM_EXIT_SHUTDOWN`).
    Other(String),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::IoOut { port } => write!(f, "io-out port {port:#x}"),
            Exit::Hlt => f.write_str("hlt"),
            Exit::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BenchError {
    /// The device node does not exist under the host root.
    #[error("{path}: absent")]
    Absent { path: String },
    /// open(2) failed (EACCES: file mode; EPERM: device cgroup or LSM; ENXIO/ENODEV: no driver).
    #[error("{path}: open: {} ({detail})", errno_name(*.errno))]
    Open {
        path: String,
        errno: i32,
        detail: String,
    },
    /// The hypervisor refused an ioctl.
    #[error("{op}: {} (the hypervisor refused)", errno_name(*.errno))]
    Refused { op: &'static str, errno: i32 },
    /// The guest exited in a way the payload never does.
    #[error("{scenario}: unexpected exit {exit} (expected {expected})")]
    UnexpectedExit {
        scenario: &'static str,
        exit: String,
        expected: String,
    },
    /// Host memory for the guest could not be mapped.
    #[error("guest memory: mmap {} bytes: {}", .size, errno_name(*.errno))]
    Memory { size: usize, errno: i32 },
    /// The wall-time budget ran out before this scenario.
    #[error("time budget of {budget_ms} ms used up before this scenario")]
    Timeout { budget_ms: u64 },
    /// Another bench holds the node's lock.
    #[error("another bench is running on this node (lock {path} is held)")]
    Busy { path: String },
    #[error("{0}")]
    Other(String),
}

impl BenchError {
    /// The errno behind the error, if there was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BenchError::Open { errno, .. }
            | BenchError::Refused { errno, .. }
            | BenchError::Memory { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// `unavailable` (device absent, not openable, or an ioctl refused) or `error` (the
    /// guest misbehaved, memory, time budget): the `result` of `bench_runs_total` when this
    /// error kept a hypervisor from running at all.
    pub fn result(&self) -> &'static str {
        match self {
            BenchError::Absent { .. }
            | BenchError::Open { .. }
            | BenchError::Busy { .. }
            | BenchError::Refused { .. } => "unavailable",
            _ => "error",
        }
    }
}

/// Shorthand for an ioctl error from the rust-vmm crates (they carry an errno).
pub fn refused(op: &'static str, errno: i32) -> BenchError {
    BenchError::Refused { op, errno }
}

/// A hypervisor: opens its device and creates VMs.
pub trait Hypervisor {
    type Vm: GuestVm;
    fn kind(&self) -> HypervisorKind;
    /// A VM with one vCPU, `MAIN_SIZE` bytes of memory holding `image` at GPA 0, and the
    /// vCPU in 64-bit mode with the identity map (`payload::PML4_GPA`).
    fn create_vm(&self, image: &[u8]) -> Result<Self::Vm, BenchError>;
}

/// One VM with one vCPU.
pub trait GuestVm {
    /// Set RIP to `entry`, RCX to `rcx` (the snippet's count) and flags to their reset value.
    fn enter(&mut self, entry: u64, rcx: u64) -> Result<(), BenchError>;
    /// Run to the next exit.
    fn run(&mut self) -> Result<Exit, BenchError>;
    /// Map `pages` fresh, never-touched host pages at `gpa` (replacing an earlier scratch map).
    fn map_scratch(&mut self, gpa: u64, pages: u64) -> Result<(), BenchError>;
    /// Unmap and release the scratch pages (no-op when none are mapped).
    fn unmap_scratch(&mut self) -> Result<(), BenchError>;
}
