//! One structured log record per launcher decision, sent to the host's log stream.
//!
//! policy-server prints what a policy logs through the `kubewarden/tracing/log` host call in
//! its own log, so `kubectl logs` of the PolicyServer shows every decision with stable field
//! names (listed in docs/observability.md). The record is built here as plain data; the guest
//! sends it through the SDK's slog drain (`kubewarden_policy_sdk::logging::KubewardenDrain`),
//! as Kubewarden's own Rust policies log. Non-launcher Pods and a gate that is off log nothing.
//!
//! One record per decision: level `info`, or `warning` when the VM falls back to KVM (or is
//! refused) for a cause an operator can act on, with a short `hint` of what to do.

use crate::choice::{Hypervisor, Reason};

/// The record's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
}

/// What the policy did with one launcher Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLog {
    pub level: Level,
    /// `decided`: the Pod was admitted with the record; `rejected`: `onLookupError: reject`.
    pub outcome: &'static str,
    pub namespace: String,
    pub vmi: String,
    /// `kvm` or `mshv`; empty when rejected.
    pub hypervisor: &'static str,
    /// The reason recorded on the Pod; empty when rejected.
    pub reason: &'static str,
    /// `per-pod`, `cluster-mshv`, or `unknown` when the KubeVirt CR could not be read.
    pub gate: &'static str,
    /// `true`/`false` when the node list was read, `unknown` when it was not needed or failed.
    pub capable_node_found: &'static str,
    /// Host calls made for this request (lookups, not logging).
    pub host_calls: u32,
    /// What to do about a warning; empty on info records.
    pub hint: &'static str,
    /// The first warning, bounded (lookup errors say what failed).
    pub detail: String,
}

/// The remediation hint of a reason that leaves a VM where an operator did not want it, or
/// `None` when the outcome is what was asked for (mshv, an opt-out, a KVM migration source, a
/// device or VM shape that mshv cannot serve anyway). A migration target that follows its mshv
/// source gets one too: it is where it must be, but the migration will fail.
pub fn hint(hypervisor: Hypervisor, reason: Reason) -> Option<&'static str> {
    Some(match reason {
        Reason::NoCapableNode => {
            "no verified mshv node: check `kubectl get nodes -l <nodeLabel>=true` and run \
             `mshv-node-agent probe` on the mshv nodes (docs/runbooks/HyperVLayeredNoCapableNode.md)"
        }
        Reason::LookupError => {
            "policy-server could not read the cluster: check its RBAC with scripts/preflight.sh \
             (deploy/policy-rbac.yaml)"
        }
        Reason::ImageNotListed if hypervisor == Hypervisor::Mshv => {
            "KubeVirt renders mshv with a launcher image not in launcherImages: use an image whose \
             QEMU lists the mshv accelerator and whose libvirt has the hyperv virt type, see \
             docs/install.md, and list it"
        }
        Reason::ImageNotListed => {
            "list the launcher image in launcherImages once its QEMU lists the mshv accelerator \
             and its libvirt has the hyperv virt type, see docs/install.md"
        }
        Reason::LauncherLayoutUnknown => {
            "the compute container's command line is none KubeVirt v1.8-main renders (see the \
             detail): check the launcher build and virt-controller (docs/mixed-clusters.md)"
        }
        Reason::MigrationSourceMshv => {
            "live migration of an mshv VM fails (QEMU's mshv accelerator has no dirty-page \
             logging): stop and start the VM instead (docs/mixed-clusters.md)"
        }
        Reason::LauncherPinsKvm => {
            "the launcher takes --hypervisor: enable mixedMode with mshv-node-agent's device \
             plugin to switch it (docs/mixed-clusters.md)"
        }
        Reason::MemoryUnsized => {
            "the mshv memory overhead could not be sized: fix the field the warning names (VMI, \
             KubeVirt CR additionalGuestMemoryOverheadRatio or the Pod) (docs/memory-overhead.md)"
        }
        Reason::MigrationSourceUnknown => {
            "the migration source Pod was not found running: check the VMI's Pods"
        }
        Reason::Selected
        | Reason::ClusterMshv
        | Reason::OptOut
        | Reason::IncompatibleDevice
        | Reason::WorkloadUnsupported
        | Reason::NeedsLiveMigration
        | Reason::MigrationSourceKvm => return None,
    })
}

impl DecisionLog {
    /// Sends the record to the host through the SDK's log drain (wasm); elsewhere it does
    /// nothing (tests read records from their fake host instead).
    pub fn emit_to_host(&self) {
        #[cfg(target_arch = "wasm32")]
        {
            use kubewarden_policy_sdk::logging::KubewardenDrain;
            use slog::{Logger, o};
            let log = Logger::root(KubewardenDrain::new(), o!("policy" => "hyperv-layered"));
            macro_rules! record {
                ($mac:ident) => {
                    slog::$mac!(log, "launcher decision";
                        "outcome" => self.outcome,
                        "namespace" => self.namespace.as_str(),
                        "vmi" => self.vmi.as_str(),
                        "hypervisor" => self.hypervisor,
                        "reason" => self.reason,
                        "gate" => self.gate,
                        "capable_node_found" => self.capable_node_found,
                        "host_calls" => self.host_calls,
                        "hint" => self.hint,
                        "detail" => self.detail.as_str(),
                    )
                };
            }
            match self.level {
                Level::Info => record!(info),
                Level::Warning => record!(warn),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fallback_to_kvm_an_operator_can_fix_has_a_hint() {
        for r in Reason::ALL {
            let kvm = hint(Hypervisor::Kvm, r);
            let actionable = matches!(
                r,
                Reason::NoCapableNode
                    | Reason::LookupError
                    | Reason::ImageNotListed
                    | Reason::LauncherPinsKvm
                    | Reason::MigrationSourceUnknown
                    | Reason::LauncherLayoutUnknown
                    | Reason::MigrationSourceMshv
                    | Reason::MemoryUnsized
            );
            assert_eq!(kvm.is_some(), actionable, "{r:?}");
            if let Some(h) = kvm {
                assert!(!h.contains('\n') && h.len() < 200, "{r:?}: {h}");
            }
        }
        assert!(hint(Hypervisor::Mshv, Reason::ImageNotListed).is_some());
        assert!(hint(Hypervisor::Mshv, Reason::ClusterMshv).is_none());
    }
}
