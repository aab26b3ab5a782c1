"""AttentionNAS's differentiable one-shot search (the driver), its synthetic proxy task and the cell drawing.

`search(config=..., out_dir=...)` inserts supernet cells (model.attention_nas.SupernetCell) into a small
backbone (the I3D-ResNet of model/resnet.py at res3/res4, or an AssembleNet structure after levels 2
and 3), trains it DARTS-style (first-order, alternating; DARTS §2.3, §3.1.1 settings by default):
  1. network weights: one SGD step (momentum 0.9, L2 3e-4, learning rate cosine 0.025 → 0.001) on a
     training batch;
  2. architecture weights (`arch_*`): one Adam step (β (0.5, 0.999), L2 1e-3 on α; the rate keeps
     DARTS's budget 3e-4 × 19 550 steps over this search's architecture steps unless `arch_lr` is set,
     `architecture_learning_rate`) on a batch of the held-out split (DARTS's validation loss), from
     `arch_start` × steps onwards, optionally with the supernet's softmax temperature annealed towards
     `final_temperature`.
Candidates that cannot attend at some insertion position's feature size (one key per query after
`kv_pool`, model.attention_nas.degenerate_pairs) are excluded from the search space, with a message.
With --data the videos are split by id into a training part and a disjoint held-out part for the
architecture steps (`heldout_split`); both id lists go into search.json.
Writes to OUT/: cell.json (the derived cell), arch_weights.json (the learned softmax weights),
cell.png (a drawing of the cell), entropy.png (decisiveness per step), search.json (config, split,
exclusions, supernet accuracy, losses and per-choice entropies per step).
Both steps are Keras's own `train_on_batch` with one optimiser (model.attention_nas.AlternatingAdam) that
updates one group of variables per step, so the search runs under any backend (TensorFlow, JAX).

The relation task (`--task relation`, no --data): the relation variant of ablation/benchmark.py, a
same/different judgement between two glyphs far apart in space and time plus a local cue right on 60 %
of the clips, so only attention across the clip beats the cue; weights train on its train split, the
architecture on its val split, the supernet is scored on its test split.

The synthetic task (no --data, the default): every clip holds a coloured disc doing one of four temporal patterns —
static, moving on a line, blinking, or jumping between two far places — plus a static distractor disc and
pixel noise. A single frame cannot tell static / blinking / jumping apart, so the task needs temporal
(or spatiotemporal) reasoning and the search has a signal.

The package: `synthetic` (the proxy task), `config` (SearchConfig: every setting, its help text and range, the
flags of `assemblenet attention-search`), `backbone` (the backbone, its batches and evaluation),
`driver` (the search and the fixed-cell training) and `drawing` (cell.png); their public names are importable
from `pipelines.attention_search` itself.
"""

from pipelines.attention_search.backbone import (
    build_backbone,
    evaluate_accuracy,
    heldout_split,
    recalibrate_batchnorm,
    relation_benchmark,
    video_ids,
)
from pipelines.attention_search.config import SearchConfig
from pipelines.attention_search.drawing import draw_cell
from pipelines.attention_search.driver import (
    DARTS_ARCH_LR,
    DARTS_ARCH_STEPS,
    UNDECIDED_ENTROPY,
    architecture_learning_rate,
    cell_input_shapes,
    choice_entropies,
    chosen_operations,
    entropies_at_temperature,
    logit_spread,
    plot_entropy,
    search,
    search_space,
    temperature_at,
    train_and_evaluate,
    undecided_choices,
)
from pipelines.attention_search.synthetic import SYNTHETIC_CLASSES, synthetic_batch

__all__ = [
    "architecture_learning_rate",
    "build_backbone",
    "cell_input_shapes",
    "choice_entropies",
    "chosen_operations",
    "DARTS_ARCH_LR",
    "DARTS_ARCH_STEPS",
    "draw_cell",
    "entropies_at_temperature",
    "evaluate_accuracy",
    "heldout_split",
    "logit_spread",
    "plot_entropy",
    "recalibrate_batchnorm",
    "relation_benchmark",
    "search",
    "search_space",
    "SearchConfig",
    "synthetic_batch",
    "UNDECIDED_ENTROPY",
    "undecided_choices",
    "SYNTHETIC_CLASSES",
    "temperature_at",
    "train_and_evaluate",
    "video_ids",
]
