"""The supernet cell of the differentiable one-shot search, and the derivation of the final cell.

AttentionNAS searches with "an efficient differentiable search method"; its parameterisation is not
published, so this is the project's reconstruction (DARTS-style, docs/attention_nas.md):
- every operation i holds every candidate of every choice; each choice has architecture logits α
  (trainable weights named `arch_op{i}_{choice}`) and the operation mixes the candidates by softmax(α);
  the choices are mixed where they act, so the cost grows with the sum, not the product, of the
  candidate counts:
    G₁, G₂, G₃:  Σ_k softmax(α_g)_k G^k(f)  (convolutions at the widest C′);
    reduction:   channel masks — (G₁ ⊙ Σ_r p_r 1[c < C′_r]) · G₂ᵀ = Σ_r p_r (first C′_r channels)·ᵀ,
                 and for map-based attention Σ_r p_r · mean of the first C′_r channels;
    activation:  A = Σ_a p_a φ_a(·);  type and dimension: Σ p_type p_dim (A · G₃(f));
- input edges: operation i takes Σ_j softmax(β_i)_j h_j over the cell input and earlier operations
  (`arch_op{i}_inputs`, i ≥ 2; operation 1 has the cell input only). A softmax rather than independent
  sigmoids: the inputs compete, so the weights can make a decision (sigmoids from 0 all stayed just
  under 0.5 in 120 steps, BENCHMARKS.md);
- every softmax divides its logits by the cell's `temperature` (a non-trainable weight, 1 unless the
  search anneals it);
- every candidate output (type × dimension) goes through BatchNorm without affine parameters (DARTS);
  the derived cell keeps that normalisation (`"normalize": true`), so at one-hot architecture weights
  the supernet and the derived cell are the same function, in training and in inference mode;
- a choice with a single candidate has no architecture weight (nothing to learn, and it would get no
  gradient); operation 1 has no input-edge weight;
- `excluded` [type, dimension] pairs are left out of the supernet: a candidate that cannot attend at the
  cell's feature size (one key per query after `kv_pool`, or one token for a map; `degenerate_pairs`)
  refuses to build unless excluded. Dimension d mixes only its allowed types (p_type renormalised over
  them: with two types either both or the one left), so the effective weight of (type, d) is
  p_d · p_type|d, which is what `derive_cell` maximises;
- combine: Σ_i h_i → BatchNorm → + x, as in a derived cell but with γ starting at 1 (a zero γ would
  hide every architecture gradient until γ moves; the supernet trains from scratch anyway).
Deriving the cell: argmax per choice; input edges whose weight is at least `edge_ratio` (0.5) × the
strongest one's (relative, so it works for any number of inputs).
`AlternatingAdam` trains network and architecture weights in one Keras `fit`/`train_on_batch` loop, on
any backend.
"""

import keras
import numpy as np
from keras import ops

from model.attention_nas.cell_spec import SUPERNET_CANDIDATES, normalize_cell
from model.attention_nas.operations import (
    DEFAULT_MAX_ATTENTION_SIZE,
    activate_map,
    activate_scores,
    check_attention_size,
    degenerate_pairs,
    dot_attention,
    g_kernel,
    map_kernel,
    reduced_width,
    serializable,
)

CHOICES = tuple(SUPERNET_CANDIDATES)  # dimension, type, g1, g2, g3, activation, reduction


