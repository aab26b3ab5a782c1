"""The synthetic proxy task (no --data): a coloured disc that is static, moves on a line, blinks or jumps between
two far places, with a static distractor disc and pixel noise; a single frame cannot tell three of the four
apart, so the task needs temporal reasoning."""

from __future__ import annotations

import numpy as np

SYNTHETIC_CLASSES = ("static", "linear", "blink", "jump")

def synthetic_batch(
    rng: np.random.Generator, batch: int, *, frames: int, size: int, modalities=("rgb",)
) -> tuple[dict, np.ndarray]:
    """(inputs keyed by modality, int labels in 0..3). rgb in [-1, 1]; flow = true disc motion / 20 px;
    object = 1 on the disc, 2 on the distractor (the contract's formats, docs/CONTRACTS.md)."""
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    radius = max(1.5, size / 8)
    rgb = rng.normal(-0.6, 0.1, size=(batch, frames, size, size, 3)).astype("float32")
    flow = np.zeros((batch, frames, size, size, 2), "float32")
    objects = np.zeros((batch, frames, size, size), "int32")
    labels = rng.integers(0, len(SYNTHETIC_CLASSES), size=batch)
    low, high = radius, size - radius

    def far_pair():
        while True:
            a, b = rng.uniform(low, high, 2), rng.uniform(low, high, 2)
            if np.linalg.norm(a - b) >= size / 3:
                return a, b

    for n in range(batch):
        a, b = far_pair()
        steps = np.arange(frames)
        visible = np.ones(frames, bool)
        if labels[n] == 0:
            path = np.repeat(a[None], frames, 0)
        elif labels[n] == 1:
            path = a[None] + (b - a)[None] * (steps / max(1, frames - 1))[:, None]
        elif labels[n] == 2:
            period = rng.integers(1, 3)
            visible = ((steps + rng.integers(0, 2)) // period) % 2 == 0
            path = np.repeat(a[None], frames, 0)
        else:
            period = rng.integers(1, 3)
            path = np.where((((steps // period) % 2) == 0)[:, None], a[None], b[None])
        colour = rng.uniform(0.0, 1.0, 3).astype("float32")
        distractor = rng.uniform(low, high, 2)
        distractor_mask = (xx - distractor[0]) ** 2 + (yy - distractor[1]) ** 2 <= (0.8 * radius) ** 2
        distractor_colour = rng.uniform(-0.2, 1.0, 3).astype("float32")
        for t in range(frames):
            rgb[n, t][distractor_mask] = distractor_colour
            objects[n, t][distractor_mask] = 2
            if not visible[t]:
                continue
            mask = (xx - path[t, 0]) ** 2 + (yy - path[t, 1]) ** 2 <= radius**2
            rgb[n, t][mask] = colour
            objects[n, t][mask] = 1
            if t + 1 < frames and visible[t + 1]:
                flow[n, t][mask] = (path[t + 1] - path[t]) / 20.0
    np.clip(rgb, -1, 1, out=rgb)
    available = {"rgb": rgb, "flow": flow, "object": objects}
    return {m: available[m] for m in modalities}, labels.astype("int32")
