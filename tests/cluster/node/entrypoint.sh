#!/usr/bin/env bash
# Entrypoint of the devloop test node (run under tini; no systemd).
# Starts containerd, etcd, the control plane, kubelet and kube-proxy inside
# this one privileged container, then applies the addons (StorageClass,
# CoreDNS). Component logs: /var/log/devloop/<component>.log.
#
# Env (set by up.sh): DEVLOOP_NODE_NAME (default: hostname),
#                     DEVLOOP_NODE_LABELS (extra node labels, k=v,k=v)
#                     DEVLOOP_API_PORT (API server port: 6443 as kind, 8443 as minikube)
set -euo pipefail

NODE_NAME="${DEVLOOP_NODE_NAME:-$(hostname)}"
API_PORT="${DEVLOOP_API_PORT:-6443}"
POD_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
PKI=/etc/kubernetes/pki
LOGS=/var/log/devloop
BIN=/usr/local/bin
mkdir -p "$PKI" "$LOGS" /var/lib/kubelet /var/lib/etcd

log() { echo "devloop-node: $*"; }
elapsed() { echo $(($(date +%s) - START)); }
START=$(date +%s)

# ---------------------------------------------------------------- mounts, cgroups
setup_mounts() {
  # kubelet needs shared mount propagation for volume mounts (as kind does).
  mount --make-rshared /
  # On cgroup v1 up.sh runs the node with --cgroupns=private, so our cgroup
  # is the namespace root. kubelet puts pods under /kubelet (cgroupRoot);
  # create it in every hierarchy and bind-mount it onto itself, as kind's
  # entrypoint does, so cAdvisor sees a mount point for it.
  local mnt
  # up.sh cannot use --privileged (see there), so Docker mounts the cgroup
  # hierarchies read-only; kubelet and runc must create cgroups in them.
  for mnt in $(findmnt -lun -o target -t cgroup,cgroup2); do
    mount -o remount,rw "$mnt" 2>/dev/null || mount -o remount,bind,rw "$mnt"
  done
  mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
  if [[ ! -f /sys/fs/cgroup/cgroup.controllers ]]; then
    for mnt in $(findmnt -lun -o target -t cgroup); do
      mkdir -p "$mnt/kubelet"
      if [[ "$mnt" == */cpuset* ]]; then
        cat "$mnt/cpuset.cpus" >"$mnt/kubelet/cpuset.cpus"
        cat "$mnt/cpuset.mems" >"$mnt/kubelet/cpuset.mems"
      fi
      findmnt "$mnt/kubelet" >/dev/null || mount --bind "$mnt/kubelet" "$mnt/kubelet"
    done
  fi
  # Networking inside the node's own network namespace.
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "warning: bridge-nf-call-iptables not settable"
  sysctl -qw net.ipv4.conf.all.route_localnet=1 2>/dev/null || true
}

# ---------------------------------------------------------------- certificates
NODE_IP=""
detect_ip() {
  NODE_IP="$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -n1)"
  [[ -n "$NODE_IP" ]] || { log "no IPv4 address on eth0"; exit 1; }
}

