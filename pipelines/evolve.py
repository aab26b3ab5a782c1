"""The evolution driver (AssembleNet §3.2): a resumable, parallel tournament-selection search.

All search state lives in one folder, so a search killed at any moment resumes without
repeating a finished evaluation, and an orchestrator can run each evaluation as its own task:

    OUT/state.json                    config, RNG state, population {child: fitness}, pending
                                      children, history (replaced atomically after every change)
    OUT/children/<child>/spec.json    the proposed child: structure, parent, what was mutated
    OUT/children/<child>/result.json  its fitness and learned edge weights (written atomically)
    OUT/children/<child>/run/         the proxy training run (pipelines.train run directory)
    OUT/history.json, OUT/best_structure.json, OUT/fitness.png, OUT/evolution_summary.json

The three steps are importable on their own (an Airflow DAG maps `evaluate_child` over the ids
that `propose_children` returns, then calls `integrate_results`):

    ids = propose_children(out, n)            # writes n child specs (single writer of state.json)
    evaluate_child(out, child_id)             # trains + scores one child -> result.json (parallel)
    integrate_results(out)                    # finished children join; the worst members leave

`run_evolution` drives them with `workers` parallel processes. Fitness comes from an injectable
`evaluate(structure, workdir) -> (fitness, edge_weights)`; `TrainEvaluator` (the default) trains
the child with `pipelines.train.train` for a proxy budget and scores it (§3.2: top-1 + top-5
accuracy for single-label data; mAP for multi-label Charades).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from model import evolution
from model.structure import Structure
from pipelines import configs, locks
from pipelines.checks import UserError
from pipelines.configs import SEED, Range, fraction, non_negative, positive, setting
from pipelines.rundir import CONNECTION_WEIGHTS, METRICS, STRUCTURE, RunDir, read_json, write_json

STATE = "state.json"
CHILDREN = "children"
SPEC = "spec.json"  # children/<child>/: the proposed child
RESULT = "result.json"  # children/<child>/: its fitness and learned edge weights
RUN = "run"  # children/<child>/: the proxy training run (a pipelines.rundir run directory)
Evaluate = Callable[[Structure, Path], tuple[float, Mapping]]


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
    """One search. `rounds` counts the children evaluated after the initial population (whose
    `population_size` random members are the first rounds, §4.2). `keep_threshold` is B of Eq. 2:
    a constant, or None for B ~ unif(0, 1) per child."""

    # 1 is allowed: the ablations run one-member searches (tests/ablation/test_evolution.py).
    population_size: int = setting(20, "population size |P| (paper: 20)", type=Range(int, 1, 100000),
                                   flag_name="population")
    rounds: int = setting(100, "children evaluated after the random initial population (paper: ~200)",
                          type=non_negative())
    tournament_size: int = setting(5, "tournament subset size (paper: 5)", type=positive(), flag_name="tournament")
    strategy: str = setting("guided", "guided = Eq. 2; the two baselines of Figure 4", choices=evolution.STRATEGIES)
    # `evolve --keep-threshold` takes a number or 'random' (None here): its flag is the command's own.
    keep_threshold: float | None = setting(
        None, "B of Eq. 2: a number in [0, 1], or None for B ~ unif(0, 1) per child", type=fraction(),
        flag=False)
    seed: int = setting(0, "seed of the search's random choices", type=SEED, flag_name="search_seed")
    space: evolution.SearchSpace = setting(evolution.SearchSpace(), "the search space (model.evolution)",
                                           flag=False)
    fast_path: bool = setting(
        False, "train the children in the evolve process on one compiled masked model per shape "
               "(pipelines.fast_children): edges, temporal resolutions and, with attention none, fused widths "
               "are runtime data, so only children with other nodes or fused strides compile again; a new "
               "shape's model is larger than the child's own, so it pays off only where children share shapes "
               "(docs/ablations.md). A child's score equals the plain run's started from the same weights "
               "(tests, both backends), but its "
               "initial weights are other, equally distributed draws, so a search is trained one way: off by "
               "default, so that searches started without it resume as they were; needs --workers 1")

    def __post_init__(self):
        configs.check(self)  # each field's type, choices and range (the space checks itself)

    @property
    def total(self) -> int:
        return self.population_size + self.rounds

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["space"] = self.space.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvolutionConfig:
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"EvolutionConfig: unknown fields {sorted(unknown)}; "
                             f"expected some of {sorted(names)}")
        if "space" in data:
            data["space"] = evolution.SearchSpace.from_json(data["space"])
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class TrainEvaluator:
    """Fitness by proxy training: `pipelines.train.train` on `data` with the TrainConfig fields in
    `train` (steps, frames, size, batch_size, dataset, ...), then scoring on `eval_data`, the
    validation subset of §3.2. A search never scores on the children's training videos: with
    `eval_data` None, `init_search` holds out the fraction `holdout` of the videos of `data`
    (pipelines.holdout) and stores the evaluator of the two parts. Picklable, so workers can run it."""

    data: str
    eval_data: str | None = None
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    clips: int = 1
    batch_size: int = 4
    holdout: float = 0.2

    def __post_init__(self):
        from pipelines.train import TrainConfig

        if "structure" in self.train:
            raise ValueError("TrainEvaluator.train must not set 'structure': each child sets its own")
        if not 0 < self.holdout < 1:
            raise ValueError(f"TrainEvaluator.holdout={self.holdout}: expected a fraction in (0, 1)")
        TrainConfig.from_json(dict(self.train))  # a typo fails now, not after hours of search

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "eval_data": self.eval_data, "train": dict(self.train),
                "clips": self.clips, "batch_size": self.batch_size, "holdout": self.holdout}

    def run_dir(self, workdir: str | Path) -> RunDir:
        """The child's proxy training run under its folder `workdir`."""
        return RunDir(Path(workdir) / RUN)

    def score(self, model, config, structure: Structure) -> dict[str, Any]:
        """`score_model` of a trained child on this evaluator's `eval_data` (its clips and batch size)."""
        return score_model(model, config, structure, self.eval_data, clips=self.clips, batch_size=self.batch_size)

    def __call__(self, structure: Structure, workdir: Path) -> tuple[float, dict]:
        import keras

        from pipelines.train import TrainConfig, train

        if self.eval_data is None:
            raise ValueError("TrainEvaluator: no eval_data; a search gets it from init_search (held-out videos "
                             "of --data) so that no child is scored on its own training clips")
        workdir = Path(workdir)
        path = structure.save(workdir / STRUCTURE)
        config = TrainConfig(**{**self.train, "structure": str(path)})
        run = self.run_dir(workdir)
        train(config=config, data=self.data, workdir=run.path, verbose=0)
        metrics = score_run(run.path, self.eval_data, clips=self.clips, batch_size=self.batch_size)
        weights = run.read(CONNECTION_WEIGHTS)
        keras.backend.clear_session()
        return metrics["fitness"], weights


