"""Train many children on one compiled model per shape: the harness's unit of work without a compile
per child.

A search's children mostly differ in their edges and temporal resolutions (AssembleNet §3.2), and a
`tiny` child at the default budget spends more time compiling than training (docs/ablations.md).
`ChildTrainer` builds, for each shape signature (model.edge_masks.signature: nodes without their
dilations, and each block's fused stride and width) and each attention mode and model option, the masked
model of the maximal structure once (build_assemblenet with `edge_masks=True` and `max_dilation`: edges
and dilations are runtime data; with attention `none` and `project_first` fusion also `runtime_width`,
so each block's fused width is runtime data and leaves the signature) and compiles it once. Per child it
1. re-initialises every variable from the child's seed (each variable from its own seed, derived from
   the child's seed and the variable's path, with the initializer its layer declares; a conv reading a
   runtime-width input is rescaled to the child's fan-in, `match_fan_in`),
2. puts the optimizer back to its state before the first step (iterations 0, so the learning-rate
   schedule restarts; momentum slots 0),
3. sets the edge masks to the child's edges (AssembleNet++ Eq. 1/3 over the child's connections) and
   every temporal conv's dilation to its node's r,
4. trains `budget.steps` steps on the same batches as `harness.train_and_score` and scores the child.
It returns harness.train_and_score's result dict (edge weights restricted to the child's edges, the
child's own parameter count), plus `compiled` (whether this child built and compiled a new model) and
`traces` (how many times the model's train step has been traced so far: 1 while no child recompiled it).

Under JAX the variables are arguments of the jitted step, so new values do not retrace it; under
TensorFlow the tf.function reads the variables by reference. The equivalence with the plain path
(a model built for the child alone, started from the same weights) is tested in
tests/ablation/test_fastpath.py.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any

import numpy as np

from ablation.harness import (
    Budget,
    Feeder,
    _compile,
    check_inputs,
    predict,
    probe_rms,
    scores,
    stem_probe,
    train_steps,
    without_object_stem,
)
from model.edge_masks import MAX_DILATION, match_fan_in, max_dilation, reinitialize, uses_runtime_width
from model.structure import Structure, get_structure
from pipelines import compile_cache

# ASSEMBLENET_ABLATION_FASTPATH=1: every suite's runs (ctx.train) and the evolution searches' children train
# on a ChildTrainer of this process (`trainer_for`); off by default. A folder's runs are all made one way
# (runner.check_settings records it), since the fast path's initial weights come from the same
# initializers but other random draws than the plain path's (`reinitialize`).
FASTPATH_ENV = "ASSEMBLENET_ABLATION_FASTPATH"
# Model options that change the compiled graph (and so the cache key) besides structure and attention.
MODEL_OPTIONS = ("fusion_order", "temporal_pool", "default_peers")
__all__ = ["MAX_DILATION", "ChildTrainer", "match_fan_in", "max_dilation", "reinitialize", "trainer_for",
           "uses_runtime_width"]
def enabled() -> bool:
    """Whether ASSEMBLENET_ABLATION_FASTPATH asks for the fast path ("0", the default, or "1")."""
    raw = os.environ.get(FASTPATH_ENV, "0")
    if raw not in ("0", "1"):
        raise ValueError(f"{FASTPATH_ENV}={raw!r}: expected 0 or 1")
    return raw == "1"


_TRAINERS: dict[tuple, ChildTrainer] = {}


def trainer_for(bench, budget: Budget) -> ChildTrainer:
    """The process's ChildTrainer for `bench` and `budget` (made on first use), so that every suite and
    search of the process shares its compiled models."""
    key = (id(bench), budget)
    if key not in _TRAINERS:
        _TRAINERS[key] = ChildTrainer(bench, budget)
    return _TRAINERS[key]


@dataclasses.dataclass
class _Compiled:
    structure: Structure  # the maximal structure the model was built for
    model: Any
    optimizer_state: list  # the optimizer's variables before the first step
    feeder: Feeder
    stems: Any  # harness.stem_probe of the model: its stems' outputs, for the stem_rms statistic
    traces: list  # [how many times the train step was traced]: 1 if no child made it compile again


class ChildTrainer:
    """`harness.train_and_score` (bench and budget bound) for many children, compiling one masked
    maximal model per (signature, attention, model options) and reusing it (the `max_models` most
    recently used are kept). Call it like the harness without `bench`: `trainer(structure, seed=...,
    eval_split=...)`.

    `compiles` counts the models built and compiled; `trainer.models` maps each cache key to its
    maximal structure and model."""

    def __init__(self, bench, budget: Budget | None = None, *, max_models: int = 8):
        compile_cache.enable()
        self.bench = bench
        self.budget = budget or Budget()
        check_inputs(bench, self.budget)
        if int(max_models) < 1:
            raise ValueError(f"max_models={max_models}: expected >= 1")
        self.max_models = int(max_models)
        self.models: collections.OrderedDict[tuple, _Compiled] = collections.OrderedDict()
        self.compiles = 0
        self._plain: dict[tuple, tuple[int, frozenset]] = {}

    # -- the compiled models --------------------------------------------------------------------------

    @staticmethod
    def child_structure(structure, *, attention: str = "none", object_stem: bool = True,
                        default_peers: bool = False) -> Structure:
        """The structure the child trains: without its object stem if asked, and with `peer`/`conv`
        attention's default peers written in (they depend on the edges, so they must be part of the
        shape signature)."""
        from model.assemblenet import default_peer

        structure = get_structure(structure)
        if not object_stem:
            structure = without_object_stem(structure)
        if attention in ("peer", "conv") and default_peers:
            nodes = tuple(n if n.is_stem or n.peer is not None else
                          dataclasses.replace(n, peer=default_peer(structure, n.index)) for n in structure.nodes)
            structure = structure.replace(nodes=nodes)
        return structure

    def entry(self, structure: Structure, attention: str = "none", **model_options) -> tuple[_Compiled, bool]:
        """The compiled model that trains `structure` (built and compiled on first use); and whether
        this call compiled it."""

        from model import edge_masks
        from model.assemblenet import build_assemblenet

        unknown = set(model_options) - set(MODEL_OPTIONS)
        if unknown:
            raise ValueError(f"ChildTrainer: model options {sorted(unknown)} are not supported; expected some "
                             f"of {MODEL_OPTIONS}")
        options = {k: v for k, v in model_options.items() if k != "default_peers"}
        longest = max_dilation(structure)
        widths = uses_runtime_width(attention, options.get("fusion_order", "project_first"))
        key = (edge_masks.signature(structure, runtime_width=widths), longest, attention,
               tuple(sorted(options.items())))
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key], False
        maximal = edge_masks.maximal(structure, runtime_width=widths)
        model = build_assemblenet(maximal, self.bench.num_classes, attention=attention, frames=self.budget.frames,
                                  size=self.budget.size, edge_masks=True, max_dilation=longest,
                                  runtime_width=widths, **options)
        _compile(model, self.budget)
        model.optimizer.build(model.trainable_variables)
        traces = [0]
        step = model.train_step

        def train_step(*args, **kwargs):  # runs once per trace (JAX jit, tf.function), not per step
            traces[0] += 1
            return step(*args, **kwargs)

        model.train_step = train_step
        state = [np.array(v.numpy()) for v in model.optimizer.variables]
        compiled = _Compiled(maximal, model, state, Feeder(self.bench, maximal.modalities),
                             stem_probe(model, maximal), traces)
        self.models[key] = compiled
        self.compiles += 1
        while len(self.models) > self.max_models:
            self.models.popitem(last=False)
        return compiled, True

    def prepare(self, structure: Structure, *, seed: int, attention: str = "none", **model_options):
        """The compiled model for `structure`, with every weight re-initialised from `seed`, the optimizer
        at its first step and the masks set to the child's edges: what `train_and_score` trains.
        Returns (compiled entry, whether this call compiled it)."""
        from model import edge_masks

        compiled, new = self.entry(structure, attention, **model_options)
        model = compiled.model
        reinitialize(model, seed)
        match_fan_in(model, structure)
        for v, value in zip(model.optimizer.variables, compiled.optimizer_state, strict=True):
            v.assign(value)
        model.reset_metrics()
        edge_masks.set_masks(model, compiled.structure, structure)
        return compiled, new

    def plain_model_facts(self, structure: Structure, attention: str, **model_options) -> tuple[int, frozenset]:
        """(parameter count, layer names) of the plain model of `structure`, what harness.train_and_score
        reports and reads (Keras leaves out the layers of blocks nothing reads), from a symbolic build
        (no compile), cached per structure."""
        from model.assemblenet import build_assemblenet

        key = (str(structure.to_json()), attention, tuple(sorted(model_options.items())))
        if key not in self._plain:
            model = build_assemblenet(structure, self.bench.num_classes, attention=attention,
                                      frames=self.budget.frames, size=self.budget.size, **model_options)
            self._plain[key] = (int(model.count_params()), frozenset(layer.name for layer in model.layers))
        return self._plain[key]

    # -- one child ---------------------------------------------------------------------------------------

    def __call__(self, structure, **kwargs) -> dict[str, Any]:
        return self.train_and_score(structure, **kwargs)

    def train_and_score(self, structure, *, attention: str = "none", object_stem: bool = True, seed: int = 0,
                        budget: Budget | None = None, eval_split: str = "val", trace_every: int = 0,
                        **model_options) -> dict[str, Any]:
        """harness.train_and_score of `structure` on the bound benchmark and budget (`budget`, if given,
        must be the bound one), on the compiled maximal model. The result has the harness's keys, plus
        `compiled` and `traces`."""
        from model.evolution import edge_weights_to_json, parse_edge_weights
        from model.pruning import attention_weights, connection_weights

        if budget is not None and budget != self.budget:
            raise ValueError(f"ChildTrainer was made for {self.budget}, got budget={budget}")
        bench, budget = self.bench, self.budget
        check_inputs(bench, budget, eval_split)
        started = time.time()
        structure = self.child_structure(structure, attention=attention, object_stem=object_stem,
                                         default_peers=bool(model_options.get("default_peers")))
        options = {k: v for k, v in model_options.items() if k != "default_peers"}
        compiled, new = self.prepare(structure, seed=seed, attention=attention, **options)
        model, feeder = compiled.model, compiled.feeder
        modalities = compiled.structure.modalities

        params, plain_layers = self.plain_model_facts(structure, attention, **options)

        def child_connections():  # σ(w) of the child's edges, of the blocks the plain model has
            full = connection_weights(model, compiled.structure)
            return {str(n.index): {str(j): full[str(n.index)][str(j)] for j in n.inputs} for n in structure.blocks
                    if f"block{n.index}_fusion" in plain_layers}

        losses, compile_seconds, trace = train_steps(model, bench, feeder, budget, seed, eval_split,
                                                     child_connections, trace_every)
        logits = predict(model, bench, eval_split, modalities, budget.batch_size, feeder)
        search = ({b: row for b, row in attention_weights(model, compiled.structure).items()
                   if f"block{b}_attention" in plain_layers} if attention == "search" else {})
        result = {
            **scores(logits, bench, eval_split, losses),
            "params": params,
            "compile_seconds": compile_seconds,
            "edge_weights": edge_weights_to_json(parse_edge_weights(child_connections())),
            "attention_weights": search,
            "structure": structure.to_json(),
            "attention": attention,
            "seed": int(seed),
            "eval_split": eval_split,
            "compiled": new,
            "traces": compiled.traces[0],
        }
        batch = feeder.batch(eval_split, np.arange(budget.batch_size) % len(bench.labels(eval_split)))[0]
        # The stems the plain model has: one that only feeds blocks nothing reads is not built there.
        result["stem_rms"] = {i: rms for i, rms in probe_rms(compiled.stems, batch).items()
                              if any(name.startswith(f"stem{i}_") for name in plain_layers)}
        if trace_every:
            result["edge_trace"] = trace
        result["seconds"] = time.time() - started
        return result
