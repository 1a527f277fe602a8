//! `mshv-node-agent bench`: KVM and mshv side by side on this node.
//!
//! For each device present under the host root it creates one-vCPU VMs, runs the tiny
//! 64-bit guest of [`payload`] and times five scenarios ([`driver::Scenario`]), each the
//! median and p99 of several samples, in seconds per operation. One driver over the
//! [`backend::Hypervisor`] trait with a KVM and an mshv implementation, so everything but
//! the ioctls runs for real wherever `/dev/kvm` does.
//!
//! Bounded: a wall-time budget (default 2 s) shared by the devices, one bench per node at a
//! time ([`lock`]), and every VM, mapping and fd owned by a value that releases it on drop.

pub mod backend;
pub mod cli;
pub mod driver;
pub mod environment;
pub mod host_loop;
pub mod kvm;
pub mod lock;
pub mod memory;
pub mod mshv;
pub mod payload;
pub mod report;
pub mod schedule;
pub mod stats;

#[cfg(test)]
mod fake;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use backend::{BenchError, HypervisorKind};
pub use driver::{HvRun, Options, Scenario};

/// What to bench and where.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub host_root: PathBuf,
    pub options: Options,
    /// Only these hypervisors (default both).
    pub only: Vec<HypervisorKind>,
    pub lock_path: PathBuf,
}

impl BenchConfig {
    pub fn new(host_root: PathBuf) -> Self {
        let lock_path = lock::default_path(&host_root);
        Self {
            host_root,
            options: Options::default(),
            only: HypervisorKind::ALL.to_vec(),
            lock_path,
        }
    }
}

/// One hypervisor's row: why it did not run, or what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct HvReport {
    pub hypervisor: HypervisorKind,
    pub device: String,
    /// `ok`, `unavailable` (absent, not openable, or refused to create a VM) or `error`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_name: Option<String>,
    /// What this hypervisor is on this machine (e.g. kvm_pvm), so rows are never mistaken
    /// for another setup's.
    pub environment: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub run: Option<HvRun>,
}

/// mshv / KVM for one scenario (medians), when both ran it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ratio {
    pub scenario: Scenario,
    pub mshv_over_kvm: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub host_root: String,
    pub options: Options,
    pub wall_seconds: f64,
    pub hypervisors: Vec<HvReport>,
    pub ratios: Vec<Ratio>,
}

impl BenchReport {
    pub fn get(&self, kind: HypervisorKind) -> Option<&HvReport> {
        self.hypervisors.iter().find(|h| h.hypervisor == kind)
    }

    /// 0: at least one hypervisor ran every scenario and none failed; 1: nothing could run
    /// (no device, not openable, refused); 2: a bench started and failed.
    pub fn exit_code(&self) -> u8 {
        if self.hypervisors.iter().any(|h| h.result == "error") {
            2
        } else if self.hypervisors.iter().any(|h| h.result == "ok") {
            0
        } else {
            1
        }
    }
}

/// Open a hypervisor device read-write (O_CLOEXEC, as std always does), with a reason that
/// names the errno like `probe` does.
pub fn open_device(host_root: &Path, kind: HypervisorKind) -> Result<File, BenchError> {
    let path = host_root.join(kind.device());
    let shown = path.display().to_string();
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BenchError::Absent { path: shown });
        }
        _ => {}
    }
    File::options()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            BenchError::Open {
                path: shown,
                errno,
                detail: open_hint(errno).to_string(),
            }
        })
}

fn open_hint(errno: i32) -> &'static str {
    match errno {
        libc::EACCES => "file mode: run as root or give this user rw on the device",
        libc::EPERM => "the device cgroup or an LSM refused",
        libc::ENXIO | libc::ENODEV => "no driver behind the device node",
        libc::ENOENT => "absent",
        _ => "open failed",
    }
}

