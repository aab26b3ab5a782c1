"""The TensorFlow-free reader: TFRecords of `preprocessing.schema` -> batches of numpy clips.

Same clips as the tf.data reader (`preprocessing.dataset.make_dataset`), from the same decisions
(`preprocessing.clips.decide`), the same scaling (docs/CONTRACTS.md) and the same labels; what
differs is how: records are found by their byte offsets (a scan of the TFRecord headers), parsed
with `protobuf` (`schema.parse_native`), and only the frames of the clip are decoded, with OpenCV
(`cv2.imdecode`, which releases the GIL). Each image is cropped and flipped while still uint8, mapped
to model units by a lookup table and resized in float32 with `cv2.resize(INTER_LINEAR)` straight into
the batch (half-pixel centres, no antialiasing: tf.image.resize's bilinear up to float rounding,
< 1e-4 in model units; the tests state the tolerance); object masks take tf.image.resize's
nearest-neighbour pixels (source index floor((i + 0.5) side / S), exact) with one `cv2.remap`. Work
per frame and image, never over a whole float32 clip: that and the PNG encoding of
`schema.encode_png` made a worker 1.96x faster (BENCHMARKS.md, "Input pipeline").

Workers: `workers=0` builds batches in the calling process. `workers=N` starts N processes (spawn,
so it is safe after JAX has started threads); each builds whole batches into a shared-memory slot
(an anonymous memfd the workers map through /proc/<pid>/fd), so a 600 MB batch of 32 x 224^2 clips
crosses no pipe. Batches come out in order. The arrays of a batch are views of its slot and stay
valid until `hold` more batches have been drawn (default 4; Keras' JAX trainer prefetches 2): copy
what you keep longer (`evaluate_model` copies the labels). Workers exit when the reader is closed,
garbage-collected or their parent dies.

Which pipeline (`select_pipeline`): `--input-pipeline auto` picks this reader when TensorFlow is not
installed or the Keras backend is jax or torch (they consume numpy anyway, and tf.data's thread pools
would compete with them for the cores), and tf.data for the tensorflow backend (TPUs,
tf.distribute).
"""

from __future__ import annotations

import functools
import itertools
import os
import struct
import sys
import threading
import traceback
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from preprocessing import clips as clips_lib
from preprocessing import schema

FLOW_SCALE = 20.0  # docs/CONTRACTS.md: the model's flow input is pixels / 20
PIPELINES = ("auto", "tfdata", "native")


# -- which reader --------------------------------------------------------------------------

def tensorflow_available() -> bool:
    import importlib.util

    if "tensorflow" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def select_pipeline(pipeline: str = "auto", backend: str | None = None) -> str:
    """'tfdata' or 'native' (see the module docstring); env ASSEMBLENET_INPUT_PIPELINE sets the default."""
    if pipeline == "auto":
        pipeline = os.environ.get("ASSEMBLENET_INPUT_PIPELINE", "auto") or "auto"
    if pipeline not in PIPELINES:
        raise ValueError(f"input pipeline {pipeline!r}: expected one of {PIPELINES}")
    if pipeline != "auto":
        if pipeline == "tfdata" and not tensorflow_available():
            raise ValueError("--input-pipeline tfdata needs TensorFlow, which is not installed; "
                             "use --input-pipeline native")
        return pipeline
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend != "tensorflow" or not tensorflow_available():
        return "native"
    return "tfdata"


