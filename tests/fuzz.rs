//! Property-based fuzzing of the policy entry point (native build of the same code as the .wasm).
//!
//! Inputs: arbitrary JSON and bytes; admission requests built from the fixture launchers with
//! fields removed, retyped or enlarged; random settings; random lookup replies (errors, garbage,
//! empty and huge lists). Properties: never a panic; always a well-formed response; no `remove`
//! op but the KVM device the mshv device replaces; the policy on its own output changes nothing.
//!
//! Case count: `PROPTEST_CASES` (default 256 per property here, so `cargo test` stays quick;
//! `make fuzz` and CI run 100,000+). The count actually run is printed.

use hyperv_layered::cluster::Host;
use hyperv_layered::policy::{evaluate, validate_settings};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::HashMap;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const FIXTURES: [&str; 12] = [
    "launcher-v1.8-kvm.json",
    "launcher-v1.8-hyperv-direct.json",
    "launcher-v1.5.json",
    "launcher-hook-sidecars.json",
    "launcher-two-term-affinity.json",
    "launcher-hugepages.json",
    "launcher-migration-target.json",
    "launcher-opt-out.json",
    "launcher-sev.json",
    "launcher-spoofed.json",
    "plain-pod.json",
    "hotplug-pod.json",
];

/// A host whose answer depends only on (operation, kind): deterministic within a case, so the
/// idempotence property compares like with like.
#[derive(Debug, Clone)]
struct RandomHost {
    answers: HashMap<String, Result<Vec<u8>, String>>,
    fallback: Result<Vec<u8>, String>,
    calls: Cell<usize>,
}

impl Host for RandomHost {
    fn call(&self, operation: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        self.calls.set(self.calls.get() + 1);
        let kind = serde_json::from_slice::<Value>(request)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default();
        self.answers
            .get(&format!("{operation}/{kind}"))
            .cloned()
            .unwrap_or_else(|| self.fallback.clone())
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-zA-Z0-9./=:-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("true"),
            Just("1000"),
            Just("0"),
            Just("-1"),
            Just("1e400"),
            Just("2Gi"),
            Just("virt-launcher"),
            Just("compute"),
            Just("--hypervisor"),
            Just("kvm"),
            Just("CREATE"),
            Just("Pod"),
            Just("Ready"),
            Just("True"),
            Just("Running"),
            Just("devices.kubevirt.io/mshv"),
            Just("devices.kubevirt.io/kvm"),
            Just("hyperv-direct"),
            Just("ConfigurableHypervisor"),
            Just("HyperVLayered"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z./-]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value inside `v`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Remove,
    Retype(Value),
    Enlarge(usize),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Remove),
        arb_json().prop_map(Edit::Retype),
        (2usize..200).prop_map(Edit::Enlarge),
    ]
}