def score_run(run_dir: str | Path, data: str, *, clips: int = 1, batch_size: int = 4) -> dict[str, Any]:
    """Scores RUN_DIR/model.keras on `data` and writes RUN_DIR/metrics.json with the fitness of §3.2:
    mAP for multi-label (Charades) runs, top-1 + top-5 accuracy for single-label ones."""
    import keras

    import model.assemblenet  # noqa: F401  (registers the custom layers for load_model)
    from pipelines.train_config import TrainConfig

    run = RunDir(run_dir)
    config = TrainConfig.from_json(run.config)
    structure = Structure.from_json(run.structure)
    model = keras.models.load_model(run.model)
    result = score_model(model, config, structure, data, clips=clips, batch_size=batch_size)
    run.write(METRICS, result)
    return result


def score_model(model, config, structure: Structure, data: str, *, clips: int = 1,
                batch_size: int = 4) -> dict[str, Any]:
    """`score_run`'s metrics and fitness of a model in memory (of `structure`, trained with the
    TrainConfig `config`) on `data`; writes nothing."""
    import keras

    from pipelines import metrics
    from pipelines.train import tfrecord_files
    from preprocessing.loader import make_reader, to_numpy

    ds = make_reader(tfrecord_files(data), modalities=structure.modalities, frames=config.frames,
                      size=config.size, training=False, batch_size=batch_size, dataset=config.dataset,
                      num_classes=config.num_classes, clips_per_video=clips)
    ids, scores, labels = [], [], []
    for element in ds:  # (inputs, labels), plus the video ids when clips > 1
        scores.append(keras.ops.convert_to_numpy(model(element[0], training=False)))
        labels.append(np.array(to_numpy(element[1])))
        if clips > 1:
            videos = to_numpy(element[2]).reshape(-1)
            ids += [v.decode() if isinstance(v, bytes) else str(v) for v in videos]
        else:
            ids += [f"clip{len(ids) + k}" for k in range(len(labels[-1]))]
    _, pooled = metrics.max_pool_clips(ids, np.concatenate(scores))
    _, truth = metrics.max_pool_clips(ids, np.concatenate(labels))
    if config.dataset == "charades":
        result: dict[str, Any] = {"mAP": metrics.charades_map(pooled, truth).mAP}
    else:
        true = truth.argmax(axis=1)
        top5 = np.argsort(-pooled, axis=1)[:, :5]
        result = {"top1": float(np.mean(top5[:, 0] == true)),
                  "top5": float(np.mean((top5 == true[:, None]).any(axis=1)))}
    result.update(fitness=evolution.fitness_from_metrics(result), num_videos=len(pooled), clips=clips,
                  data=str(data))
    return result


