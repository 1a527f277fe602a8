//! Recognising a virt-launcher Pod and reading what the decision needs from it.
//!
//! Shape facts from kubevirt/kubevirt `pkg/virt-controller/services/template.go` (v1.5–v1.8):
//! labels `kubevirt.io: virt-launcher` and `kubevirt.io/created-by: <VMI uid>`, one controller
//! ownerReference to the VMI, `spec.containers[0]` named `compute`, annotation
//! `kubevirt.io/domain: <VMI name>`. Hotplug (`kubevirt.io: hotplug-disk`) and export
//! (`kubevirt.io: virt-exporter`) Pods share the `kubevirt.io` label key and are not launchers.

use serde_json::Value;

use crate::choice::{HYPERVISOR_KEY, Hypervisor, REASON_KEY, Reason};
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

/// Which list of the compute container holds an argument. Kubernetes runs `command` followed by
/// `args`, and virt-launcher-monitor hands everything after its own name to virt-launcher
/// unchanged (except `--keep-after-failure`: kubevirt/kubevirt@d923fdb8
/// cmd/virt-launcher-monitor/virt-launcher-monitor.go:100-102), so `--hypervisor` reaches
/// virt-launcher's flag parser (`cmd/virt-launcher/virt-launcher.go:373`, default `kvm`) from
/// either list alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgList {
    /// `command`: KubeVirt v1.8/v1.9 render every flag here
    /// (kubevirt/kubevirt@v1.9.0 pkg/virt-controller/services/template.go:460-472).
    Command,
    /// `args`: KubeVirt main since PR #18237 (merged as 77da8506e2) renders `command:
    /// ["/usr/bin/virt-launcher-monitor"]` and every flag here
    /// (kubevirt/kubevirt@d923fdb8 pkg/virt-controller/services/template.go:460-474).
    Args,
}

impl ArgList {
    pub fn key(self) -> &'static str {
        match self {
            ArgList::Command => "command",
            ArgList::Args => "args",
        }
    }
}

/// Where the launcher's hypervisor choice sits in the compute container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorFlag {
    /// No `--hypervisor` flag anywhere: launchers before v1.8, and fork builds that detect
    /// `/dev/mshv` themselves.
    Absent,
    /// `--hypervisor <value>`: the value is at this index of that list.
    Separate(ArgList, usize),
    /// `--hypervisor=<value>` at this index of that list.
    Joined(ArgList, usize),
}

/// The values KubeVirt passes after `--hypervisor` (`v1.KvmHypervisorName`,
/// `v1.HyperVDirectHypervisorName`) and the fork builds' `mshv`.
pub const KNOWN_HYPERVISOR_VALUES: [&str; 3] = ["kvm", "hyperv-direct", "mshv"];

