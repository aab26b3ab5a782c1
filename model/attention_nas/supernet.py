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

from model.attention_nas.cell import SUPERNET_CANDIDATES, normalize_cell
from model.attention_nas.operations import (
    DEFAULT_MAX_ATTENTION_SIZE,
    activate_map,
    activate_scores,
    check_attention_size,
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
        ]
        self._bn_index = {layer.name: k for k, layer in enumerate(self.candidate_bns)}

    def _conv(self, name):
        return self.convs[self._conv_index[name]]

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(f"{self.name}: input has {input_shape[-1]} channels, expected {self.channels}")
        _, t, h, w, _ = input_shape
        if "dot" in self.candidates["type"]:
            for d in self.candidates["dimension"]:
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
            for choice in CHOICES:
                self.arch[f"op{i}_{choice}"] = self.add_weight(
                    name=f"arch_op{i}_{choice}", shape=(len(self.candidates[choice]),), initializer="zeros"
                )

    def _probs(self, i, choice):
        if self.arch[f"op{i}_{choice}"].shape[0] == 1:  # a single candidate: nothing to mix
            return ops.ones((1,), self.compute_dtype)
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
            if "dot" in cand["type"]:
                q = self._mix(p["g1"], [self._conv(f"op{i}_dot_g1_{g}")(h) for g in cand["g1"]]) * mask
                k = self._mix(p["g2"], [self._conv(f"op{i}_dot_g2_{g}")(h) for g in cand["g2"]])
                scores_fn = lambda s, p=p: self._mix(
                    p["activation"], [activate_scores(s, a) for a in cand["activation"]]
                )
                by_type["dot"] = [
                    dot_attention(q, k, v, d, scores_fn, self.kv_pool) for d in cand["dimension"]
                ]
            if "map" in cand["type"]:
                f1 = self._mix(p["g1"], [self._conv(f"op{i}_map_g1_{g}")(h) for g in cand["g1"]])
                m_full = ops.sum(f1 * mean_mask, axis=-1, keepdims=True)
                by_type["map"] = []
                for d in cand["dimension"]:
                    m = ops.mean(m_full, axis=(2, 3), keepdims=True) if d == "temporal" else m_full
                    m = self._mix(p["g2"], [self._conv(f"op{i}_map_g2_{d}_{g}")(m) for g in cand["g2"]])
                    a = self._mix(p["activation"], [activate_map(m, act, d) for act in cand["activation"]])
                    by_type["map"].append(a * v)
            norm = lambda value, kind, d, i=i: self.candidate_bns[self._bn_index[f"op{i}_{kind}_{d}_bn"]](
                value, training=training
            )
            per_dim = [
                self._mix(p["type"], [norm(by_type[kind][n], kind, d) for kind in cand["type"]])
                for n, d in enumerate(cand["dimension"])
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
            "kv_pool": self.kv_pool,
            "max_attention_size": self.max_attention_size,
        }

    def probabilities(self) -> dict:
        """{"op{i}": {"inputs": [softmax(β)], choice: {candidate: softmax(α)}}} as plain floats, at
        temperature 1 (the learned preference itself, whatever temperature the search ended at)."""

        def softmax(name):
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
        if cell.num_operations != first.num_operations or cell.candidates != first.candidates:
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
        "kv_pool": first.kv_pool,
        "max_attention_size": first.max_attention_size,
    }


def derive_cell(weights: dict, *, edge_ratio: float = 0.5) -> dict:
    """The final cell from `architecture_weights(...)`: argmax per choice; the input edges whose weight
    is at least `edge_ratio` × the strongest edge's (so the strongest is always kept, and an edge about
    as strong as it too). Returns a normalised cell description."""
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
        operations.append(op)
    return normalize_cell(
        {
            "kind": "cell",
            "operations": operations,
            "kv_pool": weights.get("kv_pool", 2),
            "max_attention_size": weights.get("max_attention_size", DEFAULT_MAX_ATTENTION_SIZE),
        }
    )


def is_architecture_variable(variable) -> bool:
    """`arch_*` weights; also for the backend's own variable (a tf.Variable is named by its path)."""
    return variable.name.split("/")[-1].startswith("arch_")


@keras.saving.register_keras_serializable(package="attention_nas")
class AlternatingAdam(keras.optimizers.Optimizer):
    """Adam with two parameter groups, for a one-shot search inside Keras's own `train_on_batch`/`fit`
    (any backend; no GradientTape). The project's own (docs/attention_nas.md).

    `set_phase("weights")` before a step updates only the network weights (learning_rate, beta_1);
    `set_phase("architecture")` only the architecture weights (names `arch_*`: arch_learning_rate,
    arch_beta_1 = 0.5 as DARTS §3.1.1). The inactive group's variables and Adam moments stay untouched
    (its gradients are computed and dropped), and each group counts its own steps for the bias
    correction, so alternating phases is exactly two Adam optimisers taking turns — DARTS's first-order
    alternation (§2.3) with both steps run by the same compiled train function."""

    PHASES = ("weights", "architecture")

    def __init__(
        self,
        learning_rate=1e-3,
        arch_learning_rate=3e-2,
        beta_1=0.9,
        beta_2=0.999,
        arch_beta_1=0.5,
        epsilon=1e-7,
        name="alternating_adam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.arch_learning_rate = float(arch_learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.arch_beta_1 = float(arch_beta_1)
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

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        arch = is_architecture_variable(variable)
        phase = ops.cast(self.phase, dtype)
        active = phase if arch else 1.0 - phase
        beta_1 = self.arch_beta_1 if arch else self.beta_1
        lr = ops.cast(self.arch_learning_rate if arch else learning_rate, dtype)
        step = ops.maximum(ops.cast(self.group_steps[1 if arch else 0], dtype), 1.0)
        gradient = ops.cast(gradient, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, active * (1 - beta_1) * (gradient - m))
        self.assign_add(v, active * (1 - self.beta_2) * (ops.square(gradient) - v))
        alpha = active * lr * ops.sqrt(1 - ops.power(self.beta_2, step)) / (1 - ops.power(beta_1, step))
        self.assign_sub(variable, alpha * m / (ops.sqrt(v) + self.epsilon))

    def get_config(self):
        return {
            **super().get_config(),
            "arch_learning_rate": self.arch_learning_rate,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "arch_beta_1": self.arch_beta_1,
            "epsilon": self.epsilon,
        }
