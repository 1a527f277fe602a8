#!/usr/bin/env python3
"""Writes the admission-request fixtures in tests/data/ (stdlib only; run from anywhere).

Each fixture is the `request` of an AdmissionReview, as kwctl's --request-path and the wasm
harness take it. The base launcher is reconstructed from kubevirt/kubevirt v1.8.0
pkg/virt-controller/services/template.go and rendercontainer.go (the compute command with
`--hypervisor kvm` as two items, devices in limits copied to requests by API defaulting, the
controller ownerReference, the copied VMI labels and annotations); the variants change only what
each test is about.
"""
import copy
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
UID = "3f0c6a2e-0000-4000-8000-000000000001"
CONTROLLER = "system:serviceaccount:kubevirt:kubevirt-controller"


def review(obj, username=CONTROLLER, operation="CREATE", namespace="default"):
    return {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": username, "uid": "b5f2c2b1-0000-4000-8000-00000000c0de",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:kubevirt", "system:authenticated"]},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }


def compute_command(hypervisor="kvm", hook_sidecars=0):
    cmd = ["/usr/bin/virt-launcher-monitor", "--qemu-timeout", "301s", "--name", "testvm",
           "--uid", UID, "--namespace", "default",
           "--kubevirt-share-dir", "/var/run/kubevirt",
           "--ephemeral-disk-dir", "/var/run/kubevirt-ephemeral-disks",
           "--container-disk-dir", "/var/run/kubevirt/container-disks",
           "--grace-period-seconds", "45", "--hook-sidecars", str(hook_sidecars),
           "--ovmf-path", "/usr/share/OVMF", "--disk-memory-limit", "2097152000"]
    if hypervisor is not None:
        cmd += ["--hypervisor", hypervisor]
    return cmd + ["--run-as-nonroot"]


