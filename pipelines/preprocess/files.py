"""Files read and written through Beam's FileSystems, so that `out` and `videos` may be local or gs:// paths
(videos are copied to a local temporary file for OpenCV); writes are atomic."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}" if "://" in directory else str(Path(directory) / name)

def _local_copy(path: str):
    """OpenCV reads local files only: remote (gs://...) videos are copied to a temporary file."""
    if "://" not in path:
        return None, path
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None, path + ".missing"  # decode_video reports it as missing
    handle = tempfile.NamedTemporaryFile(suffix=os.path.splitext(path)[1], delete=False)
    with FileSystems.open(path) as source, handle:
        while chunk := source.read(1 << 22):
            handle.write(chunk)
    return handle.name, handle.name

def _read_bytes(path: str) -> bytes | None:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return f.read()


def _read_text(path: str) -> str | None:
    data = _read_bytes(path)
    return None if data is None else data.decode()


def _write_atomic(path: str, data: bytes) -> None:
    """Write then rename, so a reader (or a re-run after a kill) sees the old file or the new one.

    A failed local write (a full disk) removes its temporary file and raises an OSError naming `path`
    (the bare error of `write` names no file)."""
    if "://" not in path:
        temporary = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with open(temporary, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise OSError(error.errno, error.strerror or str(error), path) from None
        return
    from apache_beam.io.filesystems import FileSystems

    temporary = f"{path}.tmp-{os.getpid()}"
    with FileSystems.create(temporary) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def _delete(paths: list[str]) -> None:
    from apache_beam.io.filesystems import FileSystems

    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)


def _list(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # no match / missing directory
        return []


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()
