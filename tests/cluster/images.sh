#!/usr/bin/env bash
# Builds the offline stand-ins for the public images the samples use (cached)
# and, given a cluster NAME, loads them into its node.
#
#   busybox:1.36       Debian busybox-static, applets in /bin (httpd, wget, nslookup...)
#   python:3.12-slim   Debian Python 3.11, python/pip in /usr/local/bin, the Django
#                      sample's requirements.txt preinstalled
#   postgres:16        Debian PostgreSQL 15 behind the official entrypoint interface
#   redis:7            Debian redis 7.0 behind the official entrypoint interface
#
# They carry the official names so the same manifests and Dockerfiles work
# online (real images) and offline (these). Each is rebuilt only when its
# recipe changes (label devloop.inputs).
#
# Usage: tests/cluster/images.sh [NAME]   (NAME: a kind- or minikube-shaped cluster from up.sh)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# tag=recipe directory under images/
IMAGES=(busybox:1.36=busybox python:3.12-slim=python postgres:16=postgres redis:7=redis)
REQUIREMENTS="$CLUSTER_DIR/../../samples/django/requirements.txt"
# Used until the sample exists (the brief's ranges).
DEFAULT_REQUIREMENTS=$'Django>=5.0,<5.2\npsycopg[binary]>=3.1\nredis>=5\ngunicorn>=22'

export PATH="$BIN_DIR:$PATH"

# fetch_wheels REQUIREMENTS DEST: CPython 3.11 manylinux wheels (Debian
# bookworm's Python) for REQUIREMENTS, cached by the requirements' hash.
fetch_wheels() {
  local req=$1 dest=$2 cache
  cache="$CACHE_ROOT/wheels/$(sha256sum "$req" | cut -c1-16)"
  if [[ ! -f "$cache/.complete" ]]; then
    python3 -m pip --version >/dev/null 2>&1 || ensure_pkgs python3-pip
    rm -rf "$cache" && mkdir -p "$cache"
    python3 -m pip download --quiet --no-cache-dir --dest "$cache" --only-binary=:all: \
      --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
      -r "$req" >&2 || die "pip download failed"
    touch "$cache/.complete"
  fi
  mkdir -p "$dest"
  cp "$cache"/*.whl "$dest/"
}

build_one() {
  local tag=$1 dir="$CLUSTER_DIR/images/$2" base ctx key
  base="$(base_image_tag)"
  ctx="$(mktemp -d /var/tmp/devloop-img.XXXXXX)"
  cp -r "$dir/." "$ctx/"
  if [[ $2 == python ]]; then
    if [[ -f "$REQUIREMENTS" ]]; then cp "$REQUIREMENTS" "$ctx/requirements.txt"
    else echo "$DEFAULT_REQUIREMENTS" >"$ctx/requirements.txt"; fi
    fetch_wheels "$ctx/requirements.txt" "$ctx/wheels"
  fi
  key="$( (cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$base") | sha256sum | cut -c1-16)"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "devloop.inputs"}}' "$tag" 2>/dev/null)" == "$key" ]]; then
    log "$tag: cached"
  else
    docker_build --build-arg BASE_IMAGE="$base" --label "devloop.inputs=$key" \
      --label devloop.stand-in=true -t "$tag" "$ctx" ||
      { rm -rf "$ctx"; die "building $tag failed"; }
    log "$tag: built ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
  fi
  rm -rf "$ctx"
}

# load_into NAME TAG...: kind-shaped clusters via the real `kind load` (skips
# images the node already has); minikube-shaped via docker save | ctr import, or
# | docker load into the node's dockerd for the docker runtime.
load_into() {
  local name=$1 c tag
  shift
  if [[ -n "$(docker ps -q --filter "label=io.x-k8s.kind.cluster=$name")" ]]; then
    # One image per call: kind re-sends every image named in a call as soon
    # as one of them is missing from the node.
    for tag in "$@"; do
      kind load docker-image --name "$name" "$tag"
    done
    return
  fi
  c="$(docker ps -q --filter "label=name.minikube.sigs.k8s.io=$name")"
  [[ -n "$c" ]] || die "no running cluster named $name"
  local missing=() runtime
  runtime="$(node_runtime "$c")"
  for tag in "$@"; do
    if [[ "$runtime" == docker ]]; then
      [[ "$(docker exec "$c" docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null)" == \
        "$(docker image inspect -f '{{.Id}}' "$tag")" ]] || missing+=("$tag")
    else
      [[ "$(docker exec "$c" crictl inspecti -o go-template --template '{{.status.id}}' "$tag" 2>/dev/null)" == \
        "$(docker image inspect -f '{{.Id}}' "$tag")" ]] || missing+=("$tag")
    fi
  done
  ((${#missing[@]})) || { log "all images already in $name"; return; }
  if [[ "$runtime" == docker ]]; then
    docker save "${missing[@]}" | docker exec -i "$c" docker load >/dev/null
  else
    docker save "${missing[@]}" |
      docker exec -i "$c" ctr -n k8s.io images import --all-platforms --digests --snapshotter=overlayfs - >/dev/null
  fi
  log "loaded ${missing[*]} into $name ($runtime)"
}

main() {
  ensure_docker
  step "base image" ensure_base_image
  local spec tags=()
  for spec in "${IMAGES[@]}"; do
    step "image ${spec%%=*}" build_one "${spec%%=*}" "${spec#*=}"
    tags+=("${spec%%=*}")
  done
  if (($#)); then
    step "load into $1" load_into "$1" "${tags[@]}"
  fi
}
main "$@"
