# Shared by the benchmarks: the release binary, a kind-shaped test cluster (started when
# missing, removed again by `bench_cleanup_cluster`), and timing helpers. Source it after
# parsing the script's own options.
#   BENCH_CLUSTER=NAME  reuse or start cluster NAME (default devloop-bench), context kind-NAME

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${BENCH_CLUSTER:-devloop-bench}
CONTEXT=kind-$CLUSTER
NODE=$CLUSTER-control-plane
export PATH="$HOME/.cargo/bin:$PATH"

now() { date +%s.%N; }

echo "building devloop (release)" >&2
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
DEVLOOP=${CARGO_TARGET_DIR:-$ROOT/target}/release/devloop

STARTED_CLUSTER=
if ! kubectl --context "$CONTEXT" get nodes --request-timeout=5s >/dev/null 2>&1; then
  "$ROOT/tests/cluster/up.sh" "$CLUSTER" >&2
  STARTED_CLUSTER=1
fi
"$ROOT/tests/cluster/images.sh" "$CLUSTER" >&2

# Remove the cluster if this run started it.
bench_cleanup_cluster() {
  if [[ -n "$STARTED_CLUSTER" ]]; then "$ROOT/tests/cluster/down.sh" "$CLUSTER" >&2 || true; fi
}
