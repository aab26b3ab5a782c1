"""The end-to-end job, one plain function per stage (the Airflow DAGs in dags/ call these).

    synthetic data ─► preprocess train / val / test (Beam) ─► evolution (rounds of mapped children)
      ─► one-shot attention search + pruning ─► full training ─► evaluation ─► report

Every function takes and returns paths, writes only under the folder it is given and can be run
again after a failure: data generation is skipped when the same data is already there,
preprocessing skips videos already written, evolution resumes from its state folder, training
and the one-shot search resume from their checkpoints, evaluation and the report are rewritten.
So a retried Airflow task is safe, and the same logic is tested without Airflow.

Layout of one run folder WORKDIR (the final training run directory of docs/CONTRACTS.md, with the
earlier stages beside it, where `pipelines.report` finds them):

    WORKDIR/data/synthetic/            generated Charades-format videos, masks, CSVs (train/val/test)
    WORKDIR/data/{train,val,test}/     TFRecord shards + summary.json (pipelines.preprocess)
    WORKDIR/evolution/                 search state, history.json, best_structure.json (pipelines.evolve)
    WORKDIR/search/                    one-shot model, final_structure.json (pipelines.search)
    WORKDIR/config.json, model.keras, history.csv, ...   the full training run (pipelines.train)
    WORKDIR/metrics.json, predictions.txt               evaluation (pipelines.evaluate)
    WORKDIR/report/index.html                           the report (pipelines.report)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

from model.evolution import STRATEGIES, SearchSpace
from model.pruning import PRUNE_THRESHOLD
from pipelines import configs
from pipelines.configs import MAX_COUNT, Range, fraction, like, load, positive, setting
from pipelines.evaluate import CLIPS, EvaluateConfig
from pipelines.preprocess.config import PreprocessConfig
from pipelines.rundir import CLASSES, RunDir, read_json, write_json
from pipelines.search import OneShotConfig
from pipelines.train_config import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCAL_RUNNERS = ("", "FnApiRunner", "local", "DirectRunner")


@dataclasses.dataclass(frozen=True)
class EndToEndConfig:
    """Budgets of the end-to-end job. Defaults are the embedded demo: minutes on a 2-core CPU.

    They are far below the papers' (AssembleNet A.6: 50k steps at 128x224x224, evolution over
    ~200 children of 10k steps each); they exercise every stage, they do not reproduce its numbers.
    """

    workdir: str = setting("", "run folder (relative paths are taken from the project root); empty: "
                           "runs/<dag id>/<run id>")
    videos: int = setting(64, "synthetic Charades-format videos to generate (train + val + test)",
                          type=Range(int, 4, MAX_COUNT))  # >= 4: some for each of train, val and test
    min_seconds: float = setting(3.0, "shortest synthetic video, seconds", type=positive(float))
    max_seconds: float = setting(5.0, "longest synthetic video, seconds", type=positive(float))
    num_classes: int = setting(6, "synthetic action classes", type=positive())
    seed: int = like(TrainConfig, "seed", 0, "seed of the data, the search and the training")
    test_fraction: float = setting(0.3, "share of the videos in the test split",
                                   type=fraction(low_open=True, high_open=True))
    val_fraction: float = setting(0.25, "share of the training videos held out for the search fitness",
                                  type=fraction(low_open=True, high_open=True))
    # The preprocessing settings: PreprocessConfig's types, choices and ranges.
    fps: float = like(PreprocessConfig, "fps", 4.0, "decoding frame rate of preprocessing (AssembleNet A.6: 6)")
    frame_size: int = like(PreprocessConfig, "size", 40, "shorter side of the stored frames, pixels")
    flow: str = like(PreprocessConfig, "flow", "opencv", "optical flow: opencv (TV-L1) | tensor | none")
    segmenter: str = setting("oracle", "object masks: oracle (the generator's ground truth) | a keras-hub preset | "
                             "none")
    runner: str = setting("FnApiRunner", "Beam runner of preprocessing")
    population: int = setting(2, "evolution: population size, all evaluated in the first round", type=positive())
    children_per_round: int = setting(2, "evolution: children proposed and evaluated (mapped) per later round",
                                      type=positive())
    evolution_strategy: str = setting("guided", "evolution: guided | random-edges | random-search",
                                      choices=STRATEGIES)
    object_stem: bool = like(SearchSpace, "object_stem", True, "evolution: add the object stem (AssembleNet++)")
    proxy_steps: int = setting(20, "evolution: training steps of each child (paper: 10k)", type=positive())
    search_steps: int = setting(40, "one-shot search: training steps of the over-connected model", type=positive())
    train_steps: int = setting(400, "full training steps of the pruned structure (paper: 50k)", type=positive())
    steps_per_epoch: int = like(TrainConfig, "steps_per_epoch", 20,
                                "steps between checkpoints (divides every step count above)")
    # The settings every training of the job shares (`train_fields`): TrainConfig's types and ranges.
    frames: int = like(TrainConfig, "frames", 8, "clip length T of every training (paper: 32..128)")
    size: int = like(TrainConfig, "size", 32, "square crop of every training, pixels (paper: 224)")
    batch_size: int = like(TrainConfig, "batch_size", 8, "batch size of every training (paper: 128)")
    learning_rate: float = like(TrainConfig, "learning_rate", 0.4, "peak learning rate of every training")
    clips: int = like(EvaluateConfig, "clips", 3, "clips per test video, max-pooled (AssembleNet A.7: 5)")
    threshold: float = like(OneShotConfig, "threshold", PRUNE_THRESHOLD,
                            "one-shot pruning threshold on sigmoid(w) (AssembleNet++ §4.1)")

    def __post_init__(self):
        configs.check(self)  # each field's type, choices and range (finite numbers only)
        for name in ("proxy_steps", "search_steps", "train_steps"):
            if getattr(self, name) % self.steps_per_epoch:
                raise ValueError(f"EndToEndConfig.{name}={getattr(self, name)} must be a multiple of "
                                 f"steps_per_epoch={self.steps_per_epoch}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EndToEndConfig:
        """From Airflow params (which also hold nothing else here); unknown keys, and values of the wrong
        type or outside a field's choices or range, fail loudly naming the parameter."""
        return load(cls, params, source="EndToEndConfig", noun="parameter(s)")

    def train_fields(self) -> dict[str, Any]:
        """The TrainConfig fields shared by every training of the job (proxy, search, final)."""
        return {"dataset": "charades", "frames": self.frames, "size": self.size,
                "batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch,
                "learning_rate": self.learning_rate, "seed": self.seed}


