//! Input generators shared by the native fuzzer (tests/fuzz.rs) and the wasm fuzzer
//! (tests/fuzz_wasm.rs): the same strategies drive both.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Value, json};

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub const FIXTURES: [&str; 14] = [
    "launcher-v1.8-kvm.json",
    "launcher-v1.8-hyperv-direct.json",
    "launcher-v1.5.json",
    "launcher-hook-sidecars.json",
    "launcher-two-term-affinity.json",
    "launcher-hugepages.json",
    "launcher-migration-target.json",
    "launcher-opt-out.json",
    "launcher-sev.json",
    "launcher-dedicated.json",
    "launcher-realtime.json",
    "launcher-spoofed.json",
    "plain-pod.json",
    "hotplug-pod.json",
];

pub fn arb_json() -> impl Strategy<Value = Value> {
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
pub fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
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
pub enum Edit {
    Remove,
    Retype(Value),
    Enlarge(usize),
}

pub fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Remove),
        arb_json().prop_map(Edit::Retype),
        (2usize..200).prop_map(Edit::Enlarge),
    ]
}

pub fn apply_edit(v: &mut Value, pointer: &str, edit: &Edit) {
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

pub fn arb_settings() -> impl Strategy<Value = Value> {
    let valid = (
        prop_oneof![Just("kubevirt"), Just("enabled"), Just("disabled")],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just("fallback"), Just("reject")],
        prop_oneof![Just("0"), Just("64Mi"), Just("1Gi")],
        prop_oneof![Just("0"), Just("2Mi")],
        prop_oneof![Just("0"), Just("1.5"), Just("100")],
        // mixedMode with perPodHypervisor, or without an image, is invalid: both kinds are
        // generated on purpose (the policy must answer, not fail).
        any::<bool>(),
        prop_oneof![
            Just(json!([])),
            Just(json!(["quay.io/kubevirt/virt-launcher"])),
            Just(json!(["registry.example/*", "quay.io/kubevirt/virt-launcher:v1.8.2"])),
        ],
    )
        .prop_map(|(mode, per_pod, alloc, on_err, fixed, per_vcpu, pct, mixed, images)| {
            json!({"gate": {"mode": mode}, "perPodHypervisor": per_pod, "requireAllocatable": alloc,
                   "onLookupError": on_err, "mixedMode": mixed, "launcherImages": images,
                   "memoryOverhead": {"mshv": {"fixed": fixed, "perVcpu": per_vcpu, "guestMemoryPercent": pct}}})
        });
    prop_oneof![8 => valid, 1 => arb_json(), 1 => Just(json!({}))]
}

/// A capable node; every other one also advertises the KVM device (mixed mode needs both).
pub fn node(i: usize) -> Value {
    let mut allocatable = json!({"devices.kubevirt.io/mshv": "1000"});
    if i % 2 == 1 {
        allocatable["devices.kubevirt.io/kvm"] = json!("1k");
    }
    json!({"metadata": {"name": format!("n{i}"), "labels": {"mshv.node.hyperv-layered.io/capable": "true"}},
           "status": {"conditions": [{"type": "Ready", "status": "True"}],
                      "allocatable": allocatable}})
}

pub fn arb_reply() -> impl Strategy<Value = Result<Vec<u8>, String>> {
    prop_oneof![
        Just(Err("the server could not find the requested resource".to_string())),
        Just(Ok(b"{\"items\":[]}".to_vec())),
        Just(Ok(b"not json".to_vec())),
        Just(Ok(Vec::new())),
        (0usize..3000).prop_map(|n| Ok(json!({"items": (0..n).map(node).collect::<Vec<_>>()}).to_string().into_bytes())),
        // KubeVirt CRs (a GET reply: the object itself).
        Just(Ok(json!({"spec": {"configuration": {"developerConfiguration": {"featureGates": ["HyperVLayered"]}}}}).to_string().into_bytes())),
        Just(Ok(json!({"spec": {"configuration": {"developerConfiguration": {"featureGates": ["ConfigurableHypervisor"]},
            "hypervisors": [{"name": "hyperv-direct"}], "additionalGuestMemoryOverheadRatio": "1.5"}}}).to_string().into_bytes())),
        Just(Ok(json!({"spec": {"configuration": {"developerConfiguration": {"featureGates": ["HyperVLayered"]},
            "additionalGuestMemoryOverheadRatio": "not a float"}}}).to_string().into_bytes())),
        Just(Ok(fixture("vmi-testvm.json").to_string().into_bytes())),
        arb_json().prop_map(|v| Ok(v.to_string().into_bytes())),
        arb_json().prop_map(|v| Ok(json!({"items": [v]}).to_string().into_bytes())),
    ]
}

/// An admission request from one of the fixtures, with up to four random edits (a field
/// removed, retyped or enlarged), half of them from the trusted creator.
pub fn arb_request() -> impl Strategy<Value = Value> {
    let bases: Vec<Value> = FIXTURES.iter().map(|f| fixture(f)).collect();
    let n = bases.len();
    (
        0..n,
        prop::collection::vec((any::<prop::sample::Index>(), arb_edit()), 0..4),
        any::<bool>(),
    )
        .prop_map(move |(which, edits, trusted)| {
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
            request
        })
}

/// A proptest runner for `PROPTEST_CASES` cases (else `default_cases`), no persistence files.
pub fn runner(default_cases: u32) -> proptest::test_runner::TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })
}
