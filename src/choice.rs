//! The choice the policy writes on launcher Pods (the hypervisor and why), so that
//! kube-state-metrics (`kube_pod_labels`, `kube_pod_annotations`) and `kubectl get pods -L` can
//! count and explain it.

use serde::Serialize;

/// Label and annotation holding the hypervisor the VM runs on. As a Pod annotation written by a
/// user (copied from the VMI) with the value `kvm`, it is also the opt-out.
pub const HYPERVISOR_KEY: &str = "hyperv-layered.io/hypervisor";
/// Label and annotation holding why. A label too (not only an annotation) so that
/// kube-state-metrics' `kube_pod_labels` carries hypervisor and reason on one series, and
/// `kubectl get pods -l hyperv-layered.io/reason=lookup-error` finds the fallbacks.
pub const REASON_KEY: &str = "hyperv-layered.io/reason";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    Kvm,
    Mshv,
}

impl Hypervisor {
    /// The hypervisor a label or annotation value names (`kvm`, `mshv`; `None` for anything else).
    pub fn from_name(value: &str) -> Option<Hypervisor> {
        [Hypervisor::Kvm, Hypervisor::Mshv]
            .into_iter()
            .find(|h| h.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hypervisor::Kvm => "kvm",
            Hypervisor::Mshv => "mshv",
        }
    }
}

/// Why the Pod runs where it runs. A small fixed set, so dashboards can group by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Per-Pod mode chose mshv.
    Selected,
    /// KubeVirt renders every launcher for mshv (`hypervisors: [hyperv-direct]`).
    ClusterMshv,
    /// The VMI asked for KVM with the opt-out annotation.
    OptOut,
    /// No node is labelled capable, Ready, schedulable and (optionally) allocatable.
    NoCapableNode,
    /// The launcher requests a device mshv cannot serve: one of `incompatibleResources`, or a
    /// host device (GPU, SR-IOV VF, any extended resource outside `devices.kubevirt.io/`, a DRA
    /// claim), decided from the Pod before any lookup.
    IncompatibleDevice,
    /// The launcher takes `--hypervisor` and the cluster's virt-handler serves only one device.
    LauncherPinsKvm,
    /// A migration target follows its source, which runs on KVM.
    MigrationSourceKvm,
    /// A migration target follows its source, which runs on mshv.
    MigrationSourceMshv,
    /// A migration target whose source could not be found: left as rendered.
    MigrationSourceUnknown,
    /// A cluster lookup failed and `onLookupError: fallback` kept the Pod as rendered.
    LookupError,
    /// The compute container's image is not in `launcherImages`: its libvirt/QEMU may not run
    /// an mshv domain (stock v1.8/v1.9 images cannot), so it is not switched. The value on
    /// Pods stays `launcher-image`, as dashboards and alerts select it.
    #[serde(rename = "launcher-image")]
    ImageNotListed,
    /// Mixed mode: a VM shape that KubeVirt configured for KVM mishandles on mshv (dedicated
    /// CPUs with an isolated emulator thread, realtime), kept on KVM.
    WorkloadUnsupported,
    /// The compute container's command line is not a layout this policy knows (`--hypervisor`
    /// twice or in both `command` and `args`, without a value or with an unknown one, or an
    /// entrypoint other than virt-launcher-monitor/virt-launcher): left exactly as rendered.
    LauncherLayoutUnknown,
    /// The VM's eviction strategy is in `liveMigration.keepOnKvm` (default `LiveMigrate`, `LiveMigrateIfPossible`): it
    /// must stay live-migratable, which a running mshv VM is not.
    NeedsLiveMigration,
    /// The mshv memory overhead could not be sized (a VMI, KubeVirt CR ratio or Pod value it
    /// does not understand): the Pod stays as rendered, never rejected.
    MemoryUnsized,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Selected => "selected",
            Reason::ClusterMshv => "cluster-mshv",
            Reason::OptOut => "opt-out",
            Reason::NoCapableNode => "no-capable-node",
            Reason::IncompatibleDevice => "incompatible-device",
            Reason::LauncherPinsKvm => "launcher-pins-kvm",
            Reason::MigrationSourceKvm => "migration-source-kvm",
            Reason::MigrationSourceMshv => "migration-source-mshv",
            Reason::MigrationSourceUnknown => "migration-source-unknown",
            Reason::LookupError => "lookup-error",
            Reason::ImageNotListed => "launcher-image",
            Reason::WorkloadUnsupported => "workload-unsupported",
            Reason::LauncherLayoutUnknown => "launcher-layout-unknown",
            Reason::MemoryUnsized => "memory-unsized",
            Reason::NeedsLiveMigration => "needs-live-migration",
        }
    }

    pub const ALL: [Reason; 15] = [
        Reason::Selected,
        Reason::ClusterMshv,
        Reason::OptOut,
        Reason::NoCapableNode,
        Reason::IncompatibleDevice,
        Reason::LauncherPinsKvm,
        Reason::MigrationSourceKvm,
        Reason::MigrationSourceMshv,
        Reason::MigrationSourceUnknown,
        Reason::LookupError,
        Reason::ImageNotListed,
        Reason::WorkloadUnsupported,
        Reason::LauncherLayoutUnknown,
        Reason::NeedsLiveMigration,
        Reason::MemoryUnsized,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_valid_label_values_and_match_serde() {
        for r in Reason::ALL {
            assert!(vocab::names::is_label_value(r.as_str()));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.as_str().to_string())
            );
        }
    }
}
