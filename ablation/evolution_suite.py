"""Suite `evolution`: AssembleNet Figure 4 and Table 3 on the controlled benchmark.

Figure 4 compares three searches with the same number of trained children: connection-learning-guided
evolution (§3.2, Eq. 2), the standard evolution that randomly modifies 1/3 of the connections each
round (§4.2), and random search. Table 3 compares the evolved model with hand-designed multi-stream
models that learn their connection weights but are not evolved (Appendix A.3).

Rows (one per variant and seed; `score` is always top-1 on the benchmark's *test* split):

    guided / random-edges / random-search   one search per seed (the seed draws the search's random
                                            choices and the children's initial weights); `score` is
                                            its best child (highest validation fitness) retrained on
                                            the train split and scored on test; `curve` is the mean
                                            fitness of the top 3 of the pool after every round
                                            (Figure 4), `val_fitness` the best child's fitness
    late_fusion / fusion_at_4 / flow_to_rgb /
    fully / four_stream_fully               model.evolution.hand_designed at the search space's
                                            capacity, trained with connection learning

The searches are the project's evolution (pipelines/evolve.py driving model/evolution.py): the fitness
of a child is the harness's top-1 on the *validation* split after training on the train split (§3.2's
proxy task; never its own training clips), and the guided strategy inherits the parent's learned σ(w)
as the harness returned them (evolve.py stores them in children/<id>/result.json and reads them back
to make the child). Each search keeps its state in OUT/evolution/searches/<method>/seed<k>/, so a
killed suite resumes without retraining a finished child; a finished search is one row of the runner.

With ASSEMBLENET_ABLATION_WORKERS=N (N > 1) the searches and baselines run as N parallel processes
(each loads the benchmark from the runner's cache; on one GPU they share it, see docs/ablations.md).

Writes, besides the runner's rows: OUT/evolution/fig4.png (the Figure 4 curves, mean ± std over
seeds) and OUT/evolution/fig4.csv (method, round, mean, std, seeds).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ablation.runner import suite
from model import evolution
from model.structure import Structure
from pipelines.checks import write_json

METHODS = evolution.STRATEGIES  # ("guided", "random-edges", "random-search")
BASELINES = evolution.HAND_DESIGNED
TOP_K = 3  # Figure 4 plots the mean fitness of the three best models of the pool
WORKERS_ENV = "ASSEMBLENET_ABLATION_WORKERS"

# AssembleNet Table 3, Moments in Time top-1 (%): the evolved AssembleNet-50 is the guided search's
# result and "Random (+ connection learning)" the random search's; the standard evolution has no row
# (it appears only in Figure 4, whose curves the text gives no numbers for).
PAPER = {"guided": 31.41, "random-search": 29.91, "late_fusion": 28.97, "fusion_at_4": 30.00,
         "flow_to_rgb": 30.21, "fully": 29.87, "four_stream_fully": 29.98}
PAPER_SOURCE = ("AssembleNet Table 3, Moments in Time top-1 % (guided = AssembleNet-50, random-search = "
                "'Random (+ connection learning)'); Figure 4 (search curves) gives no numbers")

Train = Callable[..., dict]


@dataclasses.dataclass(frozen=True)
class EvolutionSuiteConfig:
    """The size of each search. The first `population_size` children are random (the initial pool;
    §4.2: "the initial ~30 rounds are always used for random initialization"); `rounds` more come from
    tournament-selected parents (or at random, for random search). The paper used |P| = 20, tournaments
    of 5 and ~200 rounds on Moments in Time; the defaults are the project's, sized so that the suite
    (9 searches of 18 children, 15 baselines: 186 trainings) fits one GPU lease with worker processes
    (docs/ablations.md). The tournament of 2 of 6 is about the paper's quarter of the pool (5 of 20)."""

    population_size: int = 6
    rounds: int = 12
    tournament_size: int = 2
    keep_threshold: float | None = None  # B of Eq. 2; None: B ~ unif(0, 1) per child (§3.2)
    # A proxy search space at the width of the `tiny` structure (16x narrower than AssembleNet-50, one
    # 2D module per block): RGB + flow stems, as the search of AssembleNet's Figure 4.
    space: evolution.SearchSpace = evolution.SearchSpace(width_scale=16, repeats=(0.5,) * 4)
    methods: tuple[str, ...] = METHODS
    baselines: tuple[str, ...] = BASELINES
    workers: int = 1

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"EvolutionSuiteConfig.methods: unknown {unknown}; expected some of {METHODS}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"EvolutionSuiteConfig.baselines: unknown {unknown}; expected some of {BASELINES}")
        if self.workers < 1:
            raise ValueError(f"EvolutionSuiteConfig.workers={self.workers}: expected >= 1")

    def evolution_config(self, method: str, seed: int):
        from pipelines.evolve import EvolutionConfig

        return EvolutionConfig(population_size=self.population_size, rounds=self.rounds,
                               tournament_size=self.tournament_size, strategy=method,
                               keep_threshold=self.keep_threshold, seed=int(seed), space=self.space)