@serializable
class SupernetCell(keras.layers.Layer):
    """(B, T, H, W, channels) → same shape; every candidate of every choice, mixed by arch weights."""

    def __init__(
        self,
        channels,
        num_operations=3,
        candidates=None,
        excluded=None,
        kv_pool=2,
        max_attention_size=DEFAULT_MAX_ATTENTION_SIZE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        spec = normalize_cell(
            {
                "kind": "supernet",
                "num_operations": num_operations,
                "candidates": candidates or {},
                "excluded": [list(p) for p in (excluded or [])],
                "kv_pool": kv_pool,
                "max_attention_size": max_attention_size,
            },
            where=f"supernet {self.name!r}",
        )
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = int(channels)
        self.num_operations = spec["num_operations"]
        self.candidates = spec["candidates"]
        self.excluded = spec["excluded"]
        # The types each dimension mixes (every dimension keeps at least one: normalize_cell checks).
        self.allowed = {
            d: [k for k in self.candidates["type"] if [k, d] not in self.excluded]
            for d in self.candidates["dimension"]
        }
        self.kv_pool = spec["kv_pool"]
        self.max_attention_size = spec["max_attention_size"]

        cand = self.candidates
        self.widths = [reduced_width(self.channels, r) for r in cand["reduction"]]
        width = max(self.widths)
        conv = lambda filters, kernel, name: keras.layers.Conv3D(
            filters, kernel, padding="same", name=name, dtype=self.dtype_policy
        )
        # One flat list (stable names, stable save order) and an index by name.
        self.convs = []
        for i in range(1, self.num_operations + 1):
            for kind in cand["type"]:
                for g in cand["g1"]:
                    self.convs.append(conv(width, g_kernel(g), f"op{i}_{kind}_g1_{g}"))
                if kind == "dot":
                    for g in cand["g2"]:
                        self.convs.append(conv(width, g_kernel(g), f"op{i}_dot_g2_{g}"))
                else:
                    for d in cand["dimension"]:
                        for g in cand["g2"]:
                            self.convs.append(conv(1, map_kernel(d, g), f"op{i}_map_g2_{d}_{g}"))
            if "conv1x1x1" in cand["g3"]:
                self.convs.append(conv(self.channels, (1, 1, 1), f"op{i}_g3_conv1x1x1"))
        self._conv_index = {layer.name: k for k, layer in enumerate(self.convs)}
        self.bn = keras.layers.BatchNormalization(name="bn", dtype=self.dtype_policy)
        # DARTS §2.1/§3.1.1: BatchNorm without affine parameters on every candidate (type × dimension)
        # output, so the softmax compares candidates of one scale and chained operations cannot explode
        # (unbounded φ made op3 ∝ x²⁷: the cell's BN variance overflowed to inf in 40 steps).
        self.candidate_bns = [
            keras.layers.BatchNormalization(
                center=False, scale=False, name=f"op{i}_{kind}_{d}_bn", dtype=self.dtype_policy
            )
            for i in range(1, self.num_operations + 1)
            for kind in cand["type"]
            for d in cand["dimension"]
            if kind in self.allowed[d]
        ]
        self._bn_index = {layer.name: k for k, layer in enumerate(self.candidate_bns)}

    def _conv(self, name):
        return self.convs[self._conv_index[name]]

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(f"{self.name}: input has {input_shape[-1]} channels, expected {self.channels}")
        _, t, h, w, _ = input_shape
        if None not in (t, h, w):
            degenerate = {
                pair: reason
                for pair, reason in degenerate_pairs(
                    self.candidates["type"], self.candidates["dimension"], t, h, w, kv_pool=self.kv_pool
                ).items()
                if list(pair) not in self.excluded
            }
            if degenerate:
                raise ValueError(
                    f"{self.name}: candidate(s) that cannot attend here: "
                    + "; ".join(degenerate.values())
                    + f". Exclude them (excluded={sorted(list(p) for p in degenerate)}; the search driver "
                    "does so itself) or use larger clips / a smaller kv_pool"
                )
        if "dot" in self.candidates["type"]:
            for d in self.candidates["dimension"]:
                if "dot" not in self.allowed[d]:
                    continue
                check_attention_size(
                    d,
                    t,
                    h,
                    w,
                    kv_pool=self.kv_pool,
                    max_attention_size=self.max_attention_size,
                    where=self.name,
                )
        for layer in self.convs:
            if "_map_g2_" in layer.name:
                temporal = layer.name.split("_map_g2_")[1].startswith("temporal")
                layer.build((None, t, 1, 1, 1) if temporal else (None, t, h, w, 1))
            else:
                layer.build(input_shape)
        self.bn.build(input_shape)
        for layer in self.candidate_bns:
            layer.build(input_shape)
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)
        self.arch = {}
        for i in range(1, self.num_operations + 1):
            if i > 1:  # operation 1 has one possible input: nothing to choose
                self.arch[f"op{i}_inputs"] = self.add_weight(
                    name=f"arch_op{i}_inputs", shape=(i,), initializer="zeros"
                )
            for choice in self.searched_choices():
                self.arch[f"op{i}_{choice}"] = self.add_weight(
                    name=f"arch_op{i}_{choice}", shape=(len(self.candidates[choice]),), initializer="zeros"
                )

    def searched_choices(self) -> list:
        """The choices with an architecture weight: ≥ 2 candidates (a single-candidate
        weight never gets a gradient). `type` needs a dimension that allows both types."""
        out = []
        for choice in CHOICES:
            if choice == "type":
                if any(len(types) > 1 for types in self.allowed.values()):
                    out.append(choice)
            elif len(self.candidates[choice]) > 1:
                out.append(choice)
        return out

    def _probs(self, i, choice):
        if f"op{i}_{choice}" not in self.arch:  # a single candidate: nothing to mix
            return ops.ones((len(self.candidates[choice]),), self.compute_dtype)
        logits = self.arch[f"op{i}_{choice}"] / ops.cast(self.temperature, self.arch[f"op{i}_{choice}"].dtype)
        return ops.cast(ops.softmax(logits), self.compute_dtype)

    def _mix(self, probs, values):
        out = values[0] * probs[0]
        for k in range(1, len(values)):
            out = out + values[k] * probs[k]
        return out

    def call(self, x, training=None):
        cand = self.candidates
        masks = np.zeros((len(self.widths), max(self.widths)), "float32")
        for r, width in enumerate(self.widths):
            masks[r, :width] = 1.0
        masks = ops.convert_to_tensor(masks, dtype=self.compute_dtype)
        inv_widths = ops.convert_to_tensor(
            1.0 / np.array(self.widths, "float32")[:, None], self.compute_dtype
        )
        outputs = [x]
        for i in range(1, self.num_operations + 1):
            h = x if i == 1 else self._mix(self._probs(i, "inputs"), outputs)
            p = {choice: self._probs(i, choice) for choice in CHOICES}
            v = self._mix(
                p["g3"], [h if g == "identity" else self._conv(f"op{i}_g3_{g}")(h) for g in cand["g3"]]
            )
            # Reduction by channel masks (module docstring).
            mask = ops.sum(masks * p["reduction"][:, None], axis=0)
            mean_mask = ops.sum(masks * inv_widths * p["reduction"][:, None], axis=0)
            by_type = {}
            dot_dims = [d for d in cand["dimension"] if "dot" in self.allowed[d]]
            map_dims = [d for d in cand["dimension"] if "map" in self.allowed[d]]
            if dot_dims:
                q = self._mix(p["g1"], [self._conv(f"op{i}_dot_g1_{g}")(h) for g in cand["g1"]]) * mask
                k = self._mix(p["g2"], [self._conv(f"op{i}_dot_g2_{g}")(h) for g in cand["g2"]])
                scores_fn = lambda s, p=p: self._mix(
                    p["activation"], [activate_scores(s, a) for a in cand["activation"]]
                )
                by_type["dot"] = {d: dot_attention(q, k, v, d, scores_fn, self.kv_pool) for d in dot_dims}
            if map_dims:
                f1 = self._mix(p["g1"], [self._conv(f"op{i}_map_g1_{g}")(h) for g in cand["g1"]])
                m_full = ops.sum(f1 * mean_mask, axis=-1, keepdims=True)
                by_type["map"] = {}
                for d in map_dims:
                    m = ops.mean(m_full, axis=(2, 3), keepdims=True) if d == "temporal" else m_full
                    m = self._mix(p["g2"], [self._conv(f"op{i}_map_g2_{d}_{g}")(m) for g in cand["g2"]])
                    a = self._mix(p["activation"], [activate_map(m, act, d) for act in cand["activation"]])
                    by_type["map"][d] = a * v
            norm = lambda value, kind, d, i=i: self.candidate_bns[self._bn_index[f"op{i}_{kind}_{d}_bn"]](
                value, training=training
            )
            # Dimension d mixes its allowed types; with one left it takes it alone (p_type|d = 1).
            per_dim = [
                self._mix(p["type"], [norm(by_type[kind][d], kind, d) for kind in cand["type"]])
                if len(self.allowed[d]) == len(cand["type"])
                else norm(by_type[self.allowed[d][0]][d], self.allowed[d][0], d)
                for d in cand["dimension"]
            ]
            outputs.append(self._mix(p["dimension"], per_dim))
        y = outputs[1]
        for out in outputs[2:]:
            y = y + out
        return x + self.bn(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "num_operations": self.num_operations,
            "candidates": self.candidates,
            "excluded": self.excluded,
            "kv_pool": self.kv_pool,
            "max_attention_size": self.max_attention_size,
        }

    def probabilities(self) -> dict:
        """{"op{i}": {"inputs": [softmax(β)], choice: {candidate: softmax(α)}}} as plain floats, at
        temperature 1 (the learned preference itself, whatever temperature the search ended at)."""

        def softmax(name):
            if name not in self.arch:  # a single candidate, or a type the exclusions decide per dimension
                choice = name.split("_", 1)[1]
                if choice == "type":
                    used = [any(k in types for types in self.allowed.values()) for k in self.candidates[choice]]
                    return np.asarray(used, "float64") / sum(used)
                return np.ones(len(self.candidates[choice])) / len(self.candidates[choice])
            logits = np.asarray(keras.ops.convert_to_numpy(self.arch[name]), "float64")
            probs = np.exp(logits - logits.max())
            return probs / probs.sum()

        out = {}
        for i in range(1, self.num_operations + 1):
            entry = {"inputs": [1.0] if i == 1 else [float(p) for p in softmax(f"op{i}_inputs")]}
            for choice in CHOICES:
                entry[choice] = {
                    str(c): float(pr)
                    for c, pr in zip(self.candidates[choice], softmax(f"op{i}_{choice}"), strict=True)
                }
            out[f"op{i}"] = entry
        return out


