#!/usr/bin/env bash
# The end-to-end run on a JAX-only GPU machine (no TensorFlow): synthetic Charades-format data ->
# `assemblenet preprocess` (Beam, TV-L1 on the GPU, oracle masks) -> input benchmark -> `assemblenet train`
# (AssembleNet-50 or AssembleNet++-50, bf16, 32 frames) -> `assemblenet evaluate run` -> `assemblenet report`.
#
#   bash benchmarks/h200_end_to_end.sh STAGE... (stages: data inputbench an50 anpp50 flowjob)
#
# Environment: WORK (default /tmp/e2e), OUT (where logs and small results are copied), VIDEOS (300),
# STEPS (1500), BATCH (16), SIZE (112: training crop; stored frames are 128), FRAMES (32), WORKERS (12).
# Wheels: where .whl/ exists (docs/training.md lists them) they are installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/e2e}; OUT=${OUT:-$WORK/out}; VIDEOS=${VIDEOS:-300}; STEPS=${STEPS:-1500}
BATCH=${BATCH:-16}; SIZE=${SIZE:-112}; FRAMES=${FRAMES:-32}; WORKERS=${WORKERS:-12}
mkdir -p "$WORK" "$OUT"
if [ -d .whl ] && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.85}
AN="python3 -m pipelines.cli"
stamp() { echo "[$(date +%T)] $*"; }
timed() { local name=$1; shift; local t0=$(date +%s.%N); "$@"; local t1=$(date +%s.%N);
  echo "{\"stage\": \"$name\", \"seconds\": $(awk "BEGIN{print $t1 - $t0}")}"; }

data() {
  [ -f "$WORK/records/test/summary.json" ] && return 0
  timed synth $AN synth --format charades --out "$WORK/synth" --videos "$VIDEOS" --classes 10 \
      --height 128 --width 170 --fps 8 --seed 0
  for split in train test; do
    timed "preprocess_$split" $AN preprocess --dataset charades --videos "$WORK/synth/videos" \
        --annotations "$WORK/synth/Charades_v1_$split.csv" --out "$WORK/records/$split" --fps 8 --size 128 \
        --flow tensor --segmenter oracle --no-progress
  done
  cat "$WORK/records/train/summary.json"; echo
}

inputbench() {  # the loader at the paper's clip shape, from records stored at Charades' 256 short side
  timed inputbench python3 benchmarks/input_pipeline.py --out "$WORK/inputbench" --videos 32 --stored-size 256 \
      --flow tensor --frames 32 --size 224 --batch 16 --workers ${INPUT_WORKERS:-1,4,8,16} --seconds ${INPUT_SECONDS:-10} \
      --stages ${INPUT_STAGES:-100}
}

run_model() {  # name, recipe, extra flags...
  local name=$1 recipe=$2; shift 2
  local run="$WORK/runs/$name"; mkdir -p "$WORK/runs"
  local lr=$(python3 -c "print(0.2 * $BATCH)")  # AssembleNet A.6: 25.6 for batch 128
  local warm=$((STEPS * 12 / 50))                 # A.6: 12K of 50K steps
  timed "train_$name" $AN train --config "$recipe" --data "$WORK/records/train" --workdir "$run" \
      --frames "$FRAMES" --size "$SIZE" --batch-size "$BATCH" --steps "$STEPS" --steps-per-epoch 100 \
      --learning-rate "$lr" --warmup-steps "$warm" --num-classes 10 --precision bf16 \
      --input-pipeline native --input-workers "$WORKERS" --quiet "$@" > "$run.log" 2>&1 || { tail -n 60 "$run.log"; return 1; }
  mkdir -p "$run" && cp "$run.log" "$run/train.log" && grep -v "^\s*$" "$run.log" | tail -n 30
  timed "evaluate_$name" $AN evaluate run "$run" --data "$WORK/records/test" --json > "$run/eval.json"
  tail -c 1500 "$run/eval.json"; echo
  timed "report_$name" $AN report "$run"
  (cd "$run" && tar czf "$OUT/$name.tgz" report config.json history.csv eval.json train.log)
}

an50() { run_model an50 charades_assemblenet50; }
anpp50() { run_model anpp50 charades_assemblenet_plus50; }
trainstep() {  # the same model and batch on synthetic device-resident inputs (benchmarks/train_step.py)
  timed trainstep python3 benchmarks/train_step.py --structure assemblenet50 --frames "$FRAMES" --size "$SIZE" \
      --batch "$BATCH" --precision bf16 --steps 20
}
flowjob() { timed flowjob python3 benchmarks/flow_in_job.py --out "$WORK/flowjob" ${CLIPS:+--clips $CLIPS} ; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
for stage in "$@"; do stamp "stage $stage"; $stage; done
