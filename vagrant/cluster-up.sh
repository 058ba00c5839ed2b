#!/usr/bin/env bash
# Brings up weft on a two-node kind cluster: builds weft's image with Docker, creates the cluster
# (kind-config.yaml), loads the image into its nodes, installs weft from daemonset/, deploys the
# example app (examples/k8s/) in the enrolled namespace "shop" and applies its policies
# (examples/policies.yaml). Idempotent: an existing cluster is reused and everything is re-applied.
#
#   sudo vagrant/cluster-up.sh          (after vagrant/provision.sh; the Vagrantfile runs both)
#
# Environment: WEFT_SRC (the checkout; default this script's parent), WEFT_IMAGE (the image to build;
# default the weft image daemonset/ names), KIND_NODE_IMAGE, KIND_CLUSTER (default weft),
# KUBECONFIG_FOR (a login user who also gets the cluster's kubeconfig).
set -euo pipefail

WEFT_SRC="${WEFT_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
KIND_CLUSTER="${KIND_CLUSTER:-weft}"
# Pinned by digest, as kind asks: a node image is built for one kind release (v0.33.0 here).
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed}"
WEFT_NAMESPACE=weft-system
BPFFS_NODES_DIR="${BPFFS_NODES_DIR:-/sys/fs/bpf/kind-weft}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-300s}"

