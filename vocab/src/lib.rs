//! The names the hyperv-layered policy and mshv-node-agent must agree on, defined once:
//! the node labels the agent writes and the policy selects on, the extended resources the
//! agent's device plugin serves and the policy requests, and Kubernetes' name syntax, which
//! both check (the policy its settings, the agent its flags).
//!
//! Dependency-free, so that it builds for the policy's `wasm32-wasip1` and the agent's native
//! target alike.

pub mod names;

/// The prefix of every node label (and the annotation) mshv-node-agent owns. A project-owned
/// domain: KubeVirt's node labeller rewrites every label under its own prefixes, and
/// `hyperv.node.kubevirt.io/*` already means KVM's Hyper-V enlightenments.
pub const NODE_LABEL_PREFIX: &str = "mshv.node.hyperv-layered.io/";

/// Label names under [`NODE_LABEL_PREFIX`].
pub const CAPABLE: &str = "capable";
pub const PARTITION_TYPE: &str = "partition-type";
pub const HV_BUILD: &str = "hv-build";
pub const UAPI: &str = "uapi";
/// `true` once a tiny guest really ran on `/dev/mshv` on this node (`probe --run-guest`, the
/// agent's guest verification), `false` when that run failed; absent until one was tried.
/// `capable` keeps its meaning (the device answered the fingerprint ioctl).
pub const GUEST_VERIFIED: &str = "guest-verified";
/// The agent's diagnostic annotation (state, errno, kernel, heartbeat).
pub const PROBE: &str = "probe";

/// `<NODE_LABEL_PREFIX><CAPABLE>`: set to `true` by the agent on verified nodes; the policy's
/// default `nodeLabel`. (A literal because `concat!` takes no constants; a test keeps it equal.)
pub const CAPABLE_NODE_LABEL: &str = "mshv.node.hyperv-layered.io/capable";
/// `<NODE_LABEL_PREFIX><GUEST_VERIFIED>`: an operator who wants the policy to require a guest
/// that really ran sets the policy's `nodeLabel` to this.
pub const GUEST_VERIFIED_NODE_LABEL: &str = "mshv.node.hyperv-layered.io/guest-verified";

/// The extended resource for `/dev/mshv`: KubeVirt's own name (virt-handler serves it in
/// hyperv-direct mode: kubevirt/kubevirt `pkg/virt-handler/device-manager/generic_device.go`,
/// `devices.kubevirt.io/<device>`), which mshv-node-agent serves elsewhere.
pub const MSHV_DEVICE_RESOURCE: &str = "devices.kubevirt.io/mshv";
/// The extended resource for `/dev/kvm`, served by virt-handler of a KVM-configured KubeVirt.
pub const KVM_DEVICE_RESOURCE: &str = "devices.kubevirt.io/kvm";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capable_label_is_prefix_plus_name_and_valid() {
        assert_eq!(CAPABLE_NODE_LABEL, format!("{NODE_LABEL_PREFIX}{CAPABLE}"));
        assert_eq!(
            GUEST_VERIFIED_NODE_LABEL,
            format!("{NODE_LABEL_PREFIX}{GUEST_VERIFIED}")
        );
        for name in [
            CAPABLE,
            PARTITION_TYPE,
            HV_BUILD,
            UAPI,
            GUEST_VERIFIED,
            PROBE,
        ] {
            names::check_label_key(&format!("{NODE_LABEL_PREFIX}{name}")).unwrap();
        }
        for r in [MSHV_DEVICE_RESOURCE, KVM_DEVICE_RESOURCE] {
            names::check_extended_resource(r).unwrap();
        }
    }
}
