//! Surgical edits of the Pod JSON as the API server sent it.
//!
//! The host diffs the returned object against the original to build the JSON Patch, so the Pod
//! is edited in place as a `serde_json::Value`: a typed round-trip would drop fields k8s-openapi
//! does not know and turn them into `remove` ops. Every edit is written so that applying it to
//! its own result changes nothing, and every edit says whether it changed anything, so the
//! caller knows whether there is a mutation without keeping and comparing a copy of the Pod.
//! The one thing removed is the KVM device request, which the mshv device replaces.

use serde_json::{Map, Value, json};

use crate::choice::{HYPERVISOR_KEY, Hypervisor, REASON_KEY, Reason};
use crate::launcher::HypervisorFlag;

/// The Pod has a type the API server would never send at `path` (e.g. `labels` is a string):
/// the policy leaves such a Pod unchanged rather than overwrite what it does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected Pod shape at {path}")]
pub struct EditError {
    pub path: String,
}

/// The object at `key` of `parent`, created empty when absent or null.
fn object_at<'v>(
    parent: &'v mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'v mut Map<String, Value>, EditError> {
    let slot = parent
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().ok_or_else(|| EditError {
        path: path.to_string(),
    })
}

/// The object at a path of keys below `root`, creating empty objects on the way.
pub fn object_path<'v>(
    root: &'v mut Value,
    keys: &[&str],
) -> Result<&'v mut Map<String, Value>, EditError> {
    let mut cur = root.as_object_mut().ok_or_else(|| EditError {
        path: "(root)".to_string(),
    })?;
    let mut path = String::new();
    for k in keys {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(k);
        cur = object_at(cur, k, &path)?;
    }
    Ok(cur)
}

/// Sets `map[key] = value`; true when that changed the map.
fn set(map: &mut Map<String, Value>, key: &str, value: &str) -> bool {
    if map.get(key).and_then(Value::as_str) == Some(value) {
        return false;
    }
    map.insert(key.to_string(), Value::String(value.to_string()));
    true
}

/// Writes the choice: labels and annotations `hyperv-layered.io/hypervisor` and
/// `hyperv-layered.io/reason`. True when the Pod changed.
pub fn write_choice(
    pod: &mut Value,
    hypervisor: Hypervisor,
    reason: Reason,
) -> Result<bool, EditError> {
    let (hv, why) = (hypervisor.as_str(), reason.as_str());
    let labels = object_path(pod, &["metadata", "labels"])?;
    let labelled = set(labels, HYPERVISOR_KEY, hv) | set(labels, REASON_KEY, why);
    let annotations = object_path(pod, &["metadata", "annotations"])?;
    let annotated = set(annotations, HYPERVISOR_KEY, hv) | set(annotations, REASON_KEY, why);
    Ok(labelled | annotated)
}

fn compute_container(pod: &mut Value, compute: usize) -> Result<&mut Value, EditError> {
    pod.pointer_mut(&format!("/spec/containers/{compute}"))
        .filter(|c| c.is_object())
        .ok_or_else(|| EditError {
            path: format!("spec.containers[{compute}]"),
        })
}

/// Rewrites the compute container for mshv: in both resource maps (the API server demands
/// requests == limits for extended resources) the KVM device becomes the mshv device, and the
/// value of `--hypervisor`, when the launcher takes one, becomes `hypervisor_arg`.
/// True when the Pod changed.
pub fn switch_to_mshv(
    pod: &mut Value,
    compute: usize,
    flag: HypervisorFlag,
    kvm_resource: &str,
    mshv_resource: &str,
    hypervisor_arg: &str,
) -> Result<bool, EditError> {
    let container = compute_container(pod, compute)?;
    let changed = edit_resource_maps(container, |resources| {
        resources.remove(kvm_resource).is_some() | set(resources, mshv_resource, "1")
    })?;
    Ok(set_hypervisor_flag(container, compute, flag, hypervisor_arg)? | changed)
}

