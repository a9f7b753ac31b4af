#!/usr/bin/env bash
# Proves a test cluster from up.sh works for devloop's flows. Every check is a
# real assertion; the script exits non-zero on the first failure.
#
# Usage: tests/cluster/smoke.sh [NAME]   (NAME default "kind"; a minikube-shaped
#        cluster is found by its container name, e.g. smoke.sh minikube; its runtime,
#        containerd or docker, by the label up.sh gives it)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=${1:-kind}
export PATH="$BIN_DIR:$PATH"
ensure_docker
command -v curl >/dev/null || ensure_pkgs curl

if [[ -n "$(docker ps -q --filter "label=io.x-k8s.kind.cluster=$NAME")" ]]; then
  SHAPE=kind CONTEXT="kind-$NAME" NODE="$NAME-control-plane"
elif [[ -n "$(docker ps -q --filter "label=name.minikube.sigs.k8s.io=$NAME")" ]]; then
  SHAPE=minikube CONTEXT="$NAME" NODE="$NAME"
  [[ "$(node_runtime "$NODE")" != docker ]] || SHAPE=minikube-docker
else
  die "no running cluster named $NAME (start one with up.sh)"
fi

NS="devloop-smoke-$RANDOM"
TOKEN="smoke-$(date +%s)-$RANDOM"
k() { kubectl --context "$CONTEXT" -n "$NS" "$@"; }
CHECKS=0
T0=$(date +%s.%N)
PF_PID=""

