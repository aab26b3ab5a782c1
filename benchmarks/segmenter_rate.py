"""Frames/s of a SegFormer-B0-sized keras-hub segmenter (random weights) at 512², as the preprocessing job
runs it (uint8 in, argmax on the device, uint8 class map out), per batch size and dtype policy.

    KERAS_BACKEND=jax python benchmarks/segmenter_rate.py --batches 32,64 --policies float32,mixed_bfloat16
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="32")
    parser.add_argument("--policies", default="float32")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--parts", action="store_true",
                        help="also time the MiT encoder alone, the SegFormer backbone (encoder + MLP decoder) "
                             "and the segmenter without its final resize, each as one jitted program")
    args = parser.parse_args()
    import tempfile

    import keras
    import numpy as np

    from benchmarks.preprocess_job import make_segmenter_file, standalone_segment
    from preprocessing.segment import load_keras_file

    frames = np.random.default_rng(0).integers(0, 256, (8, 256, 455, 3), np.uint8)  # records' size, resized
    with tempfile.TemporaryDirectory() as folder:
        for policy in args.policies.split(","):
            keras.config.set_dtype_policy(policy)
            path = make_segmenter_file(Path(folder) / f"segformer_{policy}.keras", args.size)
            for batch in [int(b) for b in args.batches.split(",")]:
                rate = standalone_segment(path, frames, batch, args.repeats)  # the job's call, compiled first
                print(json.dumps({"policy": policy, "batch": batch, "frames_per_s": round(rate, 1)}), flush=True)
                if args.parts:
                    parts(load_keras_file(path, batch_size=batch).model, batch, args.size, args.repeats)


def parts(model, batch, size, repeats):
    """Frames/s of the model's pieces, float input at the model's size, the output reduced on the device."""
    import jax
    import keras
    import numpy as np

    backbone = model.backbone
    encoder = backbone.image_encoder if hasattr(backbone, "image_encoder") else None
    head_in = keras.Model(model.input, model.get_layer(model.output_segmentation_head.name).output)
    pieces = {"segmenter_without_final_resize": head_in, "backbone": backbone}
    if encoder is not None:
        pieces["encoder"] = encoder
    x = jax.numpy.asarray(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    for name, piece in pieces.items():
        def run(trainable, non_trainable, x, piece=piece):
            out = piece.stateless_call(trainable, non_trainable, x, training=False)[0]
            out = out if not isinstance(out, dict) else list(out.values())
            return sum(jax.numpy.sum(o.astype("float32")) for o in jax.tree_util.tree_leaves(out))
        compiled = jax.jit(run)
        weights = ([v.value for v in piece.trainable_variables], [v.value for v in piece.non_trainable_variables])
        compiled(*weights, x).block_until_ready()
        start = time.perf_counter()
        for _ in range(repeats):
            compiled(*weights, x).block_until_ready()
        print(json.dumps({"part": name, "batch": batch,
                          "frames_per_s": round(batch * repeats / (time.perf_counter() - start), 1)}), flush=True)


if __name__ == "__main__":
    main()
