#!/usr/bin/env bash
# Entrypoint of the docker-runtime test node (run under tini; no systemd). Starts what minikube's
# docker runtime adds — dockerd on the node's containerd, serving the Docker API on the unix
# socket and with TLS on 2376 (what `minikube docker-env` points at), the pause and CoreDNS
# images loaded into it, and cri-dockerd as the kubelet's CRI — then runs the base node's
# entrypoint, whose kubelet this image points at cri-dockerd's socket.
#
# TLS material (mounted by up.sh): /etc/docker/tls/{ca.pem,server.pem,server-key.pem}.
# Logs: /var/log/devloop/{dockerd,cri-dockerd}.log in the node.
set -euo pipefail

LOGS=/var/log/devloop
TLS=/etc/docker/tls
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
mkdir -p "$LOGS"

log() { echo "devloop-node: $*"; }

# supervise NAME CMD...: run CMD, restarting it when it exits (as the base entrypoint does).
supervise() {
  local name=$1
  shift
  (
    trap 'kill $child 2>/dev/null; exit 0' TERM INT
    while true; do
      "$@" >>"$LOGS/$name.log" 2>&1 &
      child=$!
      wait "$child" && rc=0 || rc=$?
      echo "devloop-node: $name exited with $rc, restarting" >>"$LOGS/$name.log"
      sleep 1
    done
  ) &
}

wait_for() { # DESCRIPTION SECONDS CMD...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "timed out waiting for $what"
  return 1
}

start_docker_runtime() {
  # The base entrypoint sets up mounts and cgroups, then starts containerd; dockerd runs on it.
  wait_for containerd 120 test -S /run/containerd/containerd.sock
  local tcp=()
  if [[ -f "$TLS/ca.pem" && -f "$TLS/server.pem" && -f "$TLS/server-key.pem" ]]; then
    tcp=(-H tcp://0.0.0.0:2376 --tlsverify --tlscacert "$TLS/ca.pem" --tlscert "$TLS/server.pem" --tlskey "$TLS/server-key.pem")
  else
    log "no TLS material in $TLS: dockerd serves the unix socket only"
  fi
  supervise dockerd dockerd -H unix:///var/run/docker.sock "${tcp[@]}"
  wait_for dockerd 60 docker info
  # The images the node cannot pull: baked into the base image for containerd, loaded here.
  local tar
  for tar in /kind/images/*.tar; do
    [[ -e "$tar" ]] && docker load -i "$tar" >/dev/null
  done
  supervise cri-dockerd cri-dockerd --container-runtime-endpoint unix:///run/cri-dockerd.sock \
    --docker-endpoint unix:///var/run/docker.sock --pod-infra-container-image "$PAUSE_IMAGE" \
    --network-plugin cni --cni-bin-dir /usr/lib/cni --cni-conf-dir /etc/cni/net.d \
    --hairpin-mode hairpin-veth
  wait_for cri-dockerd 60 test -S /run/cri-dockerd.sock
  log "dockerd and cri-dockerd up"
}

# In the background: the base entrypoint (exec'd below, same process group under tini -g) runs
# the control plane meanwhile; its kubelet retries until cri-dockerd answers.
start_docker_runtime &
exec /usr/local/bin/entrypoint "$@"