cleanup() {
  [[ -n "$PF_PID" ]] && kill "$PF_PID" 2>/dev/null
  kubectl --context "$CONTEXT" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  docker rmi "devloop-smoke:$TOKEN" >/dev/null 2>&1 || true
  if [[ "$SHAPE" == minikube-docker ]]; then
    docker exec "$NODE" docker rmi "devloop-smoke:$TOKEN" >/dev/null 2>&1 || true
  else
    docker exec "$NODE" crictl rmi "docker.io/library/devloop-smoke:$TOKEN" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

fail() {
  log "FAIL: $*"
  log "--- diagnostics (namespace $NS)"
  k get all,pvc,events -o wide >&2 2>&1 || true
  exit 1
}
check() { # DESCRIPTION FUNCTION
  local t; t=$(date +%s.%N)
  log "CHECK: $1"
  "$2" || fail "$1"
  CHECKS=$((CHECKS + 1))
  log "PASS:  $1 ($(elapsed "$t")s)"
}

# ---------------------------------------------------------------- checks
check_node() {
  local ver
  [[ "$(kubectl --context "$CONTEXT" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] || return 1
  ver="$(kubectl --context "$CONTEXT" get node "$NODE" -o jsonpath='{.status.nodeInfo.kubeletVersion}')"
  runtime="$(kubectl --context "$CONTEXT" get node "$NODE" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')"
  log "       node $NODE Ready, kubelet $ver, runtime $runtime, server $(kubectl --context "$CONTEXT" version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1)"
  [[ "$ver" == "$K8S_VERSION" ]] || return 1
  if [[ "$SHAPE" == minikube-docker ]]; then [[ "$runtime" == docker://* ]]; else [[ "$runtime" == containerd://* ]]; fi
}

check_kind_cli() {
  if [[ "$SHAPE" != kind ]]; then
    # A minikube-shaped node must not pass for a kind cluster.
    if kind get clusters 2>/dev/null | grep -qx "$NAME"; then return 1; fi
    return 0
  fi
  kind get clusters | grep -qx "$NAME" || return 1
  kind get nodes --name "$NAME" | grep -qx "$NODE" || return 1
  # kind rebuilds the external kubeconfig from the node's admin.conf and the published port.
  KUBECONFIG=/dev/null kind get kubeconfig --name "$NAME" >"/tmp/$NS.kubeconfig"
  kubectl --kubeconfig "/tmp/$NS.kubeconfig" get --raw /readyz >/dev/null
  rm -f "/tmp/$NS.kubeconfig"
}

check_images() {
  # The stand-in images (cached builds), loaded into the node.
  "$CLUSTER_DIR/images.sh" "$NAME" >/dev/null 2>&1 || "$CLUSTER_DIR/images.sh" "$NAME"
}

# The node's dockerd as `minikube docker-env` sets it up: TLS on the published 2376, the client
# certificates in minikube's home (recorded on the node by up.sh).
node_docker() {
  # Looked up first: the host's engine answers these, not the node's.
  local port home
  port="$(published_port "$NODE" "$DOCKERD_TLS_PORT")"
  home="$(docker inspect -f "{{ index .Config.Labels \"$MINIKUBE_HOME_LABEL\" }}" "$NODE")"
  DOCKER_HOST="tcp://127.0.0.1:$port" DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH="$home/certs" "$@"
}

check_load() {
  # A fresh image only this run has: it must be loaded into the node to run.
  local dockerfile
  dockerfile="$(printf 'FROM busybox:1.36\nRUN echo %s >/token\nCMD ["cat", "/token"]\n' "$TOKEN")"
  case "$SHAPE" in
    minikube-docker)
      # Built straight into the node's dockerd over TLS, as devloop does: nothing to load, and
      # the host's engine never has it.
      node_docker docker_build -t "devloop-smoke:$TOKEN" - <<<"$dockerfile" || return 1
      if docker image inspect "devloop-smoke:$TOKEN" >/dev/null 2>&1; then return 1; fi
      ;;
    kind)
      docker_build -t "devloop-smoke:$TOKEN" - <<<"$dockerfile"
      kind load docker-image --name "$NAME" "devloop-smoke:$TOKEN"
      ;;
    minikube)
      docker_build -t "devloop-smoke:$TOKEN" - <<<"$dockerfile"
      docker save "devloop-smoke:$TOKEN" |
        docker exec -i "$NODE" ctr -n k8s.io images import --all-platforms --digests --snapshotter=overlayfs - >/dev/null
      ;;
  esac
  k run loaded --image="devloop-smoke:$TOKEN" --image-pull-policy=Never --restart=Never >/dev/null
  k wait --for=jsonpath='{.status.phase}'=Succeeded pod/loaded --timeout=60s >/dev/null
  [[ "$(k logs loaded)" == "$TOKEN" ]]
}

check_service_dns() {
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data: {index.html: "$TOKEN"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: httpd
          image: busybox:1.36
          imagePullPolicy: IfNotPresent
          command: [httpd, -f, -p, "8080", -h, /www]
          ports: [{containerPort: 8080}]
          volumeMounts: [{name: www, mountPath: /www}]
      volumes: [{name: www, configMap: {name: web}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: toolbox}
spec:
  containers:
    - name: toolbox
      image: busybox:1.36
      command: [sleep, "3600"]
EOF
  k rollout status deployment/web --timeout=90s >/dev/null
  k wait --for=condition=Ready pod/toolbox --timeout=60s >/dev/null
  local url out
  for url in "http://web/" "http://web.$NS.svc.cluster.local/"; do
    out="$(k exec toolbox -- timeout 10 wget -qO- "$url")"
    log "       toolbox: wget $url -> $out"
    [[ "$out" == "$TOKEN" ]] || return 1
  done
}

check_exec_logs() {
  # shellcheck disable=SC2016  # expanded by the pod's shell
  [[ "$(k exec toolbox -- sh -c 'echo exec-$((40+2))')" == exec-42 ]] || return 1
  k logs deployment/web >/dev/null
  [[ "$(k logs pod/loaded)" == "$TOKEN" ]]
}

check_port_forward() {
  local pf_log="/tmp/$NS.pf.log" port="" i out
  k port-forward svc/web 0:80 >"$pf_log" 2>&1 &
  PF_PID=$!
  for ((i = 0; i < 50; i++)); do
    port="$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$pf_log" | head -1)"
    [[ -n "$port" ]] && break
    sleep 0.2
  done
  [[ -n "$port" ]] || { cat "$pf_log" >&2; return 1; }
  out="$(curl -fsS --max-time 5 "http://127.0.0.1:$port/")"
  log "       curl 127.0.0.1:$port (port-forward svc/web) -> $out"
  kill "$PF_PID"; PF_PID=""
  rm -f "$pf_log"
  [[ "$out" == "$TOKEN" ]]
}

check_pvc_statefulset() {
  k apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: data}
spec:
  serviceName: data
  replicas: 1
  selector: {matchLabels: {app: data}}
  template:
    metadata: {labels: {app: data}}
    spec:
      securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: busybox:1.36
          command: [sleep, "3600"]
          volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: 10Mi}}
EOF
  k wait --for=jsonpath='{.status.phase}'=Bound pvc/data-data-0 --timeout=60s >/dev/null
  log "       pvc data-data-0 Bound (storageclass $(k get pvc data-data-0 -o jsonpath='{.spec.storageClassName}'))"
  k wait --for=condition=Ready pod/data-0 --timeout=60s >/dev/null
  # Written as uid 999, as the postgres and redis manifests run.
  k exec data-0 -- sh -c "echo $TOKEN >/data/token"
  local uid1 uid2
  uid1="$(k get pod data-0 -o jsonpath='{.metadata.uid}')"
  k delete pod data-0 --wait=true >/dev/null
  for ((i = 0; i < 120; i++)); do
    uid2="$(k get pod data-0 -o jsonpath='{.metadata.uid}' 2>/dev/null || true)"
    [[ -n "$uid2" && "$uid2" != "$uid1" ]] && break
    sleep 0.5
  done
  k wait --for=condition=Ready pod/data-0 --timeout=60s >/dev/null
  [[ "$(k exec data-0 -- cat /data/token)" == "$TOKEN" ]]
}

check_cronjob() {
  k apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: job
              image: busybox:1.36
              command: [sh, -c, "echo cron-$TOKEN"]
EOF
  k create job manual --from=cronjob/nightly >/dev/null
  k wait --for=condition=Complete job/manual --timeout=90s >/dev/null
  [[ "$(k logs job/manual)" == "cron-$TOKEN" ]]
}

# run_to_end NAME KUBECTL-RUN-ARGS...: run a pod to completion and print its
# logs (`kubectl run -i` can miss output printed before it attaches).
run_to_end() {
  local name=$1 phase="" i
  shift
  k run "$name" --restart=Never "$@" >/dev/null
  for ((i = 0; i < 240; i++)); do
    phase="$(k get pod "$name" -o jsonpath='{.status.phase}')"
    [[ "$phase" == Succeeded || "$phase" == Failed ]] && break
    sleep 0.5
  done
  k logs "$name"
  [[ "$phase" == Succeeded ]]
}

check_stand_ins() {
  # As the Django sample runs them: uid 999, data on PVCs, reached by Service name.
  k apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {POSTGRES_USER: smoke, POSTGRES_PASSWORD: smoke-pw, POSTGRES_DB: smokedb}
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec:
  selector: {app: postgres}
  ports: [{port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: postgres}
spec:
  serviceName: postgres
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 999, runAsGroup: 999, fsGroup: 999}
      containers:
        - name: postgres
          image: postgres:16
          envFrom: [{secretRef: {name: db}}]
          env: [{name: PGDATA, value: /var/lib/postgresql/data/pgdata}]
          readinessProbe:
            exec: {command: [sh, -c, 'pg_isready -q -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"']}
            periodSeconds: 2
          volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 100Mi}}}
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis}
spec:
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 999, runAsGroup: 999}
      containers:
        - name: redis
          image: redis:7
          command: [redis-server]
          args: [--appendonly, "yes", --dir, /data]
          readinessProbe: {exec: {command: [redis-cli, ping]}, periodSeconds: 2}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
