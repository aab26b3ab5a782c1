"""Per-element logic (plain functions, tested without Beam): one video to one record, and its shard."""

from __future__ import annotations

import hashlib
import os

from pipelines.preprocess.config import SHARD_PREFIX, PreprocessConfig, VideoTask
from pipelines.preprocess.files import _local_copy


def encode_video(task: VideoTask, config: PreprocessConfig, segmenter=None,
                 flow_stats=None) -> tuple[bytes, dict]:
    """One video -> (serialized SequenceExample, info). Raises on any bad input.

    info: `frames` stored, `source_frames` decoded, `declared_frames` (the container's count) and
    `partial` (decoding stopped at a corruption well before the declared end; frames were lost).
    `flow_stats`: a `preprocessing.flow.FlowStats` the flow's pairs, time and compilations are added to.
    The job itself batches the flow and the masks across videos (pipelines/preprocess/batching.py).
    """
    from preprocessing import flow as flow_lib

    video = decode_task(task, config)
    flow = None
    if config.flow != "none":
        flow = flow_lib.compute_flow(video.frames, method=config.flow, stats=flow_stats, quantized=True)
    objects = segmenter(video.frames, video.times, task.id) if segmenter is not None else None
    return encode_decoded(task, config, video, flow, objects)


def decode_task(task: VideoTask, config: PreprocessConfig):
    """The video of `task` decoded at the job's fps and size (a `preprocessing.video.DecodedVideo`);
    raises on a bad id or an undecodable file."""
    from preprocessing.schema import validate_video_id
    from preprocessing.video import decode_video

    validate_video_id(task.id)
    temporary, local = _local_copy(task.path)
    try:
        return decode_video(local, fps=config.fps, shorter_side=config.size, max_seconds=config.max_seconds)
    finally:
        if temporary:
            os.unlink(temporary)


def encode_decoded(task: VideoTask, config: PreprocessConfig, video, flow, objects) -> tuple[bytes, dict]:
    """A decoded video, its quantised flow (uint8 (T-1, H, W, 2) or None) and class maps (uint8 (T, H, W)
    or None) -> (serialized SequenceExample, info) as `encode_video`."""
    from preprocessing.schema import encode_example

    ends = [video.duration if end < 0 else end for end in task.label_end]
    data = encode_example(video_id=task.id, dataset=config.dataset, fps=video.fps, rgb=video.frames,
                          num_classes=config.num_classes, labels=task.labels, label_start=task.label_start,
                          label_end=ends, flow=flow, objects=objects, flow_method=config.flow,
                          segmenter=config.segmenter)
    data = canonical_example(data)
    info = {"frames": len(video.frames), "source_frames": video.source_frames,
            "declared_frames": video.declared_frames, "partial": video.partial}
    return data, info


def canonical_example(data: bytes) -> bytes:
    """The same SequenceExample serialized deterministically (context map entries sorted by key).

    Protobuf writes map entries in an order that differs between processes, so the same video
    encoded by two worker processes (or by a run and its resumption) would give different bytes.
    """
    from preprocessing import schema

    if hasattr(schema, "messages"):  # the TensorFlow-free protos, where schema.py has them
        message = schema.messages()["SequenceExample"]
    else:
        from tensorflow.core.example.example_pb2 import SequenceExample as message
    return message.FromString(data).SerializeToString(deterministic=True)


def process_video(task: VideoTask, config: PreprocessConfig, segmenter=None) -> tuple[bytes, int]:
    """One video -> (serialized SequenceExample, number of frames). Raises on any bad input."""
    data, info = encode_video(task, config, segmenter)
    return data, info["frames"]


def failure_reason(error: BaseException) -> str:
    """`<tag>: <message>`; the tag is DecodeError's reason or the exception type."""
    tag = getattr(error, "reason", None) or type(error).__name__
    message = str(error)
    return message if message.startswith(f"{tag}:") else f"{tag}: {message}"


def shard_index(video_id: str, num_shards: int) -> int:
    """Deterministic shard of a video (md5, not Python's salted hash)."""
    return int(hashlib.md5(video_id.encode()).hexdigest(), 16) % num_shards


def shard_name(index: int, num_shards: int) -> str:
    return f"{SHARD_PREFIX}-{index:05d}-of-{num_shards:05d}.tfrecord"
