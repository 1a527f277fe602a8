#!/usr/bin/env bash
# Start the two benchmark VMs of deploy/benchmark/ (identical; one opted out to KVM), wait for
# the result line each prints to its serial console, and print them side by side with ratios.
#
#   scripts/compare-vms.sh [-n NAMESPACE] [--node NODE] [--timeout SECONDS] [--out DIR] [--keep]
#   scripts/compare-vms.sh table KVM_CONSOLE_LOG MSHV_CONSOLE_LOG [KVM_POD_JSON MSHV_POD_JSON]
#
# The first form needs kubectl and jq (virtctl is used for start/stop when present) and a
# cluster with KubeVirt and the policy; it saves each VM's console log and launcher Pod under
# --out (default: a new temporary directory) and then runs the second form on them. The second
# form needs only bash, awk and jq: it is what tests/benchmark/compare-vms.bats tests.
#
# The console log is the launcher's `guest-console-log` container (the VMs set
# logSerialConsole: true; kubevirt/kubevirt@v1.9.0 pkg/virt-controller/services/serialconsolelog.go).
# docs/benchmark.md says what every number means.
set -euo pipefail

MARK="HVL-BENCH v=1"
DECISION_KEY="hyperv-layered.io/hypervisor" # src/choice.rs HYPERVISOR_KEY
REASON_KEY="hyperv-layered.io/reason"       # src/choice.rs REASON_KEY

die() { echo "compare-vms: $*" >&2; exit 1; }

# hvl_fields LOG: the last result line of a console log as `key value` lines (serial consoles
# end lines with CR LF and may carry escape sequences before the line).
hvl_fields() {
  local line
  line=$(tr -d '\r' <"$1" | grep -o "$MARK .*" | tail -n 1) || true
  [ -n "$line" ] || { echo "compare-vms: no '$MARK' line in $1" >&2; return 1; }
  printf '%s\n' "${line#"$MARK" }" | tr ' ' '\n' | awk -F= 'NF >= 2 && $1 != "" { print $1, substr($0, length($1) + 2) }'
}