CONFIG = EvolutionSuiteConfig()


def workers_from_env() -> int:
    raw = os.environ.get(WORKERS_ENV, "1")
    try:
        workers = int(raw)
    except ValueError:
        raise ValueError(f"{WORKERS_ENV}={raw!r}: expected a positive integer") from None
    if workers < 1:
        raise ValueError(f"{WORKERS_ENV}={raw!r}: expected a positive integer")
    return workers


def _scalars(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}


# -- one search, one baseline -----------------------------------------------------------------------

def fast_children(train: Train) -> Train:
    """`train` for the searches' children: with ASSEMBLENET_ABLATION_FASTPATH=1 and the real harness
    (ctx.train or a WorkerTrain of harness.train_and_score), the process's fastpath.ChildTrainer on its
    benchmark and budget (`fastpath.trainer_for`: its compiled models serve every search of the process);
    otherwise `train` itself (e.g. the tests' stand-in)."""
    from ablation import fastpath, harness

    if not fastpath.enabled():
        return train
    if isinstance(train, WorkerTrain):
        fn, bench, budget = train.fn, _load_bench(train.bench), train.budget
    else:
        owner = getattr(train, "__self__", None)  # ctx.train, a bound method of the runner's SuiteContext
        fn, bench, budget = (getattr(owner, name, None) for name in ("trainer", "bench", "budget"))
    if fn is not harness.train_and_score or bench is None:
        return train
    return fastpath.trainer_for(bench, budget)


def child_evaluator(train: Train, *, seed: int) -> Callable[[Structure, Path], tuple[float, Mapping]]:
    """evolve.py's `evaluate(structure, workdir) -> (fitness, learned edge weights)`: the harness trains
    the child on the train split and scores it on the validation split (§3.2's proxy task). With
    ASSEMBLENET_ABLATION_FASTPATH=1 the children train on the fast path (`fast_children`)."""
    train = fast_children(train)

    def evaluate(structure: Structure, workdir: Path) -> tuple[float, Mapping]:
        result = train(structure, seed=seed, eval_split="val")
        write_json(Path(workdir) / "harness.json", _scalars(result))
        return float(result["score"]), result["edge_weights"]

    return evaluate


def search_dir(out: str | Path, method: str, seed: int) -> Path:
    return Path(out) / "searches" / method / f"seed{seed}"


def run_search(method: str, seed: int, *, train: Train, out: str | Path, config: EvolutionSuiteConfig,
               progress: bool = False) -> dict[str, Any]:
    """One search of Figure 4 (resumable in `search_dir`), then its best child retrained on the train
    split and scored on test. `train(structure, **kwargs)` is the harness with bench and budget bound."""
    from pipelines import evolve

    state_dir = search_dir(out, method, seed)
    summary = evolve.run_evolution(state_dir, config.evolution_config(method, seed),
                                   evaluate=child_evaluator(train, seed=seed), workers=1, progress=progress)
    history = evolve.load_state(state_dir)["history"]
    best = Structure.from_json(state_dir / "best_structure.json")
    test = _test_score(state_dir / "test.json", best, train, seed=seed, key=summary["best_child"])
    return {"score": test["score"], "val_fitness": summary["best_fitness"], "best_child": summary["best_child"],
            "best_round": summary["best_round"], "children": len(history),
            "curve": [float(h["top3_mean"]) for h in history],
            "params": test.get("params"), "best_structure": best.to_json(),
            "seconds": round(sum(float(h.get("seconds") or 0) for h in history) + float(test.get("seconds", 0)), 3)}


