"""`assemblenet synth` (the synthetic dataset) and `assemblenet preprocess` (the Beam job)."""

import argparse
import json

from pipelines.cli.commands import FPS, MAX_SIDE, SEED, WORKERS, Range, positive
from pipelines.configs import add_flags
from pipelines.preprocess.config import PreprocessConfig
from preprocessing import toyota


def register(subparsers):
    synth = subparsers.add_parser("synth", help="write a synthetic dataset in Charades or Toyota format")
    synth.add_argument("--format", required=True, choices=["charades", "toyota"])
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--videos", type=positive(), required=True, help="number of videos")
    synth.add_argument("--seed", type=SEED, default=0)
    synth.add_argument("--classes", type=Range(int, 2, 12), default=10,
                       help="number of synthetic action classes (2..12)")
    synth.add_argument("--height", type=Range(int, 16, MAX_SIDE), default=96)
    synth.add_argument("--width", type=Range(int, 16, MAX_SIDE), default=128)
    synth.add_argument("--fps", type=FPS, default=8.0)
    synth.set_defaults(func=synth_command)

    pre = subparsers.add_parser(
        "preprocess", help="videos -> TFRecords (rgb, TV-L1 flow, object masks) with Beam",
        description="Runs the Beam preprocessing job. Beam pipeline options (e.g. --project, --region, "
                    "--temp_location, --setup_file ./setup.py for Dataflow) go after `--`.")
    # The job's settings are PreprocessConfig's fields (pipelines/preprocess/config.py); the other flags
    # say where the job reads and writes and how it runs.
    add_flags(pre, PreprocessConfig, ("dataset",))
    pre.add_argument("--videos", required=True,
                     help="directory of the .mp4 files (local: sub-folders and .MP4 included; or gs://)")
    pre.add_argument("--out", required=True,
                     help="output directory for shards, dead_letter.jsonl, summary.json")
    pre.add_argument("--annotations", help="Charades: the split's CSV (Charades_v1_train.csv / _test.csv)")
    pre.add_argument("--classes", help="Charades: Charades_v1_classes.txt (default: next to the CSV)")
    pre.add_argument("--split", choices=toyota.SPLITS, help="Toyota split (default: every clip)")
    add_flags(pre, PreprocessConfig, ("fps", "size", "flow", "segmenter"))
    pre.add_argument("--num-shards", type=positive(), default=None, help="default: one per 50 videos")
    add_flags(pre, PreprocessConfig, ("max_seconds",))
    pre.add_argument("--runner", default=None, help="Beam runner (default: FnApiRunner, in process)")
    pre.add_argument("--workers", type=WORKERS, default=1,
                     help="local worker processes of the FnApiRunner (Beam's multi_processing mode); "
                          "output identical to --workers 1")
    pre.add_argument("--replace", action="store_true",
                     help="OUT holds records of other settings or of videos not in this input: delete or "
                          "redo them so OUT matches this command (default: refuse)")
    add_flags(pre, PreprocessConfig, ("compile_cache", "flow_batch", "segment_batch", "decode_threads"))
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.add_argument("pipeline_args", nargs=argparse.REMAINDER, help="Beam pipeline options, after `--`")
    pre.set_defaults(func=preprocess_command)


def synth_command(args):
    from pipelines.locks import writer_lock
    from preprocessing.synthetic import generate

    with writer_lock(args.out, "dataset folder"):  # one `synth` per --out
        result = generate(args.out, format=args.format, videos=args.videos, seed=args.seed,
                          num_classes=args.classes, height=args.height, width=args.width, fps=args.fps,
                          progress=True)
    print(json.dumps({k: v for k, v in result.items() if k != "class_names"}, indent=1))


def preprocess_command(args):
    from pipelines.checks import check_utf8
    from pipelines.preprocess import run_preprocess, summary_ok

    check_utf8(args.annotations, "--annotations")
    check_utf8(args.classes, "--classes")
    extra = [a for a in (args.pipeline_args or []) if a != "--"]
    summary = run_preprocess(dataset=args.dataset, videos=args.videos, out=args.out,
                             annotations=args.annotations, classes=args.classes, split=args.split,
                             fps=args.fps, size=args.size, flow=args.flow, segmenter=args.segmenter,
                             num_shards=args.num_shards, max_seconds=args.max_seconds, runner=args.runner,
                             pipeline_args=extra, progress=not args.no_progress, workers=args.workers,
                             replace=args.replace, compile_cache=args.compile_cache,
                             flow_batch=args.flow_batch, segment_batch=args.segment_batch,
                             decode_threads=args.decode_threads)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("this_run", "class_names")}))
    return 0 if summary_ok(summary) else 1
