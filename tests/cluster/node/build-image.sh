#!/usr/bin/env bash
# Builds the node image devloop/testnode:<k8s version> from the binaries that
# build.sh put in the cache. Skipped when an image with the same inputs exists.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

NODE_DIR="$CLUSTER_DIR/node"
NODE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd etcdctl crictl)
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
COREDNS_IMAGE=registry.k8s.io/coredns/coredns:v1.12.4

ensure_docker
ensure_base_image
base="$(base_image_tag)"

# Cache key: the recipe files, the base image and the build stamps of the binaries it holds
# (all but cri-dockerd, which only the docker-runtime variant, node/docker/, adds).
inputs="$( (cd "$NODE_DIR" && find Dockerfile entrypoint.sh pause.c files -type f -print0 | sort -z | xargs -0 cat)
  echo "$base"
  for stamp in "$BIN_DIR"/.*.stamp; do [[ "$stamp" == */.cri-dockerd.stamp ]] || cat "$stamp"; done)"
key="$(echo "$inputs" | sha256sum | cut -c1-16)"
if [[ "$(docker image inspect -f '{{index .Config.Labels "devloop.inputs"}}' "$NODE_IMAGE" 2>/dev/null)" == "$key" ]]; then
  log "$NODE_IMAGE (inputs $key): cached"
  exit 0
fi

ctx="$(mktemp -d /var/tmp/devloop-node-ctx.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/images" "$ctx/rootfs"
cp -r "$NODE_DIR/Dockerfile" "$NODE_DIR/entrypoint.sh" "$NODE_DIR/files" "$ctx/"
for b in "${NODE_BINS[@]}"; do
  [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b missing: run build.sh"
  ln "$BIN_DIR/$b" "$ctx/bin/$b" 2>/dev/null || cp "$BIN_DIR/$b" "$ctx/bin/$b"
done

# one_file_image TAG ARCHIVE ENTRYPOINT FILE...: a FROM-scratch image holding
# only FILEs (copied to /), saved as a docker archive for ctr import at start.
one_file_image() {
  local tag=$1 archive=$2 entry=$3 dir="$ctx/rootfs/$RANDOM"
  shift 3
  mkdir -p "$dir/etc/ssl/certs"
  cp "$@" "$dir/"
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/" 2>/dev/null || true
  tar -C "$dir" --numeric-owner --owner=0 --group=0 -c . |
    docker import -c "ENTRYPOINT [\"$entry\"]" - "$tag" >/dev/null
  docker save "$tag" -o "$archive"
}
one_file_image "$PAUSE_IMAGE" "$ctx/images/pause.tar" /pause "$BIN_DIR/pause"
one_file_image "$COREDNS_IMAGE" "$ctx/images/coredns.tar" /coredns "$BIN_DIR/coredns"
rm -rf "$ctx/rootfs"

docker_build --build-arg BASE_IMAGE="$base" --build-arg INPUTS="$key" -t "$NODE_IMAGE" "$ctx" >/dev/null
log "built $NODE_IMAGE (inputs $key): $(docker image inspect -f '{{.Size}}' "$NODE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
