//! The floor policy: parses the request the way a real Kubewarden policy must, then accepts it.
//!
//! `benches/policy.rs` times `validate` of this module next to hyperv-layered's in the same run,
//! so the difference is what hyperv-layered's own logic costs on top of the unavoidable waPC call,
//! JSON parse and response serialization. Keep it doing exactly that and nothing more.
//!
//! One optional setting, `hostCalls` (a list of `{operation, payload}`), makes the floor also
//! send those Kubernetes host calls and drop the replies: the benchmark passes the very requests
//! hyperv-layered makes in a scenario, so "floor + host calls" is what any policy that needs
//! the same lookups pays before doing anything with them (the host serving and copying the
//! reply, the guest receiving it).

use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, request::ValidationRequest, settings::Validatable,
    validate_settings,
};
use serde::Deserialize;
use wapc_guest::prelude::*;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    #[serde(default)]
    host_calls: Vec<HostCall>,
}

#[derive(Debug, Default, Deserialize)]
struct HostCall {
    operation: String,
    /// The request JSON, as text: sent as is.
    payload: String,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

// The waPC host finds the guest's init function by its unmangled symbol name; exporting it is
// the module's only unsafe attribute (the workspace denies unsafe code elsewhere).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    // Parse the whole request so the floor includes the deserialization every real policy
    // pays; an unparsable payload is a guest error, as in a real policy.
    let request = ValidationRequest::<Settings>::new(payload)?;
    for call in &request.settings.host_calls {
        // The reply (or error) is received and dropped: receiving it is the cost measured.
        let reply = host_call(
            "kubewarden",
            "kubernetes",
            &call.operation,
            call.payload.as_bytes(),
        );
        drop(reply);
    }
    accept_request()
}
