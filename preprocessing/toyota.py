"""Toyota Smarthome, trimmed clips (Das et al., ICCV 2019; AssembleNet++ §4).

Clips are named `<Activity>_p<subject>_r<take>_v<view>_c<camera>.mp4`, e.g.
`Cook.Cleandishes_p02_r00_v02_c03.mp4`; the label is the activity. The 31 activity labels are kept
in one fixed order, `CLASSES`: the activity names as they appear in the clip file names of the
released dataset (Das et al. 2019, Table/Fig. of the 31 fine-grained activities), sorted by code
point, so a directory listing sorts the same way. The class index of a clip is its position there.

Splits (`SPLITS`), following Das et al. §5 (the validation parts are excluded here):
  cs-*  Cross-Subject: train on subjects p03 p04 p06 p07 p09 p12 p13 p15 p17 p19 p25, test on the rest.
  cv1-* Cross-View 1: train on camera c1, test on camera c2.
  cv2-* Cross-View 2: train on cameras c1 c3 c4 c6 c7, test on camera c2.

Class lists per protocol (`protocol_classes`): Cross-Subject uses the 31 classes; the cross-view
protocols use the dataset authors' 19 classes seen by every camera (`CROSS_VIEW_CLASSES`, the
authors' cross-view class list), so a cross-view record's label is its index in that list and its
`num_classes` is 19. A clip whose activity is not in its protocol's list (an activity outside the 31,
such as the `Pour.Fromcup` clips listed in the authors' split files, or a cooking clip in a
cross-view split) is reported by `scan_clips` with its reason; the preprocessing job sends it to the
dead-letter file and goes on.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from preprocessing.schema import validate_video_id
from preprocessing.video import find_videos

CLASSES = (
    "Cook.Cleandishes", "Cook.Cleanup", "Cook.Cut", "Cook.Stir", "Cook.Usestove", "Cutbread",
    "Drink.Frombottle", "Drink.Fromcan", "Drink.Fromcup", "Drink.Fromglass", "Eat.Attable",
    "Eat.Snack", "Enter", "Getup", "Laydown", "Leave", "Makecoffee.Pourgrains",
    "Makecoffee.Pourwater", "Maketea.Boilwater", "Maketea.Insertteabag", "Pour.Frombottle",
    "Pour.Fromcan", "Pour.Fromkettle", "Readbook", "Sitdown", "Takepills", "Uselaptop", "Usetablet",
    "Usetelephone", "Walk", "WatchTV",
)
NUM_CLASSES = 31
assert len(CLASSES) == NUM_CLASSES and list(CLASSES) == sorted(CLASSES)

# The 19 activities of the cross-view protocols (CV1, CV2), as listed by the dataset's authors.
CROSS_VIEW_CLASSES = (
    "Cutbread", "Drink.Frombottle", "Drink.Fromcan", "Drink.Fromcup", "Drink.Fromglass", "Eat.Attable",
    "Eat.Snack", "Enter", "Getup", "Leave", "Pour.Frombottle", "Pour.Fromcan", "Readbook", "Sitdown",
    "Takepills", "Uselaptop", "Usetablet", "Usetelephone", "Walk",
)
assert len(CROSS_VIEW_CLASSES) == 19 and set(CROSS_VIEW_CLASSES) <= set(CLASSES)

CROSS_SUBJECT_TRAIN = frozenset({3, 4, 6, 7, 9, 12, 13, 15, 17, 19, 25})
CV1_TRAIN, CV1_TEST = frozenset({1}), frozenset({2})
CV2_TRAIN, CV2_TEST = frozenset({1, 3, 4, 6, 7}), frozenset({2})
SPLITS = ("cs-train", "cs-test", "cv1-train", "cv1-test", "cv2-train", "cv2-test")

_NAME = re.compile(r"^(?P<activity>[A-Za-z.]+)_p(?P<subject>\d+)_r(?P<take>\d+)_v(?P<view>\d+)"
                   r"_c(?P<camera>\d+)$")


@dataclasses.dataclass(frozen=True)
class ToyotaClip:
    id: str  # the file name without .mp4
    activity: str
    label: int  # index in the class list it was parsed against (the 31 `CLASSES` by default)
    subject: int
    take: int
    view: int
    camera: int


class UnknownActivity(ValueError):
    """A well-formed clip name whose activity is not in the class list of the protocol."""

    reason = "unknown_activity"


def protocol_classes(split: str | None) -> tuple[str, ...]:
    """The class list of a split's protocol: 19 for cv1-*/cv2-*, the 31 for cs-* and for every clip."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown Toyota split {split!r}; expected one of {SPLITS}")
    return CROSS_VIEW_CLASSES if split and split.startswith("cv") else CLASSES


