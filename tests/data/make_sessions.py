#!/usr/bin/env python3
"""Writes the replay sessions in tests/data/sessions/ (stdlib only).

A session is what `kwctl run --replay-host-capabilities-interactions` reads: the host calls the
policy is expected to make, in order, each with its recorded answer. The wasm harness
(crates/test-harness/src/session.rs) replays the same files strictly, so a policy that makes one call more,
one less, or a different one fails both runners.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "sessions")
NODE_LABEL = "mshv.node.hyperv-layered.io/capable"
# vocab::GUEST_VERIFIED_NODE_LABEL: an operator who wants a guest that really ran sets nodeLabel to it.
GUEST_VERIFIED_LABEL = "mshv.node.hyperv-layered.io/guest-verified"
UID = "3f0c6a2e-0000-4000-8000-000000000001"


def yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)  # a JSON string is a valid YAML double-quoted scalar


def request(tag, fields):
    lines = [f"!{tag}"]
    for k, v in fields:
        if isinstance(v, list):
            lines.append(f"{k}:")
            lines += [f"- {yaml_scalar(x)}" for x in sorted(v)]
        else:
            lines.append(f"{k}: {yaml_scalar(v)}")
    return lines


def exchange(req_lines, payload=None, error=None):
    out = ["- type: Exchange", "  request: |"]
    out += [f"    {l}" for l in req_lines]
    out.append("  response:")
    if error is not None:
        out += ["    type: Error", f"    message: {yaml_scalar(error)}"]
    else:
        body = json.dumps(payload, separators=(",", ":")).replace("'", "''")
        out += ["    type: Success", f"    payload: '{body}'"]
    return "\n".join(out)


def list_nodes(label=NODE_LABEL):
    return request("KubernetesListResourceAll", [
        ("api_version", "v1"), ("kind", "Node"),
        ("label_selector", f"{label}=true"), ("field_selector", None),
        ("field_masks", ["metadata.name", "spec.unschedulable", "status.allocatable", "status.conditions"]),
    ])


def get_kubevirt(name="kubevirt", ns="kubevirt"):
    """The policy reads the KubeVirt CR named in gate.kubevirt with an uncached GET."""
    return request("KubernetesGetResource", [
        ("api_version", "kubevirt.io/v1"), ("kind", "KubeVirt"),
        ("name", name), ("namespace", ns), ("disable_cache", True),
        ("field_masks", ["spec.configuration", "status.phase"]),
    ])


def list_launchers(ns="default"):
    return request("KubernetesListResourceNamespace", [
        ("api_version", "v1"), ("kind", "Pod"), ("namespace", ns),
        ("label_selector", "kubevirt.io=virt-launcher"), ("field_selector", None),
        ("field_masks", ["spec.containers.name", "spec.containers.resources", "status.phase"]),
    ])


def get_vmi(name="testvm", ns="default"):
    return request("KubernetesGetResource", [
        ("api_version", "kubevirt.io/v1"), ("kind", "VirtualMachineInstance"),
        ("name", name), ("namespace", ns), ("disable_cache", True), ("field_masks", None),
    ])


def node(name, capable=True, ready="True", unschedulable=False, mshv="1000", kvm=None, extra=None):
    labels = {"kubernetes.io/hostname": name, "kubevirt.io/schedulable": "true"}
    if capable:
        labels[NODE_LABEL] = "true"
    labels.update(extra or {})
    alloc = {"cpu": "15890m", "memory": "57001152Ki", "pods": "110"}
    if mshv is not None:
        alloc["devices.kubevirt.io/mshv"] = mshv
    if kvm is not None:
        alloc["devices.kubevirt.io/kvm"] = kvm
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"allocatable": alloc,
                       "conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": ready}]}}


def node_list(*nodes):
    return {"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "1"}, "items": list(nodes)}


CAPABLE = node_list(node("aks-l1vh-0"), node("aks-l1vh-1"), node("aks-l1vh-2", unschedulable=True))
NONE_CAPABLE = node_list(node("aks-l1vh-0", ready="False"), node("aks-l1vh-1", mshv="0"))
EMPTY = node_list()
# Mixed mode: a node must advertise both devices (the launcher keeps requesting /dev/kvm).
MIXED_CAPABLE = node_list(node("aks-l1vh-0", kvm="0"), node("aks-l1vh-1", kvm="1k"))


def kubevirt(gates, hypervisor=None, ratio=None):
    config = {"developerConfiguration": {"featureGates": gates}}
    if hypervisor:
        config["hypervisors"] = [{"name": hypervisor}]
    if ratio:
        config["additionalGuestMemoryOverheadRatio"] = ratio
    return {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
            "spec": {"configuration": config}, "status": {"phase": "Deployed"}}


KV_OFF = kubevirt(["Snapshot"])
KV_PER_POD = kubevirt(["Snapshot", "HyperVLayered"])
KV_CLUSTER = kubevirt(["ConfigurableHypervisor"], hypervisor="hyperv-direct")


def kubevirt_evicting(strategy):
    """A KubeVirt CR whose cluster-wide eviction strategy is set (gates as KV_OFF)."""
    kv = kubevirt(["Snapshot"])
    kv["spec"]["configuration"]["evictionStrategy"] = strategy
    return kv


def launcher(uid, phase, device, job=None, record=None):
    labels = {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": uid}
    if job:
        labels["kubevirt.io/migrationJobUID"] = job
    if record:
        labels["hyperv-layered.io/hypervisor"] = record
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"virt-launcher-testvm-{phase.lower()[:5]}", "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "compute", "resources": {
                "limits": {device: "1"}, "requests": {device: "1"}}}]},
            "status": {"phase": phase}}


def pod_list(*pods):
    return {"apiVersion": "v1", "kind": "PodList", "items": list(pods)}


MSHV, KVM = "devices.kubevirt.io/mshv", "devices.kubevirt.io/kvm"
JOB = "9a1b2c3d-0000-4000-8000-00000000feed"

# The VMI behind the fixture launchers: 1 vCPU, 2 GiB, as the API server returns it (defaulted:
# virt-api copies the cluster's eviction strategy into a VMI that sets none, kubevirt/kubevirt@d923fdb8
# pkg/defaults/defaults.go:208-212, and the cluster's default is None, pkg/virt-config/configuration.go:198).
VMI = {
    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
    "metadata": {"name": "testvm", "namespace": "default", "uid": UID},
    "spec": {
        "architecture": "amd64",
        "domain": {
            "cpu": {"cores": 1, "sockets": 1, "threads": 1, "model": "host-model"},
            "memory": {"guest": "2Gi"},
            "resources": {"requests": {"memory": "2Gi"}},
            "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}},
                                  {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}],
                        "interfaces": [{"name": "default", "masquerade": {}}]},
            "machine": {"type": "q35"},
            "features": {"acpi": {"enabled": True}},
            "firmware": {"uuid": "5d307ca9-b3ef-428c-8861-06e72d69f223"},
        },
        "evictionStrategy": "None",
        "networks": [{"name": "default", "pod": {}}],
        "volumes": [{"name": "containerdisk", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}},
                    {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config"}}],
    },
    "status": {"phase": "Scheduling"},
}
VMI_DEDICATED = json.loads(json.dumps(VMI))
VMI_DEDICATED["spec"]["domain"]["cpu"].update({"cores": 2, "dedicatedCpuPlacement": True})
VMI_ISOLATED = json.loads(json.dumps(VMI_DEDICATED))
VMI_ISOLATED["spec"]["domain"]["cpu"]["isolateEmulatorThread"] = True
VMI_HUGEPAGES = json.loads(json.dumps(VMI))
VMI_HUGEPAGES["spec"]["domain"]["memory"]["hugepages"] = {"pageSize": "2Mi"}


def vmi_evicted(strategy):
    """The VMI with another eviction strategy (None: unset, as a VMI created without virt-api's
    defaulting would be)."""
    v = json.loads(json.dumps(VMI))
    if strategy is None:
        v["spec"].pop("evictionStrategy")
    else:
        v["spec"]["evictionStrategy"] = strategy
    return v


# The live-migration rule (liveMigration.keepOnKvm, default [LiveMigrate, LiveMigrateIfPossible]) reads the VMI before
# the node list: every per-Pod candidate for mshv makes that read first.
VMI_READ = exchange(get_vmi(), VMI)

SESSIONS = {
    # gate.mode kubevirt (default)
    "kv-off.yml": [exchange(get_kubevirt(), KV_OFF)],
    "kv-error.yml": [exchange(get_kubevirt(), error="kubevirts.kubevirt.io is forbidden")],
    "kv-per-pod.yml": [exchange(get_kubevirt(), KV_PER_POD), VMI_READ, exchange(list_nodes(), CAPABLE)],
    "kv-per-pod-only.yml": [exchange(get_kubevirt(), KV_PER_POD)],
    "kv-per-pod-no-node.yml": [exchange(get_kubevirt(), KV_PER_POD), VMI_READ,
                               exchange(list_nodes(), NONE_CAPABLE)],
    "kv-cluster-mshv.yml": [exchange(get_kubevirt(), KV_CLUSTER), exchange(list_nodes(), CAPABLE)],
    "kv-cluster-mshv-no-node.yml": [exchange(get_kubevirt(), KV_CLUSTER), exchange(list_nodes(), EMPTY)],
    "kv-per-pod-memory.yml": [exchange(get_kubevirt(), KV_PER_POD), VMI_READ, exchange(list_nodes(), CAPABLE)],
    # gate.mode enabled
    "nodes-error.yml": [VMI_READ, exchange(list_nodes(), error="nodes is forbidden: User cannot list resource")],
    "migration-source-mshv.yml": [
        exchange(list_launchers(), pod_list(launcher(UID, "Running", MSHV, record="mshv"),
                                            launcher("other-vmi", "Running", KVM))),
        exchange(list_nodes(), CAPABLE)],
    "migration-source-kvm.yml": [
        exchange(list_launchers(), pod_list(launcher(UID, "Running", KVM)))],
    "migration-source-missing.yml": [
        exchange(list_launchers(), pod_list(launcher(UID, "Failed", MSHV)))],
    "memory.yml": [VMI_READ, exchange(list_nodes(), CAPABLE), exchange(get_kubevirt(), kubevirt(["Snapshot"]))],
    "memory-hugepages.yml": [exchange(get_vmi(), VMI_HUGEPAGES), exchange(list_nodes(), CAPABLE),
                             exchange(get_kubevirt(), kubevirt(["Snapshot"]))],
    # The VMI read is the live-migration rule's now, before the node list and the memory step.
    "memory-vmi-error.yml": [exchange(get_vmi(), error="virtualmachineinstances.kubevirt.io \"testvm\" not found")],
    # The KubeVirt CR's additionalGuestMemoryOverheadRatio scales the mshv delta as KubeVirt
    # scales its own overhead ("1.5"); a ratio that is not a plain decimal ("abc", which KubeVirt
    # ignores, or "NaN", for which Go's result is platform-dependent) leaves the Pod as rendered
    # (memory-unsized); a CR that cannot be read is a lookup error. The VMI comes first: the
    # live-migration rule reads it before the node list.
    "memory-ratio.yml": [VMI_READ, exchange(list_nodes(), CAPABLE),
                         exchange(get_kubevirt(), kubevirt(["Snapshot"], ratio="1.5"))],
    "memory-ratio-not-float.yml": [VMI_READ, exchange(list_nodes(), CAPABLE),
                                   exchange(get_kubevirt(), kubevirt(["Snapshot"], ratio="abc"))],
    "memory-ratio-nan.yml": [VMI_READ, exchange(list_nodes(), CAPABLE),
                             exchange(get_kubevirt(), kubevirt(["Snapshot"], ratio="NaN"))],
    "memory-kv-error.yml": [VMI_READ, exchange(list_nodes(), CAPABLE),
                            exchange(get_kubevirt(), error="kubevirts.kubevirt.io is forbidden")],
    # A host error with a stack trace (RUST_BACKTRACE on the host): only its first line may
    # reach a warning.
    "kv-error-backtrace.yml": [exchange(get_kubevirt(), error=(
        "kubevirts.kubevirt.io is forbidden: User \"system:serviceaccount:kubewarden:policy-server-default\" "
        "cannot list resource \"kubevirts\" in API group \"kubevirt.io\" at the cluster scope\n\n"
        "Stack backtrace:\n   0: policy_evaluator::callback_handler::kubernetes\n   1: tokio::runtime::task"))],
    # Mixed mode (released KubeVirt configured for KVM, mshv-node-agent serving /dev/mshv).
    "nodes-mixed.yml": [VMI_READ, exchange(list_nodes(), MIXED_CAPABLE)],
    "mixed-memory.yml": [VMI_READ, exchange(list_nodes(), MIXED_CAPABLE),
                         exchange(get_kubevirt(), kubevirt(["Snapshot"]))],
    # Live migration (liveMigration.keepOnKvm).
    "vmi-live-migrate.yml": [exchange(get_vmi(), vmi_evicted("LiveMigrate"))],
    "vmi-live-migrate-if-possible.yml": [exchange(get_vmi(), vmi_evicted("LiveMigrateIfPossible"))],
    "vmi-live-migrate-if-possible-nodes.yml": [exchange(get_vmi(), vmi_evicted("LiveMigrateIfPossible")),
                                               exchange(list_nodes(), CAPABLE)],
    "vmi-unset-kv-live-migrate.yml": [exchange(get_vmi(), vmi_evicted(None)),
                                      exchange(get_kubevirt(), kubevirt_evicting("LiveMigrate"))],
    "vmi-error.yml": [exchange(get_vmi(), error="virtualmachineinstances.kubevirt.io \"testvm\" is forbidden")],
    # Launcher-shape cases (hook sidecars, two-term affinity, mixed without kvm nodes).
    "vmi-nodes-capable.yml": [VMI_READ, exchange(list_nodes(), CAPABLE)],
    # nodeLabel set to the guest-verified label, and no node carries it (the agent labelled its
    # nodes capable, but no guest has run on them yet): the API server's selector returns none.
    "vmi-no-guest-verified-node.yml": [VMI_READ, exchange(list_nodes(GUEST_VERIFIED_LABEL), EMPTY)],
    "vmi-guest-verified-nodes.yml": [VMI_READ, exchange(list_nodes(GUEST_VERIFIED_LABEL), node_list(
        node("aks-l1vh-0", extra={GUEST_VERIFIED_LABEL: "true"})))],
    "mixed-dedicated.yml": [exchange(get_vmi(), VMI_DEDICATED), exchange(list_nodes(), MIXED_CAPABLE)],
    "mixed-dedicated-isolated.yml": [exchange(get_vmi(), VMI_ISOLATED)],
    "mixed-memory-dedicated.yml": [exchange(get_vmi(), VMI_DEDICATED), exchange(list_nodes(), MIXED_CAPABLE),
                                   exchange(get_kubevirt(), kubevirt(["Snapshot"]))],
    "mixed-migration-source-mshv.yml": [
        exchange(list_launchers(), pod_list(launcher(UID, "Running", MSHV, record="mshv"))),
        exchange(list_nodes(), MIXED_CAPABLE)],
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, exchanges in SESSIONS.items():
        with open(os.path.join(OUT, name), "w") as f:
            f.write("# Generated by tests/data/make_sessions.py: edit that, not this.\n")
            f.write("\n".join(exchanges) + "\n")
    # The VMI on its own, for unit tests and the fuzzers.
    with open(os.path.join(HERE, "vmi-testvm.json"), "w") as f:
        json.dump(VMI, f, indent=2)
        f.write("\n")
    print(f"wrote {len(SESSIONS)} sessions")


if __name__ == "__main__":
    main()
