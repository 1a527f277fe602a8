//! The driver: every scenario's loop, timing and statistics, over any [`Hypervisor`].
//! Only the ioctls differ between KVM and mshv, so all of this runs for real on KVM.
//!
//! A fresh VM per scenario: after a failure the vCPU state is unknown, and a VM costs a
//! few milliseconds at most. Every VM is a value dropped at the end of its scenario (or on
//! the `?` that ends it early), which releases its fds and memory.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::backend::{BenchError, Exit, GuestVm, Hypervisor};
use super::payload::{self, Snippet};
use super::stats::median_p99;

/// The scenarios, in the order they run (also the `scenario` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    CreateToFirstExit,
    ExitToVmm,
    ExitInHypervisor,
    GuestCompute,
    MemoryFirstTouch,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::CreateToFirstExit,
        Scenario::ExitToVmm,
        Scenario::ExitInHypervisor,
        Scenario::GuestCompute,
        Scenario::MemoryFirstTouch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::CreateToFirstExit => "create-to-first-exit",
            Scenario::ExitToVmm => "exit-to-vmm",
            Scenario::ExitInHypervisor => "exit-in-hypervisor",
            Scenario::GuestCompute => "guest-compute",
            Scenario::MemoryFirstTouch => "memory-first-touch",
        }
    }

    /// What one operation is (the unit of the per-operation times).
    pub fn per(self) -> &'static str {
        match self {
            Scenario::CreateToFirstExit => "VM created and run to its first exit",
            Scenario::ExitToVmm => "port-I/O exit to this process and re-entry",
            Scenario::ExitInHypervisor => "CPUID loop iteration (handled below this process)",
            Scenario::GuestCompute => "guest loop iteration (dec; jnz)",
            Scenario::MemoryFirstTouch => "first write to a fresh 4 KiB page",
        }
    }
}

/// How much to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Samples per scenario (create-to-first-exit takes at most 20: each creates a VM).
    pub reps: u32,
    /// Calibrated loops grow (doubling from their start) until one run takes this long…
    #[serde(with = "duration_us")]
    pub min_run: Duration,
    /// …or until they reach this many iterations.
    pub max_loop: u64,
    /// Fresh pages per memory-first-touch sample (≤ 512).
    pub pages: u64,
    /// Wall-time budget for everything; scenarios not started in time are reported as such.
    #[serde(with = "duration_us")]
    pub budget: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reps: 50,
            min_run: Duration::from_micros(500),
            max_loop: 1 << 24,
            pages: 64,
            budget: Duration::from_secs(2),
        }
    }
}

mod duration_us {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// The most VMs `create-to-first-exit` creates in one run.
pub const MAX_CREATE_REPS: u32 = 20;

/// A source of monotonic time (a fake one in tests, so the arithmetic can be checked
/// exactly without asserting anything about real speed).
pub trait Clock {
    fn now(&self) -> Duration;
}

/// The real clock: time since it was made.
#[derive(Debug, Clone, Copy)]
pub struct Monotonic(Instant);

impl Default for Monotonic {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for Monotonic {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// The environment the driver measures in: its clock, the host half of guest-compute,
/// and the deadline (on `clock`) after which no further guest run starts.
pub struct Env<'a> {
    pub clock: &'a dyn Clock,
    /// Runs the same `dec; jnz` loop `n` times on the host.
    pub host_loop: &'a dyn Fn(u64),
    pub deadline: Duration,
    pub budget: Duration,
}

/// One scenario's numbers: seconds per operation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub per: &'static str,
    pub samples: u32,
    /// Operations timed together in one sample (loop iterations, pages; 1 for exits).
    pub ops_per_sample: u64,
    pub median_s: Option<f64>,
    pub p99_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything measured on one hypervisor.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HvRun {
    pub scenarios: Vec<ScenarioResult>,
    /// The guest-compute loop on the host, seconds per iteration.
    pub host_loop_median_s: Option<f64>,
    /// guest-compute median / host loop median (≈ 1.0 with hardware-assisted virtualization).
    pub guest_compute_ratio: Option<f64>,
    /// Set when the hypervisor could not run a guest at all (the first VM failed).
    #[serde(skip)]
    pub fatal: Option<BenchError>,
}

impl HvRun {
    pub fn get(&self, s: Scenario) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|r| r.scenario == s)
    }
}

struct Measured {
    samples: Vec<f64>,
    ops: u64,
}

