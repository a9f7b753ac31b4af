#!/usr/bin/env bash
# Builds devloop/testnode-docker:<k8s version>, the docker-runtime variant of the node image
# (node/docker/Dockerfile), FROM the base node image and the cri-dockerd that build.sh
# --docker-runtime put in the cache. Skipped when an image with the same inputs exists.
set -euo pipefail
# shellcheck source=../../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../lib.sh"

VARIANT_DIR="$CLUSTER_DIR/node/docker"

ensure_docker
[[ -x "$BIN_DIR/cri-dockerd" ]] || die "$BIN_DIR/cri-dockerd missing: run build.sh --docker-runtime"
base_id="$(docker image inspect -f '{{.Id}}' "$NODE_IMAGE" 2>/dev/null)" || die "$NODE_IMAGE missing: run build.sh"

# Cache key: this recipe, the base node image and cri-dockerd's build stamp.
key="$( (cd "$VARIANT_DIR" && find Dockerfile entrypoint-docker.sh runc-node files -type f -print0 | sort -z | xargs -0 cat)
  echo "$base_id"; cat "$BIN_DIR/.cri-dockerd.stamp")"
key="$(echo "$key" | sha256sum | cut -c1-16)"
if [[ "$(docker image inspect -f '{{index .Config.Labels "devloop.inputs"}}' "$NODE_DOCKER_IMAGE" 2>/dev/null)" == "$key" ]]; then
  log "$NODE_DOCKER_IMAGE (inputs $key): cached"
  exit 0
fi

ctx="$(mktemp -d /var/tmp/devloop-node-docker-ctx.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
cp -r "$VARIANT_DIR/Dockerfile" "$VARIANT_DIR/entrypoint-docker.sh" "$VARIANT_DIR/runc-node" "$VARIANT_DIR/files" "$ctx/"
ln "$BIN_DIR/cri-dockerd" "$ctx/cri-dockerd" 2>/dev/null || cp "$BIN_DIR/cri-dockerd" "$ctx/cri-dockerd"

docker_build --build-arg NODE_IMAGE="$NODE_IMAGE" --build-arg INPUTS="$key" -t "$NODE_DOCKER_IMAGE" "$ctx" >/dev/null
log "built $NODE_DOCKER_IMAGE (inputs $key): $(docker image inspect -f '{{.Size}}' "$NODE_DOCKER_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
