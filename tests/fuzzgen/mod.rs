//! Input generators shared by the native fuzzer (tests/fuzz.rs) and the wasm fuzzer
//! (tests/fuzz_wasm.rs): the same strategies drive both.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Value, json};

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub const FIXTURES: [&str; 17] = [
    "launcher-v1.8-kvm.json",
    "launcher-main-kvm.json",
    "launcher-main-migration-target.json",
    "launcher-dedicated-gpu.json",
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
        prop_oneof![
            Just(json!(["LiveMigrate"])),
            Just(json!([])),
            Just(json!(["LiveMigrate", "LiveMigrateIfPossible", "External"])),
            Just(json!(["None"])),
        ],
    )
        .prop_map(|(mode, per_pod, alloc, on_err, fixed, per_vcpu, pct, mixed, images, keep)| {
            json!({"gate": {"mode": mode}, "perPodHypervisor": per_pod, "requireAllocatable": alloc,
                   "onLookupError": on_err, "mixedMode": mixed, "launcherImages": images,
                   "memoryOverhead": {"mshv": {"fixed": fixed, "perVcpu": per_vcpu, "guestMemoryPercent": pct}},
                   "liveMigration": {"keepOnKvm": keep}})
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
        // VMIs with each eviction strategy (and one KubeVirt does not define).
        prop_oneof![Just("LiveMigrate"), Just("LiveMigrateIfPossible"), Just("External"), Just("None"), Just("Sometimes")]
            .prop_map(|e| {
                let mut vmi = fixture("vmi-testvm.json");
                vmi["spec"]["evictionStrategy"] = json!(e);
                Ok(vmi.to_string().into_bytes())
            }),
        arb_json().prop_map(|v| Ok(v.to_string().into_bytes())),
        arb_json().prop_map(|v| Ok(json!({"items": [v]}).to_string().into_bytes())),
    ]
}

/// How a compute container's command line is laid out: KubeVirt v1.8/v1.9 (every flag in
/// `command`), main (only the monitor in `command`), the joined form, fork builds (no flag), and
/// the layouts the policy must refuse (the flag twice or in both lists, without a value, with an
/// unknown value, behind a wrapper entrypoint).
pub const LAYOUTS: [&str; 11] = [
    "as-is",
    "v19-command",
    "main-args",
    "joined-args",
    "joined-command",
    "fork",
    "both-lists",
    "twice-in-args",
    "no-value",
    "odd-value",
    "wrapper",
];

/// Rewrites the compute container (`spec.containers[0]` in every fixture) to `layout`, keeping
/// its `--hypervisor` value; Pods without such a container are left alone.
pub fn set_layout(request: &mut Value, layout: &str) {
    let Some(c) = request.pointer_mut("/object/spec/containers/0") else {
        return;
    };
    let mut flags: Vec<Value> = c["command"]
        .as_array()
        .map(|a| a.iter().skip(1).cloned().collect())
        .unwrap_or_default();
    flags.extend(c["args"].as_array().cloned().unwrap_or_default());
    let pos = flags.iter().position(|f| f == "--hypervisor");
    let value = pos
        .and_then(|i| flags.get(i + 1))
        .cloned()
        .unwrap_or(json!("kvm"));
    if let Some(i) = pos {
        flags.drain(i..(i + 2).min(flags.len()));
    }
    let monitor = json!("/usr/bin/virt-launcher-monitor");
    let with = |extra: Vec<Value>| {
        let mut f = flags.clone();
        f.extend(extra);
        Value::Array(f)
    };
    let flag = json!("--hypervisor");
    let joined = json!(format!(
        "--hypervisor={}",
        value.as_str().unwrap_or_default()
    ));
    let (command, args) = match layout {
        "v19-command" => {
            let mut cmd = vec![monitor];
            cmd.extend(
                with(vec![flag, value])
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            (Value::Array(cmd), Value::Null)
        }
        "main-args" => (json!([monitor]), with(vec![flag, value])),
        "joined-args" => (json!([monitor]), with(vec![joined])),
        "joined-command" => (json!([monitor, joined]), with(vec![])),
        "fork" => (json!([monitor]), with(vec![])),
        "both-lists" => (
            json!([monitor, flag.clone(), value.clone()]),
            with(vec![flag, value]),
        ),
        "twice-in-args" => (json!([monitor]), with(vec![flag, value, joined])),
        "no-value" => (json!([monitor]), with(vec![flag])),
        "odd-value" => (json!([monitor]), with(vec![flag, json!("xen")])),
        "wrapper" => (
            json!(["/bin/sh", "-c", "exec virt-launcher-monitor \"$@\""]),
            with(vec![flag, value]),
        ),
        _ => return,
    };
    c["command"] = command;
    match args {
        Value::Null => {
            if let Some(o) = c.as_object_mut() {
                o.remove("args");
            }
        }
        a => c["args"] = a,
    }
}

/// An admission request from one of the fixtures, in one of the [`LAYOUTS`], with up to four
/// random edits (a field removed, retyped or enlarged), half of them from the trusted creator.
pub fn arb_request() -> impl Strategy<Value = Value> {
    let bases: Vec<Value> = FIXTURES.iter().map(|f| fixture(f)).collect();
    let n = bases.len();
    (
        0..n,
        0..LAYOUTS.len() * 2,
        prop::collection::vec((any::<prop::sample::Index>(), arb_edit()), 0..4),
        any::<bool>(),
    )
        .prop_map(move |(which, layout, edits, trusted)| {
            let mut request = bases[which].clone();
            // Half the requests keep the fixture's own layout.
            set_layout(
                &mut request,
                LAYOUTS.get(layout).copied().unwrap_or("as-is"),
            );
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
