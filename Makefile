# Kubewarden policy conventions (kubewarden/policies Makefiles): policy.wasm, annotated-policy.wasm,
# fmt, lint, test, e2e-tests, artifacthub-pkg.yml, clean. Plus setup, demo, bench, fuzz.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
WASM := $(TARGET_DIR)/wasm32-wasip1/release/hyperv_layered.wasm
FLOOR_WASM := $(TARGET_DIR)/wasm32-wasip1/release/floor_policy.wasm
SOURCES := $(shell find src -name '*.rs') Cargo.toml Cargo.lock
# Cases for the native fuzz run (proptest); CI and `make fuzz` use at least 100000.
FUZZ_CASES ?= 100000
WASM_FUZZ_CASES ?= 3000
AGENT_FUZZ_CASES ?= 20000

.PHONY: setup build demo probe test e2e-tests fmt lint bench fuzz clean schema

## setup: everything a fresh machine needs (wasm target; bats and jq for e2e.bats when apt is there)
setup:
	rustup target add wasm32-wasip1
	@if ! command -v bats >/dev/null 2>&1 || ! command -v jq >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq bats jq >/dev/null; \
	  else echo "install bats and jq to run e2e.bats"; fi; \
	fi

## build: the policy module, the floor module used by the benchmark, and the node agent
build: policy.wasm floor.wasm
	cargo build --release -p mshv-node-agent

policy.wasm: $(SOURCES)
	cargo build --target=wasm32-wasip1 --release -p hyperv-layered --lib
	cp $(WASM) policy.wasm

floor.wasm: bench/floor-policy/src/lib.rs bench/floor-policy/Cargo.toml Cargo.toml Cargo.lock
	cargo build --target=wasm32-wasip1 --release -p floor-policy
	cp $(FLOOR_WASM) floor.wasm

annotated-policy.wasm: policy.wasm metadata.yml README.md
	kwctl annotate -m metadata.yml -u README.md -o annotated-policy.wasm policy.wasm

## demo: evaluate the sample v1.8 launcher Pod with the real .wasm and show decision and patch
demo: policy.wasm
	cargo run -q --example evaluate -- \
	  --request tests/data/launcher-v1.8-kvm.json \
	  --settings '{"gate":{"mode":"enabled"},"perPodHypervisor":true}' \
	  --session tests/data/sessions/nodes-capable.yml

## probe: what mshv-node-agent sees on this machine
probe:
	cargo run -q --release -p mshv-node-agent -- probe

## test: every test of the workspace (unit, property, the real .wasm in the waPC harness, agent)
test: policy.wasm floor.wasm
	cargo nextest run --workspace --no-fail-fast
	$(MAKE) -s e2e-tests-if-kwctl

e2e-tests: annotated-policy.wasm
	bats e2e.bats

.PHONY: e2e-tests-if-kwctl
e2e-tests-if-kwctl:
	@if command -v kwctl >/dev/null 2>&1 && command -v bats >/dev/null 2>&1; then \
	  $(MAKE) e2e-tests; \
	else echo "e2e.bats skipped: kwctl (and bats) not on PATH"; fi

fmt:
	cargo fmt --all -- --check

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## bench: one table for the policy (vs the floor) and one for the agent
bench: policy.wasm floor.wasm
	cargo bench -q --bench policy
	cargo bench -q -p mshv-node-agent --bench agent

## fuzz: the native entry point with FUZZ_CASES generated inputs per property, the same
## generator through the real .wasm (WASM_FUZZ_CASES), and the agent's probe ladder and parsers
fuzz: policy.wasm
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --release --test fuzz -- --nocapture
	WASM_FUZZ_CASES=$(WASM_FUZZ_CASES) cargo test --release --test fuzz_wasm -- --nocapture
	PROPTEST_CASES=$(AGENT_FUZZ_CASES) cargo test --release -p mshv-node-agent \
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
	rm -f policy.wasm annotated-policy.wasm floor.wasm
