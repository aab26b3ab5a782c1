"""The whole preprocessing job on Charades-sized videos, its accelerator stages inside the job against the
same stages called directly, and what that projects for Charades.

Data: synthetic videos of Charades' shape (`--resolutions`, default 480x270; `--seconds` 30 at
`--source-fps` 30; textured moving shapes on a panning background, so TV-L1 has motion to find), written
with OpenCV as a Charades-format folder and CSV.

The job: `pipelines.preprocess.run_preprocess` in this process (FnApiRunner) with the Charades settings of
AssembleNet A.6 (decode at `--fps` 6, shorter side `--size`), `--flow tensor` (TV-L1 at the records' size,
`--flow-batch` pairs per call across videos), and masks from a SegFormer-B0-sized keras-hub segmenter with
random weights (AssembleNet++ §3.2's object input; the architecture of `segformer_b0_ade20k_512`, input
`--segmenter-size`, `--segment-batch` frames per call), then the TFRecord shards. The compilation cache is an
empty folder of the run, so the job compiles every shape it needs (counted), unless `--compile-cache DIR`
names one to keep between runs.

Directly, in the same process afterwards: `preprocessing.flow.flow_pairs` on `--flow-batch` pairs of the
decoded frames and the segmenter's `segment_frames` on `--segment-batch` frames, at the same sizes, compiled
first, timed over `--repeats` calls. One JSON line:

- `job`: wall seconds, videos, frames written, `frames_per_s` (whole job, compilation included) and
  `frames_per_s_compiled` (without the compile seconds), the job's `flow` and `segment` summaries, and
  `host_thread_seconds`: decoding and encoding summed over their pool threads;
- `flow`, `segment`: the stage's rate inside the job once compiled (padding counts against it) and called
  directly, their ratio (`in_job_fraction`), compiled shapes;
- `charades`: 9,848 videos of 30.1 s on average (Charades v1 train + test) decoded at `--fps`: frames,
  and the GPU-hours of the whole job, and of each stage, at the measured rates (one worker on one GPU);
- `records_identical_across_batches`: the first 3 videos run again as a job of their own at the same batch
  sizes (must be byte-identical to the whole job's records) and at other ones (see `identical_when_rebatched`);
- `tensorflow_loaded`: whether anything imported TensorFlow (`--without-tensorflow` refuses it, as on a GPU
  machine without it: the job writes its records without TensorFlow).

    KERAS_BACKEND=jax python benchmarks/preprocess_job.py --out /tmp/pj                 # Charades-sized
    KERAS_BACKEND=jax python benchmarks/preprocess_job.py --out /tmp/pj --quick         # a minute on a CPU

Needs OpenCV, Apache Beam, Keras and keras-hub (`--segmenter none` runs without keras-hub).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.flow_in_job import device_kind  # noqa: E402 - after the repository root is on the path

CHARADES_VIDEOS = 9848  # Charades v1: 7,985 training + 1,863 test videos
CHARADES_MEAN_SECONDS = 30.1  # mean video length (Sigurdsson et al., 2016)
QUICK = dict(videos=3, seconds=3.0, resolutions="96x64", size=48, flow_batch=16, segment_batch=8,
             segmenter_size=64, repeats=2)


def write_video(path: Path, width: int, height: int, fps: float, seconds: float, seed: int) -> None:
    """An mp4 of textured shapes moving over a slowly panning textured background."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    background = cv2.resize(noise, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
    shapes = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-3, 3), rng.uniform(-3, 3),
               int(rng.integers(8, max(9, height // 5))), tuple(int(c) for c in rng.integers(0, 256, 3)))
              for _ in range(4)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for i in range(round(seconds * fps)):
            x0, y0 = int(i * 0.7) % width, int(i * 0.3) % height  # camera pan
            frame = np.ascontiguousarray(background[y0:y0 + height, x0:x0 + width])
            for x, y, dx, dy, radius, colour in shapes:
                cx, cy = int(x + dx * i) % width, int(y + dy * i) % height
                cv2.circle(frame, (cx, cy), radius, colour, -1)
                cv2.circle(frame, (cx, cy), radius // 2, (255 - colour[0], colour[1], 255 - colour[2]), -1)
            writer.write(frame)
    finally:
        writer.release()


def _write_video(args) -> None:
    path, width, height, fps, seconds, seed = args
    write_video(path, width, height, fps, seconds, seed)


def make_dataset(out: Path, videos: int, seconds: float, source_fps: float,
                 resolutions: list[tuple[int, int]]) -> tuple[Path, Path]:
    """`videos` Charades-format videos (resolutions taken in turn) and their annotation CSV."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from preprocessing.charades import HEADER

    folder = out / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = out / "Charades_v1_train.csv"
    missing = [i for i in range(videos) if not (folder / f"S{i:04d}.mp4").exists()]
    # One video a core, in fresh processes (a fork would copy a process that JAX may have started threads in).
    workers = max(1, min(len(missing), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_write_video, [(folder / f"S{i:04d}.mp4", *resolutions[i % len(resolutions)], source_fps,
                                      seconds, i) for i in missing]))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(videos):
            video_id = f"S{i:04d}"
            writer.writerow([video_id, "", "", 7, 7, "Yes", "", "", "", f"c{i % 157:03d} 0.00 {seconds:.2f}",
                             f"{seconds:.2f}"])
    return folder, csv_path


def make_segmenter_file(path: Path, image_size: int) -> str:
    """A SegFormer-B0-sized ImageSegmenter (keras-hub; the `segformer_b0_ade20k_512` architecture: MiT-B0
    encoder, 256 projection filters, 150 ADE20K classes) with random weights, saved as a .keras file."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[2, 2, 2, 2], num_layers=4, layerwise_num_heads=[1, 2, 5, 8],
        layerwise_sr_ratios=[8, 4, 2, 1], max_drop_path_rate=0.1, layerwise_patch_sizes=[7, 3, 3, 3],
        layerwise_strides=[4, 2, 2, 2], hidden_dims=[32, 64, 160, 256], image_shape=(image_size, image_size, 3))
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=256)
    keras_hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=150).save(path)
    return str(path)


def _timed(call, repeats: int) -> float:
    call()  # compile this shape first (or load it): the rate is the compiled one
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def standalone_flow(frames, batch: int, repeats: int) -> float:
    """Pairs/s of `flow_pairs(method="tensor", quantized=True)` (the job's call) on `batch` consecutive pairs
    of `frames` (tiled)."""
    import numpy as np

    from preprocessing.flow import flow_pairs

    index = np.arange(batch) % (len(frames) - 1)
    first, second = frames[index], frames[index + 1]
    seconds = _timed(lambda: flow_pairs(first, second, method="tensor", batch_size=batch, quantized=True),
                     repeats)
    return batch / seconds


def standalone_segment(spec: str, frames, batch: int, repeats: int) -> float:
    """Frames/s of the segmenter's `segment_frames` on `batch` frames (a model loaded anew: it compiles)."""
    import numpy as np

    from preprocessing.segment import make_segmenter

    segmenter = make_segmenter(spec, batch_size=batch)
    chosen = frames[np.arange(batch) % len(frames)]
    times = np.zeros(batch)
    seconds = _timed(lambda: segmenter.segment_frames(chosen, times, ["x"] * batch), repeats)
    return batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true",
                        help=f"a small run that finishes in about a minute on a CPU: {QUICK}")
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=CHARADES_MEAN_SECONDS)
    parser.add_argument("--source-fps", type=float, default=30.0)
    parser.add_argument("--resolutions", default="480x270", help="WxH,... of the videos, taken in turn")
    parser.add_argument("--fps", type=float, default=6.0, help="decode rate (AssembleNet A.6: 6 for Charades)")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the records' frames")
    parser.add_argument("--flow-batch", type=int, default=256)
    parser.add_argument("--segment-batch", type=int, default=32)
    parser.add_argument("--segmenter", choices=("segformer", "none"), default="segformer")
    parser.add_argument("--segmenter-size", type=int, default=512, help="the segmenter's square input")
    parser.add_argument("--workers", type=int, default=1, help="the job's local worker processes")
    parser.add_argument("--decode-threads", type=int, default=4, help="videos each worker decodes at once")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each stage called directly")
    parser.add_argument("--compile-cache", default=None,
                        help="the job's persistent compilation cache, kept between runs (default: an empty folder "
                             "of the run, so the job compiles every shape; a second run with the same folder "
                             "shows what loading the programs costs)")
    parser.add_argument("--skip-identity-check", action="store_true",
                        help="do not run 3 videos again (same and other batch sizes) to compare their records")
    parser.add_argument("--without-tensorflow", action="store_true",
                        help="refuse every import of TensorFlow, as on a machine without it (KERAS_BACKEND=jax)")
    args = parser.parse_args()
    if args.without_tensorflow and importlib.util.find_spec("tensorflow") is not None:
        # Only where TensorFlow is installed: the hook refuses even a library's look for it, which a machine
        # without TensorFlow answers with None (JAX's persistent cache warned and went unread under it).
        sys.meta_path.insert(0, _NoTensorFlow())
    if args.quick:
        defaults = parser.parse_args(["--out", args.out])
        for key, value in QUICK.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)

    import keras

    from pipelines.preprocess import run_preprocess
    from preprocessing.video import decode_video

    out = Path(args.out)
    resolutions = [tuple(int(v) for v in r.split("x")) for r in args.resolutions.split(",")]
    t0 = time.perf_counter()
    videos, csv_path = make_dataset(out / "data", args.videos, args.seconds, args.source_fps, resolutions)
    make_seconds = time.perf_counter() - t0
    segmenter = "none"
    if args.segmenter == "segformer":
        segmenter = make_segmenter_file(out / "segformer_b0_random.keras", args.segmenter_size)
    shutil.rmtree(out / "records", ignore_errors=True)
    cache = Path(args.compile_cache) if args.compile_cache else out / "compile_cache"
    if not args.compile_cache:
        shutil.rmtree(cache, ignore_errors=True)
    host = _time_host_stages() if args.workers == 1 else {}
    summary = run_preprocess(dataset="charades", videos=str(videos), annotations=str(csv_path),
                             out=str(out / "records"), fps=args.fps, size=args.size, flow="tensor",
                             segmenter=segmenter, progress=False, workers=args.workers,
                             compile_cache=str(cache), flow_batch=args.flow_batch,
                             segment_batch=args.segment_batch, decode_threads=args.decode_threads)
    this_run = summary["this_run"]
    flow, segment = this_run.get("flow", {}), this_run.get("segment", {})
    compile_seconds = flow.get("compile_seconds", 0) + segment.get("compile_seconds", 0)
    frames = summary["frames_written"]
    job = {"seconds": this_run["seconds"], "videos": summary["written"], "dead_lettered": summary["dead_lettered"],
           "frames": frames, "frames_per_s": round(frames / this_run["seconds"], 2),
           "frames_per_s_compiled": round(frames / max(this_run["seconds"] - compile_seconds, 1e-9), 2),
           "flow": flow, "segment": segment,
           "host_thread_seconds": {name: round(seconds, 2) for name, seconds in host.items()}}

    decoded = decode_video(sorted(videos.glob("*.mp4"))[0], fps=args.fps, shorter_side=args.size).frames
    direct_flow = standalone_flow(decoded, args.flow_batch, args.repeats)
    flow_rates = {"frame_size": list(decoded.shape[1:3]), "batch": args.flow_batch,
                  "in_job_pairs_per_s": flow.get("pairs_per_s_compiled"), "direct_pairs_per_s": round(direct_flow, 2),
                  "compiled_shapes": flow.get("compiled_shapes")}
    flow_rates["in_job_fraction"] = round(flow_rates["in_job_pairs_per_s"] / direct_flow, 3)
    result = {"backend": keras.backend.backend(), "device": device_kind(), "make_videos_s": round(make_seconds, 1),
              "settings": {k: getattr(args, k) for k in ("videos", "seconds", "source_fps", "resolutions", "fps",
                                                        "size", "flow_batch", "segment_batch", "segmenter",
                                                        "segmenter_size", "workers", "decode_threads")},
              "job": job, "flow": flow_rates}
    hours = {"flow": _hours(direct_flow, flow_rates["in_job_pairs_per_s"], args.fps)}
    if segment:
        direct_segment = standalone_segment(segmenter, decoded, args.segment_batch, args.repeats)
        result["segment"] = {"batch": args.segment_batch, "model_input": [args.segmenter_size] * 2,
                             "in_job_frames_per_s": segment["frames_per_s_compiled"],
                             "direct_frames_per_s": round(direct_segment, 2),
                             "in_job_fraction": round(segment["frames_per_s_compiled"] / direct_segment, 3),
                             "compiled_shapes": segment["compiled_shapes"]}
        hours["segment"] = _hours(direct_segment, segment["frames_per_s_compiled"], args.fps, pairs=False)
    charades_frames = round(CHARADES_VIDEOS * CHARADES_MEAN_SECONDS * args.fps)
    result["charades"] = {"videos": CHARADES_VIDEOS, "frames": charades_frames,
                          "whole_job_gpu_hours": round(charades_frames / job["frames_per_s_compiled"] / 3600, 2),
                          "stage_gpu_hours": hours}
    if not args.skip_identity_check:
        result["records_identical_across_batches"] = identical_when_rebatched(args, videos, csv_path, out, segmenter,
                                                                              cache)
    result["tensorflow_loaded"] = "tensorflow" in sys.modules
    print(json.dumps(result))


