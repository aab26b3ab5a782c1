"""A synthetic activity dataset in the Charades or Toyota Smarthome on-disk format.

It is the embedded data of `make demo` and of the tests, built so the papers' claim (RGB, motion
and objects are complementary, AssembleNet++ §3.2, §4.1) can be seen at toy scale. Each action
class is a combination of
- an object: a shape drawn with a colour and a distinct ADE20K class id in its mask (pairs of
  objects share a colour and differ only in outline, so RGB barely tells them apart while the
  object masks do);
- a motion pattern: direction, speed and periodicity (slide right/left, bounce, orbit, shake);
- a context: every class prefers one scene (background layout and colours), which holds for
  `CONTEXT_PROBABILITY` of its videos.
With the default 10 classes every object takes part in two classes (one for the blue
triangle and yellow ring) and every motion in two, so objects alone, motion alone
or RGB alone each solve only part of the task. Distractor objects (static, or moving in a way that
forms no class with their object) and camera noise (jitter, flicker, pixel noise) are added.

Outside its action's interval an action object stands still, so labels follow the frames.
Everything is deterministic from `seed`. Videos are mp4 (OpenCV `mp4v`); the ground-truth object
masks go to `masks/<id>.npz` (`masks`: uint8 (N, H, W) per source frame, `fps`), which the
`oracle` segmenter reads.

Layout written by `generate(out, format="charades")`:
  out/Charades_v1_classes.txt, out/Charades_v1_train.csv, out/Charades_v1_test.csv,
  out/videos/<id>.mp4, out/masks/<id>.npz, out/synthetic.json (the class definitions)
and by `generate(out, format="toyota")`:
  out/mp4/<Activity>_p<subject>_r<take>_v<view>_c<camera>.mp4, out/masks/<id>.npz, out/synthetic.json
"""

from __future__ import annotations

import dataclasses
import json
import math
import string
from pathlib import Path

import numpy as np

from preprocessing import charades, toyota

# (name, shape, RGB colour, ADE20K class id). Ids are distinct ADE20K indices in 1..150; which real
# category an id denotes does not matter here, only that the masks separate look-alike objects.
OBJECTS = (
    ("red disc", "disc", (220, 40, 40), 42),
    ("red octagon", "octagon", (220, 40, 40), 99),
    ("green square", "square", (40, 190, 60), 68),
    ("green diamond", "diamond", (40, 190, 60), 58),
    ("blue triangle", "triangle", (50, 80, 230), 82),
    ("yellow ring", "ring", (235, 210, 40), 37),
)
# (name, kind, speed or frequency): slides move at px/s (scaled by width / 128), periodic motions
# have a frequency in Hz and an amplitude in px.
MOTIONS = (
    ("slides right", "slide", +18.0),
    ("slides left", "slide", -18.0),
    ("bounces", "bounce", 0.8),
    ("orbits", "orbit", 0.6),
    ("shakes", "shake", 2.0),
)
# (name, wall colour, floor colour, furniture colour, wall id, floor id, furniture id)
SCENES = (
    ("Kitchen", (200, 190, 170), (120, 100, 80), (150, 150, 160), 1, 4, 46),
    ("Bedroom", (170, 180, 210), (100, 90, 110), (140, 110, 90), 1, 29, 8),
    ("Living room", (210, 200, 150), (90, 110, 90), (110, 70, 60), 1, 4, 24),
)
# (object, motion) of each class; the first 10 use each motion twice and each object once or twice.
CLASS_TABLE = ((0, 0), (1, 0), (0, 2), (1, 3), (2, 1), (3, 1), (2, 3), (4, 2), (5, 4), (3, 4),
               (4, 0), (5, 1))
CONTEXT_PROBABILITY = 0.6
OBJECT_RADIUS = 9  # px at width 128
JITTER = 2  # px of camera shake


@dataclasses.dataclass(frozen=True)
class ActionClass:
    name: str
    object: int
    motion: int
    scene: int


@dataclasses.dataclass(frozen=True)
class _Actor:
    object: int
    motion: int  # -1: static
    start: float  # seconds; the object moves only in [start, end]
    end: float
    x0: float
    y0: float


