"""The search's settings (`SearchConfig`): each declared once, with its help text, choices and range.

`assemblenet attention-search` makes its flags from these fields (pipelines.configs.add_flags); the
fields without a flag (`flag=False`) are set in code (benchmarks, tests). No Keras here.
"""

from __future__ import annotations

import dataclasses

from pipelines import configs
from pipelines.attention_search.synthetic import SYNTHETIC_CLASSES
from pipelines.configs import MAX_COUNT, SEED, SIDE, Range, fraction, non_negative, positive, setting


def _ints(text):
    return tuple(int(v) for v in text.split(",") if v.strip())


def _strs(text):
    return tuple(v.strip() for v in text.split(",") if v.strip())


# Classes of each in-memory task (without --data).
TASK_CLASSES = {"synthetic": len(SYNTHETIC_CLASSES), "relation": 2}

# The flags of `assemblenet attention-search`, in their --help order (--out comes after FLAGS_FIRST).
FLAGS_FIRST = ("backbone", "structure")
FLAGS_REST = ("steps", "frames", "size", "data", "task", "task_seed", "task_clips", "task_cache", "dataset",
              "num_classes", "batch_size", "seed", "optimizer", "lr",
              "lr_min", "weight_decay", "arch_lr", "arch_weight_decay", "arch_start", "final_temperature",
              "heldout_fraction", "num_operations", "width", "blocks", "positions", "after_levels", "eager")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    backbone: str = setting("resnet", None, choices=("resnet", "assemblenet"))
    structure: str = setting("tiny", "AssembleNet structure name or JSON path (assemblenet)")
    steps: int = setting(200, None, type=positive())
    frames: int = setting(8, None, type=positive(int, 4096))
    size: int = setting(32, None, type=SIDE)
    batch_size: int = setting(8, None, type=positive())
    seed: int = setting(0, None, type=SEED)
    # Network weights (DARTS §3.1.1): SGD, momentum 0.9, L2 3e-4, cosine from lr to lr_min.
    optimizer: str = setting("sgd", "network weights (DARTS: SGD, cosine)", choices=("sgd", "adam"))
    lr: float = setting(0.025, "network weights' learning rate (DARTS 0.025)", type=positive(float, 1e4))
    lr_min: float = setting(0.001, "end of the cosine schedule (DARTS 0.001)", type=non_negative(float, 1e4))
    momentum: float = setting(0.9, "SGD momentum of the network weights", flag=False)
    weight_decay: float = setting(3e-4, "L2 on the network weights (DARTS)", type=fraction())
    # Architecture weights (DARTS §3.1.1): Adam, β (0.5, 0.999), L2 1e-3 on α. The rate: None = DARTS's
    # 3e-4 scaled to this search's number of architecture steps (architecture_learning_rate).
    arch_lr: float | None = setting(
        None, "Adam rate of the architecture weights (default: DARTS's 3e-4 x 19 550 steps spread over this "
        "search's architecture steps, docs/attention_nas.md)", type=positive(float, 1e4))
    arch_beta_1: float = setting(0.5, "Adam β1 of the architecture weights", flag=False)
    arch_weight_decay: float = setting(1e-3, "L2 on the architecture weights", type=fraction())
    arch_start: float = setting(0.0, "fraction of steps before arch updates", type=fraction(high_open=True))
    heldout_fraction: float = setting(
        0.5, "--data: share of the videos (split by id) used only for the architecture steps",
        type=fraction(low_open=True, high_open=True))
    train_lr: float = setting(1e-3, "train_and_evaluate: Adam rate of a fixed cell's training", flag=False)
    final_temperature: float = setting(1.0, "softmax temperature at the last step (1 = none)",
                                       type=fraction(low_open=True))
    num_operations: int = setting(3, None, type=positive(int, 1000))
    candidates: dict | None = setting(
        None, "restricts the supernet's candidates (see model.attention_nas.cell)", flag=False)
    width: int = setting(8, "ResNet base width", type=positive(int, 4096))
    blocks: tuple[int, ...] = setting((1, 1, 1, 1), "ResNet blocks per stage, e.g. 1,1,1,1", type=_ints)
    positions: tuple[str, ...] = setting(("res3_0", "res4_0"), "ResNet cell positions", type=_strs)
    after_levels: tuple[int, ...] = setting((2, 3), "AssembleNet levels that get a cell", type=_ints)
    data: str | None = setting(None, "TFRecord pattern; without it the in-memory --task is used")
    # Without --data: "synthetic" (the 4-class temporal task of synthetic.py, endless) or "relation" (the
    # relation variant of ablation/benchmark.py: same/different glyphs far apart in space and time, a
    # local cue right on 60 %; a fixed benchmark drawn from `task_seed`, the same for every search seed,
    # with `task_clips` training clips and a quarter of that in its val and test splits).
    task: str = setting(
        "synthetic", "without --data: synthetic (4 temporal patterns, endless clips) or relation (same/different "
        "glyphs far apart in space and time, plus a local cue right on 60%%: needs attention; "
        "ablation/benchmark.py, docs/attention_nas.md)", choices=tuple(TASK_CLASSES))
    task_seed: int = setting(0, "relation: the benchmark's seed (not the search's)", type=SEED)
    task_clips: int = setting(4096, "relation: training clips (val and test: a quarter each)",
                              type=Range(int, 4, MAX_COUNT))
    task_cache: str | None = setting(None, "relation: folder caching the benchmark's arrays")
    dataset: str = setting("charades", None, choices=("charades", "toyota"))
    # None: the task's classes (synthetic 4, relation 2); --data: required.
    num_classes: int | None = setting(None, "classes of --data (without it: the task's, synthetic 4, relation 2)",
                                      type=positive())
    eval_batches: int = setting(8, "batches of the synthetic task's evaluation", flag=False)
    recalibration_batches: int = setting(
        20, "BatchNorm re-estimation before evaluating (evaluate_accuracy)", flag=False)
    # TensorFlow only: run_eagerly (tracing the supernet costs ~1 min on CPU).
    eager: bool = setting(False, "no tf.function (faster for a few steps)")

    def __post_init__(self):
        configs.check(self)  # each field's type, choices and range (finite numbers only)
        # The rules between fields: the in-memory task fixes the classes; --data needs them.
        if self.num_classes is None:
            if self.data is not None:
                raise ValueError("--data needs num_classes")
            object.__setattr__(self, "num_classes", TASK_CLASSES[self.task])  # the task's own
        if self.data is None and self.num_classes != TASK_CLASSES[self.task]:
            raise ValueError(
                f"the {self.task} task has {TASK_CLASSES[self.task]} classes, got num_classes={self.num_classes}"
            )
