# shellcheck shell=bash
# Shared helpers for the offline test cluster scripts (sourced, not run).

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

# The one Kubernetes version this cluster runs: whatever go.mod pins.
# (a "require" line or an entry of a require block; replace lines have "=>").
K8S_VERSION="$(awk '/=>/ {next} $1 == "require" {$1 = ""; $0 = $0} $1 == "k8s.io/kubernetes" {print $2; exit}' "$CLUSTER_DIR/go.mod")"
CACHE_ROOT="${DEVLOOP_CLUSTER_CACHE:-$HOME/.cache/devloop-testcluster}"
CACHE_DIR="$CACHE_ROOT/$K8S_VERSION"
# shellcheck disable=SC2034  # used by the scripts that source this file
BIN_DIR="$CACHE_DIR/bin"
# shellcheck disable=SC2034
NODE_IMAGE="devloop/testnode:$K8S_VERSION"
# shellcheck disable=SC2034
NODE_DOCKER_IMAGE="devloop/testnode-docker:$K8S_VERSION" # node/docker/: dockerd + cri-dockerd

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# step NAME CMD...: run CMD and print how long it took. CMD is not run in a
# conditional context, so errexit still stops the script inside it.
step() {
  local name=$1 start
  shift
  start=$(date +%s.%N)
  log "== $name"
  "$@"
  log "== $name: $(elapsed "$start")s"
}
elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}'; }

# Install Debian packages that are missing (idempotent; apt-get update only when needed).
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

# Start dockerd if nothing answers on the socket (CI machines start no services).
ensure_docker() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || ensure_pkgs docker.io
  log "starting dockerd"
  (setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &)
  local _
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "dockerd did not start; see /var/log/dockerd.log"
}

