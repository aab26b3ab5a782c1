"""Proxy training of evolution children on one compiled model per shape: `assemblenet evolve
--fast-path` (EvolutionConfig.fast_path).

A search's children differ in their edges, their temporal resolutions and the fused widths their edges
give (AssembleNet §3.2: Eq. 2 rewires a parent; node mutation (1) changes an r). `FastChildren` trains
each child on the masked model of its maximal structure (model.edge_masks: edges, dilations and, with
attention `none`, fused widths are runtime data), built and compiled once per shape signature and
reused by every later child of that signature in this process. Per child, as ablation.fastpath does for
the ablation harness: every variable re-initialised from the proxy seed (per variable path, with fan-in
matched to the child), the optimizer at its first step, the masks and dilations set; then
`config.steps` steps of `pipelines.train`'s optimizer, loss, schedule and data stream (the same
`build_dataset` clips as the plain run's first epoch onwards), and the child is scored on the evaluator's
held-out data with the evaluator's `score` (`evolve.score_model`).

The child's run directory holds what `TrainEvaluator`'s does for scoring and search records
(config.json, structure.json, model.keras of the child's plain model with the trained weights,
connection_weights.json, summary.json, metrics.json), not the training history, checkpoints or logs: a
child stopped midway trains again from its start.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from model.structure import Structure

_TRAINERS: dict[str, FastChildren] = {}


def fast_children(evaluator) -> FastChildren:
    """The process's FastChildren for a TrainEvaluator (made on first use): every child this process
    evaluates for that evaluator shares its compiled models."""
    import json

    key = json.dumps(evaluator.to_json(), sort_keys=True)
    if key not in _TRAINERS:
        _TRAINERS[key] = FastChildren(evaluator)
    return _TRAINERS[key]


@dataclasses.dataclass
class _Entry:
    structure: Structure  # the maximal structure the model was built for
    model: Any
    optimizer_state: list


class FastChildren:
    """`evaluate(structure, workdir) -> (fitness, edge weights)` like `TrainEvaluator`, on compiled
    masked models (the `max_models` most recently used are kept). `compiles` counts the models built."""

    def __init__(self, evaluator, *, max_models: int = 4):
        from pipelines import compile_cache

        compile_cache.enable()
        if evaluator.eval_data is None:
            raise ValueError("FastChildren: the evaluator has no eval_data; a search gets it from init_search")
        self.evaluator = evaluator
        self.max_models = int(max_models)
        self.models: dict[tuple, _Entry] = {}
        self.compiles = 0

    def config(self, structure_path: Path):
        from pipelines.train import TrainConfig, num_classes_in

        config = TrainConfig(**{**self.evaluator.train, "structure": str(structure_path)})
        if config.num_classes is None:
            config = dataclasses.replace(config, num_classes=num_classes_in(self.evaluator.data))
        if config.attention in ("peer", "conv") and config.default_peers:
            raise ValueError("the fast path trains children with the peers their structure names; "
                             "--default-peers depends on the edges: train without --fast-path")
        return config

    def entry(self, structure: Structure, config) -> tuple[_Entry, bool]:
        """The compiled model for `structure` (built on first use), and whether this call built it."""
        import keras

        from model import edge_masks
        from model.assemblenet import build_assemblenet
        from pipelines.train import compile_model, make_schedule, precision_scope

        widths = edge_masks.uses_runtime_width(config.attention)
        longest = edge_masks.max_dilation(structure)
        key = (edge_masks.signature(structure, runtime_width=widths), longest)
        if key in self.models:
            self.models[key] = self.models.pop(key)  # most recently used last
            return self.models[key], False
        maximal = edge_masks.maximal(structure, runtime_width=widths)
        keras.utils.set_random_seed(config.seed)
        with precision_scope(config.precision):
            model = build_assemblenet(maximal, config.num_classes, attention=config.attention,
                                      temporal_pool=config.temporal_pool, frames=config.frames, size=config.size,
                                      edge_masks=True, max_dilation=longest, runtime_width=widths)
            compile_model(model, config, make_schedule(config))
        entry = _Entry(maximal, model, [np.array(v.numpy()) for v in model.optimizer.variables])
        self.models[key] = entry
        self.compiles += 1
        while len(self.models) > self.max_models:
            self.models.pop(next(iter(self.models)))
        return entry, True

    def prepare(self, structure: Structure, config) -> tuple[_Entry, bool]:
        """The compiled model with the child's start: weights from the proxy seed, the optimizer before
        its first step, the child's masks, dilations and widths."""
        from model import edge_masks

        entry, new = self.entry(structure, config)
        model = entry.model
        edge_masks.reinitialize(model, config.seed)
        edge_masks.match_fan_in(model, structure)
        for v, value in zip(model.optimizer.variables, entry.optimizer_state, strict=True):
            v.assign(value)
        model.reset_metrics()
        edge_masks.set_masks(model, entry.structure, structure)
        return entry, new

    def __call__(self, structure: Structure, workdir: Path) -> tuple[float, dict]:
        import keras

        from model import edge_masks
        from model.assemblenet import build_assemblenet
        from pipelines.rundir import CONNECTION_WEIGHTS, METRICS, STRUCTURE
        from pipelines.train import build_dataset, precision_scope, prepare_workdir, write_final

        workdir = Path(workdir)
        config = self.config(structure.save(workdir / STRUCTURE))
        run = self.evaluator.run_dir(workdir)
        prepare_workdir(run.path, config, structure)
        entry, _ = self.prepare(structure, config)
        keras.utils.set_random_seed(config.seed)
        with precision_scope(config.precision):
            train_ds = build_dataset(config, structure, self.evaluator.data, training=True, seed=config.seed)
            entry.model.fit(train_ds, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, shuffle=False,
                            verbose=0)
            result = self.evaluator.score(entry.model, config, structure)
            # The child's own model with the trained weights: what `assemblenet train`/`evaluate` read.
            plain = build_assemblenet(structure, config.num_classes, attention=config.attention,
                                      temporal_pool=config.temporal_pool, frames=config.frames, size=config.size)
        edge_masks.copy_weights(entry.model, plain, source_structure=entry.structure, target_structure=structure)
        write_final(plain, structure, config, run.path)
        run.write(METRICS, result)
        return result["fitness"], run.read(CONNECTION_WEIGHTS)