/// Run the bench: take the node's lock, then every selected hypervisor within the budget.
/// `Err` only when the lock is held or cannot be taken.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    let _lock = lock::acquire(&cfg.lock_path)?;
    let clock = driver::Monotonic::default();
    let started = Instant::now();
    // Open first, so the budget is shared only by devices that can run.
    let opened: Vec<(HypervisorKind, Result<File, BenchError>)> = cfg
        .only
        .iter()
        .map(|&k| (k, open_device(&cfg.host_root, k)))
        .collect();
    let mut waiting = opened.iter().filter(|(_, f)| f.is_ok()).count();
    let mut hypervisors = Vec::new();
    for (kind, file) in opened {
        let environment = environment::describe(&cfg.host_root, kind);
        let device = cfg.host_root.join(kind.device()).display().to_string();
        let outcome = file.and_then(|file| {
            // What is left of the budget, shared by the devices still to run: a device that
            // fails at once leaves its share to the next one.
            let remaining = cfg.options.budget.saturating_sub(started.elapsed());
            let share = remaining / u32::try_from(waiting.max(1)).unwrap_or(1);
            waiting = waiting.saturating_sub(1);
            let env = driver::Env {
                clock: &clock,
                host_loop: &host_loop::dec_jnz,
                deadline: driver::Clock::now(&clock) + share,
                budget: share,
            };
            match kind {
                HypervisorKind::Kvm => {
                    let hv = kvm::KvmHypervisor::from_file(file)?;
                    Ok(driver::run(&hv, &cfg.options, &env))
                }
                HypervisorKind::Mshv => {
                    let hv = mshv::MshvHypervisor::from_file(file);
                    Ok(driver::run(&hv, &cfg.options, &env))
                }
            }
        });
        hypervisors.push(row(kind, device, environment, outcome));
    }
    let ratios = ratios(&hypervisors);
    Ok(BenchReport {
        host_root: cfg.host_root.display().to_string(),
        options: cfg.options.clone(),
        wall_seconds: started.elapsed().as_secs_f64(),
        hypervisors,
        ratios,
    })
}

/// The report row for one hypervisor's outcome.
pub fn row(
    kind: HypervisorKind,
    device: String,
    environment: String,
    outcome: Result<HvRun, BenchError>,
) -> HvReport {
    let (result, reason, errno, run) = match outcome {
        Err(e) => (e.result(), Some(e.to_string()), e.errno(), None),
        Ok(run) => match &run.fatal {
            Some(e) => (
                e.result(),
                Some(e.to_string()),
                e.errno(),
                Some(run.clone()),
            ),
            None => {
                let failed: Vec<String> = run
                    .scenarios
                    .iter()
                    .filter_map(|s| {
                        s.error
                            .as_ref()
                            .map(|e| format!("{}: {e}", s.scenario.as_str()))
                    })
                    .collect();
                if failed.is_empty() {
                    ("ok", None, None, Some(run))
                } else {
                    ("error", Some(failed.join("; ")), None, Some(run))
                }
            }
        },
    };
    HvReport {
        hypervisor: kind,
        device,
        result,
        reason,
        errno_name: errno.map(crate::probe::sys::errno_name),
        environment,
        run,
    }
}

/// mshv median / KVM median per scenario, where both measured it.
pub fn ratios(rows: &[HvReport]) -> Vec<Ratio> {
    let median = |kind: HypervisorKind, s: Scenario| {
        rows.iter()
            .find(|r| r.hypervisor == kind)
            .and_then(|r| r.run.as_ref())
            .and_then(|run| run.get(s))
            .and_then(|r| r.median_s)
    };
    Scenario::ALL
        .iter()
        .filter_map(|&s| {
            match (
                median(HypervisorKind::Mshv, s),
                median(HypervisorKind::Kvm, s),
            ) {
                (Some(m), Some(k)) if k > 0.0 => Some(Ratio {
                    scenario: s,
                    mshv_over_kvm: m / k,
                }),
                _ => None,
            }
        })
        .collect()
}

