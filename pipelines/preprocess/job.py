"""The job: `run_preprocess` (checks, resume, the Beam run, dead letters, summary.json) and its messages."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import re
import time
from pathlib import Path

from pipelines import configs, locks
from pipelines.preprocess.config import (
    CLASSES_FILE,
    MANIFEST,
    MANIFEST_VERSION,
    NAMESPACE,
    SETTINGS_KEYS,
    SHARD_PREFIX,
    STAGING,
    VIDEOS_PER_SHARD,
    PreprocessConfig,
    VideoTask,
    record_key,
    settings_of,
)
from pipelines.preprocess.elements import shard_index
from pipelines.preprocess.files import _delete, _join, _json_bytes, _list, _read_text, _write_atomic
from pipelines.preprocess.inputs import charades_tasks, toyota_inputs
from pipelines.preprocess.shards import existing_records
from pipelines.preprocess.staging import list_staged, staged_path
from pipelines.preprocess.transforms import (
    StagingProgress,
    build_pipeline,
    flow_summary,
    is_local,
    make_pipeline,
    segment_summary,
    write_dead_letters,
)
from preprocessing.records import SUMMARY as RECORDS_SUMMARY


@locks.writes("out", "records folder")
def run_preprocess(*, dataset: str, videos: str, out: str, annotations: str | None = None,
                   classes: str | None = None, split: str | None = None, fps: float = PreprocessConfig.fps,
                   size: int = PreprocessConfig.size, flow: str = PreprocessConfig.flow,
                   segmenter: str = PreprocessConfig.segmenter, num_shards: int | None = None,
                   max_seconds: float | None = None, runner: str | None = None,
                   pipeline_args: list[str] | None = None, progress: bool = True, workers: int = 1,
                   replace: bool = False, compile_cache: str | None = None,
                   flow_batch: int = PreprocessConfig.flow_batch,
                   segment_batch: int = PreprocessConfig.segment_batch,
                   decode_threads: int = PreprocessConfig.decode_threads) -> dict:
    """Runs the Beam job and returns the summary it writes to `out/summary.json`. The settings' defaults,
    choices and ranges are PreprocessConfig's.

    Charades: `annotations` is the split's CSV (Charades_v1_train.csv or _test.csv), `classes`
    the classes file (default: Charades_v1_classes.txt next to the CSV, else the official 157).
    Toyota: labels come from the file names, `split` is one of preprocessing.toyota.SPLITS (None: all);
    the cross-view splits use the 19 cross-view classes. `workers`: local worker processes.
    `replace`: make `out` match this command (see pipelines/preprocess/__init__.py) instead of refusing.
    `compile_cache`: with flow="tensor", the persistent XLA cache folder (None: $ASSEMBLENET_COMPILE_CACHE or
    ~/.cache/assemblenet/xla, resolved by each worker; "none": off).
    `flow_batch`, `segment_batch`: pairs per TV-L1 call and frames per segmentation call, each batch drawn
    from several videos (pipelines/preprocess/batching.py); `decode_threads`: videos each worker decodes at
    once. The records do not depend on them, but for the last-bit rounding of another compiled batch shape
    on some devices (pipelines/preprocess/batching.py).
    Raises EmptyInputError when there is nothing to process, and ValueError when no video was
    written (after writing dead_letter.jsonl and summary.json).
    """
    from preprocessing import charades, toyota

    # The settings, before the inputs are read (nan and inf included): PreprocessConfig's choices and ranges.
    configs.check_values(PreprocessConfig, {"dataset": dataset, "fps": fps, "size": size, "flow": flow,
                                            "segmenter": segmenter, "max_seconds": max_seconds,
                                            "flow_batch": flow_batch, "segment_batch": segment_batch,
                                            "decode_threads": decode_threads})
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and not is_local(runner):
        raise ValueError(f"--workers is for the local runner; {runner} takes its own worker options after `--`")
    listing_dead: list[dict] = []
    if dataset == "charades":
        if not annotations:
            raise ValueError("Charades needs --annotations (Charades_v1_train.csv or Charades_v1_test.csv)")
        if split:
            raise ValueError("--split is for Toyota; for Charades pass the split's CSV as --annotations")
        if classes is None and (Path(annotations).parent / charades.CLASSES_FILE).exists():
            classes = str(Path(annotations).parent / charades.CLASSES_FILE)
        class_names = tuple(name for _, name in charades.read_classes(classes)) if classes else ()
        num_classes = len(class_names) or charades.NUM_CLASSES
        tasks = charades_tasks(videos, annotations, num_classes)
    else:
        class_names = toyota.protocol_classes(split)
        num_classes = len(class_names)
        tasks, listing_dead = toyota_inputs(videos, split)
    local = is_local(runner)
    if "://" not in out:
        Path(out).mkdir(parents=True, exist_ok=True)
    staging = _join(out, STAGING)
    config = PreprocessConfig(dataset=dataset, num_classes=num_classes, fps=fps, size=size, flow=flow,
                              segmenter=segmenter, videos_dir=str(videos), max_seconds=max_seconds,
                              class_names=class_names, staging=staging, compile_cache=compile_cache or "",
                              flow_batch=flow_batch, segment_batch=segment_batch, decode_threads=decode_threads)
    settings = settings_of(config)
    wanted = {t.id for t in tasks} | {row["id"] for row in listing_dead}

    _delete(_list(_join(out, "*.tmp-*")))  # half-written files of a killed run (never read)
    existing_shards, entries = existing_records(out)
    manifest = json.loads(_read_text(_join(out, MANIFEST)) or "null")
    problem = _output_problem(out, manifest, settings, existing_shards, set(entries) - wanted)
    removed: set[str] = set()
    if problem and not replace:
        raise ValueError(f"{problem}; pass --replace to make {out} match this command (its records are "
                         "deleted or redone), or choose another --out")
    if problem and (manifest is None or manifest.get("version") != MANIFEST_VERSION
                    or manifest.get("settings") != settings):
        clear_output(out)
        existing_shards, entries, manifest = None, {}, None
    elif problem:
        removed = set(entries) - wanted
    shards = ((manifest or {}).get("num_shards") or existing_shards or num_shards
              or max(1, math.ceil(len(wanted) / VIDEOS_PER_SHARD)))
    _write_atomic(_join(out, MANIFEST), _json_bytes({"version": MANIFEST_VERSION, "settings": settings,
                                                      "num_shards": shards}))
    if class_names:
        _write_atomic(_join(out, CLASSES_FILE), _json_bytes(list(class_names)))

    keys = {t.id: record_key(config, t) for t in tasks}
    done = {i for i, key in keys.items() if entries.get(i, {}).get("key") == key}
    staged_records, staged_dead = list_staged(staging)
    staged = {i for i, key in staged_records if keys.get(i) == key} - done
    dead_before = {i for i, key in staged_dead if keys.get(i) == key}
    todo = [t for t in tasks if t.id not in done and t.id not in staged and t.id not in dead_before]
    # Records made from another annotation row leave their shard; the redone record (if the video
    # still decodes) takes their place, so a stale label never survives a failed redo.
    outdated = {i for i in keys if i in entries and i not in done}
    removed_or_outdated = removed | outdated
    rewrite = {shard_index(i, shards) for i in removed_or_outdated}
    metrics = {}
    started = time.perf_counter()
    if todo or staged or rewrite:
        pipeline = make_pipeline(runner, pipeline_args, workers)
        build_pipeline(pipeline, todo, config, out, shards, staged=sorted(staged), keys=keys,
                       rewrite=rewrite, remove=frozenset(removed_or_outdated))
        watch = StagingProgress(staging, {t.id: keys[t.id] for t in todo}) if progress and local and todo \
            else contextlib.nullcontext()
        with watch:
            try:
                result = pipeline.run()
                result.wait_until_finish()
            except Exception as error:  # the runner wraps what failed in a worker: raise that instead
                raise job_error(error, staging) from None
        metrics = _counters(result)
    _, staged_dead = list_staged(staging)
    dead_rows = list(listing_dead)
    for video_id, key in sorted(staged_dead):
        if keys.get(video_id) == key:
            dead_rows.append(json.loads(_read_text(staged_path(staging, video_id, key, dead=True))))
    write_dead_letters(out, dead_rows)
    this_run = {"skipped_already_written": len(done), "resumed_from_staging": len(staged) + len(dead_before),
                "processed": len(todo), "removed_stale": sorted(removed), "metrics": metrics,
                "seconds": round(time.perf_counter() - started, 3)}
    if flow_stage := flow_summary(metrics):
        this_run["flow"] = flow_stage
    if segment_stage := segment_summary(metrics):
        this_run["segment"] = segment_stage
    summary = write_summary(out, tasks, config, shards, listing_dead=listing_dead, this_run=this_run, keys=keys)
    clear_staging(staging)
    if summary["written"] == 0:
        raise ValueError(no_video_message(out, videos, dead_rows))
    return summary


_OS_ERROR = re.compile(r"\[Errno (\d+)\] ([^:\[\]]+?)(?:: '([^']*)')?(?: \[while running|$)", re.MULTILINE)


def job_error(error: Exception, staging: str) -> Exception:
    """What to raise for a failed job: the OSError a worker hit (a full disk, a folder it cannot write),
    as one line naming its path and saying that the finished videos are kept, or the ValueError it
    raised, rather than the runner's wrapper (a RuntimeError holding the worker's traceback). Any
    other failure is returned unchanged.

    The in-process runner chains the worker's exception; worker processes send only its text."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, (OSError, ValueError)):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ValueError) and cause is not error:
        return cause  # a setting a worker refused (e.g. the segmenter): its own one-line message
    if isinstance(cause, OSError) and cause.errno is not None:
        number, reason, path = cause.errno, cause.strerror or str(cause), cause.filename
    elif match := _OS_ERROR.search(str(error)):
        number, reason, path = int(match.group(1)), match.group(2).strip(), match.group(3)
    else:
        return error
    records, dead = list_staged(staging)
    kept = (f"; the {len(records) + len(dead)} video(s) finished so far are kept in {staging} and the "
            "shards already written are untouched: run the same command again to resume")
    return OSError(number, f"{reason}{kept}", path or staging)