def banner(text: str) -> None:
    """A stage banner: easy to find in Airflow's task log and in `make demo`'s output."""
    print(f"\n==> {text}", flush=True)


def resolve(path: str | Path) -> str:
    """Remote paths as given; local ones absolute, relative ones taken from the project root."""
    text = str(path)
    if "://" in text:
        return text
    return str(Path(text) if Path(text).is_absolute() else PROJECT_ROOT / text)


def run_folder(workdir: str, dag_id: str, run_id: str) -> str:
    """`workdir` if given, else runs/<dag_id>/<run_id>: outputs are keyed by the run."""
    if workdir:
        return resolve(workdir)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
    return resolve(Path("runs") / dag_id / safe)


# -- data ------------------------------------------------------------------------------------------

def make_synthetic_data(out: str, *, videos: int, num_classes: int, seed: int, test_fraction: float = 0.3,
                        val_fraction: float = 0.25, min_seconds: float = 4.0,
                        max_seconds: float = 8.0) -> dict[str, str]:
    """Generates the synthetic Charades-format set in `out` and splits its training CSV into train/val.

    Returns {"videos", "train", "val", "test"} (the videos folder and the three annotation CSVs).
    Skipped when `out/splits.json` shows the same arguments (the generator is deterministic).
    """
    from preprocessing import charades, synthetic

    root = Path(out)
    request = {"videos": videos, "num_classes": num_classes, "seed": seed, "test_fraction": test_fraction,
               "val_fraction": val_fraction, "min_seconds": min_seconds, "max_seconds": max_seconds}
    done = root / "splits.json"
    if done.exists():
        previous = read_json(done)
        if previous["request"] == request:
            return previous["paths"]
    info = synthetic.generate(root, format="charades", videos=videos, seed=seed, num_classes=num_classes,
                              test_fraction=test_fraction, min_seconds=min_seconds, max_seconds=max_seconds,
                              progress=True)
    train = charades.read_annotations(info["train_csv"], num_classes=num_classes)
    held_out = validation_ids([v.id for v in train], val_fraction)
    paths = {"videos": info["videos_dir"], "train": str(root / "train.csv"), "val": str(root / "val.csv"),
             "test": info["test_csv"]}
    charades.write_annotations(paths["train"], [v for v in train if v.id not in held_out])
    charades.write_annotations(paths["val"], [v for v in train if v.id in held_out])
    write_json(done, {"request": request, "paths": paths})
    return paths