def unknown_activity_message(activity: str, classes: tuple[str, ...]) -> str:
    which = ("the 31 Toyota Smarthome classes (preprocessing.toyota.CLASSES)" if classes == CLASSES else
             "the 19 cross-view classes (preprocessing.toyota.CROSS_VIEW_CLASSES)"
             if classes == CROSS_VIEW_CLASSES else f"the {len(classes)} classes of the protocol")
    return f"unknown activity {activity!r}; expected one of {which}"


def parse_clip_name(name: str, where: str = "", classes: tuple[str, ...] | None = CLASSES) -> ToyotaClip:
    """Parses `Cook.Cut_p02_r00_v02_c03[.mp4]`; the label is the activity's index in `classes`.

    `where` names the file in error messages. A malformed name raises ValueError, an activity
    outside `classes` raises UnknownActivity (a ValueError). `classes=None` accepts any activity
    (label -1), for listings that decide per protocol.
    """
    stem = name[:-4] if name.lower().endswith(".mp4") else name
    match = _NAME.match(stem)
    where = where or name
    if not match:
        raise ValueError(f"{where}: file name {name!r} does not match "
                         "<Activity>_p<subject>_r<take>_v<view>_c<camera>.mp4")
    activity = match.group("activity")
    if classes is not None and activity not in classes:
        raise UnknownActivity(f"{where}: {unknown_activity_message(activity, classes)}")
    validate_video_id(stem, where)
    return ToyotaClip(id=stem, activity=activity, label=classes.index(activity) if classes else -1,
                      subject=int(match.group("subject")), take=int(match.group("take")),
                      view=int(match.group("view")), camera=int(match.group("camera")))


def in_split(clip: ToyotaClip, split: str | None) -> bool:
    """Whether the clip belongs to the split (`None` keeps every clip)."""
    if split is None:
        return True
    if split == "cs-train":
        return clip.subject in CROSS_SUBJECT_TRAIN
    if split == "cs-test":
        return clip.subject not in CROSS_SUBJECT_TRAIN
    cameras = {"cv1-train": CV1_TRAIN, "cv1-test": CV1_TEST, "cv2-train": CV2_TRAIN,
               "cv2-test": CV2_TEST}.get(split)
    if cameras is None:
        raise ValueError(f"unknown Toyota split {split!r}; expected one of {SPLITS}")
    return clip.camera in cameras


def scan_clips(videos_dir, split: str | None = None) -> tuple[list[tuple[ToyotaClip, Path]],
                                                                list[tuple[str, Path, str]]]:
    """(clips of `split` with labels in its protocol's classes, rejected (id, path, reason)), by id.

    Videos are found by `preprocessing.video.find_videos` (sub-folders, any case of `.mp4`). A malformed file name
    raises ValueError naming the file; a clip of the split whose activity is not in the protocol's
    class list is rejected with reason `unknown_activity: ...` (the job dead-letters it). The same
    clip name in two folders raises ValueError naming both.
    """
    classes = protocol_classes(split)
    clips, rejected, seen = [], [], {}
    for path in find_videos(videos_dir):
        clip = parse_clip_name(path.name, where=str(path), classes=None)
        if clip.id in seen:
            raise ValueError(f"{path}: clip {clip.id} is also at {seen[clip.id]}; keep one copy")
        seen[clip.id] = path
        if not in_split(clip, split):
            continue
        if clip.activity not in classes:
            message = unknown_activity_message(clip.activity, classes)
            rejected.append((clip.id, path, f"{UnknownActivity.reason}: {message} (split {split})"))
            continue
        clips.append((dataclasses.replace(clip, label=classes.index(clip.activity)), path))
    return sorted(clips, key=lambda c: c[0].id), sorted(rejected)


def list_clips(videos_dir, split: str | None = None) -> list[tuple[ToyotaClip, Path]]:
    """The clips of `split` (see `scan_clips`); a clip outside the protocol's classes raises ValueError."""
    clips, rejected = scan_clips(videos_dir, split)
    if rejected:
        raise UnknownActivity(f"{rejected[0][1]}: {rejected[0][2].partition(': ')[2]}")
    return clips


def clip_name(activity: str, subject: int, take: int, view: int, camera: int) -> str:
    """The inverse of `parse_clip_name` (without the extension)."""
    if activity not in CLASSES:
        raise ValueError(f"unknown activity {activity!r}")
    return f"{activity}_p{subject:02d}_r{take:02d}_v{view:02d}_c{camera:02d}"
