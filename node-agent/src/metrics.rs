//! Prometheus metrics (OpenMetrics text via prometheus-client).
//!
//! - `mshv_node_agent_capable{state,partition_type}`: 1 when capable, else 0; exactly one
//!   series, for the current state (older series are dropped so dashboards never sum stale ones).
//! - `mshv_node_agent_probes_total{result}`: probes by resulting state.
//! - `mshv_node_agent_probe_duration_seconds`: wall time of one probe.
//! - `mshv_node_agent_label_syncs_total{result}`: applied | unchanged | error.
//! - `mshv_node_agent_device_plugin_state{state}`: 1 for the current state, 0 for the others
//!   (registered, waiting-for-kubelet, deferred-to-virt-handler, disabled, error).
//! - `mshv_node_agent_device_plugin_healthy_devices`: devices advertised Healthy (0 or N).
//! - `mshv_node_agent_device_plugin_registrations_total{result}`: ok | error.
//! - `mshv_node_agent_device_plugin_allocations_total`: Allocate calls answered.
//! - `mshv_node_agent_device_access_total{result}`: chmod/chown passes (applied | unchanged | error).
//! - `mshv_node_agent_device_accessible`: 1 when uid/gid 107 can read+write /dev/mshv.
//! - `mshv_node_agent_hv_build_supported`: 1 when the hypervisor build is in the mshv
//!   driver's validated range, 0 outside; no series off Hyper-V parent partitions.
//! - `mshv_node_agent_info{version,kernel,hv_build,partition_type}`: always 1.
//! - `mshv_node_agent_lease_renewals_total{result}`: Lease renewals (ok | error).
//! - `mshv_node_agent_lease_last_renewal_timestamp_seconds`: Unix time of the last
//!   successful renewal; 0 until the first; no series when the Lease is off (`--lease=false`,
//!   `--publish nfd`), so an alert on its age never fires for agents that keep none.
//! - `mshv_node_agent_bench_seconds{hypervisor,scenario,quantile}`: the last bench, seconds
//!   per operation, quantile 0.5 and 0.99 (series of a hypervisor that did not run are dropped).
//! - `mshv_node_agent_bench_guest_compute_ratio{hypervisor}`: guest loop / host loop medians.
//! - `mshv_node_agent_bench_last_run_timestamp_seconds{hypervisor}`: last successful run.
//! - `mshv_node_agent_bench_runs_total{hypervisor,result}`: ok | unavailable | error.
//! - `mshv_node_agent_guest_verified`: 1 a guest ran on /dev/mshv, 0 it failed; absent until tried.
//! - `mshv_node_agent_guest_verifications_total{result}`: ok | error.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::probe::ProbeReport;

/// Values of `mshv_node_agent_device_plugin_state{state}` (the device plugin's
/// `PluginState::as_str`); kept here so the gauge always has all five series.
pub const PLUGIN_STATES: [&str; 5] = [
    "registered",
    "waiting-for-kubelet",
    "deferred-to-virt-handler",
    "disabled",
    "error",
];
/// Until the device plugin task reports, it has not reached kubelet.
const PLUGIN_STATE_INITIAL: &str = "waiting-for-kubelet";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapableLabels {
    pub state: String,
    pub partition_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub kernel: String,
    pub hv_build: String,
    pub partition_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BenchLabels {
    pub hypervisor: String,
    pub scenario: String,
    pub quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HypervisorLabel {
    pub hypervisor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BenchRunLabels {
    pub hypervisor: String,
    pub result: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The bench's and guest verification's series (kept apart from the probe's).
#[derive(Debug, Default)]
struct BenchMetrics {
    seconds: Family<BenchLabels, FloatGauge>,
    ratio: Family<HypervisorLabel, FloatGauge>,
    last_run: Family<HypervisorLabel, FloatGauge>,
    runs: Family<BenchRunLabels, Counter>,
    guest_verified: Family<Unlabelled, Gauge>,
    guest_verifications: Family<ResultLabel, Counter>,
}

impl BenchMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "bench",
            "Last hypervisor bench: seconds per operation by hypervisor, scenario and quantile",
            Unit::Seconds,
            self.seconds.clone(),
        );
        registry.register(
            "bench_guest_compute_ratio",
            "Last bench: guest-compute loop median over the same loop's host median",
            self.ratio.clone(),
        );
        registry.register_with_unit(
            "bench_last_run_timestamp",
            "Unix time of the last successful bench per hypervisor",
            Unit::Seconds,
            self.last_run.clone(),
        );
        registry.register(
            "bench_runs",
            "Benches by hypervisor and result (ok, unavailable, error)",
            self.runs.clone(),
        );
        registry.register(
            "guest_verified",
            "1 when a guest really ran on /dev/mshv, 0 when the last try failed; absent until tried",
            self.guest_verified.clone(),
        );
        registry.register(
            "guest_verifications",
            "Guest-run verifications by result (ok, error)",
            self.guest_verifications.clone(),
        );
    }
}

/// A gauge family with no labels, so the series can be absent (`clear`) when unknown.
type Unlabelled = Vec<(String, String)>;

/// Outcome of one label sync decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncResult {
    Applied,
    Unchanged,
    Error,
}

impl SyncResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncResult::Applied => "applied",
            SyncResult::Unchanged => "unchanged",
            SyncResult::Error => "error",
        }
    }
}