/// Mixed mode: adds the mshv device beside whatever the compute container requests (the KVM
/// device stays: virt-handler of a KVM-configured KubeVirt chowns `/dev/kvm` in the launcher
/// and adds its cgroup rule, and fails the VM when it is missing) in both resource maps, and
/// sets `--hypervisor`. True when the Pod changed.
pub fn add_mshv_device(
    pod: &mut Value,
    compute: usize,
    flag: HypervisorFlag,
    mshv_resource: &str,
    hypervisor_arg: &str,
) -> Result<bool, EditError> {
    let container = compute_container(pod, compute)?;
    let changed = edit_resource_maps(container, |resources| set(resources, mshv_resource, "1"))?;
    Ok(set_hypervisor_flag(container, compute, flag, hypervisor_arg)? | changed)
}

/// Runs `edit` on both resource maps of a container, `limits` and `requests` (created when
/// missing): the API server demands they agree on extended resources. True when either changed.
fn edit_resource_maps(
    container: &mut Value,
    mut edit: impl FnMut(&mut Map<String, Value>) -> bool,
) -> Result<bool, EditError> {
    let mut changed = false;
    for map in ["limits", "requests"] {
        changed |= edit(object_path(container, &["resources", map])?);
    }
    Ok(changed)
}

/// Sets the value of the launcher's `--hypervisor` flag where it is (`command` on KubeVirt
/// v1.8/v1.9, `args` on main), when it takes one. Only a layout `launcher::recognize` knows
/// reaches here: the flag occurs once, so this is the value virt-launcher will read.
fn set_hypervisor_flag(
    container: &mut Value,
    compute: usize,
    flag: HypervisorFlag,
    hypervisor_arg: &str,
) -> Result<bool, EditError> {
    let (list, index, value) = match flag {
        HypervisorFlag::Absent => return Ok(false),
        HypervisorFlag::Separate(l, i) => (l, i, hypervisor_arg.to_string()),
        HypervisorFlag::Joined(l, i) => (l, i, format!("--hypervisor={hypervisor_arg}")),
    };
    let key = list.key();
    let slot = container
        .pointer_mut(&format!("/{key}/{index}"))
        .ok_or_else(|| EditError {
            path: format!("spec.containers[{compute}].{key}[{index}]"),
        })?;
    if slot.as_str() == Some(value.as_str()) {
        return Ok(false);
    }
    *slot = Value::String(value);
    Ok(true)
}