def supernet_cells(model) -> list:
    """Every SupernetCell in a model (nested models included), in layer order."""
    found = []

    def walk(layer):
        if isinstance(layer, SupernetCell):
            found.append(layer)
            return
        for sub in getattr(layer, "layers", []):
            walk(sub)

    walk(model)
    return found


def architecture_variables(model) -> list:
    """The trainable architecture weights (names start with `arch_`), for the search's own optimiser."""
    return [v for v in model.trainable_weights if v.name.startswith("arch_")]


def architecture_weights(model) -> dict:
    """Learned softmax/sigmoid weights: averaged over every supernet cell of the model (the searched
    cell is one design inserted at several positions, as in AttentionNAS) and per cell."""
    cells = supernet_cells(model)
    if not cells:
        raise ValueError("architecture_weights: the model holds no supernet cell")
    per_cell = {cell.name: cell.probabilities() for cell in cells}
    first = cells[0]
    for cell in cells[1:]:
        if (
            cell.num_operations != first.num_operations
            or cell.candidates != first.candidates
            or cell.excluded != first.excluded
        ):
            raise ValueError(
                f"architecture_weights: supernet cells {first.name!r} and {cell.name!r} differ "
                "in their search space and cannot be averaged"
            )
    mean = {}
    for op, entry in per_cell[first.name].items():
        mean[op] = {
            "inputs": [
                float(np.mean([per_cell[c.name][op]["inputs"][j] for c in cells]))
                for j in range(len(entry["inputs"]))
            ]
        }
        for choice in CHOICES:
            mean[op][choice] = {
                k: float(np.mean([per_cell[c.name][op][choice][k] for c in cells])) for k in entry[choice]
            }
    return {
        "cells": [c.name for c in cells],
        "operations": mean,
        "per_cell": per_cell,
        # choices without an architecture weight (one candidate): nothing was searched there
        "fixed": [f"op{i}.{c}" for i in range(1, first.num_operations + 1) for c in CHOICES
                  if f"op{i}_{c}" not in first.arch],
        "excluded": first.excluded,
        "kv_pool": first.kv_pool,
        "max_attention_size": first.max_attention_size,
    }