/// Run every scenario on `hv`.
pub fn run<H: Hypervisor>(hv: &H, opts: &Options, env: &Env<'_>) -> HvRun {
    let image = payload::image();
    let mut out = HvRun {
        scenarios: Vec::new(),
        host_loop_median_s: None,
        guest_compute_ratio: None,
        fatal: None,
    };
    let mut host_median = None;
    for scenario in Scenario::ALL {
        let measured = match scenario {
            Scenario::CreateToFirstExit => create_to_first_exit(hv, &image, opts, env),
            Scenario::ExitToVmm => with_vm(hv, &image, |vm| exit_to_vmm(vm, opts, env)),
            Scenario::ExitInHypervisor => with_vm(hv, &image, |vm| {
                calibrated(vm, payload::EXIT_IN_HYPERVISOR, 64, opts, env, scenario)
            }),
            Scenario::GuestCompute => with_vm(hv, &image, |vm| {
                let m = calibrated(vm, payload::GUEST_COMPUTE, 1024, opts, env, scenario)?;
                host_median = host_loop(m.ops, opts.reps, env);
                Ok(m)
            }),
            Scenario::MemoryFirstTouch => with_vm(hv, &image, |vm| first_touch(vm, opts, env)),
        };
        let result = match measured {
            Ok(m) => {
                let stats = median_p99(&m.samples);
                ScenarioResult {
                    scenario,
                    per: scenario.per(),
                    samples: u32::try_from(m.samples.len()).unwrap_or(u32::MAX),
                    ops_per_sample: m.ops,
                    median_s: stats.map(|s| s.0),
                    p99_s: stats.map(|s| s.1),
                    error: None,
                }
            }
            Err(e) => {
                // No VM at all on the first scenario: the hypervisor is unusable; report
                // that once rather than the same errno five times.
                if scenario == Scenario::CreateToFirstExit
                    && matches!(
                        e,
                        BenchError::Refused { .. }
                            | BenchError::Memory { .. }
                            | BenchError::UnexpectedExit { .. }
                    )
                {
                    out.fatal = Some(e.clone());
                }
                ScenarioResult {
                    scenario,
                    per: scenario.per(),
                    samples: 0,
                    ops_per_sample: 0,
                    median_s: None,
                    p99_s: None,
                    error: Some(e.to_string()),
                }
            }
        };
        out.scenarios.push(result);
        if out.fatal.is_some() {
            break;
        }
    }
    out.host_loop_median_s = host_median;
    let guest = out.get(Scenario::GuestCompute).and_then(|r| r.median_s);
    out.guest_compute_ratio = match (guest, host_median) {
        (Some(g), Some(h)) if h > 0.0 => Some(g / h),
        _ => None,
    };
    out
}

fn with_vm<H: Hypervisor>(
    hv: &H,
    image: &[u8],
    f: impl FnOnce(&mut H::Vm) -> Result<Measured, BenchError>,
) -> Result<Measured, BenchError> {
    let mut vm = hv.create_vm(image)?;
    f(&mut vm)
}