# -- state ---------------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    return read_json(path, "search state")


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """propose/integrate read-modify-write state.json: one at a time, even across processes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _child_dir(state_dir: Path, child: str) -> Path:
    return Path(state_dir) / CHILDREN / child


def load_state(state_dir: str | Path) -> dict[str, Any]:
    path = Path(state_dir) / STATE
    if not path.exists():
        raise ValueError(f"{path}: no search state; start one with `assemblenet evolve` or init_search()")
    return _read_json(path)


def evaluation_data(state_dir: str | Path, evaluator: TrainEvaluator) -> tuple[TrainEvaluator, dict[str, Any]]:
    """The evaluator the search stores, and how its fitness data was chosen (AssembleNet §3.2).

    With `eval_data`, it must hold none of the training videos. Without, the videos of `data` are
    split by id hash (pipelines.holdout) into OUT/holdout/train, which the children train on, and
    OUT/holdout/heldout, which scores them."""
    from pipelines.holdout import check_distinct, holdout_split

    if evaluator.eval_data is not None:
        return evaluator, check_distinct(evaluator.data, evaluator.eval_data)
    split = holdout_split(evaluator.data, Path(state_dir) / "holdout", evaluator.holdout)
    return dataclasses.replace(evaluator, data=split["train"], eval_data=split["eval"]), split


def init_search(state_dir: str | Path, config: EvolutionConfig,
                evaluator: TrainEvaluator | None = None) -> dict[str, Any]:
    """Creates OUT/state.json, or checks that an existing search has the same config.

    Only `rounds` may differ on resume (to extend or shorten a search). `state["evaluation"]` says
    where the fitness comes from (`evaluation_data`)."""
    state_dir = Path(state_dir)
    evaluation = None
    if evaluator is not None:
        evaluator, evaluation = evaluation_data(state_dir, evaluator)
    with _locked(state_dir):
        path = state_dir / STATE
        if path.exists():
            state = _read_json(path)
            old = EvolutionConfig.from_json(state["config"])
            if dataclasses.replace(old, rounds=config.rounds) != config:
                changed = {k: (v, config.to_json()[k]) for k, v in old.to_json().items()
                           if k != "rounds" and config.to_json()[k] != v}
                raise ValueError(f"{path}: this search was started with another config; changed (old, new): "
                                 f"{changed}. Use a new --out, or the same flags to resume.")
            if evaluator is not None and state.get("evaluator"):
                _check_same_evaluator(path, state["evaluator"], evaluator)
            state["config"] = config.to_json()
            if evaluator is not None:
                state["evaluator"] = evaluator.to_json()
                state["evaluation"] = evaluation
        else:
            state = {"config": config.to_json(), "evaluator": evaluator.to_json() if evaluator else None,
                     "evaluation": evaluation if evaluator else {"mode": "custom evaluate callable"},
                     "rng": np.random.default_rng(config.seed).bit_generator.state, "next_child": 0,
                     "population": {}, "pending": [], "history": []}
        write_json(path, state)
    return state


def _effective(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored TrainEvaluator with every TrainConfig default filled in (an unset flag and the flag
    set to its default train the same children)."""
    from pipelines.train import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainEvaluator)}
    evaluator = TrainEvaluator(**{k: v for k, v in spec.items() if k in known}).to_json()
    evaluator["train"] = {k: v for k, v in TrainConfig.from_json(dict(evaluator["train"])).to_json().items()
                          if k != "structure"}
    return evaluator


