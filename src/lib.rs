//! hyperv-layered: a Kubewarden policy that runs KubeVirt VMs on the Hyper-V layered hypervisor
//! (L1VH, `/dev/mshv`) where nodes can, and leaves them on KVM where they cannot.
//!
//! Module map, one concern each: [`settings`] (shape, defaults, validation), [`launcher`]
//! (recognising virt-launcher Pods), [`cluster`] (host-call lookups), [`facts`] (those lookups
//! made at most once per request and counted, as the decision asks for them), [`decision`] (kvm
//! or mshv, and why, with the gate and capable-node facts it saw), [`apply`] (a decision applied
//! to the Pod: the memory step, then the edits), [`mutate`] (edits of the Pod JSON), [`memory`]
//! and [`quantity`] (the mshv memory delta), [`choice`] (the hypervisor and reason written on a Pod), [`pod_doc`]
//! (the Pod as a `Value` view of what the policy uses over the untouched JSON text), [`images`]
//! (launcher images known to run mshv), [`host_text`] (host and VMI text bounded to one line),
//! [`decision_log`] (the log record of a decision), [`policy`] (one request end to end: the
//! entry points and the answer). Names shared with mshv-node-agent (node labels, device
//! resources, Kubernetes name checks) live in the `vocab` workspace crate.

// The crate's API is what the wasm exports, the tests and the benchmark use: the entry points
// (`policy`), the host seam (`cluster::Host`) and the log record it receives (`decision_log`).
// Everything else is internal.
mod apply;
pub mod choice;
pub mod cluster;
mod decision;
pub mod decision_log;
mod facts;
mod host_text;
mod images;
mod launcher;
mod memory;
mod mutate;
mod pod_doc;
pub mod policy;
mod quantity;
mod settings;

#[cfg(target_arch = "wasm32")]
mod guest {
    //! The waPC exports policy-server and kwctl call.
    use kubewarden_policy_sdk::protocol_version_guest;
    use wapc_guest::{CallResult, register_function};

    // The waPC host finds the guest's init function by its unmangled symbol name; exporting
    // it is the module's only unsafe attribute (the workspace denies unsafe code elsewhere).
    #[allow(unsafe_code)]
    #[unsafe(no_mangle)]
    pub extern "C" fn wapc_init() {
        register_function("validate", validate);
        register_function("validate_settings", validate_settings);
        register_function("protocol_version", protocol_version_guest);
    }

    fn validate(payload: &[u8]) -> CallResult {
        Ok(crate::policy::evaluate_to_bytes(
            payload,
            &crate::cluster::WapcHost,
        ))
    }

    fn validate_settings(payload: &[u8]) -> CallResult {
        Ok(serde_json::to_vec(&crate::policy::validate_settings(
            payload,
        ))?)
    }
}
