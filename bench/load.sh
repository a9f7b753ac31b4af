#!/usr/bin/env bash
# Benchmark: devloop's builds and its image loading, against kind-style loading measured in the
# same run. Needs Docker and a kind-shaped test cluster (started here if missing).
#
# Usage: bench/load.sh [--size-mb N] [--runs N]
#   BENCH_CLUSTER=NAME  reuse or start cluster NAME (default devloop-bench), context kind-NAME
#
# Prints a table and a last line:
#   RESULT full_s=… delta_s=… build_noop_s=… build_1file_s=…
# full_s: `docker save | ctr images import` of the image after a one-layer change (what kind load
# does); delta_s: devloop's load of the same change; both medians over --runs.
set -euo pipefail

SIZE_MB=400
RUNS=5
while (($#)); do
  case "$1" in
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
json_field() { python3 -c "import json,sys; d=json.load(sys.stdin)[0]; print($1)"; }

WORK=$(mktemp -d /tmp/devloop-bench.XXXXXX)
cleanup() {
  for ref in $(docker images --filter "label=devloop.dev/artifact=bench/bench-web" --format '{{.Repository}}:{{.Tag}}'); do
    docker exec "$NODE" ctr -n k8s.io images rm "docker.io/library/$ref" >/dev/null 2>&1 || true
    docker rmi -f "$ref" >/dev/null 2>&1 || true
  done
  cd / && rm -rf "$WORK"
  bench_cleanup_cluster
}
trap cleanup EXIT

cd "$WORK"
mkdir -p k8s big app
cat > devloop.yaml <<'YAML'
name: bench
artifacts:
  - image: bench-web
manifests:
  app: [k8s/]
YAML
cat > k8s/pod.yaml <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: bench}
spec:
  containers: [{name: web, image: bench-web, command: ["sleep", "3600"]}]
YAML
# A large layer that never changes, and a small last layer that does.
printf 'FROM busybox:1.36\nCOPY big /big\nCOPY app /app\n' > Dockerfile
head -c "${SIZE_MB}M" /dev/urandom > big/blob
echo v0 > app/version.txt

dl() { "$DEVLOOP" -q --context "$CONTEXT" "$@"; }

t=$(now); dl build --no-load >/dev/null; build_cold=$(since "$t")
t=$(now); dl build --no-load >/dev/null; build_noop=$(since "$t")
echo v1 > app/version.txt
t=$(now); dl build --no-load >/dev/null; build_1file=$(since "$t")
t=$(now); dl build --json >/dev/null; first_load=$(since "$t")
image_mb=$(docker image inspect --format '{{.Size}}' "$(dl build --no-load --json | json_field 'd["reference"]')" | awk '{ printf "%d", $1 / 1e6 }')

: > delta.txt; : > delta_wall.txt; : > full.txt
for i in $(seq 2 $((RUNS + 1))); do
  echo "v$i" > app/version.txt
  ref=$(dl build --no-load --json | json_field 'd["reference"]')
  t=$(now)
  dl build --json > load.json
  since "$t" >> delta_wall.txt
  json_field 'round(d["loaded"][0]["seconds"], 3)' < load.json >> delta.txt
  method=$(json_field 'd["loaded"][0]["method"]' < load.json)
  [[ "$method" == delta ]] || echo "warning: run $i loaded by $method, not delta" >&2
  # kind's way, into the same node: the whole image, even though one layer changed.
  t=$(now)
  docker save "$ref" | docker exec -i "$NODE" ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs - >/dev/null
  since "$t" >> full.txt
done

full=$(median < full.txt)
delta=$(median < delta.txt)
delta_wall=$(median < delta_wall.txt)
ratio=$(awk -v f="$full" -v d="$delta" 'BEGIN { printf "%.1f", f / d }')

printf '\n%-44s %10s\n' "measure (image ${image_mb} MB, ${RUNS} runs)" "seconds"
printf '%-44s %10s\n' "cold build" "$build_cold"
printf '%-44s %10s\n' "no-op rebuild (nothing built)" "$build_noop"
printf '%-44s %10s\n' "one-file-change rebuild" "$build_1file"
printf '%-44s %10s\n' "first load into the node (whole image)" "$first_load"
printf '%-44s %10s\n' "one-layer change, kind-style full import" "$full"
printf '%-44s %10s\n' "one-layer change, devloop load" "$delta"
printf '%-44s %10s\n' "one-layer change, devloop build command" "$delta_wall"
printf '%-44s %10s\n' "speed-up of the load (full / devloop)" "${ratio}x"
echo "RESULT full_s=$full delta_s=$delta build_noop_s=$build_noop build_1file_s=$build_1file"
