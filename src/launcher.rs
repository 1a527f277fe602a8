//! Recognising a virt-launcher Pod and reading what the decision needs from it.
//!
//! Shape facts from kubevirt/kubevirt `pkg/virt-controller/services/template.go` (v1.5–v1.8):
//! labels `kubevirt.io: virt-launcher` and `kubevirt.io/created-by: <VMI uid>`, one controller
//! ownerReference to the VMI, `spec.containers[0]` named `compute`, annotation
//! `kubevirt.io/domain: <VMI name>`. Hotplug (`kubevirt.io: hotplug-disk`) and export
//! (`kubevirt.io: virt-exporter`) Pods share the `kubevirt.io` label key and are not launchers.

use serde_json::Value;

use crate::record::{HYPERVISOR_KEY, Hypervisor, REASON_KEY, Reason};
use crate::settings::Settings;

pub const APP_LABEL: &str = "kubevirt.io";
pub const LAUNCHER_APP: &str = "virt-launcher";
pub const CREATED_BY_LABEL: &str = "kubevirt.io/created-by";
pub const MIGRATION_JOB_LABEL: &str = "kubevirt.io/migrationJobUID";
pub const DOMAIN_ANNOTATION: &str = "kubevirt.io/domain";
pub const COMPUTE_CONTAINER: &str = "compute";
pub const HYPERVISOR_FLAG: &str = "--hypervisor";
/// nodeSelector keys virt-controller renders for dedicated CPUs and for realtime VMs
/// (kubevirt/kubevirt `pkg/virt-controller/services/template.go`, v1.8.0 and v1.9.0; the values
/// are `"true"`).
pub const CPU_MANAGER_SELECTOR: &str = "kubevirt.io/cpumanager";
pub const REALTIME_SELECTOR: &str = "kubevirt.io/realtime";

/// Where the launcher's hypervisor choice sits in the compute container's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorFlag {
    /// No `--hypervisor` flag: launchers before v1.8, and fork builds that detect `/dev/mshv`.
    Absent,
    /// `--hypervisor <value>`: the value is at this index of `command`.
    Separate(usize),
    /// `--hypervisor=<value>` at this index of `command`.
    Joined(usize),
}

/// A recognised launcher Pod: everything the decision and the mutation read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Launcher {
    /// Index of the `compute` container in `spec.containers`.
    pub compute_index: usize,
    pub namespace: String,
    /// The VMI's name (annotation `kubevirt.io/domain`, else the owner reference's name).
    pub vmi_name: String,
    pub vmi_uid: String,
    /// `kubevirt.io/migrationJobUID` on migration target Pods.
    pub migration_job: Option<String>,
    pub hypervisor_flag: HypervisorFlag,
    /// What KubeVirt rendered: mshv when compute requests the mshv device.
    pub rendered: Hypervisor,
    /// The first requested resource that mshv cannot serve.
    pub incompatible: Option<String>,
    /// The Pod (from the VMI) carries `hyperv-layered.io/hypervisor: kvm` written by a user.
    pub opt_out: bool,
    /// The compute container's image, as written (empty when absent): matched against
    /// `launcherImages`.
    pub image: String,
    /// The Pod selects CPU-manager nodes: the VMI has dedicated CPUs (or selects them itself).
    /// `isolateEmulatorThread` shows nowhere on the Pod (it only adds a CPU), so only then is
    /// the VMI worth reading for it.
    pub dedicated_cpus: bool,
    /// The Pod selects realtime nodes: a realtime VMI (or one that selects them itself).
    pub realtime: bool,
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Reads a launcher from a Pod object, or `None` when the Pod is not one.
/// `namespace` is the admission request's namespace (a Pod at admission may omit its own).
pub fn recognize(pod: &Value, namespace: &str, settings: &Settings) -> Option<Launcher> {
    let labels = pod.pointer("/metadata/labels")?.as_object()?;
    if labels.get(APP_LABEL)?.as_str()? != LAUNCHER_APP {
        return None;
    }
    let uid = labels.get(CREATED_BY_LABEL)?.as_str()?;
    if uid.is_empty() {
        return None;
    }
    let owner_name = controlling_vmi(pod, uid)?;
    let containers = pod.pointer("/spec/containers")?.as_array()?;
    let compute = containers
        .iter()
        .position(|c| str_at(c, &["name"]) == Some(COMPUTE_CONTAINER))?;
    let container = &containers[compute];

    let annotations = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
    let vmi_name = annotation(DOMAIN_ANNOTATION)
        .filter(|n| !n.is_empty())
        .unwrap_or(owner_name)
        .to_string();
    let namespace = if namespace.is_empty() {
        str_at(pod, &["metadata", "namespace"]).unwrap_or_default()
    } else {
        namespace
    }
    .to_string();

    let (rendered, incompatible) = devices(container, settings);

    // Our own record also says `kvm`; it is only an opt-out when no decision of ours stands
    // beside it (or that decision was itself the opt-out), which keeps re-runs idempotent.
    let opt_out = annotation(HYPERVISOR_KEY).and_then(Hypervisor::from_record)
        == Some(Hypervisor::Kvm)
        && annotation(REASON_KEY).is_none_or(|r| r == Reason::OptOut.as_str());

    Some(Launcher {
        compute_index: compute,
        namespace,
        vmi_name,
        vmi_uid: uid.to_string(),
        migration_job: labels
            .get(MIGRATION_JOB_LABEL)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        hypervisor_flag: hypervisor_flag(container.get("command")),
        rendered,
        incompatible,
        opt_out,
        image: str_at(container, &["image"])
            .unwrap_or_default()
            .to_string(),
        dedicated_cpus: node_selects(pod, CPU_MANAGER_SELECTOR),
        realtime: node_selects(pod, REALTIME_SELECTOR),
    })
}

