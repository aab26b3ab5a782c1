#!/usr/bin/env bash
# The ablation suites on one GPU, several `assemblenet ablate` processes sharing it (the result store
# takes rows from several processes; a row another process finished is reused).
#
#   bash benchmarks/h200_ablation.sh OUT BENCHMARK "SUITES:SEEDS" ["SUITES:SEEDS" ...]
#
# e.g. bash benchmarks/h200_ablation.sh runs/ablation-v2 v2 "oneshot:0,1,2" "connections,attention:0,1"
# Each quoted job is one process; the benchmark is generated once first. Extra flags for every process:
# ABLATE_FLAGS (e.g. "--bench-seed 1"). Wheels: where .whl/ exists they are installed into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1; BENCH=$2; shift 2
if [ -d .whl ] && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1
# Several processes on one GPU: no process takes most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$OUT"
AN="python3 -m pipelines.cli ablate --out $OUT --benchmark $BENCH --quiet ${ABLATE_FLAGS:-}"
t0=$(date +%s)
# The benchmark first (one process, all cores), so that the jobs do not each make it.
python3 - "$BENCH" "$OUT" ${ABLATE_FLAGS:-} <<'PY'
import sys
from ablation.benchmark import load_or_generate, versioned
seed = int(sys.argv[sys.argv.index("--bench-seed") + 1]) if "--bench-seed" in sys.argv else 0
load_or_generate(versioned(sys.argv[1], seed=seed), sys.argv[2] + "/benchmark", progress=False)
PY
echo "benchmark ready after $(( $(date +%s) - t0 )) s"
pids=()
k=0
for job in "$@"; do
  suites=${job%%:*}; seeds=${job##*:}
  $AN --suite "$suites" --seeds "$seeds" > "$OUT/job$k.log" 2>&1 &
  pids+=($!); k=$((k + 1))
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "jobs done after $(( $(date +%s) - t0 )) s (status $status)"
for log in "$OUT"/job*.log; do echo "== $log"; grep -v "^\s*$" "$log" | tail -n 5; done
exit $status