/// Entrypoints of a compute container KubeVirt renders: the monitor (v0.x to main) and, in
/// builds that run it directly, virt-launcher itself.
pub const KNOWN_ENTRYPOINTS: [&str; 2] = ["virt-launcher-monitor", "virt-launcher"];

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
    /// Where `--hypervisor` is (`Absent` also when the layout is unknown).
    pub hypervisor_flag: HypervisorFlag,
    /// Why the compute container's command line is not one this policy knows how to edit
    /// (`None`: it is one of the known layouts). Such a launcher is left exactly as rendered.
    pub unknown_layout: Option<String>,
    /// What KubeVirt rendered: mshv when compute requests the mshv device.
    pub rendered: Hypervisor,
    /// The first requested resource that mshv cannot serve: one of `incompatibleResources`, or
    /// a host device (any extended resource outside `devices.kubevirt.io/`, or a DRA claim).
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
    let (hypervisor_flag, unknown_layout) = match read_layout(container, settings) {
        Ok(flag) => (flag, None),
        Err(why) => (HypervisorFlag::Absent, Some(why)),
    };

    // Our own record also says `kvm`; it is only an opt-out when no decision of ours stands
    // beside it (or that decision was itself the opt-out), which keeps re-runs idempotent.
    let opt_out = annotation(HYPERVISOR_KEY).and_then(Hypervisor::from_name)
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
        hypervisor_flag,
        unknown_layout,
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
///
/// Host devices show on the Pod in two ways (kubevirt/kubevirt@d923fdb8
/// pkg/virt-controller/services/renderresources.go): a GPU or host device served by a device
/// plugin is its `deviceName` as an extended resource in requests and limits
/// (`WithGPUsDevicePlugins`, `WithHostDevicesDevicePlugins`, :149-188), and one provisioned
/// through DRA is a `resources.claims` entry (`WithGPUsDRA`, `WithHostDevicesDRA`,
/// `WithNetworksDRA`, :162-218, written out at :99). Every such device is VFIO passthrough, which
/// L1VH does not offer, so any of them keeps the VM on KVM, decided from the Pod alone.
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
    let listed = settings
        .incompatible_resources
        .iter()
        .find(|r| requests_resource(r))
        .cloned();
    let host_device = || {
        ["limits", "requests"]
            .into_iter()
            .filter_map(resources)
            .flat_map(|m| m.keys())
            .find(|name| is_host_device(name, settings))
            .cloned()
    };
    let claim = || {
        container
            .pointer("/resources/claims")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
            .map(|c| {
                let name = c
                    .first()
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                format!("resources.claims[{name}]")
            })
    };
    (rendered, listed.or_else(host_device).or_else(claim))
}

/// An extended resource that is not one of KubeVirt's own `devices.kubevirt.io/` devices (kvm,
/// tun, vhost-net, ...) nor the hypervisor devices the settings name: what a device plugin serves
/// for a GPU, an SR-IOV VF or any other host device. Resource names without a domain (`cpu`,
/// `memory`, `hugepages-2Mi`, `ephemeral-storage`) and the `kubernetes.io` domains are
/// Kubernetes' own.
fn is_host_device(name: &str, settings: &Settings) -> bool {
    let Some((domain, _)) = name.split_once('/') else {
        return false;
    };
    domain != "devices.kubevirt.io"
        && domain != "kubernetes.io"
        && !domain.ends_with(".kubernetes.io")
        && name != settings.device_resource
        && name != settings.kvm_device_resource
}

fn node_selects(pod: &Value, key: &str) -> bool {
    pod.pointer("/spec/nodeSelector")
        .and_then(|s| s.get(key))
        .and_then(Value::as_str)
        == Some("true")
}