def derive_cell(weights: dict, *, edge_ratio: float = 0.5) -> dict:
    """The final cell from `architecture_weights(...)`: argmax per choice — type and dimension jointly,
    over the pairs not excluded, by the supernet's effective weight p_d · p_type|d —; the input edges
    whose weight is at least `edge_ratio` × the strongest edge's (so the strongest is always kept, and
    an edge about as strong as it too). Returns a normalised cell description with `"normalize": true`
    (each operation's output normalised as in the supernet)."""
    if not 0 < edge_ratio <= 1:
        raise ValueError(f"derive_cell: edge_ratio must be in (0, 1], got {edge_ratio}")
    operations = []
    for _, entry in sorted(weights["operations"].items(), key=lambda kv: int(kv[0][2:])):
        gates = entry["inputs"]
        inputs = [j for j, g in enumerate(gates) if g >= edge_ratio * max(gates)]
        op = {"inputs": inputs}
        for choice in CHOICES:
            best = max(entry[choice].items(), key=lambda kv: kv[1])[0]
            op[choice] = float(best) if choice == "reduction" else best
        op["type"], op["dimension"] = best_type_and_dimension(entry, weights.get("excluded", []))
        operations.append(op)
    return normalize_cell(
        {
            "kind": "cell",
            "normalize": True,
            "operations": operations,
            "kv_pool": weights.get("kv_pool", 2),
            "max_attention_size": weights.get("max_attention_size", DEFAULT_MAX_ATTENTION_SIZE),
        }
    )


