# Kubewarden policy conventions (kubewarden/policies Makefiles): policy.wasm, annotated-policy.wasm,
# fmt, lint, test, e2e-tests, artifacthub-pkg.yml, clean. Plus setup, demo, bench, fuzz.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
WASM := $(TARGET_DIR)/wasm32-wasip1/release/hyperv_layered.wasm
FLOOR_WASM := $(TARGET_DIR)/wasm32-wasip1/release/floor_policy.wasm
# Every input of each module (a stale module would make `make test` test old code); the test
# harness reads these two lines too, so the Makefile and the freshness check cannot disagree.
POLICY_INPUTS := src vocab/src vocab/Cargo.toml Cargo.toml Cargo.lock
FLOOR_INPUTS := bench/floor-policy/src bench/floor-policy/Cargo.toml Cargo.toml Cargo.lock
inputs = $(shell find $(1) -type f)
# Cases for the native fuzz run (proptest); CI and `make fuzz` use at least 100000.
FUZZ_CASES ?= 100000
WASM_FUZZ_CASES ?= 3000
AGENT_FUZZ_CASES ?= 20000

.PHONY: setup build demo probe test e2e-tests fmt lint bench fuzz clean schema

## setup: everything a fresh machine needs: the wasm target; when apt is there (as root) bats and
## jq for e2e.bats, and curl, docker-registry (Debian's distribution registry), buildah and skopeo
## for tests/oci.bats. Each is a Debian package of the same name as its command.
SETUP_APT := bats jq curl docker-registry buildah skopeo
setup:
	rustup target add wasm32-wasip1
	@missing=$$(for c in $(SETUP_APT); do command -v $$c >/dev/null 2>&1 || echo $$c; done); \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "apt-get install" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not installed:" $$missing "(e2e.bats needs bats and jq; tests/oci.bats also curl, docker-registry, buildah, skopeo)"; fi; \
	fi
	@# tests/benchmark validates deploy/benchmark against KubeVirt's CRD schema with PyYAML and
	@# jsonschema: from PyPI when the machine's python3 lacks them.
	@python3 -c 'import yaml, jsonschema' 2>/dev/null || \
	  python3 -m pip install --quiet --disable-pip-version-check pyyaml jsonschema || \
	  { command -v apt-get >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml python3-jsonschema >/dev/null; }
	@# promtool (tests/prometheus) comes in Debian's `prometheus` package; the web UI's JS
	@# libraries it recommends are not needed.
	@if ! command -v promtool >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "not installed: promtool (Debian/Ubuntu: apt-get install prometheus) for tests/prometheus"; fi; \
	fi
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q prometheus 2>/dev/null; then \
	  systemctl disable --now prometheus; fi
	@# The package's service (0.0.0.0:5000) is not wanted: tests/oci.bats runs its own registry.
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q docker-registry 2>/dev/null; then \
	  systemctl disable --now docker-registry; fi

## build: the policy module, the floor module used by the benchmark, the node agent (statically
## linked: the one binary the image ships, `make probe` and `make bench` run), and the demo's
## evaluator (so that `make demo` and `make probe` answer at once)
build: policy.wasm floor.wasm agent-static
	cargo build --locked -q --example evaluate

policy.wasm: $(call inputs,$(POLICY_INPUTS))
	cargo build --locked --target=wasm32-wasip1 --release -p hyperv-layered --lib
	cp $(WASM) policy.wasm

floor.wasm: $(call inputs,$(FLOOR_INPUTS))
	cargo build --locked --target=wasm32-wasip1 --release -p floor-policy
	cp $(FLOOR_WASM) floor.wasm

