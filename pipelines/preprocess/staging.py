"""Staging: one file per finished video (`OUT/_staging/<id>.<key>.rec|.dead`), so a killed job keeps its work."""

from __future__ import annotations

import json

from pipelines.preprocess.files import _join, _json_bytes, _list, _read_bytes, _write_atomic
from preprocessing.loader import decode_records, encode_records


def staged_path(staging: str, video_id: str, key: str, dead: bool = False) -> str:
    return _join(staging, f"{video_id}.{key}.{'dead' if dead else 'rec'}")


def stage_record(staging: str, video_id: str, key: str, data: bytes, info: dict) -> None:
    _write_atomic(staged_path(staging, video_id, key), encode_records([_json_bytes(info), data]))


def stage_dead_letter(staging: str, key: str, row: dict) -> None:
    _write_atomic(staged_path(staging, row["id"], key, dead=True), _json_bytes(row))


def read_staged_record(staging: str, video_id: str, key: str) -> tuple[bytes, dict]:
    path = staged_path(staging, video_id, key)
    info, data = decode_records(_read_bytes(path) or b"", path)
    return data, json.loads(info)


def list_staged(staging: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """({(id, key)} of staged records, {(id, key)} of staged dead letters); temporary files ignored."""
    records, dead = set(), set()
    for path in _list(_join(staging, "*")):
        name = path.rsplit("/", 1)[-1]
        stem, _, kind = name.rpartition(".")
        video_id, _, key = stem.rpartition(".")
        if kind in ("rec", "dead") and video_id:
            (records if kind == "rec" else dead).add((video_id, key))
    return records, dead
