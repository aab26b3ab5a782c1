"""Input benchmark: training clips/s of the TensorFlow-free reader (`preprocessing.loader`) per number
of worker processes, at the paper's clip shape (32 x 224^2, rgb + flow + object) by default.

The records are `--records` (a directory or glob of `assemblenet preprocess` output), or made here
with the project's own synthetic generator and preprocessing job (`preprocessing.synthetic.generate`
+ `pipelines.preprocess.run_preprocess`, TV-L1 flow from OpenCV, oracle object masks) at
`--stored-size` (shorter side of the stored frames; 256 as Charades preprocessing) into `--out`,
reused when already there. One JSON line per worker count (and per pipeline with
`--pipelines native,tfdata`, where TensorFlow is installed): clips/s over `--seconds` after the first
batch, clips/s per worker, and the seconds to that first batch.

`--stages N` first times where one worker's time goes, in this process on one core: N clips cut
exactly as a worker cuts them (`loader.clip_into` into reused arrays), each modality on its own,
with the image decoding timed through `clip_into`'s `decode` hook; the rest of a modality's time
is its pixel work (crop, flip, lookup table, resize, copy into the batch). Figures are CPU time
of this thread (`time.thread_time`), so other jobs on a shared machine slow them less than they
slow wall-clock rates; one JSON line, milliseconds per clip, and the clips per CPU second of the
whole clip (all modalities in one call, as a worker builds it). Examples:

    # the GPU machine (16 cores, no TensorFlow): records made there, then 1..16 workers
    python benchmarks/input_pipeline.py --out /tmp/bench_records --videos 64 --workers 1,2,4,8,16
    # where a worker's time goes (200 clips), then one worker
    python benchmarks/input_pipeline.py --records /tmp/bench_records/records --stages 200 --workers 1
    # a small check on a laptop
    python benchmarks/input_pipeline.py --out /tmp/small --videos 8 --stored-size 72 --size 64 \\
        --frames 8 --batch 4 --workers 1,2 --seconds 10

Imports no TensorFlow itself (only `--pipelines tfdata` does).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _dis_flow(frames, method="opencv", **params):
    """OpenCV's DIS optical flow (preset medium) of consecutive RGB frames, (T-1, H, W, 2) float32 px."""
    import cv2
    import numpy as np

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    return np.stack([dis.calc(a, b, None) for a, b in zip(gray[:-1], gray[1:], strict=False)])


def make_records(out: Path, *, videos: int, stored_size: int, frames: int, fps: float, flow: str) -> Path:
    """Synthetic Charades-format videos -> TFRecords under out/records (skipped when done before)."""
    from pipelines.preprocess import run_preprocess, summary_ok
    from preprocessing.synthetic import generate

    records = out / "records"
    if (records / "summary.json").exists():
        return records
    if flow == "dis":  # a stand-in for TV-L1 where it is too slow (see --flow); the job runs in this process
        from preprocessing import flow as flow_lib

        flow_lib.compute_flow, flow = _dis_flow, "opencv"
    seconds = frames / fps + 1.0  # every video holds a whole clip
    height = stored_size
    width = stored_size * 4 // 3
    generate(out, format="charades", videos=videos, height=height, width=width, fps=fps,
             min_seconds=seconds, max_seconds=seconds + 2.0, test_fraction=0.0, progress=True)
    summary = run_preprocess(dataset="charades", videos=str(out / "videos"), out=str(records),
                             annotations=str(out / "Charades_v1_train.csv"), fps=fps, size=stored_size,
                             flow=flow, segmenter="oracle", progress=True)
    if not summary_ok(summary):
        raise SystemExit(f"preprocessing failed: {json.dumps(summary)[:2000]}")
    return records


def measure(files, *, pipeline: str, workers: int, frames: int, size: int, batch: int, seconds: float,
            num_classes: int) -> dict:
    from preprocessing import loader

    options = dict(modalities=["rgb", "flow", "object"], frames=frames, size=size, training=True,
                   batch_size=batch, dataset="charades", num_classes=num_classes, seed=0, repeat=True)
    if pipeline == "native":
        batches = loader.NativeReader(files, workers=workers, **options).batches()
    else:
        from preprocessing.dataset import make_dataset

        batches = iter(make_dataset(files, **options).as_numpy_iterator())
    start = time.perf_counter()
    inputs, _ = next(batches)
    first = time.perf_counter() - start
    shapes = {k: list(v.shape) for k, v in inputs.items()}
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        inputs, labels = next(batches)
        clips += int(labels.shape[0])
    elapsed = time.perf_counter() - start
    if hasattr(batches, "close"):
        batches.close()
    per_worker = round(clips / elapsed / workers, 2) if pipeline == "native" and workers > 0 else None
    return {"pipeline": pipeline, "workers": workers if pipeline == "native" else "tf.data AUTOTUNE",
            "clips_per_s": round(clips / elapsed, 2), "clips_per_s_per_worker": per_worker, "clips": clips,
            "seconds": round(elapsed, 2),
            "first_batch_s": round(first, 2), "shapes": shapes}