EOF
  k rollout status statefulset/postgres --timeout=120s >/dev/null
  k rollout status deployment/redis --timeout=60s >/dev/null
  local out
  # Ready pods can precede kube-proxy's rules for them by a second: retry like
  # the sample's init containers do.
  # shellcheck disable=SC2016  # expanded by the pod's shell
  out="$(run_to_end pgclient --image=postgres:16 --env=PGPASSWORD=smoke-pw -- bash -c \
    'for i in $(seq 60); do pg_isready -q -h postgres -U smoke -d smokedb && break; sleep 0.5; done &&
     psql -h postgres -U smoke -d smokedb -Atc "create table t (v text); insert into t select current_user; select v from t" &&
     pg_dump -h postgres -U smoke -d smokedb --no-owner | gzip | gzip -dc | grep -c "CREATE TABLE"')"
  log "       postgres: psql/pg_dump from another pod -> $(echo "$out" | tr '\n' ' ')"
  [[ "$out" == *$'smoke\n1' ]] || return 1
  # shellcheck disable=SC2016
  out="$(run_to_end redisclient --image=redis:7 -- \
    sh -c 'for i in $(seq 60); do redis-cli -h redis ping >/dev/null 2>&1 && break; sleep 0.5; done
           redis-cli -h redis set smoke ok >/dev/null && redis-cli -h redis get smoke')"
  log "       redis: redis-cli -h redis get -> $out"
  [[ "$out" == ok ]]
}

log "smoke test of $NAME ($SHAPE shape, context $CONTEXT), namespace $NS"
kubectl --context "$CONTEXT" create namespace "$NS" >/dev/null
for ((i = 0; i < 60; i++)); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done
check "node Ready and running Kubernetes $K8S_VERSION" check_node
if [[ "$SHAPE" == kind ]]; then
  check "real kind CLI sees the cluster (get clusters/nodes/kubeconfig)" check_kind_cli
else
  check "kind CLI does not list the minikube-shaped node" check_kind_cli
fi
check "stand-in images built and loaded into the node" check_images
case "$SHAPE" in
  kind) how="loaded with kind load docker-image" ;;
  minikube) how="loaded with ctr import" ;;
  minikube-docker) how="built in the node's dockerd over TLS (docker-env)" ;;
esac
check "image $how runs (imagePullPolicy Never)" check_load
check "Deployment serves HTTP through a Service, by DNS name, to another pod" check_service_dns
check "kubectl exec and kubectl logs" check_exec_logs
check "kubectl port-forward serves on the host" check_port_forward
check "StatefulSet PVC binds dynamically and keeps data across a pod restart" check_pvc_statefulset
check "Job created from a CronJob completes" check_cronjob
check "postgres:16 and redis:7 stand-ins serve other pods (uid 999, PVC)" check_stand_ins
log "all $CHECKS checks passed in $(elapsed "$T0")s"
