#!/usr/bin/env bash
# Starts a one-node test cluster in a privileged container that tools take for
# a kind (default) or minikube (docker driver) cluster, merges its kubeconfig
# and waits until the node is Ready and CoreDNS is available.
#
# Usage: tests/cluster/up.sh [NAME] [--shape kind|minikube|minikube-docker] [--timeout SECONDS]
#   kind:            container NAME-control-plane, context kind-NAME (NAME default "kind")
#   minikube:        container NAME, context NAME (NAME default "minikube"), containerd runtime
#   minikube-docker: as minikube, with the docker runtime (dockerd + cri-dockerd in the node,
#                    its Docker API published with TLS as `minikube docker-env` expects; client
#                    certificates and the profile written to minikube's home)
# Env: KUBECONFIG (first path is written; default ~/.kube/config)
#      MINIKUBE_HOME (minikube-docker; as minikube reads it, default ~/.minikube)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=""
SHAPE=kind
TIMEOUT=300
while (($#)); do
  case "$1" in
    --shape) SHAPE=${2:?--shape needs kind, minikube or minikube-docker}; shift 2 ;;
    --shape=*) SHAPE=${1#--shape=}; shift ;;
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) [[ -z "$NAME" ]] || die "one cluster name only"; NAME=$1; shift ;;
  esac
done

case "$SHAPE" in
  kind)
    NAME=${NAME:-kind}
    CONTAINER="$NAME-control-plane"
    CONTEXT="kind-$NAME"
    LABELS=(--label "io.x-k8s.kind.cluster=$NAME" --label io.x-k8s.kind.role=control-plane)
    NODE_LABELS=""
    API_PORT=6443
    ;;
  minikube | minikube-docker)
    NAME=${NAME:-minikube}
    CONTAINER="$NAME"
    CONTEXT="$NAME"
    # The labels minikube's docker driver (kic) puts on its node container.
    LABELS=(--label created_by.minikube.sigs.k8s.io=true --label "name.minikube.sigs.k8s.io=$NAME"
      --label role.minikube.sigs.k8s.io= --label mode.minikube.sigs.k8s.io=single)
    NODE_LABELS="minikube.k8s.io/name=$NAME,minikube.k8s.io/primary=true"
    API_PORT=8443 # minikube's API server port inside the node
    ;;
  *) die "--shape must be kind, minikube or minikube-docker" ;;
