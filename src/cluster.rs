//! Cluster lookups: the fixed host-call requests and the parsing of their replies.
//!
//! policy-server keeps one watch-backed cache per distinct list request (kind + selectors +
//! field masks), so every request here is a constant (per namespace for Pods): no per-VMI
//! selector ever reaches the host. `field_masks` keep only what the decision reads, which keeps
//! both the host's cache and the payload copied into the guest small.

use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    GetResourceRequest, ListAllResourcesRequest, ListResourcesByNamespaceRequest,
};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::choice::{HYPERVISOR_KEY, Hypervisor};
use crate::decision_log::DecisionLog;
use crate::host_text::{MAX_CAUSE, one_line};
use crate::launcher::{APP_LABEL, CREATED_BY_LABEL, LAUNCHER_APP, MIGRATION_JOB_LABEL};
use crate::quantity;
use crate::settings::Settings;

/// The waPC host seam: one call of namespace `kubernetes` of binding `kubewarden`, and the
/// policy's log records. In wasm it is `wapc_guest::host_call` and the SDK's log drain; tests
/// and benchmarks replay recorded answers.
pub trait Host {
    fn call(&self, operation: &str, request: &[u8]) -> Result<Vec<u8>, String>;
    /// One decision record for the host's log stream (policy-server's own log).
    fn log(&self, _record: &DecisionLog) {}
}

/// policy-server's host calls.
pub struct WapcHost;

impl Host for WapcHost {
    fn call(&self, operation: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        wapc_guest::host_call("kubewarden", "kubernetes", operation, request)
            .map_err(|e| e.to_string())
    }

    fn log(&self, record: &DecisionLog) {
        record.emit_to_host();
    }
}

/// A failed lookup: what was asked and what went wrong, for messages and warnings. The cause
/// is cut to one bounded line: it may be a host's stack trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} failed: {}", one_line(cause, MAX_CAUSE))]
pub struct LookupError {
    pub what: String,
    pub cause: String,
}

/// What the node scan reads. Labels are not listed because they need not be: policy-server's
/// field masks prune only `spec` and `status` and always return each Node's whole `metadata`
/// (labels and annotations included: on 1000 AKS-shaped nodes that is most of a 2.5 MB reply),
/// and the label the scan checks is also the list's label selector. `metadata.name` is listed
/// for readers of this mask, not because it changes the reply.
pub const NODE_FIELD_MASKS: [&str; 4] = [
    "metadata.name",
    "spec.unschedulable",
    "status.allocatable",
    "status.conditions",
];
pub const KUBEVIRT_FIELD_MASKS: [&str; 2] = ["spec.configuration", "status.phase"];
pub const LAUNCHER_POD_FIELD_MASKS: [&str; 3] = [
    "spec.containers.name",
    "spec.containers.resources",
    "status.phase",
];

fn masks(m: &[&str]) -> Option<BTreeSet<String>> {
    Some(m.iter().map(|s| s.to_string()).collect())
}

fn call<T: serde::de::DeserializeOwned>(
    host: &dyn Host,
    what: impl Fn() -> String,
    operation: &str,
    request: &impl serde::Serialize,
) -> Result<T, LookupError> {
    let err = |cause: String| LookupError {
        what: what(),
        cause,
    };
    let body = serde_json::to_vec(request).map_err(|e| err(e.to_string()))?;
    let reply = host.call(operation, &body).map_err(err)?;
    serde_json::from_slice(&reply).map_err(|e| err(format!("unreadable reply: {e}")))
}

// ---- Nodes -------------------------------------------------------------------------------