def identical_when_rebatched(args, videos: Path, csv_path: Path, out: Path, segmenter: str, cache: Path) -> dict:
    """The first 3 videos again, as a job of their own: at the same batch sizes (other neighbours and splits
    in every batch: their records must be byte-identical to the whole job's, each pair and frame being
    computed on its own by the same program), and at other batch sizes (a quarter of the pairs and half the
    frames, plus one: other compiled programs, whose arithmetic may differ in the last bits on some
    devices). For each: whether the records are identical, and how many stored values differ."""
    from pipelines.preprocess import decode_records, run_preprocess
    from preprocessing.schema import decode_example, read_video_id

    lines = csv_path.read_text(encoding="utf-8").splitlines(keepends=True)
    subset = out / "rebatched.csv"
    subset.write_text("".join(lines[:4]), encoding="utf-8")

    def records(folder: Path) -> dict[str, bytes]:
        return {read_video_id(r): r for path in sorted(folder.glob("data-*.tfrecord"))
                for r in decode_records(path.read_bytes(), str(path))}

    whole = records(out / "records")
    result = {}
    for name, flow_batch, segment_batch in (("same_batch", args.flow_batch, args.segment_batch),
                                            ("other_batch", args.flow_batch // 4 + 1, args.segment_batch // 2 + 1)):
        folder = out / f"records_{name}"
        shutil.rmtree(folder, ignore_errors=True)
        run_preprocess(dataset="charades", videos=str(videos), annotations=str(subset), out=str(folder),
                       fps=args.fps, size=args.size, flow="tensor", segmenter=segmenter, progress=False,
                       compile_cache=str(cache), flow_batch=flow_batch,
                       segment_batch=segment_batch, decode_threads=args.decode_threads)
        again = records(folder)
        differing = {}
        for video_id, data in again.items():
            if whole.get(video_id) != data:
                a, b = decode_example(data), decode_example(whole[video_id])
                for key in ("rgb", "flow", "object"):
                    if key in a:
                        differing[key] = differing.get(key, 0) + int((a[key] != b[key]).sum())
        result[name] = {"flow_batch": flow_batch, "segment_batch": segment_batch, "videos": len(again),
                        "identical": bool(again) and all(whole.get(i) == d for i, d in again.items()),
                        "values_differing": differing}
    return result


def _time_host_stages() -> dict[str, float]:
    """Thread-seconds of decoding and of encoding the records, summed over the worker's pool threads (the
    job runs in this process with one worker): what the host spends beside the batches, to compare with
    the job's wall time."""
    import threading

    from pipelines.preprocess import transforms

    totals = {"decode": 0.0, "encode": 0.0}
    lock = threading.Lock()

    def timed(name, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    totals[name] += time.perf_counter() - start
        return call

    transforms.decode_task = timed("decode", transforms.decode_task)
    transforms.encode_decoded = timed("encode", transforms.encode_decoded)
    return totals


def _hours(direct_rate: float, in_job_rate: float, fps: float, pairs: bool = True) -> dict:
    """GPU-hours of one stage over Charades at the in-job and direct rates (pairs: frames less one a video)."""
    items = CHARADES_VIDEOS * CHARADES_MEAN_SECONDS * fps - (CHARADES_VIDEOS if pairs else 0)
    return {"in_job": round(items / in_job_rate / 3600, 2), "direct": round(items / direct_rate / 3600, 2)}


class _NoTensorFlow:
    """An import hook that makes `import tensorflow` fail, as where it is not installed (keras-hub and Keras
    import it only if it is there)."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name}: refused by --without-tensorflow")
        return None


if __name__ == "__main__":
    main()
