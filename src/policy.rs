//! One admission request, end to end: recognise, decide, apply the decision, answer.
//!
//! The entry point never fails and never panics: whatever the payload, it answers with a
//! well-formed `ValidationResponse`. Anything it cannot make sense of is accepted unchanged
//! (with a warning when the cause is worth telling), because this policy only ever improves
//! placement: blocking a VM because of it would be worse than running it on KVM.

use kubewarden_policy_sdk::response::ValidationResponse;
use kubewarden_policy_sdk::settings::SettingsValidationResponse;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use crate::apply::apply_decision;
use crate::choice::{Hypervisor, Reason};
use crate::cluster::Host;
use crate::decision::{self, Seen, Verdict};
use crate::decision_log::{self, DecisionLog, Level};
use crate::facts::{CountingHost, HostFacts};
use crate::host_text;
use crate::launcher::{self, Launcher};
use crate::pod_doc::PodDoc;
use crate::settings::{GateMode, Settings, SettingsError};

/// Only what the first checks need; the object stays raw until the Pod may be a launcher.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    request: RequestHead<'a>,
    #[serde(borrow, default)]
    settings: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RequestHead<'a> {
    #[serde(borrow, default)]
    operation: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: KindHead<'a>,
    #[serde(borrow, default, rename = "userInfo")]
    user_info: UserHead<'a>,
    #[serde(borrow, default)]
    namespace: Cow<'a, str>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct KindHead<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct UserHead<'a> {
    #[serde(borrow, default)]
    username: Cow<'a, str>,
}

/// The answer to one request, before it is written out: a `ValidationResponse` whose mutated
/// object is still the overlay of the request's Pod text.
pub(crate) struct Answer<'a> {
    pub(crate) accepted: bool,
    pub(crate) message: Option<String>,
    pub(crate) code: Option<u16>,
    pub(crate) mutated: Option<PodDoc<'a>>,
    pub(crate) warnings: Option<Vec<String>>,
    /// The choice written on the Pod, for the log (not part of the response).
    pub(crate) choice: Option<(Hypervisor, Reason)>,
}

/// The `ValidationResponse` wire form: the SDK type's fields, in its order, with the mutated
/// object serialized from the overlay (raw parts of the Pod go out as the request's text).
#[derive(Serialize)]
struct WireResponse<'r, 'a> {
    accepted: bool,
    message: &'r Option<String>,
    code: Option<u16>,
    mutated_object: Option<&'r PodDoc<'a>>,
    audit_annotations: Option<()>,
    warnings: &'r Option<Vec<String>>,
}

impl Answer<'_> {
    fn wire(&self) -> WireResponse<'_, '_> {
        WireResponse {
            accepted: self.accepted,
            message: &self.message,
            code: self.code,
            mutated_object: self.mutated.as_ref(),
            audit_annotations: None,
            warnings: &self.warnings,
        }
    }
}

/// Longest warning or rejection message: each is one line, so that no text from the host or
/// the VMI (a stack trace, a huge value) lands in virt-controller's events and logs.
const MAX_MESSAGE: usize = 512;

pub(crate) fn accept<'a>(warnings: Vec<String>) -> Answer<'a> {
    let warnings: Vec<String> = warnings
        .iter()
        .map(|w| host_text::one_line(w, MAX_MESSAGE))
        .collect();
    Answer {
        accepted: true,
        message: None,
        code: None,
        mutated: None,
        warnings: (!warnings.is_empty()).then_some(warnings),
        choice: None,
    }
}

pub(crate) fn reject<'a>(message: String) -> Answer<'a> {
    Answer {
        accepted: false,
        message: Some(host_text::one_line(&message, MAX_MESSAGE)),
        // 503: the cause is a transient lookup failure; virt-controller retries the creation.
        code: Some(503),
        mutated: None,
        warnings: None,
        choice: None,
    }
}

