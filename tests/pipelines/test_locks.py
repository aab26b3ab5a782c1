"""One writer per folder: a second writer is refused naming the holder; a killed holder's lock is not stuck."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli

ROOT = Path(__file__).resolve().parents[2]

_HOLDER = """
import sys, time
from pipelines.locks import writer_lock
with writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


@pytest.fixture
def holder(tmp_path):
    """Starts a process that holds the writer lock of a folder; yields (folder, process)."""
    started = []

    def start(folder: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path, holder):
    from pipelines.locks import LOCK_FILE, FolderBusy, read_holder, writer_lock

    folder = tmp_path / "run"
    process = holder(folder)
    recorded = read_holder(folder / LOCK_FILE)
    assert recorded["pid"] == process.pid and recorded["host"] == socket.gethostname()
    assert recorded["command"] == "-c " + str(folder)  # python -c: sys.argv is ['-c', folder]
    with pytest.raises(FolderBusy, match=rf"{folder}: this folder is being written by process {process.pid} "
                                         rf"on host {socket.gethostname()} \(`-c {folder}`, since 20\d\d-.* "
                                         rf"UTC\); wait for it to finish or stop it \(kill {process.pid}\)"):
        with writer_lock(folder):
            pass
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with writer_lock(folder):  # the kernel dropped the dead holder's flock: taken over at once
        assert read_holder(folder / LOCK_FILE)["pid"] == os.getpid()
        with writer_lock(folder):  # a holder may take its own lock again (nested calls)
            pass
        assert read_holder(folder / LOCK_FILE)["pid"] == os.getpid()
    assert not (folder / LOCK_FILE).exists()  # a writer that finishes leaves no lock file
    fresh = tmp_path / "fresh" / "out"
    with writer_lock(fresh):
        assert fresh.is_dir()
    assert not fresh.exists()  # nor the empty folder it made (a command refused before writing)
    # released when the outermost holder leaves: another process takes it
    second = holder(folder)
    assert read_holder(folder / LOCK_FILE)["pid"] == second.pid


def test_train_into_a_busy_workdir_is_refused_before_writing_anything(tmp_path, holder):
    from pipelines.locks import FolderBusy
    from pipelines.train import TrainConfig, train

    workdir = tmp_path / "run"
    process = holder(workdir)
    with pytest.raises(FolderBusy, match=f"being written by process {process.pid} "):
        train(config=TrainConfig(steps=2, steps_per_epoch=1), data=str(tmp_path / "no-records"), workdir=workdir)
    assert sorted(p.name for p in workdir.iterdir()) == [".assemblenet.lock"]


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    run = tmp_path / "evaluated"
    run.mkdir()
    (run / "model.keras").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"dataset": "charades"}))
    data = str(tmp_path / "records")
    return {
        "train": ["train", "--structure", "tiny", "--data", data, "--workdir", "{folder}"],
        "preprocess": ["preprocess", "--dataset", "toyota", "--videos", str(tmp_path), "--out", "{folder}"],
        "synth": ["synth", "--format", "toyota", "--videos", "1", "--out", "{folder}"],
        "evolve": ["evolve", "--data", data, "--out", "{folder}"],
        "search": ["search", "--structure", "tiny", "--data", data, "--out", "{folder}"],
        "attention-search": ["attention-search", "--out", "{folder}"],
        "evaluate run": ["evaluate", "run", str(run), "--data", data],
        "report": ["report", str(run), "--out", "{folder}"],
        "export": ["export", str(run), "--out", "{folder}"],
    }


@pytest.mark.parametrize("command", ["train", "preprocess", "synth", "evolve", "search", "attention-search",
                                     "evaluate run", "report", "export"])
def test_every_writing_command_refuses_a_second_writer_in_one_line(tmp_path, holder, capsys, command):
    argv = _commands(tmp_path)[command]
    folder = tmp_path / "evaluated" if command == "evaluate run" else tmp_path / "out"
    process = holder(folder)
    before = sorted(p.name for p in folder.iterdir())
    assert cli.main([a.replace("{folder}", str(folder)) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"assemblenet {command.split()[0]}: error: {folder}: ")
    assert f"is being written by process {process.pid} on host {socket.gethostname()}" in err
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


def test_another_thread_of_the_same_process_is_a_second_writer(tmp_path):
    import threading

    from pipelines.locks import FolderBusy, writer_lock

    errors = []

    def second():
        try:
            with writer_lock(tmp_path / "out"):
                pass
        except FolderBusy as error:
            errors.append(str(error))

    with writer_lock(tmp_path / "out"):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"being written by process {os.getpid()} " in errors[0]