def _check_same_evaluator(path: Path, stored: Mapping[str, Any], evaluator: TrainEvaluator) -> None:
    """Refuses to extend or resume a search with other proxy-training settings: children trained
    for 80 and for 10 steps (or on other data) must not compete in one population (§3.2)."""
    old, new = _effective(stored), _effective(evaluator.to_json())
    changed = {f"--{k.replace('_', '-')}": (v, new["train"].get(k)) for k, v in old["train"].items()
               if new["train"].get(k) != v}
    changed.update({f"evaluator.{k}": (v, new.get(k)) for k, v in old.items()
                    if k != "train" and new.get(k) != v})
    if changed:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise UserError(f"{path}: this search's children were trained with other proxy-training settings "
                        f"({listed}); refusing to mix them in one population: use a new --out to start a "
                        "new population, or the same flags to resume")


def _rng(state: Mapping[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    return rng


def _load_child(state_dir: Path, child: str) -> tuple[Structure, dict, dict | None]:
    folder = _child_dir(state_dir, child)
    spec = _read_json(folder / SPEC)
    result = _read_json(folder / RESULT) if (folder / RESULT).exists() else None
    return Structure.from_json(spec["structure"]), spec, result


# -- the three steps -------------------------------------------------------------------------------

def propose_children(state_dir: str | Path, n: int) -> list[str]:
    """Writes up to `n` new child specs and returns their ids.

    The first `population_size` children are random architectures (§3.2); later ones come from a
    tournament-selected parent (or are random, for the random-search baseline). Fewer than `n`
    come back when the budget is spent, or when no member has been scored yet to be a parent."""
    state_dir = Path(state_dir)
    with _locked(state_dir):
        state = load_state(state_dir)
        config = EvolutionConfig.from_json(state["config"])
        rng = _rng(state)
        ids = []
        while len(ids) < n and state["next_child"] < config.total:
            number = state["next_child"]
            child = f"c{number:04d}"
            parent = None
            if number < config.population_size or config.strategy == "random-search":
                phase = "initial" if number < config.population_size else "child"
                structure = evolution.random_structure(config.space, rng, name=child)
                info: dict[str, Any] = {"strategy": "random"}
            else:
                if not state["population"]:
                    break
                phase = "child"
                parent = evolution.tournament(state["population"], rng, config.tournament_size)
                parent_structure, _, parent_result = _load_child(state_dir, parent)
                weights = evolution.parse_edge_weights(parent_result["edge_weights"])
                structure, info = evolution.make_child(
                    parent_structure, weights, config.space, rng, strategy=config.strategy,
                    keep_threshold=config.keep_threshold, name=child)
            write_json(_child_dir(state_dir, child) / SPEC,
                        {"child": child, "parent": parent, "phase": phase, "info": info,
                         "structure": structure.to_json()})
            state["next_child"] = number + 1
            state["pending"].append(child)
            ids.append(child)
        state["rng"] = rng.bit_generator.state
        write_json(state_dir / STATE, state)
    return ids


def evaluate_child(state_dir: str | Path, child: str, evaluate: Evaluate | None = None) -> dict[str, Any]:
    """Trains and scores one proposed child; writes children/<child>/result.json.

    Idempotent: a child with a result is not evaluated again. Without `evaluate`, the search's
    stored TrainEvaluator is used. Touches nothing but the child's folder, so many run at once."""
    state_dir = Path(state_dir)
    folder = _child_dir(state_dir, child)
    if (folder / RESULT).exists():
        return _read_json(folder / RESULT)
    if not (folder / SPEC).exists():
        raise ValueError(f"{folder / SPEC}: no such child; propose_children() writes it")
    if evaluate is None:
        evaluate = stored_evaluator(state_dir)
    structure, _, _ = _load_child(state_dir, child)
    with _child_lock(state_dir, child):
        if (folder / RESULT).exists():  # finished by another process meanwhile
            return _read_json(folder / RESULT)
        start = time.monotonic()
        fitness, weights = evaluate(structure, folder)
        if not np.isfinite(fitness):
            raise ValueError(f"child {child}: fitness {fitness} is not finite")
        edges = weights if all(isinstance(k, tuple) for k in weights) else evolution.parse_edge_weights(weights)
        result = {"child": child, "fitness": float(fitness),
                  "edge_weights": evolution.edge_weights_to_json(edges),
                  "seconds": round(time.monotonic() - start, 3)}
        write_json(folder / RESULT, result)
    return result


def stored_evaluator(state_dir: str | Path) -> Evaluate:
    """The search's stored TrainEvaluator, or with `fast_path` the process's FastChildren for it (its
    compiled models serve every child this process evaluates)."""
    state = load_state(state_dir)
    spec = state.get("evaluator")
    if not spec:
        raise ValueError(f"{Path(state_dir) / STATE}: the search has no stored evaluator; pass evaluate=")
    evaluator = TrainEvaluator(**spec)
    if EvolutionConfig.from_json(state["config"]).fast_path:
        from pipelines.fast_children import fast_children

        return fast_children(evaluator)
    return evaluator


class ChildBusy(UserError):
    """The child is being trained by another live process."""


CHILD_LOCK = ".training.lock"


@contextlib.contextmanager
def _child_lock(state_dir: Path, child: str) -> Iterator[None]:
    """children/<child>/.training.lock, held while the child trains and recording the trainer
    (`pipelines.locks`: pid, host, command, since when).

    The lock is an flock on that file, which the kernel drops when its holder dies however it dies,
    so the lock of a killed process is taken over at once, while a live holder (a second `evolve` on
    the same folder, an orphaned worker, a retried Airflow task) makes this call refuse: a child is
    never trained twice at once in the same folder."""
    path = _child_dir(state_dir, child) / CHILD_LOCK

    def busy(holder):
        return ChildBusy(f"{path}: child {child} is being trained by {locks.describe(holder)} (another "
                         f"`assemblenet evolve --out {state_dir}`?); wait for it to finish or stop it, "
                         "then run again")

    with locks.hold(path, busy):
        yield


def integrate_results(state_dir: str | Path) -> list[str]:
    """Adds every finished pending child to the population, in id order; whenever the population
    exceeds its size, the least fit member leaves (§3.2). Returns the integrated ids."""
    state_dir = Path(state_dir)
    with _locked(state_dir):
        state = load_state(state_dir)
        config = EvolutionConfig.from_json(state["config"])
        done = []
        for child in sorted(state["pending"]):
            structure, spec, result = _load_child(state_dir, child)
            if result is None:
                continue
            population = state["population"]
            population[child] = result["fitness"]
            removed = evolution.worst(population) if len(population) > config.population_size else None
            if removed is not None:
                del population[removed]
            state["pending"].remove(child)
            state["history"].append({
                "round": len(state["history"]) + 1, "child": child, "parent": spec["parent"],
                "phase": spec["phase"], "fitness": result["fitness"],
                "top3_mean": evolution.top_mean(list(population.values()), 3), "removed": removed,
                "seconds": result.get("seconds"), "info": spec["info"], "structure": structure.to_json(),
                "edge_weights": result["edge_weights"]})
            done.append(child)
        if done:
            write_json(state_dir / STATE, state)
    return done


def finalize(state_dir: str | Path) -> dict[str, Any]:
    """Writes history.json, best_structure.json (for `assemblenet train --structure`), fitness.png
    and evolution_summary.json from the state; returns the summary."""
    state_dir = Path(state_dir)
    state = load_state(state_dir)
    history = state["history"]
    if not history:
        raise ValueError(f"{state_dir}: no evaluated child yet; nothing to report")
    write_json(state_dir / "history.json", history)
    best = max(history, key=lambda h: (h["fitness"], -h["round"]))
    structure = Structure.from_json(best["structure"]).replace(name=f"evolved_{best['child']}")
    structure.save(state_dir / "best_structure.json")
    from pipelines.plots import plot_fitness

    plot_fitness(history, state_dir / "fitness.png")  # mean of the top 3 per round (Figure 4)
    config = state["config"]
    summary = {"best_child": best["child"], "best_fitness": best["fitness"], "best_round": best["round"],
               "evaluations": len(history), "strategy": config["strategy"],
               "population": dict(sorted(state["population"].items())),
               "top3_mean": history[-1]["top3_mean"], "evaluation": _evaluation_brief(state.get("evaluation"))}
    write_json(state_dir / "evolution_summary.json", summary)
    return summary


def _evaluation_brief(evaluation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """state["evaluation"] without the list of held-out ids (they stay in state.json and split.json)."""
    return None if evaluation is None else {k: v for k, v in evaluation.items() if k != "heldout_ids"}


# -- the driver ---------------------------------------------------------------------------------------

def _unfinished(state_dir: Path, state: Mapping[str, Any]) -> list[str]:
    return [c for c in state["pending"] if not (_child_dir(state_dir, c) / RESULT).exists()]


def run_evolution(out_dir: str | Path, config: EvolutionConfig, *, evaluate: Evaluate | None = None,
                  evaluator: TrainEvaluator | None = None, workers: int = 1,
                  progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) a search in `out_dir` until `config.total` children are evaluated.

    `evaluate` (a picklable callable for workers > 1) overrides the stored `evaluator`. With
    workers > 1 children are trained in spawned processes, each a fresh one (no state leaks
    between children); a new child is proposed as soon as one finishes (asynchronous, as the
    paper's 10 parallel workers)."""
    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"workers={workers}: expected >= 1")
    if config.fast_path and workers > 1:
        raise UserError(f"--fast-path trains the children in this process on shared compiled models; "
                        f"--workers {workers} would give each child a process of its own: use --workers 1")
    if evaluate is None and evaluator is None and not (Path(out_dir) / STATE).exists():
        raise ValueError("run_evolution: pass evaluate= or evaluator= to start a new search")
    state_dir = Path(out_dir)
    with locks.writer_lock(state_dir, "evolution folder"):  # one `evolve` per OUT
        if evaluator is not None:
            check_search_data(evaluator, config)
        init_search(state_dir, config, evaluator)
        integrate_results(state_dir)  # children finished before an interruption
        done = len(load_state(state_dir)["history"])
        bar = tqdm(total=config.total, initial=done, desc="evolution", unit="child", disable=not progress)
        try:
            if workers == 1:
                while True:
                    state = load_state(state_dir)
                    todo = _unfinished(state_dir, state) or propose_children(state_dir, 1)
                    if not todo:
                        break
                    for child in todo:
                        evaluate_child(state_dir, child, evaluate)
                        bar.update(len(integrate_results(state_dir)))
            else:
                _run_parallel(state_dir, evaluate, workers, bar)
        finally:
            bar.close()
        return finalize(state_dir)


def check_search_data(evaluator: TrainEvaluator, config: EvolutionConfig) -> None:
    """Fails before the first child when the proxy data does not fit the search: its dataset and
    classes against the proxy flags, its modalities against the stems every child has (rgb and
    flow, plus the object stem when the search space has one)."""
    from pipelines.checks import check_records, records_settings
    from pipelines.train import TrainConfig

    recipe = TrainConfig.from_json(dict(evaluator.train))
    modalities = ("rgb", "flow", "object") if config.space.object_stem else ("rgb", "flow")
    settings, settings_from = None, ""
    for flag, data in (("--data", evaluator.data), ("--eval-data", evaluator.eval_data)):
        if data:
            info = check_records(data, dataset=recipe.dataset, num_classes=recipe.num_classes,
                                 modalities=modalities, flag=flag, source="the search", settings=settings,
                                 settings_from=settings_from)
            # Fitness is measured on records made like the children's training data.
            settings, settings_from = records_settings(data, info, flag), f"--data {data}"


def _run_parallel(state_dir: Path, evaluate: Evaluate | None, workers: int, bar) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1,
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        running: dict = {}
        while True:
            state = load_state(state_dir)
            todo = [c for c in _unfinished(state_dir, state) if c not in running.values()]
            free = workers - len(running) - len(todo)
            if free > 0:
                todo += propose_children(state_dir, free)
            for child in todo[:max(workers - len(running), 0)]:
                running[pool.submit(evaluate_child, state_dir, child, evaluate)] = child
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                del running[future]
                future.result()  # a failed child stops the search loudly; resuming retries it
            bar.update(len(integrate_results(state_dir)))


def die_with_parent(parent: int) -> None:
    """Worker initializer: the worker dies with the driver, even when the driver is SIGKILLed
    (which runs no cleanup of its own). On Linux the kernel sends SIGKILL when the parent goes
    (prctl PR_SET_PDEATHSIG); everywhere, a daemon thread exits once the parent pid changes (the
    worker was re-parented), which also covers a driver that died before the prctl call."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
