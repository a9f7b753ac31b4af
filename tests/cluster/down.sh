#!/usr/bin/env bash
# Removes a test cluster made by up.sh: its node container (with its volumes),
# its cluster/user/context entries in the kubeconfig and, for the minikube-docker
# shape, its profile and server certificate in minikube's home (the shared CA and
# client certificate stay, as with minikube delete).
#
# Usage: tests/cluster/down.sh [NAME]   (NAME default "kind"; a minikube-shaped
#        cluster is found by its container name, e.g. down.sh minikube)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=${1:-kind}
KC_FILE="${KUBECONFIG:-$HOME/.kube/config}"
KC_FILE="${KC_FILE%%:*}"
export PATH="$BIN_DIR:$PATH"
ensure_docker

# kind-shaped: every container labelled with the cluster (as `kind delete` does).
mapfile -t containers < <(docker ps -a -q --filter "label=io.x-k8s.kind.cluster=$NAME")
context="kind-$NAME"
if ((${#containers[@]} == 0)); then
  mapfile -t containers < <(docker ps -a -q --filter "label=name.minikube.sigs.k8s.io=$NAME")
  ((${#containers[@]} == 0)) || context="$NAME"
fi
if ((${#containers[@]})); then
  # Where up.sh wrote this profile's files (the node records it; MINIKUBE_HOME may differ now).
  mini="$(docker inspect -f "{{ index .Config.Labels \"$MINIKUBE_HOME_LABEL\" }}" "${containers[0]}")"
  if [[ -n "$mini" && -e "$mini/profiles/$NAME/$PROFILE_MARKER" ]]; then
    rm -rf "${mini:?}/profiles/$NAME" "${mini:?}/machines/$NAME"
    log "removed profile $NAME from $mini"
  fi
  docker rm -f -v "${containers[@]}" >/dev/null
  log "removed node container(s) of $NAME"
else
  log "no node container for $NAME"
  # Still clean whichever context matches.
  KUBECONFIG="$KC_FILE" kubectl config get-contexts "kind-$NAME" >/dev/null 2>&1 || context="$NAME"
fi

if [[ -f "$KC_FILE" ]] && command -v kubectl >/dev/null; then
  (
    flock 9
    kc=(kubectl --kubeconfig "$KC_FILE" config)
    if [[ "$("${kc[@]}" current-context 2>/dev/null)" == "$context" ]]; then
      "${kc[@]}" unset current-context >/dev/null
    fi
    "${kc[@]}" delete-context "$context" >/dev/null 2>&1 || true
    "${kc[@]}" delete-cluster "$context" >/dev/null 2>&1 || true
    "${kc[@]}" delete-user "$context" >/dev/null 2>&1 || true
  ) 9>"$KC_FILE.devloop.lock"
  log "removed context $context from $KC_FILE"
fi