/// Evaluates one `validate` payload (`{"request": AdmissionRequest, "settings": {...}}`).
///
/// The same answer as [`evaluate_to_bytes`], as a value to inspect.
pub fn evaluate(payload: &[u8], host: &dyn Host) -> ValidationResponse {
    response(answer(payload, host, PodDoc::parse))
}

/// [`evaluate`] with the Pod parsed into one whole `Value` instead of the overlay: the oracle
/// of the differential test that holds [`PodDoc`] to its contract (tests/fuzz.rs). Not for use
/// in the guest.
#[doc(hidden)]
pub fn evaluate_whole_pod(payload: &[u8], host: &dyn Host) -> ValidationResponse {
    response(answer(payload, host, PodDoc::parse_whole))
}

fn response(a: Answer) -> ValidationResponse {
    ValidationResponse {
        accepted: a.accepted,
        message: a.message,
        code: a.code,
        // Serializing a PodDoc cannot fail: every raw part was checked when it was parsed.
        mutated_object: a.mutated.and_then(|doc| doc.to_value().ok()),
        audit_annotations: None,
        warnings: a.warnings,
    }
}

/// Evaluates one `validate` payload and writes the `ValidationResponse` JSON the guest returns:
/// the Pod's parts the policy did not touch are copied from the request as they were.
///
/// Built with the `whole-pod` feature (the benchmark's second module only), the Pod is parsed
/// whole instead of into the overlay.
pub fn evaluate_to_bytes(payload: &[u8], host: &dyn Host) -> Vec<u8> {
    let parse: ParsePod = if cfg!(feature = "whole-pod") {
        PodDoc::parse_whole
    } else {
        PodDoc::parse
    };
    let a = answer(payload, host, parse);
    // A mutated Pod is about as large as the request: size the buffer once.
    let capacity = if a.mutated.is_some() {
        payload.len() + 512
    } else {
        256
    };
    let mut out = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut out, &a.wire()) {
        Ok(()) => out,
        // Unreachable (a Vec does not fail, every key is a string); still an answer, not a trap.
        Err(e) => serde_json::to_vec(
            &accept(vec![format!(
                "hyperv-layered: cannot write the response ({e}); left unchanged"
            )])
            .wire(),
        )
        .unwrap_or_default(),
    }
}

/// How the Pod text becomes a [`PodDoc`]: the overlay, or (for the differential test) whole.
type ParsePod<'a> = fn(&'a str) -> Result<PodDoc<'a>, serde_json::Error>;

/// The checks run cheapest first: operation and kind, the gate setting, the creator; only a Pod
/// that passes them is parsed (into a [`PodDoc`]), and only a launcher makes host calls.
fn answer<'a>(payload: &'a [u8], host: &dyn Host, parse: ParsePod<'a>) -> Answer<'a> {
    let p: Payload = match serde_json::from_slice(payload) {
        Ok(p) => p,
        Err(e) => {
            return accept(vec![format!(
                "hyperv-layered: unreadable admission payload ({e}); left unchanged"
            )]);
        }
    };
    let req = p.request;
    if req.operation != "CREATE" || req.kind.kind != "Pod" || !req.kind.group.is_empty() {
        return accept(Vec::new());
    }
    let Some(raw_object) = req.object else {
        return accept(Vec::new());
    };
    let settings = match p.settings {
        None => Rc::new(Settings::default()),
        Some(raw) => match settings_from(raw.get().as_bytes()) {
            Ok(s) => s,
            Err(e) => return accept(vec![format!("hyperv-layered: {e}; left unchanged")]),
        },
    };
    if settings.gate.mode == GateMode::Disabled {
        return accept(Vec::new());
    }
    // A Pod that only looks like a launcher must never obtain /dev/mshv through this policy.
    if !settings
        .trusted_creators
        .iter()
        .any(|c| c.as_str() == req.user_info.username)
    {
        return accept(Vec::new());
    }
    // Fails where a `Value` parse of the Pod would (and for a Pod that is not an object, which
    // is never a launcher).
    let Ok(pod) = parse(raw_object.get()) else {
        return accept(Vec::new());
    };
    let Some(launcher) = launcher::recognize(&pod.view, &req.namespace, &settings) else {
        return accept(Vec::new());
    };
    let counting = CountingHost::new(host);
    let mut facts = HostFacts::new(&counting, &settings);
    let (answer, seen) = match decision::decide(&settings, &launcher, &mut facts) {
        Verdict::Unchanged => return accept(Vec::new()),
        Verdict::Reject(r) => (reject(r.message), r.seen),
        Verdict::Decided(d) => {
            let seen = d.seen;
            (
                apply_decision(pod, &launcher, &settings, d, &mut facts),
                seen,
            )
        }
    };
    host.log(&decision_log(&launcher, &answer, seen, counting.calls()));
    answer
}