/// The compute container's command line as this policy knows it, or why it is not.
///
/// Known: the entrypoint (`command[0]`) is virt-launcher-monitor or virt-launcher, every item of
/// `command` and `args` is a string, and `--hypervisor` occurs at most once over both lists,
/// with a value KubeVirt passes (or `hypervisorArg`, which this policy writes). Anything else is
/// not edited: virt-launcher's parser (spf13/pflag) lets a repeated flag's last value win, so
/// rewriting one of two could leave the other in force, and a value or entrypoint nobody
/// documented may mean a launcher that reads its flags otherwise.
fn read_layout(container: &Value, settings: &Settings) -> Result<HypervisorFlag, String> {
    let strings = |list: ArgList| -> Result<Vec<&str>, String> {
        match container.get(list.key()) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| format!("{} holds a non-string item", list.key()))
                })
                .collect(),
            Some(_) => Err(format!("{} is not a list", list.key())),
        }
    };
    let command = strings(ArgList::Command)?;
    let args = strings(ArgList::Args)?;
    let entrypoint = command.first().copied().unwrap_or_default();
    let program = entrypoint.rsplit('/').next().unwrap_or_default();
    if !KNOWN_ENTRYPOINTS.contains(&program) {
        return Err(format!(
            "the compute container's entrypoint {entrypoint:?} is neither virt-launcher-monitor \
             nor virt-launcher"
        ));
    }
    let mut found = Vec::new();
    for (list, items) in [(ArgList::Command, &command), (ArgList::Args, &args)] {
        for (i, item) in items.iter().enumerate() {
            if *item == HYPERVISOR_FLAG {
                let value = items.get(i + 1).copied();
                found.push((HypervisorFlag::Separate(list, i + 1), value));
            } else if let Some(value) = item.strip_prefix("--hypervisor=") {
                found.push((HypervisorFlag::Joined(list, i), Some(value)));
            }
        }
    }
    match found.as_slice() {
        [] => Ok(HypervisorFlag::Absent),
        [(_, None)] => Err("--hypervisor has no value".to_string()),
        [(flag, Some(value))] => {
            if KNOWN_HYPERVISOR_VALUES.contains(value) || *value == settings.hypervisor_arg {
                Ok(*flag)
            } else {
                Err(format!(
                    "--hypervisor {value:?} is not a hypervisor KubeVirt passes"
                ))
            }
        }
        _ => Err(format!(
            "--hypervisor occurs {} times (command and args together)",
            found.len()
        )),
    }
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
        assert_eq!(
            l.hypervisor_flag,
            HypervisorFlag::Separate(ArgList::Command, 2)
        );
        assert_eq!(l.unknown_layout, None);
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

    fn with_lists(command: Value, args: Value) -> Launcher {
        let mut p = launcher_pod();
        p["spec"]["containers"][0]["command"] = command;
        if !args.is_null() {
            p["spec"]["containers"][0]["args"] = args;
        }
        rec(&p).unwrap()
    }

    /// The layouts KubeVirt renders: v1.8/v1.9 (flags in `command`), main (flags in `args`),
    /// the joined form, and fork launchers (no flag at all).
    #[rstest]
    #[case::v19_command(json!(["/usr/bin/virt-launcher-monitor", "--hypervisor", "kvm"]), Value::Null,
        HypervisorFlag::Separate(ArgList::Command, 2))]
    #[case::main_args(json!(["/usr/bin/virt-launcher-monitor"]), json!(["--uid", "u", "--hypervisor", "kvm", "--run-as-nonroot"]),
        HypervisorFlag::Separate(ArgList::Args, 3))]
    #[case::main_cross_arch(json!(["/usr/bin/virt-launcher-monitor", "--allow-cross-arch-emulation"]), json!(["--hypervisor", "hyperv-direct"]),
        HypervisorFlag::Separate(ArgList::Args, 1))]
    #[case::joined_command(json!(["/usr/bin/virt-launcher", "--hypervisor=kvm"]), Value::Null,
        HypervisorFlag::Joined(ArgList::Command, 1))]
    #[case::joined_args(json!(["/usr/bin/virt-launcher-monitor"]), json!(["--hypervisor=mshv"]),
        HypervisorFlag::Joined(ArgList::Args, 0))]
    #[case::fork(json!(["/usr/bin/virt-launcher-monitor", "--run-as-nonroot"]), json!(["--name", "vm"]),
        HypervisorFlag::Absent)]
    #[case::fork_null_args(json!(["virt-launcher-monitor"]), json!(null), HypervisorFlag::Absent)]
    fn reads_known_layouts(
        #[case] command: Value,
        #[case] args: Value,
        #[case] want: HypervisorFlag,
    ) {
        let l = with_lists(command, args);
        assert_eq!((l.hypervisor_flag, l.unknown_layout), (want, None));
    }

    /// Anything else is an unknown layout, with the cause.
    #[rstest]
    #[case::twice(json!(["/usr/bin/virt-launcher-monitor", "--hypervisor", "kvm", "--hypervisor=kvm"]), Value::Null, "2 times")]
    #[case::both_lists(json!(["/usr/bin/virt-launcher-monitor", "--hypervisor", "kvm"]), json!(["--hypervisor", "kvm"]), "2 times")]
    #[case::no_value(json!(["/usr/bin/virt-launcher-monitor", "--hypervisor"]), Value::Null, "no value")]
    #[case::no_value_across_lists(json!(["/usr/bin/virt-launcher-monitor", "--hypervisor"]), json!(["kvm"]), "no value")]
    #[case::empty_joined(json!(["/usr/bin/virt-launcher-monitor"]), json!(["--hypervisor="]), "\"\"")]
    #[case::odd_value(json!(["/usr/bin/virt-launcher-monitor"]), json!(["--hypervisor", "xen"]), "xen")]
    #[case::entrypoint(json!(["/bin/sh", "-c", "virt-launcher-monitor --hypervisor kvm"]), Value::Null, "/bin/sh")]
    #[case::no_command(json!(null), json!(["--hypervisor", "kvm"]), "entrypoint \"\"")]
    #[case::command_not_list(json!("virt-launcher-monitor"), Value::Null, "command is not a list")]
    #[case::args_not_list(json!(["/usr/bin/virt-launcher-monitor"]), json!({"a": 1}), "args is not a list")]
    #[case::not_strings(json!(["/usr/bin/virt-launcher-monitor", 7]), Value::Null, "non-string")]
    fn refuses_unknown_layouts(#[case] command: Value, #[case] args: Value, #[case] why: &str) {
        let l = with_lists(command, args);
        assert_eq!(l.hypervisor_flag, HypervisorFlag::Absent);
        let got = l.unknown_layout.expect("an unknown layout");
        assert!(got.contains(why), "{got:?} lacks {why:?}");
    }

    #[test]
    fn hypervisor_arg_setting_is_a_known_value() {
        let mut p = launcher_pod();
        p["spec"]["containers"][0]["command"] =
            json!(["/usr/bin/virt-launcher-monitor", "--hypervisor", "l1vh"]);
        assert!(rec(&p).unwrap().unknown_layout.is_some());
        let s = Settings {
            hypervisor_arg: "l1vh".to_string(),
            ..Settings::default()
        };
        assert_eq!(recognize(&p, "default", &s).unwrap().unknown_layout, None);
    }

    #[rstest]
    #[case::sev(json!({"devices.kubevirt.io/sev": "1"}), Some("devices.kubevirt.io/sev"))]
    #[case::gpu(json!({"nvidia.com/GA102GL_A10": "1"}), Some("nvidia.com/GA102GL_A10"))]
    #[case::sriov(json!({"intel.com/sriov_netdevice": "1"}), Some("intel.com/sriov_netdevice"))]
    #[case::kubevirt_own(json!({"devices.kubevirt.io/tun": "1", "devices.kubevirt.io/vhost-net": "1"}), None)]
    #[case::kubernetes_own(json!({"cpu": "1", "memory": "1Gi", "hugepages-2Mi": "1Gi", "ephemeral-storage": "1Gi"}), None)]
    #[case::kubernetes_domain(json!({"example.kubernetes.io/thing": "1"}), None)]
    fn host_devices_and_listed_resources(#[case] limits: Value, #[case] want: Option<&str>) {
        let mut p = launcher_pod();
        p["spec"]["containers"][0]["resources"]["limits"] = limits;
        assert_eq!(rec(&p).unwrap().incompatible.as_deref(), want);
    }

    #[test]
    fn dra_claims_and_rendered_device() {
        let mut p = launcher_pod();
        p["spec"]["containers"][0]["resources"]["claims"] =
            json!([{"name": "gpu-claim", "request": "gpu"}]);
        assert_eq!(
            rec(&p).unwrap().incompatible.as_deref(),
            Some("resources.claims[gpu-claim]")
        );
        let mut p = launcher_pod();
        p["spec"]["containers"][0]["resources"]["limits"] =
            json!({"devices.kubevirt.io/mshv": "1", "devices.kubevirt.io/sev": "1"});
        let l = rec(&p).unwrap();
        assert_eq!(l.rendered, Hypervisor::Mshv);
        assert_eq!(l.incompatible.as_deref(), Some("devices.kubevirt.io/sev"));
        // The operator's own device names are hypervisor devices, not host devices.
        let s = Settings {
            device_resource: "example.com/mshv".to_string(),
            ..Settings::default()
        };
        let mut p = launcher_pod();
        p["spec"]["containers"][0]["resources"]["limits"] = json!({"example.com/mshv": "1"});
        assert_eq!(recognize(&p, "default", &s).unwrap().incompatible, None);
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
