//! The two halves of mixed mode, composed: the launcher Pod the policy produces (its golden
//! patch for case `mixed-selected`, applied to the v1.8 fixture launcher) and the devices
//! kubelet would hand its compute container on a node of a KVM-configured KubeVirt.
//!
//! On such a node virt-handler serves the `kvm`, `tun` and `vhost-net` device plugins
//! (kubevirt/kubevirt `pkg/virt-handler/device-manager/device_controller.go:111-120` at v1.9.0),
//! each answering `Allocate` with `DeviceSpec{/dev/<dev>, /dev/<dev>, "rw"|"rwm"}`
//! (`generic_device.go:246-248`); that answer is reproduced here (there is no virt-handler to run).
//! `devices.kubevirt.io/mshv` is served by mshv-node-agent's own plugin, called for real over a
//! unix socket. The container must end up with both `/dev/kvm` (virt-handler chowns it and
//! adds its cgroup rule, and fails the VM without it) and `/dev/mshv` (the launcher's QEMU).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use mshv_node_agent::device_plugin::api::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use serde_json::Value;

fn data(path: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("JSON")
}

/// The Pod the API server stores: the fixture's object with the policy's patch applied.
fn patched_pod(request: &str, case: &str) -> Value {
    let mut pod = data(request)["object"].clone();
    let patch: json_patch::Patch =
        serde_json::from_value(data(&format!("expected/{case}.json"))).expect("patch");
    json_patch::patch(&mut pod, &patch).expect("the golden patch applies");
    pod
}

/// The extended resources (`<domain>/<name>`, not `kubernetes.io`) the compute container asks
/// for; the API server requires requests == limits for them, checked here too.
fn device_requests(pod: &Value) -> BTreeSet<String> {
    let compute = pod["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "compute"))
        .expect("compute container");
    let extended = |map: &str| -> BTreeSet<String> {
        compute["resources"][map]
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| k.starts_with("devices.kubevirt.io/"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        extended("limits"),
        extended("requests"),
        "limits != requests"
    );
    extended("limits")
}

/// virt-handler's generic plugins on a KVM-configured node: resource → device path.
fn virt_handler_kvm_node(resource: &str) -> Option<&'static str> {
    match resource {
        "devices.kubevirt.io/kvm" => Some("/dev/kvm"),
        "devices.kubevirt.io/tun" => Some("/dev/net/tun"),
        "devices.kubevirt.io/vhost-net" => Some("/dev/vhost-net"),
        _ => None,
    }
}

async fn container_devices(pod: &Value) -> BTreeSet<String> {
    let mut plugin = common::plugin_socket::serve_plugin("devices.kubevirt.io/mshv").await;
    let agent = &mut plugin.client;
    let mut devices = BTreeSet::new();
    for resource in device_requests(pod) {
        if resource == "devices.kubevirt.io/mshv" {
            let reply = agent
                .allocate(AllocateRequest {
                    container_requests: vec![ContainerAllocateRequest {
                        devices_ids: vec!["mshv7".into()],
                    }],
                })
                .await
                .expect("Allocate")
                .into_inner();
            for d in &reply.container_responses[0].devices {
                assert_eq!(d.host_path, d.container_path);
                assert_eq!(d.permissions, "rwm");
                devices.insert(d.container_path.clone());
            }
        } else {
            let path = virt_handler_kvm_node(&resource)
                .unwrap_or_else(|| panic!("no plugin serves {resource}: the Pod stays Pending"));
            devices.insert(path.to_string());
        }
    }
    devices
}

#[tokio::test]
async fn a_mixed_launcher_gets_kvm_from_virt_handler_and_mshv_from_the_agent() {
    let pod = patched_pod("launcher-v1.8-kvm.json", "mixed-selected");
    let devices = container_devices(&pod).await;
    assert!(devices.contains("/dev/kvm"), "{devices:?}");
    assert!(devices.contains("/dev/mshv"), "{devices:?}");
    let command = pod["spec"]["containers"][0]["command"]
        .as_array()
        .expect("command");
    let at = command
        .iter()
        .position(|a| a == "--hypervisor")
        .expect("--hypervisor");
    assert_eq!(command[at + 1], "hyperv-direct");
}

#[tokio::test]
async fn a_replaced_device_would_leave_virt_handler_without_dev_kvm() {
    // The perPodHypervisor edit (KVM device replaced): fine for a virt-handler that serves
    // both devices, but on a KVM-configured release virt-handler needs /dev/kvm in the
    // container, which this Pod no longer gets. This is why mixed mode adds instead.
    let pod = patched_pod("launcher-v1.8-kvm.json", "v18-per-pod-selected");
    let devices = container_devices(&pod).await;
    assert!(devices.contains("/dev/mshv"), "{devices:?}");
    assert!(!devices.contains("/dev/kvm"), "{devices:?}");
}

#[tokio::test]
async fn a_launcher_left_on_kvm_gets_no_mshv() {
    let pod = patched_pod("launcher-v1.8-kvm.json", "mixed-no-kvm-node");
    let devices = container_devices(&pod).await;
    assert!(
        devices.contains("/dev/kvm") && !devices.contains("/dev/mshv"),
        "{devices:?}"
    );
}
