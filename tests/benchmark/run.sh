#!/bin/sh
# Tests of deploy/benchmark/ and scripts/compare-vms.sh: the manifests against KubeVirt's
# VirtualMachine CRD schema, the workload script run here, compare-vms' table on sample logs.
# Needs python3 with PyYAML and jsonschema, bash, jq, openssl; bats for the table tests.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
python3 -m unittest -v test_manifests
if command -v bats >/dev/null 2>&1; then
  bats compare-vms.bats
else
  echo "SKIPPED: bats not installed (compare-vms.bats not run; make setup installs it)"
fi
echo "benchmark manifests: all checks passed"