/// The log record of one launcher's answer (see [`crate::decision_log`]): the gate and the
/// capable-node fact are what the decision saw ([`Seen`]); the memory step that follows reads
/// neither anew (it shares the gate's KubeVirt CR read).
fn decision_log(launcher: &Launcher, answer: &Answer, seen: Seen, host_calls: u32) -> DecisionLog {
    let capable_node_found = match seen.capable_node {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    };
    let detail = answer
        .message
        .as_deref()
        .or_else(|| {
            answer
                .warnings
                .as_ref()
                .and_then(|w| w.first())
                .map(String::as_str)
        })
        .map(|m| host_text::one_line(m, host_text::MAX_CAUSE))
        .unwrap_or_default();
    let (outcome, hypervisor, reason, hint) = match answer.choice {
        Some((hv, r)) => (
            "decided",
            hv.as_str(),
            r.as_str(),
            decision_log::hint(hv, r),
        ),
        None if !answer.accepted => (
            "rejected",
            "",
            "",
            Some("the Pod was refused (onLookupError: reject); virt-controller retries it"),
        ),
        // A Pod the policy could not edit: admitted as it came, with a warning.
        None => ("unchanged", "", "", None),
    };
    let level = if hint.is_some() || outcome == "unchanged" {
        Level::Warning
    } else {
        Level::Info
    };
    DecisionLog {
        level,
        outcome,
        namespace: launcher.namespace.clone(),
        vmi: launcher.vmi_name.clone(),
        hypervisor,
        reason,
        gate: seen.gate.as_str(),
        capable_node_found,
        host_calls,
        hint: hint.unwrap_or_default(),
        detail,
    }
}

/// `Settings::from_json`, remembered: a policy's settings are the same on every request, and
/// an instance serves one policy, so they are parsed and validated once, not per request.
fn settings_from(raw: &[u8]) -> Result<Rc<Settings>, SettingsError> {
    thread_local! {
        static LAST: RefCell<Option<(Vec<u8>, Rc<Settings>)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((text, settings)) = last.as_ref()
            && text.as_slice() == raw
        {
            return Ok(Rc::clone(settings));
        }
        let settings = Rc::new(Settings::from_json(raw)?);
        *last = Some((raw.to_vec(), Rc::clone(&settings)));
        Ok(settings)
    })
}

