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
Das et al. report the cross-view protocols on the activities seen by every camera; this module
keeps the full 31-class label space and only filters by camera, so compare such numbers with care.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from preprocessing.schema import validate_video_id

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
    label: int
    subject: int
    take: int
    view: int
    camera: int


def parse_clip_name(name: str, where: str = "") -> ToyotaClip:
    """Parses `Cook.Cut_p02_r00_v02_c03[.mp4]`. `where` names the file in error messages."""
    stem = name[:-4] if name.endswith(".mp4") else name
    match = _NAME.match(stem)
    where = where or name
    if not match:
        raise ValueError(f"{where}: file name {name!r} does not match "
                         "<Activity>_p<subject>_r<take>_v<view>_c<camera>.mp4")
    activity = match.group("activity")
    if activity not in CLASSES:
        raise ValueError(f"{where}: unknown activity {activity!r}; expected one of the 31 Toyota "
                         "Smarthome classes (preprocessing.toyota.CLASSES)")
    validate_video_id(stem, where)
    return ToyotaClip(id=stem, activity=activity, label=CLASSES.index(activity),
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


def list_clips(videos_dir, split: str | None = None) -> list[tuple[ToyotaClip, Path]]:
    """Every `*.mp4` directly in `videos_dir` that belongs to `split`, sorted by id."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise ValueError(f"{videos_dir}: not a directory")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown Toyota split {split!r}; expected one of {SPLITS}")
    clips = []
    for path in sorted(videos_dir.glob("*.mp4")):
        clip = parse_clip_name(path.name, where=str(path))
        if in_split(clip, split):
            clips.append((clip, path))
    return clips


def clip_name(activity: str, subject: int, take: int, view: int, camera: int) -> str:
    """The inverse of `parse_clip_name` (without the extension)."""
    if activity not in CLASSES:
        raise ValueError(f"unknown activity {activity!r}")
    return f"{activity}_p{subject:02d}_r{take:02d}_v{view:02d}_c{camera:02d}"
