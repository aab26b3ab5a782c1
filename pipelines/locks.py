"""One writer per folder: the lock every command that writes a run folder or an OUT folder holds.

Two `train` processes into one `--workdir` would interleave history.csv and overwrite each other's
checkpoints; two `preprocess` jobs into one OUT would race on its shards. So the writing commands
(train, evaluate run, preprocess, synth, evolve, search, attention-search; report and export
into their output folders) hold `FOLDER/.assemblenet.lock` while they run, and a second writer is
refused at start with a one-line `FolderBusy` naming the holder (pid, host, command, since when).

The lock is an `fcntl.flock` on that file. The kernel drops it when its holder's file descriptor
closes, which happens whenever the process ends, however it ends (SIGKILL, OOM, a lost machine's
reboot), so the lock of a killed process is never stuck: the next writer takes it over. A writer
that finishes removes the file; a killed one leaves it behind, holding its description, and only the
flock counts. The same mechanism
guards an evolution child while it trains (`pipelines.evolve`, `OUT/children/<id>/.training.lock`).

A thread that already holds a folder's lock may take it again (nested calls, e.g. a library function
that locks a folder called by a command that already locks it); the lock is released when the
outermost holder leaves. flock locks are per open file, so without this a process would refuse itself.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipelines import rundir
from pipelines.checks import UserError

LOCK_FILE = rundir.LOCK  # the same name in every folder a command writes

# Lock files this thread holds -> how many nested holders. Per thread: two threads of one process
# writing the same folder are two writers.
_LOCAL = threading.local()


def _held() -> dict[str, int]:
    if not hasattr(_LOCAL, "held"):
        _LOCAL.held = {}
    return _LOCAL.held


class FolderBusy(UserError):
    """Another live process writes the folder."""


def holder_info() -> dict[str, Any]:
    """What a lock file records of its holder: pid, host, command line, start time (UTC)."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}


def read_holder(path: str | Path) -> dict[str, Any] | None:
    """The holder recorded in lock file `path` (the last one, if it is no longer held), or None."""
    try:
        return _parse(Path(path).read_bytes())
    except OSError:
        return None


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data.decode(errors="replace") or "null")
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def describe(holder: dict[str, Any] | None) -> str:
    """'process 1234 on host h (`assemblenet train ...`, since 2026-01-01 10:00:00 UTC)'."""
    if not holder:
        return "another process"
    return (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(`{holder.get('command', '?')}`, since {holder.get('since', '?')})")


@contextlib.contextmanager
def hold(path: str | Path, busy: Callable[[dict[str, Any] | None], Exception]) -> Iterator[None]:
    """Holds the flock of lock file `path` (created if missing) for the block, recording this process
    in it; raises `busy(holder)` at once, without waiting, when another live process holds it."""
    path = Path(path)
    key, held = str(path.resolve()), _held()
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    fd = _open_locked(path, busy)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_info()) + "\n").encode(), 0)
        held[key] = 1
        try:
            yield
        finally:
            del held[key]
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still held: a finished writer leaves no file behind
    finally:
        os.close(fd)  # releases the flock


def _open_locked(path: Path, busy: Callable[[dict[str, Any] | None], Exception]) -> int:
    """A descriptor of `path` holding its flock. A holder unlinks the file as it leaves, so a file
    opened just before that is no longer `path`: lock again whatever `path` is now."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse(os.pread(fd, 4096, 0))
            os.close(fd)
            raise busy(holder) from None
        opened = os.fstat(fd)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            return fd
        os.close(fd)


@contextlib.contextmanager
def writer_lock(folder: str | Path, what: str = "folder") -> Iterator[None]:
    """Holds FOLDER/.assemblenet.lock (creating the folder) while a command writes `folder`."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE

    def busy(holder):
        pid = holder.get("pid") if holder else None
        stop = f"stop it (kill {pid})" if pid else "stop it"
        return FolderBusy(f"{folder}: this {what} is being written by {describe(holder)}; wait for it to "
                          f"finish or {stop}, or use another folder")

    try:
        with hold(path, busy):
            yield
    finally:
        if created:  # a command refused before it wrote anything leaves no folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def writes(param: str, what: str) -> Callable:
    """Decorates a function that writes the folder its argument `param` names: the call holds that
    folder's `writer_lock` (a folder named by a URL, gs://..., is not locked: flock is local)."""
    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def call(*args, **kwargs):
            folder = signature.bind(*args, **kwargs).arguments[param]
            if "://" in str(folder):
                return function(*args, **kwargs)
            with writer_lock(folder, what):
                return function(*args, **kwargs)
        return call
    return decorate
