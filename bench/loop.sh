#!/usr/bin/env bash
# Benchmark: the inner loop of `devloop up` — save → served on localhost — by live sync and by
# rebuild on samples/minimal, against the manual loop of the seed project measured in the same
# run (docker build → load into the node → kubectl rollout restart → wait → request). Also idle
# RSS/CPU of `devloop up` while watching, and watcher start/change latency on a 250k-file tree.
# Needs Docker and a kind-shaped test cluster (started here if missing).
#
# Usage: bench/loop.sh [--edits N] [--django-edits N] [--files N]
#   --django-edits: edits per path on samples/django for the table (default 5; 0 skips it)
#   BENCH_CLUSTER=NAME  reuse or start cluster NAME (default devloop-bench), context kind-NAME
#
# Prints a table and a last line:
#   RESULT sync_p50_ms=… sync_p95_ms=… rebuild_p50_ms=… rebuild_p95_ms=… baseline_p50_ms=…
#          idle_rss_mb=… idle_cpu_pct=… watch_250k_ready_ms=… watch_250k_change_ms=…
# Latency: from writing the file to the first response on the forward that shows the new content.
set -euo pipefail

EDITS=20
DJANGO_EDITS=5
FILES=250000
while (($#)); do
  case "$1" in
    --edits) EDITS=$2; shift 2 ;;
    --django-edits) DJANGO_EDITS=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

