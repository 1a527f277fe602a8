#!/usr/bin/env bats
# OCI distribution for real, on 127.0.0.1 only: Debian's docker-registry (the CNCF distribution
# registry) on a free port with its storage in a temp dir, started and stopped here;
# `make push` (kwctl push) of annotated-policy.wasm over plain HTTP, kwctl pull/digest/inspect
# back; policy-server loading the policy from that registry and answering; the node agent's
# image built FROM scratch by buildah (`make image`), pushed (`make image-push`) and read back
# with skopeo. `make oci-tests` runs it (annotated-policy.wasm and the static agent first);
# `make test` does when kwctl, policy-server, docker-registry, buildah and skopeo are on PATH.

bats_require_minimum_version 1.5.0

REPO="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL [TRIES]: bounded wait (TRIES x 0.1 s) until URL answers 2xx.
wait_http() {
  local i
  for ((i = 0; i < ${2:-300}; i++)); do
    curl -fsS -m 2 -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

# stop PIDFILE: end the process we started (by its id only) and wait for it.
stop() {
  [ -f "$1" ] || return 0
  local pid i
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

setup_file() {
  local t
  for t in kwctl policy-server docker-registry buildah skopeo jq curl python3; do
    command -v "$t" >/dev/null || skip "$t not on PATH"
  done
  [ -f "$REPO/annotated-policy.wasm" ] || skip "annotated-policy.wasm missing: run make oci-tests"
  T="$(mktemp -d)"
  PORT="$(free_port)"
  export T PORT
  cat >"$T/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $T/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
  # fd 3 closed: bats waits for it otherwise.
  docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 3>&- &
  echo $! >"$T/registry.pid"
  wait_http "http://127.0.0.1:$PORT/v2/" 100
  # kwctl and policy-server: plain HTTP to this registry (policy-fetcher sources.rs RawSources).
  printf 'insecure_sources:\n  - "127.0.0.1:%s"\n' "$PORT" >"$T/sources.yml"
  # kwctl's store and config (and any sources.yaml there) in the temp dir, not in $HOME.
  export XDG_CACHE_HOME="$T/cache" XDG_CONFIG_HOME="$T/config" XDG_DATA_HOME="$T/data"
  # buildah's storage in the temp dir too.
  export BUILDAH_FLAGS="--storage-driver vfs --root $T/containers/root --runroot $T/containers/runroot"
  POLICY_VERSION="$(make -s -C "$REPO" --no-print-directory print-VERSION)"
  export POLICY_VERSION
  export POLICY_REF="127.0.0.1:$PORT/hyperv-layered:v$POLICY_VERSION"
}

teardown_file() {
  [ -n "${T:-}" ] || return 0
  stop "$T/policy-server.pid"
  stop "$T/registry.pid"
  # shellcheck disable=SC2086
  buildah $BUILDAH_FLAGS rm --all >/dev/null 2>&1 || true
  rm -rf "$T"
}

@test "make push: kwctl pushes annotated-policy.wasm over plain HTTP; pull gives the same bytes and digests" {
  cd "$REPO"
  run --separate-stderr make -s push REGISTRY="127.0.0.1:$PORT" KWCTL_FLAGS="--sources-path $T/sources.yml -o json"
  echo "$output"; echo "$stderr" | tail -5
  [ "$status" -eq 0 ]
  local pushed wasm_sha
  # -o json: {"immutable_ref": "<registry>/<repository>@sha256:..."}
  [[ "$(echo "$output" | jq -r .immutable_ref)" == "127.0.0.1:$PORT/hyperv-layered@sha256:"* ]]
  pushed=$(echo "$output" | jq -r .immutable_ref | sed 's/.*@//')
  wasm_sha=$(sha256sum annotated-policy.wasm | cut -d' ' -f1)
  [[ "$pushed" == sha256:* ]]
  echo "pushed manifest $pushed, wasm sha256:$wasm_sha" >&3
  # The registry's own view: the manifest digest it serves, one wasm layer with the file's digest.
  curl -fsS -m 30 -D "$T/headers" -o "$T/manifest.json" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$PORT/v2/hyperv-layered/manifests/v$POLICY_VERSION"
  grep -i "^docker-content-digest: $pushed" "$T/headers"
  [ "$(jq -r '.layers | length' "$T/manifest.json")" = 1 ]
  [ "$(jq -r '.layers[0].mediaType' "$T/manifest.json")" = "application/vnd.wasm.content.layer.v1+wasm" ]
  [ "$(jq -r '.layers[0].digest' "$T/manifest.json")" = "sha256:$wasm_sha" ]
  [ "$(jq -r '.annotations["io.kubewarden.policy.version"]' "$T/manifest.json")" = "$POLICY_VERSION" ]
  # kwctl digest asks the registry for the manifest digest.
  run --separate-stderr kwctl digest --sources-path "$T/sources.yml" "registry://$POLICY_REF"
  [ "$status" -eq 0 ]
  [ "$output" = "registry://$POLICY_REF@$pushed" ]
  # kwctl pull to a file: byte for byte what was pushed.
  run --separate-stderr kwctl pull --sources-path "$T/sources.yml" --sigstore-trust-config /nonexistent \
    -o "$T/pulled.wasm" "registry://$POLICY_REF"
  [ "$status" -eq 0 ]
  [ "$(sha256sum "$T/pulled.wasm" | cut -d' ' -f1)" = "$wasm_sha" ]
  # kwctl pull into its store, then inspect it from there: the metadata survived the trip.
  run --separate-stderr kwctl pull --sources-path "$T/sources.yml" --sigstore-trust-config /nonexistent \
    "registry://$POLICY_REF"
  [ "$status" -eq 0 ]
  run --separate-stderr kwctl inspect -o yaml "registry://$POLICY_REF"
  [ "$status" -eq 0 ]
  echo "$output" | grep -q "io.kubewarden.policy.title: hyperv-layered"
  echo "$output" | grep -q "mutating: true"
  run --separate-stderr kwctl policies
  echo "$output" | grep "registry://$POLICY_REF" | grep -q "${wasm_sha:0:12}"
}

@test "policy-server loads the policy from registry:// and answers AdmissionReviews" {
  cd "$REPO"
  local p r
  p=$(free_port)
  r=$(free_port)
  # hostCapabilities: what metadata.yml lists (an absent list denies them all).
  cat >"$T/policies.yml" <<EOF
hyperv-layered:
  module: registry://$POLICY_REF
  policyMode: protect
  allowedToMutate: true
  settings:
    gate: {mode: enabled}
    perPodHypervisor: true
  contextAwareResources:
    - {apiVersion: v1, kind: Node}
    - {apiVersion: kubevirt.io/v1, kind: KubeVirt}
    - {apiVersion: kubevirt.io/v1, kind: VirtualMachineInstance}
    - {apiVersion: v1, kind: Pod}
  hostCapabilities:
$(sed -n '/^hostCapabilities:/,/^[^ -]/{/^  - /p}' metadata.yml)
EOF
  cat "$T/policies.yml"
  mkdir -p "$T/ps"
  # Offline: no API server (--ignore-kubernetes-connection-failure) and no Sigstore trust root
  # (a missing --sigstore-trust-config file); the module comes from the local registry.
  (cd "$T/ps" && exec policy-server --addr 127.0.0.1 --port "$p" --readiness-probe-port "$r" \
    --policies "$T/policies.yml" --policies-download-dir "$T/ps" --sources-path "$T/sources.yml" \
    --sigstore-trust-config /nonexistent --sigstore-cache-dir "$T/ps/sigstore" \
    --ignore-kubernetes-connection-failure --workers 1 --log-no-color) \
    >"$T/policy-server.log" 2>&1 3>&- &
  echo $! >"$T/policy-server.pid"
  wait_http "http://127.0.0.1:$r/readiness" 600 || { tail -20 "$T/policy-server.log"; false; }
  # What it downloaded is what was pushed.
  [ "$(sha256sum "$T/ps/registry/127.0.0.1:$PORT/hyperv-layered:v$POLICY_VERSION" | cut -d' ' -f1)" = \
    "$(sha256sum annotated-policy.wasm | cut -d' ' -f1)" ]
  review() { jq '{apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: .}'; }
  post() {
    curl -fsS -m 30 -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:$p/validate/hyperv-layered"
  }
  # A plain Pod, written here.
  run bash -c "$(declare -f review post); p=$p; jq -n '{uid: \"1\", kind: {group: \"\", version: \"v1\", kind: \"Pod\"},
      resource: {group: \"\", version: \"v1\", resource: \"pods\"}, operation: \"CREATE\", namespace: \"default\",
      userInfo: {username: \"alice\"},
      object: {apiVersion: \"v1\", kind: \"Pod\", metadata: {name: \"nginx\", namespace: \"default\"},
               spec: {containers: [{name: \"nginx\", image: \"nginx\"}]}}}' | review | post"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -r .response.allowed)" = true ]
  [ "$(echo "$output" | jq -r '.response.patch // "none"')" = none ]
  # tests/data/plain-pod.json
  run bash -c "$(declare -f review post); p=$p; review < tests/data/plain-pod.json | post"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -r .response.allowed)" = true ]
  [ "$(echo "$output" | jq -r '.response.patch // "none"')" = none ]
  # A launcher that opted out: no lookup, and exactly the e2e case's patch, so this is the policy.
  run bash -c "$(declare -f review post); p=$p; review < tests/data/launcher-opt-out.json | post"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -r .response.allowed)" = true ]
  [ "$(echo "$output" | jq -r .response.patch | base64 -d | jq -S -c .)" = \
    "$(jq -S -c . tests/data/expected/opt-out.json)" ]
  stop "$T/policy-server.pid"
}

@test "the static node agent binary runs and needs no libc" {
  cd "$REPO"
  local bin
  bin="$(make -s --no-print-directory print-AGENT_STATIC)"
  [ -x "$bin" ]
  run ldd "$bin"
  echo "$output"
  [[ "$output" == *"not a dynamic executable"* || "$output" == *"statically linked"* ]]
  run "$bin" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *probe* ]]
  # No /dev/mshv on a build machine: exit 1 (not capable) or 0 (capable), never a crash.
  run "$bin" probe --json
  echo "$output"
  [ "$status" -le 1 ]
  [ -n "$(echo "$output" | jq -r .state)" ]
  [ "$(echo "$output" | jq -r .capable)" = "$([ "$status" -eq 0 ] && echo true || echo false)" ]
}

@test "make image: FROM scratch by buildah; make image-push; skopeo reads it back from the registry" {
  cd "$REPO"
  local image version dest
  image=$(make -s --no-print-directory print-IMAGE)
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' node-agent/Cargo.toml | head -1)
  # One name: the Makefile's, the manifest's, the Dockerfile's label.
  [ "$image" = "ghcr.io/hyperv-layered/mshv-node-agent:$version" ]
  grep -q "^ *image: $image\$" deploy/node-agent.yaml
  grep -q "org.opencontainers.image.ref.name=\"${image%:*}:\${VERSION}\"" node-agent/Dockerfile
  run make -s image BUILDAH_FLAGS="$BUILDAH_FLAGS"
  echo "$output"
  [ "$status" -eq 0 ]
  dest="127.0.0.1:$PORT/mshv-node-agent:$version"
  run make -s image-push BUILDAH_FLAGS="$BUILDAH_FLAGS" IMAGE_DEST="$dest" IMAGE_PUSH_FLAGS=--tls-verify=false
  echo "$output"
  [ "$status" -eq 0 ]
  run --separate-stderr skopeo inspect --tls-verify=false "docker://$dest"
  echo "$output"
  [ "$status" -eq 0 ]
  echo "$output" >"$T/inspect.json"
  [ "$(jq -r .Architecture "$T/inspect.json")" = amd64 ]
  [ "$(jq -r .Os "$T/inspect.json")" = linux ]
  [ "$(jq -r '.Layers | length' "$T/inspect.json")" = 1 ]
  [ "$(jq -r '.Labels["org.opencontainers.image.version"]' "$T/inspect.json")" = "$version" ]
  [ "$(jq -r '.Labels["org.opencontainers.image.title"]' "$T/inspect.json")" = mshv-node-agent ]
  [ "$(jq -r '.Labels["org.opencontainers.image.ref.name"]' "$T/inspect.json")" = "$image" ]
  run --separate-stderr skopeo inspect --tls-verify=false --config "docker://$dest"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -c .config.Entrypoint)" = '["/usr/local/bin/mshv-node-agent"]' ]
  [ "$(echo "$output" | jq -c .config.Cmd)" = '["run"]' ]
  # The only file in the image is the agent, and it runs there (chroot into the image's root).
  local ctr
  # shellcheck disable=SC2086
  ctr=$(buildah $BUILDAH_FLAGS from "$image")
  # shellcheck disable=SC2086
  run buildah $BUILDAH_FLAGS run --isolation chroot "$ctr" -- /usr/local/bin/mshv-node-agent --help
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *probe* ]]
  # shellcheck disable=SC2086
  buildah $BUILDAH_FLAGS rm "$ctr" >/dev/null
  # Size: the one (compressed) layer as the registry stores it.
  run --separate-stderr skopeo inspect --tls-verify=false --raw "docker://$dest"
  [ "$status" -eq 0 ]
  echo "image $dest: $(jq -r .Digest "$T/inspect.json"), $(echo "$output" | jq '[.layers[].size] | add') bytes compressed" >&3
}
