#!/usr/bin/env bash
# Builds everything the offline test cluster needs, cached by Kubernetes version:
#   1. components: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#      kube-proxy, kubectl (from go.mod), etcd 3.5 + etcdctl (modules/etcd),
#      CoreDNS (modules/coredns), kind and crictl (go install), the pause binary
#      (gcc -static), devloop-runc (tools/runc-caps, see up.sh); with --docker-runtime
#      also cri-dockerd (built from its Go module)
#   2. the node image devloop/testnode:<k8s version> (Debian bookworm rootfs + binaries); with
#      --docker-runtime also its variant devloop/testnode-docker:<k8s version> (dockerd +
#      cri-dockerd as the kubelet's runtime, for up.sh --shape minikube-docker)
# A second run only checks cache keys and takes seconds.
#
# Usage: tests/cluster/build.sh [--components-only] [--docker-runtime]
# Env:   DEVLOOP_CLUSTER_CACHE  cache root (default ~/.cache/devloop-testcluster)
#        GOFLAGS                passed to go (default -p=2: the machine has 2 cores)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND_VERSION=v0.30.0     # the real kind CLI, used to prove the nodes pass for kind's
CRICTL_VERSION=v1.34.0   # crictl in the node: kind load uses `crictl inspecti`
# cri-dockerd, the kubelet's CRI for dockerd (what minikube runs with --container-runtime=docker).
# The Go module proxy serves only some of its versions; v0.3.14 is one, and speaks CRI v1.
CRI_DOCKERD_VERSION=v0.3.14

export GOFLAGS="${GOFLAGS:--p=2}"
export CGO_ENABLED=0
mkdir -p "$BIN_DIR"

# stamp_ok KEY NAME FILE...: true when every FILE exists and the stamp for KEY is current.
stamp_ok() {
  local key=$1 name=$2 f
  shift 2
  for f in "$@"; do [[ -x "$BIN_DIR/$f" ]] || return 1; done
  [[ "$(cat "$BIN_DIR/.$name.stamp" 2>/dev/null)" == "$key" ]]
}
stamp_set() { echo "$1" >"$BIN_DIR/.$2.stamp"; }

build_kubernetes() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w" pkg
  # Without these, components report v0.0.0-master+$Format:%H$ and kubectl/kind
  # version skew checks misbehave.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local key bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  key="$(hash_files "$CLUSTER_DIR/go.mod" "$CLUSTER_DIR/go.sum")-$(go env GOVERSION)-$(echo "$ldflags" | sha256sum | cut -c1-8)"
  if stamp_ok "$key" kubernetes "${bins[@]}"; then log "kubernetes $K8S_VERSION: cached"; return; fi
  local pkgs=()
  for pkg in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$pkg"); done
  # One go build for all six so shared packages compile once.
  (cd "$CLUSTER_DIR" && go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/" "${pkgs[@]}")
  stamp_set "$key" kubernetes
}

build_etcd() {
  local dir="$CLUSTER_DIR/modules/etcd" key
  key="$(hash_files "$dir/go.mod" "$dir/go.sum")-$(go env GOVERSION)"
  if stamp_ok "$key" etcd etcd etcdctl; then log "etcd: cached"; return; fi
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3 &&
    go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcdctl" go.etcd.io/etcd/etcdctl/v3)
  stamp_set "$key" etcd
}

build_coredns() {
  local dir="$CLUSTER_DIR/modules/coredns" key
  key="$(hash_files "$dir/go.mod" "$dir/go.sum")-$(go env GOVERSION)"
  if stamp_ok "$key" coredns coredns; then log "coredns: cached"; return; fi
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/coredns" github.com/coredns/coredns)
  stamp_set "$key" coredns
}