# cert NAME CN [O] [SERVER_SANS]: client (or serving, with SANs) cert signed by the CA.
cert() {
  local name=$1 cn=$2 org=${3:-} sans=${4:-} subj ext
  subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  ext="$PKI/$name.ext"
  if [[ -n "$sans" ]]; then
    printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$sans" >"$ext"
  else
    printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$ext"
  fi
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

# kubeconfig FILE SERVER CERTNAME: a kubeconfig with embedded client cert.
kubeconfig() {
  local file=$1 server=$2 name=$3
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
    server: $server
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: $name
  name: $name@kubernetes
current-context: $name@kubernetes
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$name.crt")
    client-key-data: $(base64 -w0 <"$PKI/$name.key")
preferences: {}
EOF
  chmod 600 "$file"
}

generate_pki() {
  if [[ ! -f "$PKI/ca.crt" ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=kubernetes" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
      -out "$PKI/ca.crt" 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
    openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  # Regenerated on every start: the container IP may change across restarts.
  # 127.0.0.1/localhost: the API server is published on the host's loopback.
  local sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sans+=",DNS:localhost,DNS:$NODE_NAME,DNS:$(hostname),IP:127.0.0.1,IP:$API_SERVICE_IP,IP:$NODE_IP"
  cert apiserver kube-apiserver "" "$sans"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  cert kubelet "system:node:$NODE_NAME" system:nodes
  cert kube-proxy system:kube-proxy
  # Aggregation layer (front proxy): also lets kube-controller-manager and
  # kube-scheduler find their request-header CA instead of logging errors.
  cert front-proxy-client front-proxy-client
  local local_api="https://127.0.0.1:$API_PORT"
  # admin.conf names the node like kubeadm's, so `kind get kubeconfig` works.
  kubeconfig /etc/kubernetes/admin.conf "https://$(hostname):$API_PORT" admin
  sed -i 's/name: admin$/name: kubernetes-admin/; s/user: admin$/user: kubernetes-admin/; s/admin@kubernetes/kubernetes-admin@kubernetes/g' /etc/kubernetes/admin.conf
  kubeconfig /etc/kubernetes/admin-local.conf "$local_api" admin
  kubeconfig /etc/kubernetes/controller-manager.conf "$local_api" controller-manager
  kubeconfig /etc/kubernetes/scheduler.conf "$local_api" scheduler
  kubeconfig /etc/kubernetes/kubelet.conf "$local_api" kubelet
  kubeconfig /etc/kubernetes/kube-proxy.conf "$local_api" kube-proxy
}

# ---------------------------------------------------------------- processes
PIDS=()
# supervise NAME CMD...: run CMD in the background, restarting it when it exits
# (components start in any order and retry until their dependencies are up).
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
  PIDS+=("$!")
}

shutdown() {
  log "stopping"
  kill "${PIDS[@]}" 2>/dev/null || true
  wait || true
  exit 0
}
trap shutdown TERM INT

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

start_containerd() {
  supervise containerd containerd --config /etc/containerd/config.toml
  wait_for containerd 30 ctr version
  # Images baked into the node (pause, CoreDNS): import unless already there.
  local tar
  for tar in /kind/images/*.tar; do
    [[ -e "$tar" ]] || continue
    ctr -n k8s.io images import --all-platforms "$tar" >/dev/null
  done
}

start_etcd() {
  # --unsafe-no-fsync: a throwaway test cluster; fsync dominates etcd latency on CI disks.
  supervise etcd "$BIN/etcd" --name default --data-dir /var/lib/etcd \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --unsafe-no-fsync --snapshot-count 10000 --log-level warn
}

start_control_plane() {
  supervise kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --secure-port="$API_PORT" --allow-privileged=true \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --etcd-servers=http://127.0.0.1:2379 \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false \
    --requestheader-client-ca-file="$PKI/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key"
  supervise kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig=/etc/kubernetes/controller-manager.conf \
    --authentication-kubeconfig=/etc/kubernetes/controller-manager.conf \
    --authorization-kubeconfig=/etc/kubernetes/controller-manager.conf \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --service-cluster-ip-range="$SERVICE_CIDR" \
    --node-cidr-mask-size=24 --enable-hostpath-provisioner=true \
    --controllers='*,bootstrapsigner,tokencleaner' --profiling=false
  supervise kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig=/etc/kubernetes/scheduler.conf \
    --authentication-kubeconfig=/etc/kubernetes/scheduler.conf \
    --authorization-kubeconfig=/etc/kubernetes/scheduler.conf \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}

start_node() {
  cat >/var/lib/kubelet/config.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# No systemd in the node, and the hosts run cgroup v1 (hybrid).
cgroupDriver: cgroupfs
cgroupRoot: /kubelet
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# Like kind: never evict or garbage-collect images on a full CI disk.
evictionHard: {nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
staticPodPath: /etc/kubernetes/manifests
healthzBindAddress: 127.0.0.1
rotateCertificates: false
# Host kernel settings are shared with the host: leave them alone.
protectKernelDefaults: false
makeIPTablesUtilChains: true
EOF
  mkdir -p /etc/kubernetes/manifests
  supervise kubelet "$BIN/kubelet" --config=/var/lib/kubelet/config.yaml \
    --kubeconfig=/etc/kubernetes/kubelet.conf --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" --node-labels=devloop.dev/test-node=true --v=1
  cat >/var/lib/kube-proxy.yaml <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: /etc/kubernetes/kube-proxy.conf}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
iptables: {minSyncPeriod: 1s}
# 0 = leave the (host-wide) conntrack sysctls alone, as kind does.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  supervise kube-proxy "$BIN/kube-proxy" --config=/var/lib/kube-proxy.yaml
}

# kube-controller-manager's hostPath provisioner creates PV directories 0750
# root-owned; images that run as non-root (postgres uid 999) could not write.
# Open them up as local-path-provisioner does (0777).
open_hostpath_pvs() {
  (
    trap 'exit 0' TERM INT
    while true; do
      find /tmp/hostpath_pv -mindepth 1 -maxdepth 1 -type d ! -perm 0777 -exec chmod 0777 {} + 2>/dev/null || true
      sleep 0.5
    done
  ) &
  PIDS+=("$!")
}

apply_addons() {
  local kc=(kubectl --kubeconfig=/etc/kubernetes/admin-local.conf)
  wait_for "kube-apiserver /readyz" 120 "${kc[@]}" get --raw /readyz
  log "kube-apiserver ready after $(elapsed)s"
  # Retry: the first apply can race the API server's bootstrap RBAC.
  wait_for "addons" 60 "${kc[@]}" apply -f /etc/devloop/addons/
  wait_for "node registration" 120 "${kc[@]}" get node "$NODE_NAME"
  # Labels in the kubernetes.io/k8s.io namespaces cannot be set by kubelet
  # itself (NodeRestriction): set them as admin, as kubeadm and minikube do.
  local labels=(node-role.kubernetes.io/control-plane=)
  [[ -n "${DEVLOOP_NODE_LABELS:-}" ]] && IFS=, read -ra extra <<<"$DEVLOOP_NODE_LABELS" && labels+=("${extra[@]}")
  "${kc[@]}" label --overwrite node "$NODE_NAME" "${labels[@]}" >/dev/null
  log "node $NODE_NAME registered after $(elapsed)s"
}

main() {
  log "starting node $NODE_NAME"
  setup_mounts
  detect_ip
  generate_pki
  start_containerd
  start_etcd
  start_control_plane
  start_node
  open_hostpath_pvs
  apply_addons
  log "control plane up after $(elapsed)s"
  touch /run/devloop-ready
  # Stay PID 1's child until stopped; tini forwards SIGTERM to us.
  while true; do
    wait || true
    sleep 1
  done
}
main "$@"
