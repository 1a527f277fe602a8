//! What the host does around the guest's `validate` call, mirrored from policy-evaluator so a
//! fixture that kwctl or policy-server would reject is rejected here too.

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use json_patch::Patch;
use kubewarden_policy_sdk::response::ValidationResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// policy-evaluator's `AdmissionRequest` (`crates/policy-evaluator/src/admission_request.rs`).
/// The host deserializes the incoming request into it and re-serializes it for the guest, so
/// `uid`, `kind`, `resource`, `operation` and `userInfo` are required and unknown top-level
/// fields are dropped before the policy sees them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_kind: Option<GroupVersionKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_resource: Option<GroupVersionResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_sub_resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub operation: String,
    pub user_info: k8s_openapi::api::authentication::v1::UserInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<k8s_openapi::apimachinery::pkg::runtime::RawExtension>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_object: Option<k8s_openapi::apimachinery::pkg::runtime::RawExtension>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<k8s_openapi::apimachinery::pkg::runtime::RawExtension>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupVersionResource {
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// kwctl's `build_validate_request` (`crates/kwctl/src/command/run/evaluator.rs`): a file whose
/// `kind` is `AdmissionReview` is unwrapped to its `.request`, anything else is taken as the
/// AdmissionRequest itself. Returns the request as the guest will see it.
pub fn normalize_request(input: &Value) -> Result<Value> {
    let object = input
        .as_object()
        .ok_or_else(|| anyhow!("Invalid request object"))?;
    let req = if object.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
        object
            .get("request")
            .cloned()
            .ok_or_else(|| anyhow!("invalid AdmissionReview object"))?
    } else {
        input.clone()
    };
    let typed: AdmissionRequest = serde_json::from_value(req)
        .context("cannot build AdmissionRequest object from given input")?;
    Ok(serde_json::to_value(typed)?)
}

/// The JSON Patch the host sends for a mutation: `json_patch::diff(original, mutated)`, exactly as
/// `AdmissionResponse::from_policy_validation_response` in
/// `crates/policy-evaluator/src/admission_response.rs` (json-patch 4.x there and here). An empty
/// diff means "no patch".
pub fn mutation_patch(original: &Value, mutated: &Value) -> Patch {
    json_patch::diff(original, mutated)
}

/// The AdmissionResponse kwctl prints (and policy-server returns) for one evaluation, in
/// `Protect` mode with mutation allowed; `uid` is the request's.
///
/// - guest error → `reject_internal_server_error`: allowed false, code 500,
///   message "internal server error: <waPC error>" (`runtimes/wapc/runtime.rs`);
/// - unparsable guest response → the same 500 rejection;
/// - `mutated_object` on a request without `object` (DELETE) → allowed false with
///   "Incoming object is null, ..." ;
/// - otherwise `allowed = accepted`, `warnings`/`auditAnnotations` copied (null when absent),
///   `status` only when `message` or `code` is set, and `patch` (base64 of the JSON Patch) with
///   `patchType: JSONPatch` only when the diff is non-empty. A patch is computed even when
///   `accepted` is false, as the host does; the API server ignores it then.
pub fn admission_response(
    uid: &str,
    original: Option<&Value>,
    guest_result: &Result<Vec<u8>, String>,
) -> Value {
    let reject_500 = |message: String| {
        json!({
            "uid": uid,
            "allowed": false,
            "status": {"message": format!("internal server error: {message}"), "code": 500},
            "auditAnnotations": null,
            "warnings": null,
        })
    };
    let bytes = match guest_result {
        Ok(b) => b,
        Err(e) => return reject_500(e.clone()),
    };
    let resp: ValidationResponse = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => return reject_500(format!("{e}")),
    };
    if resp.mutated_object.is_some() && original.is_none() {
        return json!({
            "uid": uid,
            "allowed": false,
            "status": {"message": "Incoming object is null, which happens only with DELETE operations, but the policy is attempting a mutation. This is not allowed"},
            "auditAnnotations": null,
            "warnings": null,
        });
    }
    let mut out = json!({
        "uid": uid,
        "allowed": resp.accepted,
        "auditAnnotations": resp.audit_annotations,
        "warnings": resp.warnings,
    });
    if let (Some(mutated), Some(original)) = (&resp.mutated_object, original) {
        let patch = mutation_patch(original, mutated);
        if !patch.0.is_empty() {
            let text = serde_json::to_string(&patch).expect("a JSON Patch always serializes");
            out["patchType"] = json!("JSONPatch");
            out["patch"] = json!(STANDARD.encode(text));
        }
    }
    if resp.message.is_some() || resp.code.is_some() {
        let mut status = serde_json::Map::new();
        if let Some(m) = resp.message {
            status.insert("message".into(), json!(m));
        }
        if let Some(c) = resp.code {
            status.insert("code".into(), json!(c));
        }
        out["status"] = Value::Object(status);
    }
    out
}

/// Decodes the `patch` field of an AdmissionResponse (as `jq -r .patch | base64 -d` does).
pub fn decode_patch(admission_response: &Value) -> Result<Option<Patch>> {
    let Some(b64) = admission_response.get("patch").and_then(Value::as_str) else {
        return Ok(None);
    };
    let bytes = STANDARD.decode(b64).context("patch is not base64")?;
    Ok(Some(
        serde_json::from_slice(&bytes).context("patch is not a JSON Patch")?,
    ))
}
