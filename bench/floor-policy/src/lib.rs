//! The floor policy: parses the request the way a real Kubewarden policy must, then accepts it.
//!
//! `benches/policy.rs` times `validate` of this module next to hyperv-layered's in the same run,
//! so the difference is what hyperv-layered's own logic costs on top of the unavoidable waPC call,
//! JSON parse and response serialization. Keep it doing exactly that and nothing more.

use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, request::ValidationRequest, settings::Validatable,
    validate_settings,
};
use serde::Deserialize;
use wapc_guest::prelude::*;

/// Accepts any settings object: the floor has no configuration.
#[derive(Debug, Default, Deserialize)]
struct Settings {}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    // Parse the whole request (settings as raw JSON) so the floor includes the deserialization
    // every real policy pays; an unparsable payload is a guest error, as in a real policy.
    let _request = ValidationRequest::<serde_json::Value>::new(payload)?;
    accept_request()
}
