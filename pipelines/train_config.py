"""The training run's settings (`TrainConfig`): each declared once, with its help text, choices and range.

`assemblenet train` (and the training flags of `search` and `evolve`) make their flags from these fields
(pipelines.configs.add_flags), the recipes of configs/ and RUN_DIR/config.json hold them, and
`TrainConfig.load` reads them back. No Keras here: `--help` and the DAG files import this module freely.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from model.structure import ATTENTION_MODES, TEMPORAL_POOLS
from pipelines import configs
from pipelines.configs import SEED, SIDE, Range, fraction, non_negative, positive, setting

DATASETS = ("charades", "toyota")
PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("auto", "cpu", "mirrored", "tpu")
# The default peak learning rate per video of the batch (scaled linearly with the batch). AssembleNet
# A.6 gives two: 25.6 at batch 128 for Charades' multi-label sigmoid loss, and 3.2 at batch 512 for
# the single-label softmax loss of Moments in Time, which Toyota's 31-way softmax takes (our choice:
# AssembleNet++ gives no Toyota learning rate).
LEARNING_RATE_PER_VIDEO = {"charades": 25.6 / 128, "toyota": 3.2 / 512}


def first_cycle(total_steps: int, restarts: int, multiplier: float) -> float:
    """Length of the first cosine cycle (warm-up included) of `pipelines.train.WarmupCosine`: the
    cycles' lengths L, mL, m²L, ... sum to `total_steps`."""
    cycles, m = restarts + 1, multiplier
    return total_steps / cycles if m == 1 else total_steps * (m - 1) / (m**cycles - 1)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the papers' recipe; clip shape and batch are CPU-sized.

    The paper trains Charades with T=128 frames at 224x224, batch 128, 50k steps (A.6); pass those
    on a TPU/GPU pod. `learning_rate=None` scales the dataset's rate linearly with `batch_size`
    (`LEARNING_RATE_PER_VIDEO`: Charades 25.6 at batch 128; Toyota 3.2 at batch 512, the softmax rate).
    """

    # `assemblenet train --structure` has its own flag (required unless the --config file names one).
    structure: str = setting("tiny", "a named structure (tiny, assemblenet50, ...) or a structure JSON file",
                             flag=False)
    attention: str = setting("none", "connection attention (AssembleNet++ §3.4-3.5)", choices=ATTENTION_MODES)
    default_peers: bool = setting(False, "with --attention peer on a structure without peers, use the "
                                  "project's default peers instead of failing (the papers' come from "
                                  "`assemblenet search`)")
    dataset: str = setting("charades", "label format: multi-label Charades (sigmoid) or Toyota (softmax)",
                           choices=DATASETS)
    num_classes: int | None = setting(None, "default: the num_classes stored in the TFRecords", type=positive())
    frames: int = setting(16, "clip length T (paper: 128 for Charades)", type=positive(int, 4096))
    size: int = setting(64, "square crop size in pixels (paper: 224)", type=SIDE)
    batch_size: int = setting(8, "global batch size, split over the replicas and processes (paper: 128)",
                              type=positive())
    steps: int = setting(1000, "training steps (paper: 50000)", type=positive())
    steps_per_epoch: int = setting(100, "steps between checkpoints; must divide --steps", type=positive())
    momentum: float = setting(0.9, "SGD momentum", type=fraction(high_open=True))
    learning_rate: float | None = setting(
        None, "peak learning rate (default: per video of the batch, AssembleNet A.6: Charades 0.2 x batch "
        "size, i.e. 25.6 at 128; Toyota's softmax loss 3.2/512 x batch size)", type=positive(float, 1e4))
    warmup_steps: int = setting(0, "linear warm-up steps before the cosine decay (paper: 12000)",
                                type=non_negative())
    restarts: int = setting(0, "warm restarts of the cosine (AssembleNet++ §4.3: 1 = two cycles)",
                            type=non_negative(int, 1000))
    restart_multiplier: float = setting(1.0, "each cosine cycle this many times longer than the last",
                                        type=Range(float, 1.0, 1000.0))
    weight_decay: float = setting(1e-4, "L2 of conv/dense kernels, through the momentum (AssembleNet A.6)",
                                  type=fraction())
    label_smoothing: float = setting(0.2, "label smoothing", type=fraction(high_open=True))
    precision: str = setting("fp32", "bf16 = Keras mixed_bfloat16 policy", choices=PRECISIONS)
    strategy: str = setting("auto", "distribution (docs/training.md)", choices=STRATEGIES)
    tpu: str | None = setting(None, "TPU name or grpc://host:port, for --strategy tpu")
    seed: int = setting(0, "random seed", type=SEED)
    temporal_pool: str = setting("max", "the sink's pooling over time: of the features before the FC "
                                 "(structure sink pool_then_fc, AssembleNet A.5) or of the per-frame logits "
                                 "(fc_then_pool, AssembleNet++ A.3); max for Charades (A.5)",
                                 choices=TEMPORAL_POOLS)

    def __post_init__(self):
        configs.check(self)  # each field's type, choices and range (finite numbers only)
        # The rules between fields.
        if self.steps % self.steps_per_epoch:
            raise ValueError(f"TrainConfig.steps={self.steps} must be a multiple of "
                             f"steps_per_epoch={self.steps_per_epoch} (one checkpoint per epoch)")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps}: expected "
                             f"0 <= warmup_steps < steps={self.steps}")
        cycle = first_cycle(self.steps, self.restarts, self.restart_multiplier)
        if self.warmup_steps >= cycle:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps}: the warm-up is part of the first "
                             f"cosine cycle ({cycle:g} steps of {self.steps} with restarts={self.restarts}) "
                             "and must be shorter than it")
        if self.strategy == "tpu" and not self.tpu:
            raise ValueError("TrainConfig.strategy='tpu' needs TrainConfig.tpu "
                             "(a Cloud TPU name or grpc://host:port address)")

    @property
    def epochs(self) -> int:
        return self.steps // self.steps_per_epoch

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return LEARNING_RATE_PER_VIDEO[self.dataset] * self.batch_size

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | str | Path, source: str = "TrainConfig") -> TrainConfig:
        """From a dict (`source` names where it came from) or a JSON file (RUN_DIR/config.json, a recipe's
        `train` section): pipelines.configs.load, which names the source and field of a bad value."""
        return configs.load(cls, data, source=None if isinstance(data, (str, Path)) else source)

