//! Proves the harness itself: replay matching, failure reporting, patch computation and the
//! host/guest plumbing, using a hand-written waPC guest (WAT) instead of the policy, so a harness
//! bug cannot hide behind a policy bug. The floor policy checks the real SDK contract.

use harness::admission::{admission_response, decode_patch, mutation_patch, normalize_request};
use harness::{CallbackRequest, Policy, ReplayFailure, Replayer, Response, Session};
use serde_json::{Value, json};

/// A session in the exact text form `kwctl --record-host-capabilities-interactions` writes
/// (`request` is a YAML document inside a string, `!Tag` first).
const NODES_SESSION: &str = r#"
- type: Exchange
  request: |
    !KubernetesListResourceAll
    api_version: v1
    kind: Node
    label_selector: mshv.node.hyperv-layered.io/capable=true
    field_selector: null
    field_masks:
    - metadata.name
    - status.conditions
  response:
    type: Success
    payload: '{"apiVersion":"v1","kind":"List","items":[]}'
- type: Exchange
  request: |
    !KubernetesGetResource
    api_version: v1
    kind: Namespace
    name: default
    namespace: null
    disable_cache: false
  response:
    type: Error
    message: Cannot find v1/Namespace named 'default' inside of namespace 'None'
"#;

fn list_nodes(masks: &[&str]) -> CallbackRequest {
    CallbackRequest::KubernetesListResourceAll {
        api_version: "v1".into(),
        kind: "Node".into(),
        label_selector: Some("mshv.node.hyperv-layered.io/capable=true".into()),
        field_selector: None,
        field_masks: Some(masks.iter().map(|s| s.to_string()).collect()),
    }
}

fn get_namespace() -> CallbackRequest {
    CallbackRequest::KubernetesGetResource {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        name: "default".into(),
        namespace: None,
        disable_cache: false,
        field_masks: None,
    }
}

#[test]
fn parses_kwctl_session_format() {
    let s = Session::parse("inline", NODES_SESSION).unwrap();
    assert_eq!(s.exchanges.len(), 2);
    assert_eq!(
        s.exchanges[0].request,
        list_nodes(&["metadata.name", "status.conditions"])
    );
    // A recording without field_masks (older kwctl) reads as `None`.
    assert_eq!(s.exchanges[1].request, get_namespace());
    assert!(
        matches!(&s.exchanges[1].response, Response::Error { message } if message.starts_with("Cannot find"))
    );
    // Round trip through the on-disk format.
    let again = Session::parse("again", &s.to_yaml().unwrap()).unwrap();
    assert_eq!(again.exchanges[0].request, s.exchanges[0].request);
}