fn apply_edit(v: &mut Value, pointer: &str, edit: &Edit) {
    let Some((parent_ptr, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match edit {
        Edit::Remove => match v.pointer_mut(parent_ptr) {
            Some(Value::Object(m)) => {
                m.remove(&key);
            }
            Some(Value::Array(a)) => {
                if let Some(i) = key.parse::<usize>().ok().filter(|i| *i < a.len()) {
                    a.remove(i);
                }
            }
            _ => {}
        },
        Edit::Retype(x) => {
            if let Some(slot) = v.pointer_mut(pointer) {
                *slot = x.clone();
            }
        }
        Edit::Enlarge(n) => {
            if let Some(slot) = v.pointer_mut(pointer) {
                *slot = match slot.take() {
                    Value::Array(a) => {
                        Value::Array(a.iter().cycle().take(a.len() * n).cloned().collect())
                    }
                    Value::String(s) => Value::String(s.repeat(*n)),
                    Value::Object(mut m) => {
                        for i in 0..*n {
                            m.insert(format!("fuzz.example/k{i}"), json!("v"));
                        }
                        Value::Object(m)
                    }
                    other => other,
                };
            }
        }
    }
}

fn arb_settings() -> impl Strategy<Value = Value> {
    let valid = (
        prop_oneof![Just("kubevirt"), Just("enabled"), Just("disabled")],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just("fallback"), Just("reject")],
        prop_oneof![Just("0"), Just("64Mi"), Just("1Gi")],
        prop_oneof![Just("0"), Just("2Mi")],
        prop_oneof![Just("0"), Just("1.5"), Just("100")],
    )
        .prop_map(|(mode, per_pod, alloc, on_err, fixed, per_vcpu, pct)| {
            json!({"gate": {"mode": mode}, "perPodHypervisor": per_pod, "requireAllocatable": alloc,
                   "onLookupError": on_err,
                   "memoryOverhead": {"mshv": {"fixed": fixed, "perVcpu": per_vcpu, "guestMemoryPercent": pct}}})
        });
    prop_oneof![8 => valid, 1 => arb_json(), 1 => Just(json!({}))]
}

fn node(i: usize) -> Value {
    json!({"metadata": {"name": format!("n{i}"), "labels": {"mshv.node.hyperv-layered.io/capable": "true"}},
           "status": {"conditions": [{"type": "Ready", "status": "True"}],
                      "allocatable": {"devices.kubevirt.io/mshv": "1000"}}})
}

fn arb_reply() -> impl Strategy<Value = Result<Vec<u8>, String>> {
    prop_oneof![
        Just(Err("the server could not find the requested resource".to_string())),
        Just(Ok(b"{\"items\":[]}".to_vec())),
        Just(Ok(b"not json".to_vec())),
        Just(Ok(Vec::new())),
        (0usize..3000).prop_map(|n| Ok(json!({"items": (0..n).map(node).collect::<Vec<_>>()}).to_string().into_bytes())),
        Just(Ok(json!({"items": [{"spec": {"configuration": {"developerConfiguration": {"featureGates": ["HyperVLayered"]}}}}]}).to_string().into_bytes())),
        Just(Ok(json!({"items": [{"spec": {"configuration": {"developerConfiguration": {"featureGates": ["ConfigurableHypervisor"]},
            "hypervisors": [{"name": "hyperv-direct"}], "additionalGuestMemoryOverheadRatio": "1.5"}}}]}).to_string().into_bytes())),
        Just(Ok(fixture("vmi-testvm.json").to_string().into_bytes())),
        arb_json().prop_map(|v| Ok(v.to_string().into_bytes())),
        arb_json().prop_map(|v| Ok(json!({"items": [v]}).to_string().into_bytes())),
    ]
}

fn arb_host() -> impl Strategy<Value = RandomHost> {
    (
        arb_reply(),
        arb_reply(),
        arb_reply(),
        arb_reply(),
        arb_reply(),
    )
        .prop_map(|(kv, nodes, pods, vmi, fb)| {
            let mut answers = HashMap::new();
            answers.insert("list_resources_all/KubeVirt".to_string(), kv);
            answers.insert("list_resources_all/Node".to_string(), nodes);
            answers.insert("list_resources_by_namespace/Pod".to_string(), pods);
            answers.insert("get_resource/VirtualMachineInstance".to_string(), vmi);
            RandomHost {
                answers,
                fallback: fb,
                calls: Cell::new(0),
            }
        })
}

/// Checks one evaluation; returns the mutated object when there is one.
fn check(request: &Value, settings: &Value, host: &RandomHost) -> Result<(), TestCaseError> {
    let payload = json!({"request": request, "settings": settings}).to_string();
    let r = evaluate(payload.as_bytes(), host);
    // Well-formed: it serializes, and a rejection says why.
    let wire = serde_json::to_value(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(wire.get("accepted").is_some());
    if !r.accepted {
        prop_assert!(r.message.as_deref().is_some_and(|m| !m.is_empty()));
        prop_assert!(r.mutated_object.is_none());
    }
    let Some(mutated) = r.mutated_object else {
        return Ok(());
    };
    let original = request.get("object").cloned().unwrap_or(Value::Null);
    let patch = json_patch::diff(&original, &mutated);
    for op in &patch.0 {
        if let json_patch::PatchOperation::Remove(rm) = op {
            let p = rm.path.to_string();
            prop_assert!(p.ends_with("/devices.kubevirt.io~1kvm"), "removed {p}");
        }
    }
    // Idempotence on the same cluster state.
    let mut again = request.clone();
    again["object"] = mutated;
    let payload = json!({"request": again, "settings": settings}).to_string();
    let r2 = evaluate(payload.as_bytes(), host);
    if let Some(m2) = r2.mutated_object {
        let p2 = json_patch::diff(&again["object"], &m2);
        prop_assert!(p2.0.is_empty(), "second run patched: {:?}", p2);
    }
    Ok(())
}

fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn report(name: &str, runner: &TestRunner) {
    println!("fuzz {name}: {} cases passed", runner.config().cases);
}

#[test]
fn arbitrary_bytes_and_json_never_panic() {
    let mut r = runner(256);
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
        arb_json().prop_map(|v| json!({"request": v, "settings": {}})
            .to_string()
            .into_bytes()),
    ];
    r.run(&(strategy, arb_host()), |(bytes, host)| {
        let resp = evaluate(&bytes, &host);
        prop_assert!(serde_json::to_vec(&resp).is_ok());
        Ok(())
    })
    .unwrap();
    report("arbitrary bytes/json", &r);
}

#[test]
fn mangled_launchers_random_settings_and_replies() {
    let mut r = runner(256);
    let bases: Vec<Value> = FIXTURES.iter().map(|f| fixture(f)).collect();
    let strategy = (
        0..bases.len(),
        prop::collection::vec((any::<prop::sample::Index>(), arb_edit()), 0..4),
        arb_settings(),
        arb_host(),
        any::<bool>(),
    );
    r.run(&strategy, |(which, edits, settings, host, trusted)| {
        let mut request = bases[which].clone();
        if trusted {
            request["userInfo"]["username"] =
                json!("system:serviceaccount:kubevirt:kubevirt-controller");
        }
        for (idx, edit) in &edits {
            let mut ptrs = Vec::new();
            pointers(&request, String::new(), &mut ptrs);
            if ptrs.is_empty() {
                break;
            }
            let p = ptrs[idx.index(ptrs.len())].clone();
            apply_edit(&mut request, &p, edit);
        }
        check(&request, &settings, &host)
    })
    .unwrap();
    report("mangled launchers", &r);
}

#[test]
fn random_settings_are_valid_or_name_a_field() {
    let mut r = runner(256);
    r.run(&arb_settings(), |settings| {
        let resp = validate_settings(settings.to_string().as_bytes());
        if !resp.valid {
            let m = resp.message.unwrap_or_default();
            prop_assert!(m.starts_with("settings field `"), "{m}");
        }
        Ok(())
    })
    .unwrap();
    report("settings", &r);
}
