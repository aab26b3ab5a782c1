"""`assemblenet evaluate charades|toyota|run`: score a submission, a prediction CSV or a trained run."""

import json
import sys

from pipelines.cli.commands.train import add_input_flags
from pipelines.configs import add_flags
from pipelines.evaluate import EvaluateConfig
from pipelines.rundir import MODEL, RECIPE


def register(subparsers):
    parser = subparsers.add_parser("evaluate", help="official Charades / Toyota Smarthome metrics")
    kinds = parser.add_subparsers(dest="kind", required=True)

    charades = kinds.add_parser("charades", help="score an official-format Charades submission file")
    charades.add_argument("--submission", required=True, help="lines: video id, then one score per class")
    charades.add_argument("--annotations", required=True, help="Charades_v1_test.csv")
    charades.add_argument("--classes", help="Charades_v1_classes.txt (default: 157 classes c000..c156)")
    charades.add_argument("--json", action="store_true", help="print the full result as JSON")
    charades.set_defaults(func=charades_command)

    toyota = kinds.add_parser("toyota", help="score a Toyota Smarthome `video,prediction` CSV")
    toyota.add_argument("--predictions", required=True, help="CSV with columns video,prediction")
    toyota.add_argument("--json", action="store_true", help="print the full result as JSON")
    toyota.set_defaults(func=toyota_command)

    run = kinds.add_parser("run", help=f"evaluate RUN_DIR/{MODEL} on TFRecords (N clips a video)")
    run.add_argument("run_dir")
    run.add_argument("--data", required=True, help="TFRecord file pattern of the test split")
    add_flags(run, EvaluateConfig, ("dataset",))
    run.add_argument("--config",
                     help="the recipe whose `evaluate` section sets --clips, --clip-starts and --size: a shipped "
                     "one by name (see configs/) or a JSON file; default: the recipe the run was trained "
                     f"with (RUN_DIR/{RECIPE}); the flags below override it")
    add_flags(run, EvaluateConfig, ("clips", "clip_starts", "size", "seed", "batch_size"))
    add_input_flags(run)
    run.add_argument("--json", action="store_true", help="print the full result as JSON")
    run.set_defaults(func=run_command)


def _print(result: dict, as_json: bool, keys: tuple[str, ...]) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print("  ".join(f"{k}={result[k]:.4f}" if isinstance(result[k], float) else f"{k}={result[k]}"
                        for k in keys if k in result))


def charades_command(args) -> int:
    from pipelines.evaluate import evaluate_charades_submission

    result = evaluate_charades_submission(args.submission, args.annotations, args.classes)
    _print(result, args.json, ("mAP", "wAP", "num_videos", "num_missing_predictions"))
    missing, total = result["num_missing_predictions"], result["num_annotated_videos"]
    if missing:  # they score -inf for every class (ranked last), which lowers the mAP
        print(f"warning: {missing} of {total} annotated videos have no line in {args.submission}; "
              "they are ranked last for every class", file=sys.stderr)
    return 0


def toyota_command(args) -> int:
    from pipelines.evaluate import evaluate_toyota_predictions

    result = evaluate_toyota_predictions(args.predictions)
    _print(result, args.json, ("accuracy", "mean_per_class_accuracy", "num_videos"))
    return 0


def run_command(args) -> int:
    from pipelines.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, args.data, dataset=args.dataset, clips=args.clips,
                          batch_size=args.batch_size, size=args.size, clip_starts=args.clip_starts,
                          config=args.config, seed=args.seed, input_pipeline=args.input_pipeline,
                          input_workers=args.input_workers)
    _print(result, args.json, ("mAP", "wAP", "accuracy", "mean_per_class_accuracy", "num_videos"))
    return 0