#[test]
fn guest_json_is_read_through_the_sdk_structs() {
    // Mask order and duplicates do not matter (BTreeSet), unknown fields are ignored.
    let json = br#"{"api_version":"v1","kind":"Node","label_selector":"mshv.node.hyperv-layered.io/capable=true",
        "field_selector":null,"field_masks":["status.conditions","metadata.name","metadata.name"],"unknown":1}"#;
    assert_eq!(
        CallbackRequest::from_guest("list_resources_all", json).unwrap(),
        list_nodes(&["metadata.name", "status.conditions"])
    );
    // A missing required field is an error the guest would get, not a silent default.
    assert!(CallbackRequest::from_guest("get_resource", br#"{"api_version":"v1"}"#).is_err());
    assert!(CallbackRequest::from_guest("nope", b"{}").is_err());
}

#[test]
fn to_guest_is_the_inverse_of_from_guest() {
    for file in [
        "kv-per-pod-memory.yml",
        "migration-source-kvm.yml",
        "nodes-capable.yml",
    ] {
        let s = Session::load(harness::data_path(format!("sessions/{file}"))).unwrap();
        for e in s.exchanges.iter() {
            let (operation, payload) = e.request.to_guest().expect("no can_i recorded");
            assert_eq!(
                CallbackRequest::from_guest(operation, &payload).unwrap(),
                e.request,
                "{file}"
            );
        }
    }
}

#[test]
fn replay_is_strict_and_ordered() {
    let s = Session::parse("inline", NODES_SESSION).unwrap();

    // Exact replay: payload, then the recorded error as the guest sees it.
    let mut r = Replayer::new(Some(s.clone()));
    assert_eq!(
        r.answer(list_nodes(&["status.conditions", "metadata.name"]))
            .unwrap(),
        br#"{"apiVersion":"v1","kind":"List","items":[]}"#
    );
    assert_eq!(
        r.answer(get_namespace()).unwrap_err(),
        "Callback evaluation failure: Cannot find v1/Namespace named 'default' inside of namespace 'None'"
    );
    assert_eq!(r.finish(), 0);
    assert!(r.failures.is_empty(), "{:?}", r.failures);

    // Out of order: both calls mismatch (a mismatch consumes the exchange, as in kwctl).
    let mut r = Replayer::new(Some(s.clone()));
    let err = r.answer(get_namespace()).unwrap_err();
    assert!(err.contains("Replay error: unexpected request"), "{err}");
    assert!(r.answer(list_nodes(&["metadata.name"])).is_err());
    assert_eq!(r.failures.len(), 2);
    let report = harness::session::check(&r.failures)
        .unwrap_err()
        .to_string();
    // Both requests are shown, as YAML a fixture author can paste.
    assert!(
        report.contains("--- session expects:\n!KubernetesListResourceAll"),
        "{report}"
    );
    assert!(
        report.contains("--- policy sent:\n!KubernetesGetResource"),
        "{report}"
    );

    // One field off (a different mask set) is a mismatch.
    let mut r = Replayer::new(Some(s.clone()));
    assert!(r.answer(list_nodes(&["metadata.name"])).is_err());
    assert!(matches!(
        r.failures[0],
        ReplayFailure::Mismatch { index: 0, .. }
    ));

    // An extra call after the session ran out, and a call with no session at all.
    let mut r = Replayer::new(Some(s.clone()));
    r.answer(list_nodes(&["metadata.name", "status.conditions"]))
        .unwrap();
    r.answer(get_namespace()).unwrap_err();
    let err = r.answer(get_namespace()).unwrap_err();
    assert!(
        err.ends_with("the list of recorded responses is empty"),
        "{err}"
    );
    assert!(matches!(
        r.failures[0],
        ReplayFailure::Extra { index: 2, .. }
    ));
    let mut r = Replayer::new(None);
    r.answer(get_namespace()).unwrap_err();
    assert!(matches!(
        r.failures[0],
        ReplayFailure::Extra { index: 0, .. }
    ));

    // Leftover exchanges are failures too.
    let mut r = Replayer::new(Some(s));
    r.answer(list_nodes(&["metadata.name", "status.conditions"]))
        .unwrap();
    assert_eq!(r.finish(), 1);
    assert!(matches!(
        r.failures[0],
        ReplayFailure::Leftover { index: 1, .. }
    ));
}

#[test]
fn patch_is_the_diff_of_object_and_mutated_object() {
    let original = json!({
        "metadata": {"name": "p", "labels": {"a": "1"}, "annotations": {"keep": "me"}},
        "spec": {"containers": [{"name": "compute", "resources": {"limits": {"devices.kubevirt.io/kvm": "1"}}}]}
    });
    let mut mutated = original.clone();
    mutated["metadata"]["labels"]["b"] = json!("2");
    mutated["spec"]["containers"][0]["resources"]["limits"] =
        json!({"devices.kubevirt.io/mshv": "1"});
    mutated["spec"]["nodeSelector"] = json!({"mshv.node.hyperv-layered.io/capable": "true"});

    let patch = mutation_patch(&original, &mutated);
    let ops = serde_json::to_value(&patch).unwrap();
    let ops: Vec<(String, String)> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["op"].as_str().unwrap().to_owned(),
                o["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // "/" inside a key is escaped as "~1" (RFC 6901).
    assert!(
        ops.contains(&("add".into(), "/metadata/labels/b".into())),
        "{ops:?}"
    );
    assert!(
        ops.contains(&("add".into(), "/spec/nodeSelector".into())),
        "{ops:?}"
    );
    assert!(
        ops.contains(&(
            "remove".into(),
            "/spec/containers/0/resources/limits/devices.kubevirt.io~1kvm".into()
        )),
        "{ops:?}"
    );
    assert!(
        ops.iter()
            .all(|(_, p)| !p.starts_with("/metadata/annotations")),
        "{ops:?}"
    );
    let mut applied = original.clone();
    json_patch::patch(&mut applied, &patch).unwrap();
    assert_eq!(applied, mutated);

    // The kwctl view of the same mutation: base64 JSON Patch, patchType JSONPatch.
    let guest = serde_json::to_vec(&json!({"accepted": true, "message": null, "code": null,
        "mutated_object": mutated, "audit_annotations": null, "warnings": ["w1"]}))
    .unwrap();
    let resp = admission_response("uid-1", Some(&original), &Ok(guest));
    assert_eq!(resp["allowed"], json!(true));
    assert_eq!(resp["patchType"], json!("JSONPatch"));
    assert_eq!(resp["warnings"], json!(["w1"]));
    assert_eq!(decode_patch(&resp).unwrap().unwrap(), patch);
    assert!(resp.get("status").is_none());

    // Returning the object unchanged is no patch at all.
    let same = serde_json::to_vec(&json!({"accepted": true, "mutated_object": original})).unwrap();
    let resp = admission_response("u", Some(&original), &Ok(same));
    assert!(resp.get("patch").is_none() && resp.get("patchType").is_none());

    // Mutating a DELETE (no object) is refused by the host.
    let del = serde_json::to_vec(&json!({"accepted": true, "mutated_object": {}})).unwrap();
    let resp = admission_response("u", None, &Ok(del));
    assert_eq!(resp["allowed"], json!(false));

    // A guest error denies with 500; a rejection carries message and code.
    let resp = admission_response("u", Some(&original), &Err("Guest call failure: x".into()));
    assert_eq!(resp["status"]["code"], json!(500));
    assert_eq!(
        resp["status"]["message"],
        json!("internal server error: Guest call failure: x")
    );
    let rej =
        serde_json::to_vec(&json!({"accepted": false, "message": "no", "code": 403})).unwrap();
    let resp = admission_response("u", Some(&original), &Ok(rej));
    assert_eq!(resp["status"], json!({"message": "no", "code": 403}));
}

fn admission_request(object: Value) -> Value {
    json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "default",
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kubevirt:kubevirt-controller"},
        "object": object,
        "notAnAdmissionRequestField": true
    })
}

