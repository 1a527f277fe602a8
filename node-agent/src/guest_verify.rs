//! Guest-run verification: proof that `/dev/mshv` runs a guest, not only that it answers
//! an ioctl's argument check (the probe's `capable`). The `exit-to-vmm` snippet of the
//! bench payload runs once: [`EXITS`] port-I/O exits, then `hlt`, in a fresh partition.
//!
//! Published as `<prefix>guest-verified=true|false` (absent until tried), in `/status`,
//! in `probe --run-guest` output and as `mshv_node_agent_guest_verified`.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::bench::backend::{BenchError, Exit, GuestVm, Hypervisor, HypervisorKind};
use crate::bench::{kvm, lock, mshv, open_device, payload};
use crate::probe::sys::errno_name;

/// Exits the guest makes before it halts.
pub const EXITS: u64 = 3;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuestVerification {
    pub hypervisor: HypervisorKind,
    pub verified: bool,
    /// `ok` or why not (one line, errno named as `probe` names it).
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_name: Option<String>,
    /// Port-I/O exits observed (== EXITS when verified).
    pub exits: u64,
    pub duration_us: u64,
    pub at: String,
}

/// Why no verification was made (the label stays absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotTried {
    /// No device node under the host root.
    Absent(String),
    /// Another bench or verification holds the node's lock.
    Busy(String),
}

impl std::fmt::Display for NotTried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotTried::Absent(p) => write!(f, "not tried: {p} is absent"),
            NotTried::Busy(p) => write!(f, "not tried: another bench holds {p}"),
        }
    }
}

/// Run the guest once on `hv`.
pub fn verify_on<H: Hypervisor>(hv: &H) -> GuestVerification {
    let started = Instant::now();
    let mut exits = 0;
    let outcome = run_guest(hv, &mut exits);
    finish(hv.kind(), outcome, exits, started)
}

fn run_guest<H: Hypervisor>(hv: &H, exits: &mut u64) -> Result<(), BenchError> {
    let mut vm = hv.create_vm(&payload::image())?;
    vm.enter(payload::EXIT_TO_VMM.entry, EXITS)?;
    let want = Exit::IoOut {
        port: payload::EXIT_TO_VMM.port,
    };
    loop {
        match vm.run()? {
            Exit::Hlt if *exits == EXITS => return Ok(()),
            exit if exit == want && *exits < EXITS => *exits += 1,
            exit => {
                return Err(BenchError::UnexpectedExit {
                    scenario: "guest verification",
                    exit: exit.to_string(),
                    expected: if *exits < EXITS {
                        want.to_string()
                    } else {
                        "hlt".into()
                    },
                });
            }
        }
    }
}

fn finish(
    hypervisor: HypervisorKind,
    outcome: Result<(), BenchError>,
    exits: u64,
    started: Instant,
) -> GuestVerification {
    let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let (verified, detail, errno) = match outcome {
        Ok(()) => (
            true,
            format!("a guest ran: {exits} port-I/O exits then hlt"),
            None,
        ),
        Err(e) => (false, e.to_string(), e.errno()),
    };
    GuestVerification {
        hypervisor,
        verified,
        detail,
        errno_name: errno.map(errno_name),
        exits,
        duration_us,
        at: crate::status::now(),
    }
}

/// Verify `kind` under `host_root` (mshv for the agent; KVM works too, which is how this
/// is tested on a machine without /dev/mshv), holding the node's bench lock.
pub fn verify(
    host_root: &Path,
    kind: HypervisorKind,
    lock_path: &Path,
) -> Result<GuestVerification, NotTried> {
    let device = host_root.join(kind.device());
    if std::fs::symlink_metadata(&device).is_err() {
        return Err(NotTried::Absent(device.display().to_string()));
    }
    let _lock = match lock::acquire(lock_path) {
        Ok(l) => l,
        Err(BenchError::Busy { path }) => return Err(NotTried::Busy(path)),
        // The lock cannot even be made (read-only run dir): verifying anyway is safer than
        // never verifying; the guest is tiny and the bench is the heavy user.
        Err(_) => lock::BenchLock::none(),
    };
    let started = Instant::now();
    let file = match open_device(host_root, kind) {
        Ok(f) => f,
        Err(e) => return Ok(finish(kind, Err(e), 0, started)),
    };
    Ok(match kind {
        HypervisorKind::Kvm => match kvm::KvmHypervisor::from_file(file) {
            Ok(hv) => verify_on(&hv),
            Err(e) => finish(kind, Err(e), 0, started),
        },
        HypervisorKind::Mshv => verify_on(&mshv::MshvHypervisor::from_file(file)),
    })
}
