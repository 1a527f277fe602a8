#!/usr/bin/env python3
"""Mutation check: each entry breaks one rule of the extracted rule file in a plausible way;
`promtool test rules` must then FAIL. A mutation whose text is no longer found is an error too
(the list must follow the rules). Texts match whitespace-insensitively.

  mutations.py RULES TESTDIR     (TESTDIR holds rules.yaml and the *.test.yaml files)
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

# (rule, what the mistake is, text in the rule file, replacement)
MUTATIONS = [
    ("node_hypervisor_reason:hyperv_layered_launchers_running:count", "counts non-Running launchers",
     'kube_pod_status_phase{phase="Running"} == 1', 'kube_pod_status_phase{phase="Running"}'),
    ("node_hypervisor_reason:hyperv_layered_launchers_running:count", "counts any kubevirt.io Pod",
     'count by (node, hypervisor, reason) ( label_replace( label_replace( max by (namespace, pod, label_hyperv_layered_io_hypervisor, label_hyperv_layered_io_reason) ( kube_pod_labels{label_kubevirt_io="virt-launcher"}),',
     'count by (node, hypervisor, reason) ( label_replace( label_replace( max by (namespace, pod, label_hyperv_layered_io_hypervisor, label_hyperv_layered_io_reason) ( kube_pod_labels{label_kubevirt_io!=""}),'),
    ("node_hypervisor_reason:hyperv_layered_launchers_running:count", "a Pod exported twice counted twice",
     'count by (node, hypervisor, reason) ( label_replace( label_replace( max by (namespace, pod, label_hyperv_layered_io_hypervisor, label_hyperv_layered_io_reason) ( kube_pod_labels{label_kubevirt_io="virt-launcher"}),',
     'count by (node, hypervisor, reason) ( label_replace( label_replace( ( kube_pod_labels{label_kubevirt_io="virt-launcher"}),'),
    ("phase_hypervisor_reason:hyperv_layered_launchers:count", "a Pod exported twice counted twice",
     'count by (phase, hypervisor, reason) ( label_replace( label_replace( max by (namespace, pod, label_hyperv_layered_io_hypervisor, label_hyperv_layered_io_reason) ( kube_pod_labels{label_kubevirt_io="virt-launcher"}),',
     'count by (phase, hypervisor, reason) ( label_replace( label_replace( ( kube_pod_labels{label_kubevirt_io="virt-launcher"}),'),
    ("hypervisor_reason:hyperv_layered_launchers_running:count", "counts nodes instead of Pods",
     "sum by (hypervisor, reason) (node_hypervisor_reason", "count by (hypervisor, reason) (node_hypervisor_reason"),
    ("hypervisor:hyperv_layered_launchers_running:count", "counts series instead of Pods",
     "sum by (hypervisor) (node_hypervisor_reason", "count by (hypervisor) (node_hypervisor_reason"),
    ("phase_hypervisor_reason:hyperv_layered_launchers:count", "counts every phase series (0 or 1)",
     "max by (namespace, pod, phase) (kube_pod_status_phase == 1)", "max by (namespace, pod, phase) (kube_pod_status_phase)"),
    ("reason:hyperv_layered_launchers_fallback:count", "opt-out counted as a fallback",
     'reason=~"no-capable-node|', 'reason=~"opt-out|no-capable-node|'),
    ("reason:hyperv_layered_launchers_fallback:count", "launcher-image forgotten",
     "|launcher-image|", "|"),
    ("reason:hyperv_layered_launchers_fallback:count", "Succeeded Pods counted",
     'phase=~"Pending|Running", hypervisor="kvm"', 'hypervisor="kvm"'),
    ("cluster:hyperv_layered_launchers_decided:count", "undecided launchers counted",
     'hypervisor=~"kvm|mshv"})', 'hypervisor=~".*"})'),
    ("cluster:hyperv_layered_launchers_fallback:ratio", "no 0 when nothing fell back",
     "(sum(reason:hyperv_layered_launchers_fallback:count) or vector(0))", "sum(reason:hyperv_layered_launchers_fallback:count)"),
    ("cluster:hyperv_layered_nodes_capable:count", "double counts a node exported twice",
     'count(max by (node) (kube_node_labels{label_mshv_node_hyperv_layered_io_capable="true"}))\n',
     'count(kube_node_labels{label_mshv_node_hyperv_layered_io_capable="true"})\n'),
    ("cluster:hyperv_layered_nodes_mshv_allocatable:count", "counts 0 allocatable",
     'count(max by (node) (kube_node_status_allocatable{resource="devices_kubevirt_io_mshv"}) > 0)',
     'count(max by (node) (kube_node_status_allocatable{resource="devices_kubevirt_io_mshv"}) >= 0)'),
    ("cluster:hyperv_layered_nodes_available:count", "NotReady nodes counted",
     'and on (node) (max by (node) (kube_node_status_condition{condition="Ready", status="true"}) == 1)\n', ""),
    ("cluster:hyperv_layered_nodes_available:count", "cordoned nodes counted",
     "and on (node) (max by (node) (kube_node_spec_unschedulable) == 0)\n", ""),
    ("cluster:hyperv_layered_nodes_with_hypervisor_device:count", "kvm only (upstream's mistake)",
     'resource=~"devices_kubevirt_io_(kvm|mshv)"', 'resource="devices_kubevirt_io_kvm"'),
    ("state_partition_type:mshv_node_agent_capable:count", "sums the 0/1 gauge",
     "count by (state, partition_type) (mshv_node_agent_capable)", "sum by (state, partition_type) (mshv_node_agent_capable)"),
    ("node_result:mshv_node_agent_probes:rate5m", "loses the result label",
     "sum by (node, result) (rate(mshv_node_agent_probes_total[5m]))", "sum by (node) (rate(mshv_node_agent_probes_total[5m]))"),
    ("node:mshv_node_agent_probes:rate5m", "max instead of sum",
     "sum by (node) (rate(mshv_node_agent_probes_total[5m]))", "max by (node) (rate(mshv_node_agent_probes_total[5m]))"),
    ("node_result:mshv_node_agent_label_syncs:rate5m", "increase instead of rate",
     "sum by (node, result) (rate(mshv_node_agent_label_syncs_total[5m]))", "sum by (node, result) (increase(mshv_node_agent_label_syncs_total[5m]))"),
    ("node_quantile:mshv_node_agent_probe_duration_seconds:histogram_quantile", "0.9 labelled 0.99",
     "histogram_quantile(0.99,", "histogram_quantile(0.9,"),
    ("node_quantile:mshv_node_agent_probe_duration_seconds:histogram_quantile", "whole lifetime instead of the last 5m",
     "histogram_quantile(0.5, sum by (node, le) (rate(mshv_node_agent_probe_duration_seconds_bucket[5m])))",
     "histogram_quantile(0.5, sum by (node, le) (mshv_node_agent_probe_duration_seconds_bucket))"),
    ("state:mshv_node_agent_device_plugin_state:count", "counts the 0 series of other states",
     "count by (state) (mshv_node_agent_device_plugin_state == 1)", "count by (state) (mshv_node_agent_device_plugin_state)"),
    ("cluster:mshv_node_agent_device_plugin_healthy_devices:sum", "max instead of sum",
     "sum(mshv_node_agent_device_plugin_healthy_devices)", "max(mshv_node_agent_device_plugin_healthy_devices)"),
    ("cluster:mshv_node_agent_device_plugin_allocations:rate5m", "increase instead of rate",
     "sum(rate(mshv_node_agent_device_plugin_allocations_total[5m]))", "sum(increase(mshv_node_agent_device_plugin_allocations_total[5m]))"),
    ("HyperVLayeredNoCapableNode", "critical rule without its hypervisor filter",
     'reason="no-capable-node", hypervisor="mshv", phase=~"Pending|Running"', 'reason="no-capable-node", phase=~"Pending|Running"'),
    ("HyperVLayeredNoCapableNode", "ignores Pod phase (Succeeded Pods counted)",
     'reason="no-capable-node", hypervisor="kvm", phase=~"Pending|Running"', 'reason="no-capable-node", hypervisor="kvm"'),
    ("HyperVLayeredNoCapableNode", "ignores whether a capable node exists now",
     "and on () (cluster:hyperv_layered_nodes_available:count == 0)\n  for: 15m",
     "and on () (cluster:hyperv_layered_nodes_available:count >= 0)\n  for: 15m"),
    ("HyperVLayeredNodeLostCapability", "agent path inverted",
     "(max by (node) (mshv_node_agent_capable) == 0)\n", "(max by (node) (mshv_node_agent_capable) == 1)\n"),
    ("HyperVLayeredNodeLostCapability", "node-label path dropped",
     '  or on (node)\n    (max by (node) (kube_node_labels) unless on (node) kube_node_labels{label_mshv_node_hyperv_layered_io_capable="true"})\n', ""),
    ("HyperVLayeredNodeLostCapability", "counts KVM VMs too",
     'node_hypervisor_reason:hyperv_layered_launchers_running:count{hypervisor="mshv"}) > 0)',
     "node_hypervisor_reason:hyperv_layered_launchers_running:count) > 0)"),
    ("HyperVLayeredFallbackRatioHigh", ">= instead of >",
     "cluster:hyperv_layered_launchers_fallback:ratio > 0.1", "cluster:hyperv_layered_launchers_fallback:ratio >= 0.1"),
    ("HyperVLayeredNoAvailableNodesToRunVMs", "upstream's kvm-only count",
     "cluster:hyperv_layered_nodes_with_hypervisor_device:count == 0",
     '(count(kube_node_status_allocatable{resource="devices_kubevirt_io_kvm"} != 0) or on () vector(0)) == 0'),
    ("HyperVLayeredNoAvailableNodesToRunVMs", "emulation ignored",
     "and on () (sum(kubevirt_configuration_emulation_enabled) or on () vector(0)) == 0\n", ""),
    ("MshvNodeAgentDown", "any job's target",
     'up{job="mshv-node-agent"} == 0', "up == 0"),
    ("MshvNodeAgentAbsent", "absent over every job",
     'absent(up{job="mshv-node-agent"})', "absent(up)"),
    ("MshvNodeAgentNotProbing", "a 0 rate counts as probing",
     "unless on (node) (node:mshv_node_agent_probes:rate5m > 0)", "unless on (node) (node:mshv_node_agent_probes:rate5m >= 0)"),
    ("MshvNodeAgentNotProbing", "down agents included",
     '(max by (node) (up{job="mshv-node-agent"}) == 1)', '(max by (node) (up{job="mshv-node-agent"}) >= 0)'),
    ("MshvNodeAgentLeaseStale", "down agents included",
     'and on (node) (max by (node) (up{job="mshv-node-agent"} == 1))', 'and on (node) (max by (node) (up{job="mshv-node-agent"} >= 0))'),
    ("MshvNodeAgentLeaseStale", "an expired Lease taken for a live one",
     'mshv_node_agent_lease_last_renewal_timestamp_seconds{job="mshv-node-agent"}) > 300)',
     'mshv_node_agent_lease_last_renewal_timestamp_seconds{job="mshv-node-agent"}) > 3000)'),
    ("MshvNodeAgentLeaseStale", "a renewing agent flagged",
     '(time() - max by (node)', '(time() + max by (node)'),
    ("MshvNodeAgentProbeErrors", "every non-capable result taken as an error",
     'node_result:mshv_node_agent_probes:rate5m{result="error"} > 0', 'node_result:mshv_node_agent_probes:rate5m{result!="capable"} > 0'),
    ("MshvNodeAgentLabelSyncErrors", "a past error keeps firing",
     'node_result:mshv_node_agent_label_syncs:rate5m{result="error"} > 0', 'node_result:mshv_node_agent_label_syncs:rate5m{result="error"} >= 0'),
    ("MshvDevicePluginUnhealthy", "capability not required",
     "and on (node) (max by (node) (mshv_node_agent_capable) == 1)\n", ""),
    ("MshvDevicePluginUnhealthy", "error state missed",
     'mshv_node_agent_device_plugin_state{state="error"}', 'mshv_node_agent_device_plugin_state{state="disabled"}'),
    ("MshvDevicePluginUnhealthy", "healthy plugins flagged",
     "(max by (node) (mshv_node_agent_device_plugin_healthy_devices) == 0)", "(max by (node) (mshv_node_agent_device_plugin_healthy_devices) >= 0)"),
    # speed-up (issue 17)
    ("node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio", "p99 mixed into the median",
     'mshv_node_agent_bench_seconds{hypervisor="mshv", quantile="0.5"}', 'mshv_node_agent_bench_seconds{hypervisor="mshv"}'),
    ("node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio", "ratio inverted (KVM over mshv)",
     'max by (node, scenario) (mshv_node_agent_bench_seconds{hypervisor="mshv", quantile="0.5"}) / on (node, scenario) (max by (node, scenario) (mshv_node_agent_bench_seconds{hypervisor="kvm", quantile="0.5"}) > 0)',
     'max by (node, scenario) (mshv_node_agent_bench_seconds{hypervisor="kvm", quantile="0.5"}) / on (node, scenario) (max by (node, scenario) (mshv_node_agent_bench_seconds{hypervisor="mshv", quantile="0.5"}) > 0)'),
    ("node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio", "a 0 KVM median divides",
     'quantile="0.5"}) > 0)', 'quantile="0.5"}))'),
    ("node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio", "an agent scraped twice breaks the match",
     'max by (node, scenario) (mshv_node_agent_bench_seconds{hypervisor="mshv", quantile="0.5"})',
     'sum by (node, scenario) (mshv_node_agent_bench_seconds{hypervisor="mshv", quantile="0.5"})'),
    ("scenario:mshv_node_agent_bench_mshv_over_kvm_ratio:median", "mean instead of median",
     "quantile by (scenario) (0.5, node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio)",
     "avg by (scenario) (node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio)"),
    ("namespace_pod_hypervisor:hyperv_layered_launcher_time_to_ready_seconds:max", "migration targets counted",
     ', label_hyperv_layered_io_reason!~"migration-source-.*"}', '}'),
    ("namespace_pod_hypervisor:hyperv_layered_launcher_time_to_ready_seconds:max", "any Pod with a record counted",
     'kube_pod_labels{label_kubevirt_io="virt-launcher", label_hyperv_layered_io_hypervisor=~"kvm|mshv"',
     'kube_pod_labels{label_hyperv_layered_io_hypervisor=~"kvm|mshv"'),
    ("namespace_pod_hypervisor:hyperv_layered_launcher_time_to_ready_seconds:max", "start to Ready taken as Ready timestamp",
     "- on (namespace, pod) max by (namespace, pod) (kube_pod_created)", ""),
    ("hypervisor:hyperv_layered_launchers_ready6h:count", "no 6h window",
     "count by (hypervisor) ( namespace_pod_hypervisor:hyperv_layered_launcher_time_to_ready_seconds:max and on (namespace, pod) (max by (namespace, pod) (kube_pod_status_ready_time) > time() - 21600) )",
     "count by (hypervisor) ( namespace_pod_hypervisor:hyperv_layered_launcher_time_to_ready_seconds:max )"),
    ("hypervisor:hyperv_layered_launcher_time_to_ready_seconds:median6h", "mean instead of median",
     "quantile by (hypervisor) (0.5,", "avg by (hypervisor) ("),
    ("hypervisor:hyperv_layered_launcher_time_to_ready_seconds:median6h", "a 1h window",
     "quantile by (hypervisor) (0.5, namespace_pod_hypervisor:hyperv_layered_launcher_time_to_ready_seconds:max and on (namespace, pod) (max by (namespace, pod) (kube_pod_status_ready_time) > time() - 21600)",
     "quantile by (hypervisor) (0.5, namespace_pod_hypervisor:hyperv_layered_launcher_time_to_ready_seconds:max and on (namespace, pod) (max by (namespace, pod) (kube_pod_status_ready_time) > time() - 3600)"),
    ("cluster:hyperv_layered_launcher_time_to_ready_mshv_over_kvm:ratio6h", "KVM over mshv",
     'sum(hypervisor:hyperv_layered_launcher_time_to_ready_seconds:median6h{hypervisor="mshv"}) / on () (sum(hypervisor:hyperv_layered_launcher_time_to_ready_seconds:median6h{hypervisor="kvm"}) > 0)',
     'sum(hypervisor:hyperv_layered_launcher_time_to_ready_seconds:median6h{hypervisor="kvm"}) / on () (sum(hypervisor:hyperv_layered_launcher_time_to_ready_seconds:median6h{hypervisor="mshv"}) > 0)'),
    ("HyperVLayeredNoSpeedup", ">= instead of > (exactly 10 % faster alerts)",
     'node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio{scenario="exit-to-vmm"} > 0.9',
     'node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio{scenario="exit-to-vmm"} >= 0.9'),
    ("HyperVLayeredNoSpeedup", "any scenario",
     'node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio{scenario="exit-to-vmm"} > 0.9',
     'node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio > 0.9'),
    ("HyperVLayeredNoSpeedup", "either hypervisor alone compared with a constant",
     'node_scenario:mshv_node_agent_bench_mshv_over_kvm:ratio{scenario="exit-to-vmm"} > 0.9',
     'max by (node, scenario) (mshv_node_agent_bench_seconds{scenario="exit-to-vmm", quantile="0.5"}) > 0.9'),
    ("HyperVLayeredSlowStart", "mshv sample count ignored",
     'and on () (sum(hypervisor:hyperv_layered_launchers_ready6h:count{hypervisor="mshv"}) >= 20)', ""),
    ("HyperVLayeredSlowStart", "KVM sample count ignored",
     'and on () (sum(hypervisor:hyperv_layered_launchers_ready6h:count{hypervisor="kvm"}) >= 20)', ""),
    ("HyperVLayeredSlowStart", "21 required",
     '{hypervisor="mshv"}) >= 20)', '{hypervisor="mshv"}) > 20)'),
    ("HyperVLayeredSlowStart", ">= instead of > (meeting the SLA alerts)",
     "cluster:hyperv_layered_launcher_time_to_ready_mshv_over_kvm:ratio6h > 0.9", "cluster:hyperv_layered_launcher_time_to_ready_mshv_over_kvm:ratio6h >= 0.9"),
]


def main(rules, testdir):
    with open(rules) as f:
        original = f.read()
    tests = sorted(glob.glob(os.path.join(testdir, "*.test.yaml")))

    def run(mutation):
        rule, what, old, new = mutation
        # whitespace-insensitive: the rule file's indentation is not part of the mutation
        pattern = re.compile(r"\s+".join(re.escape(tok) for tok in old.split()))
        n = len(pattern.findall(original))
        if n != 1:
            return "mutation %s (%s): text found %d times, expected once" % (rule, what, n)
        with tempfile.TemporaryDirectory() as tmp:
            for t in tests:
                shutil.copy(t, tmp)
            with open(os.path.join(tmp, "rules.yaml"), "w") as f:
                f.write(pattern.sub(lambda _: new, original, count=1))
            r = subprocess.run(["promtool", "test", "rules"] + [os.path.join(tmp, os.path.basename(t)) for t in tests],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode == 0:
            return "mutation %s (%s): SURVIVED, the tests did not notice" % (rule, what)
        return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(run, MUTATIONS))
    errors = [e for e in results if e]
    for e in errors:
        print(e, file=sys.stderr)
    covered = {m[0] for m, e in zip(MUTATIONS, results) if e is None}
    print("mutations: %d applied, %d caught by the tests, %d rules/alerts mutated: %s"
          % (len(MUTATIONS), len(MUTATIONS) - len(errors), len(covered), "FAILED" if errors else "ok"))
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
