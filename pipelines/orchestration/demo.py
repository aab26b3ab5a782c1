"""`make demo` (`python -m pipelines.orchestration.demo`): the whole system, orchestrated by Airflow, on one machine.

Runs the `assemblenet_end_to_end` DAG the way a deployment does: Airflow 3's scheduler, DAG
processor and API server (pipelines/orchestration/airflow_local.py), started here with the LocalExecutor on
SQLite in runs/demo/airflow (AIRFLOW_HOME; example DAGs off), the DAG run triggered with the
demo's conf and awaited, each task state printed as it changes, then Airflow's processes ended,
also when the demo is interrupted (Ctrl-C or SIGTERM). Every task runs in its own process through
the Task SDK: Beam's FnApiRunner, TensorFlow on the CPU, synthetic Charades-format data. Every run
starts fresh: runs/demo holds only what the demo wrote (a marker file guards against deleting
anything else). Airflow's logs are in runs/demo/airflow/logs (one file per task attempt); the
console shows task states and the stage banners of the tasks' output.

Outputs: runs/demo/report/index.html, runs/demo/metrics.json, runs/demo/evolution/best_structure.json,
runs/demo/search/final_structure.json (and the rest of the run folder, see pipelines/orchestration/end_to_end.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from pipelines.orchestration.airflow_local import LocalAirflow, task_output, terminate_on_sigterm
from pipelines.orchestration.end_to_end import PROJECT_ROOT
from pipelines.rundir import METRICS, RunDir

DAG_ID = "assemblenet_end_to_end"
MARKER = ".assemblenet-demo"
OUTPUTS = ("report/index.html", METRICS, "evolution/best_structure.json",
           "search/final_structure.json")
# Two tasks at once (the CI machine's 2 cores); the GPU pool lets both be trainings.
PARALLELISM = 2


def fresh_folder(workdir: Path) -> None:
    """Empties `workdir` if the demo made it (it holds the marker), refuses otherwise."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise ValueError(f"{workdir} exists and was not made by the demo (no {MARKER}); "
                             "move it away or pass another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by pipelines.orchestration.demo; the next demo run deletes this folder\n")


def airflow_env(airflow_home: Path) -> dict[str, str]:
    """What the demo adds to Airflow's configuration: TensorFlow on the CPU, quiet C++ logging."""
    return {"KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _name(ti: dict) -> str:
    return ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")


def run_dag(conf: dict, airflow_home: Path, *, echo: bool = True, run_id: str = "demo",
            airflow: LocalAirflow | None = None) -> int:
    """Starts Airflow in `airflow_home` (unless `airflow` is running already), triggers DAG_ID with
    `conf`, waits for the run; 0 when it succeeded. With `echo`, prints each task's state changes and
    the `==>` banners its output holds, and a failed task's last lines."""
    say = print if echo else (lambda *args, **kwargs: None)
    started = time.monotonic()

    def on_change(ti: dict) -> None:
        if ti["state"] is None:  # created, not yet scheduled
            return
        clock = time.strftime("%M:%S", time.gmtime(time.monotonic() - started))
        attempt = f" (try {ti['try_number']})" if ti["try_number"] > 1 else ""
        say(f"[{clock}] {_name(ti):34s} {ti['state'] or 'none'}{attempt}", flush=True)
        if ti["state"] in ("success", "failed", "up_for_retry"):
            log = own.task_log(DAG_ID, run_id, ti["task_id"], ti["map_index"], max(1, ti["try_number"]))
            if ti["state"] == "success":
                lines = [line for line in task_output(log) if line.startswith("==>")]
            else:  # its last lines and the exception that ended it
                lines = list(task_output(log, errors=True))[-12:] + [f"(log: {log})"]
            for line in lines:
                say(f"        {line.strip()}", flush=True)

    own = airflow or LocalAirflow(airflow_home, parallelism=PARALLELISM, pools={"gpu": PARALLELISM},
                                  env=airflow_env(airflow_home), echo=say)
    try:
        if airflow is None:
            own.start()
        own.trigger(DAG_ID, conf, run_id)
        say(f"    DAG run {DAG_ID}/{run_id} triggered; task states:", flush=True)
        state = own.wait_for_run(DAG_ID, run_id, on_change=on_change)
    finally:
        if airflow is None:
            say("    stopping Airflow", flush=True)
            own.stop()
    return 0 if state == "success" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(PROJECT_ROOT / "runs" / "demo"),
                        help="run folder (emptied first; default runs/demo)")
    parser.add_argument("--conf", default="{}",
                        help="JSON of assemblenet_end_to_end params to override (EndToEndConfig fields)")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir).resolve()
    conf = {**json.loads(args.conf), "workdir": str(workdir)}
    fresh_folder(workdir)
    airflow_home = workdir / "airflow"
    print(f"==> AssembleNet demo: Airflow scheduler + LocalExecutor on SQLite (AIRFLOW_HOME={airflow_home}), "
          f"DAG {DAG_ID}", flush=True)
    start = time.monotonic()
    try:
        with terminate_on_sigterm():
            status = run_dag(conf, airflow_home)
    except KeyboardInterrupt:
        print(f"\nInterrupted after {(time.monotonic() - start) / 60:.1f} min; Airflow's processes were "
              "stopped.", file=sys.stderr)
        return 130
    minutes = (time.monotonic() - start) / 60
    missing = [name for name in OUTPUTS if not (workdir / name).exists()]
    if status or missing:
        print(f"\nThe demo failed after {minutes:.1f} min (missing: {missing}). Airflow's logs: "
              f"{airflow_home / 'logs'}", file=sys.stderr)
        return status or 1
    metrics = RunDir(workdir).read(METRICS)
    headline = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("mAP", "wAP", "chance_mAP") if k in metrics)
    print(f"\n==> Demo finished in {minutes:.1f} min. Test {headline}.")
    for name in OUTPUTS:
        print(f"    {workdir / name}")
    print(f"Open the report: file://{workdir / 'report' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
