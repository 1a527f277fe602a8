//! Prometheus metrics (OpenMetrics text via prometheus-client).
//!
//! - `mshv_node_agent_capable{state,partition_type}`: 1 when capable, else 0; exactly one
//!   series, for the current state (older series are dropped so dashboards never sum stale ones).
//! - `mshv_node_agent_probes_total{result}`: probes by resulting state.
//! - `mshv_node_agent_probe_duration_seconds`: wall time of one probe.
//! - `mshv_node_agent_label_syncs_total{result}`: applied | unchanged | error.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::probe::ProbeReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapableLabels {
    pub state: String,
    pub partition_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

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

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    capable: Family<CapableLabels, Gauge>,
    probes: Family<ResultLabel, Counter>,
    probe_duration: Histogram,
    syncs: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mshv_node_agent");
        let capable = Family::<CapableLabels, Gauge>::default();
        let probes = Family::<ResultLabel, Counter>::default();
        // 10 µs .. ~0.3 s: a probe is a few syscalls; anything slower is worth seeing.
        let probe_duration = Histogram::new(exponential_buckets(1e-5, 2.0, 16));
        let syncs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "capable",
            "1 if /dev/mshv is usable on this node, else 0; labelled with the probe state",
            capable.clone(),
        );
        registry.register("probes", "Probes by resulting state", probes.clone());
        registry.register_with_unit(
            "probe_duration",
            "Wall time of one probe",
            Unit::Seconds,
            probe_duration.clone(),
        );
        registry.register(
            "label_syncs",
            "Label publication decisions by result (applied, unchanged, error)",
            syncs.clone(),
        );
        Self {
            registry,
            capable,
            probes,
            probe_duration,
            syncs,
        }
    }

    pub fn observe_probe(&self, report: &ProbeReport) {
        self.capable.clear();
        self.capable
            .get_or_create(&CapableLabels {
                state: report.state.as_str().to_string(),
                partition_type: report.partition_type.as_str().to_string(),
            })
            .set(i64::from(report.capable));
        self.probes
            .get_or_create(&ResultLabel {
                result: report.state.as_str().to_string(),
            })
            .inc();
        self.probe_duration
            .observe(report.duration_us as f64 / 1_000_000.0);
    }

    pub fn observe_sync(&self, result: SyncResult) {
        self.syncs
            .get_or_create(&ResultLabel {
                result: result.as_str().to_string(),
            })
            .inc();
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
