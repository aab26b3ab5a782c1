"""`assemblenet predict --model RUN_DIR --video FILE.mp4`: top classes of one raw video."""

import json

from pipelines.cli.commands import FPS, SIDE, Range, positive
from pipelines.rundir import MODEL


def register(subparsers):
    parser = subparsers.add_parser("predict", help="preprocess one video like the training data and "
                                   "print its top classes")
    parser.add_argument("--model", required=True, help=f"a training run directory (holds {MODEL})")
    parser.add_argument("--video", required=True, help="a video file (mp4, ...)")
    parser.add_argument("--top", type=positive(), default=5, help="how many classes to print")
    parser.add_argument("--clips", type=Range(int, 1, 1000), default=5, help="clips max-pooled (AssembleNet A.7: 5)")
    parser.add_argument("--segmenter", help="object segmenter spec (default: the run's preprocessing)")
    parser.add_argument("--fps", type=FPS, help="decode frame rate (default: the run's preprocessing)")
    parser.add_argument("--size", type=SIDE, help="shorter side of the frames (default: the run's)")
    parser.add_argument("--flow", choices=["opencv", "tensor"], help="flow method (default: the run's)")
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