def launcher_v18(device="devices.kubevirt.io/kvm", hypervisor="kvm"):
    extended = {device: "1", "devices.kubevirt.io/tun": "1", "devices.kubevirt.io/vhost-net": "1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "virt-launcher-testvm-",
            "namespace": "default",
            "labels": {
                "kubevirt.io/domain": "testvm",
                "kubevirt.io": "virt-launcher",
                "kubevirt.io/created-by": UID,
                "vm.kubevirt.io/name": "testvm",
                "vmi.kubevirt.io/id": "testvm",
            },
            "annotations": {
                "kubevirt.io/domain": "testvm",
                "kubectl.kubernetes.io/default-container": "compute",
                "kubevirt.io/migrationTransportUnix": "true",
                "descheduler.alpha.kubernetes.io/request-evict-only": "",
                "kubevirt.io/memory-overhead-bytes": "285212672",
                "kubevirt.io/vm-generation": "1",
            },
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "testvm",
                "uid": UID, "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "hostname": "testvm",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 60,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "readinessGates": [{"conditionType": "kubevirt.io/virtual-machine-unpaused"}],
            "securityContext": {"runAsUser": 107, "runAsGroup": 107, "runAsNonRoot": True, "fsGroup": 107},
            "nodeSelector": {"kubevirt.io/schedulable": "true", "kubernetes.io/arch": "amd64"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "node-labeller.kubevirt.io/obsolete-host-model", "operator": "DoesNotExist"}]}]}}},
            "initContainers": [
                {"name": "guest-console-log", "image": "quay.io/kubevirt/virt-launcher:v1.8.2",
                 "restartPolicy": "Always", "command": ["/usr/bin/virt-tail"],
                 "args": ["--logfile", f"/var/run/kubevirt-private/{UID}/virt-serial0-log"],
                 "resources": {"limits": {"cpu": "15m", "memory": "60M"},
                               "requests": {"cpu": "5m", "memory": "35M"}},
                 "volumeMounts": [{"name": "private", "mountPath": "/var/run/kubevirt-private", "readOnly": True}]},
                {"name": "container-disk-binary", "image": "quay.io/kubevirt/virt-launcher:v1.8.2",
                 "command": ["/usr/bin/cp", "/usr/bin/container-disk", "/init/usr/bin/container-disk"],
                 "volumeMounts": [{"name": "virt-bin-share-dir", "mountPath": "/init/usr/bin"}]},
            ],
            "containers": [
                {
                    "name": "compute",
                    "image": "quay.io/kubevirt/virt-launcher:v1.8.2",
                    "command": compute_command(hypervisor),
                    "env": [
                        {"name": "XDG_CACHE_HOME", "value": "/var/run/kubevirt-private"},
                        {"name": "XDG_CONFIG_HOME", "value": "/var/run/kubevirt-private"},
                        {"name": "XDG_RUNTIME_DIR", "value": "/var/run"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                    "resources": {
                        "limits": dict(extended),
                        "requests": dict(extended, **{"cpu": "100m", "ephemeral-storage": "50M",
                                                      "memory": "2432696320"}),
                    },
                    "securityContext": {"runAsUser": 107, "runAsGroup": 107, "runAsNonRoot": True,
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [
                        {"name": "private", "mountPath": "/var/run/kubevirt-private"},
                        {"name": "public", "mountPath": "/var/run/kubevirt"},
                        {"name": "ephemeral-disks", "mountPath": "/var/run/kubevirt-ephemeral-disks"},
                        {"name": "container-disks", "mountPath": "/var/run/kubevirt/container-disks",
                         "mountPropagation": "HostToContainer"},
                        {"name": "libvirt-runtime", "mountPath": "/var/run/libvirt"},
                        {"name": "sockets", "mountPath": "/var/run/kubevirt/sockets"},
                        {"name": "hotplug-disks", "mountPath": "/var/run/kubevirt/hotplug-disks",
                         "mountPropagation": "HostToContainer"},
                    ],
                },
                {"name": "volumecontainerdisk", "image": "quay.io/containerdisks/fedora:latest",
                 "command": ["/usr/bin/container-disk"]},
            ],
            "volumes": [{"name": n, "emptyDir": {}} for n in [
                "private", "public", "sockets", "virt-bin-share-dir", "libvirt-runtime",
                "ephemeral-disks", "container-disks", "hotplug-disks"]],
        },
    }


MAIN_COMMIT = "d923fdb815cd2016ddaebdaaa51db04133576d72"
# KubeVirt main raised QemuOverhead from 30Mi to 50Mi (PR #18388, kubevirt/kubevirt@d923fdb8
# pkg/hypervisor/kvm/hypervisorbackend.go:42): the same VM's overhead is 20 MiB more.
MAIN_OVERHEAD_DELTA = 20 << 20


def launcher_main(hypervisor="kvm", device="devices.kubevirt.io/kvm"):
    """KubeVirt main (kubevirt/kubevirt@d923fdb8, after PR #18237, merged as 77da8506e2):
    `command` is only the monitor and every flag is in `args`
    (pkg/virt-controller/services/template.go:460-474), the memory-overhead report is a Pod
    annotation (template.go:629-631) and QEMU's overhead is 50Mi."""
    p = launcher_v18(device=device, hypervisor=hypervisor)
    c = p["spec"]["containers"][0]
    flags = c["command"][1:]
    c["command"] = ["/usr/bin/virt-launcher-monitor"]
    c["args"] = flags
    c["image"] = "quay.io/kubevirt/virt-launcher:v1.10.0-alpha.0"
    for init in p["spec"]["initContainers"]:
        init["image"] = c["image"]
    ann = p["metadata"]["annotations"]
    ann["kubevirt.io/memory-overhead-bytes"] = str(int(ann["kubevirt.io/memory-overhead-bytes"]) + MAIN_OVERHEAD_DELTA)
    req = c["resources"]["requests"]
    req["memory"] = str(int(req["memory"]) + MAIN_OVERHEAD_DELTA)
    return p


def launcher_v15():
    """v1.5: no --hypervisor flag, no vmi.kubevirt.io/id label, console log as a plain container,
    no memory-overhead annotation, 16 MiB video RAM (overhead 268435456 + page tables)."""
    p = launcher_v18()
    p["metadata"]["labels"].pop("vmi.kubevirt.io/id")
    p["metadata"]["annotations"].pop("kubevirt.io/memory-overhead-bytes")
    p["spec"]["containers"][0]["command"] = compute_command(hypervisor=None)
    p["spec"]["containers"][0]["image"] = "quay.io/kubevirt/virt-launcher:v1.5.2"
    console = p["spec"]["initContainers"].pop(0)
    console.pop("restartPolicy")
    p["spec"]["containers"].append(console)
    # v1.5: 16 MiB video RAM instead of 32 MiB (kubevirt/kubevirt v1.5.0
    # pkg/virt-controller/services/template.go, VideoRAMOverhead).
    p["spec"]["containers"][0]["resources"]["requests"]["memory"] = "2415919104"
    return p


def pod(name, labels, username="system:serviceaccount:kubevirt:kubevirt-controller"):
    return review({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "registry.example/app:1",
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }, username=username)


def main():
    out = {}
    out["launcher-v1.8-kvm.json"] = review(launcher_v18())
    out["launcher-v1.8-hyperv-direct.json"] = review(
        launcher_v18(device="devices.kubevirt.io/mshv", hypervisor="hyperv-direct"))
    out["launcher-v1.5.json"] = review(launcher_v15())

    p = launcher_v18()
    p["spec"]["containers"][0]["command"] = compute_command(hook_sidecars=1)
    p["metadata"]["annotations"]["hooks.kubevirt.io/hookSidecars"] = \
        '[{"image": "registry.example/smbios-hook:v1", "args": ["--version", "v1alpha2"]}]'
    p["spec"]["containers"].append({
        "name": "hook-sidecar-0", "image": "registry.example/smbios-hook:v1",
        "args": ["--version", "v1alpha2"],
        "resources": {"limits": {"cpu": "200m", "memory": "64M"}, "requests": {"cpu": "10m", "memory": "2M"}},
        "volumeMounts": [{"name": "hook-sidecar-sockets", "mountPath": "/var/run/kubevirt-hooks",
                          "subPath": "hook-sidecar-0"}]})
    p["spec"]["volumes"].append({"name": "hook-sidecar-sockets", "emptyDir": {}})
    out["launcher-hook-sidecars.json"] = review(p)

    p = launcher_v18()
    p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] = [
        {"matchExpressions": [
            {"key": "node-labeller.kubevirt.io/obsolete-host-model", "operator": "DoesNotExist"},
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["westus3-1"]}]},
        {"matchExpressions": [
            {"key": "node-labeller.kubevirt.io/obsolete-host-model", "operator": "DoesNotExist"},
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["westus3-2"]}]},
    ]
    out["launcher-two-term-affinity.json"] = review(p)

    # Hugepages: the guest memory sits in hugepages-2Mi, `memory` holds only the overhead
    # (renderresources.go, hugepages branch); limits get memory too.
    p = launcher_v18()
    res = p["spec"]["containers"][0]["resources"]
    res["requests"]["memory"] = "285212672"
    res["requests"]["hugepages-2Mi"] = "2Gi"
    res["limits"]["memory"] = "285212672"
    res["limits"]["hugepages-2Mi"] = "2Gi"
    p["spec"]["volumes"].append({"name": "hugepages", "emptyDir": {"medium": "HugePages"}})
    out["launcher-hugepages.json"] = review(p)

    p = launcher_v18()
    p["metadata"]["labels"]["kubevirt.io/migrationJobUID"] = "9a1b2c3d-0000-4000-8000-00000000feed"
    p["metadata"]["annotations"]["kubevirt.io/migrationJobName"] = "testvm-migration-x7k2p"
    out["launcher-migration-target.json"] = review(p)

    p = launcher_v18()
    p["metadata"]["annotations"]["hyperv-layered.io/hypervisor"] = "kvm"
    out["launcher-opt-out.json"] = review(p)

    p = launcher_v18()
    for m in ("limits", "requests"):
        p["spec"]["containers"][0]["resources"][m]["devices.kubevirt.io/sev"] = "1"
    out["launcher-sev.json"] = review(p)

    # Dedicated CPUs: virt-controller selects CPU-manager nodes and asks for whole CPUs
    # (kubevirt/kubevirt pkg/virt-controller/services/template.go); an isolated emulator thread
    # only adds one CPU and shows nowhere else. Realtime adds its own node selector.
    p = launcher_v18()
    res = p["spec"]["containers"][0]["resources"]
    for m in ("limits", "requests"):
        res[m]["cpu"] = "3"
    res["limits"]["memory"] = res["requests"]["memory"]
    p["spec"]["nodeSelector"]["kubevirt.io/cpumanager"] = "true"
    dedicated = json.loads(json.dumps(p))
    out["launcher-dedicated.json"] = review(json.loads(json.dumps(p)))
    p["spec"]["nodeSelector"]["kubevirt.io/realtime"] = "true"
    out["launcher-realtime.json"] = review(p)

    out["launcher-spoofed.json"] = review(launcher_v18(), username="alice@example.com")
    out["launcher-update.json"] = review(launcher_v18(), operation="UPDATE")

    # KubeVirt v1.8 with its default feature gates: VmiMemoryOverheadReport is alpha there, so no
    # kubevirt.io/memory-overhead-bytes (kubevirt/kubevirt@v1.8.0
    # pkg/virt-controller/services/template.go:550-551); the policy then records only its own delta.
    p = launcher_v18()
    p["metadata"]["annotations"].pop("kubevirt.io/memory-overhead-bytes")
    out["launcher-v1.8-kvm-no-overhead-report.json"] = review(p)

    out["launcher-main-kvm.json"] = review(launcher_main())
    p = launcher_main()
    p["metadata"]["labels"]["kubevirt.io/migrationJobUID"] = "9a1b2c3d-0000-4000-8000-00000000feed"
    p["metadata"]["annotations"]["kubevirt.io/migrationJobName"] = "testvm-migration-x7k2p"
    out["launcher-main-migration-target.json"] = review(p)
    # Layouts no KubeVirt renders: the flag in both lists, and an entrypoint that is not the
    # monitor (a wrapper script). Left exactly as rendered.
    p = launcher_main()
    p["spec"]["containers"][0]["command"] += ["--hypervisor", "kvm"]
    out["launcher-layout-both-lists.json"] = review(p)
    p = launcher_main()
    p["spec"]["containers"][0]["command"] = ["/bin/sh", "-c", "exec /usr/bin/virt-launcher-monitor \"$@\"", "--"]
    out["launcher-layout-wrapper.json"] = review(p)
    # A GPU through a device plugin (kubevirt/kubevirt@d923fdb8
    # pkg/virt-controller/services/renderresources.go:149-160: deviceName as an extended resource)
    # on a VM with dedicated CPUs.
    p = json.loads(json.dumps(dedicated))
    for m in ("limits", "requests"):
        p["spec"]["containers"][0]["resources"][m]["nvidia.com/GA102GL_A10"] = "1"
    out["launcher-dedicated-gpu.json"] = review(p)

    out["hotplug-pod.json"] = pod("hp-volume-x2k9d", {"kubevirt.io": "hotplug-disk"})
    out["exporter-pod.json"] = pod("virt-export-testvm", {"kubevirt.io": "virt-exporter"})
    out["plain-pod.json"] = pod("web-7d4b9c", {"app": "web"},
                                username="system:serviceaccount:kube-system:replicaset-controller")

    for name, doc in out.items():
        with open(os.path.join(HERE, name), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    print(f"wrote {len(out)} fixtures")


if __name__ == "__main__":
    main()