def best_type_and_dimension(entry: dict, excluded) -> tuple[str, str]:
    """argmax over the allowed (type, dimension) pairs of p_d · p_type|d (the supernet's mixing)."""
    types, dims = entry["type"], entry["dimension"]
    best, best_weight = None, -1.0
    for d, p_d in dims.items():
        allowed = [k for k in types if [k, d] not in excluded]
        total = sum(types[k] for k in allowed)
        for k in allowed:
            weight = p_d * (types[k] / total if total > 0 else 1.0 / len(allowed))
            if weight > best_weight:
                best, best_weight = (k, d), weight
    return best


def inherit_weights(supernet: "SupernetCell", model, name: str, cell: dict) -> None:
    """Copies a supernet cell's weights into the derived `cell` applied as `name` in `model`
    (apply_cell(..., name=name)): the chosen candidates' convolutions (the first C′ output channels of
    the widest G₁/G₂), their candidate BatchNorm statistics and the combine BatchNorm. At one-hot
    architecture weights the two then compute the same function (tests/model/test_attention_nas.py)."""
    cell = normalize_cell(cell)
    if len(cell["operations"]) != supernet.num_operations:
        raise ValueError(
            f"inherit_weights: the cell has {len(cell['operations'])} operations, the supernet "
            f"{supernet.num_operations}"
        )

    def copy(source, target, width=None):
        values = [keras.ops.convert_to_numpy(v) for v in source.weights]
        if width is not None:
            values = [v[..., :width] for v in values]
        target.set_weights(values)

    for i, op in enumerate(cell["operations"], start=1):
        layer = model.get_layer(f"{name}_op{i}")
        width = reduced_width(supernet.channels, op["reduction"])
        copy(supernet._conv(f"op{i}_{op['type']}_g1_{op['g1']}"), layer.g1_conv, width)
        if op["type"] == "dot":
            copy(supernet._conv(f"op{i}_dot_g2_{op['g2']}"), layer.g2_conv, width)
        else:
            copy(supernet._conv(f"op{i}_map_g2_{op['dimension']}_{op['g2']}"), layer.g2_conv)
        if op["g3"] == "conv1x1x1":
            copy(supernet._conv(f"op{i}_g3_conv1x1x1"), layer.g3_conv)
        if cell["normalize"]:
            bn = supernet.candidate_bns[supernet._bn_index[f"op{i}_{op['type']}_{op['dimension']}_bn"]]
            copy(bn, model.get_layer(f"{name}_op{i}_norm"))
    copy(supernet.bn, model.get_layer(f"{name}_bn"))


def is_architecture_variable(variable) -> bool:
    """`arch_*` weights; also for the backend's own variable (a tf.Variable is named by its path)."""
    return variable.name.split("/")[-1].startswith("arch_")