/// Default budget for the scheduled bench in the agent (the CLI's default too).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::fake::{Costs, FakeHv};
    use super::*;

    fn fake_run(pio_us: u64) -> HvRun {
        let us = Duration::from_micros(1);
        let hv = FakeHv::new(Costs {
            create: Duration::from_millis(2),
            pio: us * u32::try_from(pio_us).unwrap(),
            cpuid: us,
            compute: us,
            touch: us,
        });
        let clock = hv.clock.clone();
        let host = clock.clone();
        let host_loop = move |n: u64| host.advance(Duration::from_nanos(n));
        let opts = Options {
            reps: 4,
            ..Options::default()
        };
        let env = driver::Env {
            clock: &clock,
            host_loop: &host_loop,
            deadline: Duration::from_secs(60),
            budget: Duration::from_secs(60),
        };
        driver::run(&hv, &opts, &env)
    }

    #[test]
    fn both_rows_give_ratios_a_table_column_and_exit_0() {
        let rows = vec![
            row(
                HypervisorKind::Kvm,
                "/dev/kvm".into(),
                "kvm_intel (VMX)".into(),
                Ok(fake_run(20)),
            ),
            row(
                HypervisorKind::Mshv,
                "/dev/mshv".into(),
                "mshv_root".into(),
                Ok(fake_run(5)),
            ),
        ];
        let ratios = ratios(&rows);
        let exit = ratios
            .iter()
            .find(|r| r.scenario == Scenario::ExitToVmm)
            .unwrap();
        assert!((exit.mshv_over_kvm - 0.25).abs() < 1e-9);
        // create: (2 ms + 5 µs) / (2 ms + 20 µs).
        let create = ratios
            .iter()
            .find(|r| r.scenario == Scenario::CreateToFirstExit)
            .unwrap();
        assert!((create.mshv_over_kvm - 2.005 / 2.020).abs() < 1e-9);
        let report = BenchReport {
            host_root: "/".into(),
            options: Options::default(),
            wall_seconds: 0.5,
            hypervisors: rows,
            ratios,
        };
        assert_eq!(report.exit_code(), 0);
        let table = report::human(&report);
        assert!(table.contains("| scenario (per operation) | kvm median | kvm p99 | mshv median | mshv p99 | mshv/kvm |"), "{table}");
        assert!(table.contains("| exit-to-vmm (port-I/O exit to this process and re-entry) | 20.00 µs | 20.00 µs | 5.00 µs | 5.00 µs | 0.25 |"), "{table}");
        assert!(!table.contains("kvm_pvm"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ratios"][1]["scenario"], "exit-to-vmm");
        assert_eq!(json["hypervisors"][1]["scenarios"][1]["median_s"], 5e-6);
    }

    #[test]
    fn results_and_exit_codes() {
        let absent = row(
            HypervisorKind::Mshv,
            "/dev/mshv".into(),
            "mshv".into(),
            Err(BenchError::Absent {
                path: "/dev/mshv".into(),
            }),
        );
        assert_eq!(absent.result, "unavailable");
        assert_eq!(absent.reason.as_deref(), Some("/dev/mshv: absent"));
        let denied = row(
            HypervisorKind::Kvm,
            "/dev/kvm".into(),
            environment::KVM_PVM.into(),
            Err(BenchError::Open {
                path: "/dev/kvm".into(),
                errno: libc::EACCES,
                detail: open_hint(libc::EACCES).into(),
            }),
        );
        assert_eq!(denied.errno_name.as_deref(), Some("EACCES"));
        let mut report = BenchReport {
            host_root: "/".into(),
            options: Options::default(),
            wall_seconds: 0.0,
            hypervisors: vec![denied, absent],
            ratios: vec![],
        };
        assert_eq!(report.exit_code(), 1);
        let mut failed = fake_run(10);
        failed.scenarios[1].error = Some("boom".into());
        report
            .hypervisors
            .push(row(HypervisorKind::Kvm, "x".into(), "y".into(), Ok(failed)));
        assert_eq!(report.hypervisors[2].result, "error");
        assert_eq!(
            report.hypervisors[2].reason.as_deref(),
            Some("exit-to-vmm: boom")
        );
        assert_eq!(report.exit_code(), 2);
    }
}