/// The probe's series: its state, how often and how long it ran, and the label syncs that
/// publish its result.
#[derive(Debug)]
struct ProbeMetrics {
    capable: Family<CapableLabels, Gauge>,
    probes: Family<ResultLabel, Counter>,
    probe_duration: Histogram,
    syncs: Family<ResultLabel, Counter>,
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        ProbeMetrics {
            capable: Family::default(),
            probes: Family::default(),
            // 10 µs .. ~0.3 s: a probe is a few syscalls; anything slower is worth seeing.
            probe_duration: Histogram::new(exponential_buckets(1e-5, 2.0, 16)),
            syncs: Family::default(),
        }
    }
}

impl ProbeMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "capable",
            "1 if /dev/mshv is usable on this node, else 0; labelled with the probe state",
            self.capable.clone(),
        );
        registry.register("probes", "Probes by resulting state", self.probes.clone());
        registry.register_with_unit(
            "probe_duration",
            "Wall time of one probe",
            Unit::Seconds,
            self.probe_duration.clone(),
        );
        registry.register(
            "label_syncs",
            "Label publication decisions by result (applied, unchanged, error)",
            self.syncs.clone(),
        );
    }
}

/// The kubelet device plugin's series.
#[derive(Debug, Default)]
struct PluginMetrics {
    plugin_state: Family<StateLabel, Gauge>,
    healthy_devices: Gauge,
    registrations: Family<ResultLabel, Counter>,
    allocations: Counter,
}

impl PluginMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "device_plugin_state",
            "State of the /dev/mshv device plugin: 1 for the current state, 0 for the others",
            self.plugin_state.clone(),
        );
        registry.register(
            "device_plugin_healthy_devices",
            "Devices the device plugin currently advertises as Healthy (0 or N)",
            self.healthy_devices.clone(),
        );
        registry.register(
            "device_plugin_registrations",
            "Registrations with kubelet by result (ok, error)",
            self.registrations.clone(),
        );
        registry.register(
            "device_plugin_allocations",
            "Allocate calls answered by the device plugin",
            self.allocations.clone(),
        );
    }
}

/// The series of the passes that make /dev/mshv usable by the launcher's uid/gid.
#[derive(Debug, Default)]
struct DeviceAccessMetrics {
    device_access: Family<ResultLabel, Counter>,
    device_accessible: Gauge,
}

impl DeviceAccessMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "device_access",
            "Passes that make /dev/mshv usable by uid/gid 107, by result (applied, unchanged, error)",
            self.device_access.clone(),
        );
        registry.register(
            "device_accessible",
            "1 when /dev/mshv's mode and owner let uid/gid 107 read and write it, else 0",
            self.device_accessible.clone(),
        );
    }
}

/// What the probe found out about the host: its hypervisor build and identity.
#[derive(Debug, Default)]
struct HostMetrics {
    hv_build_supported: Family<Unlabelled, Gauge>,
    info: Family<InfoLabels, Gauge>,
}

impl HostMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "hv_build_supported",
            "1 when the hypervisor build is in the range the mainline mshv driver is validated for, 0 outside",
            self.hv_build_supported.clone(),
        );
        registry.register(
            "info",
            "Agent version, kernel, hypervisor build and partition type; always 1",
            self.info.clone(),
        );
    }
}

/// The agent's coordination.k8s.io Lease series.
#[derive(Debug, Default)]
struct LeaseMetrics {
    lease_renewals: Family<ResultLabel, Counter>,
    lease_last_renewal: Family<Unlabelled, Gauge>,
}