def action_classes(num_classes: int) -> list[ActionClass]:
    if not 2 <= num_classes <= len(CLASS_TABLE):
        raise ValueError(f"num_classes must be in 2..{len(CLASS_TABLE)}, got {num_classes}")
    classes = []
    for i, (obj, motion) in enumerate(CLASS_TABLE[:num_classes]):
        name = f"The {OBJECTS[obj][0]} {MOTIONS[motion][0]}"
        classes.append(ActionClass(name=name, object=obj, motion=motion, scene=i % len(SCENES)))
    return classes


def _offset(actor: _Actor, t: float, scale: float) -> tuple[float, float]:
    """Displacement of an actor at time t (seconds) from its rest position."""
    if actor.motion < 0:
        return 0.0, 0.0
    tau = min(max(t, actor.start), actor.end) - actor.start
    _, kind, rate = MOTIONS[actor.motion]
    if kind == "slide":
        return rate * scale * tau, 0.0
    if kind == "bounce":
        return 0.0, 10.0 * scale * math.sin(2 * math.pi * rate * tau)
    if kind == "orbit":
        angle = 2 * math.pi * rate * tau
        return 10.0 * scale * (math.cos(angle) - 1.0), 10.0 * scale * math.sin(angle)
    return 4.0 * scale * math.sin(2 * math.pi * rate * tau), 0.0  # shake