esac
[[ "$NAME" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "cluster name must be a DNS label: $NAME"
IMAGE="$NODE_IMAGE"
BUILD_ARGS=()
EXTRA_RUN=()
if [[ "$SHAPE" == minikube-docker ]]; then
  IMAGE="$NODE_DOCKER_IMAGE"
  BUILD_ARGS=(--docker-runtime)
  MINI_PATH="$(minikube_path)"
  MACHINE_DIR="$MINI_PATH/machines/$NAME"
  # For the scripts (images.sh, smoke.sh, down.sh): the runtime, and where the certs and profile are.
  LABELS+=(--label "$RUNTIME_LABEL=docker" --label "$MINIKUBE_HOME_LABEL=$MINI_PATH")
  # The node's Docker API, as minikube's kic driver publishes it (TLS, loopback, random port).
  EXTRA_RUN=(--publish "127.0.0.1::$DOCKERD_TLS_PORT" --volume "$MACHINE_DIR:/etc/docker/tls:ro")
fi

START=$(date +%s.%N)
export PATH="$BIN_DIR:$PATH"
ensure_docker
step "build (cached)" "$CLUSTER_DIR/build.sh" "${BUILD_ARGS[@]}" >&2

KC_FILE="${KUBECONFIG:-$HOME/.kube/config}"
KC_FILE="${KC_FILE%%:*}"
mkdir -p "$(dirname "$KC_FILE")"

# Capabilities (by docker name) missing from dockerd's bounding set.
missing_caps() {
  local bnd names i
  bnd=$((16#$(awk '/^CapBnd/ {print $2}' "/proc/$(pgrep -xo dockerd || echo self)/status")))
  names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ)
  for i in "${!names[@]}"; do
    (((bnd >> i) & 1)) || echo "${names[$i]}"
  done
}

# Register devloop-runc (tools/runc-caps) as a Docker runtime, reloading
# dockerd's config with SIGHUP (runtimes are reloadable; no restart).
ensure_caps_runtime() {
  local want="$BIN_DIR/devloop-runc" conf=/etc/docker/daemon.json pid
  # Registered already, with this cache's wrapper? (A path from a removed cache would break.)
  docker info -f '{{json .Runtimes}}' | grep -qF "\"devloop-runc\":{\"path\":\"$want\"" && return 0
  log "dockerd lacks capabilities ($(missing_caps | tr '\n' ' ')): registering runtime devloop-runc in $conf"
  "$BIN_DIR/devloop-runc" --install "$conf" devloop-runc
  pid="$(pgrep -xo dockerd)" || die "dockerd not found"
  kill -HUP "$pid"
  local _
  for _ in $(seq 1 50); do
    docker info -f '{{json .Runtimes}}' | grep -qF "\"devloop-runc\":{\"path\":\"$want\"" && return 0
    sleep 0.2
  done
  die "dockerd did not pick up the devloop-runc runtime (see /var/log/dockerd.log)"
}

container_running() { [[ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" == true ]]; }

start_container() {
  if docker inspect "$CONTAINER" >/dev/null 2>&1; then
    if container_running && [[ "$(docker inspect -f '{{.Image}}' "$CONTAINER")" == "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]]; then
      log "$CONTAINER already running: reusing it"
      return 0
    fi
    log "removing stale container $CONTAINER"
    docker rm -f -v "$CONTAINER" >/dev/null
  fi
  local extra=()
  # Without a private cgroup namespace on cgroup v1, kubelet would see (and
  # fight over) the host's cgroup tree. Docker >= 20.10 supports it.
  extra+=(--cgroupns=private)
  [[ -d /lib/modules ]] && extra+=(--volume /lib/modules:/lib/modules:ro)
  # kind runs nodes --privileged (and `docker exec --privileged`s into them).
  # Where dockerd lacks a capability, that fails with "unable to apply caps";
  # the devloop-runc runtime drops the missing ones from each container spec.
  if [[ -n "$(missing_caps)" ]]; then
    ensure_caps_runtime
    extra+=(--runtime devloop-runc)
  fi
  docker run -d --name "$CONTAINER" --hostname "$CONTAINER" "${LABELS[@]}" \
    --privileged --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --tmpfs /tmp --tmpfs /run --volume /var "${extra[@]}" \
    --restart=on-failure:1 \
    --env "DEVLOOP_NODE_NAME=$CONTAINER" --env "DEVLOOP_NODE_LABELS=$NODE_LABELS" \
    --env "DEVLOOP_API_PORT=$API_PORT" --publish "127.0.0.1::$API_PORT" "${EXTRA_RUN[@]}" \
    "$IMAGE" >/dev/null
}

wait_ready_in_node() {
  local deadline=$(($(date +%s) + TIMEOUT))
  until docker exec "$CONTAINER" test -f /run/devloop-ready 2>/dev/null; do
    if ! container_running || (($(date +%s) > deadline)); then
      log "node did not come up; last logs:"
      docker logs --tail 30 "$CONTAINER" >&2 || true
      docker exec "$CONTAINER" sh -c 'tail -n 15 /var/log/devloop/*.log' >&2 || true
      die "$CONTAINER failed to start"
    fi
    sleep 0.5
  done
}

api_endpoint() { published_port "$CONTAINER" "$API_PORT"; }

# Merge the node's admin kubeconfig as CONTEXT (cluster, user and context all
# named CONTEXT, server https://127.0.0.1:PORT, made current), like kind does.
export_kubeconfig() {
  local port tmp
  port="$(api_endpoint)"
  (
    # Two up.sh runs side by side must not interleave their kubeconfig writes.
    flock 9
    if [[ "$SHAPE" == kind ]]; then
      # The real kind CLI: same merge code, locking and naming as `kind create cluster`.
      KUBECONFIG="$KC_FILE" kind export kubeconfig --name "$NAME" 2>&1 | sed 's/^/  kind: /' >&2
    else
      tmp="$(mktemp)"
      docker exec "$CONTAINER" cat /etc/kubernetes/admin.conf |
        sed -e "s#server: .*#server: https://127.0.0.1:$port#" \
          -e "s/kubernetes-admin@kubernetes/$CONTEXT/; s/kubernetes-admin/$CONTEXT/; s/name: kubernetes$/name: $CONTEXT/; s/cluster: kubernetes$/cluster: $CONTEXT/" >"$tmp"
      local merged="$tmp.merged"
      KUBECONFIG="$tmp:$KC_FILE" kubectl config view --flatten >"$merged"
      KUBECONFIG="$merged" kubectl config use-context "$CONTEXT" >/dev/null
      cat "$merged" >"$KC_FILE"
      chmod 600 "$KC_FILE"
      rm -f "$tmp" "$merged"
    fi
  ) 9>"$KC_FILE.devloop.lock"
  log "kubeconfig: context $CONTEXT (https://127.0.0.1:$port) in $KC_FILE"
}

wait_cluster_ready() {
  local kc=(kubectl --kubeconfig "$KC_FILE" --context "$CONTEXT")
  "${kc[@]}" wait --for=condition=Ready "node/$CONTAINER" --timeout="${TIMEOUT}s" >/dev/null
  "${kc[@]}" -n kube-system wait --for=condition=Available deployment/coredns --timeout="${TIMEOUT}s" >/dev/null
  # The default ServiceAccount is created asynchronously; pods cannot be
  # created in a namespace before it exists.
  local i
  for ((i = 0; i < TIMEOUT * 2; i++)); do
    "${kc[@]}" get serviceaccount default >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "default ServiceAccount never appeared"
}

# minikube-docker: what `minikube start` leaves in minikube's home for `minikube docker-env`
# clients — the shared CA and client certificate in certs/, this machine's server certificate —
# before the node starts (it serves TLS with them), and the profile once it runs.
docker_tls() {
  check_profile_free "$MINI_PATH" "$NAME"
  ensure_minikube_certs "$MINI_PATH" "$NAME" "$MACHINE_DIR"
  log "client certificates in $MINI_PATH/certs, server certificate in $MACHINE_DIR"
}

write_profile() {
  local ip
  ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CONTAINER")"
  write_minikube_profile "$MINI_PATH" "$NAME" "$K8S_VERSION" "$ip" "$API_PORT" docker
  log "profile: $MINI_PATH/profiles/$NAME/config.json; docker-env: DOCKER_HOST=tcp://127.0.0.1:$(published_port "$CONTAINER" "$DOCKERD_TLS_PORT")"
}

[[ "$SHAPE" != minikube-docker ]] || step "docker TLS certificates" docker_tls
step "start node container $CONTAINER" start_container
step "control plane up in node" wait_ready_in_node
step "merge kubeconfig" export_kubeconfig
step "node Ready, CoreDNS available" wait_cluster_ready
[[ "$SHAPE" != minikube-docker ]] || step "minikube profile" write_profile
log "cluster $NAME ($SHAPE shape, Kubernetes $K8S_VERSION) ready in $(elapsed "$START")s; context $CONTEXT"
log "tools: export PATH=$BIN_DIR:\$PATH"
