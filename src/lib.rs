//! hyperv-layered: a Kubewarden policy that runs KubeVirt VMs on the Hyper-V layered hypervisor
//! (L1VH, `/dev/mshv`) where nodes can, and leaves them on KVM where they cannot.
//!
//! Module map, one concern each: [`settings`] (shape, defaults, validation), [`launcher`]
//! (recognising virt-launcher Pods), [`cluster`] (host-call lookups), [`decision`] (kvm or mshv,
//! and why), [`mutate`] (edits of the Pod JSON), [`memory`] and [`quantity`] (KubeVirt's memory
//! overhead and the mshv terms), [`record`] (the decision vocabulary), [`policy`] (one request
//! end to end).

pub mod cluster;
pub mod decision;
pub mod k8s_names;
pub mod launcher;
pub mod memory;
pub mod mutate;
pub mod policy;
pub mod quantity;
pub mod record;
pub mod settings;

#[cfg(target_arch = "wasm32")]
mod guest {
    //! The waPC exports policy-server and kwctl call.
    use kubewarden_policy_sdk::protocol_version_guest;
    use wapc_guest::{CallResult, register_function};

    #[unsafe(no_mangle)]
    pub extern "C" fn wapc_init() {
        register_function("validate", validate);
        register_function("validate_settings", validate_settings);
        register_function("protocol_version", protocol_version_guest);
    }

    fn validate(payload: &[u8]) -> CallResult {
        let response = crate::policy::evaluate(payload, &crate::cluster::WapcHost);
        // A mutated Pod is about as large as the request: size the buffer once.
        let mut out = Vec::with_capacity(payload.len() + 512);
        serde_json::to_writer(&mut out, &response)?;
        Ok(out)
    }

    fn validate_settings(payload: &[u8]) -> CallResult {
        Ok(serde_json::to_vec(&crate::policy::validate_settings(
            payload,
        ))?)
    }
}