fn check_deadline(env: &Env<'_>) -> Result<(), BenchError> {
    if env.clock.now() >= env.deadline {
        return Err(BenchError::Timeout {
            budget_ms: u64::try_from(env.budget.as_millis()).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

fn expect(scenario: Scenario, exit: Exit, want: &Exit) -> Result<(), BenchError> {
    if &exit == want {
        Ok(())
    } else {
        Err(BenchError::UnexpectedExit {
            scenario: scenario.as_str(),
            exit: exit.to_string(),
            expected: want.to_string(),
        })
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn create_to_first_exit<H: Hypervisor>(
    hv: &H,
    image: &[u8],
    opts: &Options,
    env: &Env<'_>,
) -> Result<Measured, BenchError> {
    let reps = opts.reps.clamp(1, MAX_CREATE_REPS);
    let mut samples = Vec::with_capacity(reps as usize);
    for _ in 0..reps {
        check_deadline(env)?;
        let t0 = env.clock.now();
        let mut vm = hv.create_vm(image)?;
        vm.enter(payload::EXIT_TO_VMM.entry, 1)?;
        let exit = vm.run()?;
        let t1 = env.clock.now();
        expect(
            Scenario::CreateToFirstExit,
            exit,
            &Exit::IoOut {
                port: payload::EXIT_TO_VMM.port,
            },
        )?;
        // Teardown is not part of the number; the drop happens here, outside t0..t1.
        drop(vm);
        samples.push(secs(t1.saturating_sub(t0)));
    }
    Ok(Measured { samples, ops: 1 })
}

fn exit_to_vmm<V: GuestVm>(
    vm: &mut V,
    opts: &Options,
    env: &Env<'_>,
) -> Result<Measured, BenchError> {
    let reps = opts.reps.max(1);
    let s = payload::EXIT_TO_VMM;
    vm.enter(s.entry, u64::from(reps))?;
    let mut samples = Vec::with_capacity(reps as usize);
    for _ in 0..reps {
        check_deadline(env)?;
        let t0 = env.clock.now();
        let exit = vm.run()?;
        let t1 = env.clock.now();
        expect(Scenario::ExitToVmm, exit, &Exit::IoOut { port: s.port })?;
        samples.push(secs(t1.saturating_sub(t0)));
    }
    // After exactly `reps` exits the guest halts: proof it ran the loop as written.
    expect(Scenario::ExitToVmm, vm.run()?, &Exit::Hlt)?;
    Ok(Measured { samples, ops: 1 })
}

/// One run of a counted snippet: enter with `n`, run to its `out` (timed), then to `hlt`.
fn timed_loop<V: GuestVm>(
    vm: &mut V,
    s: Snippet,
    n: u64,
    env: &Env<'_>,
    scenario: Scenario,
) -> Result<Duration, BenchError> {
    check_deadline(env)?;
    vm.enter(s.entry, n)?;
    let t0 = env.clock.now();
    let exit = vm.run()?;
    let t1 = env.clock.now();
    expect(scenario, exit, &Exit::IoOut { port: s.port })?;
    expect(scenario, vm.run()?, &Exit::Hlt)?;
    Ok(t1.saturating_sub(t0))
}

/// A loop snippet whose count doubles from `start` until one run takes `opts.min_run`
/// (so the one exit that ends it is noise) or reaches `opts.max_loop`; then `reps` samples.
fn calibrated<V: GuestVm>(
    vm: &mut V,
    s: Snippet,
    start: u64,
    opts: &Options,
    env: &Env<'_>,
    scenario: Scenario,
) -> Result<Measured, BenchError> {
    let mut n = start.min(opts.max_loop).max(1);
    loop {
        let took = timed_loop(vm, s, n, env, scenario)?;
        if took >= opts.min_run || n.saturating_mul(2) > opts.max_loop {
            break;
        }
        n *= 2;
    }
    let reps = opts.reps.max(1);
    let mut samples = Vec::with_capacity(reps as usize);
    for _ in 0..reps {
        let took = timed_loop(vm, s, n, env, scenario)?;
        samples.push(secs(took) / n as f64);
    }
    Ok(Measured { samples, ops: n })
}

/// The same loop on the host, as many samples as the guest had; `None` if it never ran.
fn host_loop(n: u64, reps: u32, env: &Env<'_>) -> Option<f64> {
    let samples: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = env.clock.now();
            (env.host_loop)(n);
            secs(env.clock.now().saturating_sub(t0)) / n as f64
        })
        .collect();
    median_p99(&samples).map(|(m, _)| m)
}

fn first_touch<V: GuestVm>(
    vm: &mut V,
    opts: &Options,
    env: &Env<'_>,
) -> Result<Measured, BenchError> {
    let pages = opts.pages.clamp(1, payload::MAX_SCRATCH_PAGES);
    let reps = opts.reps.max(1);
    let mut samples = Vec::with_capacity(reps as usize);
    for _ in 0..reps {
        vm.map_scratch(payload::SCRATCH_GPA, pages)?;
        let took = timed_loop(
            vm,
            payload::FIRST_TOUCH,
            pages,
            env,
            Scenario::MemoryFirstTouch,
        );
        // Unmap even when the run failed; the first error is the one reported.
        let unmapped = vm.unmap_scratch();
        let took = took?;
        unmapped?;
        samples.push(secs(took) / pages as f64);
    }
    Ok(Measured {
        samples,
        ops: pages,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Costs, FakeHv, Fault};
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn costs() -> Costs {
        Costs {
            create: Duration::from_millis(1),
            pio: 10 * US,
            cpuid: 3 * US,
            compute: US,
            touch: 2 * US,
        }
    }

    fn opts() -> Options {
        Options {
            reps: 10,
            min_run: Duration::from_micros(500),
            max_loop: 2_000,
            pages: 8,
            budget: Duration::from_secs(2),
        }
    }

    fn bench(hv: &FakeHv, opts: &Options) -> HvRun {
        let clock = hv.clock.clone();
        let host = clock.clone();
        let host_loop = move |n: u64| host.advance(Duration::from_nanos(n));
        let env = Env {
            clock: &clock,
            host_loop: &host_loop,
            deadline: clock.now() + opts.budget,
            budget: opts.budget,
        };
        run(hv, opts, &env)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= b * 1e-9)
    }

    #[test]
    fn every_scenario_is_per_operation_and_everything_is_released() {
        let hv = FakeHv::new(costs());
        let out = bench(&hv, &opts());
        assert!(out.fatal.is_none());
        let get = |s| out.get(s).unwrap();
        for s in Scenario::ALL {
            assert_eq!(get(s).error, None, "{s:?}");
            assert_eq!(get(s).samples, 10, "{s:?}");
        }
        // create + the first exit.
        assert!(close(get(Scenario::CreateToFirstExit).median_s, 1.010e-3));
        assert!(close(get(Scenario::ExitToVmm).median_s, 10e-6));
        assert!(close(get(Scenario::ExitToVmm).p99_s, 10e-6));
        // Calibration doubled 64 -> 128 -> 256 (256 × 3 µs ≥ 500 µs).
        assert_eq!(get(Scenario::ExitInHypervisor).ops_per_sample, 256);
        assert!(close(get(Scenario::ExitInHypervisor).median_s, 3e-6));
        assert_eq!(get(Scenario::GuestCompute).ops_per_sample, 1024);
        assert!(close(get(Scenario::GuestCompute).median_s, 1e-6));
        assert!(close(out.host_loop_median_s, 1e-9));
        assert!(close(out.guest_compute_ratio, 1000.0));
        assert_eq!(get(Scenario::MemoryFirstTouch).ops_per_sample, 8);
        assert!(close(get(Scenario::MemoryFirstTouch).median_s, 2e-6));
        // 10 creates for create-to-first-exit, one VM for each of the other four.
        assert_eq!(hv.creates.get(), 14);
        assert_eq!(hv.live_vms.get(), 0);
        assert_eq!(hv.live_maps.get(), 0);
        assert_eq!(hv.maps.get(), 10);
        // exit-to-vmm entered once with the rep count: 10 exits then hlt.
        assert!(
            hv.entered
                .borrow()
                .contains(&(payload::EXIT_TO_VMM.entry, 10))
        );
    }

    #[test]
    fn loops_stop_growing_at_max_loop() {
        let hv = FakeHv::new(costs());
        let o = Options {
            max_loop: 100,
            ..opts()
        };
        let out = bench(&hv, &o);
        assert_eq!(
            out.get(Scenario::ExitInHypervisor).unwrap().ops_per_sample,
            64
        );
        assert_eq!(out.get(Scenario::GuestCompute).unwrap().ops_per_sample, 100);
        assert!(hv.entered.borrow().iter().all(|&(_, rcx)| rcx <= 100));
    }

    #[test]
    fn budget_ends_the_run_and_releases_every_vm() {
        let hv = FakeHv::new(costs());
        let o = Options {
            budget: Duration::from_millis(5),
            ..opts()
        };
        let out = bench(&hv, &o);
        for s in Scenario::ALL {
            let r = out.get(s).unwrap();
            assert!(
                r.error
                    .as_deref()
                    .is_some_and(|e| e.contains("time budget of 5 ms")),
                "{s:?}: {r:?}"
            );
        }
        // A timeout is not "the hypervisor is unusable".
        assert!(out.fatal.is_none());
        assert_eq!(hv.live_vms.get(), 0);
        assert_eq!(hv.live_maps.get(), 0);
    }

    #[test]
    fn a_refused_first_vm_is_fatal_and_reported_once() {
        let mut hv = FakeHv::new(costs());
        hv.fault = Fault::Create(0, libc::EPERM);
        let out = bench(&hv, &opts());
        assert_eq!(out.scenarios.len(), 1);
        let e = out.fatal.clone().unwrap();
        assert_eq!(e.result(), "unavailable");
        assert_eq!(
            e.to_string(),
            "create VM (fake): EPERM (the hypervisor refused)"
        );
        assert_eq!(hv.live_vms.get(), 0);
    }

    #[test]
    fn an_unexpected_exit_fails_only_its_scenario() {
        let mut hv = FakeHv::new(costs());
        // Runs 0..9 are create-to-first-exit; run 12 is exit-to-vmm's third exit.
        hv.fault = Fault::Run(12, Exit::Other("KVM exit Shutdown".into()));
        let out = bench(&hv, &opts());
        let e = out.get(Scenario::ExitToVmm).unwrap().error.clone().unwrap();
        assert_eq!(
            e,
            "exit-to-vmm: unexpected exit KVM exit Shutdown (expected io-out port 0x10)"
        );
        for s in [
            Scenario::ExitInHypervisor,
            Scenario::GuestCompute,
            Scenario::MemoryFirstTouch,
        ] {
            assert_eq!(out.get(s).unwrap().error, None);
        }
        assert_eq!(hv.live_vms.get(), 0);
    }

    #[test]
    fn a_failed_map_releases_its_vm_and_pages() {
        let mut hv = FakeHv::new(costs());
        hv.fault = Fault::Map(3);
        let out = bench(&hv, &opts());
        let r = out.get(Scenario::MemoryFirstTouch).unwrap();
        assert!(r.error.as_deref().is_some_and(|e| e.contains("ENOMEM")));
        assert_eq!(hv.live_vms.get(), 0);
        assert_eq!(hv.live_maps.get(), 0);
    }
}
