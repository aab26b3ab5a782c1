#!/usr/bin/env bash
# AttentionNAS on a task that needs attention: the relation variant of ablation/benchmark.py (same /
# different glyphs in opposite corners at the start and the end of a 16 x 32² clip, plus a central cue
# right on 60 % of the clips; docs/attention_nas.md). On one GPU under JAX, per backbone (the ResNet proxy
# and AssembleNet `tiny`):
#   data    the benchmark (4096 / 1024 / 1024 clips, seed TASK_SEED) and its oracle check (cue alone, linear probe);
#   probe   no cell vs the non-local block, SEEDS training seeds: do local features stop at the cue?
#   search  `assemblenet attention-search --task relation` per search seed (SEARCH_STEPS steps, architecture
#           batch SEARCH_BATCH); search.json records every choice's entropy and the chosen cell per step;
#   train   every search seed's derived cell at the non-local block's added params ("searched-matched"; add
#           "searched" to TRAIN_VARIANTS for the cell at full width), SEEDS training seeds;
#   report  one table (OUT/report/results.md: none vs non-local vs searched, permutation tests) and the
#           choice plots (OUT/report/choices_<backbone>.png).
#
#   bash benchmarks/attention_nas_planted.sh [STAGE...]        (default: data probe search train report)
#   bash benchmarks/attention_nas_planted.sh parallel report   (the same units, several processes at once)
#
# `parallel` runs the data stage, then at once one process per (backbone, probe variant) and one per
# (backbone, search seed) for that seed's search and then its trainings: 2 x 2 + 2 x 3 processes sharing the GPU
# (XLA_PYTHON_CLIENT_PREALLOCATE=false; each process compiles small models and is mostly host-bound, so
# they overlap well on a 16-core host). Each chain logs to OUT/parallel/<name>.log.
#
# Every unit (one search, or one variant over one group of training seeds) is its own process under
# `timeout STEP_TIMEOUT` (570 s) and leaves OUT/.../.done when it finished: a rerun skips finished units,
# so a cut run resumes where it stopped. Environment (defaults): OUT (runs/attention_nas_planted),
# BACKBONES (resnet assemblenet), SEARCH_SEEDS (0 1 2), SEEDS (0,1,2,3,4: the seeds the report pools),
# SEED_GROUPS ("0,1,2 3,4": each variant's trainings in two processes, one compile each; SEEDS as one group
# saves a compile, more groups shorten each process), SEARCH_STEPS (600), SEARCH_BATCH (32), STEPS (1000:
# training steps of every compared model), BATCH (32), FRAMES (16), SIZE (32), TASK_SEED (0),
# TASK_CLIPS (4096), PROBE_VARIANTS (none non-local), TRAIN_VARIANTS (searched-matched), SEARCH_DIR
# (OUT/search: where searches are written and cells read; point it at another run's searches to train
# their cells on a held-out TASK_SEED with held-out SEEDS: the search stage then runs nothing),
# STEP_TIMEOUT (570), DEADLINE (unset: epoch seconds after which no unit runs, so a command with a
# wall-clock limit can still write its report). Wheels: where .whl/ exists they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/attention_nas_planted}; BACKBONES=${BACKBONES:-resnet assemblenet}
SEARCH_SEEDS=${SEARCH_SEEDS:-0 1 2}; SEEDS=${SEEDS:-0,1,2,3,4}; SEED_GROUPS=${SEED_GROUPS:-0,1,2 3,4}
SEARCH_STEPS=${SEARCH_STEPS:-600}; SEARCH_BATCH=${SEARCH_BATCH:-32}; STEPS=${STEPS:-1000}; BATCH=${BATCH:-32}
FRAMES=${FRAMES:-16}; SIZE=${SIZE:-32}; TASK_SEED=${TASK_SEED:-0}; TASK_CLIPS=${TASK_CLIPS:-4096}
STEP_TIMEOUT=${STEP_TIMEOUT:-570}; TRAIN_VARIANTS=${TRAIN_VARIANTS:-searched-matched}
SEARCH_DIR=${SEARCH_DIR:-$OUT/search}
mkdir -p "$OUT"
if [ -d .whl ] && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.85}
if [[ " $* " == *" parallel "* ]]; then export XLA_PYTHON_CLIENT_PREALLOCATE=false; fi
TASK="--task relation --task-seed $TASK_SEED --task-clips $TASK_CLIPS --task-cache $OUT/data"
SHAPE="--frames $FRAMES --size $SIZE"
FAILED=0
stamp() { echo "[$(date +%T)] $*"; }

