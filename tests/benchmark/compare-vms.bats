#!/usr/bin/env bats
# scripts/compare-vms.sh's parse + table logic on sample console logs and launcher Pods
# (tests/benchmark/data), no cluster needed.

setup() {
  root="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
  d="$BATS_TEST_DIRNAME/data"
  cmp="$root/scripts/compare-vms.sh"
}

row() { # row METRIC: the table line of a metric, squeezed to single spaces
  printf '%s\n' "$output" | grep "^$1 " | tr -s ' '
}

@test "table: side by side with mshv/KVM ratios and speed-ups, CR LF and escapes stripped" {
  run "$cmp" table "$d/kvm.console.log" "$d/mshv.console.log" "$d/kvm.pod.json" "$d/mshv.pod.json"
  [ "$status" -eq 0 ]
  [ "$(row VM)" = "VM hvl-bench-kvm hvl-bench-mshv" ]
  [ "$(row 'policy decision')" = "policy decision kvm (opt-out) mshv (selected)" ]
  [ "$(row 'guest detects')" = "guest detects kvm microsoft" ]
  # lower is better: mshv 32 s vs 40 s -> ratio 0.80, 1.25x faster
  [ "$(row 'time to Ready')" = "time to Ready s lower 40 32 0.80 1.25x" ]
  [ "$(row 'boot to workload')" = "boot to workload s lower 20.00 10.00 0.50 2.00x" ]
  # higher is better: the speed-up is the ratio itself
  [ "$(row 'memory fill')" = "memory fill MB/s higher 1000.0 2000.0 2.00 2.00x" ]
  [ "$(row 'cpu sha256')" = "cpu sha256 MB/s higher 1500.0 1500.0 1.00 1.00x" ]
  # a failed measurement stays NA, no ratio
  [ "$(row 'disk write')" = "disk write MB/s higher 200.0 NA NA NA" ]
  [[ "$output" != *WARNING* ]]
  [[ "$output" != *NOTE* ]]
}

@test "table: without Pods, only the console numbers" {
  run "$cmp" table "$d/kvm.console.log" "$d/mshv.console.log"
  [ "$status" -eq 0 ]
  [ -z "$(row 'time to Ready')" ]
  [ -z "$(row 'policy decision')" ]
  [ "$(row 'disk read')" = "disk read MB/s higher 400.0 800.0 2.00 2.00x" ]
}

@test "table: warns when the mshv VM fell back to KVM and when nodes differ" {
  run "$cmp" table "$d/kvm.console.log" "$d/mshv.console.log" "$d/kvm.pod.json" "$d/fallback.pod.json"
  [ "$status" -eq 0 ]
  [[ "$output" == *"WARNING: hvl-bench-mshv ran on kvm (reason no-capable-node): this compares KVM with KVM."* ]]
  [[ "$output" == *"NOTE: the VMs ran on different nodes (node-a, node-b)"* ]]
  # not Ready: no time
  [ "$(row 'time to Ready')" = "time to Ready s lower 40 NA NA NA" ]
}

@test "table: the last result line wins (a rerun appends one)" {
  log="$BATS_TEST_TMPDIR/twice.log"
  cat "$d/mshv.console.log" >"$log"
  printf 'HVL-BENCH v=1 name=hvl-bench-mshv virt=microsoft boot_s=5.00 cpu_sha256_mbps=1 mem_fill_mbps=1 disk_write_mbps=1 disk_read_mbps=1\r\n' >>"$log"
  run "$cmp" table "$d/kvm.console.log" "$log"
  [ "$status" -eq 0 ]
  [ "$(row 'boot to workload')" = "boot to workload s lower 20.00 5.00 0.25 4.00x" ]
}

@test "table: a console log without a result line is an error naming the file" {
  run "$cmp" table "$d/kvm.console.log" "$d/no-result.console.log"
  [ "$status" -ne 0 ]
  [[ "$output" == *"no 'HVL-BENCH v=1' line in $d/no-result.console.log"* ]]
}

@test "usage errors" {
  run "$cmp" table "$d/kvm.console.log"
  [ "$status" -ne 0 ]
  [[ "$output" == *usage* ]]
  run "$cmp" --bogus
  [ "$status" -ne 0 ]
  [[ "$output" == *"unknown argument --bogus"* ]]
}

# The cluster path against fake kubectl/virtctl (tests/benchmark/fake): what it calls, in order.
@test "cluster: applies, pins the node, starts both, collects logs and Pods, prints the table, stops" {
  export FAKE_CALLS="$BATS_TEST_TMPDIR/calls"
  PATH="$BATS_TEST_DIRNAME/fake:$PATH" run "$cmp" -n bench --node node-a --out "$BATS_TEST_TMPDIR/out" --timeout 30
  [ "$status" -eq 0 ]
  [ "$(row 'time to Ready')" = "time to Ready s lower 40 32 0.80 1.25x" ]
  [ -s "$BATS_TEST_TMPDIR/out/hvl-bench-kvm.console.log" ]
  [ -s "$BATS_TEST_TMPDIR/out/hvl-bench-mshv.pod.json" ]
  grep -qx "kubectl -n bench apply -f $root/deploy/benchmark/" "$FAKE_CALLS"
  grep -q '^kubectl -n bench patch vm hvl-bench-mshv --type json .*"kubernetes.io/hostname":"node-a"' "$FAKE_CALLS"
  grep -qx "virtctl -n bench start hvl-bench-kvm" "$FAKE_CALLS"
  grep -qx "virtctl -n bench start hvl-bench-mshv" "$FAKE_CALLS"
  grep -qx "kubectl -n bench logs virt-launcher-mshv -c guest-console-log" "$FAKE_CALLS"
  grep -qx "virtctl -n bench stop hvl-bench-mshv" "$FAKE_CALLS"
}

@test "cluster: --keep leaves the VMs running" {
  export FAKE_CALLS="$BATS_TEST_TMPDIR/calls"
  PATH="$BATS_TEST_DIRNAME/fake:$PATH" run "$cmp" --keep --out "$BATS_TEST_TMPDIR/out"
  [ "$status" -eq 0 ]
  ! grep -q " stop " "$FAKE_CALLS"
}

@test "cluster: a VM that prints no result times out with its log's path, and the VMs are stopped" {
  export FAKE_CALLS="$BATS_TEST_TMPDIR/calls" FAKE_NO_RESULT=mshv
  PATH="$BATS_TEST_DIRNAME/fake:$PATH" run "$cmp" --timeout 0 --out "$BATS_TEST_TMPDIR/out"
  [ "$status" -ne 0 ]
  [[ "$output" == *"no result from hvl-bench-mshv within 0s"*"$BATS_TEST_TMPDIR/out/hvl-bench-mshv.console.log"* ]]
  grep -qx "virtctl stop hvl-bench-kvm" "$FAKE_CALLS"
}