/// The name of the VMI that controls the Pod, when it is exactly the VMI as controller owner
/// and the same VMI the created-by label names: a Pod copied from a launcher by hand does not
/// keep a matching controller reference.
fn controlling_vmi<'v>(pod: &'v Value, uid: &str) -> Option<&'v str> {
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .filter(|o| {
            str_at(o, &["kind"]) == Some("VirtualMachineInstance")
                && str_at(o, &["apiVersion"]).is_some_and(|a| a.starts_with("kubevirt.io/"))
                && str_at(o, &["uid"]) == Some(uid)
        })
        .and_then(|o| str_at(o, &["name"]))
}

/// What the compute container's device requests say: the hypervisor KubeVirt rendered (mshv
/// when it requests the mshv device) and the first requested device mshv cannot serve.
fn devices(container: &Value, settings: &Settings) -> (Hypervisor, Option<String>) {
    let resources = |map: &str| {
        container
            .pointer(&format!("/resources/{map}"))
            .and_then(Value::as_object)
    };
    let requests_resource = |name: &str| {
        resources("limits").is_some_and(|m| m.contains_key(name))
            || resources("requests").is_some_and(|m| m.contains_key(name))
    };
    let rendered = if requests_resource(&settings.device_resource) {
        Hypervisor::Mshv
    } else {
        Hypervisor::Kvm
    };
    let incompatible = settings
        .incompatible_resources
        .iter()
        .find(|r| requests_resource(r))
        .cloned();
    (rendered, incompatible)
}

fn node_selects(pod: &Value, key: &str) -> bool {
    pod.pointer("/spec/nodeSelector")
        .and_then(|s| s.get(key))
        .and_then(Value::as_str)
        == Some("true")
}