WORK=$(mktemp -d /tmp/devloop-loop.XXXXXX)
NS=devloop-bench-loop-$$
NS_BASE=devloop-bench-base-$$
NS_DJANGO=devloop-bench-django-$$
UP_PID=
PF_PID=
cleanup() {
  [[ -n "$UP_PID" ]] && kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  [[ -n "$PF_PID" ]] && kill "$PF_PID" 2>/dev/null || true
  kubectl --context "$CONTEXT" delete namespace "$NS" "$NS_BASE" "$NS_DJANGO" --wait=false >/dev/null 2>&1 || true
  docker rmi -f minimal-web:baseline musiccat-web:baseline >/dev/null 2>&1 || true
  # Only the images this run built (other runs may use images of their own).
  for log in "$WORK/up.stderr" "$WORK/django-up.stderr"; do
    [[ -f "$log" ]] || continue
    for ref in $(grep -oE 'built [a-z-]+:dl-[0-9a-f]+' "$log" | cut -d' ' -f2 | sort -u); do
      docker rmi -f "$ref" >/dev/null 2>&1 || true
    done
  done
  cd / && rm -rf "$WORK"
  bench_cleanup_cluster
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# save → served, measured in one process: write, then poll the page until it shows the marker.
# Modes: sync (edit the page), rebuild (edit the Dockerfile and the page), baseline (the same edit
# as rebuild, then the manual loop given as a command, then a request through a fresh port-forward).
# PAGE (the file, relative to the project) and URL_PATH (where it is served) pick the page.
measure() {
  PAGE=${PAGE:-www/index.html} URL_PATH=${URL_PATH:-/} python3 - "$@" <<'PY'
import os, random, subprocess, sys, time, urllib.request, re, statistics
mode, project, port, edits = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
manual = sys.argv[5] if len(sys.argv) > 5 else ""
page = f"{project}/{os.environ['PAGE']}"
url_path = os.environ["URL_PATH"]
dockerfile = f"{project}/Dockerfile"
original = open(page).read()
def fetch(p):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{p}{url_path}", timeout=2) as r:
            return r.read().decode()
    except Exception:
        return ""
out = []
pause = random.Random(mode)
for i in range(edits):
    marker = f"<p>{mode}-{i}-{time.time_ns()}</p>"
    text = original.replace("</body>", marker + "\n</body>")
    t0 = time.monotonic()
    if mode in ("rebuild", "baseline"):
        # The Dockerfile first: both land in one round, which then cannot be a sync.
        df = open(dockerfile).read()
        df = re.sub(r"LABEL bench.edit=\S+\n", "", df) + f"LABEL bench.edit={i}-{time.time_ns()}\n"
        open(dockerfile, "w").write(df)
    open(page, "w").write(text)
    if mode == "baseline":
        subprocess.run(["bash", "-c", manual], check=True, stdout=subprocess.DEVNULL)
        pf = subprocess.Popen(["bash", "-c", sys.argv[6]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p = int(sys.argv[7])
    else:
        pf, p = None, port
    deadline = t0 + 300
    while marker not in fetch(p):
        if time.monotonic() > deadline:
            sys.exit(f"{mode} edit {i}: not served within 300 s")
        time.sleep(0.01)
    ms = (time.monotonic() - t0) * 1000
    if pf:
        pf.terminate(); pf.wait()
    out.append(ms)
    print(f"  {mode} edit {i + 1}/{edits}: {ms:.0f} ms", file=sys.stderr)
    # A pause of random length: the kubelet notices a started container at its next 1 s relist,
    # and a fixed pause would lock every edit of a run to one phase of that clock (all lucky or
    # all unlucky: ~1.0 s apart). Seeded, so that runs are comparable.
    time.sleep(pause.uniform(0.3, 0.8) if mode == "sync" else pause.uniform(1.0, 2.0))
out.sort()
p50 = statistics.median(out)
p95 = out[min(len(out) - 1, int(round(0.95 * (len(out) - 1))))]
print(f"{p50:.0f} {p95:.0f}")
PY
}

# ---- devloop up: sync and rebuild paths ----
cp -r "$ROOT/samples/minimal" "$WORK/minimal"
PROJECT=$WORK/minimal
PORT=$(free_port)
sed -i "s/localPort: 8000/localPort: $PORT/" "$PROJECT/devloop.yaml"
kubectl --context "$CONTEXT" create namespace "$NS" >/dev/null
(cd "$PROJECT" && exec "$DEVLOOP" --context "$CONTEXT" -n "$NS" up --no-logs 2>"$WORK/up.stderr" >/dev/null) &
UP_PID=$!
for _ in $(seq 600); do grep -q "^watching " "$WORK/up.stderr" && break; sleep 0.2; done
grep -q "^watching " "$WORK/up.stderr" || { cat "$WORK/up.stderr" >&2; exit 1; }
# The devloop process itself (the subshell exec'd it).
DL_PID=$UP_PID
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.2; done

echo "sync path: $EDITS edits of www/index.html" >&2
read -r SYNC_P50 SYNC_P95 < <(measure sync "$PROJECT" "$PORT" "$EDITS")
echo "rebuild path: $EDITS edits of Dockerfile + www/index.html" >&2
read -r REBUILD_P50 REBUILD_P95 < <(measure rebuild "$PROJECT" "$PORT" "$EDITS")

# Idle: no edits for a while, then RSS and CPU time over 10 s from /proc.
sleep 5
RSS_KB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DL_PID/status")
ticks() { awk '{ print $14 + $15 }' "/proc/$DL_PID/stat"; }
T0=$(ticks); sleep 10; T1=$(ticks)
HZ=$(getconf CLK_TCK)
IDLE_RSS_MB=$(awk -v k="$RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')
IDLE_CPU=$(awk -v a="$T0" -v b="$T1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz / 10 * 100 }')
SYNC_LINES=$(grep -c "→ synced to" "$WORK/up.stderr" || true)
REBUILD_LINES=$(grep -c "→ rebuilding" "$WORK/up.stderr" || true)
kill -INT "$UP_PID"; wait "$UP_PID" || true; UP_PID=

# ---- baseline: the manual loop, same cluster, same sample ----
echo "baseline: $EDITS edits, docker build → ctr import → rollout restart → wait → request" >&2
cp -r "$ROOT/samples/minimal" "$WORK/base"
kubectl --context "$CONTEXT" create namespace "$NS_BASE" >/dev/null
docker build -q -t minimal-web:baseline "$WORK/base" >/dev/null
docker save minimal-web:baseline | docker exec -i "$NODE" ctr -n k8s.io images import --all-platforms --digests --snapshotter=overlayfs - >/dev/null
sed 's/image: minimal-web$/image: minimal-web:baseline/' "$WORK/base/k8s/deployment.yaml" |
  kubectl --context "$CONTEXT" -n "$NS_BASE" apply -f - >/dev/null
kubectl --context "$CONTEXT" -n "$NS_BASE" apply -f "$WORK/base/k8s/service.yaml" >/dev/null
kubectl --context "$CONTEXT" -n "$NS_BASE" rollout status deploy/web --timeout=120s >/dev/null
BPORT=$(free_port)
MANUAL="docker build -q -t minimal-web:baseline '$WORK/base' && \
docker save minimal-web:baseline | docker exec -i $NODE ctr -n k8s.io images import --all-platforms --digests --snapshotter=overlayfs - && \
kubectl --context $CONTEXT -n $NS_BASE rollout restart deploy/web && \
kubectl --context $CONTEXT -n $NS_BASE rollout status deploy/web --timeout=120s"
PF="exec kubectl --context $CONTEXT -n $NS_BASE port-forward service/web $BPORT:8080"
read -r BASE_P50 BASE_P95 < <(measure baseline "$WORK/base" 0 "$EDITS" "$MANUAL" "$PF" "$BPORT")

# ---- the Django sample: the same three loops, for the table ----
# Sync: a template edit (runserver re-reads it); rebuild: the Dockerfile and the template (the
# image's code layer changes); baseline: the manual loop against the same Deployment, which
# `up --keep` leaves running, with the whole image loaded as `kind load docker-image` does.
DJ_SYNC_P50=- DJ_SYNC_P95=- DJ_REBUILD_P50=- DJ_REBUILD_P95=- DJ_BASE_P50=- DJ_BASE_P95=-
if ((DJANGO_EDITS > 0)); then
  DJ=$WORK/django
  cp -r "$ROOT/samples/django" "$DJ"
  cp "$DJ/.env.example" "$DJ/.env"
  DPORT=$(free_port)
  sed -i "s/localPort: 8000/localPort: $DPORT/" "$DJ/devloop.yaml"
  kubectl --context "$CONTEXT" create namespace "$NS_DJANGO" >/dev/null
  (cd "$DJ" && exec "$DEVLOOP" --context "$CONTEXT" -n "$NS_DJANGO" up --no-logs --keep 2>"$WORK/django-up.stderr" >/dev/null) &
  UP_PID=$!
  echo "django: waiting for \`devloop up\` (postgres, redis, web)" >&2
  for _ in $(seq 600); do grep -q "^watching " "$WORK/django-up.stderr" && break; sleep 0.5; done
  grep -q "^watching " "$WORK/django-up.stderr" || { cat "$WORK/django-up.stderr" >&2; exit 1; }
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DPORT/health/" >/dev/null && break; sleep 0.3; done
  export PAGE=catalog/templates/catalog/index.html
  echo "django sync path: $DJANGO_EDITS edits of $PAGE" >&2
  read -r DJ_SYNC_P50 DJ_SYNC_P95 < <(measure sync "$DJ" "$DPORT" "$DJANGO_EDITS")
  echo "django rebuild path: $DJANGO_EDITS edits of Dockerfile + $PAGE" >&2
  read -r DJ_REBUILD_P50 DJ_REBUILD_P95 < <(measure rebuild "$DJ" "$DPORT" "$DJANGO_EDITS")
  kill -INT "$UP_PID"; wait "$UP_PID" || true; UP_PID=

  echo "django baseline: $DJANGO_EDITS edits, docker build → ctr import → rollout restart → wait → request" >&2
  DJ_BUILD="docker build -q --target dev --build-arg BASE_IMAGE=python:3.12-slim -t musiccat-web:baseline '$DJ'"
  DJ_IMPORT="docker save musiccat-web:baseline | docker exec -i $NODE ctr -n k8s.io images import --all-platforms --digests --snapshotter=overlayfs -"
  bash -c "$DJ_BUILD && $DJ_IMPORT" >/dev/null
  kubectl --context "$CONTEXT" -n "$NS_DJANGO" set image deploy/web web=musiccat-web:baseline >/dev/null
  kubectl --context "$CONTEXT" -n "$NS_DJANGO" rollout status deploy/web --timeout=300s >/dev/null
  DJ_BPORT=$(free_port)
  DJ_MANUAL="$DJ_BUILD && $DJ_IMPORT && \
kubectl --context $CONTEXT -n $NS_DJANGO rollout restart deploy/web && \
kubectl --context $CONTEXT -n $NS_DJANGO rollout status deploy/web --timeout=300s"
  DJ_PF="exec kubectl --context $CONTEXT -n $NS_DJANGO port-forward service/web $DJ_BPORT:8000"
  read -r DJ_BASE_P50 DJ_BASE_P95 < <(measure baseline "$DJ" 0 "$DJANGO_EDITS" "$DJ_MANUAL" "$DJ_PF" "$DJ_BPORT")
  unset PAGE
fi

# ---- the watcher on a large tree (no cluster) ----
echo "watcher on a generated $FILES-file tree" >&2
# Without the release profile's whole-program LTO: it would add ~10 min of linking on 2 cores,
# and the measurement is of notify and file hashing, not of the binary's size.
WATCH_LINE=$(DEVLOOP_BENCH_FILES=$FILES CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo test --release --quiet --manifest-path "$ROOT/Cargo.toml" \
  --test it watch::bench_watch_large_tree -- --ignored --nocapture 2>/dev/null | grep '^BENCH ')
W_READY=$(sed -E 's/.*watch_ready_ms=([0-9]+).*/\1/' <<<"$WATCH_LINE")
W_CHANGE=$(sed -E 's/.*watch_change_ms=([0-9]+).*/\1/' <<<"$WATCH_LINE")

RATIO=$(awk -v b="$BASE_P50" -v r="$REBUILD_P50" 'BEGIN { printf "%.1f", b / r }')
printf '\n%-36s %10s %10s\n' "save → served on samples/minimal" "p50 ms" "p95 ms"
printf '%-36s %10s %10s\n' "devloop sync (www/**)" "$SYNC_P50" "$SYNC_P95"
printf '%-36s %10s %10s\n' "devloop rebuild (Dockerfile)" "$REBUILD_P50" "$REBUILD_P95"
printf '%-36s %10s %10s\n' "baseline (build/import/restart)" "$BASE_P50" "$BASE_P95"
printf '%-36s %10s\n' "baseline / rebuild" "${RATIO}x"
if ((DJANGO_EDITS > 0)); then
  DJ_RATIO=$(awk -v b="$DJ_BASE_P50" -v r="$DJ_REBUILD_P50" 'BEGIN { printf "%.1f", b / r }')
  printf '%-36s %10s %10s\n' "samples/django: devloop sync" "$DJ_SYNC_P50" "$DJ_SYNC_P95"
  printf '%-36s %10s %10s\n' "samples/django: devloop rebuild" "$DJ_REBUILD_P50" "$DJ_REBUILD_P95"
  printf '%-36s %10s %10s\n' "samples/django: baseline" "$DJ_BASE_P50" "$DJ_BASE_P95"
  printf '%-36s %10s\n' "samples/django: baseline / rebuild" "${DJ_RATIO}x"
  printf '%-36s %10s\n' "samples/django: edits per path" "$DJANGO_EDITS"
fi
printf '%-36s %10s\n' "edits per path" "$EDITS"
printf '%-36s %10s\n' "log lines: synced / rebuilding" "$SYNC_LINES / $REBUILD_LINES"
printf '%-36s %10s\n' "idle RSS (MB)" "$IDLE_RSS_MB"
printf '%-36s %10s\n' "idle CPU (%, 10 s)" "$IDLE_CPU"
printf '%-36s %10s\n' "watcher ready, $FILES files (ms)" "$W_READY"
printf '%-36s %10s\n' "watcher change, $FILES files (ms)" "$W_CHANGE"
echo "RESULT sync_p50_ms=$SYNC_P50 sync_p95_ms=$SYNC_P95 rebuild_p50_ms=$REBUILD_P50 rebuild_p95_ms=$REBUILD_P95 baseline_p50_ms=$BASE_P50 idle_rss_mb=$IDLE_RSS_MB idle_cpu_pct=$IDLE_CPU watch_250k_ready_ms=$W_READY watch_250k_change_ms=$W_CHANGE"
