"""The one-shot attention search of AssembleNet++ (§3.5 and the "approach summary" of §3.6).

1. Take a block layout (a named structure or `assemblenet evolve`'s best_structure.json).
2. Connect every valid pair L(j) < L(i) (model.oneshot) and give every block attention over all
   its peers (attention="search", Eq. 4).
3. Train it with the training stage's recipe (`pipelines.train.train`), learning the connection
   weights w and the peer weights h with the convolutions.
4. Prune (model.pruning.prune): connections with σ(w) ≤ 0.2 go, the argmax-h peer stays per block.

Writes to OUT/:
    structure.json, connection_weights.json, attention_weights.json   the trained one-shot model's
                                        structure and learned σ(w) / softmax(h) (for the report)
    run/                                its training run directory (docs/CONTRACTS.md)
    final_structure.json                the pruned structure; train it with `assemblenet train
                                        --structure OUT/final_structure.json --attention peer`
    search_summary.json                 learned w and softmax(h) per block, kept/dropped edges, peers
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.oneshot import over_connected
from model.pruning import PRUNE_THRESHOLD
from model.structure import Structure, get_structure
from pipelines import configs, locks
from pipelines.configs import fraction, setting
from pipelines.rundir import ATTENTION_WEIGHTS, CONNECTION_WEIGHTS, STRUCTURE, RunDir, write_json


@dataclasses.dataclass(frozen=True)
class OneShotConfig:
    """The one-shot search's own setting (its training is a TrainConfig): `assemblenet search --threshold`,
    the DAG param and the end-to-end job's field are made from it."""

    threshold: float = setting(PRUNE_THRESHOLD, "connections with sigmoid(w) <= this are pruned (AssembleNet++ "
                               f"§4.1: {PRUNE_THRESHOLD})", type=fraction(high_open=True))

    def __post_init__(self):
        configs.check(self)


@locks.writes("out_dir", "search folder")
def run_search(*, structure: str | Path | Structure, data: str, out_dir: str | Path,
               train: Mapping[str, Any] | None = None, eval_data: str | None = None,
               threshold: float = PRUNE_THRESHOLD, verbose: int | str = "auto") -> dict[str, Any]:
    """Trains the one-shot search model of `structure`'s layout on `data` and prunes it.

    `train` holds TrainConfig fields (steps, frames, size, batch_size, dataset, ...); `structure`
    and `attention` are set here. Running it again with the same arguments resumes the training."""
    import keras

    import model.assemblenet  # noqa: F401  (registers the custom layers for load_model)
    from model.pruning import attention_weights, connection_weights, prune
    from pipelines.checks import check_records, check_same_structure, run_settings
    from pipelines.train import TrainConfig
    from pipelines.train import train as train_run

    train = dict(train or {})
    for field in ("structure", "attention"):
        if field in train:
            raise ValueError(f"run_search: train[{field!r}] is set by the search; remove it")
    configs.check_values(OneShotConfig, {"threshold": threshold})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = get_structure(structure)
    recipe = TrainConfig(**train)
    run = RunDir(out / "run")  # the search's training run (when resumed, already there)
    check_records(data, dataset=recipe.dataset, num_classes=recipe.num_classes, modalities=layout.modalities,
                  source="the search", settings=run_settings(run.preprocess), settings_from=str(run.preprocess))
    supernet = over_connected(layout)
    # Resuming: the layout must be the one the run's checkpoints were trained from (pipelines/checks.py).
    check_same_structure(run.structure, supernet.to_json(),
                         "use a new --out, or pass the layout the search was started with")
    # OUT/structure.json, connection_weights.json, attention_weights.json: the run directory's names, so
    # that `assemblenet report OUT` draws the one-shot model like a run's (pipelines.report).
    supernet.save(out / STRUCTURE)
    config = TrainConfig(**{**train, "structure": str(out / STRUCTURE), "attention": "search"})
    metrics = train_run(config=config, data=data, workdir=run.path, eval_data=eval_data, verbose=verbose)

    trained = keras.models.load_model(run.model)
    weights = connection_weights(trained, supernet)
    attention = attention_weights(trained, supernet)
    final = prune(supernet, trained, threshold=threshold, name=f"{layout.name}_searched")
    final.save(out / "final_structure.json")
    write_json(out / CONNECTION_WEIGHTS, weights, indent=2)
    write_json(out / ATTENTION_WEIGHTS, attention, indent=2)
    summary = search_summary(layout, supernet, final, weights, attention, threshold)
    summary["training"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    write_json(out / "search_summary.json", summary, indent=2)
    keras.backend.clear_session()
    return summary


def search_summary(layout: Structure, supernet: Structure, final: Structure, weights: Mapping,
                   attention: Mapping, threshold: float) -> dict[str, Any]:
    """What the search learned and kept, per block: σ(w) of every connection, softmax(h) over the
    peers, the edges kept (σ(w) > threshold) and the chosen peer."""
    blocks = {}
    for node in final.blocks:
        key = str(node.index)
        blocks[key] = {"level": node.level, "connection_weights": weights.get(key, {}),
                       "attention_weights": attention.get(key, {}), "kept_inputs": list(node.inputs),
                       "peer": node.peer}
    objects = {n.index for n in supernet.stems if n.modality == "object"}
    return {
        "layout": layout.name, "threshold": threshold, "edges_searched": len(supernet.edges()),
        "edges_kept": len(final.edges()),
        "object_edges_kept": sum(1 for j, _ in final.edges() if j in objects),
        "blocks": blocks,
        "final_structure": "final_structure.json",
        "next": "assemblenet train --structure final_structure.json --attention peer",
    }