#[test]
fn requests_are_normalized_like_kwctl() {
    let req = admission_request(json!({"metadata": {"name": "p"}}));
    let review =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req});
    let a = normalize_request(&req).unwrap();
    let b = normalize_request(&review).unwrap();
    assert_eq!(a, b);
    assert!(a.get("notAnAdmissionRequestField").is_none());
    assert_eq!(a["object"], json!({"metadata": {"name": "p"}}));
    let mut no_uid = req.clone();
    no_uid.as_object_mut().unwrap().remove("uid");
    assert!(normalize_request(&no_uid).is_err());
}

/// A minimal waPC guest: every call makes one `kubewarden/kubernetes/list_resources_all` host
/// call with a fixed JSON request and returns the host's reply as its own response, or the host's
/// error as its own error.
fn echo_guest(request_json: &str) -> Policy {
    let escaped = request_json.replace('\\', "\\\\").replace('"', "\\\"");
    let wat = format!(
        r#"(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))
  (memory (export "memory") 4)
  (data (i32.const 0) "kubewarden")
  (data (i32.const 16) "kubernetes")
  (data (i32.const 32) "list_resources_all")
  (data (i32.const 64) "{escaped}")
  (func (export "__guest_call") (param $op_len i32) (param $req_len i32) (result i32)
    (local $len i32)
    (call $guest_request (i32.const 4096) (i32.const 8192))
    (if (i32.eq (call $host_call (i32.const 0) (i32.const 10) (i32.const 16) (i32.const 10)
                                 (i32.const 32) (i32.const 18) (i32.const 64) (i32.const {len}))
                (i32.const 1))
      (then
        (local.set $len (call $host_response_len))
        (call $host_response (i32.const 131072))
        (call $guest_response (i32.const 131072) (local.get $len))
        (return (i32.const 1))))
    (local.set $len (call $host_error_len))
    (call $host_error (i32.const 131072))
    (call $guest_error (i32.const 131072) (local.get $len))
    (i32.const 0)))"#,
        len = request_json.len()
    );
    Policy::from_bytes("echo-guest.wat", wat.as_bytes()).unwrap()
}

