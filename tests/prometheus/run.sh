#!/bin/sh
# Checks deploy/prometheus-rules.yaml, its unit tests and deploy/grafana-dashboard.json.
#
#   tests/prometheus/run.sh               stdlib checks, then promtool check + test
#   MUTATIONS=1 tests/prometheus/run.sh   also break each rule on purpose and require the tests
#                                         to fail (about a minute on two cores)
#
# Without promtool on PATH the stdlib checks still run and the promtool part prints
# "SKIPPED: promtool not installed" (exit 0). Debian/Ubuntu: apt-get install prometheus.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tool="$here/rulestool.py"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

python3 "$tool" selftest
# The PrometheusRule's spec as a plain rule file (what promtool reads).
python3 "$tool" extract "$root/deploy/prometheus-rules.yaml" "$tmp/rules.yaml"
python3 "$tool" lint "$tmp/rules.yaml" "$root" "$here"/*.test.yaml
python3 "$tool" dashboard "$root/deploy/grafana-dashboard.json" "$tmp/rules.yaml"

if ! command -v promtool >/dev/null 2>&1; then
  echo "SKIPPED: promtool not installed (rule check, unit tests and mutations not run)"
  exit 0
fi
promtool --version 2>&1 | head -1
promtool check rules "$tmp/rules.yaml"
# The tests name `rules.yaml`; run them next to the extracted file.
cp "$here"/*.test.yaml "$tmp/"
promtool test rules "$tmp"/*.test.yaml
if [ "${MUTATIONS:-0}" = 1 ]; then
  python3 "$here/mutations.py" "$tmp/rules.yaml" "$tmp"
fi
echo "prometheus rules: all checks passed"