say() { printf '[cluster-up] %s\n' "$*" >&2; }
die() { printf '[cluster-up] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || die "$tool is missing: run vagrant/provision.sh first"
done
[[ -f "$WEFT_SRC/Dockerfile" ]] || die "no Dockerfile in $WEFT_SRC: weft's image cannot be built"
[[ -f "$WEFT_SRC/daemonset/kustomization.yaml" ]] || die "no daemonset/kustomization.yaml in $WEFT_SRC"

# --- weft's image ----------------------------------------------------------------------------------
# The manifests name the image; build exactly that reference, so `kubectl apply -k daemonset/` runs
# unchanged. Every image in daemonset/ whose repository ends in "weft" is ours.
rendered="$(kubectl kustomize "$WEFT_SRC/daemonset")"
mapfile -t weft_images < <(awk '$1 == "image:" || $1 == "-" && $2 == "image:" { print $NF }' <<<"$rendered" \
  | tr -d '"'"'" | sort -u | grep -E '(^|/)weft(:|@|$)' || true)
if [[ -n "${WEFT_IMAGE:-}" ]]; then
  weft_images=("$WEFT_IMAGE")
fi
((${#weft_images[@]} > 0)) || die "daemonset/ names no weft image (and WEFT_IMAGE is not set)"
if grep -q 'imagePullPolicy: Always' <<<"$rendered"; then
  die "daemonset/ asks for imagePullPolicy: Always: a kind node would pull instead of using the loaded image"
fi
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
old_image="$(image_id "${weft_images[0]}")"
say "building ${weft_images[0]} from $WEFT_SRC"
docker build --tag "${weft_images[0]}" "$WEFT_SRC"
new_image="$(image_id "${weft_images[0]}")"
for extra in "${weft_images[@]:1}"; do docker tag "${weft_images[0]}" "$extra"; done

# --- The kind cluster ------------------------------------------------------------------------------
# Each node's own BPF filesystem directory (kind-config.yaml mounts it at the node's /sys/fs/bpf).
findmnt -t bpf /sys/fs/bpf >/dev/null || mount -t bpf bpf /sys/fs/bpf
mkdir -p "$BPFFS_NODES_DIR/control-plane" "$BPFFS_NODES_DIR/worker"
if grep -qx "$KIND_CLUSTER" <<<"$(kind get clusters 2>/dev/null)"; then
  say "kind cluster $KIND_CLUSTER exists: reusing it"
else
  say "creating kind cluster $KIND_CLUSTER (two nodes, kindnet)"
  kind create cluster --name "$KIND_CLUSTER" --config "$WEFT_SRC/vagrant/kind-config.yaml" --image "$KIND_NODE_IMAGE" --wait 180s
fi
kubectl config use-context "kind-$KIND_CLUSTER" >/dev/null

# What weft's eBPF needs from each node, checked where the agent will run.
mapfile -t nodes < <(kind get nodes --name "$KIND_CLUSTER")
((${#nodes[@]} == 2)) || die "kind cluster $KIND_CLUSTER has ${#nodes[@]} nodes, expected 2 (delete it: kind delete cluster --name $KIND_CLUSTER)"
for n in "${nodes[@]}"; do
  docker exec "$n" findmnt -t bpf /sys/fs/bpf >/dev/null || die "node $n: no BPF filesystem at /sys/fs/bpf (see vagrant/kind-config.yaml)"
  [[ "$(docker exec "$n" stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]] || die "node $n: /sys/fs/cgroup is not cgroup v2"
  docker exec "$n" test -r /sys/kernel/btf/vmlinux || die "node $n: no BTF at /sys/kernel/btf/vmlinux"
done
# Two nodes, both for pods: the control plane takes workloads too (the agent DaemonSet tolerates
# every taint anyway; the example app needs two nodes to cross).
kubectl taint nodes --all node-role.kubernetes.io/control-plane:NoSchedule- >/dev/null 2>&1 || true

for image in "${weft_images[@]}"; do
  say "loading $image into the nodes"
  kind load docker-image "$image" --name "$KIND_CLUSTER"
done

# --- weft ------------------------------------------------------------------------------------------
installed=0
kubectl -n "$WEFT_NAMESPACE" get daemonset weft-agent >/dev/null 2>&1 && installed=1
say "installing weft: kubectl apply -k daemonset/"
kubectl apply -k "$WEFT_SRC/daemonset"
# Same tag, new build (the checkout changed, `vagrant rsync` then this script): the pods run the old
# image until they restart. The agents' restart is an upgrade: the new one takes the sockets over.
if ((installed)) && [[ "$old_image" != "$new_image" ]]; then
  say "the image changed: restarting weft's pods"
  kubectl -n "$WEFT_NAMESPACE" rollout restart deployment
  kubectl -n "$WEFT_NAMESPACE" rollout restart daemonset
fi
# The policy kinds (daemonset/crds/) must be served before the policies are applied below.
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
for workload in $(kubectl -n "$WEFT_NAMESPACE" get deployments,daemonsets -o name); do
  say "waiting for $workload"
  kubectl -n "$WEFT_NAMESPACE" rollout status "$workload" --timeout="$ROLLOUT_TIMEOUT"
done

# --- The example app and its policies --------------------------------------------------------------
say "deploying the example app: kubectl apply -k examples/k8s/"
kubectl apply -k "$WEFT_SRC/examples/k8s"
for ns in shop legacy; do
  kubectl -n "$ns" wait --for=condition=Available deployment --all --timeout="$ROLLOUT_TIMEOUT" >/dev/null
done
say "applying the policies: kubectl apply -f examples/policies.yaml"
kubectl apply -f "$WEFT_SRC/examples/policies.yaml"

# The login user drives the cluster too (vagrant ssh -c 'kubectl get pods -A').
if [[ -n "${KUBECONFIG_FOR:-}" ]] && id "$KUBECONFIG_FOR" >/dev/null 2>&1; then
  home="$(getent passwd "$KUBECONFIG_FOR" | cut -d: -f6)"
  install -d -o "$KUBECONFIG_FOR" -m 0700 "$home/.kube"
  kind export kubeconfig --name "$KIND_CLUSTER" --kubeconfig "$home/.kube/config" >/dev/null
  chown "$KUBECONFIG_FOR" "$home/.kube/config"
fi

kubectl get pods -A -o wide
say "ready: weft on kind cluster $KIND_CLUSTER; next: vagrant/smoke.sh"