# The same policy with the Pod parsed whole (feature `whole-pod`), for bench-policy-server's
# overlay-vs-whole comparison only. It shares target/ with policy.wasm (a second target dir would
# rebuild every dependency), so the default module is built again after it: the tests load
# $(WASM) and must find the real policy there.
policy-whole-pod.wasm: $(call inputs,$(POLICY_INPUTS))
	cargo build --locked --target=wasm32-wasip1 --release -p hyperv-layered --lib --features whole-pod
	cp $(WASM) policy-whole-pod.wasm
	cargo build --locked --target=wasm32-wasip1 --release -p hyperv-layered --lib

annotated-policy-whole-pod.wasm: policy-whole-pod.wasm metadata.yml README.md
	kwctl annotate -m metadata.yml -u README.md -o annotated-policy-whole-pod.wasm policy-whole-pod.wasm

annotated-policy.wasm: policy.wasm metadata.yml README.md
	kwctl annotate -m metadata.yml -u README.md -o annotated-policy.wasm policy.wasm

## demo: evaluate a v1.8 and a KubeVirt-main launcher Pod with the real .wasm: decision and patch
demo: policy.wasm
	@echo "== KubeVirt v1.8/v1.9 layout (flags in command), mixed mode"
	cargo run -q --example evaluate -- \
	  --request tests/data/launcher-v1.8-kvm.json \
	  --settings '{"gate":{"mode":"enabled"},"mixedMode":true,"launcherImages":["quay.io/kubevirt/virt-launcher"]}' \
	  --session tests/data/sessions/nodes-mixed.yml
	@echo "== KubeVirt main layout (command: virt-launcher-monitor, flags in args), mixed mode"
	cargo run -q --example evaluate -- \
	  --request tests/data/launcher-main-kvm.json \
	  --settings '{"gate":{"mode":"enabled"},"mixedMode":true,"launcherImages":["quay.io/kubevirt/virt-launcher"]}' \
	  --session tests/data/sessions/nodes-mixed.yml

## probe: what mshv-node-agent sees on this machine
probe: agent-static
	$(AGENT_STATIC) probe

## test: every test of the workspace (unit, property, the real .wasm in the waPC harness, agent)
test: policy.wasm floor.wasm
	cargo nextest run --workspace --no-fail-fast
	tests/prometheus/run.sh
	tests/benchmark/run.sh
	$(MAKE) -s e2e-tests-if-kwctl
	$(MAKE) -s oci-tests-if-tools
	$(MAKE) -s policy-server-tests-if-policy-server

e2e-tests: annotated-policy.wasm
	bats e2e.bats

.PHONY: e2e-tests-if-kwctl
e2e-tests-if-kwctl:
	@if command -v kwctl >/dev/null 2>&1; then \
	  for c in bats jq; do command -v $$c >/dev/null 2>&1 || \
	    { echo "kwctl is on PATH but $$c is not (make setup installs it): e2e.bats cannot run"; exit 1; }; done; \
	  $(MAKE) e2e-tests; \
	else echo "e2e.bats skipped: kwctl not on PATH"; fi

# ---- OCI distribution (docs/install.md "Distribution"; tests/oci.bats) ---------------------------
# The policy goes to registry://$(REGISTRY)/hyperv-layered:v$(VERSION); KWCTL_FLAGS adds e.g.
# `--sources-path sources.yml` for a registry kwctl must reach over plain HTTP (insecure_sources).
REGISTRY ?= ghcr.io/hyperv-layered/policies
KWCTL_FLAGS ?=
# The node agent's image: one name in the Makefile, node-agent/Dockerfile's labels and
# deploy/node-agent.yaml (tests/oci.bats checks they agree). The tag is the agent's version.
AGENT_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' node-agent/Cargo.toml | head -1)
IMAGE_REPO ?= ghcr.io/hyperv-layered/mshv-node-agent
IMAGE ?= $(IMAGE_REPO):$(AGENT_VERSION)
# Where `make image-push` sends it (default: the name itself) and extra buildah push flags
# (e.g. --tls-verify=false for a plain-HTTP registry).
IMAGE_DEST ?= $(IMAGE)
IMAGE_PUSH_FLAGS ?=
# buildah's global flags: vfs storage works everywhere (also inside containers, where overlay on
# overlay does not); tests/oci.bats adds --root/--runroot in a temp dir.
BUILDAH_FLAGS ?= --storage-driver vfs
# A statically linked agent for a FROM scratch image (glibc, crt-static).
AGENT_TRIPLE ?= x86_64-unknown-linux-gnu
AGENT_STATIC := $(TARGET_DIR)/$(AGENT_TRIPLE)/release/mshv-node-agent

