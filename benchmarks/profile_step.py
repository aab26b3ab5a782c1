"""Where a training step's time goes: device kernel time per kind of work and per Keras layer type.

Traces a few steps of `benchmarks/train_step.py`'s step with the JAX profiler, reads the trace back with
`jax.profiler.ProfileData` (no TensorBoard plugin needed) and joins each kernel to the optimised HLO
instruction that launched it, whose metadata names the Keras layer (`block4_m0_a_bn`, ...):

    KERAS_BACKEND=jax python benchmarks/profile_step.py --structure assemblenet50 --batch 8 --precision bf16

Prints XLA's cost analysis (FLOPs and bytes the compiled step touches: bytes / bandwidth is the time a
memory-bound step cannot beat), then one JSON line with kernel time by kind (conv / matmul / pooling /
fused elementwise+reduction ...), by layer type, and the top kernels.
"""

import collections
import glob
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

from train_step import build_step, gpu_name, make_parser  # noqa: E402

# Layer name suffixes written by model/blocks.py and model/assemblenet.py → the kind of layer.
LAYER_KINDS = [("_conv", "conv"), ("_bn", "batch norm"), ("_out", "relu"), ("_add", "add"),
               ("_pool", "max pool"), ("_fusion", "connection fusion"), ("_attention", "attention"),
               ("_onehot", "object one-hot"), ("sink_", "sink"), ("sgd", "optimizer")]


def kernel_kind(name: str) -> str:
    """Coarse kind of a GPU kernel from its name (cuDNN / cuBLAS / XLA emitter naming)."""
    n = name.lower()
    if any(k in n for k in ("fprop", "dgrad", "wgrad", "convolve", "implicit_gemm", "cudnn")):
        return "convolution"
    if any(k in n for k in ("gemm", "nvjet", "cutlass", "cublas", "dot", "triton")):
        return "matmul"
    if "select_and_scatter" in n or "reduce_window" in n or "reduce-window" in n:
        return "pooling (reduce_window / select_and_scatter)"
    if "reduce" in n or "reduction" in n:
        return "fused reduction"
    if "fusion" in n or "transpose" in n or "copy" in n or "convert" in n:
        return "fused elementwise / copy"
    if "memcpy" in n or "memset" in n:
        return "memcpy / memset"
    return "other"


def layer_kind(op_name: str) -> str:
    """The layer kind of an HLO instruction from the Keras layer names in its op_name path."""
    grad = "backward " if ("transpose(" in op_name or "/vjp" in op_name) else ""
    for part in reversed(op_name.split("/")):
        for suffix, kind in LAYER_KINDS:
            if suffix in part:
                return grad + kind
    return grad + "other"


def hlo_layer_kinds(hlo_text: str) -> dict:
    """Optimised HLO instruction name → layer kind, from its metadata op_name or, for a fusion without
    one, the majority over the instructions of the computation it calls."""
    computations = collections.defaultdict(list)  # computation → op_names of its instructions
    instructions = {}  # instruction → (own op_name or None, called computations)
    current = None
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            current = line.split()[1] if line.startswith("ENTRY") else line.split()[0]
            current = current.lstrip("%")
            continue
        match = re.match(r"^\s+(?:ROOT\s+)?%?([\w.\-]+) = ", line)
        if not match:
            continue
        op_name = re.search(r'op_name="([^"]*)"', line)
        op_name = op_name.group(1) if op_name else None
        calls = [c.lstrip("%") for c in re.findall(r"(?:calls|to_apply)=(%?[\w.\-]+)", line)]
        instructions[match.group(1)] = (op_name, calls)
        if op_name and current:
            computations[current].append(op_name)
    kinds = {}
    for name, (op_name, calls) in instructions.items():
        names = [op_name] if op_name else [n for c in calls for n in computations.get(c, [])]
        if names:
            kinds[name] = collections.Counter(layer_kind(n) for n in names).most_common(1)[0][0]
    return kinds


def device_events(trace_dir: str):
    """(kernel name, hlo op, duration ns) of every kernel on the first GPU plane (host thunks on CPU)."""
    from jax.profiler import ProfileData

    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    data = ProfileData.from_file(path)
    planes = [p for p in data.planes if p.name.startswith("/device:GPU")]
    if not planes:
        planes = [p for p in data.planes if p.name.startswith("/host:CPU")]
    for plane in planes[:1]:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                hlo = stats.get("hlo_op") or stats.get("long_name") or event.name
                yield event.name, str(hlo), event.duration_ns


def main(argv=None):
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dump-dir", help="also write the optimised HLO and every kernel event here")
    parser.add_argument("--bandwidth", type=float, default=3.0e12,
                        help="device memory bytes/s (read + written) for the memory floor; 3.0e12 measured on H100")
    args = parser.parse_args(argv)
    # Kernels launched from CUDA graphs (XLA command buffers) name the graph, not their HLO instruction.
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_gpu_enable_command_buffer="
    import jax

    train_step, state, inputs, labels, forward_flops, structure = build_step(args)
    compiled = train_step.lower(state, inputs, labels).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    hlo_text = compiled.as_text()
    kinds = hlo_layer_kinds(hlo_text)
    for _ in range(args.warmup + 1):
        state, loss = compiled(state, inputs, labels)
    loss.block_until_ready()
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(args.profile_steps):
                state, loss = compiled(state, inputs, labels)
            loss.block_until_ready()
        events = list(device_events(trace_dir))

    if args.dump_dir:
        os.makedirs(args.dump_dir, exist_ok=True)
        with open(os.path.join(args.dump_dir, "step.hlo.txt"), "w") as f:
            f.write(hlo_text)
        with open(os.path.join(args.dump_dir, "kernels.tsv"), "w") as f:
            f.writelines(f"{name}\t{hlo}\t{ns}\n" for name, hlo, ns in events)
    by_kind, by_layer, by_kernel = collections.Counter(), collections.Counter(), collections.Counter()
    if gpu_name() == "cpu":  # host planes also hold Python and runtime events: keep the HLO thunks
        events = [e for e in events if e[1] in kinds]
    for name, hlo, ns in events:
        ms = ns / 1e6 / args.profile_steps
        by_kind[kernel_kind(name)] += ms
        kind = kinds.get(hlo, "unattributed")
        by_layer[kind] += ms
        by_kernel[f"{name[:90]} [{hlo}: {kind}]"] += ms
    total = sum(by_kind.values())
    bytes_accessed = float(cost.get("bytes accessed", 0.0))

    def table(counter, top=None):
        return {k: [round(v, 2), round(v / total, 3)] for k, v in counter.most_common(top)}

    print(json.dumps({
        "model": f"{structure.name} ({args.attention})", "device": gpu_name(), "precision": args.precision,
        "batch": args.batch, "frames": args.frames, "size": args.size,
        "forward_gflops_per_clip": round(forward_flops / 1e9, 2),
        "xla_flops_per_step_t": round(float(cost.get("flops", 0.0)) / 1e12, 3),
        "xla_bytes_per_step_gb": round(bytes_accessed / 1e9, 2),
        "memory_floor_ms": round(1000 * bytes_accessed / args.bandwidth, 2),
        "kernel_ms_per_step": round(total, 2), "kernels_per_step": len(events) // args.profile_steps,
        "by_kind_ms_share": table(by_kind), "by_layer_ms_share": table(by_layer),
        "top_kernels_ms_share": table(by_kernel, args.top)}), flush=True)


if __name__ == "__main__":
    main()
