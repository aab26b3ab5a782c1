"""The ablation suites of AssembleNet++ on the controlled benchmark: Table 1, Table 4 and Fig. 4(b), and
`modalities`, the benchmark's own check (each modality alone vs all three, with the model itself).

Every row trains the same budget (ctx.budget) once per seed in ctx.seeds. The layout is `tiny` (the
layout of AssembleNet++ supplementary Table 1 at 1/8 of the width). The peers come from the one-shot
attention search (AssembleNet++ §3.5) run on the benchmark first: the over-connected model of the
layout (model.oneshot) trained with attention "search", pruned at σ(w) > 0.2 with its argmax-h peers
(model.pruning.prune_weights). One search per layout (with / without the object stem), seed
`SEARCH_SEED`, shared by the suites in one output folder (a `shared` run).
"""

from __future__ import annotations

import functools

from ablation.harness import (
    with_decoy,
    with_modalities,
    with_object_fraction,
    with_random_peers,
    without_object_stem,
)
from ablation.runner import SuiteContext, suite
from model.oneshot import over_connected
from model.structure import Structure, get_structure
from pipelines.checks import write_json

LAYOUT = "tiny"
SEARCH_SEED = 0  # the one search whose peers every row uses (peer agreement across seeds: oneshot suite)
RANDOM_PEER_SEED = 0  # Table 4's random peers: one fixed draw
OBJECT_SUBSET_SEED = 0  # Fig. 4(b): which blocks keep their object edge at fraction 1/2
OBJECT_FRACTIONS = (0.0, 0.5, 1.0)
ATTENTIONS = ("none", "static", "self", "peer")


def search_key(layout: Structure, seed: int, tag: str = "object") -> str:
    """The shared run of one one-shot search (`tag`: with or without the object stem); the oneshot
    suite's searches of seed SEARCH_SEED are the very runs Table 1 and Table 4 use."""
    return f"oneshot-search/{layout.name}/{tag}/seed{seed}"


def layout_for(ctx: SuiteContext, layout=LAYOUT) -> Structure:
    """The suites' layout on ctx.bench: on benchmark v2 (a decoy stream) it gets the decoy stem too,
    wired like the flow stem, so every search and every row sees the wrong edges it should drop."""
    layout = get_structure(layout)
    return with_decoy(layout) if ctx.bench.config.decoy else layout


def searched_structure(ctx: SuiteContext, object_stem: bool = True, layout=LAYOUT) -> Structure:
    """The pruned one-shot search result of `layout` (with or without its object stem) on ctx.bench,
    with one argmax peer per block; trained once per output folder and reused by every suite."""
    from model.pruning import PRUNE_THRESHOLD, prune_weights

    layout = layout_for(ctx, layout)
    if not object_stem:
        layout = without_object_stem(layout)
    supernet = over_connected(layout)
    tag = "object" if object_stem else "noobject"
    row = ctx.run(search_key(layout, SEARCH_SEED, tag),
                  functools.partial(ctx.train, supernet, attention="search", seed=SEARCH_SEED),
                  shared=True, aux=True, seed=SEARCH_SEED)
    final = prune_weights(supernet, row["edge_weights"], row["attention_weights"], threshold=PRUNE_THRESHOLD,
                          name=f"{layout.name}_searched_{tag}")
    final.save(ctx.out / f"searched_{tag}.json")
    write_json(ctx.out / f"search_{tag}.json",
               {"score": row["score"], "edge_weights": row["edge_weights"],
                "attention_weights": row["attention_weights"],
                "peers": {str(n.index): n.peer for n in final.blocks}}, indent=2)
    return final


def _train_rows(ctx: SuiteContext, variant: str, structure: Structure, **train_kwargs) -> None:
    for seed in ctx.seeds:
        ctx.run(f"{variant}/seed{seed}", functools.partial(ctx.train, structure, seed=seed, **train_kwargs),
                variant=variant, seed=seed)


TABLE1_PAPER = {  # AssembleNet++ Table 1, Charades mAP after 50K iterations
    "none, without object": 47.18, "static, without object": 48.82, "self, without object": 51.91,
    "peer, without object": 52.39,
    "none, with object": 50.43, "static, with object": 51.15, "self, with object": 55.40,
    "peer, with object": 56.38,
}