.PHONY: push agent-static image image-push oci-tests oci-tests-if-tools
## push: kwctl push annotated-policy.wasm to registry://$(REGISTRY)/hyperv-layered:v$(VERSION)
push: annotated-policy.wasm
	kwctl push $(KWCTL_FLAGS) annotated-policy.wasm registry://$(REGISTRY)/hyperv-layered:v$(VERSION)

## agent-static: the node agent linked statically (runs in an image without a libc)
agent-static:
	RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release -p mshv-node-agent \
	  --bin mshv-node-agent --target $(AGENT_TRIPLE)

## image: the node agent's image $(IMAGE), FROM scratch, built by buildah without a daemon
## (node-agent/Dockerfile; the build context is a temp dir holding only the static binary)
image: agent-static
	@ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	cp $(AGENT_STATIC) "$$ctx/mshv-node-agent" && \
	buildah $(BUILDAH_FLAGS) bud --isolation chroot --layers=false --build-arg VERSION=$(AGENT_VERSION) \
	  -f $(CURDIR)/node-agent/Dockerfile -t $(IMAGE) "$$ctx"

## image-push: buildah push $(IMAGE) to docker://$(IMAGE_DEST)
image-push:
	buildah $(BUILDAH_FLAGS) push $(IMAGE_PUSH_FLAGS) $(IMAGE) docker://$(IMAGE_DEST)

# print-VAR: a variable's value (tests/oci.bats reads IMAGE, VERSION, AGENT_STATIC).
print-%:
	@echo $($*)

## oci-tests: tests/oci.bats: a local registry (docker-registry), kwctl push/pull, policy-server
## loading the policy from it, the agent image built by buildah and read back by skopeo
oci-tests: annotated-policy.wasm agent-static
	bats tests/oci.bats

oci-tests-if-tools:
	@missing=$$(for c in kwctl policy-server docker-registry buildah skopeo bats jq curl python3; do \
	  command -v $$c >/dev/null 2>&1 || echo $$c; done); \
	if [ -z "$$missing" ]; then $(MAKE) oci-tests; \
	else echo "tests/oci.bats skipped: not on PATH:" $$missing; fi

fmt:
	cargo fmt --all -- --check

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## bench: one table for the policy (vs the floor), one for the agent, and the hypervisor
## table (`mshv-node-agent bench`: KVM and mshv on this machine, each row saying what it is)
bench: policy.wasm floor.wasm agent-static
	cargo bench -q --bench policy
	cargo bench -q -p mshv-node-agent --bench agent
	$(AGENT_STATIC) bench || [ $$? -eq 1 ]
	$(MAKE) -s bench-policy-server-if-policy-server

## fuzz: the native entry point with FUZZ_CASES generated inputs per property, the same
## generator through the real .wasm (WASM_FUZZ_CASES), and the agent's probe ladder and parsers
## The bench profile (opt-level 3 without the release profile's LTO) builds the fuzzers much
## sooner, and shares its artifacts with `make bench`. FUZZ_CASES is for the mangled-launcher
## property (where the device/flag agreement is checked); FUZZ_OTHER_CASES for the arbitrary-bytes
## and random-settings properties.
FUZZ_OTHER_CASES ?= $(FUZZ_CASES)
fuzz: policy.wasm
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --locked --profile bench --test fuzz -- --nocapture mangled_launchers
	PROPTEST_CASES=$(FUZZ_OTHER_CASES) cargo test --locked --profile bench --test fuzz -- --nocapture --skip mangled_launchers
	WASM_FUZZ_CASES=$(WASM_FUZZ_CASES) cargo test --locked --profile bench --test fuzz_wasm -- --nocapture
	PROPTEST_CASES=$(AGENT_FUZZ_CASES) cargo test --locked --profile bench -p mshv-node-agent \
	  --test proptest_ladder --test proptest_parsers -- --nocapture

