//! What `GET /status` answers: the agent's own account of the last probe, what it
//! published (labels or NFD file, device plugin, device mode), the last error and versions.
//! Plain data, filled by the agent loop and the device plugin task, serialised as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::device_access::AccessReport;
use crate::probe::ProbeReport;
use crate::probe::hv_build::HvBuildCheck;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub agent_version: &'static str,
    /// `None` until the first probe has completed.
    pub probe: Option<ProbeStatus>,
    pub kernel: Option<String>,
    pub hypervisor: Option<HypervisorStatus>,
    pub published: Published,
    pub device_plugin: DevicePluginStatus,
    /// The last pass over /dev/mshv's mode and owner (`None` when switched off).
    pub device_access: Option<DeviceAccessStatus>,
    pub last_error: Option<LastError>,
    /// The agent's liveness Lease (`None` when it keeps none: `--lease=false`, NFD mode).
    pub lease: Option<LeaseStatus>,
    /// The last guest-run verification on /dev/mshv (`None`: not tried).
    pub guest_verification: Option<crate::guest_verify::GuestVerification>,
    /// The last scheduled bench (`None`: none finished yet, or `--bench-interval 0`).
    pub bench: Option<BenchStatus>,
    /// Things a person should look at, one sentence each (also logged at WARN).
    pub warnings: Vec<String>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            agent_version: env!("CARGO_PKG_VERSION"),
            probe: None,
            kernel: None,
            hypervisor: None,
            published: Published::default(),
            device_plugin: DevicePluginStatus::default(),
            device_access: None,
            last_error: None,
            lease: None,
            guest_verification: None,
            bench: None,
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    pub state: &'static str,
    pub capable: bool,
    pub errno: Option<i32>,
    pub errno_name: Option<String>,
    pub reason: String,
    pub partition_type: &'static str,
    pub uapi: Option<&'static str>,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HypervisorStatus {
    pub build: u32,
    pub version: Option<String>,
    /// Against the mainline mshv driver's validated range (parent partitions only).
    pub build_check: Option<HvBuildCheck>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    /// `api` (Node labels) or `nfd` (features file).
    pub target: String,
    /// The labels last written successfully.
    pub labels: BTreeMap<String, String>,
    pub nfd_file: Option<String>,
    pub last_write_at: Option<String>,
    /// `applied`, `unchanged` or `error` (the last sync decision).
    pub last_result: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DevicePluginStatus {
    /// `registered`, `waiting-for-kubelet`, `deferred-to-virt-handler`, `disabled`, `error`.
    pub state: &'static str,
    pub resource: Option<String>,
    pub socket: Option<String>,
    pub devices: u32,
    pub healthy_devices: u32,
    pub detail: String,
    pub since: Option<String>,
}

impl Default for DevicePluginStatus {
    fn default() -> Self {
        Self {
            state: "waiting-for-kubelet",
            resource: None,
            socket: None,
            devices: 0,
            healthy_devices: 0,
            detail: "not started yet".into(),
            since: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceAccessStatus {
    #[serde(flatten)]
    pub report: AccessReport,
    /// The configured mode (`keep` when unmanaged) and group.
    pub want_mode: String,
    pub want_group: Option<u32>,
    pub at: String,
}

/// What the Lease task last did (`publish::lease`).
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    pub namespace: String,
    pub name: String,
    pub holder: String,
    pub duration_seconds: i32,
    pub renew_interval_seconds: f64,
    /// The Node's uid once read (the Lease's ownerReference), else `None`.
    pub owner_node_uid: Option<String>,
    /// `renewed` or `error`; `None` before the first attempt.
    pub last_result: Option<&'static str>,
    pub last_renewal_at: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
}

impl LeaseStatus {
    pub fn new(cfg: &crate::publish::lease::LeaseConfig) -> Self {
        Self {
            namespace: cfg.namespace.clone(),
            name: cfg.name.clone(),
            holder: cfg.holder.clone(),
            duration_seconds: cfg.duration_seconds(),
            renew_interval_seconds: cfg.renew_interval.as_secs_f64(),
            owner_node_uid: None,
            last_result: None,
            last_renewal_at: None,
            consecutive_failures: 0,
        }
    }

    pub fn renewed(&mut self, at: jiff::Timestamp, owner_node_uid: Option<String>) {
        self.last_result = Some("renewed");
        self.last_renewal_at = Some(at.to_string());
        self.consecutive_failures = 0;
        self.owner_node_uid = owner_node_uid;
    }

    pub fn failed(&mut self, failures: u32, owner_node_uid: Option<String>) {
        self.last_result = Some("error");
        self.consecutive_failures = failures;
        self.owner_node_uid = owner_node_uid;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// `publish`, `device-plugin`, `device-access` or `lease`.
    pub component: &'static str,
    pub message: String,
    pub at: String,
}

/// The last bench: the whole report (a few KiB) and when it finished.
#[derive(Debug, Clone, Serialize)]
pub struct BenchStatus {
    pub at: String,
    #[serde(flatten)]
    pub report: crate::bench::BenchReport,
}

impl From<&crate::bench::BenchReport> for BenchStatus {
    fn from(report: &crate::bench::BenchReport) -> Self {
        Self {
            at: now(),
            report: report.clone(),
        }
    }
}

pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

impl Status {
    pub fn record_probe(&mut self, report: &ProbeReport) {
        self.probe = Some(ProbeStatus {
            state: report.state.as_str(),
            capable: report.capable,
            errno: report.errno,
            errno_name: report.errno_name.clone(),
            reason: report.reason.clone(),
            partition_type: report.partition_type.as_str(),
            uapi: report.uapi.map(|u| u.as_str()),
            at: now(),
        });
        self.kernel.clone_from(&report.kernel_release);
        self.hypervisor = report.hv_build.map(|build| HypervisorStatus {
            build,
            version: report.hv_version.clone(),
            build_check: report.hv_build_check,
        });
        self.warnings = report
            .hv_build_check
            .and_then(|c| c.warning())
            .into_iter()
            .collect();
    }

    pub fn record_error(&mut self, component: &'static str, message: String) {
        self.last_error = Some(LastError {
            component,
            message,
            at: now(),
        });
    }
}