@suite("table1", title="AssembleNet++ Table 1: attention none / static / self / peer, with and without objects",
       paper=TABLE1_PAPER, paper_source="AssembleNet++ Table 1 (Charades mAP, 50K iterations)",
       compare=[(f"{a}, with object", f"{b}, with object") for a in ("self", "peer") for b in ("none", "static")]
       + [("static, with object", "none, with object"), ("none, with object", "none, without object")])
def table1(ctx: SuiteContext) -> None:
    ctx.expect(2 + 2 * len(ATTENTIONS) * len(ctx.seeds))
    for object_stem in (False, True):
        structure = searched_structure(ctx, object_stem)
        tag = "with object" if object_stem else "without object"
        for attention in ATTENTIONS:
            _train_rows(ctx, f"{attention}, {tag}", structure, attention=attention)


TABLE4_PAPER = {"Base": 50.43, "Base + 1x1 conv.": 50.24, "Random peer-attention": 53.40,
                "Our peer-attention": 56.38}


@suite("table4", title="AssembleNet++ Table 4: searched vs random peer-attention vs a 1x1 conv. of equal parameters",
       paper=TABLE4_PAPER,
       paper_source="AssembleNet++ Table 4, Charades mAP (Toyota mean per-class accuracy: 59.16, 59.44, 60.23, "
                    "63.64)",
       compare=[("Our peer-attention", "Random peer-attention"), ("Random peer-attention", "Base + 1x1 conv."),
                ("Our peer-attention", "Base"), ("Base + 1x1 conv.", "Base")])
def table4(ctx: SuiteContext) -> None:
    ctx.expect(1 + 4 * len(ctx.seeds))
    searched = searched_structure(ctx, object_stem=True)
    _train_rows(ctx, "Base", searched, attention="none")
    _train_rows(ctx, "Base + 1x1 conv.", searched, attention="conv")
    _train_rows(ctx, "Random peer-attention", with_random_peers(searched, RANDOM_PEER_SEED), attention="peer")
    _train_rows(ctx, "Our peer-attention", searched, attention="peer")


OBJECTS_PAPER = {"object fraction 0": 47.18, "object fraction 1": 50.43}


@suite("objects", title="AssembleNet++ Fig. 4(b): accuracy vs the fraction of blocks with a direct object edge",
       paper=OBJECTS_PAPER, order=tuple(f"object fraction {f:g}" for f in OBJECT_FRACTIONS),
       paper_source="AssembleNet++ §4.1 / Fig. 4(b), Charades mAP (the text gives the end points 47.18 and "
                    "50.43; the figure's middle points are not given as numbers)")
def objects(ctx: SuiteContext) -> None:
    ctx.expect(len(OBJECT_FRACTIONS) * len(ctx.seeds))
    for fraction in OBJECT_FRACTIONS:
        structure = with_object_fraction(layout_for(ctx), fraction, seed=OBJECT_SUBSET_SEED)
        structure.save(ctx.out / f"structure_fraction_{fraction:g}.json")
        variant = f"object fraction {fraction:g}"
        for seed in ctx.seeds:
            ctx.run(f"{variant}/seed{seed}",
                    functools.partial(ctx.train, structure, attention="none", seed=seed),
                    variant=variant, seed=seed, x=fraction)


MODALITY_SETS = (("rgb",), ("flow",), ("object",), ("rgb", "flow"), ("rgb", "flow", "object"))


@suite("modalities", title="The benchmark's check: the model with one modality vs all three",
       paper={}, paper_source="none (the benchmark's design: each modality alone solves only part, "
                              "docs/ablations.md)",
       order=tuple(" + ".join(m) for m in MODALITY_SETS))
def modalities(ctx: SuiteContext) -> None:
    ctx.expect(len(MODALITY_SETS) * len(ctx.seeds))
    for keep in MODALITY_SETS:
        structure = with_modalities(layout_for(ctx), keep)
        _train_rows(ctx, " + ".join(keep), structure, attention="none")