@keras.saving.register_keras_serializable(package="attention_nas")
class AlternatingAdam(keras.optimizers.Optimizer):
    """Two optimisers taking turns, for a one-shot search inside Keras's own `train_on_batch`/`fit`
    (any backend; no GradientTape).

    `set_phase("weights")` before a step updates only the network weights, `set_phase("architecture")`
    only the architecture weights (names `arch_*`). The inactive group's variables and moments stay
    untouched (its gradients are computed and dropped), and each group counts its own steps, so
    alternating phases is exactly DARTS's first-order alternation (§2.3) with both steps run by the same
    compiled train function.
    - network weights: `weights_optimizer="sgd"` — SGD with momentum (torch form m ← μm + g, w ← w − lr·m)
      and L2 `weight_decay` added to the gradient, learning rate cosine-annealed from `learning_rate` to
      `min_learning_rate` over `decay_steps` weight steps (DARTS §3.1.1: 0.025 → 0.001, μ 0.9, 3e-4);
      or `"adam"` (learning_rate, beta_1, beta_2; constant unless decay_steps is set);
    - architecture: Adam(arch_learning_rate, (arch_beta_1, arch_beta_2)) with L2 `arch_weight_decay`
      added to the gradient (DARTS §3.1.1: 3e-4, (0.5, 0.999), 1e-3, as torch's Adam weight_decay)."""

    PHASES = ("weights", "architecture")

    def __init__(
        self,
        learning_rate=1e-3,
        arch_learning_rate=3e-4,
        beta_1=0.9,
        beta_2=0.999,
        arch_beta_1=0.5,
        arch_beta_2=0.999,
        arch_weight_decay=0.0,
        weights_optimizer="adam",
        momentum=0.9,
        weight_decay_l2=0.0,
        decay_steps=None,
        min_learning_rate=0.0,
        epsilon=1e-7,
        name="alternating_adam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if weights_optimizer not in ("adam", "sgd"):
            raise ValueError(f"weights_optimizer must be 'adam' or 'sgd', got {weights_optimizer!r}")
        self.arch_learning_rate = float(arch_learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.arch_beta_1 = float(arch_beta_1)
        self.arch_beta_2 = float(arch_beta_2)
        self.arch_weight_decay = float(arch_weight_decay)
        self.weights_optimizer = weights_optimizer
        self.momentum = float(momentum)
        self.weight_decay_l2 = float(weight_decay_l2)
        self.decay_steps = None if decay_steps is None else int(decay_steps)
        self.min_learning_rate = float(min_learning_rate)
        self.epsilon = float(epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])
        # phase: 0 = network weights, 1 = architecture; per-group step counts for the bias correction.
        self.phase = self.add_variable((), name="phase")
        self.group_steps = self.add_variable((2,), name="group_steps")

    def set_phase(self, phase: str) -> None:
        """Selects the group the next step updates (call between steps, not inside a traced function)."""
        if phase not in self.PHASES:
            raise ValueError(f"AlternatingAdam.set_phase: phase must be one of {self.PHASES}, got {phase!r}")
        if not self.built:
            raise ValueError("AlternatingAdam.set_phase: build the optimizer (or compile the model) first")
        k = self.PHASES.index(phase)
        steps = np.asarray(keras.ops.convert_to_numpy(self.group_steps)).copy()
        steps[k] += 1
        self.phase.assign(float(k))
        self.group_steps.assign(steps)

    def weights_learning_rate(self, step):
        """Cosine annealing of the network weights' rate at weight step `step` (1-based; a number or tensor)."""
        if self.decay_steps is None:
            return self.learning_rate
        fraction = ops.minimum((ops.cast(step, "float32") - 1.0) / max(1, self.decay_steps - 1), 1.0)
        low = self.min_learning_rate
        return low + 0.5 * (ops.cast(self.learning_rate, "float32") - low) * (1.0 + ops.cos(np.pi * fraction))

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        arch = is_architecture_variable(variable)
        phase = ops.cast(self.phase, dtype)
        active = phase if arch else 1.0 - phase
        step = ops.maximum(ops.cast(self.group_steps[1 if arch else 0], dtype), 1.0)
        gradient = ops.cast(gradient, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        if arch:
            gradient = gradient + self.arch_weight_decay * variable
            beta_1, beta_2, lr = self.arch_beta_1, self.arch_beta_2, ops.cast(self.arch_learning_rate, dtype)
        else:
            gradient = gradient + self.weight_decay_l2 * variable
            beta_1, beta_2 = self.beta_1, self.beta_2
            lr = ops.cast(self.weights_learning_rate(step), dtype)
            if self.weights_optimizer == "sgd":
                self.assign(m, m + active * ((self.momentum - 1.0) * m + gradient))
                self.assign_sub(variable, active * lr * m)
                return
        self.assign_add(m, active * (1 - beta_1) * (gradient - m))
        self.assign_add(v, active * (1 - beta_2) * (ops.square(gradient) - v))
        alpha = active * lr * ops.sqrt(1 - ops.power(beta_2, step)) / (1 - ops.power(beta_1, step))
        self.assign_sub(variable, alpha * m / (ops.sqrt(v) + self.epsilon))

    def get_config(self):
        return {
            **super().get_config(),
            "arch_learning_rate": self.arch_learning_rate,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "arch_beta_1": self.arch_beta_1,
            "arch_beta_2": self.arch_beta_2,
            "arch_weight_decay": self.arch_weight_decay,
            "weights_optimizer": self.weights_optimizer,
            "momentum": self.momentum,
            "weight_decay_l2": self.weight_decay_l2,
            "decay_steps": self.decay_steps,
            "min_learning_rate": self.min_learning_rate,
            "epsilon": self.epsilon,
        }
