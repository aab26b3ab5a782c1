"""`make demo` (`python -m pipelines.demo`): the whole system, orchestrated by Airflow, on one machine.

Runs the `assemblenet_end_to_end` DAG with `airflow dags test` on Airflow's embedded SQLite
database (AIRFLOW_HOME=runs/demo/airflow, example DAGs off), Beam's FnApiRunner, TensorFlow on
the CPU and synthetic Charades-format data, then prints where the report is. Every run starts
fresh: runs/demo holds only what the demo wrote (a marker file guards against deleting anything
else). Airflow's own log goes to runs/demo/airflow/dags_test.log; the console shows the stage
banners and the training progress.

Outputs: runs/demo/report/index.html, runs/demo/metrics.json, runs/demo/evolution/best_structure.json,
runs/demo/search/final_structure.json (and the rest of the run folder, see pipelines/end_to_end.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipelines.end_to_end import PROJECT_ROOT

DAG_ID = "assemblenet_end_to_end"
MARKER = ".assemblenet-demo"
OUTPUTS = ("report/index.html", "metrics.json", "evolution/best_structure.json",
           "search/final_structure.json")
# Airflow's log lines start with a timestamp, TensorFlow's C++ ones with a level and a date; the rest
# (stage banners, progress bars, Keras epochs) is the tasks' own output.
_LOG_PREFIXES = ("20", "[20", "{", "INFO", "WARNING", "I0000", "W0000", "E0000", "You might need",
                 "Run `pip install graphviz`")


def fresh_folder(workdir: Path) -> None:
    """Empties `workdir` if the demo made it (it holds the marker), refuses otherwise."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise ValueError(f"{workdir} exists and was not made by the demo (no {MARKER}); "
                             "move it away or pass another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by pipelines.demo; the next demo run deletes this folder\n")


def airflow_env(airflow_home: Path) -> dict[str, str]:
    """Airflow on its embedded SQLite database in `airflow_home`, the project's dags/, no examples;
    TensorFlow on the CPU."""
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "KERAS_BACKEND": "tensorflow",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    })
    return env


def _airflow() -> str:
    executable = Path(sys.executable).with_name("airflow")
    return str(executable) if executable.exists() else "airflow"


def run_dag(conf: dict, airflow_home: Path, *, echo: bool = True) -> int:
    """`airflow db migrate`, then `airflow dags test DAG_ID --conf CONF`; returns its exit status.

    The full output is kept in airflow_home/dags_test.log; with `echo` the tasks' own lines (stage
    banners, progress) are shown as they come."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = airflow_env(airflow_home)
    log = airflow_home / "dags_test.log"
    with log.open("w") as out:
        migrate = subprocess.run([_airflow(), "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                 cwd=PROJECT_ROOT)
        if migrate.returncode:
            return migrate.returncode
        command = [_airflow(), "dags", "test", DAG_ID, "--conf", json.dumps(conf)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   cwd=PROJECT_ROOT)
        # Bytes, split on newlines only: a progress bar's carriage returns redraw it in place.
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            out.write(line)
            if echo and line.strip() and not line.lstrip("\r").startswith(_LOG_PREFIXES):
                sys.stdout.write(line)
                sys.stdout.flush()
        return process.wait()


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
    print(f"==> AssembleNet demo: Airflow DAG {DAG_ID} on SQLite (AIRFLOW_HOME={airflow_home})", flush=True)
    start = time.monotonic()
    status = run_dag(conf, airflow_home)
    minutes = (time.monotonic() - start) / 60
    missing = [name for name in OUTPUTS if not (workdir / name).exists()]
    if status or missing:
        print(f"\nThe demo failed after {minutes:.1f} min (exit status {status}; missing: {missing}). "
              f"Airflow's log: {airflow_home / 'dags_test.log'}", file=sys.stderr)
        return status or 1
    metrics = json.loads((workdir / "metrics.json").read_text())
    headline = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("mAP", "wAP", "chance_mAP") if k in metrics)
    print(f"\n==> Demo finished in {minutes:.1f} min. Test {headline}.")
    for name in OUTPUTS:
        print(f"    {workdir / name}")
    print(f"Open the report: file://{workdir / 'report' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