def validation_ids(ids: list[str], fraction: float) -> set[str]:
    """A deterministic held-out share of `ids` (by md5, not list order); at least one, never all."""
    if len(ids) < 2:
        raise ValueError(f"need >= 2 training videos to hold some out for validation, got {len(ids)}")
    count = min(max(1, round(len(ids) * fraction)), len(ids) - 1)
    return set(sorted(ids, key=lambda i: hashlib.md5(i.encode()).hexdigest())[:count])


def beam_pipeline_args(runner: str, *, project: str = "", region: str = "", temp_location: str = "",
                       setup_file: str = "", extra: list[str] | None = None) -> list[str]:
    """Beam options for `runner`: nothing locally; Dataflow needs a project, region, temp location
    (gs://...) and the package's setup.py so workers install it."""
    args = list(extra or [])
    if runner in LOCAL_RUNNERS:
        return args
    if runner == "DataflowRunner":
        missing = [name for name, value in (("project", project), ("region", region),
                                            ("temp_location", temp_location)) if not value]
        if missing:
            raise ValueError(f"DataflowRunner needs {missing} (e.g. temp_location=gs://BUCKET/tmp)")
        setup_file = setup_file or str(PROJECT_ROOT / "setup.py")
    for name, value in (("project", project), ("region", region), ("temp_location", temp_location),
                        ("setup_file", setup_file)):
        if value:
            args.append(f"--{name}={value}")
    return args


def preprocess(*, dataset: str, videos: str, out: str, annotations: str | None = None,
               split: str | None = None, fps: float = PreprocessConfig.fps, size: int = PreprocessConfig.size,
               flow: str = PreprocessConfig.flow, segmenter: str = PreprocessConfig.segmenter,
               runner: str = "FnApiRunner", pipeline_args: list[str] | None = None,
               max_dead_letter_fraction: float = 0.0, flow_batch: int = PreprocessConfig.flow_batch,
               segment_batch: int = PreprocessConfig.segment_batch,
               decode_threads: int = PreprocessConfig.decode_threads) -> dict[str, Any]:
    """Runs the Beam job (pipelines.preprocess) and checks its summary: every video accounted for,
    at least one written, no more dead letters than allowed (they are listed in out/dead_letter.jsonl)."""
    from pipelines.preprocess import run_preprocess, summary_ok

    summary = run_preprocess(dataset=dataset, videos=videos, out=out, annotations=annotations or None,
                             split=split or None, fps=fps, size=size, flow=flow, segmenter=segmenter,
                             runner=None if runner in LOCAL_RUNNERS else runner,
                             pipeline_args=pipeline_args, flow_batch=flow_batch, segment_batch=segment_batch,
                             decode_threads=decode_threads)
    if not summary_ok(summary):
        raise ValueError(f"{out}/summary.json: videos unaccounted for: {summary['unaccounted'][:10]}")
    if summary["written"] == 0:
        raise ValueError(f"{out}: no video was written; see {out}/dead_letter.jsonl")
    if summary["dead_lettered"] > max_dead_letter_fraction * summary["input"]:
        raise ValueError(f"{out}: {summary['dead_lettered']} of {summary['input']} videos failed (allowed: "
                         f"{max_dead_letter_fraction:.0%}); reasons in {out}/dead_letter.jsonl")
    return summary


# -- evolution (AssembleNet §3.2) --------------------------------------------------------------------

def start_evolution(state_dir: str, *, data: str, eval_data: str | None, population: int, rounds: int,
                    train: dict[str, Any], strategy: str = "guided", object_stem: bool = True,
                    width_scale: int = 16, repeats: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5),
                    tournament: int = 5, seed: int = 0, fast_path: bool = False) -> str:
    """Creates the search state in `state_dir`, or checks that the one there has the same config
    (only `rounds` may grow), so a re-run resumes it. `train` holds the children's proxy TrainConfig;
    `fast_path`: EvolutionConfig.fast_path (a round's children train in one task, `round_tasks`)."""
    from pipelines.evolve import EvolutionConfig, TrainEvaluator, init_search

    space = SearchSpace(object_stem=object_stem, width_scale=width_scale, repeats=tuple(repeats))
    config = EvolutionConfig(population_size=population, rounds=rounds,
                             tournament_size=min(tournament, population), strategy=strategy, seed=seed,
                             space=space, fast_path=fast_path)
    init_search(state_dir, config, TrainEvaluator(data=data, eval_data=eval_data, train=train))
    return state_dir