def _test_score(path: Path, structure: Structure, train: Train, *, seed: int, key: str) -> dict[str, Any]:
    """The test-split top-1 of `structure`, trained afresh on train; cached in `path` so that a kill
    after it does not retrain it."""
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached
    cached = {"key": key, **_scalars(train(structure, seed=seed, eval_split="test"))}
    write_json(path, cached)
    return cached


def run_baseline(kind: str, seed: int, *, train: Train, config: EvolutionSuiteConfig) -> dict[str, Any]:
    """One hand-designed model of Table 3 with connection learning, trained on train, scored on test."""
    structure = evolution.hand_designed(kind, config.space)
    result = train(structure, seed=seed, eval_split="test")
    return {**_scalars(result), "score": float(result["score"]), "edge_weights": result.get("edge_weights"),
            "structure": structure.to_json()}


# -- the suite ----------------------------------------------------------------------------------------

def jobs(config: EvolutionSuiteConfig, seeds: Sequence[int]) -> list[tuple[str, str, str, int]]:
    """(key, kind, variant, seed) of every run: the baselines first (short), then the searches seed by
    seed, so that an interrupted suite has every method at the same number of seeds."""
    out = [(f"{b}/seed{s}", "baseline", b, s) for s in seeds for b in config.baselines]
    return out + [(f"{m}/seed{s}", "search", m, s) for s in seeds for m in config.methods]


def _job(kind: str, variant: str, seed: int, *, train: Train, out: Path, config: EvolutionSuiteConfig) -> dict:
    if kind == "search":
        return run_search(variant, seed, train=train, out=out, config=config)
    return run_baseline(variant, seed, train=train, config=config)


def run_suite(ctx, config: EvolutionSuiteConfig) -> list[dict]:
    """Runs (or resumes) every job of `config` through `ctx.run`; writes fig4.csv / fig4.png."""
    todo = jobs(config, ctx.seeds)
    ctx.expect(len(todo))
    if config.workers > 1:
        rows = _run_parallel(ctx, config, todo)
    else:
        rows = [ctx.run(key, functools.partial(_job, kind, variant, seed, train=ctx.train, out=ctx.out,
                                               config=config), variant=variant, seed=seed)
                for key, kind, variant, seed in todo]
    write_fig4(rows, ctx.out, population_size=config.population_size)
    return rows


@suite("evolution", title="AssembleNet Fig. 4 / Table 3: search methods and hand-designed baselines",
       paper=PAPER, paper_source=PAPER_SOURCE, metric="top-1 accuracy (test split)",
       order=(*METHODS, *BASELINES))
def evolution_suite(ctx) -> None:
    run_suite(ctx, dataclasses.replace(CONFIG, workers=workers_from_env()))


# -- parallel processes ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WorkerTrain:
    """A picklable `ctx.train` for a worker process: the harness function and the budget, and the
    benchmark as the path of the runner's cached .npz (loaded once per process) or the object itself."""

    fn: Train
    bench: Any
    budget: Any

    def __call__(self, structure, **kwargs) -> dict:
        kwargs.setdefault("budget", self.budget)
        return self.fn(structure, _load_bench(self.bench), **kwargs)


@functools.lru_cache(maxsize=2)
def _cached_bench(path: str):
    from ablation.benchmark import load

    return load(path)


def _load_bench(bench):
    return _cached_bench(str(bench)) if isinstance(bench, (str, Path)) else bench


def _bench_source(bench):
    """The benchmark's cache file (`load_or_generate` records it), else the object itself."""
    path = getattr(bench, "path", None)
    return str(path) if path is not None and Path(path).is_file() else bench


