#!/usr/bin/env bash
# Prepares a Debian 12 machine (the Vagrant VM, or any Debian/Ubuntu host you run it on as root) to
# host a kind cluster with weft: checks the kernel weft needs, installs Docker Engine, kind and
# kubectl at pinned versions (each download checked against its published SHA-256), raises the
# inotify limits kind's nodes need, and keeps a BPF filesystem directory per kind node.
# Idempotent: a second run changes nothing that is already in place.
#
#   sudo vagrant/provision.sh
#
# Versions are pinned here and may be overridden from the environment (KIND_VERSION, KUBECTL_VERSION).
set -euo pipefail

KIND_VERSION="${KIND_VERSION:-v0.33.0}"
# One minor version of the cluster's Kubernetes either way is supported by kubectl; this is the
# node image's own version (see KIND_NODE_IMAGE in cluster-up.sh).
KUBECTL_VERSION="${KUBECTL_VERSION:-v1.36.4}"
# Docker's release key (https://download.docker.com/linux/debian/gpg), checked before it is trusted.
DOCKER_KEY_FINGERPRINT="9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
# Where each kind node's BPF filesystem lives on this machine (see kind-config.yaml).
BPFFS_NODES_DIR="${BPFFS_NODES_DIR:-/sys/fs/bpf/kind-weft}"
KIND_NODES=(control-plane worker)

say() { printf '[provision] %s\n' "$*" >&2; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and changes sysctls)"

# --- The kernel weft needs -------------------------------------------------------------------------
# kind nodes are containers: every node, and every pod in them, runs on this machine's kernel. So
# this kernel is the one weft's eBPF programs load into: it must have BTF (CO-RE relocations),
# cgroup v2 (the connect/sockops programs attach to each node's cgroup), and sk_lookup (5.9+).
kernel="$(uname -r)"
IFS=. read -r kmajor kminor _ <<<"${kernel%%-*}"
if (( kmajor < 5 || (kmajor == 5 && kminor < 15) )); then
  die "kernel $kernel is too old: weft needs Linux >= 5.15"
fi
[[ -r /sys/kernel/btf/vmlinux ]] || die "kernel $kernel has no BTF (/sys/kernel/btf/vmlinux): weft's CO-RE programs need CONFIG_DEBUG_INFO_BTF=y"
[[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]] || die "/sys/fs/cgroup is not cgroup v2 (unified hierarchy): boot with systemd.unified_cgroup_hierarchy=1"
say "kernel $kernel: BTF and cgroup v2 present"

# --- Packages --------------------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
# shellcheck source=/dev/null
. /etc/os-release
arch="$(dpkg --print-architecture)"
case "$arch" in
  amd64 | arm64) ;;
  *) die "architecture $arch: kind publishes amd64 and arm64 only" ;;
esac

apt_updated=0
apt_install() {
  local missing=()
  local p
  for p in "$@"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"install ok installed"* ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if ((apt_updated == 0)); then
    apt-get update -qq
    apt_updated=1
  fi
  say "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# curl and gnupg for the downloads below; jq reads `weft observe -o json` in smoke.sh; rsync is how
# Vagrant syncs the checkout into the VM.
apt_install ca-certificates curl gnupg jq rsync

# Docker Engine from Docker's own repository: kind tracks current Docker releases, and the image build
# uses BuildKit (docker-buildx-plugin), which the distribution's older docker.io lacks.
if ! command -v dockerd >/dev/null; then
  install -d -m 0755 /etc/apt/keyrings
  key="$(mktemp)"
  curl -fsSL "https://download.docker.com/linux/${ID}/gpg" -o "$key"
  got="$(gpg --show-keys --with-colons "$key" | awk -F: '$1 == "fpr" && !seen { print $10; seen = 1 }')"
  [[ "$got" == "$DOCKER_KEY_FINGERPRINT" ]] || die "Docker's apt key has fingerprint $got, expected $DOCKER_KEY_FINGERPRINT"
  gpg --dearmor <"$key" >/etc/apt/keyrings/docker.gpg
  rm -f "$key"
  echo "deb [arch=${arch} signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/${ID} ${VERSION_CODENAME} stable" \
    >/etc/apt/sources.list.d/docker.list
  apt_updated=0
fi
apt_install docker-ce docker-ce-cli containerd.io docker-buildx-plugin
systemctl enable --now docker >/dev/null
# The unprivileged login user (vagrant in the VM) may drive docker, kind and kubectl too.
login_user="${SUDO_USER:-vagrant}"
if id "$login_user" >/dev/null 2>&1 && [[ "$login_user" != root ]]; then
  usermod -aG docker "$login_user"
fi

# --- kind and kubectl: pinned binaries, each checked against its published SHA-256 -----------------
fetch_checked() { # URL SHA256-URL DEST
  local tmp
  tmp="$(mktemp)"
  curl -fsSL "$1" -o "$tmp"
  local want got
  want="$(curl -fsSL "$2" | awk 'NR == 1 { print $1 }')"
  got="$(sha256sum "$tmp" | awk '{ print $1 }')"
  if [[ -z "$want" || "$want" != "$got" ]]; then
    rm -f "$tmp"
    die "$1: SHA-256 $got does not match the published ${want:-<none>}"
  fi
  install -m 0755 "$tmp" "$3"
  rm -f "$tmp"
}

if [[ "$(kind version 2>/dev/null | awk '{ print $2 }')" != "$KIND_VERSION" ]]; then
  say "installing kind $KIND_VERSION"
  base="https://github.com/kubernetes-sigs/kind/releases/download/${KIND_VERSION}/kind-linux-${arch}"
  fetch_checked "$base" "${base}.sha256sum" /usr/local/bin/kind
fi
if [[ "$(kubectl version --client -o json 2>/dev/null | jq -r .clientVersion.gitVersion)" != "$KUBECTL_VERSION" ]]; then
  say "installing kubectl $KUBECTL_VERSION"
  base="https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${arch}/kubectl"
  fetch_checked "$base" "${base}.sha256" /usr/local/bin/kubectl
fi

# --- Limits and mounts kind's nodes need -----------------------------------------------------------
# Every kind node runs systemd, kubelet and containerd, each watching files: the default inotify
# limits run out with two nodes (kind's "known issues" page).
cat >/etc/sysctl.d/90-kind.conf <<'SYSCTL'
fs.inotify.max_user_watches = 524288
fs.inotify.max_user_instances = 512
SYSCTL
sysctl -q --system

# Pins live on a BPF filesystem. A kind node is a container with a fresh /sys and no bpffs in it, and
# the two nodes share this kernel: if both saw this machine's /sys/fs/bpf, both agents would pin
# under the same /sys/fs/bpf/weft. So each node gets its own directory of this machine's bpffs
# (kind-config.yaml mounts it at the node's /sys/fs/bpf); tmpfiles recreates them at boot, before
# Docker restarts the nodes, because a BPF filesystem does not outlive a reboot.
findmnt -t bpf /sys/fs/bpf >/dev/null || mount -t bpf bpf /sys/fs/bpf
{
  echo "# Per-kind-node BPF filesystem directories for weft (vagrant/provision.sh)"
  for n in "${KIND_NODES[@]}"; do echo "d ${BPFFS_NODES_DIR}/${n} 0700 root root -"; done
} >/etc/tmpfiles.d/weft-kind-bpffs.conf
systemd-tmpfiles --create /etc/tmpfiles.d/weft-kind-bpffs.conf

say "ready: $(docker version --format 'docker {{.Server.Version}}'), kind $KIND_VERSION, kubectl $KUBECTL_VERSION"