fn session_answering(payload: &Value) -> Session {
    let yaml = format!(
        r#"
- type: Exchange
  request: |
    !KubernetesListResourceAll
    api_version: v1
    kind: Node
    label_selector: mshv.node.hyperv-layered.io/capable=true
    field_selector: null
    field_masks: [status.conditions, metadata.name]
  response:
    type: Success
    payload: '{}'
"#,
        serde_json::to_string(payload).unwrap().replace('\'', "''")
    );
    Session::parse("inline", &yaml).unwrap()
}

const GUEST_LIST_REQUEST: &str = r#"{"api_version":"v1","kind":"Node","label_selector":"mshv.node.hyperv-layered.io/capable=true","field_selector":null,"field_masks":["metadata.name","status.conditions"]}"#;

#[test]
fn end_to_end_through_wasmtime_and_wapc() {
    let policy = echo_guest(GUEST_LIST_REQUEST);
    let instance = policy.instance().unwrap();
    let object = json!({"metadata": {"name": "p", "labels": {}}, "spec": {}});
    let mut mutated = object.clone();
    mutated["metadata"]["labels"]["hyperv-layered.io/mutated"] = json!("true");
    let reply = json!({"accepted": true, "message": null, "code": null,
        "mutated_object": mutated, "audit_annotations": null, "warnings": null});
    let session = session_answering(&reply);
    let request = admission_request(object);

    // The session repeats: the same warm instance replays it from the start on every call.
    for _ in 0..3 {
        let out = instance.validate(&request, &json!({}), Some(&session));
        assert_eq!(out.host_calls, 1);
        assert!(out.guest_error.is_none());
        assert!(out.allowed());
        assert_eq!(out.response, reply);
        assert_eq!(
            serde_json::to_value(&out.patch).unwrap(),
            json!([{"op": "add", "path": "/metadata/labels/hyperv-layered.io~1mutated", "value": "true"}])
        );
        assert_eq!(out.patched_object().unwrap(), mutated);
        assert_eq!(decode_patch(&out.admission).unwrap().unwrap(), out.patch);
    }
}

#[test]
fn host_errors_reach_the_guest_and_mismatches_are_reported() {
    let instance = echo_guest(GUEST_LIST_REQUEST).instance().unwrap();
    let request = admission_request(json!({"metadata": {"name": "p"}}));

    // A recorded `type: Error` reply: the guest gets the host's text and (here) fails with it,
    // which the host turns into a 500 denial.
    let session = Session::new(
        "error",
        vec![harness::Exchange {
            request: list_nodes(&["metadata.name", "status.conditions"]),
            response: Response::Error {
                message: "nodes is forbidden".into(),
            },
        }],
    );
    let out = instance.validate(&request, &json!({}), Some(&session));
    let err = out.guest_error.clone().unwrap();
    assert!(
        err.contains("Callback evaluation failure: nodes is forbidden"),
        "{err}"
    );
    assert!(!out.allowed());
    assert_eq!(out.admission["status"]["code"], json!(500));

    // A fixture that does not match what the policy asks for: recorded, with both requests.
    let wrong = Session::new(
        "wrong",
        vec![harness::Exchange {
            request: list_nodes(&["metadata.name"]),
            response: Response::Success {
                payload: "{}".into(),
            },
        }],
    );
    let out = instance
        .try_validate(&request, &json!({}), Some(&wrong))
        .unwrap();
    assert!(matches!(
        out.replay_failures.as_slice(),
        [ReplayFailure::Mismatch { .. }]
    ));
    assert!(
        out.guest_error
            .unwrap()
            .contains("Replay error: unexpected request")
    );
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        instance.validate(&request, &json!({}), Some(&wrong))
    }))
    .unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(
        text.contains("--- session expects:") && text.contains("--- policy sent:"),
        "{text}"
    );

    // No session: the call is an extra call.
    let out = instance.try_validate(&request, &json!({}), None).unwrap();
    assert!(matches!(
        out.replay_failures.as_slice(),
        [ReplayFailure::Extra { index: 0, .. }]
    ));

    // metadata.yml allow-list: reading a kind the policy did not declare is refused.
    let denied = echo_guest(GUEST_LIST_REQUEST)
        .with_context_aware_resources([("v1".to_owned(), "Namespace".to_owned())])
        .instance()
        .unwrap();
    let out = denied
        .try_validate(&request, &json!({}), Some(&session))
        .unwrap();
    assert!(matches!(
        out.replay_failures.as_slice(),
        [
            ReplayFailure::NotAllowed { .. },
            ReplayFailure::Leftover { .. }
        ]
    ));
    assert!(
        out.guest_error
            .unwrap()
            .contains("has not been granted access to Kubernetes v1/Node")
    );
}

