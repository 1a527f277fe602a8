//! The `bench` subcommand, `probe --run-guest`, and the agent's schedule settings.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::schedule::ScheduleConfig;
use super::{BenchConfig, BenchError, HypervisorKind, Options};
use crate::cli::HumanDuration;
use crate::guest_verify::{self, GuestVerification, NotTried};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HypervisorArg {
    Kvm,
    Mshv,
}

impl From<HypervisorArg> for HypervisorKind {
    fn from(h: HypervisorArg) -> Self {
        match h {
            HypervisorArg::Kvm => HypervisorKind::Kvm,
            HypervisorArg::Mshv => HypervisorKind::Mshv,
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Prefix of every host path (/dev, /proc, /sys, /run), e.g. /host in a container.
    #[arg(long, env = "HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// Samples per scenario (create-to-first-exit takes at most 20).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub reps: u32,
    /// Fresh pages per memory-first-touch sample.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=512))]
    pub pages: u64,
    /// Longest guest loop (iterations) the calibration may reach.
    #[arg(long, default_value_t = 1 << 24, value_parser = clap::value_parser!(u64).range(1..=(1u64 << 32)))]
    pub max_loop: u64,
    /// Wall-time budget of the whole run, shared by the devices.
    #[arg(long, default_value = "2s")]
    pub budget: HumanDuration,
    /// Only this hypervisor (repeat for both; default both).
    #[arg(long = "hypervisor", value_enum)]
    pub hypervisors: Vec<HypervisorArg>,
    /// The node's bench lock (default <host-root>/run/mshv-node-agent/bench.lock).
    #[arg(long)]
    pub lock_file: Option<PathBuf>,
}

pub fn bench(args: &BenchArgs) -> ExitCode {
    let mut cfg = BenchConfig::new(args.host_root.clone());
    cfg.options = Options {
        reps: args.reps,
        pages: args.pages,
        max_loop: args.max_loop,
        budget: args.budget.0,
        ..Options::default()
    };
    if !args.hypervisors.is_empty() {
        cfg.only = args.hypervisors.iter().map(|&h| h.into()).collect();
        cfg.only.sort();
        cfg.only.dedup();
    }
    if let Some(lock) = &args.lock_file {
        cfg.lock_path.clone_from(lock);
    }
    let report = match super::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mshv-node-agent bench: {e}");
            return ExitCode::from(if matches!(e, BenchError::Busy { .. }) {
                3
            } else {
                2
            });
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("mshv-node-agent bench: cannot encode the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", super::report::human(&report));
    }
    ExitCode::from(report.exit_code())
}

/// `probe --run-guest`'s answer: the verification, or why none was made.
#[derive(Debug, Clone, Serialize)]
pub struct GuestOutput {
    /// `None`: not tried (no /dev/mshv, or another bench holds the lock).
    pub verified: Option<bool>,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<GuestVerification>,
}

impl GuestOutput {
    pub fn line(&self) -> String {
        match self.verified {
            Some(true) => format!("verified: {}", self.detail),
            Some(false) => format!("FAILED: {}", self.detail),
            None => self.detail.clone(),
        }
    }
}

pub fn run_guest(host_root: &Path) -> GuestOutput {
    guest_output(guest_verify::verify(
        host_root,
        HypervisorKind::Mshv,
        &super::lock::default_path(host_root),
    ))
}

pub fn guest_output(r: Result<GuestVerification, NotTried>) -> GuestOutput {
    match r {
        Ok(v) => GuestOutput {
            verified: Some(v.verified),
            detail: v.detail.clone(),
            run: Some(v),
        },
        Err(n) => GuestOutput {
            verified: None,
            detail: n.to_string(),
            run: None,
        },
    }
}

/// The agent's schedule: the bench at the CLI's defaults (bounded by the same 2 s budget).
pub fn schedule_config(
    host_root: &Path,
    guest_interval: Option<Duration>,
    bench_interval: Option<Duration>,
    poll: Duration,
) -> ScheduleConfig {
    ScheduleConfig {
        host_root: host_root.to_path_buf(),
        guest_interval,
        bench_interval,
        poll,
        bench: BenchConfig::new(host_root.to_path_buf()),
    }
}
