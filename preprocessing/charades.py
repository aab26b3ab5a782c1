"""Charades v1 annotations exactly as distributed (Sigurdsson et al. 2016; AssembleNet §4.1).

Files: `Charades_v1_train.csv` / `Charades_v1_test.csv` with the header
`id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length`
(quoted fields may hold commas and newlines), where `actions` is `;`-separated
`<class> <start s> <end s>` triples (e.g. `c092 11.90 21.20;c147 0.00 12.60`) or empty, and
`Charades_v1_classes.txt` with one `c000 Holding some clothes` line per class (157 classes).
Videos are `<id>.mp4`. The per-action intervals are kept: training labels a crop with the actions
that overlap it in time.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

from preprocessing.schema import validate_video_id

HEADER = ("id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
          "descriptions", "actions", "length")
NUM_CLASSES = 157
CLASSES_FILE = "Charades_v1_classes.txt"
_CODE = re.compile(r"^c(\d{3})$")


@dataclasses.dataclass(frozen=True)
class Action:
    label: int  # index into the classes file (c092 -> 92)
    start: float  # seconds
    end: float


@dataclasses.dataclass(frozen=True)
class CharadesVideo:
    id: str
    actions: tuple[Action, ...]
    length: float  # seconds, as annotated (the decoder does not trust it either)
    scene: str = ""
    subject: str = ""


def read_classes(path) -> list[tuple[str, str]]:
    """`[(code, name), ...]` in file order; the class index is the position (c000 is 0)."""
    path = Path(path)
    classes: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            code, _, name = line.partition(" ")
            match = _CODE.match(code)
            if not match or not name.strip():
                raise ValueError(f"{path}:{line_no}: expected 'cNNN Class name', got {line!r}")
            if int(match.group(1)) != len(classes):
                raise ValueError(f"{path}:{line_no}: class {code} out of order; expected c{len(classes):03d}")
            classes.append((code, name.strip()))
    if not classes:
        raise ValueError(f"{path}: no classes")
    return classes


def parse_actions(text: str, *, num_classes: int, where: str) -> tuple[Action, ...]:
    """Parses the `actions` field (`c092 11.90 21.20;c147 0.00 12.60`, possibly empty)."""
    actions = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        parts = item.split()
        match = _CODE.match(parts[0]) if parts else None
        if len(parts) != 3 or not match:
            raise ValueError(f"{where}: malformed action {item!r}; expected 'cNNN start end'")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise ValueError(f"{where}: malformed time in action {item!r}") from None
        label = int(match.group(1))
        if label >= num_classes:
            raise ValueError(f"{where}: class {parts[0]} outside the {num_classes} classes")
        if not 0 <= start <= end:
            raise ValueError(f"{where}: action {item!r} needs 0 <= start <= end")
        actions.append(Action(label, start, end))
    return tuple(actions)


def read_annotations(path, *, num_classes: int = NUM_CLASSES) -> list[CharadesVideo]:
    """Reads a Charades_v1_{train,test}.csv. Errors name the file and the (first) line of the row."""
    path = Path(path)
    videos: list[CharadesVideo] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}:1: empty file; expected the header {','.join(HEADER)}") from None
        if tuple(h.strip() for h in header) != HEADER:
            raise ValueError(f"{path}:1: header {header} differs from the Charades v1 header {list(HEADER)}")
        last_line = reader.line_num
        for row in reader:
            line_no, last_line = last_line + 1, reader.line_num  # a quoted field may span lines
            where = f"{path}:{line_no}"
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(HEADER):
                raise ValueError(f"{where}: {len(row)} fields, expected {len(HEADER)}")
            record = dict(zip(HEADER, row, strict=True))
            video_id = validate_video_id(record["id"].strip(), where)
            if video_id in seen:
                raise ValueError(f"{where}: duplicate id {video_id!r} (first on line {seen[video_id]})")
            seen[video_id] = line_no
            try:
                length = float(record["length"]) if record["length"].strip() else 0.0
            except ValueError:
                raise ValueError(f"{where}: length {record['length']!r} is not a number") from None
            videos.append(CharadesVideo(
                id=video_id, actions=parse_actions(record["actions"], num_classes=num_classes, where=where),
                length=length, scene=record["scene"], subject=record["subject"]))
    return videos


def write_annotations(path, videos: list[CharadesVideo], *, scripts: dict[str, str] | None = None) -> None:
    """Writes a CSV in the distributed format (used by the synthetic generator)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(HEADER)
        for v in videos:
            actions = ";".join(f"c{a.label:03d} {a.start:.2f} {a.end:.2f}" for a in v.actions)
            script = (scripts or {}).get(v.id, "")
            writer.writerow([v.id, v.subject, v.scene, 7, 7, "Yes", script, "", script, actions,
                             f"{v.length:.2f}"])


def write_classes(path, names: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, name in enumerate(names):
            f.write(f"c{i:03d} {name}\n")