def default_workers() -> int:
    """ASSEMBLENET_INPUT_WORKERS, else one process per core up to 16 (0 on a single core)."""
    if os.environ.get("ASSEMBLENET_INPUT_WORKERS"):
        return int(os.environ["ASSEMBLENET_INPUT_WORKERS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 1 else min(cores, 16)


# -- TFRecord files ------------------------------------------------------------------------

def list_files(file_pattern) -> list[str]:
    """Sorted local files matching a glob or a list of globs (paths with :// need the tf.data reader)."""
    import glob

    patterns = [file_pattern] if isinstance(file_pattern, (str, Path)) else list(file_pattern)
    for pattern in patterns:
        if "://" in str(pattern):
            raise ValueError(f"{pattern}: the TensorFlow-free reader reads local files only; copy the "
                             "records to a local disk or use --input-pipeline tfdata")
    return sorted({f for pattern in patterns for f in glob.glob(str(pattern)) if os.path.isfile(f)})


def _crc_function():
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value


def _masked_crc(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def scan_records(path: str) -> list[tuple[int, int]]:
    """(offset, length) of every record of a TFRecord file, from its headers (the data is skipped).

    Framing: uint64 length, masked CRC32C of the length, data, masked CRC32C of the data.
    """
    crc = _crc_function()
    size = os.path.getsize(path)
    out, offset = [], 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord header at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            if crc is not None and struct.unpack("<I", header[8:])[0] != _masked_crc(crc(header[:8])):
                raise ValueError(f"{path}: corrupt TFRecord length at byte {offset}")
            if offset + 16 + length > size:
                raise ValueError(f"{path}: truncated TFRecord at byte {offset}")
            out.append((offset, length))
            offset += 16 + length
            f.seek(offset)
    return out


def read_record(handle, path: str, offset: int, length: int) -> bytes:
    handle.seek(offset + 12)
    data = handle.read(length + 4)
    crc = _crc_function()
    if len(data) != length + 4:
        raise ValueError(f"{path}: truncated TFRecord at byte {offset}")
    if crc is not None and struct.unpack("<I", data[length:])[0] != _masked_crc(crc(data[:length])):
        raise ValueError(f"{path}: corrupt TFRecord data at byte {offset} (CRC mismatch)")
    return data[:length]


def _writer_crc():
    crc = _crc_function()
    if crc is None:
        raise ValueError("writing TFRecords needs the google-crc32c package (pip install google-crc32c)")
    return crc


def _frame(data: bytes, crc) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(crc(length))) + data + struct.pack("<I", _masked_crc(crc(data)))


def write_records(path: str | Path, records) -> None:
    """Writes serialized records as one TFRecord file (no TensorFlow; needs google-crc32c)."""
    crc = _writer_crc()
    with open(path, "wb") as f:
        for data in records:
            f.write(_frame(data, crc))


def encode_records(records) -> bytes:
    """The bytes of a TFRecord file holding `records` (for writers that go through other file systems,
    e.g. Beam's FileSystems in pipelines/preprocess/)."""
    crc = _writer_crc()
    return b"".join(_frame(data, crc) for data in records)


def decode_records(blob: bytes, where: str = "") -> list[bytes]:
    """The records of a TFRecord file's bytes; a torn or corrupt file raises naming `where` and the byte."""
    crc = _crc_function()
    records, offset = [], 0
    while offset < len(blob):
        header = blob[offset:offset + 12]
        if len(header) < 12:
            raise ValueError(f"{where}: truncated TFRecord header at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        if crc is not None and struct.unpack("<I", header[8:])[0] != _masked_crc(crc(header[:8])):
            raise ValueError(f"{where}: corrupt TFRecord length at byte {offset}")
        end = offset + 16 + length
        if end > len(blob):
            raise ValueError(f"{where}: truncated TFRecord at byte {offset}")
        data = blob[offset + 12:end - 4]
        if crc is not None and struct.unpack("<I", blob[end - 4:end])[0] != _masked_crc(crc(data)):
            raise ValueError(f"{where}: corrupt TFRecord data at byte {offset} (CRC mismatch)")
        records.append(data)
        offset = end
    return records


def shard_records(files: Sequence[str], shard_index: int = 0, num_shards: int = 1
                  ) -> list[tuple[int, int, int]]:
    """(file number, offset, length) of the records process `shard_index` of `num_shards` reads.

    Whole files (files[shard_index::num_shards]) when there are at least `num_shards` files, else
    every `num_shards`-th record of all files in sorted order: disjoint parts that cover everything.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must be in 0..num_shards-1 (num_shards={num_shards})")
    if num_shards > 1 and len(files) >= num_shards:
        chosen = range(shard_index, len(files), num_shards)
        return [(i, o, n) for i in chosen for o, n in scan_records(files[i])]
    records = [(i, o, n) for i in range(len(files)) for o, n in scan_records(files[i])]
    return records[shard_index::num_shards]


# -- one clip ------------------------------------------------------------------------------

def _decode(buffer: bytes, flag: int):
    import cv2

    image = cv2.imdecode(np.frombuffer(buffer, np.uint8), flag)
    if image is None:
        raise ValueError("undecodable frame")
    return image


def nearest_indices(side: int, size: int) -> np.ndarray:
    """tf.image.resize(method='nearest') source rows (half-pixel centres): floor((i + 0.5) side / S)."""
    return np.minimum(np.floor((np.arange(size) + 0.5) * (side / size)).astype(np.int64), side - 1)


@functools.lru_cache(maxsize=256)
def _pixel_tables(side: int, size: int, flip: bool) -> dict:
    """uint8 -> model units as cv2.LUT tables (float32 (1, 256, 1), read-only) per stored image, for a
    crop of `side` resized to `size`:

    - rgb: v -> v / 127.5 - 1;
    - flow_x, flow_y: dequantize (preprocessing.flow: v -> v 40 / 255 - 20 px), times the resize
      factor S / side (displacements scale with the image), / 20 for the model (docs/CONTRACTS.md);
      with a flip x is negated (a mirrored video moves the other way).

    The tables are affine maps, so looking them up on the uint8 crop before the bilinear resize gives
    the values of resizing first (the resize weights sum to 1), up to float rounding; it is cheaper:
    a crop is at most the resized size, and one lookup replaces a cast, a multiply and a subtraction."""
    values = np.arange(256, dtype=np.float64)
    flow = (values * (40.0 / 255.0) - 20.0) * (size / side / FLOW_SCALE)
    tables = {"rgb": values / 127.5 - 1.0, "flow_x": -flow if flip else flow, "flow_y": flow}
    tables = {key: table.astype(np.float32).reshape(1, 256, 1) for key, table in tables.items()}
    for table in tables.values():
        table.flags.writeable = False
    return tables


def _nearest_map(side: int, size: int, flip: bool) -> np.ndarray:
    """int16 (S, S, 2) cv2.remap map of (x, y) source pixels in the crop: tf.image.resize's nearest
    rule (`nearest_indices`), columns reversed when flipped (built per clip: 200 kB at 224^2)."""
    pick = nearest_indices(side, size).astype(np.int16)
    grid = np.empty((size, size, 2), np.int16)
    grid[..., 0] = (pick[::-1] if flip else pick)[None, :]
    grid[..., 1] = pick[:, None]
    return grid


def clip_into(example: dict, start: int, decision: clips_lib.Decision, out: dict, *, modalities,
              frames: int, size: int, decode=_decode) -> None:
    """Decodes, crops, flips, scales and resizes one clip into the preallocated `out[modality]` arrays.

    Frame by frame, each image: decode (uint8), crop (a view), flip (uint8, before the resize:
    bilinear resizing with half-pixel centres is mirror-symmetric), uint8 -> model units by a lookup
    table (`_pixel_tables`), bilinear resize, written into the output row (flow: x and y each, then
    interleaved into the row). Object masks take their nearest-neighbour pixels with one cv2.remap
    (crop, resize and flip at once), widened to int32 on the copy into the output. `decode(buffer,
    cv2 flag)` is a hook for the input benchmark's per-stage timing."""
    import cv2

    index = clips_lib.frame_indices(start, frames, example["num_frames"])
    y0, x0, side, flip = decision.y0, decision.x0, decision.side, decision.flip
    rows, cols = slice(y0, y0 + side), slice(x0, x0 + side)
    tables = _pixel_tables(side, size, flip)

    def crop(key, i, flag):
        return decode(example[key][int(i)].bytes_list.value[0], flag)[rows, cols]

    def scaled(key, i, flag, target=None):
        """Frame i of `key`: crop -> (flip) -> table lookup (float32) -> bilinear resize (into `target`)."""
        image = crop(key, i, flag)
        if flip:
            image = cv2.flip(image, 1)
        if side == size:
            return cv2.LUT(image, tables[key], dst=target)
        return cv2.resize(cv2.LUT(image, tables[key]), (size, size), dst=target, interpolation=cv2.INTER_LINEAR)

    if "rgb" in modalities:
        target = out["rgb"]
        for t, i in enumerate(index):
            scaled("rgb", i, cv2.IMREAD_COLOR_RGB, target[t])
    if "flow" in modalities:
        target = out["flow"]
        for t, i in enumerate(index):  # one channel at a time: faster than 2-channel lookups and resizes
            cv2.merge([scaled("flow_x", i, cv2.IMREAD_GRAYSCALE), scaled("flow_y", i, cv2.IMREAD_GRAYSCALE)],
                      dst=target[t])
    if "object" in modalities:
        target, grid = out["object"], _nearest_map(side, size, flip)
        for t, i in enumerate(index):
            target[t] = cv2.remap(crop("object", i, cv2.IMREAD_GRAYSCALE), grid, None, cv2.INTER_NEAREST)


# -- batches -------------------------------------------------------------------------------

class _Spec:
    """Everything a worker needs to build batches (picklable)."""

    def __init__(self, *, files, records, modalities, frames, size, training, batch_size, dataset,
                 num_classes, clips_per_video, seed, eval_starts):
        self.files, self.records = list(files), list(records)
        self.modalities, self.frames, self.size = tuple(modalities), frames, size
        self.training, self.batch_size, self.dataset = training, batch_size, dataset
        self.num_classes, self.clips = num_classes, (1 if training else clips_per_video)
        self.seed, self.eval_starts = seed, eval_starts

    def shapes(self) -> dict:
        b, t, s = self.batch_size, self.frames, self.size
        shapes = {"rgb": ((b, t, s, s, 3), np.float32), "flow": ((b, t, s, s, 2), np.float32),
                  "object": ((b, t, s, s), np.int32)}
        out = {m: shapes[m] for m in self.modalities}
        out["labels"] = ((b, self.num_classes), np.float32)
        return out

    def slot_bytes(self) -> int:
        return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in self.shapes().values())

    def views(self, buffer) -> dict:
        views, offset = {}, 0
        for name, (shape, dtype) in self.shapes().items():
            count = int(np.prod(shape))
            views[name] = np.frombuffer(buffer, dtype, count, offset).reshape(shape)
            offset += count * np.dtype(dtype).itemsize
        return views


class _Builder:
    """Builds batches from (record number, pass, clip number) items; keeps the files open."""

    def __init__(self, spec: _Spec):
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from the worker processes
        self.spec = spec
        self.handles: dict[int, object] = {}

    def example(self, record: int) -> dict:
        file_no, offset, length = self.spec.records[record]
        path = self.spec.files[file_no]
        if file_no not in self.handles:
            self.handles[file_no] = open(path, "rb")
        data = read_record(self.handles[file_no], path, offset, length)
        return schema.parse_native(data, self.spec.modalities, where=path)

    def build(self, items, out: dict) -> list[bytes]:
        """Fills `out` (arrays of batch_size rows) with the clips of `items`; returns their video ids."""
        spec, ids, cache = self.spec, [], {}
        for row, (record, epoch, k) in enumerate(items):
            if (record, epoch) not in cache:
                example = self.example(record)
                decision = clips_lib.decide(
                    num_frames=example["num_frames"], height=example["height"], width=example["width"],
                    frames=spec.frames, clips=spec.clips, training=spec.training, seed=spec.seed,
                    epoch=epoch, video_id=example["video_id"], eval_starts=spec.eval_starts)
                cache = {(record, epoch): (example, decision)}
            example, decision = cache[(record, epoch)]
            start = int(decision.starts[k])
            try:
                clip_into(example, start, decision, {m: out[m][row] for m in spec.modalities},
                          modalities=spec.modalities, frames=spec.frames, size=spec.size)
            except ValueError as err:
                path = spec.files[spec.records[record][0]]
                raise ValueError(f"{path}: video {example['video_id'].decode()!r}: {err}") from None
            out["labels"][row] = clips_lib.clip_labels(
                labels=example["labels"], label_start=example["label_start"], label_end=example["label_end"],
                fps=example["fps"], start=int(clips_lib.frame_indices(start, spec.frames,
                                                                      example["num_frames"])[0]),
                frames=spec.frames, dataset=spec.dataset, num_classes=spec.num_classes,
                whole_video=not spec.training)
            ids.append(example["video_id"])
        return ids


def _worker(spec: _Spec, parent: int, fds: list[int], tasks, results) -> None:
    """Worker process: maps the parent's slots, then builds the batches it is sent into them."""
    import mmap
    import queue

    slots = []
    for fd in fds:
        with open(f"/proc/{parent}/fd/{fd}", "r+b") as f:
            slots.append(spec.views(mmap.mmap(f.fileno(), spec.slot_bytes())))
    builder = _Builder(spec)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the parent died (SIGKILL): nobody will read our results
                return
            continue
        if task is None:
            return
        number, slot, items = task
        try:
            ids = builder.build(items, slots[slot])
            results.put((number, slot, ids, None))
        except Exception as err:  # noqa: BLE001  (reported to the parent, which raises it)
            message = str(err) if isinstance(err, ValueError) else traceback.format_exc()
            results.put((number, slot, None, message))


class NativeReader:
    """Batches of clips from TFRecords without TensorFlow; iterate it (or use `batches()`).

    Arguments as `preprocessing.dataset.make_dataset` (same meaning, same clips):
    `file_pattern` a glob or list of globs; `training` one random clip per video per pass (pass
    `epoch`, then epoch + 1, ... with `repeat`; batches of exactly `batch_size` then run across
    passes); evaluation: `clips_per_video` clips per video in file order, evenly spaced
    (`eval_starts="even"`) or random from `seed` (`"random"`, AssembleNet A.7), the last batch
    possibly smaller. Elements are `(inputs, labels)` or, with `with_ids` (default:
    clips_per_video > 1), `(inputs, labels, video_ids)` with `video_ids` a numpy array of bytes.

    `shard_index`, `num_shards`: process `shard_index` of `num_shards` reads a disjoint part of the
    records: whole files (files[shard_index::num_shards] of the sorted list) when there are at least
    `num_shards` files, else every `num_shards`-th record of the files in sorted order.
    `workers`: processes building batches (0: in this process; default `default_workers()`).
    Memory: workers + 3 + `hold` batch slots (at 16 x 32 x 224^2 with rgb + flow + object, 616 MB
    each: 14 GB with 16 workers).
    """

    def __init__(self, file_pattern, *, modalities, frames: int, size: int, training: bool, batch_size: int,
                 dataset: str = "charades", num_classes: int, clips_per_video: int = 1, seed=None,
                 with_ids: bool | None = None, epoch: int = 0, repeat: bool = False,
                 eval_starts: str = "even", shard_index: int = 0, num_shards: int = 1,
                 workers: int | None = None, hold: int = 4):
        if dataset not in ("charades", "toyota"):
            raise ValueError(f"dataset must be 'charades' or 'toyota', got {dataset!r}")
        for modality in modalities:
            if modality not in schema.MODALITY_KEYS:
                raise ValueError(f"unknown modality {modality!r}; expected some of "
                                 f"{sorted(schema.MODALITY_KEYS)}")
        if frames < 1 or size < 1 or batch_size < 1 or clips_per_video < 1:
            raise ValueError(f"frames, size, batch_size, clips_per_video must be >= 1, got "
                             f"{frames}, {size}, {batch_size}, {clips_per_video}")
        if eval_starts not in clips_lib.EVAL_STARTS:
            raise ValueError(f"eval_starts={eval_starts!r}: expected one of {clips_lib.EVAL_STARTS}")
        files = list_files(file_pattern)
        if not files:
            raise ValueError(f"no TFRecord files match {file_pattern!r}")
        records = shard_records(files, shard_index, num_shards)
        if not records:
            raise ValueError(f"{file_pattern!r}: no record for shard {shard_index} of {num_shards}")
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        self.spec = _Spec(files=files, records=records, modalities=modalities, frames=frames, size=size,
                          training=training, batch_size=batch_size, dataset=dataset,
                          num_classes=num_classes, clips_per_video=clips_per_video, seed=int(seed),
                          eval_starts=eval_starts)
        self.with_ids = clips_per_video > 1 if with_ids is None else with_ids
        self.epoch, self.repeat = int(epoch), bool(repeat)
        self.workers = default_workers() if workers is None else int(workers)
        self.hold = max(int(hold), 0)
        self._pool = None

    # the clip sequence ------------------------------------------------------------------
    def _items(self) -> Iterator[tuple[int, int, int]]:
        spec, count = self.spec, len(self.spec.records)
        if not spec.training:
            for record in range(count):
                for k in range(spec.clips):
                    yield record, self.epoch, k
            return
        for epoch in itertools.count(self.epoch) if self.repeat else [self.epoch]:
            order = np.random.default_rng([spec.seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, 1]).permutation(count)
            for record in order:
                yield int(record), epoch, 0

    def _tasks(self) -> Iterator[list]:
        items = self._items()
        while True:
            batch = list(itertools.islice(items, self.spec.batch_size))
            if not batch or (len(batch) < self.spec.batch_size and self.repeat):
                return
            yield batch

    @property
    def num_batches(self) -> int | None:
        if self.repeat:
            return None
        clips = len(self.spec.records) * self.spec.clips
        return -(-clips // self.spec.batch_size)

    def _element(self, arrays: dict, ids, rows: int):
        inputs = {m: arrays[m][:rows] for m in self.spec.modalities}
        labels = arrays["labels"][:rows].copy()
        if self.with_ids:
            return inputs, labels, np.array(ids[:rows], dtype=object)
        return inputs, labels

    def __iter__(self):
        return self.batches()

    def batches(self) -> Iterator[tuple]:
        if self.workers <= 0:
            builder = _Builder(self.spec)
            for items in self._tasks():
                arrays = {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.spec.shapes().items()}
                ids = builder.build(items, arrays)
                yield self._element(arrays, ids, len(items))
            return
        yield from self._pooled()

    # worker processes ---------------------------------------------------------------
    def _pooled(self) -> Iterator[tuple]:
        import collections
        import mmap
        import multiprocessing

        if not hasattr(os, "memfd_create"):
            raise ValueError("the TensorFlow-free reader's worker processes need Linux (memfd); "
                             "use workers=0 (--input-workers 0)")
        inflight = self.workers + 2  # one batch in the making per worker, two ready
        slots_needed = inflight + self.hold + 1
        size = self.spec.slot_bytes()
        fds, maps = [], []
        for n in range(slots_needed):
            fd = os.memfd_create(f"assemblenet-batch-{n}")
            os.ftruncate(fd, size)
            fds.append(fd)
            maps.append(mmap.mmap(fd, size))
        views = [self.spec.views(m) for m in maps]
        context = multiprocessing.get_context("spawn")
        tasks, results = context.Queue(), context.Queue()
        processes = [context.Process(target=_worker, args=(self.spec, os.getpid(), fds, tasks, results),
                                     daemon=True) for _ in range(self.workers)]
        for process in processes:
            process.start()
        pool = _Pool(processes, tasks, results, fds)
        finalizer = weakref.finalize(self, pool.close)
        free = list(range(slots_needed))
        held: collections.deque = collections.deque()
        pending: dict[int, tuple] = {}
        sizes: dict[int, int] = {}
        sent = received = 0
        task_iter = self._tasks()
        exhausted = False
        try:
            while True:
                while not exhausted and sent - received < inflight and free:
                    items = next(task_iter, None)
                    if items is None:
                        exhausted = True
                        break
                    slot = free.pop()
                    tasks.put((sent, slot, items))
                    sizes[sent] = len(items)
                    sent += 1
                if received == sent and exhausted:
                    return
                while received not in pending:
                    number, slot, ids, error = pool.get()
                    if error is not None:
                        raise ValueError(error)
                    pending[number] = (slot, ids)
                slot, ids = pending.pop(received)
                rows = sizes.pop(received)
                received += 1
                held.append(slot)
                while len(held) > self.hold:
                    free.append(held.popleft())
                yield self._element(views[slot], ids, rows)
        finally:
            finalizer()
            for m in maps:
                try:
                    m.close()
                except BufferError:  # a caller still holds a view; the mapping goes with it
                    pass


class _Pool:
    def __init__(self, processes, tasks, results, fds):
        self.processes, self.tasks, self.results, self.fds = processes, tasks, results, fds
        self.lock = threading.Lock()

    def get(self):
        import queue

        while True:
            try:
                return self.results.get(timeout=5.0)
            except queue.Empty:
                dead = [p for p in self.processes if not p.is_alive()]
                if dead:
                    raise ValueError(f"an input worker process died (exit code {dead[0].exitcode}); "
                                     "out of memory? try fewer --input-workers") from None

    def close(self):
        with self.lock:
            for _ in self.processes:
                try:
                    self.tasks.put(None)
                except (OSError, ValueError):
                    pass
            for process in self.processes:
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=5)
            for queue in (self.tasks, self.results):
                queue.close()
                queue.cancel_join_thread()
            for fd in self.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.fds = []


# -- Keras -----------------------------------------------------------------------------------

def keras_data(reader: NativeReader):
    """A keras.utils.PyDataset over `reader`'s batches, for model.fit (training or validation_data).

    Keras reads it in order (one worker, no multiprocessing of its own: the reader has its own
    processes). A finite reader starts a new pass whenever Keras asks for batch 0 again.
    """
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self._iterator, self._next, self._last = None, 0, None

        @property
        def num_batches(self):
            return reader.num_batches

        def __len__(self):
            return reader.num_batches

        def __getitem__(self, index):
            # Keras peeks at batch 0 for the input specs, then reads 0, 1, 2, ...: the peeked batch
            # is served again from `_last`; a finite reader's other return to batch 0 starts a new
            # pass, an endless one never restarts (a resumed run's clips are new, not replayed).
            if index == self._next - 1 and self._last is not None:
                return self._last
            finite = reader.num_batches is not None
            if self._iterator is None or (index == 0 and finite):
                self._iterator, self._next = reader.batches(), 0
            if index != self._next and finite:  # an endless reader just goes on
                raise IndexError(f"the input reader is sequential: asked for batch {index}, next is "
                                 f"{self._next}")
            self._next += 1
            self._last = next(self._iterator)[:2]
            return self._last

    return Batches()


def make_reader(file_pattern, *, pipeline: str = "auto", workers: int | None = None, **kwargs):
    """The tf.data dataset or the NativeReader for the same arguments, as `pipeline` says."""
    chosen = select_pipeline(pipeline)
    if chosen == "tfdata":
        from preprocessing.dataset import make_dataset

        return make_dataset(file_pattern, **kwargs)
    return NativeReader(file_pattern, workers=workers, **kwargs)


def to_numpy(value):
    """A batch element as numpy (tf tensors from the tf.data reader, arrays from this one)."""
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
