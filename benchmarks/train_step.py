"""Training-step throughput and model FLOPs utilisation (MFU) of an AssembleNet structure.

Runs under Keras's JAX backend (no TensorFlow needed), as on a GPU machine:

    KERAS_BACKEND=jax python benchmarks/train_step.py --structure assemblenet50 --frames 32 --size 224 \
        --batch 8 --precision bf16 --baseline

MFU = (3 x forward FLOPs per clip x clips/s) / peak FLOP/s of the chip (the backward pass costs twice
the forward). `--baseline` also measures torchvision's R(2+1)D-18 (bf16 autocast, channels-last) in the
same process, a (2+1)D reference of similar cost. Prints one JSON line per measurement.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# Dense peak FLOP/s per chip (vendor figures): bf16 tensor cores, and TF32 for fp32 training.
PEAKS = {
    "H100 80GB HBM3": {"bf16": 989e12, "fp32": 494e12},
    "H100 PCIe": {"bf16": 756e12, "fp32": 378e12},
    "H200": {"bf16": 989e12, "fp32": 494e12},
    "A100": {"bf16": 312e12, "fp32": 156e12},
}


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "cpu"


def peak_flops(name: str, precision: str) -> float | None:
    for key, peaks in PEAKS.items():
        if key.split()[0] in name and all(part in name for part in key.split()[1:2]):
            return peaks[precision]
    return None


def build_step(args):
    """The jitted AssembleNet training step of `args`, its initial state and device-resident inputs.

    Returns (train_step, state, inputs, labels, forward_flops, structure); `train_step(state, x, y)`
    returns (state, loss).
    """
    import jax
    import jax.numpy as jnp
    import keras

    from model.assemblenet import build_assemblenet
    from model.structure import get_structure
    from model.summary import count_flops

    if args.precision == "bf16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    structure = get_structure(args.structure)
    flops_model = build_assemblenet(structure, args.num_classes, attention=args.attention,
                                    frames=args.frames, size=args.size)
    forward_flops = count_flops(flops_model)
    del flops_model
    model = build_assemblenet(structure, args.num_classes, attention=args.attention, frames=args.frames,
                              size=args.size)
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2)

    key = jax.random.PRNGKey(0)
    shapes = {"rgb": (args.batch, args.frames, args.size, args.size, 3),
              "flow": (args.batch, args.frames, args.size, args.size, 2)}
    inputs = {}
    for m in structure.modalities:
        key, sub = jax.random.split(key)
        if m == "object":
            inputs[m] = jax.random.randint(sub, (args.batch, args.frames, args.size, args.size), 0, 151)
        else:
            inputs[m] = jax.random.uniform(sub, shapes[m], minval=-1, maxval=1)
    labels = (jax.random.uniform(key, (args.batch, args.num_classes)) > 0.9).astype(jnp.float32)

    def loss_and_updates(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, logits), non_trainable

    grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

    @jax.jit
    def train_step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), loss

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    return train_step, state, inputs, labels, forward_flops, structure


def bench_assemblenet(args) -> dict:
    import keras
    import numpy as np

    train_step, state, inputs, labels, forward_flops, structure = build_step(args)
    t0 = time.perf_counter()
    state, loss = train_step(state, inputs, labels)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    for _ in range(args.warmup):
        state, loss = train_step(state, inputs, labels)
    loss.block_until_ready()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, loss = train_step(state, inputs, labels)
    loss.block_until_ready()
    elapsed = time.perf_counter() - t0
    clips_per_s = args.batch * args.steps / elapsed
    name = gpu_name()
    peak = peak_flops(name, args.precision)
    achieved = 3 * forward_flops * clips_per_s
    return {"model": f"{structure.name} ({args.attention})", "framework": f"keras {keras.__version__} jax",
            "device": name, "precision": args.precision, "frames": args.frames, "size": args.size,
            "batch": args.batch, "forward_gflops_per_clip": round(forward_flops / 1e9, 2),
            "clips_per_s": round(clips_per_s, 2), "step_ms": round(1000 * elapsed / args.steps, 2),
            "achieved_tflops": round(achieved / 1e12, 1), "mfu": None if peak is None else round(achieved / peak, 4),
            "compile_s": round(compile_s, 1), "final_loss": float(np.asarray(loss))}


def bench_r2plus1d(args) -> dict:
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    device = "cuda"
    model = torchvision.models.video.r2plus1d_18(num_classes=args.num_classes).to(device)
    model = model.to(memory_format=torch.channels_last_3d)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device).to(
        memory_format=torch.channels_last_3d)
    y = (torch.rand(args.batch, args.num_classes, device=device) > 0.9).float()
    with FlopCounterMode(display=False) as counter:
        model(x[:1])
    forward_flops = counter.get_total_flops()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    torch.backends.cudnn.benchmark = True
    for _ in range(args.warmup + 1):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    clips_per_s = args.batch * args.steps / elapsed
    name = torch.cuda.get_device_name()
    peak = peak_flops(name, "bf16")
    achieved = 3 * forward_flops * clips_per_s
    return {"model": "torchvision r2plus1d_18", "framework": f"torch {torch.__version__}", "device": name,
            "precision": "bf16", "frames": args.frames, "size": args.size, "batch": args.batch,
            "forward_gflops_per_clip": round(forward_flops / 1e9, 2), "clips_per_s": round(clips_per_s, 2),
            "step_ms": round(1000 * elapsed / args.steps, 2), "achieved_tflops": round(achieved / 1e12, 1),
            "mfu": None if peak is None else round(achieved / peak, 4), "final_loss": float(loss)}


def make_parser(description=None):
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--structure", default="assemblenet50")
    parser.add_argument("--attention", default="none")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=157)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--baseline", action="store_true", help="also measure torchvision R(2+1)D-18")
    parser.add_argument("--skip-assemblenet", action="store_true")
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    if not args.skip_assemblenet:
        print(json.dumps(bench_assemblenet(args)), flush=True)
    if args.baseline:
        print(json.dumps(bench_r2plus1d(args)), flush=True)


if __name__ == "__main__":
    main()