def _output_problem(out: str, manifest: dict | None, settings: dict, existing_shards: int | None,
                    stale: set[str]) -> str | None:
    """Why `out` cannot simply be continued with these settings, or None."""
    if manifest is None:
        return (f"{out} holds records without {MANIFEST} (made by an older version): their settings are "
                "unknown") if existing_shards else None
    if manifest.get("version") != MANIFEST_VERSION:
        return f"{out}/{MANIFEST}: version {manifest.get('version')}, this toolkit writes {MANIFEST_VERSION}"
    before = manifest.get("settings", {})
    changed = [f"{k}={before.get(k)!r} (now {settings[k]!r})" for k in SETTINGS_KEYS if before.get(k) != settings[k]]
    if changed:
        return f"{out} holds records made with other settings: {', '.join(changed)}"
    if stale:
        examples = ", ".join(sorted(stale)[:3])
        return (f"{out} holds {len(stale)} record(s) of videos that are not in this input (e.g. {examples}); "
                "another split or annotation file into the same folder?")
    return None


def clear_output(out: str) -> None:
    """Deletes what the job writes in `out` (shards and their lists, manifest, summaries, staging)."""
    names = [f"{SHARD_PREFIX}-*-of-*.tfrecord", f"{SHARD_PREFIX}-*-of-*.ids", f"{SHARD_PREFIX}-*-of-*.records.json",
             MANIFEST, CLASSES_FILE, RECORDS_SUMMARY, "dead_letter.jsonl"]
    _delete([path for name in names for path in _list(_join(out, name))])
    clear_staging(_join(out, STAGING))


