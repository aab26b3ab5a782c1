"""Suite `evolution`: AssembleNet Figure 4 and Table 3 on the controlled benchmark.

Figure 4 compares three searches with the same number of trained children: connection-learning-guided
evolution (§3.2, Eq. 2), the standard evolution that randomly modifies 1/3 of the connections each
round (§4.2), and random search. Table 3 compares the evolved model with hand-designed multi-stream
models that learn their connection weights but are not evolved (Appendix A.3).

Rows (one per variant and seed; `score` is always on the benchmark's *test* split):

    guided / random-edges / random-search   one search per seed (the seed draws the search's random
                                            choices and the children's initial weights); `score` is
                                            its best child (highest validation fitness) retrained on
                                            the train split and scored on test; `curve` is the mean
                                            fitness of the top 3 of the pool after every round
                                            (Figure 4), `val_fitness` the best child's fitness
    late_fusion / fusion_at_4 / flow_to_rgb /
    fully / four_stream_fully               model.evolution.hand_designed, trained with connection
                                            learning; `score` on test

The searches reuse the project's evolution (pipelines/evolve.py on model/evolution.py); the fitness of
a child is the harness's score on the *validation* split after training on the train split, never on
its own training clips, and the guided strategy inherits the parent's learned σ(w) as the harness
returned them (evolve.py stores them in children/<id>/result.json and reads them back to make the
child). Each search keeps its state under OUT/evolution/<method>/seed<k>/, so a killed suite resumes
without retraining a finished child; a finished search is also one resumable run of the runner.

Writes, besides the runner's rows: OUT/evolution/fig4.png (the Figure 4 curves, mean ± std over
seeds) and OUT/evolution/fig4.csv (method, round, mean, std, seeds).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model import evolution
from model.structure import Structure

METHODS = evolution.STRATEGIES  # ("guided", "random-edges", "random-search")
BASELINES = evolution.HAND_DESIGNED
TOP_K = 3  # Figure 4 plots the mean fitness of the three best models of the pool


@dataclasses.dataclass(frozen=True)
class EvolutionSuiteConfig:
    """The size of each search. `population_size` children are random (the initial pool, §3.2: "the
    initial ~30 rounds are always used for random initialization"); `rounds` more come from
    tournament-selected parents (or at random, for random search). The paper used |P| = 20, tournaments
    of 5 and ~200 rounds on Moments in Time; the defaults here are the project's, sized so that one
    method × seed trains 24 children (see docs/ablations.md for the cost)."""

    population_size: int = 8
    rounds: int = 16
    tournament_size: int = 5  # §3.2: "selected from a random subset of 5"
    keep_threshold: float | None = None  # B of Eq. 2; None: B ~ unif(0, 1) per child
    # A proxy search space at the width of the `tiny` structure (16x narrower than AssembleNet-50,
    # one 2D module per block): RGB + flow stems, as in AssembleNet's Figure 4.
    space: evolution.SearchSpace = evolution.SearchSpace(width_scale=16, repeats=(0.5,) * 4)
    methods: tuple[str, ...] = METHODS
    baselines: tuple[str, ...] = BASELINES

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"EvolutionSuiteConfig.methods: unknown {unknown}; expected some of {METHODS}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"EvolutionSuiteConfig.baselines: unknown {unknown}; expected some of {BASELINES}")

    def evolution_config(self, method: str, seed: int):
        from pipelines.evolve import EvolutionConfig

        return EvolutionConfig(population_size=self.population_size, rounds=self.rounds,
                               tournament_size=self.tournament_size, strategy=method,
                               keep_threshold=self.keep_threshold, seed=int(seed), space=self.space)


def _harness():
    # Looked up at call time, so that tests can count (or stand in for) the harness's trainings.
    from pipelines.ablation import harness

    return harness


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


def child_evaluator(bench, *, budget, seed: int) -> Callable[[Structure, Path], tuple[float, Mapping]]:
    """evolve.py's `evaluate(structure, workdir) -> (fitness, learned edge weights)`: the harness trains
    the child on the train split and scores it on the validation split (§3.2's proxy task)."""

    def evaluate(structure: Structure, workdir: Path) -> tuple[float, Mapping]:
        result = _harness().train_and_score(structure, bench, seed=seed, budget=budget, eval_split="val")
        _write_json(Path(workdir) / "harness.json",
                    {k: v for k, v in result.items() if isinstance(v, (int, float, str))})
        return float(result["score"]), result["edge_weights"]

    return evaluate


def run_search(method: str, seed: int, *, bench, budget, out: str | Path, config: EvolutionSuiteConfig,
               progress: bool = False) -> dict[str, Any]:
    """One search of Figure 4 (resumable in OUT/evolution/<method>/seed<seed>/), then its best child
    retrained on train and scored on test. Returns the row's fields."""
    from pipelines import evolve

    state_dir = Path(out) / "evolution" / method / f"seed{seed}"
    summary = evolve.run_evolution(state_dir, config.evolution_config(method, seed),
                                   evaluate=child_evaluator(bench, budget=budget, seed=seed),
                                   workers=1, progress=progress)
    history = evolve.load_state(state_dir)["history"]
    best = Structure.from_json(state_dir / "best_structure.json")
    test = _test_score(state_dir / "test.json", best, bench, budget=budget, seed=seed,
                       key=summary["best_child"])
    return {"score": test["score"], "val_fitness": summary["best_fitness"], "best_child": summary["best_child"],
            "best_round": summary["best_round"], "children": len(history),
            "curve": [float(h["top3_mean"]) for h in history],
            "params": test.get("params"), "best_structure": best.to_json(),
            "seconds": round(sum(float(h.get("seconds") or 0) for h in history) + float(test.get("seconds", 0)), 3)}


def _test_score(path: Path, structure: Structure, bench, *, budget, seed: int, key: str) -> dict[str, Any]:
    """The test-split score of `structure`, trained afresh on train; cached in `path` so that a kill
    after it does not retrain it."""
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached
    result = _harness().train_and_score(structure, bench, seed=seed, budget=budget, eval_split="test")
    cached = {"key": key, **{k: v for k, v in result.items() if isinstance(v, (int, float, str))}}
    _write_json(path, cached)
    return cached


def run_baseline(kind: str, seed: int, *, bench, budget, config: EvolutionSuiteConfig) -> dict[str, Any]:
    """One hand-designed model of Table 3 with connection learning, trained on train, scored on test."""
    structure = evolution.hand_designed(kind, config.space)
    result = _harness().train_and_score(structure, bench, seed=seed, budget=budget, eval_split="test")
    return {"score": float(result["score"]), "params": result.get("params"), "seconds": result.get("seconds"),
            "edge_weights": result.get("edge_weights"), "structure": structure.to_json()}


# -- Figure 4 -----------------------------------------------------------------------------------------

def fig4_curves(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """{method: {"round", "mean", "std", "seeds"}}: per round, the mean and standard deviation over
    search seeds of the top-3 mean fitness. Rows without a `curve` (baselines) are ignored."""
    by_method: dict[str, list[list[float]]] = {}
    for row in rows:
        if row.get("curve"):
            by_method.setdefault(row["variant"], []).append([float(v) for v in row["curve"]])
    out = {}
    for method, curves in by_method.items():
        length = min(len(c) for c in curves)
        matrix = np.array([c[:length] for c in curves])
        out[method] = {"round": list(range(1, length + 1)), "mean": matrix.mean(axis=0).tolist(),
                       "std": matrix.std(axis=0).tolist(), "seeds": len(curves)}
    return out


def write_fig4(rows: Sequence[Mapping[str, Any]], folder: str | Path, *, population_size: int) -> dict[str, Path]:
    """fig4.csv and fig4.png in `folder` from the finished search rows; {} when there is none."""
    curves = fig4_curves(rows)
    if not curves:
        return {}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "fig4.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "round", "top3_mean", "std", "seeds"])
        for method, c in curves.items():
            for r, m, s in zip(c["round"], c["mean"], c["std"], strict=True):
                writer.writerow([method, r, f"{m:.6g}", f"{s:.6g}", c["seeds"]])
    return {"csv": table, "png": plot_fig4(curves, folder / "fig4.png", population_size=population_size)}


_METHOD_STYLE = {"guided": ("#c44e52", "connection-learning-guided evolution"),
                 "random-edges": ("#4c72b0", "evolution with random edge mutations"),
                 "random-search": ("#55a868", "random search")}


def plot_fig4(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, *,
              population_size: int) -> Path:
    """AssembleNet Figure 4: the mean fitness of the top 3 of the pool per round, one line per search
    method (mean over search seeds, band: ± one standard deviation). The dotted line marks the end
    of the random initial population, which every method shares (§4.2)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    for method, c in curves.items():
        colour, label = _METHOD_STYLE.get(method, (None, method))
        x, mean, std = np.asarray(c["round"]), np.asarray(c["mean"]), np.asarray(c["std"])
        ax.plot(x, mean, color=colour, linewidth=2, label=f"{label} ({c['seeds']} seeds)")
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    ax.axvline(population_size + 0.5, color="#777777", linestyle=":", linewidth=1)
    ax.set_xlabel("round (trained children)")
    ax.set_ylabel(f"mean validation fitness of the top {TOP_K}")
    ax.set_title("Search methods (AssembleNet Fig. 4)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
