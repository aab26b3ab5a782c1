"""Airflow 3 embedded in one folder: the real scheduler, DAG processor and API server, started and stopped here.

`make demo` and the orchestration tests run DAGs the way a deployment does, not with `airflow dags
test`: the scheduler queues task instances on an executor (LocalExecutor by default; CeleryExecutor
with workers the caller starts), every task runs in its own process and talks to the API server
through the Task SDK (`[core] execution_api_server_url`), the DAG processor parses dags/. All of it
lives in `home` (AIRFLOW_HOME: SQLite database, logs, each component's output in home/logs/*.log)
on a free port of 127.0.0.1, example DAGs off, DAGs unpaused when first parsed.

Each component runs in its own process group (its task processes included), so `stop()` ends all
of it: SIGTERM to every group, SIGKILL to what is left after a grace period. `with
LocalAirflow(...) as airflow:` stops them on any exit, Ctrl-C and SIGTERM included (see
`terminate_on_sigterm`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "dag-processor", "scheduler")
FINISHED = ("success", "failed")
# A traceback's last line: "ImportError: ...", "airflow.sdk.exceptions.AirflowException: ...".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
# A cluster policy (Airflow's airflow_local_settings.py, imported by the scheduler from
# AIRFLOW_HOME/config): the DAG params gpu_queue / cpu_queue / gpu_pool route each run's tasks.
LOCAL_SETTINGS = "from dags._routing import task_instance_mutation_hook  # noqa: F401\n"


def airflow_executable() -> str:
    executable = Path(sys.executable).with_name("airflow")
    return str(executable) if executable.exists() else "airflow"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AirflowError(RuntimeError):
    pass


class LocalAirflow:
    """Airflow's components on `home`; `env` adds or overrides configuration (AIRFLOW__SECTION__KEY)."""

    def __init__(self, home: str | Path, *, dags_folder: str | Path = PROJECT_ROOT / "dags",
                 executor: str = "LocalExecutor", parallelism: int = 2, pools: dict[str, int] | None = None,
                 env: dict[str, str] | None = None, echo: Callable[[str], None] | None = print):
        self.home = Path(home).resolve()
        self.port = free_port()
        self.pools = dict(pools or {})
        self.echo = echo or (lambda line: None)
        self.processes: dict[str, subprocess.Popen] = {}
        self.sessions: set[int] = set()  # every session a component started, also after stop()
        # The caller's own Airflow configuration (AIRFLOW__*, AIRFLOW_CONFIG) stays out: this one is
        # self-contained.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("AIRFLOW__") and k != "AIRFLOW_CONFIG"}
        self.env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(dags_folder).resolve()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # A local, single-user deployment: the UI opens without a login.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # On a busy 2-core machine the API server can take more than the default 5 s to answer.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            # The two cores are the tasks': parse dags/ once a minute, not every 30 s.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        })
        self.env.update(env or {})

    @property
    def database(self) -> Path:
        return self.home / "airflow.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- life cycle ------------------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """One `airflow ...` command on this home; its output is appended to home/logs/cli.log."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        with (self.home / "logs" / "cli.log").open("a") as log:
            log.write(f"$ airflow {' '.join(args)}\n")
            log.flush()
            done = subprocess.run([airflow_executable(), *args], env=self.env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
        if check and done.returncode:
            raise AirflowError(f"`airflow {' '.join(args)}` failed (exit {done.returncode}); "
                               f"see {self.home / 'logs' / 'cli.log'}")
        return done

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts a long-running process in its own process group, output to home/logs/<name>.log."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        log = (self.home / "logs" / f"{name}.log").open("ab")
        process = subprocess.Popen(list(args), env={**self.env, **(env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT,
                                   start_new_session=True, preexec_fn=die_with_parent)
        log.close()
        self.processes[name] = process
        self.sessions.add(process.pid)
        self._write_pids()
        return process

    def _write_pids(self) -> None:
        (self.home / "processes.json").write_text(json.dumps(
            {name: process.pid for name, process in self.processes.items()}, indent=1) + "\n")

    def start(self) -> LocalAirflow:
        """Migrates the database, creates the pools, writes the routing policy, starts the components."""
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "config"
        config.mkdir(exist_ok=True)
        (config / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
        self.echo(f"    airflow db migrate ({self.database})")
        self.cli("db", "migrate")
        for pool, slots in self.pools.items():
            self.cli("pools", "set", pool, str(slots), f"{pool} slots (one task each)")
        for name in COMPONENTS:
            self.spawn(name, airflow_executable(), name)
        self.echo(f"    Airflow {', '.join(COMPONENTS)} started; UI and API at {self.url} "
                  f"(logs: {self.home / 'logs'})")
        return self

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last lines of home/logs/<name>.log ('' if there is none yet), preceded by the exception
        lines of earlier chained tracebacks: a wrapper that re-raises ("The above exception was the
        direct cause ...") would otherwise hide the cause above the tail."""
        path = self.home / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        tail = text[-lines:]
        causes = [line for line in text[:-lines] if _EXCEPTION_LINE.match(line)]
        return "\n".join([f"(earlier) {line}" for line in causes[-5:]] + tail)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                # The log's last lines go into the message: CI and a user's terminal show why at once.
                raise AirflowError(f"Airflow's {name} exited with status {process.returncode}; see "
                                   f"{self.home / 'logs' / (name + '.log')}, which ends with:\n"
                                   f"{self.log_tail(name)}")

    def wait_for_log(self, name: str, text: str, timeout: float = 300.0) -> None:
        """Until the spawned process `name` has written `text` to its log (e.g. a Celery worker's
        "ready."); fails at once if any component died meanwhile."""
        path = self.home / "logs" / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if path.exists() and text in path.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise AirflowError(f"{name} did not log {text!r} within {timeout:.0f} s; see {path}")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to every component's process group, then to every other process of their sessions
        (task processes run in process groups of their own); SIGKILL to what is left after `grace`
        seconds. A second Ctrl-C or SIGTERM meanwhile does not cut it short."""
        with _signals_ignored():
            self._stop(grace)

    def _stop(self, grace: float) -> None:
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in self.leftover_processes():
            _signal(pid, signal.SIGTERM)
        while time.monotonic() < deadline and self.leftover_processes():
            time.sleep(0.2)
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGKILL)
        # A process may fork between a scan and its kill (an executor starting a task), and a killed one
        # stays listed until the kernel has torn it down: scan and kill again until none is left.
        kill_deadline = time.monotonic() + 10
        while (leftover := self.leftover_processes()) and time.monotonic() < kill_deadline:
            for pid in leftover:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.1)
        for process in self.processes.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()

    def leftover_processes(self) -> list[int]:
        """Processes still running in the components' sessions: each component starts a session of its
        own, and its children keep it (task processes change their process group, not their session)."""
        return processes_in_sessions(self.sessions)

    def __enter__(self) -> LocalAirflow:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- DAG runs --------------------------------------------------------------------------------------

    def query(self, sql: str, *args) -> list[tuple]:
        """A read-only query of the metadata database (retried while a writer holds the lock)."""
        for attempt in range(50):
            try:
                with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5) as db:
                    return db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "no such table" not in str(error) or attempt == 49:
                    raise
                time.sleep(0.2)
        return []

    def wait_for_dag(self, dag_id: str, timeout: float = 300.0) -> None:
        """Until the DAG processor has parsed and stored `dag_id` (an import error fails at once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id):
                return
            errors = self.query("SELECT filename, stacktrace FROM import_error")
            if errors:
                raise AirflowError(f"DAG import error in {errors[0][0]}:\n{errors[0][1]}")
            time.sleep(1)
        raise AirflowError(f"DAG {dag_id} was not parsed within {timeout:.0f} s; see "
                           f"{self.home / 'logs' / 'dag-processor.log'}")

    def trigger(self, dag_id: str, conf: dict, run_id: str) -> str:
        self.wait_for_dag(dag_id)
        self.cli("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
        return rows[0][0] if rows else None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """One dict per task instance of the run: task_id, map_index, state, try_number, queue, pool,
        hostname, pid."""
        columns = ("task_id", "map_index", "state", "try_number", "queue", "pool", "hostname", "pid")
        rows = self.query(f"SELECT {', '.join(columns)} FROM task_instance WHERE dag_id = ? AND run_id = ? "
                          "ORDER BY start_date IS NULL, start_date, task_id, map_index", dag_id, run_id)
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 3600.0, poll: float = 2.0,
                     on_change: Callable[[dict], None] | None = None,
                     on_poll: Callable[[list[dict]], None] | None = None) -> str:
        """Polls the run until it succeeds or fails; calls `on_change(ti)` for each task instance whose
        state changed and `on_poll(task_instances)` at every poll. Returns the run's final state."""
        seen: dict[tuple, tuple] = {}
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            instances = self.task_instances(dag_id, run_id)
            if on_poll:
                on_poll(instances)
            for ti in instances:
                key, value = (ti["task_id"], ti["map_index"]), (ti["state"], ti["try_number"])
                if seen.get(key) != value:
                    seen[key] = value
                    if on_change:
                        on_change(ti)
            state = self.run_state(dag_id, run_id)
            if state in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise AirflowError(f"DAG run {dag_id}/{run_id} still {state} after {timeout:.0f} s")
            time.sleep(poll)

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, attempt: int = 1) -> Path:
        """The task instance's log file (Airflow's default log_filename_template)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        return folder / f"attempt={attempt}.log"


def task_output(log: Path, errors: bool = False) -> Iterator[str]:
    """The lines a task printed (its stdout/stderr events) from Airflow 3's JSON-lines task log; with
    `errors`, also the errors Airflow logged for it (the exception that failed it)."""
    if not log.exists():
        return
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("logger") in ("task.stdout", "task.stderr"):
            yield str(event.get("event", ""))
        elif errors and event.get("level") in ("error", "critical"):
            yield str(event.get("event", ""))
            for detail in event.get("error_detail") or []:
                if isinstance(detail, dict) and "exc_type" in detail:
                    yield f"{detail['exc_type']}: {detail.get('exc_value', '')}"


def processes_in_sessions(sessions) -> list[int]:
    """Pids of the live processes (not zombies, not this one) whose session id is in `sessions`
    (Linux /proc; elsewhere none are found)."""
    sessions = set(sessions)
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, session = fields[0], int(fields[3])
        if session in sessions and state != "Z" and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG), so a killed demo or test does not leave Airflow running."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def _signals_ignored():
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def terminate_on_sigterm():
    """Turns SIGTERM into KeyboardInterrupt while inside, so `finally`/`with` blocks clean up on either."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