def clear_staging(staging: str) -> None:
    _delete(_list(_join(staging, "*")))
    if "://" not in staging and os.path.isdir(staging):
        os.rmdir(staging)


def no_video_message(out: str, videos: str, dead_rows: list[dict]) -> str:
    reasons = collections.Counter(row["reason"].split(":", 1)[0] for row in dead_rows)
    listed = ", ".join(f"{reason} x{count}" for reason, count in reasons.most_common())
    hint = f"; is --videos {videos} right?" if set(reasons) == {"missing"} else ""
    return (f"{out}: no video was written: all {len(dead_rows)} failed ({listed}); "
            f"reasons in {_join(out, 'dead_letter.jsonl')}{hint}")


def _counters(result) -> dict:
    from apache_beam.metrics.metric import MetricsFilter

    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except Exception:  # some runners do not report metrics
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(counter.committed or 0)
    return dict(sorted(totals.items()))


def write_summary(out: str, tasks: list[VideoTask], config: PreprocessConfig, num_shards: int, *,
                  listing_dead: list[dict] = (), this_run: dict | None = None,
                  keys: dict[str, str] | None = None) -> dict:
    """Counts from the files themselves, so the summary describes the records truly.

    Everything but `this_run` depends only on the output folder's content, so it is the same
    however many runs (or kills) it took to make it.
    """
    wanted = {t.id for t in tasks} | {row["id"] for row in listing_dead}
    _, entries = existing_records(out)
    text = _read_text(_join(out, "dead_letter.jsonl")) or ""
    dead = [json.loads(line) for line in text.splitlines() if line.strip()]
    dead_ids = {row["id"] for row in dead} & wanted
    written = set(entries) & wanted
    if keys is not None:  # only records made with these settings from these rows count as written
        written = {i for i in written if entries[i].get("key") == keys.get(i)}
    partial = sorted(i for i in written if entries[i].get("partial"))
    summary = {
        "input": len(wanted),
        "written": len(written),
        "dead_lettered": len(dead_ids),
        "partial": len(partial),
        "partial_videos": partial,
        "unaccounted": sorted(wanted - written - dead_ids),
        "num_shards": num_shards,
        **{key: value for key, value in settings_of(config).items() if key != "class_names"},
        "class_names": list(config.class_names),
        "frames_written": sum(entries[i].get("frames", 0) for i in written),
        "this_run": this_run or {},
    }
    _write_atomic(_join(out, RECORDS_SUMMARY), json.dumps(summary, indent=1).encode())
    return summary


def summary_ok(summary: dict) -> bool:
    return summary["input"] == summary["written"] + summary["dead_lettered"] and not summary["unaccounted"]
