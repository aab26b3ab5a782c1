"""`assemblenet predict --model RUN_DIR --video FILE.mp4`: top classes of one raw video."""

import json

from pipelines.cli.commands import positive
from pipelines.configs import add_flag_like
from pipelines.evaluate import CLIPS, EvaluateConfig
from pipelines.preprocess.config import PreprocessConfig
from pipelines.rundir import MODEL
from preprocessing.flow import METHODS


def register(subparsers):
    parser = subparsers.add_parser("predict", help="preprocess one video like the training data and "
                                   "print its top classes")
    parser.add_argument("--model", required=True, help=f"a training run directory (holds {MODEL})")
    parser.add_argument("--video", required=True, help="a video file (mp4, ...)")
    parser.add_argument("--top", type=positive(), default=5, help="how many classes to print")
    add_flag_like(parser, EvaluateConfig, "clips", CLIPS, f"clips max-pooled (AssembleNet A.7: {CLIPS})")
    # PreprocessConfig's settings (their types, choices and ranges); None: the run's preprocessing. A
    # flow is computed here, so --flow takes only the flow methods.
    add_flag_like(parser, PreprocessConfig, "segmenter", None, "object segmenter spec (default: the run's "
                  "preprocessing)")
    add_flag_like(parser, PreprocessConfig, "fps", None, "decode frame rate (default: the run's preprocessing)")
    add_flag_like(parser, PreprocessConfig, "size", None, "shorter side of the frames (default: the run's)")
    add_flag_like(parser, PreprocessConfig, "flow", None, "flow method (default: the run's)", choices=METHODS)
    parser.add_argument("--json", action="store_true", help="print [[class, score], ...] as JSON")
    parser.set_defaults(func=predict_command)


def predict_command(args) -> int:
    from pipelines.predict import predict

    top = predict(run_dir=args.model, video=args.video, top=args.top, clips=args.clips,
                  segmenter=args.segmenter, fps=args.fps, size=args.size, flow=args.flow)
    if args.json:
        print(json.dumps([[name, score] for name, score in top]))
    else:
        for name, score in top:
            print(f"{score:.4f}  {name}")
    return 0