fn hypervisor_flag(command: Option<&Value>) -> HypervisorFlag {
    let Some(args) = command.and_then(Value::as_array) else {
        return HypervisorFlag::Absent;
    };
    for (i, a) in args.iter().enumerate() {
        match a.as_str() {
            Some(HYPERVISOR_FLAG) if i + 1 < args.len() => return HypervisorFlag::Separate(i + 1),
            Some(s) if s.starts_with("--hypervisor=") => return HypervisorFlag::Joined(i),
            _ => {}
        }
    }
    HypervisorFlag::Absent
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    pub(crate) fn launcher_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": "virt-launcher-testvm-", "namespace": "default",
                "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": "uid-1"},
                "annotations": {"kubevirt.io/domain": "testvm"},
                "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "name": "testvm", "uid": "uid-1", "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": {"containers": [{
                "name": "compute",
                "image": "quay.io/kubevirt/virt-launcher:v1.8.2",
                "command": ["/usr/bin/virt-launcher-monitor", "--hypervisor", "kvm", "--run-as-nonroot"],
                "resources": {
                    "limits": {"devices.kubevirt.io/kvm": "1"},
                    "requests": {"devices.kubevirt.io/kvm": "1", "memory": "2432696320"}
                }
            }]}
        })
    }

    fn rec(pod: &Value) -> Option<Launcher> {
        recognize(pod, "default", &Settings::default())
    }

    #[test]
    fn reads_a_v18_launcher() {
        let l = rec(&launcher_pod()).unwrap();
        assert_eq!(l.compute_index, 0);
        assert_eq!(l.vmi_name, "testvm");
        assert_eq!(l.vmi_uid, "uid-1");
        assert_eq!(l.namespace, "default");
        assert_eq!(l.hypervisor_flag, HypervisorFlag::Separate(2));
        assert_eq!(l.rendered, Hypervisor::Kvm);
        assert_eq!(l.incompatible, None);
        assert!(!l.opt_out);
        assert_eq!(l.migration_job, None);
        assert_eq!(l.image, "quay.io/kubevirt/virt-launcher:v1.8.2");
    }

    /// Sets `pointer` of a launcher Pod to `value` (`null` removes the key).
    fn with(pointer: &str, value: Value) -> Value {
        let mut p = launcher_pod();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let key = key.replace("~1", "/").replace("~0", "~");
        let key = key.as_str();
        let slot = p.pointer_mut(parent).unwrap();
        if value.is_null() {
            slot.as_object_mut().unwrap().remove(key);
        } else {
            slot[key] = value;
        }
        p
    }

    /// Pods that share some of a launcher's marks but are not launchers of a trusted VMI.
    #[rstest]
    #[case::hotplug(with("/metadata/labels/kubevirt.io", json!("hotplug-disk")))]
    #[case::exporter(with("/metadata/labels/kubevirt.io", json!("virt-exporter")))]
    #[case::no_created_by(with("/metadata/labels/kubevirt.io~1created-by", Value::Null))]
    #[case::uid_mismatch(with("/metadata/ownerReferences/0/uid", json!("other")))]
    #[case::not_controller(with("/metadata/ownerReferences/0/controller", json!(false)))]
    #[case::wrong_kind(with("/metadata/ownerReferences/0/kind", json!("VirtualMachine")))]
    #[case::wrong_group(with("/metadata/ownerReferences/0/apiVersion", json!("evil.io/v1")))]
    #[case::no_compute(with("/spec/containers/0/name", json!("main")))]
    #[case::plain(json!({"metadata": {"name": "x"}, "spec": {}}))]
    #[case::not_an_object(json!([1, 2]))]
    fn rejects_lookalikes(#[case] pod: Value) {
        assert_eq!(rec(&pod), None);
    }

    #[test]
    fn reads_flag_forms_and_devices() {
        let mut p = launcher_pod();
        p["spec"]["containers"][0]["command"] = json!(["/x", "--hypervisor=kvm"]);
        assert_eq!(rec(&p).unwrap().hypervisor_flag, HypervisorFlag::Joined(1));
        p["spec"]["containers"][0]["command"] = json!(["/x", "--hypervisor"]);
        assert_eq!(rec(&p).unwrap().hypervisor_flag, HypervisorFlag::Absent);
        p["spec"]["containers"][0]["command"] = json!("not a list");
        assert_eq!(rec(&p).unwrap().hypervisor_flag, HypervisorFlag::Absent);

        let mut p = launcher_pod();
        p["spec"]["containers"][0]["resources"]["limits"] =
            json!({"devices.kubevirt.io/mshv": "1", "devices.kubevirt.io/sev": "1"});
        let l = rec(&p).unwrap();
        assert_eq!(l.rendered, Hypervisor::Mshv);
        assert_eq!(l.incompatible.as_deref(), Some("devices.kubevirt.io/sev"));
    }

    #[test]
    fn opt_out_only_when_not_our_own_record() {
        let mut p = launcher_pod();
        p["metadata"]["annotations"]["hyperv-layered.io/hypervisor"] = json!("kvm");
        assert!(rec(&p).unwrap().opt_out);
        p["metadata"]["annotations"]["hyperv-layered.io/reason"] = json!("opt-out");
        assert!(rec(&p).unwrap().opt_out);
        p["metadata"]["annotations"]["hyperv-layered.io/reason"] = json!("no-capable-node");
        assert!(!rec(&p).unwrap().opt_out);
        p["metadata"]["annotations"]["hyperv-layered.io/hypervisor"] = json!("mshv");
        p["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("hyperv-layered.io/reason");
        assert!(!rec(&p).unwrap().opt_out);
    }

    #[test]
    fn migration_target_and_names() {
        let mut p = launcher_pod();
        p["metadata"]["labels"]["kubevirt.io/migrationJobUID"] = json!("job-1");
        p["metadata"]["annotations"] = json!({});
        let l = recognize(&p, "", &Settings::default()).unwrap();
        assert_eq!(l.migration_job.as_deref(), Some("job-1"));
        assert_eq!(l.vmi_name, "testvm", "falls back to the owner's name");
        assert_eq!(
            l.namespace, "default",
            "falls back to the object's namespace"
        );
    }
}