def _run_parallel(ctx, config: EvolutionSuiteConfig, todo) -> list[dict]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # JAX takes 75% of a GPU's memory per process unless told otherwise; N workers share one GPU.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    train = WorkerTrain(ctx.trainer, _bench_source(ctx.bench), ctx.budget)
    labels = {key: {"variant": variant, "seed": seed} for key, _, variant, seed in todo}
    rows = {key: ctx.run(key, _unreachable(key), **labels[key]) for key, *_ in todo
            if ctx.store.get(f"{ctx.name}/{key}") is not None}
    from pipelines.evolve import die_with_parent

    # Workers die with the suite (a `timeout` or kill -9 of it leaves no orphan training a child, whose
    # lock would make the resumed suite refuse that child), as evolve.py's own workers do.
    with ProcessPoolExecutor(config.workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        # The searches first: each is a chain of models, the suite's critical path.
        start = sorted((job for job in todo if job[0] not in rows), key=lambda job: job[1] != "search")
        futures = {pool.submit(_job, kind, variant, seed, train=train, out=ctx.out, config=config): key
                   for key, kind, variant, seed in start}
        try:
            for future in as_completed(futures):  # each row is stored as soon as its run finishes
                key = futures[future]
                rows[key] = ctx.run(key, future.result, **labels[key])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [rows[key] for key, *_ in todo]


def _unreachable(key: str):
    def fail():
        raise RuntimeError(f"evolution suite: run {key!r} was stored when the suite started but is gone")
    return fail


# -- Figure 4 -----------------------------------------------------------------------------------------

def fig4_curves(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """{method: {"round", "mean", "std", "seeds"}}: per round, the mean and standard deviation (ddof 1,
    as the runner's tables; NaN for one seed) over search seeds of the top-3 mean fitness. Rows without
    a `curve` (baselines) are ignored."""
    by_method: dict[str, list[list[float]]] = {}
    for row in rows:
        if row.get("curve"):
            by_method.setdefault(row["variant"], []).append([float(v) for v in row["curve"]])
    out = {}
    for method, curves in by_method.items():
        length = min(len(c) for c in curves)
        matrix = np.array([c[:length] for c in curves])
        out[method] = {"round": list(range(1, length + 1)), "mean": matrix.mean(axis=0).tolist(),
                       "std": (matrix.std(axis=0, ddof=1) if len(curves) > 1 else np.full(length, np.nan)).tolist(),
                       "seeds": len(curves)}
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
    png = plot_fig4(curves, folder / "fig4.png", population_size=population_size)
    seeds = ", ".join(f"{m}: {c['seeds']}" for m, c in curves.items())
    write_json(folder / "figures.json", {png.name: (
        "AssembleNet Fig. 4 on the benchmark: mean validation top-1 of the 3 best models of the pool per round, "
        f"mean ± std over search seeds ({seeds}); the dotted line ends the random initial population")})
    return {"csv": table, "png": png}


_METHOD_STYLE = {"guided": ("#c44e52", "connection-learning-guided evolution"),
                 "random-edges": ("#4c72b0", "evolution with random edge mutations"),
                 "random-search": ("#55a868", "random search")}


def plot_fig4(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, *,
              population_size: int) -> Path:
    """AssembleNet Figure 4: the mean fitness of the top 3 of the pool per round, one line per search
    method (mean over search seeds, band: ± one standard deviation). The dotted line marks the end
    of the random initial population, which every method shares (§4.2)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    for method, c in curves.items():
        colour, label = _METHOD_STYLE.get(method, (None, method))
        x, mean, std = np.asarray(c["round"]), np.asarray(c["mean"]), np.asarray(c["std"])
        ax.plot(x, mean, color=colour, linewidth=2, label=f"{label} ({c['seeds']} seeds)")
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    ax.axvline(population_size + 0.5, color="#777777", linestyle=":", linewidth=1)
    ax.set_xlabel("round (trained children)")
    ax.set_ylabel(f"mean validation top-1 of the top {TOP_K}")
    ax.set_title("Search methods (AssembleNet Fig. 4)")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="best")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
