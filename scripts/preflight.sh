#!/usr/bin/env bash
# Preflight for the hyperv-layered policy: run it (as a cluster admin, it impersonates the
# PolicyServer's ServiceAccount) BEFORE `kubectl apply -f policy.yaml`, and again after RBAC
# changes. Exit status 0: every lookup the policy makes with the given settings will be answered.
#
# Why it matters: in policy-server (Kubewarden v1.36.0-beta.1) a list lookup that the API server
# refuses (403, 404, 500) never returns; the launcher Pod's admission then waits for the webhook
# timeout and ties up an evaluation slot of the PolicyServer (docs/policy-server-lookup-hang.md).
# A missing grant must therefore be found here, not by the first VM start.
#
# Usage: scripts/preflight.sh [--policy-server NAME] [--namespace NS --service-account SA]
#                             [--gate-mode kubevirt|enabled|disabled] [--memory] [--can-i]
#                             [--node-label KEY] [--kubevirt NAMESPACE/NAME]
#   --policy-server  PolicyServer the policy runs on (policy.yaml spec.policyServer; default
#                    hyperv-layered, see deploy/policy-server.yaml). Its ServiceAccount and
#                    namespace are read from its Deployment `policy-server-<NAME>`.
#   --namespace/--service-account  check this identity instead (e.g. before the PolicyServer
#                    exists). The Kubewarden controller does not create ServiceAccounts: a
#                    PolicyServer without spec.serviceAccountName runs as `default` of its namespace.
#   --gate-mode      settings.gate.mode (default kubevirt: the KubeVirt CR is read)
#   --memory         settings.memoryOverhead.mshv has a non-zero term, or mixedMode is on (the
#                    VMI is read)
#   --kubevirt       settings.gate.kubevirt as NAMESPACE/NAME (default kubevirt/kubevirt)
#   --can-i          the policy checks its grants with the can_i host capability first (needs
#                    create on subjectaccessreviews)
#   --node-label     settings.nodeLabel (default mshv.node.hyperv-layered.io/capable)
set -euo pipefail

PS_NAME=hyperv-layered
NS=""
SA=""
GATE=kubevirt
MEMORY=0
KV_REF=kubevirt/kubevirt
CANI=0
NODE_LABEL=mshv.node.hyperv-layered.io/capable
KUBECTL=${KUBECTL:-kubectl}
# A first LIST slower than this risks the webhook timeout (policy.yaml timeoutSeconds).
SLOW_MS=${SLOW_MS:-2000}

while [ $# -gt 0 ]; do
  case "$1" in
    --policy-server) PS_NAME=$2; shift 2 ;;
    --namespace) NS=$2; shift 2 ;;
    --service-account) SA=$2; shift 2 ;;
    --gate-mode) GATE=$2; shift 2 ;;
    --memory) MEMORY=1; shift ;;
    --kubevirt) KV_REF=$2; shift 2 ;;
    --can-i) CANI=1; shift ;;
    --node-label) NODE_LABEL=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

failures=0
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
warn() { printf '  warn  %s\n' "$*"; }

if [ -z "$SA" ]; then
  # The Deployment the controller builds for the PolicyServer carries the ServiceAccount the
  # Pods really run as (internal/controller/policyserver_controller_deployment.go:491).
  line=$($KUBECTL get deploy -A --field-selector "metadata.name=policy-server-${PS_NAME}" \
    -o jsonpath='{range .items[*]}{.metadata.namespace} {.spec.template.spec.serviceAccountName}{"\n"}{end}' 2>/dev/null | head -1 || true)
  if [ -n "$line" ]; then
    NS=${line%% *}
    SA=${line#* }
    SA=${SA:-default}
  else
    SA=$($KUBECTL get policyserver "$PS_NAME" -o jsonpath='{.spec.serviceAccountName}' 2>/dev/null || true)
    SA=${SA:-default}
    NS=${NS:-kubewarden}
    warn "Deployment policy-server-${PS_NAME} not found: assuming namespace ${NS}, ServiceAccount ${SA}"
  fi
fi
NS=${NS:-kubewarden}
AS="system:serviceaccount:${NS}:${SA}"
echo "hyperv-layered preflight: PolicyServer ${PS_NAME}, identity ${AS}"

# can VERB RESOURCE [extra kubectl args...]: one `kubectl auth can-i` check.
can() {
  local verb=$1 res=$2
  shift 2
  if $KUBECTL auth can-i "$verb" "$res" --as="$AS" "$@" >/dev/null 2>&1; then
    ok "can $verb $res $*"
  else
    bad "cannot $verb $res $* (kubectl auth can-i $verb $res --as=$AS $*): apply deploy/policy-rbac.yaml with this subject"
  fi
}

# timed_list PATH: a real first LIST as the ServiceAccount, as policy-server's reflector makes it.
timed_list() {
  local path=$1 t0 t1 ms
  t0=$(date +%s%N)
  if out=$($KUBECTL get --raw "$path" --as="$AS" 2>&1); then
    t1=$(date +%s%N)
    ms=$(((t1 - t0) / 1000000))
    if [ "$ms" -gt "$SLOW_MS" ]; then
      warn "LIST $path answered in ${ms} ms (> ${SLOW_MS} ms: the first launcher after a policy-server start may hit the webhook timeout)"
    else
      ok "LIST $path answered in ${ms} ms"
    fi
  else
    bad "LIST $path failed: ${out}"
  fi
}

echo "Nodes (capable-node check, every launcher):"
can list nodes
can watch nodes
timed_list "/api/v1/nodes?labelSelector=${NODE_LABEL}%3Dtrue&limit=500"

if [ "$GATE" = kubevirt ] || [ "$MEMORY" = 1 ]; then
  # One uncached GET of gate.kubevirt per launcher: a refusal fails fast (lookup-error), it
  # does not hang, but every launcher would then stay on KVM.
  KV_NS=${KV_REF%%/*}
  KV_NAME=${KV_REF#*/}
  echo "KubeVirt CR $KV_NS/$KV_NAME (gate; memory configuration):"
  if $KUBECTL get crd kubevirts.kubevirt.io >/dev/null 2>&1; then
    ok "CRD kubevirts.kubevirt.io exists"
  else
    warn "CRD kubevirts.kubevirt.io missing: every launcher falls back with reason lookup-error"
  fi
  can get kubevirts.kubevirt.io -n "$KV_NS"
  if $KUBECTL get kubevirts.kubevirt.io "$KV_NAME" -n "$KV_NS" --as="$AS" >/dev/null 2>&1; then
    ok "KubeVirt $KV_NS/$KV_NAME readable"
  else
    bad "KubeVirt $KV_NS/$KV_NAME not readable as $AS: set settings.gate.kubevirt to your CR (HCO: e.g. openshift-cnv/kubevirt-kubevirt-hyperconverged)"
  fi
fi

if [ "$GATE" != disabled ]; then
  echo "Launcher Pods (migration targets, per namespace, per-pod mode):"
  can list pods --all-namespaces
  can watch pods --all-namespaces
fi

if [ "$MEMORY" = 1 ]; then
  echo "VirtualMachineInstances (memory overhead):"
  can get virtualmachineinstances.kubevirt.io --all-namespaces
fi

if [ "$CANI" = 1 ]; then
  echo "SubjectAccessReviews (can_i host capability):"
  can create subjectaccessreviews.authorization.k8s.io
fi

if [ "$failures" -gt 0 ]; then
  echo "preflight: ${failures} problem(s): do not apply policy.yaml yet"
  exit 1
fi
echo "preflight: ok"