def next_children(state_dir: str, n: int) -> list[str]:
    """The children of one round: those proposed earlier and not yet evaluated (a retried round),
    else `n` new ones (fewer when the budget is spent). Finished children join the population first."""
    from pipelines.evolve import integrate_results, load_state, propose_children

    integrate_results(state_dir)
    pending = list(load_state(state_dir)["pending"])
    children = pending or propose_children(state_dir, n)
    banner(f"evolution: evaluating {len(children)} children {children}")
    return children


def round_tasks(state_dir: str, children: list[str]) -> list[list[str]]:
    """The evaluation tasks of a round: one per child (the parallel workers of AssembleNet §3.2), or, when
    the search's config has `fast_path`, one for the whole round, so that its children train in one
    process on shared compiled models (pipelines.fast_children)."""
    from pipelines.evolve import EvolutionConfig, load_state

    if not children:
        return []
    if EvolutionConfig.from_json(load_state(state_dir)["config"]).fast_path:
        return [list(children)]
    return [[child] for child in children]


def evaluate_children(state_dir: str, children: list[str]) -> list[float]:
    """One evaluation task: its children in order, in this process (`evaluate_child` each)."""
    return [evaluate_child(state_dir, child) for child in children]


def evaluate_child(state_dir: str, child: str) -> float:
    """Proxy-trains and scores one child (idempotent: a scored child is not trained again)."""
    from pipelines.evolve import evaluate_child as evaluate

    banner(f"evolution: child {child}")
    return evaluate(state_dir, child)["fitness"]


def integrate(state_dir: str) -> list[str]:
    from pipelines.evolve import integrate_results

    return integrate_results(state_dir)


def finish_evolution(state_dir: str) -> str:
    """Integrates what is finished and writes history.json, best_structure.json, fitness.png."""
    from pipelines.evolve import finalize, integrate_results

    integrate_results(state_dir)
    summary = finalize(state_dir)
    banner(f"evolution: best {summary['best_child']} (fitness {summary['best_fitness']:.4f}) "
           f"of {summary['evaluations']} children")
    return str(Path(state_dir) / "best_structure.json")


# -- one-shot search, training, evaluation, report ----------------------------------------------------

def one_shot_search(*, structure: str, data: str, eval_data: str | None, out: str, train: dict[str, Any],
                    threshold: float = PRUNE_THRESHOLD) -> str:
    """AssembleNet++ §3.5: trains the over-connected attention-search model of `structure`'s layout
    and prunes it; returns out/final_structure.json."""
    from pipelines.search import run_search

    banner(f"one-shot attention search on {structure}")
    layout = resolve(structure) if structure.endswith(".json") else structure
    summary = run_search(structure=layout, data=data, out_dir=out, train=train, eval_data=eval_data,
                         threshold=threshold, verbose=2)
    banner(f"one-shot search kept {summary['edges_kept']} of {summary['edges_searched']} connections")
    return str(Path(out) / "final_structure.json")


def train_final(*, structure: str, data: str, eval_data: str | None, workdir: str, train: dict[str, Any],
                attention: str = "peer") -> str:
    """Trains the searched structure with peer attention (AssembleNet++ §3.4) into `workdir`."""
    from pipelines.train import train as train_run

    banner(f"full training of {structure} ({train.get('steps')} steps)")
    config = TrainConfig(**{**train, "structure": structure, "attention": attention})
    result = train_run(config=config, data=data, workdir=workdir, eval_data=eval_data, verbose=2)
    banner(f"training done: loss {result.get('loss', float('nan')):.4f} after {result['steps']} steps")
    return workdir


def evaluate(*, workdir: str, data: str, clips: int | None = CLIPS) -> str:
    """Scores workdir/model.keras on the test TFRecords (`clips` None: the run's recipe's, else CLIPS);
    returns workdir/metrics.json."""
    from pipelines.evaluate import evaluate_run

    count = "the recipe's" if clips is None else clips
    banner(f"evaluation on {data} ({count} clips per video)")
    run = RunDir(workdir)
    result = evaluate_run(run.path, data, clips=clips, class_names=run.read_if_exists(CLASSES))
    headline = {k: result[k] for k in ("mAP", "wAP", "accuracy", "top1") if k in result}
    banner(f"evaluation: {headline}")
    return str(run.metrics)


def report(workdir: str) -> str:
    from pipelines.report import build_report

    index = build_report(workdir)
    banner(f"report: {index}")
    return str(index)
