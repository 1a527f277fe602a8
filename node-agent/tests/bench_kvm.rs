//! The bench's KVM backend end to end on this machine's /dev/kvm (skipped, with the reason
//! printed, where there is none or it cannot be opened). Small counts (≤ 2,000 guest loop
//! iterations); the assertions are about behaviour — samples, exits, halts, results — never
//! about speed (this machine is shared, and its KVM is kvm_pvm).

use std::path::Path;
use std::time::Duration;

use mshv_node_agent::bench::{self, BenchConfig, HypervisorKind, Options, Scenario, open_device};
use mshv_node_agent::guest_verify;

fn kvm_or_skip(test: &str) -> bool {
    match open_device(Path::new("/"), HypervisorKind::Kvm) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            false
        }
    }
}

fn small(lock_dir: &Path) -> BenchConfig {
    let mut cfg = BenchConfig::new("/".into());
    cfg.only = vec![HypervisorKind::Kvm];
    cfg.lock_path = lock_dir.join("bench.lock");
    cfg.options = Options {
        reps: 5,
        min_run: Duration::from_micros(500),
        max_loop: 2_000,
        pages: 8,
        // Generous: a timeout here would be a loaded machine, not a bug; the budget's own
        // behaviour is tested against the fake backend.
        budget: Duration::from_secs(60),
    };
    cfg
}

#[test]
fn kvm_runs_every_scenario_to_its_exits_and_halts() {
    if !kvm_or_skip("kvm_runs_every_scenario_to_its_exits_and_halts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(&small(dir.path())).unwrap();
    let kvm = report.get(HypervisorKind::Kvm).unwrap();
    assert_eq!(kvm.result, "ok", "{kvm:?}");
    assert!(report.get(HypervisorKind::Mshv).is_none());
    assert_eq!(report.exit_code(), 0);
    let run = kvm.run.as_ref().unwrap();
    for s in Scenario::ALL {
        let r = run.get(s).unwrap();
        assert_eq!(r.error, None, "{s:?}");
        assert_eq!(r.samples, 5, "{s:?}");
        assert!(
            r.ops_per_sample >= 1 && r.ops_per_sample <= 2_000,
            "{s:?}: {r:?}"
        );
        let (m, p) = (r.median_s.unwrap(), r.p99_s.unwrap());
        assert!(m > 0.0 && p >= m, "{s:?}: median {m} p99 {p}");
    }
    assert_eq!(
        run.get(Scenario::MemoryFirstTouch).unwrap().ops_per_sample,
        8
    );
    assert!(run.guest_compute_ratio.is_some());
    // Only one device: no mshv/kvm ratios.
    assert!(report.ratios.is_empty());
    // The row says what this KVM is (kvm_pvm here), whatever the machine.
    assert!(!kvm.environment.is_empty());
}

#[test]
fn guest_verification_passes_on_kvm() {
    if !kvm_or_skip("guest_verification_passes_on_kvm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v =
        guest_verify::verify(Path::new("/"), HypervisorKind::Kvm, &dir.path().join("l")).unwrap();
    assert!(v.verified, "{v:?}");
    assert_eq!(v.exits, guest_verify::EXITS);
    assert_eq!(v.errno_name, None);
}

#[test]
fn a_held_lock_refuses_a_second_bench() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(dir.path());
    let _held = bench::lock::acquire(&cfg.lock_path).unwrap();
    let err = bench::run(&cfg).unwrap_err();
    assert!(matches!(err, bench::BenchError::Busy { .. }), "{err}");
    let v = guest_verify::verify(Path::new("/"), HypervisorKind::Kvm, &cfg.lock_path);
    // Not tried at all (no /dev/kvm) or postponed; never run while the lock is held.
    assert!(v.is_err(), "{v:?}");
}