/// `validate_settings`: never an error, always `{valid, message}` naming the bad field.
pub fn validate_settings(raw: &[u8]) -> SettingsValidationResponse {
    match Settings::from_json(raw) {
        Ok(_) => SettingsValidationResponse {
            valid: true,
            message: None,
        },
        Err(e) => SettingsValidationResponse {
            valid: false,
            message: Some(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::FakeHost;
    use serde_json::{Value, json};

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn payload(request: &Value, settings: Value) -> Vec<u8> {
        json!({"request": request, "settings": settings})
            .to_string()
            .into_bytes()
    }

    fn capable_nodes() -> Value {
        json!({"items": [{"metadata": {"name": "n1", "labels": {"mshv.node.hyperv-layered.io/capable": "true"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"devices.kubevirt.io/mshv": "1000"}}}]})
    }

    /// Per-Pod mode without the live-migration rule (its VMI read has tests of its own).
    fn per_pod() -> Value {
        json!({"gate": {"mode": "enabled"}, "perPodHypervisor": true,
               "launcherImages": ["quay.io/kubevirt/virt-launcher"],
               "liveMigration": {"keepOnKvm": []}})
    }

    fn vmi_with(eviction: Option<&str>) -> Value {
        let mut vmi = json!({"metadata": {"name": "testvm", "namespace": "default"}, "spec": {}});
        if let Some(e) = eviction {
            vmi["spec"]["evictionStrategy"] = json!(e);
        }
        vmi
    }

    /// `liveMigration.keepOnKvm: [LiveMigrate]`: one VMI read decides, the KubeVirt
    /// CR only when the VMI sets no strategy, and a failed read follows `onLookupError`.
    #[test]
    fn live_migrate_vms_stay_on_kvm() {
        let settings = json!({"gate": {"mode": "enabled"}, "perPodHypervisor": true,
                              "launcherImages": ["quay.io/kubevirt/virt-launcher"],
                              "liveMigration": {"keepOnKvm": ["LiveMigrate"]}});
        let run = |host: &FakeHost| {
            let r = evaluate(
                &payload(&fixture("launcher-main-kvm.json"), settings.clone()),
                host,
            );
            let reason = r.mutated_object.as_ref().map(|p| {
                p["metadata"]["annotations"]["hyperv-layered.io/reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
            (reason, r.warnings.unwrap_or_default())
        };
        let vmi = |e| Ok(vmi_with(e));
        let host = FakeHost::default().with(
            "get_resource/VirtualMachineInstance",
            vmi(Some("LiveMigrate")),
        );
        assert_eq!(run(&host).0.as_deref(), Some("needs-live-migration"));
        assert_eq!(host.kinds(), ["VirtualMachineInstance"]);

        let host = FakeHost::default()
            .with(
                "get_resource/VirtualMachineInstance",
                vmi(Some("LiveMigrateIfPossible")),
            )
            .with("list_resources_all/Node", Ok(capable_nodes()));
        let (reason, warnings) = run(&host);
        assert_eq!(reason.as_deref(), Some("selected"));
        assert!(
            warnings[0].contains("LiveMigrateIfPossible") && warnings[0].contains("dirty-page"),
            "{warnings:?}"
        );
        assert_eq!(host.kinds(), ["VirtualMachineInstance", "Node"]);

        // No strategy on the VMI: the KubeVirt CR's decides.
        let host = FakeHost::default()
            .with("get_resource/VirtualMachineInstance", vmi(None))
            .with(
                "get_resource/KubeVirt",
                Ok(json!({"spec": {"configuration": {"evictionStrategy": "LiveMigrate"}}})),
            );
        assert_eq!(run(&host).0.as_deref(), Some("needs-live-migration"));
        assert_eq!(host.kinds(), ["VirtualMachineInstance", "KubeVirt"]);

        // Neither says: KubeVirt's default, None.
        let host = FakeHost::default()
            .with("get_resource/VirtualMachineInstance", vmi(None))
            .with(
                "get_resource/KubeVirt",
                Ok(json!({"spec": {"configuration": {}}})),
            )
            .with("list_resources_all/Node", Ok(capable_nodes()));
        let (reason, warnings) = run(&host);
        assert_eq!(reason.as_deref(), Some("selected"));
        assert!(warnings.is_empty(), "{warnings:?}");

        // A strategy KubeVirt does not define: KVM, with a word.
        let host = FakeHost::default().with(
            "get_resource/VirtualMachineInstance",
            vmi(Some("Sometimes")),
        );
        let (reason, warnings) = run(&host);
        assert_eq!(reason.as_deref(), Some("needs-live-migration"));
        assert!(warnings[0].contains("\"Sometimes\""), "{warnings:?}");

        // A failed read: lookup-error (fallback), or a 503 with onLookupError: reject.
        let host =
            FakeHost::default().with("get_resource/VirtualMachineInstance", Err("forbidden"));
        assert_eq!(run(&host).0.as_deref(), Some("lookup-error"));
        let mut reject = settings.clone();
        reject["onLookupError"] = json!("reject");
        let r = evaluate(&payload(&fixture("launcher-main-kvm.json"), reject), &host);
        assert_eq!((r.accepted, r.code), (false, Some(503)));
    }

    /// KubeVirt main's layout (every flag in `args`) is switched where the flag is, and a layout
    /// nobody renders is left exactly as it came, with the reason and a warning.
    #[test]
    fn main_layout_is_switched_in_args_and_unknown_layouts_are_left_alone() {
        // Mixed mode counts only nodes that also serve the KVM device.
        let mut nodes = capable_nodes();
        nodes["items"][0]["status"]["allocatable"]["devices.kubevirt.io/kvm"] = json!("1k");
        let host = FakeHost::default().with("list_resources_all/Node", Ok(nodes));
        let mixed = json!({"gate": {"mode": "enabled"}, "mixedMode": true,
                           "launcherImages": ["quay.io/kubevirt/virt-launcher"],
                           "liveMigration": {"keepOnKvm": []}});
        let r = evaluate(
            &payload(&fixture("launcher-main-kvm.json"), mixed.clone()),
            &host,
        );
        let pod = r.mutated_object.expect("a mutation");
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["command"], json!(["/usr/bin/virt-launcher-monitor"]));
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let i = args.iter().position(|a| *a == "--hypervisor").unwrap();
        assert_eq!(args[i + 1], "hyperv-direct");
        assert_eq!(c["resources"]["limits"]["devices.kubevirt.io/kvm"], "1");
        assert_eq!(c["resources"]["limits"]["devices.kubevirt.io/mshv"], "1");

        for f in [
            "launcher-layout-both-lists.json",
            "launcher-layout-wrapper.json",
        ] {
            let host = FakeHost::default();
            let req = fixture(f);
            let r = evaluate(&payload(&req, mixed.clone()), &host);
            let pod = r.mutated_object.expect("the record");
            assert_eq!(pod["spec"], req["object"]["spec"], "{f}: spec edited");
            assert_eq!(
                pod["metadata"]["labels"]["hyperv-layered.io/reason"],
                "launcher-layout-unknown"
            );
            assert_eq!(
                pod["metadata"]["labels"]["hyperv-layered.io/hypervisor"],
                "kvm"
            );
            assert!(
                r.warnings.unwrap()[0].contains("left on kvm as rendered"),
                "{f}"
            );
            assert!(host.kinds().is_empty(), "{f}: {:?}", host.kinds());
            let log = host.logs.borrow()[0].clone();
            assert_eq!(
                (log.level, log.reason),
                (Level::Warning, "launcher-layout-unknown")
            );
            assert!(!log.hint.is_empty());
        }
    }

    /// A GPU launcher with dedicated CPUs in mixed mode: incompatible-device from the Pod, no
    /// VMI read (before, a failed VMI read made it lookup-error).
    #[test]
    fn host_devices_are_decided_before_any_lookup() {
        let host = FakeHost::default().with("get_resource/VirtualMachineInstance", Err("boom"));
        let mixed = json!({"gate": {"mode": "enabled"}, "mixedMode": true,
                           "launcherImages": ["quay.io/kubevirt/virt-launcher"]});
        let r = evaluate(
            &payload(&fixture("launcher-dedicated-gpu.json"), mixed),
            &host,
        );
        let pod = r.mutated_object.expect("the record");
        assert_eq!(
            pod["metadata"]["labels"]["hyperv-layered.io/reason"],
            "incompatible-device"
        );
        assert!(host.kinds().is_empty(), "{:?}", host.kinds());
    }

    #[test]
    fn non_launchers_are_accepted_without_host_calls() {
        for f in [
            "plain-pod.json",
            "hotplug-pod.json",
            "exporter-pod.json",
            "launcher-spoofed.json",
            "launcher-update.json",
        ] {
            let host = FakeHost::default();
            let r = evaluate(&payload(&fixture(f), per_pod()), &host);
            assert!(r.accepted, "{f}");
            assert!(r.mutated_object.is_none(), "{f}");
            assert!(r.warnings.is_none(), "{f}");
            assert!(host.kinds().is_empty(), "{f}: {:?}", host.kinds());
        }
    }

    #[test]
    fn full_mshv_path_and_idempotence() {
        let host = FakeHost::default().with("list_resources_all/Node", Ok(capable_nodes()));
        let req = fixture("launcher-v1.8-kvm.json");
        let r = evaluate(&payload(&req, per_pod()), &host);
        assert!(r.accepted);
        assert_eq!(host.kinds(), ["Node"]);
        let pod = r.mutated_object.expect("a mutation");
        let compute = &pod["spec"]["containers"][0];
        assert_eq!(
            compute["resources"]["limits"]["devices.kubevirt.io/mshv"],
            "1"
        );
        assert!(
            compute["resources"]["requests"]
                .get("devices.kubevirt.io/kvm")
                .is_none()
        );
        assert_eq!(
            pod["metadata"]["annotations"]["hyperv-layered.io/reason"],
            "selected"
        );

        // Its own output, admitted again, is left as it is.
        let mut again = req.clone();
        again["object"] = pod;
        let r2 = evaluate(&payload(&again, per_pod()), &host);
        assert!(r2.accepted);
        assert!(r2.mutated_object.is_none());
    }

    #[test]
    fn gate_off_is_no_patch_at_all() {
        let host = FakeHost::default().with(
            "get_resource/KubeVirt",
            Ok(json!({"spec": {"configuration": {}}})),
        );
        let r = evaluate(
            &payload(&fixture("launcher-v1.8-kvm.json"), json!({})),
            &host,
        );
        assert!(r.accepted && r.mutated_object.is_none() && r.warnings.is_none());
        assert_eq!(host.kinds(), ["KubeVirt"]);
    }

    #[test]
    fn reject_mode_answers_503() {
        let host = FakeHost::default().with("list_resources_all/Node", Err("connection refused"));
        let s = json!({"gate": {"mode": "enabled"}, "onLookupError": "reject",
                       "launcherImages": ["quay.io/kubevirt/virt-launcher"],
                       "liveMigration": {"keepOnKvm": []}});
        let r = evaluate(&payload(&fixture("launcher-v1.5.json"), s), &host);
        assert!(!r.accepted);
        assert_eq!(r.code, Some(503));
        assert!(r.message.unwrap().contains("connection refused"));
        let logs = host.logs.borrow();
        assert_eq!(logs.len(), 1);
        assert_eq!(
            (logs[0].level, logs[0].outcome, logs[0].host_calls),
            (Level::Warning, "rejected", 1)
        );
    }

    #[test]
    fn one_log_record_per_launcher_decision_none_otherwise() {
        let host = FakeHost::default().with("list_resources_all/Node", Ok(capable_nodes()));
        let r = evaluate(
            &payload(&fixture("launcher-v1.8-kvm.json"), per_pod()),
            &host,
        );
        assert!(r.mutated_object.is_some());
        {
            let logs = host.logs.borrow();
            let [rec] = logs.as_slice() else {
                panic!("{logs:?}")
            };
            assert_eq!(
                (rec.level, rec.outcome, rec.hypervisor, rec.reason),
                (Level::Info, "decided", "mshv", "selected")
            );
            assert_eq!(
                (rec.namespace.as_str(), rec.vmi.as_str(), rec.gate),
                ("default", "testvm", "per-pod")
            );
            assert_eq!(
                (rec.capable_node_found, rec.host_calls, rec.hint),
                ("true", 1, "")
            );
        }
        // A fallback is a warning with a hint; non-launchers and gate-off log nothing.
        let host = FakeHost::default().with("list_resources_all/Node", Ok(json!({"items": []})));
        evaluate(
            &payload(&fixture("launcher-v1.8-kvm.json"), per_pod()),
            &host,
        );
        let rec = host.logs.borrow()[0].clone();
        assert_eq!((rec.level, rec.reason), (Level::Warning, "no-capable-node"));
        assert!(rec.hint.contains("mshv-node-agent probe"), "{}", rec.hint);
        let host = FakeHost::default();
        evaluate(&payload(&fixture("plain-pod.json"), per_pod()), &host);
        evaluate(
            &payload(
                &fixture("launcher-v1.8-kvm.json"),
                json!({"gate": {"mode": "disabled"}}),
            ),
            &host,
        );
        assert!(host.logs.borrow().is_empty());
    }

    #[test]
    fn garbage_is_accepted_with_a_warning() {
        let host = FakeHost::default();
        for raw in [&b""[..], b"[]", b"{\"request\": 5}", b"\xff"] {
            let r = evaluate(raw, &host);
            assert!(r.accepted);
            assert!(r.warnings.is_some());
        }
        let mut bad = fixture("launcher-v1.8-kvm.json");
        bad["object"]["metadata"]["annotations"] = json!("nope");
        let host = FakeHost::default().with("list_resources_all/Node", Ok(capable_nodes()));
        let r = evaluate(&payload(&bad, per_pod()), &host);
        assert!(r.accepted && r.mutated_object.is_none());
        assert!(r.warnings.unwrap()[0].contains("metadata.annotations"));
    }

    #[test]
    fn invalid_settings_in_validate_leave_the_pod_alone() {
        let r = evaluate(
            &payload(
                &fixture("launcher-v1.8-kvm.json"),
                json!({"nodeLabel": "a b"}),
            ),
            &FakeHost::default(),
        );
        assert!(r.accepted && r.mutated_object.is_none());
        assert!(r.warnings.unwrap()[0].contains("nodeLabel"));
    }

    /// The guest's bytes and the inspectable response are the same answer; without a Pod they
    /// are byte for byte what serde_json writes for the SDK's `ValidationResponse`.
    #[test]
    fn wire_bytes_are_the_response() {
        let reject_settings = json!({"gate": {"mode": "enabled"}, "onLookupError": "reject"});
        let mut payloads: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"{\"request\": 5}".to_vec(),
            payload(
                &fixture("launcher-v1.8-kvm.json"),
                json!({"nodeLabel": "a\"b\n"}),
            ),
        ];
        let fixtures = [
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
        ];
        for f in fixtures {
            for s in [per_pod(), json!({}), reject_settings.clone()] {
                payloads.push(payload(&fixture(f), s));
            }
        }
        let hosts = [
            FakeHost::default().with("list_resources_all/Node", Ok(capable_nodes())),
            FakeHost::default().with("list_resources_all/Node", Err("connection refused")),
        ];
        let mut mutated = 0;
        for p in &payloads {
            for host in &hosts {
                let bytes = evaluate_to_bytes(p, host);
                let r = evaluate(p, host);
                let wire: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(wire, serde_json::to_value(&r).unwrap());
                if r.mutated_object.is_none() {
                    assert_eq!(bytes, serde_json::to_vec(&r).unwrap());
                } else {
                    mutated += 1;
                }
            }
        }
        assert!(mutated > 5, "{mutated}");
    }

    #[test]
    fn validate_settings_names_the_field() {
        let r = validate_settings(br#"{"gate": {"mode": "on"}}"#);
        assert!(!r.valid);
        assert!(r.message.unwrap().contains("gate.mode"));
        assert!(validate_settings(b"{}").valid);
    }
}