unit() {  # folder, command...: runs the command once (skipped when folder/.done exists), logged, timed
  local dir=$1; shift
  if [ -f "$dir/.done" ]; then stamp "done before: $dir"; return 0; fi
  local limit=$STEP_TIMEOUT t0=$(date +%s)
  if [ -n "${DEADLINE:-}" ]; then  # a unit never runs past DEADLINE (epoch seconds); none starts in its last 60 s
    (( DEADLINE - t0 < limit )) && limit=$(( DEADLINE - t0 ))
    if (( limit < 60 )); then stamp "past DEADLINE, not started: $dir"; FAILED=1; return 0; fi
  fi
  mkdir -p "$dir"; stamp "start: $dir"
  if timeout "$limit" "$@" > "$dir/log.txt" 2>&1; then
    echo "{\"seconds\": $(( $(date +%s) - t0 ))}" > "$dir/.done"; stamp "finished in $(( $(date +%s) - t0 )) s: $dir"
  else
    local rc=$?; FAILED=1; stamp "FAILED or cut (rc $rc, rerun to resume): $dir"; tail -n 20 "$dir/log.txt"
  fi
}

data() {
  unit "$OUT/data" python3 -m ablation.benchmark --version relation --seed "$TASK_SEED" --out "$OUT/data" \
      --frames "$FRAMES" --size "$SIZE" --train-clips "$TASK_CLIPS" --val-clips $((TASK_CLIPS / 4)) \
      --test-clips $((TASK_CLIPS / 4))
}

compare() {  # backbone, variant, folder, extra flags...: one variant over each seed group
  local b=$1 variant=$2 dir=$3; shift 3
  for group in $SEED_GROUPS; do
    unit "$dir/seeds_${group//,/_}" python3 benchmarks/attention_cells.py --backbones "$b" $TASK $SHAPE \
        --search-seeds '' --variants "$variant" --seeds "$group" --steps "$STEPS" --batch-size "$BATCH" \
        --out "$dir/seeds_${group//,/_}" "$@"
  done
}

PROBE_VARIANTS=${PROBE_VARIANTS:-none non-local}
probe() {
  for b in $BACKBONES; do
    for variant in $PROBE_VARIANTS; do compare "$b" "$variant" "$OUT/train/$b/$variant"; done
  done
}

search() {
  if [ "$SEARCH_DIR" != "$OUT/search" ]; then stamp "searches read from $SEARCH_DIR, none run here"; return 0; fi
  for b in $BACKBONES; do
    for k in $SEARCH_SEEDS; do
      local dir="$SEARCH_DIR/$b/search_seed$k"
      if [ -f "$dir/search.json" ] && [ ! -f "$dir/.done" ]; then
        # cut while scoring the supernet: the search itself is written (its supernet top-1 stays empty)
        stamp "searched before, supernet not scored: $dir"; continue
      fi
      unit "$dir" python3 -m pipelines.cli attention-search --backbone "$b" $TASK $SHAPE \
          --seed "$k" --steps "$SEARCH_STEPS" --batch-size "$SEARCH_BATCH" --out "$dir"
    done
  done
}

train() {
  for b in $BACKBONES; do
    for k in $SEARCH_SEEDS; do
      local cell="$SEARCH_DIR/$b/search_seed$k/cell.json"
      if [ ! -f "$cell" ]; then stamp "no $cell yet (run the search stage)"; FAILED=1; continue; fi
      for variant in $TRAIN_VARIANTS; do
        compare "$b" "$variant" "$OUT/train/$b/$variant-search_seed$k" --cells "$cell"
      done
    done
  done
}

parallel() {  # data, then the probe per (backbone, variant) and search + train per (backbone, search seed), at once
  data
  mkdir -p "$OUT/parallel"
  local pids=() b k v
  for b in $BACKBONES; do
    for v in $PROBE_VARIANTS; do
      ( BACKBONES=$b; PROBE_VARIANTS=$v; probe; exit $FAILED ) > "$OUT/parallel/probe_${b}_$v.log" 2>&1 & pids+=($!)
    done
    for k in $SEARCH_SEEDS; do
      ( BACKBONES=$b; SEARCH_SEEDS=$k; search; train; exit $FAILED ) > "$OUT/parallel/${b}_search_seed$k.log" 2>&1 &
      pids+=($!)
    done
  done
  for k in "${pids[@]}"; do wait "$k" || FAILED=1; done
  grep -h "FAILED\|finished" "$OUT"/parallel/*.log
}

report() {
  local dirs
  # every training folder: a unit cut short has written the seeds it finished to its partial_*.json
  dirs=$(find "$OUT/train" -name 'partial_*.json' -printf '%h\n' 2>/dev/null | sort -u | paste -sd,)
  mkdir -p "$OUT/report"
  python3 benchmarks/attention_cells.py $TASK $SHAPE --steps "$STEPS" --batch-size "$BATCH" --seeds "$SEEDS" \
      --merge "$SEARCH_DIR,$dirs" --out "$OUT/report" > "$OUT/report/log.txt" 2>&1 || { FAILED=1; tail -n 20 "$OUT/report/log.txt"; }
  python3 benchmarks/attention_nas_planted.py plot --searches "$SEARCH_DIR" --out "$OUT/report" || FAILED=1
  cat "$OUT/report/results.md" "$OUT/report/choices.md" 2>/dev/null
}

command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
for stage in ${@:-data probe search train report}; do stamp "stage $stage"; $stage; done
exit $FAILED
