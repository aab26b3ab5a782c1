"""Evaluation data for the evolution's fitness, never the child's own training clips.

AssembleNet §3.2 measures a child's fitness on "the validation subset". A search therefore either
gets evaluation TFRecords whose videos are not in its training TFRecords (`check_distinct`), or
splits its training TFRecords by video into a proxy-training part and a held-out part
(`holdout_split`). The split is deterministic: a video is held out when the first 8 hex digits of
md5(video id) / 16⁸ < fraction, so it depends on the id only (not on shard layout or order), and the
same data always gives the same split.

    OUT/holdout/train/data-*.tfrecord     the training videos not held out (one file per source shard)
    OUT/holdout/heldout/data-*.tfrecord   the held-out videos
    OUT/holdout/split.json                source, fraction, and the ids of both parts
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pipelines.rundir import read_json
from preprocessing.records import SUMMARY as RECORDS_SUMMARY

SPLIT = "split.json"


def held_out(video_id: str, fraction: float) -> bool:
    """Whether `video_id` belongs to the held-out part (by the hash of the id alone)."""
    return int(hashlib.md5(video_id.encode()).hexdigest()[:8], 16) / 16**8 < fraction


def _ids_and_records(path: str) -> list[tuple[str, bytes]]:
    from pipelines.preprocess import decode_records
    from preprocessing.schema import read_video_id

    records = decode_records(Path(path).read_bytes(), path)
    return [(read_video_id(r), r) for r in records]


def video_ids(data: str) -> dict[str, list[str]]:
    """{file: its video ids} of the TFRecords of `data`, from the shards' `.ids` lists when present."""
    from pipelines.train import tfrecord_files

    out = {}
    for f in tfrecord_files(data):
        sidecar = Path(f[:-len(".tfrecord")] + ".ids") if f.endswith(".tfrecord") else None
        if sidecar is not None and sidecar.is_file():
            out[f] = [line for line in sidecar.read_text().splitlines() if line]
        else:
            out[f] = [video_id for video_id, _ in _ids_and_records(f)]
    return out


def check_distinct(data: str, eval_data: str) -> dict[str, Any]:
    """Raises ValueError when `eval_data` shares a file or a video with `data`; else describes both."""
    train, evaluation = video_ids(data), video_ids(eval_data)
    shared_files = sorted(set(map(os.path.realpath, train)) & set(map(os.path.realpath, evaluation)))
    if shared_files:
        raise ValueError(f"--eval-data {eval_data}: shares {len(shared_files)} TFRecord file(s) with --data {data} "
                         f"(e.g. {shared_files[0]}); fitness must be measured on videos the children do not "
                         "train on (AssembleNet §3.2). Leave --eval-data out to hold out part of --data.")
    train_ids = {i for ids in train.values() for i in ids}
    eval_ids = {i for ids in evaluation.values() for i in ids}
    shared = sorted(train_ids & eval_ids)
    if shared:
        raise ValueError(f"--eval-data {eval_data}: {len(shared)} of its videos are also in --data {data} "
                         f"(e.g. {shared[0]!r}); fitness must be measured on videos the children do not train on "
                         "(AssembleNet §3.2). Leave --eval-data out to hold out part of --data.")
    return {"mode": "eval-data", "train": data, "eval": eval_data, "train_videos": len(train_ids),
            "eval_videos": len(eval_ids)}


def holdout_split(data: str, out: str | Path, fraction: float) -> dict[str, Any]:
    """Splits the TFRecords of `data` by video into OUT/train and OUT/heldout (idempotent).

    Returns (and writes to OUT/split.json) {"mode": "held-out", "source", "fraction", "train",
    "eval", "train_videos", "eval_videos", "heldout_ids"}. An existing split of the same source and
    fraction is reused; another one is refused (a search must not change its evaluation data)."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction={fraction}: expected a number in (0, 1)")
    out = Path(out)
    record = out / SPLIT
    if record.is_file():
        split = read_json(record)
        if split["source"] != str(data) or split["fraction"] != fraction:
            raise ValueError(f"{record}: this search held out {split['fraction']} of {split['source']}, not "
                             f"{fraction} of {data}; use a new --out or the same data")
        # The same folder, preprocessed again with other settings, would leave the children on the old copy.
        from pipelines.checks import check_records, records_settings

        check_records(data, dataset=None, num_classes=None, modalities=(), source="the search",
                      settings=records_settings(split["train"]),
                      settings_from=f"{split['train']}, its copy of --data")
        return split
    from pipelines.preprocess import encode_records
    from pipelines.train import tfrecord_files

    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    parts: dict[str, list[str]] = {"train": [], "heldout": []}
    for f in tfrecord_files(data):
        chosen: dict[str, list[bytes]] = {"train": [], "heldout": []}
        for video_id, serialized in _ids_and_records(f):
            part = "heldout" if held_out(video_id, fraction) else "train"
            chosen[part].append(serialized)
            parts[part].append(video_id)
        for part, records in chosen.items():
            if records:
                (tmp / part).mkdir(parents=True, exist_ok=True)
                (tmp / part / Path(f).name).write_bytes(encode_records(records))
    for part in parts:
        if not parts[part]:
            raise ValueError(f"--data {data}: holding out {fraction} of its {sum(map(len, parts.values()))} "
                             f"videos leaves the {part} part empty; pass --eval-data or change the fraction")
        summary = Path(data if Path(data).is_dir() else Path(data).parent) / RECORDS_SUMMARY
        if summary.is_file():  # the preprocessing settings travel with the records
            settings = read_json(summary)
            (tmp / part / RECORDS_SUMMARY).write_text(json.dumps({**settings, "holdout_part": part}, indent=1))
    split = {"mode": "held-out", "source": str(data), "fraction": fraction, "train": str(out / "train"),
             "eval": str(out / "heldout"), "train_videos": len(parts["train"]),
             "eval_videos": len(parts["heldout"]), "heldout_ids": sorted(parts["heldout"])}
    (tmp / SPLIT).write_text(json.dumps(split, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return split