impl LeaseMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "lease_renewals",
            "Renewals of the agent's coordination.k8s.io Lease by result (ok, error)",
            self.lease_renewals.clone(),
        );
        registry.register_with_unit(
            "lease_last_renewal_timestamp",
            "Unix time of the last successful Lease renewal (0: none yet)",
            Unit::Seconds,
            self.lease_last_renewal.clone(),
        );
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    probe: ProbeMetrics,
    plugin: PluginMetrics,
    access: DeviceAccessMetrics,
    host: HostMetrics,
    lease: LeaseMetrics,
    bench: BenchMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mshv_node_agent");
        // Registration order is exposition order: the groups register in the order the
        // series have always been exposed in.
        let probe = ProbeMetrics::default();
        probe.register(&mut registry);
        let plugin = PluginMetrics::default();
        plugin.register(&mut registry);
        let access = DeviceAccessMetrics::default();
        access.register(&mut registry);
        let host = HostMetrics::default();
        host.register(&mut registry);
        let lease = LeaseMetrics::default();
        lease.register(&mut registry);
        let bench = BenchMetrics::default();
        bench.register(&mut registry);
        let metrics = Self {
            registry,
            probe,
            plugin,
            access,
            host,
            lease,
            bench,
        };
        metrics.set_plugin_state(PLUGIN_STATE_INITIAL);
        metrics
    }

    pub fn observe_probe(&self, report: &ProbeReport) {
        self.probe.capable.clear();
        self.probe
            .capable
            .get_or_create(&CapableLabels {
                state: report.state.as_str().to_string(),
                partition_type: report.partition_type.as_str().to_string(),
            })
            .set(i64::from(report.capable));
        self.probe
            .probes
            .get_or_create(&ResultLabel {
                result: report.state.as_str().to_string(),
            })
            .inc();
        self.probe
            .probe_duration
            .observe(report.duration_us as f64 / 1_000_000.0);
        self.host.hv_build_supported.clear();
        if let Some(check) = report.hv_build_check {
            self.host
                .hv_build_supported
                .get_or_create(&Vec::new())
                .set(i64::from(check.supported));
        }
        self.host.info.clear();
        self.host
            .info
            .get_or_create(&InfoLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                kernel: report.kernel_release.clone().unwrap_or_default(),
                hv_build: report.hv_build.map(|b| b.to_string()).unwrap_or_default(),
                partition_type: report.partition_type.as_str().to_string(),
            })
            .set(1);
    }

    /// Set the device plugin state: 1 for `current`, 0 for every other state.
    pub fn set_plugin_state(&self, current: &str) {
        for state in PLUGIN_STATES {
            self.plugin
                .plugin_state
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(i64::from(state == current));
        }
    }

    pub fn set_healthy_devices(&self, n: u32) {
        self.plugin.healthy_devices.set(i64::from(n));
    }

    pub fn observe_registration(&self, ok: bool) {
        self.plugin
            .registrations
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    pub fn observe_allocation(&self) {
        self.plugin.allocations.inc();
    }

    /// One device access pass; `None` (node absent) counts nothing.
    pub fn observe_device_access(&self, result: Option<&str>, accessible: bool) {
        if let Some(result) = result {
            self.access
                .device_access
                .get_or_create(&ResultLabel {
                    result: result.to_string(),
                })
                .inc();
        }
        self.access.device_accessible.set(i64::from(accessible));
    }

    pub fn observe_sync(&self, result: SyncResult) {
        self.probe
            .syncs
            .get_or_create(&ResultLabel {
                result: result.as_str().to_string(),
            })
            .inc();
    }

    /// The Lease task started: both Lease series exist from now on (0 renewals, time 0).
    pub fn lease_enabled(&self) {
        // `get_or_create` makes the series; its guard is released at once.
        for result in ["ok", "error"] {
            drop(self.lease.lease_renewals.get_or_create(&ResultLabel {
                result: result.to_string(),
            }));
        }
        drop(self.lease.lease_last_renewal.get_or_create(&Vec::new()));
    }

    /// One renewal attempt; `unix_seconds` is recorded only for a successful one.
    pub fn observe_lease_renewal(&self, ok: bool, unix_seconds: i64) {
        self.lease
            .lease_renewals
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
        if ok {
            self.lease
                .lease_last_renewal
                .get_or_create(&Vec::new())
                .set(unix_seconds);
        }
    }

    /// A finished bench: replaces the per-hypervisor gauges of every hypervisor it covered
    /// (a row that did not run drops its series rather than keep stale numbers).
    pub fn observe_bench(&self, report: &crate::bench::BenchReport) {
        let b = &self.bench;
        for h in &report.hypervisors {
            let hv = h.hypervisor.as_str().to_string();
            b.runs
                .get_or_create(&BenchRunLabels {
                    hypervisor: hv.clone(),
                    result: h.result.to_string(),
                })
                .inc();
            let hv_label = HypervisorLabel {
                hypervisor: hv.clone(),
            };
            for s in crate::bench::Scenario::ALL {
                for q in ["0.5", "0.99"] {
                    b.seconds.remove(&BenchLabels {
                        hypervisor: hv.clone(),
                        scenario: s.as_str().to_string(),
                        quantile: q.to_string(),
                    });
                }
            }
            b.ratio.remove(&hv_label);
            let Some(run) = &h.run else { continue };
            for r in &run.scenarios {
                for (q, v) in [("0.5", r.median_s), ("0.99", r.p99_s)] {
                    if let Some(v) = v {
                        b.seconds
                            .get_or_create(&BenchLabels {
                                hypervisor: hv.clone(),
                                scenario: r.scenario.as_str().to_string(),
                                quantile: q.to_string(),
                            })
                            .set(v);
                    }
                }
            }
            if let Some(ratio) = run.guest_compute_ratio {
                b.ratio.get_or_create(&hv_label).set(ratio);
            }
            if h.result == "ok" {
                let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
                b.last_run.get_or_create(&hv_label).set(now);
            }
        }
    }

    /// A guest verification (`None`: withdrawn, the gauge disappears).
    pub fn observe_guest_verification(&self, v: Option<&crate::guest_verify::GuestVerification>) {
        let b = &self.bench;
        b.guest_verified.clear();
        if let Some(v) = v {
            b.guest_verified
                .get_or_create(&Vec::new())
                .set(i64::from(v.verified));
            b.guest_verifications
                .get_or_create(&ResultLabel {
                    result: if v.verified { "ok" } else { "error" }.to_string(),
                })
                .inc();
        }
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