# Content hash of files (used as cache keys).
hash_files() { cat "$@" | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------------------
# Debian bookworm base image, made with debootstrap (no registry needed).
# Every image of the test cluster (node, stand-ins) builds FROM it; its tag
# carries a hash of this recipe so a changed recipe makes a new base.
DEBIAN_MIRROR="${DEVLOOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_RECIPE_VERSION=2
base_image_tag() {
  echo "devloop/bookworm-base:$(echo "$BASE_RECIPE_VERSION $DEBIAN_MIRROR" | sha256sum | cut -c1-12)"
}

ensure_base_image() {
  local tag rootfs
  tag="$(base_image_tag)"
  docker image inspect "$tag" >/dev/null 2>&1 && { log "base image $tag: cached"; return 0; }
  ensure_pkgs debootstrap
  rootfs="$(mktemp -d /var/tmp/devloop-rootfs.XXXXXX)"
  # shellcheck disable=SC2064  # expand now: the trap must remove this dir
  trap "rm -rf '$rootfs'" RETURN
  log "debootstrap bookworm (minbase) into $rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 ||
    { tail -20 "$rootfs.log" >&2; die "debootstrap failed"; }
  rm -f "$rootfs.log"
  cat >"$rootfs/etc/apt/sources.list" <<SRC
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
SRC
  # Slim images: no recommends, no docs/locales, no apt caches (as Docker's debian image).
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$rootfs/etc/apt/apt.conf.d/90devloop-norecommends"
  printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/90devloop-nodoc"
  # As Docker's debian image: apt deletes downloaded .debs after every install.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  tar -C "$rootfs" --numeric-owner -c . | docker import -c 'CMD ["bash"]' - "$tag" >/dev/null
  log "imported $tag"
}

# docker build, quiet: output only when it fails. (A current docker CLI without
# buildx prints a deprecation banner for the legacy builder on every build.)
docker_build() {
  local out rc=0
  out="$(DOCKER_BUILDKIT=0 docker build -q "$@" 2>&1)" || rc=$?
  ((rc == 0)) || { printf '%s\n' "$out" >&2; return "$rc"; }
}

# ---------------------------------------------------------------------------
# minikube-shaped nodes with the docker runtime (up.sh --shape minikube-docker).
# shellcheck disable=SC2034  # used by the scripts that source this file
DOCKERD_TLS_PORT=2376 # minikube's constants.DockerDaemonPort
# Labels up.sh adds to such a node for the other scripts (minikube has no equivalent).
RUNTIME_LABEL=devloop.test/runtime
# shellcheck disable=SC2034
MINIKUBE_HOME_LABEL=devloop.test/minikube-home
# The file that marks a profile in minikube's home as a test cluster's (down.sh removes only those).
PROFILE_MARKER=.devloop-test-cluster

# published_port CONTAINER PORT: the host port Docker publishes PORT/tcp of CONTAINER on.
published_port() {
  docker inspect -f "{{ (index (index .NetworkSettings.Ports \"$2/tcp\") 0).HostPort }}" "$1"
}

# node_runtime CONTAINER: docker for a minikube-docker node, containerd for every other.
node_runtime() {
  local r
  r="$(docker inspect -f "{{ index .Config.Labels \"$RUNTIME_LABEL\" }}" "$1" 2>/dev/null || true)"
  echo "${r:-containerd}"
}

# minikube's own directory, as minikube computes it (localpath.MiniPath): $MINIKUBE_HOME when it
# ends in .minikube, else $MINIKUBE_HOME/.minikube; without it ~/.minikube.
minikube_path() {
  local h=${MINIKUBE_HOME:-}
  if [[ -z "$h" ]]; then echo "$HOME/.minikube"
  elif [[ "$(basename "$h")" == .minikube ]]; then echo "$h"
  else echo "$h/.minikube"; fi
}

# ensure_minikube_certs MINI_PATH NAME MACHINE_DIR: the certificates `minikube start` makes for
# the Docker API of a docker-runtime node, with openssl: MINI_PATH/certs/{ca,ca-key,cert,key}.pem
# (one CA and one client certificate for every profile; reused when present, as minikube does)
# and, signed by that CA, MACHINE_DIR/{server,server-key}.pem for 127.0.0.1, localhost and NAME,
# next to a copy of ca.pem (the node mounts MACHINE_DIR).
ensure_minikube_certs() {
  local name=$2 machine=$3 certs="$1/certs" ext
  command -v openssl >/dev/null || ensure_pkgs openssl
  mkdir -p "$certs" "$machine"
  chmod 700 "$certs"
  if [[ ! -f "$certs/ca.pem" ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/O=devloop-test/CN=minikubeCA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
      -keyout "$certs/ca-key.pem" -out "$certs/ca.pem" 2>/dev/null
  fi
  [[ -f "$certs/ca-key.pem" ]] || die "$certs/ca.pem exists without ca-key.pem: cannot sign certificates (use another MINIKUBE_HOME)"
  ext="$(mktemp)"
  if [[ ! -f "$certs/cert.pem" || ! -f "$certs/key.pem" ]]; then
    printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -subj "/O=devloop-test/CN=client" \
      -keyout "$certs/key.pem" -out "$certs/client.csr" 2>/dev/null
    openssl x509 -req -in "$certs/client.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca-key.pem" -CAcreateserial \
      -days 3650 -sha256 -extfile "$ext" -out "$certs/cert.pem" 2>/dev/null
    rm -f "$certs/client.csr"
  fi
  if [[ ! -f "$machine/server.pem" || ! -f "$machine/server-key.pem" ]] ||
    ! openssl verify -CAfile "$certs/ca.pem" "$machine/server.pem" >/dev/null 2>&1; then
    printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:%s,DNS:minikube\n' "$name" >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -subj "/O=devloop-test/CN=$name" \
      -keyout "$machine/server-key.pem" -out "$machine/server.csr" 2>/dev/null
    openssl x509 -req -in "$machine/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca-key.pem" -CAcreateserial \
      -days 3650 -sha256 -extfile "$ext" -out "$machine/server.pem" 2>/dev/null
    rm -f "$machine/server.csr"
  fi
  rm -f "$ext"
  cp "$certs/ca.pem" "$machine/ca.pem"
  chmod 600 "$certs"/*key.pem "$machine/server-key.pem"
}

# write_minikube_profile MINI_PATH NAME K8S_VERSION NODE_IP API_PORT RUNTIME: the part of
# minikube's profile config (profiles/NAME/config.json) that tools read, marked as a test
# cluster's. Refuses to overwrite a profile of a real minikube.
write_minikube_profile() {
  local dir="$1/profiles/$2"
  check_profile_free "$1" "$2"
  mkdir -p "$dir"
  touch "$dir/$PROFILE_MARKER"
  cat >"$dir/config.json" <<JSON
{
  "Name": "$2",
  "Driver": "docker",
  "KubernetesConfig": {
    "KubernetesVersion": "$3",
    "ClusterName": "$2",
    "ContainerRuntime": "$6",
    "APIServerPort": $5
  },
  "Nodes": [
    {
      "Name": "",
      "IP": "$4",
      "Port": $5,
      "KubernetesVersion": "$3",
      "ContainerRuntime": "$6",
      "ControlPlane": true,
      "Worker": true
    }
  ]
}
JSON
}

# check_profile_free MINI_PATH NAME: fail when MINI_PATH has a profile NAME a real minikube made.
check_profile_free() {
  local dir="$1/profiles/$2"
  [[ ! -e "$dir" || -e "$dir/$PROFILE_MARKER" ]] ||
    die "$dir is a real minikube profile: pick another cluster name, or set MINIKUBE_HOME to another directory"
}