/// Only the fields `is_capable` reads; serde skips the rest of each Node. Strings borrow from
/// the reply (no copies unless they contain escapes): the scan runs on every launcher admission.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct Node<'a> {
    #[serde(borrow)]
    pub metadata: NodeMeta<'a>,
    pub spec: NodeSpec,
    #[serde(borrow)]
    pub status: NodeStatus<'a>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct NodeMeta<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub labels: Pairs<'a>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct NodeSpec {
    pub unschedulable: bool,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct NodeStatus<'a> {
    #[serde(borrow)]
    pub allocatable: Pairs<'a>,
    #[serde(borrow)]
    pub conditions: Vec<Condition<'a>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct Condition<'a> {
    #[serde(borrow, rename = "type")]
    pub type_: Cow<'a, str>,
    #[serde(borrow)]
    pub status: Cow<'a, str>,
}

/// A string-to-string JSON object (labels, allocatable) kept as the list of its entries: a
/// node has a few dozen, and the scan looks up one key, so a map would only cost inserts.
#[derive(Debug, Default)]
pub struct Pairs<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl Pairs<'_> {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Pairs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Pairs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs<'a>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<Borrowed<'a>, Borrowed<'a>>()? {
                    out.push((entry.0.0, entry.1.0));
                }
                Ok(Pairs(out))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Pairs<'a>, E> {
                Ok(Pairs::default()) // null
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A string borrowed from the input when it has no escapes (serde's `Cow<str>` alone always
/// copies; `#[serde(borrow)]` is what makes it borrow, and tuples cannot carry the attribute).
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize, Default)]
#[serde(default)]
struct List<T> {
    items: Vec<T>,
}

/// A node counts when the agent verified it, it is Ready and schedulable and, with
/// `requireAllocatable`, its device plugin advertises the mshv device. In mixed mode it must
/// also advertise the KVM device: the switched launcher keeps requesting it.
pub fn is_capable(node: &Node, settings: &Settings) -> bool {
    let labelled = node.metadata.labels.get(&settings.node_label) == Some("true");
    let ready = node
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let advertises = |resource: &str| {
        node.status
            .allocatable
            .get(resource)
            .and_then(|q| quantity::parse(q).ok())
            .is_some_and(|q| q.is_positive())
    };
    let allocatable = !settings.require_allocatable || advertises(&settings.device_resource);
    let kvm = !settings.mixed_mode || advertises(&settings.kvm_device_resource);
    labelled && ready && !node.spec.unschedulable && allocatable && kvm
}

/// The first capable node's name, or `None`. One fixed request per policy: `<nodeLabel>=true`.
///
/// The decision needs one capable node, not all of them, so the reply is read only up to the
/// first one: with a thousand labelled nodes the guest would otherwise build a thousand Node
/// structs (megabytes of JSON) on every launcher admission. The rest of the reply, already
/// validated by the host that serialised it, is not read.
pub fn first_capable_node(
    host: &dyn Host,
    settings: &Settings,
) -> Result<Option<String>, LookupError> {
    let what = || format!("listing Nodes labelled {}=true", settings.node_label);
    let req = ListAllResourcesRequest {
        api_version: "v1".to_string(),
        kind: "Node".to_string(),
        label_selector: Some(format!("{}=true", settings.node_label)),
        field_selector: None,
        field_masks: masks(&NODE_FIELD_MASKS),
    };
    let body = serde_json::to_vec(&req).map_err(|e| LookupError {
        what: what(),
        cause: e.to_string(),
    })?;
    let reply = host
        .call("list_resources_all", &body)
        .map_err(|cause| LookupError {
            what: what(),
            cause,
        })?;
    scan_nodes(&reply, settings).map_err(|e| LookupError {
        what: what(),
        cause: format!("unreadable reply: {e}"),
    })
}

