import json
from pathlib import Path

import numpy as np
import pytest

from preprocessing import charades, synthetic, toyota
from preprocessing.video import decode_video


def test_charades_format_and_determinism(tiny_charades, tmp_path):
    info = tiny_charades
    classes = charades.read_classes(info["classes_file"])
    assert len(classes) == info["num_classes"] == 10 and classes[0][0] == "c000"
    videos = charades.read_annotations(info["train_csv"], num_classes=10) + charades.read_annotations(
        info["test_csv"], num_classes=10)
    assert len(videos) == 4 and all(1 <= len(v.actions) <= 3 for v in videos)
    for v in videos:
        decoded = decode_video(Path(info["videos_dir"]) / f"{v.id}.mp4", fps=4.0)
        assert decoded.frames.shape[1:] == (48, 64, 3)
        assert all(0 <= a.start < a.end <= v.length + 1e-6 for a in v.actions)
        masks = np.load(Path(info["masks_dir"]) / f"{v.id}.npz")["masks"]
        assert masks.shape[1:] == (48, 64) and abs(len(masks) - len(decoded.frames)) <= 1
        for a in v.actions:  # the action's object is visible in the ground-truth masks
            assert (masks == synthetic.OBJECTS[synthetic.CLASS_TABLE[a.label][0]][3]).any()
    again = synthetic.generate(tmp_path, format="charades", videos=4, seed=1, height=48, width=64, fps=4.0,
                               min_seconds=2.0, max_seconds=3.0)
    assert Path(again["train_csv"]).read_text() == Path(info["train_csv"]).read_text()
    first = sorted(Path(info["masks_dir"]).glob("*.npz"))[0]
    np.testing.assert_array_equal(np.load(first)["masks"],
                                  np.load(Path(again["masks_dir"]) / first.name)["masks"])


def test_toyota_format(tiny_toyota):
    clips = toyota.list_clips(tiny_toyota["videos_dir"])
    assert len(clips) == 6 and tiny_toyota["num_classes"] == 31
    assert {c.label for c, _ in clips} <= set(tiny_toyota["labels_used"])
    definitions = json.loads((Path(tiny_toyota["root"]) / "synthetic.json").read_text())["classes"]
    assert len(definitions) == 10 and len({d["object_class_id"] for d in definitions}) == 6


def _motion_features(masks):
    """Per object id: visible fraction, mean x/y velocity, x/y spread of the centroid (from the masks)."""
    features = []
    for _, _, _, class_id in synthetic.OBJECTS:
        centroids = []
        for m in masks:
            ys, xs = np.nonzero(m == class_id)
            if len(xs):
                centroids.append((xs.mean(), ys.mean()))
        c = np.array(centroids) if len(centroids) > 1 else np.zeros((2, 2))
        d = np.diff(c, axis=0)
        features += [len(centroids) / len(masks), d[:, 0].mean(), d[:, 1].mean(), np.abs(d[:, 0]).mean(),
                     np.abs(d[:, 1]).mean(), c[:, 0].std(), c[:, 1].std()]
    return features


@pytest.mark.slow
def test_labels_are_predictable_from_the_frames(tmp_path):
    """A linear classifier on object-motion features recovers the class: the data can be learnt."""
    from sklearn.linear_model import LogisticRegression

    info = synthetic.generate(tmp_path, format="toyota", videos=120, seed=5, height=48, width=64, fps=6.0,
                              min_seconds=3.0, max_seconds=4.0)
    x, y = [], []
    for clip, _ in toyota.list_clips(info["videos_dir"]):
        x.append(_motion_features(np.load(Path(info["masks_dir"]) / f"{clip.id}.npz")["masks"]))
        y.append(clip.label)
    order = np.random.default_rng(0).permutation(len(y))  # the listing is sorted by class name
    x, y = np.array(x)[order], np.array(y)[order]
    model = LogisticRegression(max_iter=3000).fit(x[:80], y[:80])
    accuracy = (model.predict(x[80:]) == y[80:]).mean()
    assert accuracy >= 0.7, accuracy  # chance is 0.1