build_kind() {
  local key; key="$KIND_VERSION-$(go env GOVERSION)"
  if stamp_ok "$key" kind kind; then log "kind $KIND_VERSION: cached"; return; fi
  # kind's go.mod has no replace directives, so plain go install works.
  GOBIN="$BIN_DIR" go install "sigs.k8s.io/kind@$KIND_VERSION"
  stamp_set "$key" kind
}

build_crictl() {
  local key; key="$CRICTL_VERSION-$(go env GOVERSION)"
  if stamp_ok "$key" crictl crictl; then log "crictl $CRICTL_VERSION: cached"; return; fi
  GOBIN="$BIN_DIR" go install -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  stamp_set "$key" crictl
}

build_pause() {
  local src="$CLUSTER_DIR/node/pause.c" key
  key="$(hash_files "$src")"
  if stamp_ok "$key" pause pause; then log "pause: cached"; return; fi
  command -v gcc >/dev/null || ensure_pkgs gcc libc6-dev
  gcc -Os -static -Wall -Werror -o "$BIN_DIR/pause" "$src"
  strip "$BIN_DIR/pause"
  stamp_set "$key" pause
}

build_runc_caps() {
  local src="$CLUSTER_DIR/tools/runc-caps/main.go" key
  key="$(hash_files "$src")-$(go env GOVERSION)"
  if stamp_ok "$key" devloop-runc devloop-runc; then log "devloop-runc: cached"; return; fi
  (cd "$CLUSTER_DIR" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/devloop-runc" ./tools/runc-caps)
  stamp_set "$key" devloop-runc
}

build_cri_dockerd() {
  local key dir pkg=github.com/Mirantis/cri-dockerd
  key="$CRI_DOCKERD_VERSION-$(go env GOVERSION)"
  if stamp_ok "$key" cri-dockerd cri-dockerd; then log "cri-dockerd $CRI_DOCKERD_VERSION: cached"; return; fi
  # `go install` refuses it (its go.mod has replace directives): build inside the downloaded
  # module. Its zip has no vendor/ contents, so dependencies come from the module proxy
  # (-mod=mod), resolved by the module's own go.mod and go.sum. Downloaded from a directory
  # outside any module so this one's go.mod is not involved.
  dir="$(cd "$BIN_DIR" && go mod download -json "$pkg@$CRI_DOCKERD_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || die "go mod download $pkg@$CRI_DOCKERD_VERSION failed"
  (cd "$dir" && go build -mod=mod -trimpath -o "$BIN_DIR/cri-dockerd" \
    -ldflags "-s -w -X $pkg/cmd/version.Version=${CRI_DOCKERD_VERSION#v} -X $pkg/cmd/version.GitCommit=$CRI_DOCKERD_VERSION" .)
  stamp_set "$key" cri-dockerd
}

main() {
  local t0 docker_runtime="" images=yes arg
  t0=$(date +%s.%N)
  for arg in "$@"; do
    case "$arg" in
      --components-only) images="" ;;
      --docker-runtime) docker_runtime=yes ;;
      *) die "unknown option $arg (usage: build.sh [--components-only] [--docker-runtime])" ;;
    esac
  done
  command -v go >/dev/null || die "Go >= 1.24 is needed (expected at /usr/local/go)"
  log "Kubernetes $K8S_VERSION, cache $CACHE_DIR"
  step "build kubernetes components" build_kubernetes
  step "build etcd" build_etcd
  step "build coredns" build_coredns
  step "install kind" build_kind
  step "install crictl" build_crictl
  step "build pause" build_pause
  step "build devloop-runc (runtime wrapper)" build_runc_caps
  [[ -z "$docker_runtime" ]] || step "build cri-dockerd" build_cri_dockerd
  if [[ -n "$images" ]]; then
    step "node image" "$CLUSTER_DIR/node/build-image.sh"
    [[ -z "$docker_runtime" ]] || step "node image, docker runtime" "$CLUSTER_DIR/node/docker/build-image.sh"
  fi
  log "build.sh done in $(elapsed "$t0")s"
}
main "$@"
