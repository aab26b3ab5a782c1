"""The job's inputs: the videos and annotation rows of Charades and Toyota as `VideoTask`s."""

from __future__ import annotations

from pipelines.preprocess.config import VideoTask
from pipelines.preprocess.files import _join


class EmptyInputError(ValueError):
    """The job's inputs hold no video to process (a mistyped path, an empty CSV, nothing in a split)."""


def charades_tasks(videos: str, annotations: str, num_classes: int) -> list[VideoTask]:
    """One task per row of the CSV; `<id>.mp4` is looked up under `videos`, sub-folders included and
    the extension in any case (`<id>.MP4`); a row without a video is dead-lettered as missing."""
    from preprocessing import charades

    rows = charades.read_annotations(annotations, num_classes=num_classes)
    if not rows:
        raise EmptyInputError(f"{annotations}: no video rows (only the header); nothing to preprocess")
    paths = _video_index(videos)
    return [VideoTask(id=v.id, path=paths.get(v.id) or _join(videos, f"{v.id}.mp4"),
                      labels=tuple(a.label for a in v.actions),
                      label_start=tuple(a.start for a in v.actions),
                      label_end=tuple(a.end for a in v.actions))
            for v in rows]


def _video_index(videos: str) -> dict[str, str]:
    """{id: path} of the local videos under `videos` (empty for remote folders: those are joined)."""
    from preprocessing.video import find_videos

    if "://" in videos:
        return {}
    index: dict[str, str] = {}
    for path in find_videos(videos):
        if path.stem in index:
            raise ValueError(f"{path}: video {path.stem} is also at {index[path.stem]}; keep one copy")
        index[path.stem] = str(path)
    if not index:
        raise EmptyInputError(f"--videos {videos}: no .mp4 file (sub-folders and .MP4 included)")
    return index


def toyota_inputs(videos: str, split: str | None) -> tuple[list[VideoTask], list[dict]]:
    """(tasks of the split, dead-letter rows of its clips whose activity is outside the protocol)."""
    from preprocessing import toyota

    clips, rejected = toyota.scan_clips(videos, split)
    if not clips and not rejected:
        found = len(toyota.find_videos(videos))
        raise EmptyInputError(f"--videos {videos}: no .mp4 clip (sub-folders and .MP4 included)" if not found
                              else f"--videos {videos}: none of its {found} clips is in split {split}")
    tasks = [VideoTask(id=clip.id, path=str(path), labels=(clip.label,), label_start=(0.0,), label_end=(-1.0,))
             for clip, path in clips]
    return tasks, [{"id": i, "path": str(path), "reason": reason} for i, path, reason in rejected]