# pod_fields POD_JSON: the policy's decision, the node and the seconds from creation to Ready.
pod_fields() {
  jq -r --arg d "$DECISION_KEY" --arg r "$REASON_KEY" '. as $p |
    "decided " + (.metadata.labels[$d] // "none"),
    "reason " + (.metadata.labels[$r] // "none"),
    "node " + (.spec.nodeName // "none"),
    "ready_s " + ([.status.conditions[]? | select(.type == "Ready" and .status == "True")
                   | (.lastTransitionTime | fromdateiso8601) - ($p.metadata.creationTimestamp | fromdateiso8601)]
                  | if length == 0 then "NA" else (.[0] | tostring) end)
  ' "$1"
}

# hvl_table KVM_LOG MSHV_LOG [KVM_POD MSHV_POD]
hvl_table() {
  local kvm mshv
  kvm=$(hvl_fields "$1") && mshv=$(hvl_fields "$2") || return 1
  if [ $# -ge 4 ]; then
    kvm+=$'\n'$(pod_fields "$3") && mshv+=$'\n'$(pod_fields "$4") || return 1
  fi
  awk -v kvm="$kvm" -v mshv="$mshv" '
    function load(text, into,   lines, n, i, kv) {
      n = split(text, lines, "\n")
      for (i = 1; i <= n; i++) if (split(lines[i], kv, " ") == 2) into[kv[1]] = kv[2]
    }
    function num(v) { return v ~ /^[0-9]+(\.[0-9]+)?$/ }
    function get(a, k) { return (k in a) ? a[k] : "NA" }
    BEGIN {
      load(kvm, K); load(mshv, M)
      printf "%-22s %-22s %s\n", "", "KVM VM", "mshv VM"
      printf "%-22s %-22s %s\n", "VM", get(K, "name"), get(M, "name")
      if ("decided" in K || "decided" in M)
        printf "%-22s %-22s %s\n", "policy decision", get(K, "decided") " (" get(K, "reason") ")", get(M, "decided") " (" get(M, "reason") ")"
      if ("node" in K || "node" in M)
        printf "%-22s %-22s %s\n", "node", get(K, "node"), get(M, "node")
      printf "%-22s %-22s %s\n", "guest detects", get(K, "virt"), get(M, "virt")
      print ""
      printf "%-22s %-5s %-6s %10s %10s %9s %9s\n", "metric", "unit", "better", "KVM", "mshv", "mshv/KVM", "speed-up"
      n = split("ready_s|time to Ready|s|lower;boot_s|boot to workload|s|lower;cpu_sha256_mbps|cpu sha256|MB/s|higher;mem_fill_mbps|memory fill|MB/s|higher;disk_write_mbps|disk write|MB/s|higher;disk_read_mbps|disk read|MB/s|higher", rows, ";")
      for (i = 1; i <= n; i++) {
        split(rows[i], r, "|")
        if (!(r[1] in K) && !(r[1] in M)) continue
        k = get(K, r[1]); m = get(M, r[1]); ratio = "NA"; up = "NA"
        if (num(k) && num(m) && k > 0 && m > 0) {
          ratio = sprintf("%.2f", m / k)
          # speed-up: how many times faster mshv is (>1 = mshv better)
          up = sprintf("%.2fx", r[4] == "lower" ? k / m : m / k)
        }
        printf "%-22s %-5s %-6s %10s %10s %9s %9s\n", r[2], r[3], r[4], k, m, ratio, up
      }
      if ("decided" in M && M["decided"] != "mshv")
        printf "\nWARNING: %s ran on %s (reason %s): this compares KVM with KVM.\n", get(M, "name"), M["decided"], get(M, "reason")
      if ("decided" in K && K["decided"] != "kvm")
        printf "\nWARNING: %s ran on %s, not KVM: the opt-out was not applied.\n", get(K, "name"), K["decided"]
      if ("node" in K && "node" in M && K["node"] != M["node"])
        printf "\nNOTE: the VMs ran on different nodes (%s, %s): hardware and storage differ too.\n", K["node"], M["node"]
    }'
}

if [ "${1:-}" = table ]; then
  shift
  [ $# -eq 2 ] || [ $# -eq 4 ] || die "usage: $0 table KVM_CONSOLE_LOG MSHV_CONSOLE_LOG [KVM_POD_JSON MSHV_POD_JSON]"
  hvl_table "$@"
  exit
fi

ns="" node="" timeout=900 out="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--namespace) ns=$2; shift 2 ;;
    --node) node=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
for c in kubectl jq; do command -v "$c" >/dev/null || die "$c not on PATH"; done
here=$(cd "$(dirname "$0")/.." && pwd)
k() { kubectl ${ns:+-n "$ns"} "$@"; }
out=${out:-$(mktemp -d)}
mkdir -p "$out"
vms=(hvl-bench-kvm hvl-bench-mshv)

k apply -f "$here/deploy/benchmark/"
if [ -n "$node" ]; then
  for vm in "${vms[@]}"; do
    k patch vm "$vm" --type json -p "[{\"op\":\"replace\",\"path\":\"/spec/template/spec/nodeSelector\",\"value\":{\"kubernetes.io/hostname\":\"$node\"}}]"
  done
fi
for vm in "${vms[@]}"; do
  if command -v virtctl >/dev/null; then virtctl ${ns:+-n "$ns"} start "$vm"
  else k patch vm "$vm" --type merge -p '{"spec":{"runStrategy":"Always"}}'; fi
done

stop() {
  [ "$keep" = 1 ] && return
  for vm in "${vms[@]}"; do
    if command -v virtctl >/dev/null; then virtctl ${ns:+-n "$ns"} stop "$vm" >/dev/null || true
    else k patch vm "$vm" --type merge -p '{"spec":{"runStrategy":"Halted"}}' >/dev/null || true; fi
  done
}
trap stop EXIT

deadline=$(( $(date +%s) + timeout ))
for vm in "${vms[@]}"; do
  echo "waiting for $vm's result (up to ${timeout}s in all) ..." >&2
  while :; do
    uid=$(k get vmi "$vm" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)
    pod=""
    [ -n "$uid" ] && pod=$(k get pods -l "kubevirt.io=virt-launcher,kubevirt.io/created-by=$uid" \
      -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
    if [ -n "$pod" ]; then
      k logs "$pod" -c guest-console-log >"$out/$vm.console.log" 2>/dev/null || true
      if grep -q "$MARK" "$out/$vm.console.log"; then
        k get pod "$pod" -o json >"$out/$vm.pod.json"
        break
      fi
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "no result from $vm within ${timeout}s (pod: ${pod:-none}; console log so far: $out/$vm.console.log)"
    sleep 10
  done
done
echo "console logs and launcher Pods: $out" >&2
hvl_table "$out/hvl-bench-kvm.console.log" "$out/hvl-bench-mshv.console.log" \
  "$out/hvl-bench-kvm.pod.json" "$out/hvl-bench-mshv.pod.json"
