"""Train and score one model on the controlled benchmark, fast: the ablations' unit of work.

`train_and_score(structure, bench, ...)` builds the model with the project's builder
(model.assemblenet.build_assemblenet), trains it with the project's recipe pieces (MomentumL2 with the
L2 term through the momentum, AssembleNet A.6; the warm-up + cosine schedule of pipelines.train;
softmax cross-entropy with label smoothing, as the single-label Toyota recipe) and scores it by top-1
accuracy on a benchmark split. The clips stay in memory; each step samples a batch by index (epoch
permutations, seeded) and calls the one compiled `train_on_batch` function. Under JAX the splits are
put on the device once per benchmark (uint8 / float16, ~1.6 GB for the default training split) and a
batch is gathered and converted there by one jitted function, so a step moves only the batch's
indices; under TensorFlow a batch is gathered on the host (numpy) and copied.

Structure variants the suites need live here too (`with_modalities`, `without_object_stem`,
`with_object_fraction`, `with_peers`, `with_random_peers`), so suites on other branches use the same ones.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ablation.benchmark import DECOY_STREAM
from model.structure import Node, Structure, get_structure
from pipelines import compile_cache


@dataclasses.dataclass(frozen=True)
class Budget:
    """The training budget of every run of a suite (the same for every row: the issue's rule).

    Defaults (our choice, untuned, sized for one H200 lease, docs/ablations.md): `tiny` at 16 x 64²,
    batch 32, 1,500 steps (~15 epochs of the 3,072 training clips; on the H200 a model's ~15 s compile
    costs more than its steps), peak learning rate 0.4 (0.0125 per clip: at batch 8, 0.1 learned on
    this CPU where 0.4 did not), 10% linear warm-up, cosine decay. The papers' 50K steps at batch 128
    (AssembleNet++ §4) are another scale.
    """

    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 0.4
    warmup_steps: int = 150
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    frames: int = 16
    size: int = 64
    # Keras's jit_compile. "auto" (XLA under JAX and, where it can, TensorFlow); False only makes sense
    # on TensorFlow, on a CPU, where XLA compiles a search model for minutes (measured: 477 s vs 53 s
    # for the graph without XLA on this 2-core VM, loaded).
    jit_compile: bool | str = "auto"

    def __post_init__(self):
        for name in ("steps", "batch_size", "frames", "size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"Budget.{name}={getattr(self, name)} must be positive")
        if self.size % 32:
            raise ValueError(f"Budget.size={self.size} must be a multiple of 32 (the model's total stride)")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"Budget.warmup_steps={self.warmup_steps}: expected 0 <= warmup_steps < "
                             f"steps={self.steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"Budget.learning_rate={self.learning_rate} must be positive")
        if self.jit_compile not in ("auto", True, False):
            raise ValueError(f"Budget.jit_compile={self.jit_compile!r}: expected 'auto', True or False")


# ----------------------------------------------------------------------------------------------
# Structure variants.

def object_stems(structure: Structure) -> list[int]:
    return [n.index for n in structure.stems if n.modality == "object"]


def with_modalities(structure, keep, name: str | None = None) -> Structure:
    """The structure with only the stems of the modalities in `keep` (and their edges and peers)."""
    structure = get_structure(structure)
    gone = {n.index for n in structure.stems if n.stream not in set(keep)}
    if not gone:
        return structure
    if len(gone) == len(structure.stems):
        raise ValueError(f"{structure.name}: no stem of modalities {sorted(keep)}")
    nodes = []
    for n in structure.nodes:
        if n.index in gone:
            continue
        if not n.is_stem:
            inputs = tuple(j for j in n.inputs if j not in gone)
            if not inputs:
                raise ValueError(f"{structure.name}: block {n.index} takes only stems of other modalities "
                                 f"than {sorted(keep)}; it has no input without them")
            n = dataclasses.replace(n, inputs=inputs, peer=None if n.peer in gone else n.peer)
        nodes.append(n)
    return structure.replace(name=name or f"{structure.name}_{'_'.join(sorted(keep))}", nodes=tuple(nodes))


def with_decoy(structure, name: str | None = None) -> Structure:
    """Benchmark v2: the structure with one more stem, a flow stem (the flow stem's width, dilation and
    stride) reading the decoy stream, fed into every block the real flow stem feeds. Its edges carry
    nothing about the label: connection learning should turn them down (AssembleNet §3.2)."""
    structure = get_structure(structure)
    flows = [n for n in structure.stems if n.stream == "flow"]
    if not flows:
        raise ValueError(f"{structure.name}: no flow stem to copy for the decoy stream")
    if any(n.stream == DECOY_STREAM for n in structure.stems):
        return structure
    flow = flows[0]
    decoy = Node(max(n.index for n in structure.nodes) + 1, 0, (DECOY_STREAM,), flow.channels, flow.dilation,
                 flow.stride)
    nodes = tuple(n if n.is_stem or flow.index not in n.inputs else
                  dataclasses.replace(n, inputs=n.inputs + (decoy.index,)) for n in structure.nodes)
    return structure.replace(name=name or f"{structure.name}_decoy", nodes=nodes + (decoy,))


def decoy_stems(structure: Structure) -> list[int]:
    return [n.index for n in structure.stems if n.stream == DECOY_STREAM]


def without_object_stem(structure, name: str | None = None) -> Structure:
    """The structure with its object stem(s) and their edges removed (Table 1's "without object")."""
    structure = get_structure(structure)
    if not object_stems(structure):
        return structure
    keep = [m for m in structure.modalities if m != "object"]
    return with_modalities(structure, keep, name=name or f"{structure.name}_noobj")


def with_object_fraction(structure, fraction: float, seed: int = 0, name: str | None = None) -> Structure:
    """AssembleNet++ Fig. 4(b): keep a direct object-stem edge into round(fraction · B) of the B blocks
    that have one (chosen with `seed`), remove it from the others; fraction 0 removes the object stem."""
    structure = get_structure(structure)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"object fraction {fraction} must be in [0, 1]")
    stems = set(object_stems(structure))
    if not stems:
        raise ValueError(f"{structure.name}: no object stem to connect")
    fed = [n.index for n in structure.blocks if stems & set(n.inputs)]
    keep = round(fraction * len(fed))
    if keep == 0:
        return without_object_stem(structure, name=name or f"{structure.name}_obj0")
    kept = set(np.random.default_rng(seed).choice(fed, size=keep, replace=False).tolist())
    nodes = []
    for n in structure.nodes:
        if not n.is_stem and n.index in fed and n.index not in kept:
            inputs = tuple(j for j in n.inputs if j not in stems)
            if not inputs:
                raise ValueError(f"{structure.name}: block {n.index} takes only the object stem")
            n = dataclasses.replace(n, inputs=inputs)
        nodes.append(n)
    return structure.replace(name=name or f"{structure.name}_obj{fraction:g}", nodes=tuple(nodes))


def with_peers(structure, peers: Mapping[Any, Any], name: str | None = None) -> Structure:
    """The structure with block i's peer set to peers[i] (keys and values may be strings)."""
    structure = get_structure(structure)
    table = {int(i): int(p) for i, p in peers.items()}
    nodes = tuple(n if n.is_stem or n.index not in table else dataclasses.replace(n, peer=table[n.index])
                  for n in structure.nodes)
    return structure.replace(name=name or structure.name, nodes=nodes)


def with_random_peers(structure, seed: int = 0, name: str | None = None) -> Structure:
    """AssembleNet++ Table 4's "random peer-attention": each block's peer drawn uniformly from its valid
    peers (L(p) < L(i), §3.4) that feed the output, with a fixed `seed`."""
    structure = get_structure(structure)
    rng = np.random.default_rng(seed)
    live = structure.live()
    peers = {}
    for n in sorted(structure.blocks, key=lambda n: n.index):
        candidates = [p for p in structure.peers(n.index) if p in live] or list(structure.peers(n.index))
        peers[n.index] = int(rng.choice(candidates))
    return with_peers(structure, peers, name=name or f"{structure.name}_randompeers{seed}")


# ----------------------------------------------------------------------------------------------
# Training.

def _compile(model, budget: Budget):
    import keras

    from model.optimizer import MomentumL2
    from pipelines.train import WarmupCosine

    schedule = WarmupCosine(budget.learning_rate, budget.warmup_steps, budget.steps)
    optimizer = MomentumL2(learning_rate=schedule, momentum=budget.momentum, l2=budget.weight_decay)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=budget.label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=budget.jit_compile)


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch_size) clip indices: consecutive seeded permutations of range(n) (each clip once
    per epoch)."""
    rng = np.random.default_rng([int(seed), 0xBA7C])
    need = steps * batch_size
    order = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])
    return order[:need].reshape(steps, batch_size)


class Feeder:
    """Batches (inputs, one-hot labels) of a benchmark split by clip index: on the JAX backend gathered
    on the device from arrays uploaded once per benchmark and split, else gathered with numpy."""

    def __init__(self, bench, modalities):
        import keras

        self.bench = bench
        self.modalities = tuple(modalities)
        self.on_device = keras.backend.backend() == "jax"
        self.onehot = np.eye(bench.num_classes, dtype=np.float32)
        if self.on_device:
            import jax

            self._gather = jax.jit(self._device_batch)

    def _arrays(self, split):
        # Cached on the benchmark object: every model of a suite reuses the upload.
        cache = self.bench.__dict__.setdefault("_device_arrays", {})
        if split not in cache:
            import jax

            data = self.bench.splits[split]
            cache[split] = jax.device_put({"rgb": data.rgb, "flow": data.flow, "object": data.object,
                                           "labels": data.labels, "onehot": self.onehot,
                                           "decoy_source": data.decoy_source})
        return cache[split]

    def _device_batch(self, arrays, index):
        import jax.numpy as jnp

        out = {}
        for m in self.modalities:
            if m == "rgb":
                out[m] = arrays["rgb"][index].astype(jnp.float32) / 127.5 - 1.0
            elif m == "flow":
                out[m] = arrays["flow"][index].astype(jnp.float32)
            elif m == DECOY_STREAM:
                out[m] = arrays["flow"][arrays["decoy_source"][index]].astype(jnp.float32)
            else:
                out[m] = arrays["object"][index].astype(jnp.int32)
        return out, arrays["onehot"][arrays["labels"][index]]

    def batch(self, split: str, index):
        if self.on_device:
            return self._gather(self._arrays(split), np.asarray(index, np.int32))
        labels = self.bench.labels(split)[index]
        return self.bench.inputs(split, index, self.modalities), self.onehot[labels]


def predict(model, bench, split: str, modalities, batch_size: int, feeder: Feeder | None = None) -> np.ndarray:
    """Logits of every clip of `split`, in batches of one shape (the last one padded)."""
    feeder = feeder or Feeder(bench, modalities)
    n = len(bench.labels(split))
    outputs = []
    for start in range(0, n, batch_size):
        index = np.arange(start, start + batch_size) % n
        logits = model.predict_on_batch(feeder.batch(split, index)[0])
        outputs.append(np.asarray(logits)[: min(batch_size, n - start)])
    return np.concatenate(outputs)


def train_steps(model, bench, feeder: Feeder, budget: Budget, seed: int, eval_split: str,
                connections: Callable[[], Mapping[str, Mapping[str, float]]], trace_every: int = 0):
    """`budget.steps` steps of `model` on bench's train split (batch_indices(seed)); stops at a non-finite
    loss. Returns (losses, compile_seconds: the first step's time, trace: with trace_every = k > 0, σ(w)
    from `connections()` and the top-1 on eval_split after every k steps; see train_and_score)."""
    losses: list[float] = []
    compile_seconds = 0.0
    trace = {"steps": [], "weights": {}, "score": []}

    def record(step: int) -> None:
        trace["steps"].append(step)
        for block, row in connections().items():
            for j, value in row.items():
                trace["weights"].setdefault(block, {}).setdefault(j, []).append(value)
        logits = predict(model, bench, eval_split, feeder.modalities, budget.batch_size, feeder)
        trace["score"].append(float(np.mean(logits.argmax(-1) == bench.labels(eval_split))))

    if trace_every:
        record(0)
    for step, index in enumerate(batch_indices(len(bench.labels("train")), budget.batch_size, budget.steps, seed)):
        first = time.time()
        loss = model.train_on_batch(*feeder.batch("train", index))
        losses.append(float(np.asarray(loss if np.ndim(loss) == 0 else loss[0])))
        if step == 0:
            compile_seconds = time.time() - first
        if not np.isfinite(losses[-1]):
            break
        if trace_every and ((step + 1) % trace_every == 0 or step + 1 == budget.steps):
            record(step + 1)
    return losses, compile_seconds, (trace if trace_every else None)


def scores(logits, bench, eval_split: str, losses: Sequence[float]) -> dict[str, Any]:
    """The scores of train_and_score's result from eval_split's logits and the training losses:
    top-1, the two factors, the final loss, divergence, steps, and on benchmark v2 the top-1 on the
    clips whose segmenter failed and on the others."""
    from ablation.benchmark import NUM_OBJECTS

    predicted = np.asarray(logits).argmax(-1)
    true = bench.labels(eval_split)
    tail = losses[-max(1, len(losses) // 10):]
    result = {
        "score": float(np.mean(predicted == true)),
        "motion_accuracy": float(np.mean(predicted // NUM_OBJECTS == true // NUM_OBJECTS)),
        "object_accuracy": float(np.mean(predicted % NUM_OBJECTS == true % NUM_OBJECTS)),
        "final_loss": float(np.mean(tail)),
        "diverged": bool(not np.isfinite(losses[-1])),
        "steps": len(losses),
    }
    failed = bench.splits[eval_split].object_failed
    if len(failed):  # benchmark v2: the score on the clips whose segmenter failed, and on the others
        result["score_segmenter_failed"] = float(np.mean(predicted[failed] == true[failed]))
        result["score_segmenter_ok"] = float(np.mean(predicted[~failed] == true[~failed]))
    return result


def stem_rms(model, structure, inputs) -> dict[str, float]:
    """{"<stem index>": root-mean-square of that stem's output on `inputs`}. A stem the network has
    silenced (its batch-norm scale driven to ~0, or every ReLU dead) passes nothing on, and then the σ(w)
    of its outgoing connections receives no gradient (∂L/∂w = ∂L/∂x_in · σ'(w) · x_out, Eq. 3 of
    AssembleNet++): the connection weight stays where it was however useless the stream is."""
    return probe_rms(stem_probe(model, structure), inputs)


def stem_probe(model, structure):
    """(stem indices, a model of `model`'s inputs to those stems' outputs), for `probe_rms`."""
    import keras

    names = {}
    for layer in model.layers:  # the last layer of each stem, in the functional graph's order
        for node in structure.stems:
            if layer.name.startswith(f"stem{node.index}_"):
                names[node.index] = layer.name
    return list(names), keras.Model(model.inputs, [model.get_layer(n).output for n in names.values()])


def probe_rms(probe, inputs) -> dict[str, float]:
    """{"<stem index>": RMS of that stem's output on `inputs`} from `stem_probe`'s (indices, model)."""
    indices, model = probe
    outputs = model.predict_on_batch(inputs)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {str(i): float(np.sqrt(np.mean(np.square(np.asarray(o, np.float32)))))
            for i, o in zip(indices, outputs, strict=True)}


def check_inputs(bench, budget: Budget, eval_split: str | None = None) -> None:
    """The benchmark's clips are the budget's shape and `eval_split` (if given) is one of its splits."""
    if (bench.frames, bench.size) != (budget.frames, budget.size):
        raise ValueError(f"benchmark clips are {bench.frames} x {bench.size}², the budget asks for "
                         f"{budget.frames} x {budget.size}²")
    if eval_split is not None and eval_split not in bench.splits:
        raise ValueError(f"eval_split {eval_split!r}: expected one of {sorted(bench.splits)}")


def train_and_score(structure, bench, *, attention: str = "none", object_stem: bool = True, seed: int = 0,
                    budget: Budget | None = None, eval_split: str = "val", trace_every: int = 0,
                    **model_options) -> dict[str, Any]:
    """Trains `structure` (a Structure, name or JSON path) on `bench`'s train split and scores it on
    `eval_split`. `object_stem=False` drops the object stem first. `model_options` go to
    build_assemblenet (e.g. default_peers, temporal_pool).

    Returns {"score": top-1 accuracy on eval_split, "motion_accuracy", "object_accuracy" (the class's
    two factors read off the predicted class), "params", "seconds" (build + train + eval),
    "compile_seconds" (the first step), "final_loss" (mean of the last 10% of steps),
    "edge_weights" ({"<block>": {"<input>": σ(w)}}, model/evolution.py's JSON form), "attention_weights"
    (search models: {"<block>": {"<peer>": softmax(h)}}; else {}), "structure" (the JSON trained),
    "attention", "seed", "eval_split", "stem_rms" (see `stem_rms`)}; with `trace_every` = k > 0 also
    "edge_trace" ({"steps": [...],
    "weights": {"<block>": {"<input>": [σ(w) at each of those steps]}}, "score": [top-1 on eval_split at
    each of those steps]}: the connection-learning curve of AssembleNet §3.2 beside the learning curve
    that a suite's step budget is chosen from).
    """
    import keras

    from model.assemblenet import build_assemblenet
    from model.evolution import edge_weights_to_json, parse_edge_weights
    from model.pruning import attention_weights, connection_weights

    compile_cache.enable()  # the seeds of a row, and other processes, reuse one compiled program
    budget = budget or Budget()
    check_inputs(bench, budget, eval_split)
    structure = get_structure(structure)
    if not object_stem:
        structure = without_object_stem(structure)
    started = time.time()
    keras.backend.clear_session()
    keras.utils.set_random_seed(int(seed))
    model = build_assemblenet(structure, bench.num_classes, attention=attention, frames=budget.frames,
                              size=budget.size, **model_options)
    _compile(model, budget)
    modalities = structure.modalities
    feeder = Feeder(bench, modalities)
    losses, compile_seconds, trace = train_steps(model, bench, feeder, budget, seed, eval_split,
                                                 lambda: connection_weights(model, structure), trace_every)
    logits = predict(model, bench, eval_split, modalities, budget.batch_size, feeder)
    result = {
        **scores(logits, bench, eval_split, losses),
        "params": int(model.count_params()),
        "compile_seconds": compile_seconds,
        "edge_weights": edge_weights_to_json(parse_edge_weights(connection_weights(model, structure))),
        "attention_weights": attention_weights(model, structure) if attention == "search" else {},
        "structure": structure.to_json(),
        "attention": attention,
        "seed": int(seed),
        "eval_split": eval_split,
        "stem_rms": stem_rms(model, structure, feeder.batch(eval_split, np.arange(budget.batch_size)
                                                            % len(bench.labels(eval_split)))[0]),
    }
    if trace_every:
        result["edge_trace"] = trace
    result["seconds"] = time.time() - started
    keras.backend.clear_session()
    return result
