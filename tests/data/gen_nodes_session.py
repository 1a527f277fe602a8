#!/usr/bin/env python3
"""Writes the replay sessions for hyperv-layered's capable-node lookup:

  tests/data/sessions/nodes-capable.yml   3 nodes: 2 capable and Ready, 1 capable but cordoned
  tests/data/sessions/nodes-1000.yml      1000 capable, Ready nodes (benchmark scale)

Both answer the single request the policy makes,

  list_resources_all  v1/Node  label_selector mshv.node.hyperv-layered.io/capable=true
                      field_masks {metadata.name, spec.unschedulable, status.allocatable,
                                   status.conditions}

in the format `kwctl run --replay-host-capabilities-interactions` reads (see
crates/test-harness/src/session.rs for the sources). The payload is shaped like policy-server's answer
(kubewarden-controller crates/policy-evaluator/src/callback_handler/kubernetes/client.rs and
reflector.rs): an ObjectList with apiVersion v1, kind NodeList (k8s-openapi's List<Node> rejects
any other kind), empty list metadata; each Node keeps its full metadata minus managedFields and
the last-applied annotation, and spec/status pruned to the field masks.

Deterministic: same output on every run. Python 3 standard library only.
Usage: python3 tests/data/gen_nodes_session.py   (from anywhere)
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "sessions")

CAPABLE = "mshv.node.hyperv-layered.io/capable"
SELECTOR = CAPABLE + "=true"
# Sorted, because the host compares a BTreeSet and kwctl records it sorted.
FIELD_MASKS = ["metadata.name", "spec.unschedulable", "status.allocatable", "status.conditions"]

HEARTBEAT = "2026-08-14T09:41:27Z"
CREATED = "2026-07-30T12:03:11Z"
ZONES = ["westeurope-1", "westeurope-2", "westeurope-3"]


def node(i, pool="mshvpool", ready=True, unschedulable=False):
    name = "aks-%s-31415926-vmss%06x" % (pool, i)
    zone = ZONES[i % len(ZONES)]
    conditions = [
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
             "kubelet has sufficient memory available"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        cond("Ready", "True" if ready else "False",
             "KubeletReady" if ready else "KubeletNotReady",
             "kubelet is posting ready status" if ready
             else "container runtime network not ready"),
    ]
    obj = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": "6d1f%04x-2b7c-4e0a-9c3d-%012x" % (i & 0xFFFF, 0x5EED0000 + i),
            "resourceVersion": str(48210000 + 7 * i),
            "creationTimestamp": CREATED,
            "labels": {
                "agentpool": pool,
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/instance-type": "Standard_D16s_v5",
                "beta.kubernetes.io/os": "linux",
                "failure-domain.beta.kubernetes.io/region": "westeurope",
                "failure-domain.beta.kubernetes.io/zone": zone,
                "kubernetes.azure.com/agentpool": pool,
                "kubernetes.azure.com/mode": "user",
                "kubernetes.azure.com/node-image-version": "AKSUbuntu-2404gen2containerd-202607.21.0",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubevirt.io/schedulable": "true",
                CAPABLE: "true",
                "mshv.node.hyperv-layered.io/partition-type": "l1vh",
                "mshv.node.hyperv-layered.io/hv-build": "26102",
                "node.kubernetes.io/instance-type": "Standard_D16s_v5",
                "topology.kubernetes.io/region": "westeurope",
                "topology.kubernetes.io/zone": zone,
            },
            "annotations": {
                "kubevirt.io/heartbeat": HEARTBEAT,
                "mshv.node.hyperv-layered.io/probe":
                    '{"device":"/dev/mshv","open":"ok","kernel":"6.6.87.2-microsoft-standard","at":"%s"}'
                    % HEARTBEAT,
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        # spec pruned to spec.unschedulable, which the API server omits unless true.
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {
            "allocatable": {
                "cpu": "15740m",
                "devices.kubevirt.io/mshv": "1000",
                "devices.kubevirt.io/tun": "1000",
                "devices.kubevirt.io/vhost-net": "1000",
                "ephemeral-storage": "119703055367",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": "57890828Ki",
                "pods": "110",
            },
            "conditions": conditions,
        },
    }
    return obj


def cond(kind, status, reason, message):
    return {
        "lastHeartbeatTime": HEARTBEAT,
        "lastTransitionTime": CREATED,
        "message": message,
        "reason": reason,
        "status": status,
        "type": kind,
    }


def session_yaml(nodes):
    payload = json.dumps(
        {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": nodes},
        separators=(",", ":"),
        sort_keys=True,
    )
    # A YAML single-quoted scalar: only ' needs escaping (as ''), and the JSON is one line.
    quoted = "'" + payload.replace("'", "''") + "'"
    masks = "".join("    - %s\n" % m for m in FIELD_MASKS)
    return (
        "# Generated by tests/data/gen_nodes_session.py: edit that script, not this file.\n"
        "- type: Exchange\n"
        "  request: |\n"
        "    !KubernetesListResourceAll\n"
        "    api_version: v1\n"
        "    kind: Node\n"
        "    label_selector: %s\n"
        "    field_selector: null\n"
        "    field_masks:\n"
        "%s"
        "  response:\n"
        "    type: Success\n"
        "    payload: %s\n" % (SELECTOR, masks, quoted)
    )


def write(name, nodes):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(session_yaml(nodes))
    print("wrote %s (%d nodes, %d bytes)" % (os.path.relpath(path), len(nodes), os.path.getsize(path)))


def main():
    write("nodes-capable.yml", [
        node(0),
        node(1),
        node(2, unschedulable=True),
    ])
    write("nodes-1000.yml", [node(i) for i in range(1000)])


if __name__ == "__main__":
    main()