/// The floor policy speaks the real SDK contract end to end (needs
/// `cargo build --release --target wasm32-wasip1 -p floor-policy`, part of `make test`).
#[test]
fn floor_policy_contract() {
    let floor = Policy::floor().unwrap_or_else(|e| panic!("{e:#}"));
    let instance = floor.instance().unwrap();
    assert_eq!(instance.protocol_version().unwrap(), json!("v1"));
    assert_eq!(
        instance.validate_settings(&json!({})),
        json!({"valid": true, "message": null})
    );
    let out = instance.validate(
        &admission_request(json!({"metadata": {"name": "p"}})),
        &json!({}),
        None,
    );
    assert!(out.allowed() && out.patch.0.is_empty() && out.host_calls == 0);
    assert!(out.guest_error.is_none());
    // With `hostCalls` it sends exactly those requests (strict replay) and still accepts.
    let session = Session::load(harness::data_path("sessions/kv-per-pod.yml")).unwrap();
    let calls: Vec<Value> = session
        .exchanges
        .iter()
        .map(|e| {
            let (operation, payload) = e.request.to_guest().unwrap();
            json!({"operation": operation, "payload": String::from_utf8(payload).unwrap()})
        })
        .collect();
    let out = instance.validate(
        &admission_request(json!({"metadata": {"name": "p"}})),
        &json!({"hostCalls": calls}),
        Some(&session),
    );
    assert!(out.allowed() && out.patch.0.is_empty());
    assert_eq!(out.host_calls, session.exchanges.len());
    // A payload the SDK cannot parse is a guest error: denied with 500 by the host.
    let raw = instance.call("validate", b"{}", None);
    let err = raw.result.unwrap_err();
    assert!(
        err.starts_with("Guest call failure: error deserializing validation payload"),
        "{err}"
    );
}

/// Every input of the policy module is in the freshness check's list: the crate's sources, its
/// manifests and the sources and manifest of each path dependency (`vocab`). A new path
/// dependency that the list forgets fails here instead of leaving `policy.wasm` silently stale.
#[test]
fn the_freshness_check_covers_every_module_input() {
    let root = harness::repo_root();
    let inputs = harness::module_inputs("POLICY_INPUTS").unwrap();
    let manifest: toml_like::Manifest = toml_like::read(&root.join("Cargo.toml"));
    let mut wanted = vec![
        root.join("src"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ];
    for dep in manifest.path_dependencies {
        wanted.push(root.join(&dep).join("src"));
        wanted.push(root.join(&dep).join("Cargo.toml"));
    }
    for w in wanted {
        assert!(inputs.contains(&w), "POLICY_INPUTS misses {}", w.display());
    }
}

/// Just enough of Cargo.toml for the test above: the paths of the policy's `[dependencies]`,
/// written there (`path = "..."`) or taken from `[workspace.dependencies]` (`x.workspace = true`).
mod toml_like {
    use std::collections::BTreeMap;

    pub struct Manifest {
        pub path_dependencies: Vec<String>,
    }

    fn quoted_path(line: &str) -> Option<String> {
        let rest = line.split("path = \"").nth(1)?;
        rest.split('"').next().map(str::to_string)
    }

    pub fn read(path: &std::path::Path) -> Manifest {
        let text = std::fs::read_to_string(path).unwrap();
        let mut section = String::new();
        let mut direct = Vec::new();
        let mut from_workspace = Vec::new();
        let mut workspace_paths = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            let name = line.split(['.', ' ', '=']).next().unwrap_or("").to_string();
            match section.as_str() {
                "[dependencies]" => {
                    if let Some(p) = quoted_path(line) {
                        direct.push(p);
                    } else if line.contains("workspace = true") {
                        from_workspace.push(name);
                    }
                }
                "[workspace.dependencies]" => {
                    if let Some(p) = quoted_path(line) {
                        workspace_paths.insert(name, p);
                    }
                }
                _ => {}
            }
        }
        let mut path_dependencies = direct;
        path_dependencies.extend(
            from_workspace
                .iter()
                .filter_map(|n| workspace_paths.get(n).cloned()),
        );
        assert!(!path_dependencies.is_empty(), "no path dependency found");
        Manifest { path_dependencies }
    }
}