def stages(files, *, clips: int, frames: int, size: int, num_classes: int) -> dict:
    """Milliseconds of CPU time per clip in each stage of a worker (see the module docstring)."""
    from preprocessing import clips as clips_lib
    from preprocessing import loader

    modalities = ("rgb", "flow", "object")
    spec = loader._Spec(files=files, records=loader.shard_records(files), modalities=modalities, frames=frames,
                        size=size, training=True, batch_size=1, dataset="charades", num_classes=num_classes,
                        clips_per_video=1, seed=0, eval_starts="even")
    builder = loader._Builder(spec)  # as a worker: cv2 single-threaded, files kept open
    out = {name: array[0] for name, array in spec.views(bytearray(spec.slot_bytes())).items()}
    decoding = [0.0]

    def timed_decode(buffer, flag):
        begin = time.thread_time()
        image = loader._decode(buffer, flag)
        decoding[0] += time.thread_time() - begin
        return image

    totals: dict = {}

    def add(name, seconds):
        totals[name] = totals.get(name, 0.0) + seconds

    for n in range(clips + 1):  # the first clip warms up (tables, page faults) and is not counted
        begin = time.thread_time()
        record = n % len(spec.records)
        example = builder.example(record)
        decision = clips_lib.decide(num_frames=example["num_frames"], height=example["height"],
                                    width=example["width"], frames=frames, clips=1, training=True, seed=0,
                                    epoch=n // len(spec.records), video_id=example["video_id"])
        start = int(decision.starts[0])
        parsed = time.thread_time() - begin
        times = {"read_parse_decide": parsed}
        for modality in modalities:
            decoding[0] = 0.0
            begin = time.thread_time()
            loader.clip_into(example, start, decision, out, modalities=(modality,), frames=frames, size=size,
                             decode=timed_decode)
            elapsed = time.thread_time() - begin
            times[f"{modality}_decode"] = decoding[0]
            times[f"{modality}_pixels"] = elapsed - decoding[0]
        begin = time.thread_time()
        clips_lib.clip_labels(labels=example["labels"], label_start=example["label_start"],
                              label_end=example["label_end"], fps=example["fps"], start=start, frames=frames,
                              dataset="charades", num_classes=num_classes, whole_video=False)
        times["labels"] = time.thread_time() - begin
        begin = time.thread_time()  # the whole clip in one call, as a worker builds it
        loader.clip_into(example, start, decision, out, modalities=modalities, frames=frames, size=size)
        times["clip"] = parsed + times["labels"] + time.thread_time() - begin
        if n:
            for name, seconds in times.items():
                add(name, seconds)
    per_clip = {name: round(1000 * seconds / clips, 2) for name, seconds in totals.items()}
    return {"stages_ms_per_clip": per_clip, "clips_per_cpu_s": round(clips / totals["clip"], 2),
            "stage_clips": clips, "decoded_images_per_clip": frames * 4, "cpu": "thread_time, one core"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", help="TFRecords (directory or glob); default: make them under --out")
    parser.add_argument("--out", default="/tmp/assemblenet_input_benchmark", help="where to make records")
    parser.add_argument("--videos", type=int, default=64, help="synthetic videos to make")
    parser.add_argument("--stored-size", type=int, default=256, help="shorter side of the stored frames")
    parser.add_argument("--fps", type=float, default=6.0, help="stored frame rate (Charades recipe: 6)")
    parser.add_argument("--flow", default="opencv", choices=["opencv", "tensor", "dis"],
                        help="preprocessing flow; 'dis': OpenCV's DIS flow in place of TV-L1, a stand-in for "
                             "machines where TV-L1 at --stored-size is too slow (the records are the same "
                             "format, their manifest says 'opencv')")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", default="1,2,4,8,16",
                        help="comma-separated worker counts ('': none, e.g. with --stages)")
    parser.add_argument("--pipelines", default="native", help="native and/or tfdata, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time per setting")
    parser.add_argument("--stages", type=int, default=0,
                        help="first time this many clips stage by stage in this process (0: skip)")
    args = parser.parse_args()

    from preprocessing import loader, schema

    records = args.records or str(make_records(Path(args.out), videos=args.videos, stored_size=args.stored_size,
                                               frames=args.frames, fps=args.fps, flow=args.flow))
    pattern = [os.path.join(records, "*.tfrecord"), os.path.join(records, "*.tfrecord-*")] \
        if os.path.isdir(records) else records
    files = [f for f in loader.list_files(pattern) if not f.endswith(".ids")]
    if not files:
        raise SystemExit(f"{records}: no TFRecord files")
    with open(files[0], "rb") as f:
        first = loader.read_record(f, files[0], *loader.scan_records(files[0])[0])
    num_classes = schema.parse_native(first, [])["num_classes"]
    machine = {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
               "frames": args.frames, "size": args.size, "batch": args.batch, "records": records,
               "files": len(files)}
    if args.stages > 0:
        result = stages(files, clips=args.stages, frames=args.frames, size=args.size, num_classes=num_classes)
        print(json.dumps({**machine, **result}), flush=True)
    for pipeline in args.pipelines.split(","):
        counts = [int(w) for w in args.workers.split(",") if w] if pipeline == "native" else [0]
        for workers in counts:
            result = measure(files, pipeline=pipeline, workers=workers, frames=args.frames, size=args.size,
                             batch=args.batch, seconds=args.seconds, num_classes=num_classes)
            print(json.dumps({**machine, **result}), flush=True)


if __name__ == "__main__":  # the reader's worker processes (spawn) import this module again
    main()