/// ANDs `{key: <node_label>, operator: In, values: ["true"]}` into every required
/// nodeSelectorTerm (terms are ORed, so a requirement missing from one term would let the Pod
/// escape through it), or creates one term when there is none. True when the Pod changed.
pub fn require_node_label(pod: &mut Value, node_label: &str) -> Result<bool, EditError> {
    let requirement = json!({"key": node_label, "operator": "In", "values": ["true"]});
    let selector = object_path(
        pod,
        &[
            "spec",
            "affinity",
            "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
        ],
    )?;
    let terms = selector
        .entry("nodeSelectorTerms".to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if terms.is_null() {
        *terms = Value::Array(Vec::new());
    }
    let terms = terms.as_array_mut().ok_or_else(|| EditError {
        path: "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms".to_string(),
    })?;
    if terms.is_empty() {
        terms.push(json!({"matchExpressions": [requirement]}));
        return Ok(true);
    }
    let mut changed = false;
    for (i, term) in terms.iter_mut().enumerate() {
        let path = || EditError {
            path: format!(
                "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"
            ),
        };
        let term = term.as_object_mut().ok_or_else(path)?;
        let exprs = term
            .entry("matchExpressions".to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if exprs.is_null() {
            *exprs = Value::Array(Vec::new());
        }
        let exprs = exprs.as_array_mut().ok_or_else(path)?;
        if !exprs.contains(&requirement) {
            exprs.push(requirement.clone());
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::ArgList;

    fn pod() -> Value {
        json!({
            "metadata": {"labels": {"kubevirt.io": "virt-launcher"}},
            "spec": {"containers": [{
                "name": "compute",
                "command": ["/usr/bin/virt-launcher-monitor", "--hypervisor", "kvm", "--run-as-nonroot"],
                "resources": {
                    "limits": {"devices.kubevirt.io/kvm": "1", "devices.kubevirt.io/tun": "1"},
                    "requests": {"devices.kubevirt.io/kvm": "1", "devices.kubevirt.io/tun": "1", "memory": "1Gi"}
                }
            }]}
        })
    }

    fn switch(p: &mut Value, flag: HypervisorFlag) -> Result<bool, EditError> {
        switch_to_mshv(
            p,
            0,
            flag,
            "devices.kubevirt.io/kvm",
            "devices.kubevirt.io/mshv",
            "hyperv-direct",
        )
    }

    #[test]
    fn switch_changes_both_maps_and_the_flag_once() {
        let mut p = pod();
        assert!(switch(&mut p, HypervisorFlag::Separate(ArgList::Command, 2)).unwrap());
        let c = &p["spec"]["containers"][0];
        assert_eq!(
            c["resources"]["limits"],
            json!({"devices.kubevirt.io/mshv": "1", "devices.kubevirt.io/tun": "1"})
        );
        assert_eq!(
            c["resources"]["requests"],
            json!({"devices.kubevirt.io/mshv": "1", "devices.kubevirt.io/tun": "1", "memory": "1Gi"})
        );
        assert_eq!(c["command"][2], "hyperv-direct");
        assert_eq!(c["command"][3], "--run-as-nonroot");
        let once = p.clone();
        assert!(!switch(&mut p, HypervisorFlag::Separate(ArgList::Command, 2)).unwrap());
        assert_eq!(p, once);
    }

    #[test]
    fn switch_handles_joined_absent_and_missing_maps() {
        let mut p = pod();
        p["spec"]["containers"][0]["command"] = json!(["/x", "--hypervisor=kvm"]);
        p["spec"]["containers"][0]["resources"] =
            json!({"limits": {"devices.kubevirt.io/kvm": "1"}});
        switch(&mut p, HypervisorFlag::Joined(ArgList::Command, 1)).unwrap();
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["command"][1], "--hypervisor=hyperv-direct");
        assert_eq!(
            c["resources"]["requests"],
            json!({"devices.kubevirt.io/mshv": "1"})
        );

        let mut p = pod();
        let before = p["spec"]["containers"][0]["command"].clone();
        switch(&mut p, HypervisorFlag::Absent).unwrap();
        assert_eq!(p["spec"]["containers"][0]["command"], before);

        let mut bad = json!({"spec": {"containers": [{"resources": {"limits": "x"}}]}});
        assert!(switch(&mut bad, HypervisorFlag::Absent).is_err());
        let mut bad = json!({"spec": {"containers": []}});
        assert!(switch(&mut bad, HypervisorFlag::Absent).is_err());
    }

    #[test]
    fn flag_in_args_is_rewritten_there() {
        let mut p = pod();
        p["spec"]["containers"][0]["command"] = json!(["/usr/bin/virt-launcher-monitor"]);
        p["spec"]["containers"][0]["args"] = json!(["--name", "vm", "--hypervisor", "kvm"]);
        assert!(switch(&mut p, HypervisorFlag::Separate(ArgList::Args, 3)).unwrap());
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["command"], json!(["/usr/bin/virt-launcher-monitor"]));
        assert_eq!(
            c["args"],
            json!(["--name", "vm", "--hypervisor", "hyperv-direct"])
        );
        let mut q = pod();
        q["spec"]["containers"][0]["args"] = json!(["--hypervisor=kvm"]);
        let add = add_mshv_device(
            &mut q,
            0,
            HypervisorFlag::Joined(ArgList::Args, 0),
            "devices.kubevirt.io/mshv",
            "hyperv-direct",
        );
        assert!(add.unwrap());
        assert_eq!(
            q["spec"]["containers"][0]["args"],
            json!(["--hypervisor=hyperv-direct"])
        );
        let mut bad = pod();
        assert_eq!(
            switch(&mut bad, HypervisorFlag::Separate(ArgList::Args, 1))
                .unwrap_err()
                .path,
            "spec.containers[0].args[1]"
        );
    }

    #[test]
    fn add_keeps_the_kvm_device_and_sets_the_flag_once() {
        let mut p = pod();
        let add = |p: &mut Value| {
            add_mshv_device(
                p,
                0,
                HypervisorFlag::Separate(ArgList::Command, 2),
                "devices.kubevirt.io/mshv",
                "hyperv-direct",
            )
        };
        assert!(add(&mut p).unwrap());
        let c = &p["spec"]["containers"][0];
        for map in ["limits", "requests"] {
            assert_eq!(c["resources"][map]["devices.kubevirt.io/kvm"], "1", "{map}");
            assert_eq!(
                c["resources"][map]["devices.kubevirt.io/mshv"], "1",
                "{map}"
            );
        }
        assert_eq!(c["command"][2], "hyperv-direct");
        assert!(!add(&mut p).unwrap(), "a second add changes nothing");
    }

    #[test]
    fn node_requirement_creates_one_term() {
        let mut p = pod();
        assert!(require_node_label(&mut p, "l/capable").unwrap());
        assert_eq!(
            p["spec"]["affinity"],
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "l/capable", "operator": "In", "values": ["true"]}]}]}}})
        );
        let once = p.clone();
        assert!(!require_node_label(&mut p, "l/capable").unwrap());
        assert_eq!(p, once);
    }

    #[test]
    fn node_requirement_is_anded_into_every_term() {
        let mut p = pod();
        p["spec"]["affinity"] = json!({
        "podAntiAffinity": {"x": 1},
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}],
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "node-labeller.kubevirt.io/obsolete-host-model", "operator": "DoesNotExist"}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
            ]}}});
        assert!(require_node_label(&mut p, "l/capable").unwrap());
        let req = json!({"key": "l/capable", "operator": "In", "values": ["true"]});
        let terms = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(terms[0]["matchExpressions"][1], req);
        assert_eq!(terms[1]["matchExpressions"], json!([req]));
        assert_eq!(terms[1]["matchFields"][0]["values"], json!(["n1"]));
        assert_eq!(p["spec"]["affinity"]["podAntiAffinity"], json!({"x": 1}));
        let once = p.clone();
        assert!(!require_node_label(&mut p, "l/capable").unwrap());
        assert_eq!(p, once);
    }

    #[test]
    fn write_choice_writes_label_and_annotations() {
        let mut p = pod();
        assert!(write_choice(&mut p, Hypervisor::Mshv, Reason::Selected).unwrap());
        assert!(!write_choice(&mut p, Hypervisor::Mshv, Reason::Selected).unwrap());
        assert_eq!(
            p["metadata"]["labels"]["hyperv-layered.io/hypervisor"],
            "mshv"
        );
        assert_eq!(
            p["metadata"]["labels"]["hyperv-layered.io/reason"],
            "selected"
        );
        assert_eq!(p["metadata"]["labels"]["kubevirt.io"], "virt-launcher");
        assert_eq!(
            p["metadata"]["annotations"],
            json!({"hyperv-layered.io/hypervisor": "mshv", "hyperv-layered.io/reason": "selected"})
        );
        let mut bad = json!({"metadata": {"labels": "x"}});
        assert_eq!(
            write_choice(&mut bad, Hypervisor::Kvm, Reason::OptOut)
                .unwrap_err()
                .path,
            "metadata.labels"
        );
    }
}
