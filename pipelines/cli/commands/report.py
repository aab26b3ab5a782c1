"""`assemblenet report RUN_DIR`: HTML + Markdown report with PNG figures in RUN_DIR/report/."""


def register(subparsers):
    parser = subparsers.add_parser("report", help="write RUN_DIR/report/index.html and report.md")
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="output folder (default: RUN_DIR/report)")
    parser.set_defaults(func=report_command)


def report_command(args) -> int:
    from pipelines.report import build_report

    index = build_report(args.run_dir, out_dir=args.out)
    print(index)
    return 0
