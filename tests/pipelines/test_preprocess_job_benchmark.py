"""benchmarks/preprocess_job.py --quick: the whole job with TV-L1 and a SegFormer-B0-sized segmenter, without
TensorFlow, and the figures it reports computed from the job's own counters."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmark_runs_the_job_without_tensorflow_and_projects_from_its_rates(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}
    env.update(KERAS_BACKEND="jax", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "preprocess_job.py"), "--out", str(tmp_path),
                           "--quick", "--without-tensorflow"], capture_output=True, text=True, env=env,
                          timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax" and result["tensorflow_loaded"] is False
    job, flow, segment = result["job"], result["job"]["flow"], result["job"]["segment"]
    # 3 videos of 3 s decoded at 6 fps: 18 frames and 17 pairs each; 16 pairs and 8 frames per call.
    assert (job["videos"], job["dead_lettered"], job["frames"]) == (3, 0, 54)
    assert (flow["pairs"], flow["calls"], flow["pairs_computed"], flow["compiled_shapes"]) == (51, 4, 64, 1)
    assert (segment["frames"], segment["calls"], segment["frames_computed"], segment["compiled_shapes"]) == (
        54, 7, 56, 1)
    assert result["flow"]["frame_size"] == [48, 72]  # 96x64 videos, shorter side 48
    assert result["flow"]["in_job_pairs_per_s"] == flow["pairs_per_s_compiled"]
    assert math.isclose(result["flow"]["in_job_fraction"],
                        flow["pairs_per_s_compiled"] / result["flow"]["direct_pairs_per_s"], rel_tol=0.01)
    charades = result["charades"]
    assert charades["frames"] == round(9848 * 30.1 * 6)
    assert math.isclose(charades["whole_job_gpu_hours"], charades["frames"] / job["frames_per_s_compiled"] / 3600,
                        rel_tol=0.01, abs_tol=0.01)
    assert math.isclose(charades["stage_gpu_hours"]["segment"]["in_job"],
                        charades["frames"] / segment["frames_per_s_compiled"] / 3600, rel_tol=0.01, abs_tol=0.01)
    rebatched = result["records_identical_across_batches"]
    assert rebatched["same_batch"] == {"flow_batch": 16, "segment_batch": 8, "videos": 3, "identical": True,
                                       "values_differing": {}}
    other = rebatched["other_batch"]
    assert (other["flow_batch"], other["segment_batch"], other["videos"]) == (5, 5, 3)
    assert other["values_differing"].get("rgb", 0) == 0  # only the programs' arithmetic can differ
    records = sorted((tmp_path / "records").glob("data-*.tfrecord"))
    assert records and json.loads((tmp_path / "records" / "summary.json").read_text())["segmenter"].endswith(
        "segformer_b0_random.keras")