## schema: regenerate docs/settings.schema.json from the Settings type
schema:
	UPDATE_SCHEMA=1 cargo test -q --lib settings::tests::schema_file_is_current

# kwctl >= 1.23 takes the version from io.kubewarden.policy.version in metadata.yml (--version is
# deprecated); keep it equal to Cargo.toml's version.
artifacthub-pkg.yml: metadata.yml
	kwctl scaffold artifacthub --metadata-path metadata.yml --output artifacthub-pkg.yml

clean:
	cargo clean
	rm -f policy.wasm annotated-policy.wasm floor.wasm annotated-floor.wasm \
	  policy-whole-pod.wasm annotated-policy-whole-pod.wasm

## check-generated: the committed fixtures, sessions, case table and e2e.bats are what the
## generators in tests/data write (CI fails on a hand edit or a forgotten regeneration)
.PHONY: check-generated
check-generated:
	cd tests/data && python3 make_fixtures.py >/dev/null && python3 gen_nodes_session.py >/dev/null \
	  && python3 make_sessions.py >/dev/null && python3 make_cases.py >/dev/null
	@git diff --exit-code --stat -- tests/data e2e.bats || \
	  { echo "generated test data differs from the committed files: run the generators in tests/data and commit"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- tests/data); \
	  if [ -n "$$untracked" ]; then echo "generated but not committed: $$untracked"; exit 1; fi

# ---- policy-server end to end (tests/policy_server/, bench/policy-server/) -----------------------

# The floor module with metadata, so policy-server loads it like hyperv-layered (bench, can_i probe).
annotated-floor.wasm: floor.wasm bench/policy-server/floor-metadata.yml
	kwctl annotate -m bench/policy-server/floor-metadata.yml -o annotated-floor.wasm floor.wasm

.PHONY: policy-server-tests policy-server-tests-if-policy-server bench-policy-server
## policy-server-tests: the real policy-server against a loopback fake API server (python3 stdlib)
policy-server-tests: annotated-policy.wasm annotated-floor.wasm
	python3 tests/policy_server/run_tests.py --policy-server "$$(command -v policy-server)" \
	  --policy annotated-policy.wasm --floor annotated-floor.wasm

policy-server-tests-if-policy-server:
	@if command -v policy-server >/dev/null 2>&1 && command -v kwctl >/dev/null 2>&1 \
	    && command -v python3 >/dev/null 2>&1; then \
	  $(MAKE) policy-server-tests; \
	else echo "########## policy-server tests SKIPPED: policy-server, kwctl or python3 not on PATH ##########"; fi

## bench-policy-server: admission latency through policy-server, hyperv-layered vs the floor
BENCH_REQUESTS ?= 2000
BENCH_CONCURRENCY ?= 2
bench-policy-server: annotated-policy.wasm annotated-floor.wasm annotated-policy-whole-pod.wasm
	python3 bench/policy-server/bench.py --policy-server "$$(command -v policy-server)" \
	  --policy annotated-policy.wasm --floor annotated-floor.wasm \
	  --policy-whole-pod annotated-policy-whole-pod.wasm \
	  --requests $(BENCH_REQUESTS) --concurrency $(BENCH_CONCURRENCY)

.PHONY: bench-policy-server-if-policy-server
bench-policy-server-if-policy-server:
	@if command -v policy-server >/dev/null 2>&1 && command -v kwctl >/dev/null 2>&1; then \
	  $(MAKE) bench-policy-server; \
	else echo "policy-server latency bench skipped: policy-server and kwctl not on PATH"; fi