/// Reads `{"items": [Node, ...], ...}` until a capable node is found.
fn scan_nodes(reply: &[u8], settings: &Settings) -> Result<Option<String>, serde_json::Error> {
    use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess};

    struct Scan<'s> {
        settings: &'s Settings,
        found: Option<String>,
    }

    impl<'de> de::Visitor<'de> for &mut Scan<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a NodeList")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<str>>()? {
                if key == "items" {
                    map.next_value_seed(&mut *self)?;
                    if self.found.is_some() {
                        return Ok(());
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(node) = seq.next_element::<Node>()? {
                if is_capable(&node, self.settings) {
                    self.found = Some(node.metadata.name.into_owned());
                    return Ok(());
                }
            }
            Ok(())
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(()) // "items": null
        }
    }

    impl<'de> DeserializeSeed<'de> for &mut Scan<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    let mut scan = Scan {
        settings,
        found: None,
    };
    let mut de = serde_json::Deserializer::from_slice(reply);
    let read = de.deserialize_map(&mut scan).and_then(|()| de.end());
    match (scan.found, read) {
        // Stopping early leaves the JSON unfinished, which serde_json reports: the answer
        // is already known, so that report is not an error.
        (Some(name), _) => Ok(Some(name)),
        (None, Ok(())) => Ok(None),
        (None, Err(e)) => Err(e),
    }
}

// ---- KubeVirt CR ---------------------------------------------------------------------------

/// The KubeVirt CR named in `gate.kubevirt`, read with an uncached GET.
///
/// A GET, not a LIST: policy-server answers a LIST from a watch-backed cache whose first LIST
/// it waits for without a deadline, and a LIST the API server refuses (403 when the RBAC of
/// deploy/policy-rbac.yaml is missing, 404/500) is retried forever while the admission request
/// holds a policy-server worker (docs/policy-server-lookup-hang.md). A GET fails fast with the
/// API server's answer, so a misconfigured cluster gives `lookup-error` at once. Uncached,
/// because policy-server serializes cached GETs behind the slowest one. A CR that is not there
/// is the API server's 404, an error like any other: there is no "not installed" answer.
pub fn kubevirt_cr(host: &dyn Host, settings: &Settings) -> Result<Value, LookupError> {
    let kv = &settings.gate.kubevirt;
    let req = GetResourceRequest {
        api_version: "kubevirt.io/v1".to_string(),
        kind: "KubeVirt".to_string(),
        name: kv.name.clone(),
        namespace: Some(kv.namespace.clone()),
        disable_cache: true,
        field_masks: masks(&KUBEVIRT_FIELD_MASKS),
    };
    let what = || format!("reading KubeVirt {}/{}", kv.namespace, kv.name);
    let cr: Value = call(host, what, "get_resource", &req)?;
    if !cr.is_object() {
        return Err(LookupError {
            what: what(),
            cause: "the reply is not an object".to_string(),
        });
    }
    Ok(cr)
}

// ---- VMI ---------------------------------------------------------------------------------

/// The launcher's VMI, for its CPU, memory and eviction spec. Uncached: policy-server serializes cached
/// GETs behind the slowest one (docs/policy-server-lookup-hang.md), and a launcher is created
/// once per VM start, so the cache would rarely be hit anyway.
pub fn vmi(host: &dyn Host, namespace: &str, name: &str) -> Result<Value, LookupError> {
    let req = GetResourceRequest {
        api_version: "kubevirt.io/v1".to_string(),
        kind: "VirtualMachineInstance".to_string(),
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
        disable_cache: true,
        field_masks: None,
    };
    let vmi: Value = call(
        host,
        || format!("reading VirtualMachineInstance {namespace}/{name}"),
        "get_resource",
        &req,
    )?;
    if !vmi.is_object() {
        return Err(LookupError {
            what: format!("reading VirtualMachineInstance {namespace}/{name}"),
            cause: "the reply is not an object".to_string(),
        });
    }
    Ok(vmi)
}

// ---- Migration source --------------------------------------------------------------------

