"""The Beam preprocessing job: videos (+ annotations) -> TFRecord shards of `preprocessing.schema`.

    videos ──► ListVideos ──► ProcessVideos ──► ShardOfNew ──┐   (each video also staged at once in
                                                              │    OUT/_staging/<id>.<key>.rec|.dead)
    staged by a killed run ──► StagedBefore ─────────────────┴─► AllShardIds ──► WriteShards
                                                                   data-0000k-of-0000n.tfrecord (+ .ids, .records.json)
    then the driver writes dead_letter.jsonl and summary.json, and clears OUT/_staging/

Per video (`process_video`, a plain function): decode at `fps` with the shorter side resized to
`size` (preprocessing.video), TV-L1 flow between consecutive frames (preprocessing.flow, stored
quantised like the Charades release), the segmenter's 151-value class maps (preprocessing.segment),
one SequenceExample. Any failure sends the video to the dead-letter output with its reason, so
`input == written + dead_lettered` always; every outcome is a `Metrics.counter` in the
`assemblenet.preprocess` namespace. A video decoded only up to a corruption is written, counted and
listed in summary.json (`partial`).
Inside the job the flow and the masks run on batches drawn from several videos (`batching`: `--flow-batch`
pairs, `--segment-batch` frames per call, one shape per frame size); at one batch size the bytes do not
depend on how the videos fall into batches;
a failure inside a batch is retried video by video, so only the failing video is dead-lettered.
summary.json's `this_run` says where the flow and segmentation time went (`flow`, `segment`).

What each record was made with (so that an output folder never mixes settings or hides stale labels):
  OUT/manifest.json                   the job's settings (`SETTINGS_KEYS`) and shard count
  OUT/data-0000k-of-0000n.records.json per record of the shard: `key` (hash of the settings and the
                                      annotation row), `annotation` (hash of the row: labels and
                                      intervals), frame counts, `partial`
  OUT/classes.json                    the class names of the label space (what training reads)
Re-running into an existing OUT:
  - same settings, same rows: nothing is redone;
  - a corrected annotation row (another label or interval for the same id): that video is redone;
  - other settings (fps, size, flow, segmenter, dataset, classes, max_seconds), records of videos
    that are no longer in the input, or an OUT made without a manifest: refused with a message, since
    redoing is costly (flow) and could be a typo; `replace=True` (`--replace`) makes OUT match
    this command exactly (records of other settings are deleted and redone, stale ones removed).

A kill loses no finished video: each video is written to `OUT/_staging/<id>.<key>.rec` (or
`.dead`) as soon as it is done, atomically (write, then rename). A re-run takes staged videos of
the same key as done, processes only the rest, then merges everything into the shards. Shards hold
their records sorted by id, and their count is fixed in manifest.json by the first run, so the
output is byte-for-byte the output of one uninterrupted run (summary.json's `this_run` part says
what this particular run did). A video goes to shard `md5(id) mod n`; each shard is replaced
atomically, then its `.ids` and `.records.json`.

Runners: locally Beam's FnApiRunner is used explicitly (the default runner would try to download a
binary, which fails offline), in this process or, with `workers > 1`, in that many local worker
processes (`--direct_running_mode=multi_processing --direct_num_workers=N`); the progress bar is
drawn by this process from the staged files, so it counts every worker's videos.
`runner="DataflowRunner"` plus the usual GCP options (`--project --region --temp_location gs://...
--setup_file ./setup.py`) runs it on Dataflow; `out` and `videos` may then be gs:// paths (files are
read and written through Beam's FileSystems, videos are copied to a local temporary file for
OpenCV). See docs/real_data.md.

The package, one module per part of the job: `config` (settings, VideoTask, record keys), `inputs`
(Charades and Toyota rows as tasks), `files` (Beam FileSystems access, atomic writes), `elements` (one video to
one record, its shard), `batching` (flow and masks batched across videos), `staging`, `shards`, `transforms`
(the DoFn, PTransforms, pipeline and runner) and `job` (`run_preprocess`). Its public names are importable
from `pipelines.preprocess` itself.
"""

import importlib

# The public names and the module of each. They are loaded on first use (PEP 562), so that importing
# `pipelines.preprocess.config` (the settings the CLI makes its flags from) does not load Beam.
_MODULES = {
    "pipelines.preprocess.config": (
        "CLASSES_FILE", "MANIFEST", "MANIFEST_VERSION", "NAMESPACE", "SETTINGS_KEYS", "SHARD_PREFIX", "STAGING",
        "VIDEOS_PER_SHARD", "PreprocessConfig", "VideoTask", "annotation_hash", "record_key", "settings_of"),
    "pipelines.preprocess.elements": (
        "canonical_example", "decode_task", "encode_decoded", "encode_video", "failure_reason", "process_video",
        "shard_index", "shard_name"),
    "pipelines.preprocess.batching": ("VideoBatcher",),
    "pipelines.preprocess.inputs": ("EmptyInputError", "charades_tasks", "toyota_inputs"),
    "pipelines.preprocess.job": (
        "clear_output", "clear_staging", "job_error", "no_video_message", "run_preprocess", "summary_ok",
        "write_summary"),
    "pipelines.preprocess.shards": ("existing_output", "existing_records", "write_shard"),
    "pipelines.preprocess.staging": (
        "list_staged", "read_staged_record", "stage_dead_letter", "stage_record", "staged_path"),
    "pipelines.preprocess.transforms": (
        "FLOW_COUNTERS", "SEGMENT_COUNTERS", "ProcessVideoFn", "ProcessVideos", "StagingProgress", "WriteShards",
        "build_pipeline", "count_flow", "count_segment", "enable_flow_compile_cache", "flow_summary", "is_local",
        "make_pipeline", "segment_summary", "write_dead_letters"),
    # TFRecord framing as bytes: shards go through Beam's FileSystems (pipelines/holdout.py uses them too).
    "preprocessing.loader": ("decode_records", "encode_records"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_HOME, key=str.lower)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))