def _draw(canvas: np.ndarray, mask: np.ndarray, obj: int, cx: float, cy: float, radius: float) -> None:
    import cv2

    _, shape, colour, class_id = OBJECTS[obj]
    centre = (int(round(cx)), int(round(cy)))
    r = int(round(radius))
    if shape in ("disc", "ring"):
        thickness = -1 if shape == "disc" else max(2, r // 3)
        cv2.circle(canvas, centre, r, colour, thickness)
        cv2.circle(mask, centre, r, int(class_id), thickness)
        return
    sides, phase = {"octagon": (8, math.pi / 8), "square": (4, math.pi / 4), "diamond": (4, 0.0),
                    "triangle": (3, -math.pi / 2)}[shape]
    points = np.array([[cx + r * math.cos(phase + 2 * math.pi * k / sides),
                        cy + r * math.sin(phase + 2 * math.pi * k / sides)] for k in range(sides)])
    points = np.round(points).astype(np.int32)
    cv2.fillPoly(canvas, [points], colour)
    cv2.fillPoly(mask, [points], int(class_id))


def _background(rng: np.random.Generator, scene: int, height: int,
                width: int) -> tuple[np.ndarray, np.ndarray]:
    """A static room: wall, floor below a horizon, two furniture blocks, plus a fixed texture."""
    _, wall, floor, furniture, wall_id, floor_id, furniture_id = SCENES[scene]
    image = np.empty((height, width, 3), np.float32)
    mask = np.empty((height, width), np.uint8)
    horizon = int(height * rng.uniform(0.55, 0.7))
    image[:horizon], mask[:horizon] = wall, wall_id
    image[horizon:], mask[horizon:] = floor, floor_id
    for _ in range(2):
        w, h = int(width * rng.uniform(0.15, 0.3)), int(height * rng.uniform(0.2, 0.35))
        x, y = int(rng.uniform(0, width - w)), int(horizon - h * rng.uniform(0.3, 0.9))
        image[y:y + h, x:x + w], mask[y:y + h, x:x + w] = furniture, furniture_id
    image += rng.normal(0, 6, size=(height, width, 1))  # texture, so flow has something to track
    return np.clip(image, 0, 255).astype(np.uint8), mask


def render_video(rng: np.random.Generator, actors: list[_Actor], scene: int, *, frames: int, fps: float,
                 height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (N, H, W, 3) and object masks uint8 (N, H, W) of one video."""
    scale = width / 128.0
    pad = JITTER + 1
    background, background_mask = _background(rng, scene, height + 2 * pad, width + 2 * pad)
    video = np.empty((frames, height, width, 3), np.uint8)
    masks = np.empty((frames, height, width), np.uint8)
    shift = np.zeros(2)
    for i in range(frames):
        t = i / fps
        canvas, mask = background.copy(), background_mask.copy()
        for actor in actors:
            dx, dy = _offset(actor, t, scale)
            _draw(canvas, mask, actor.object, actor.x0 + dx + pad, actor.y0 + dy + pad, OBJECT_RADIUS * scale)
        shift = np.clip(shift + rng.integers(-1, 2, size=2), -JITTER, JITTER)  # camera jitter
        y, x = pad + int(shift[0]), pad + int(shift[1])
        frame = canvas[y:y + height, x:x + width].astype(np.float32)
        frame = frame * rng.uniform(0.95, 1.05) + rng.normal(0, 3, size=frame.shape)  # flicker, noise
        video[i] = np.clip(frame, 0, 255).astype(np.uint8)
        masks[i] = mask[y:y + height, x:x + width]
    return video, masks


def _place(rng: np.random.Generator, motion: int, length: float, height: int,
           width: int) -> tuple[float, float]:
    """A rest position from which the motion stays inside the frame for `length` seconds."""
    scale = width / 128.0
    margin = (OBJECT_RADIUS + 12) * scale
    low_x, high_x = margin, width - margin
    if motion >= 0 and MOTIONS[motion][1] == "slide":
        travel = MOTIONS[motion][2] * scale * length
        low_x, high_x = (low_x, high_x - travel) if travel > 0 else (low_x - travel, high_x)
        if low_x > high_x:
            low_x = high_x = width / 2 - travel / 2
    return float(rng.uniform(low_x, high_x)), float(rng.uniform(margin, height - margin))


def _distractors(rng: np.random.Generator, classes: list[ActionClass], duration: float, height: int,
                 width: int) -> list[_Actor]:
    """1-2 objects that are static or move in a way that forms no class with their object."""
    taken = {(c.object, c.motion) for c in classes}
    actors = []
    for _ in range(int(rng.integers(1, 3))):
        obj = int(rng.integers(len(OBJECTS)))
        free = [m for m in range(len(MOTIONS)) if (obj, m) not in taken]
        motion = int(rng.choice(free)) if free and rng.random() < 0.5 else -1
        length = min(duration, float(rng.uniform(1.5, 3.0)))
        start = float(rng.uniform(0, max(duration - length, 0)))
        x, y = _place(rng, motion, length, height, width)
        actors.append(_Actor(obj, motion, start, start + length, x, y))
    return actors


def _video_id(rng: np.random.Generator, used: set[str]) -> str:
    alphabet = np.array(list(string.ascii_uppercase + string.digits))
    while True:
        video_id = "".join(rng.choice(alphabet, size=5))
        if video_id not in used:
            used.add(video_id)
            return video_id


def _write_mp4(path: Path, video: np.ndarray, fps: float) -> None:
    import cv2

    height, width = video.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video {path}")
    for frame in video:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def _scene_for(rng: np.random.Generator, cls: ActionClass) -> int:
    return cls.scene if rng.random() < CONTEXT_PROBABILITY else int(rng.integers(len(SCENES)))


def generate(out_dir, *, format: str, videos: int, seed: int = 0, num_classes: int = 10,
             height: int = 96, width: int = 128, fps: float = 8.0, min_seconds: float = 4.0,
             max_seconds: float = 8.0, test_fraction: float = 0.3, progress: bool = False) -> dict:
    """Writes `videos` synthetic videos in `format` ("charades" | "toyota") under `out_dir`.

    Returns a description of what was written: `format`, `root`, `videos_dir`, `masks_dir`,
    `num_videos`, `num_classes` (the label space: the class count for Charades, 31 for Toyota),
    `class_names` (the label space's names), `fps`, `height`, `width`, and for Charades
    `classes_file`, `train_csv`, `test_csv`; for Toyota `labels_used` (indices of the Toyota classes
    the synthetic classes are mapped to).
    """
    from tqdm import tqdm

    if format not in ("charades", "toyota"):
        raise ValueError(f"format must be 'charades' or 'toyota', got {format!r}")
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    classes = action_classes(num_classes)
    root = Path(out_dir)
    videos_dir = root / ("videos" if format == "charades" else "mp4")
    masks_dir = root / "masks"
    videos_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Toyota: the synthetic classes take evenly spaced Toyota activity labels.
    toyota_labels = [round(i * toyota.NUM_CLASSES / num_classes) for i in range(num_classes)]
    used_ids: set[str] = set()
    records = []
    train_subjects = sorted(toyota.CROSS_SUBJECT_TRAIN)
    test_subjects = [s for s in range(1, 21) if s not in toyota.CROSS_SUBJECT_TRAIN]
    for i in tqdm(range(videos), desc=f"synth {format}", disable=not progress):
        duration = float(rng.uniform(min_seconds, max_seconds))
        if format == "charades":
            count = min(int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])), num_classes)
            picked = [int(c) for c in rng.choice(num_classes, size=count, replace=False)]
            actions, actors = [], []
            for c in picked:
                length = float(rng.uniform(min(1.5, duration), min(4.0, duration)))
                start = float(rng.uniform(0, duration - length))
                actions.append(charades.Action(c, round(start, 2), round(start + length, 2)))
                x, y = _place(rng, classes[c].motion, length, height, width)
                actors.append(_Actor(classes[c].object, classes[c].motion, start, start + length, x, y))
            scene = _scene_for(rng, classes[picked[0]])
            video_id = _video_id(rng, used_ids)
        else:
            c = int(rng.integers(num_classes))
            picked, actions = [c], []
            lead = float(rng.uniform(0, 0.3)) * duration  # the action fills most of the clip
            x, y = _place(rng, classes[c].motion, duration - lead, height, width)
            actors = [_Actor(classes[c].object, classes[c].motion, lead, duration, x, y)]
            scene = _scene_for(rng, classes[c])
            subjects = train_subjects if rng.random() < 0.6 else test_subjects
            camera = int(rng.integers(1, 8))
            # The take number is the clip index, which keeps ids unique.
            video_id = toyota.clip_name(toyota.CLASSES[toyota_labels[c]], int(rng.choice(subjects)), i,
                                        camera, camera)
        actors = _distractors(rng, classes, duration, height, width) + actors  # actions drawn on top
        frames = max(2, int(round(duration * fps)))
        video, masks = render_video(rng, actors, scene, frames=frames, fps=fps, height=height, width=width)
        _write_mp4(videos_dir / f"{video_id}.mp4", video, fps)
        np.savez_compressed(masks_dir / f"{video_id}.npz", masks=masks, fps=np.float32(fps))
        records.append((video_id, actions, duration, scene, i))

    summary = {"format": format, "root": str(root), "videos_dir": str(videos_dir),
               "masks_dir": str(masks_dir), "num_videos": videos, "fps": fps, "height": height,
               "width": width, "seed": seed}
    definitions = [dataclasses.asdict(c) | {"object_name": OBJECTS[c.object][0],
                                             "object_class_id": OBJECTS[c.object][3],
                                             "motion_name": MOTIONS[c.motion][0],
                                             "scene_name": SCENES[c.scene][0]} for c in classes]
    if format == "charades":
        names = [c.name for c in classes]
        charades.write_classes(root / charades.CLASSES_FILE, names)
        n_test = int(round(videos * test_fraction)) if videos > 1 else 0
        rows = [charades.CharadesVideo(id=vid, actions=tuple(acts), length=round(dur, 2),
                                       scene=SCENES[scene][0], subject=f"S{i % 7:02d}")
                for vid, acts, dur, scene, i in records]
        scripts = {row.id: "; ".join(f"{names[a.label]}." for a in row.actions) for row in rows}
        charades.write_annotations(root / "Charades_v1_train.csv", rows[:videos - n_test], scripts=scripts)
        charades.write_annotations(root / "Charades_v1_test.csv", rows[videos - n_test:], scripts=scripts)
        summary |= {"classes_file": str(root / charades.CLASSES_FILE),
                    "train_csv": str(root / "Charades_v1_train.csv"),
                    "test_csv": str(root / "Charades_v1_test.csv"),
                    "num_classes": num_classes, "class_names": names}
    else:
        summary |= {"num_classes": toyota.NUM_CLASSES, "class_names": list(toyota.CLASSES),
                    "labels_used": toyota_labels}
        for definition, label in zip(definitions, toyota_labels, strict=True):
            definition["toyota_label"] = label
    (root / "synthetic.json").write_text(json.dumps(summary | {"classes": definitions}, indent=1))
    return summary