/// The hypervisor the running source launcher of a migration uses, or `None` when it cannot be
/// told (no running source, or several that disagree).
///
/// Lists launcher Pods of the namespace with the fixed selector `kubevirt.io=virt-launcher`
/// (one host cache per namespace, never one per VMI) and keeps the running Pods of the same VMI
/// that are not this migration's target.
pub fn migration_source(
    host: &dyn Host,
    settings: &Settings,
    namespace: &str,
    vmi_uid: &str,
    migration_job: &str,
) -> Result<Option<Hypervisor>, LookupError> {
    let req = ListResourcesByNamespaceRequest {
        api_version: "v1".to_string(),
        kind: "Pod".to_string(),
        namespace: namespace.to_string(),
        label_selector: Some(format!("{APP_LABEL}={LAUNCHER_APP}")),
        field_selector: None,
        field_masks: masks(&LAUNCHER_POD_FIELD_MASKS),
    };
    let list: List<Value> = call(
        host,
        || format!("listing launcher Pods in namespace {namespace}"),
        "list_resources_by_namespace",
        &req,
    )?;
    let label = |p: &Value, k: &str| {
        p.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut found: Option<Hypervisor> = None;
    for pod in &list.items {
        let same_vmi = label(pod, CREATED_BY_LABEL).as_deref() == Some(vmi_uid);
        let this_target = label(pod, MIGRATION_JOB_LABEL).as_deref() == Some(migration_job);
        let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
        if !same_vmi || this_target || !running {
            continue;
        }
        let hv = pod_hypervisor(pod, settings);
        match found {
            None => found = Some(hv),
            Some(prev) if prev != hv => return Ok(None),
            Some(_) => {}
        }
    }
    Ok(found)
}

/// A Pod's hypervisor: our record when present, else the device its compute container holds.
fn pod_hypervisor(pod: &Value, settings: &Settings) -> Hypervisor {
    let recorded = pod
        .pointer("/metadata/labels")
        .and_then(|l| l.get(HYPERVISOR_KEY))
        .and_then(Value::as_str);
    if let Some(h) = recorded.and_then(Hypervisor::from_name) {
        return h;
    }
    let holds_mshv = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("name").and_then(Value::as_str) == Some("compute"))
        .any(|c| {
            ["limits", "requests"].iter().any(|m| {
                c.pointer(&format!("/resources/{m}"))
                    .and_then(Value::as_object)
                    .is_some_and(|r| r.contains_key(&settings.device_resource))
            })
        });
    if holds_mshv {
        Hypervisor::Mshv
    } else {
        Hypervisor::Kvm
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted host for unit tests: answers by operation, records every request and log.
    use super::Host;
    use crate::decision_log::DecisionLog;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct FakeHost {
        pub answers: HashMap<String, Result<String, String>>,
        pub calls: RefCell<Vec<(String, serde_json::Value)>>,
        pub logs: RefCell<Vec<DecisionLog>>,
    }

    impl FakeHost {
        pub fn with(mut self, key: &str, answer: Result<serde_json::Value, &str>) -> Self {
            self.answers.insert(
                key.to_string(),
                answer.map(|v| v.to_string()).map_err(str::to_string),
            );
            self
        }

        pub fn kinds(&self) -> Vec<String> {
            self.calls.borrow().iter().map(|(k, _)| k.clone()).collect()
        }
    }

    impl Host for FakeHost {
        fn call(&self, operation: &str, request: &[u8]) -> Result<Vec<u8>, String> {
            let req: serde_json::Value =
                serde_json::from_slice(request).map_err(|e| e.to_string())?;
            let kind = req["kind"].as_str().unwrap_or_default().to_string();
            self.calls.borrow_mut().push((kind.clone(), req));
            let key = format!("{operation}/{kind}");
            match self.answers.get(&key) {
                Some(Ok(s)) => Ok(s.clone().into_bytes()),
                Some(Err(e)) => Err(e.clone()),
                None => Err(format!("unexpected host call {key}")),
            }
        }

        fn log(&self, record: &DecisionLog) {
            self.logs.borrow_mut().push(record.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;
    use serde_json::json;

    pub fn node(name: &str, ready: &str, unschedulable: bool, alloc: Option<&str>) -> Value {
        let mut allocatable = json!({"cpu": "8", "memory": "32Gi"});
        if let Some(a) = alloc {
            allocatable["devices.kubevirt.io/mshv"] = json!(a);
        }
        json!({"metadata": {"name": name, "labels": {"mshv.node.hyperv-layered.io/capable": "true"}},
               "spec": {"unschedulable": unschedulable},
               "status": {"allocatable": allocatable,
                          "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]}})
    }

    fn nodes_reply(nodes: Vec<Value>) -> FakeHost {
        FakeHost::default().with("list_resources_all/Node", Ok(json!({"items": nodes})))
    }

    #[test]
    fn node_rules_and_the_fixed_request() {
        let s = Settings::default();
        let relaxed = Settings {
            require_allocatable: false,
            ..Settings::default()
        };
        let unlabelled = json!({"metadata": {"name": "unlabelled"}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"devices.kubevirt.io/mshv": "1k"}}});
        let cases = [
            (node("ok", "True", false, Some("1000")), true, true),
            (node("k", "True", false, Some("1k")), true, true),
            (node("notready", "False", false, Some("1000")), false, false),
            (node("cordoned", "True", true, Some("1000")), false, false),
            (node("noalloc", "True", false, Some("0")), false, true),
            (node("garbage", "True", false, Some("lots")), false, true),
            (node("missing", "True", false, None), false, true),
            (unlabelled, false, false),
        ];
        for (n, strict, loose) in cases {
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            let want = |b: bool| b.then(|| name.clone());
            let host = nodes_reply(vec![n.clone()]);
            assert_eq!(
                first_capable_node(&host, &s).unwrap(),
                want(strict),
                "{name}"
            );
            assert_eq!(
                first_capable_node(&host, &relaxed).unwrap(),
                want(loose),
                "{name} relaxed"
            );
        }
        let host = nodes_reply(vec![]);
        assert_eq!(first_capable_node(&host, &s).unwrap(), None);
        assert_eq!(
            host.calls.borrow()[0].1,
            json!({"api_version": "v1", "kind": "Node",
                "label_selector": "mshv.node.hyperv-layered.io/capable=true", "field_selector": null,
                "field_masks": ["metadata.name", "spec.unschedulable", "status.allocatable", "status.conditions"]})
        );
    }

    #[test]
    fn mixed_mode_also_needs_the_kvm_device() {
        let mixed = Settings {
            mixed_mode: true,
            launcher_images: vec!["r.io/l".into()],
            ..Settings::default()
        };
        let mut both = node("both", "True", false, Some("1000"));
        both["status"]["allocatable"]["devices.kubevirt.io/kvm"] = json!("1k");
        let mut no_kvm = node("no-kvm", "True", false, Some("1000"));
        no_kvm["status"]["allocatable"]["devices.kubevirt.io/kvm"] = json!("0");
        let mshv_only = node("mshv-only", "True", false, Some("1000"));
        for (n, want) in [(both, true), (no_kvm, false), (mshv_only, false)] {
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            let host = nodes_reply(vec![n]);
            let got = first_capable_node(&host, &mixed).unwrap();
            assert_eq!(got.is_some(), want, "{name}");
            // Outside mixed mode the KVM device does not matter.
            let host2 = nodes_reply(vec![node(&name, "True", false, Some("1000"))]);
            assert!(
                first_capable_node(&host2, &Settings::default())
                    .unwrap()
                    .is_some()
            );
        }
    }

    #[test]
    fn node_scan_stops_at_the_first_capable_node() {
        let s = Settings::default();
        let list =
            |items: &str| format!(r#"{{"kind":"NodeList","metadata":{{}},"items":[{items}]}}"#);
        let ok = node("ok", "True", false, Some("1000")).to_string();
        let bad = node("bad", "False", false, Some("1000")).to_string();
        // Found after skipping a non-capable node; what follows it is never read.
        let reply = list(&format!("{bad},{ok},this is not JSON"));
        assert_eq!(
            scan_nodes(reply.as_bytes(), &s).unwrap().as_deref(),
            Some("ok")
        );
        // Without a capable node the whole reply must be valid.
        assert!(scan_nodes(list(&format!("{bad},oops")).as_bytes(), &s).is_err());
        assert!(scan_nodes(format!("{} trailing", list(&bad)).as_bytes(), &s).is_err());
        assert_eq!(scan_nodes(list(&bad).as_bytes(), &s).unwrap(), None);
        assert_eq!(scan_nodes(br#"{"items":null}"#, &s).unwrap(), None);
        assert_eq!(scan_nodes(br#"{}"#, &s).unwrap(), None);
        for garbage in [
            &b""[..],
            b"[]",
            b"\"x\"",
            b"{\"items\":5}",
            b"{\"items\":[5]}",
        ] {
            assert!(
                scan_nodes(garbage, &s).is_err(),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn node_fields_with_json_escapes_are_read_like_plain_ones() {
        let s = Settings::default();
        // Escaped `/` and unicode escapes make serde copy instead of borrow: same answer.
        let reply = br#"{"items":[{"metadata":{"name":"n\u0031","labels":{"mshv.node.hyperv-layered.io\/capable":"tru\u0065"}},
            "status":{"allocatable":{"devices.kubevirt.io\/mshv":"1\u0030"},
                      "conditions":[{"type":"Re\u0061dy","status":"True"}]}}]}"#;
        assert_eq!(scan_nodes(reply, &s).unwrap().as_deref(), Some("n1"));
        // Labels or allocatable that are not objects of strings make the reply unreadable.
        for bad in [
            r#"{"items":[{"metadata":{"name":"n","labels":{"a":1}}}]}"#,
            r#"{"items":[{"metadata":{"name":"n","labels":["a"]}}]}"#,
            r#"{"items":[{"metadata":{"name":"n"},"status":{"allocatable":{"x":true}}}]}"#,
        ] {
            assert!(scan_nodes(bad.as_bytes(), &s).is_err(), "{bad}");
        }
        let null_labels = br#"{"items":[{"metadata":{"name":"n","labels":null}}]}"#;
        assert_eq!(scan_nodes(null_labels, &s).unwrap(), None);
    }

    #[test]
    fn lookup_error_text_is_one_bounded_line() {
        let e = LookupError {
            what: "listing Nodes".into(),
            cause: format!("{}\nbacktrace", "x".repeat(1000)),
        };
        let shown = e.to_string();
        assert!(!shown.contains('\n') && shown.len() < 260, "{shown}");
    }

    #[test]
    fn lookup_errors_carry_context() {
        let host = FakeHost::default()
            .with("list_resources_all/Node", Err("forbidden"))
            .with("get_resource/KubeVirt", Ok(json!("garbage")));
        let e = first_capable_node(&host, &Settings::default()).unwrap_err();
        assert!(e.to_string().contains("listing Nodes"), "{e}");
        assert!(e.to_string().contains("forbidden"), "{e}");
        let e = kubevirt_cr(&host, &Settings::default()).unwrap_err();
        assert!(e.to_string().contains("not an object"), "{e}");
    }

    #[test]
    fn kubevirt_cr_is_an_uncached_get_of_the_named_cr() {
        let host = FakeHost::default().with(
            "get_resource/KubeVirt",
            Ok(json!({"metadata": {"name": "kubevirt"}, "status": {"phase": "Deployed"}})),
        );
        let kv = kubevirt_cr(&host, &Settings::default()).unwrap();
        assert_eq!(kv["metadata"]["name"], "kubevirt");
        assert_eq!(
            host.calls.borrow()[0].1,
            json!({"api_version": "kubevirt.io/v1", "kind": "KubeVirt", "name": "kubevirt",
                   "namespace": "kubevirt", "disable_cache": true,
                   "field_masks": ["spec.configuration", "status.phase"]})
        );
        let mut s = Settings::default();
        s.gate.kubevirt.namespace = "openshift-cnv".into();
        s.gate.kubevirt.name = "kubevirt-kubevirt-hyperconverged".into();
        let host = FakeHost::default().with("get_resource/KubeVirt", Err("not found"));
        let e = kubevirt_cr(&host, &s).unwrap_err();
        assert!(
            e.to_string()
                .contains("reading KubeVirt openshift-cnv/kubevirt-kubevirt-hyperconverged"),
            "{e}"
        );
        let host = FakeHost::default().with("get_resource/KubeVirt", Ok(json!([1])));
        assert!(kubevirt_cr(&host, &s).is_err());
    }

    fn pod(uid: &str, job: Option<&str>, phase: &str, device: &str, record: Option<&str>) -> Value {
        let mut labels = json!({"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": uid});
        if let Some(j) = job {
            labels["kubevirt.io/migrationJobUID"] = json!(j);
        }
        if let Some(r) = record {
            labels["hyperv-layered.io/hypervisor"] = json!(r);
        }
        json!({"metadata": {"labels": labels},
               "spec": {"containers": [{"name": "compute", "resources": {"limits": {device: "1"}}}]},
               "status": {"phase": phase}})
    }

    #[test]
    fn migration_source_is_the_running_pod_of_the_vmi() {
        let s = Settings::default();
        let answer = |items: Vec<Value>| {
            FakeHost::default().with(
                "list_resources_by_namespace/Pod",
                Ok(json!({ "items": items })),
            )
        };
        let mshv = "devices.kubevirt.io/mshv";
        let kvm = "devices.kubevirt.io/kvm";
        let h = answer(vec![
            pod("u1", None, "Running", mshv, None),
            pod("u1", Some("job"), "Pending", kvm, None),
            pod("u2", None, "Running", kvm, None),
            pod("u1", Some("old"), "Failed", kvm, None),
        ]);
        assert_eq!(
            migration_source(&h, &s, "ns", "u1", "job").unwrap(),
            Some(Hypervisor::Mshv)
        );
        assert_eq!(
            h.calls.borrow()[0].1,
            json!({"api_version": "v1", "kind": "Pod", "namespace": "ns",
                "label_selector": "kubevirt.io=virt-launcher", "field_selector": null,
                "field_masks": ["spec.containers.name", "spec.containers.resources", "status.phase"]})
        );
        // A previous migration's target is today's source; our record wins over devices.
        let h = answer(vec![pod("u1", Some("old"), "Running", mshv, Some("kvm"))]);
        assert_eq!(
            migration_source(&h, &s, "ns", "u1", "job").unwrap(),
            Some(Hypervisor::Kvm)
        );
        let h = answer(vec![pod("u1", Some("job"), "Running", mshv, None)]);
        assert_eq!(migration_source(&h, &s, "ns", "u1", "job").unwrap(), None);
        let h = answer(vec![
            pod("u1", None, "Running", mshv, None),
            pod("u1", Some("x"), "Running", kvm, None),
        ]);
        assert_eq!(migration_source(&h, &s, "ns", "u1", "job").unwrap(), None);
    }

    #[test]
    fn vmi_lookup_is_an_uncached_get() {
        let host = FakeHost::default().with(
            "get_resource/VirtualMachineInstance",
            Ok(json!({"metadata": {"name": "vm"}})),
        );
        assert!(vmi(&host, "ns", "vm").is_ok());
        assert_eq!(
            host.calls.borrow()[0].1,
            json!({"api_version": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "vm",
                   "namespace": "ns", "disable_cache": true, "field_masks": null})
        );
        let host = FakeHost::default().with("get_resource/VirtualMachineInstance", Ok(json!(null)));
        assert!(vmi(&host, "ns", "vm").is_err());
    }
}
