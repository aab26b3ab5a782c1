#!/usr/bin/env bash
# benchmarks/preprocess_job.py on a JAX-only GPU machine (no TensorFlow): the whole preprocessing job on
# Charades-sized synthetic videos (TV-L1 --flow tensor, a SegFormer-B0-sized segmenter, the TFRecords), each
# GPU stage inside the job against the same stage called directly, and the projection for Charades.
#
#   bash benchmarks/preprocess_job.sh [ARGS...]   # 30 s videos at 480x270, 30 fps; ARGS go to the
#                                                 # script (e.g. --quick: a smoke test of a minute)
#
# Environment: WORK (default /tmp/preprocess_job), OUT (where the JSON line is copied, default $WORK),
# DECODE_THREADS (8), and VIDEOS, SIZE, FLOW_BATCH, SEGMENT_BATCH (default: the script's, 64, 256, 256, 32).
# Wheels: where .whl/ exists (docs/training.md lists them; keras-hub, kagglehub, kagglesdk, regex for the segmenter) they are
# installed into /tmp/site first. Without keras-hub the job runs with --segmenter none, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/preprocess_job}; OUT=${OUT:-$WORK}
mkdir -p "$WORK" "$OUT"
if [ -d .whl ] && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.85}
python3 -c "import apache_beam, cv2, jax, keras; print('jax', jax.__version__, jax.devices()[0].device_kind, \
'keras', keras.__version__, 'beam', apache_beam.__version__)"
SEGMENTER=segformer
if ! python3 -c "import keras_hub" 2>/dev/null; then
  echo "keras-hub is not installed: running without the segmentation stage (--segmenter none)"
  SEGMENTER=none
fi
ARGS=(--out "$WORK" --without-tensorflow --segmenter "$SEGMENTER" --decode-threads "${DECODE_THREADS:-8}")
[ -n "${VIDEOS:-}" ] && ARGS+=(--videos "$VIDEOS")
[ -n "${SIZE:-}" ] && ARGS+=(--size "$SIZE")
[ -n "${FLOW_BATCH:-}" ] && ARGS+=(--flow-batch "$FLOW_BATCH")
[ -n "${SEGMENT_BATCH:-}" ] && ARGS+=(--segment-batch "$SEGMENT_BATCH")
python3 benchmarks/preprocess_job.py "${ARGS[@]}" "$@" | tee "$OUT/preprocess_job.json"
