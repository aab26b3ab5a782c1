"""Shards: the staged records merged into `data-0000k-of-0000n.tfrecord` (+ `.ids`, `.records.json`), and what
an output folder already holds."""

from __future__ import annotations

import json
from collections.abc import Iterable

from pipelines.preprocess.config import _SHARD_NAME, SHARD_PREFIX
from pipelines.preprocess.elements import shard_name
from pipelines.preprocess.files import _join, _json_bytes, _list, _read_bytes, _read_text, _write_atomic
from pipelines.preprocess.staging import read_staged_record
from preprocessing.loader import decode_records, encode_records


def _sidecar(out: str, index: int, num_shards: int, suffix: str) -> str:
    return _join(out, shard_name(index, num_shards))[:-len(".tfrecord")] + suffix


def write_shard(out: str, index: int, num_shards: int, new: Iterable[str], staging: str,
                keys: dict[str, str], remove: Iterable[str] = ()) -> list[str]:
    """Merges the staged records of the ids `new` into shard `index`; drops the ids `remove`.

    Records are sorted by id; a new record replaces an old one with the same id, so a re-run never
    duplicates. The shard, then its `.ids` list, then its `.records.json` (key and info per record)
    are each replaced atomically: a kill in between leaves ids whose `.records.json` entry does not
    match, which the next run merges again from the staging folder.
    """
    from preprocessing.schema import read_video_id

    path = _join(out, shard_name(index, num_shards))
    records: dict[str, bytes] = {}
    for data in decode_records(_read_bytes(path) or b"", path):
        records[read_video_id(data)] = data
    entries = json.loads(_read_text(_sidecar(out, index, num_shards, ".records.json")) or "{}")
    for video_id in set(remove):
        records.pop(video_id, None)
        entries.pop(video_id, None)
    for video_id in set(new) - {None}:
        data, info = read_staged_record(staging, video_id, keys[video_id])
        records[video_id] = data
        entries[video_id] = dict(info, key=keys[video_id])
    ids = sorted(records)
    entries = {i: entries[i] for i in ids if i in entries}
    _write_atomic(path, encode_records(records[i] for i in ids))
    _write_atomic(_sidecar(out, index, num_shards, ".ids"), "".join(f"{i}\n" for i in ids).encode())
    _write_atomic(_sidecar(out, index, num_shards, ".records.json"), _json_bytes(entries))
    return ids


def existing_output(out: str) -> tuple[int | None, set[str]]:
    """(num_shards of the shards in `out`, or None; ids they hold, from their .ids lists)."""
    num_shards, entries = existing_records(out)
    return num_shards, set(entries)


def existing_records(out: str) -> tuple[int | None, dict[str, dict]]:
    """(num_shards of the shards in `out`, or None; {id: its `.records.json` entry, {} if none})."""
    counts, entries = set(), {}
    for path in _list(_join(out, f"{SHARD_PREFIX}-*-of-*.tfrecord")):
        match = _SHARD_NAME.match(path.rsplit("/", 1)[-1])
        if not match:
            continue
        counts.add(int(match.group(2)))
        base = path[:-len(".tfrecord")]
        known = json.loads(_read_text(base + ".records.json") or "{}")
        for line in (_read_text(base + ".ids") or "").splitlines():
            if line:
                entries[line] = known.get(line, {})
    if len(counts) > 1:
        raise ValueError(f"{out} holds shards of different counts {sorted(counts)}; use a fresh directory")
    return (counts.pop() if counts else None), entries
