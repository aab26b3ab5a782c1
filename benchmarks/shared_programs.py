"""How many children of an evolution search could train on a program compiled for an earlier child of
the same search: the evolution suite's searches simulated without training.

Each search runs the real driver (pipelines.evolve.run_evolution) with a stand-in evaluator that draws
a fitness and one σ(w) per edge at random instead of training (seeded by the child's name, so a run is
repeatable). A later child (one after the random initial population) "shares" when its key was seen
before in its search. Keys:

- `signature`: model.edge_masks.signature with runtime widths, the fast path's cache key for the
  searches' models (attention none, project_first): edges, dilations and fused widths free;
- `fixed_width`: the signature without runtime widths (the key with attention or weight_first fusion);
- `signature_with_r`: that plus every node's dilation, the key while dilations were compiled in;
- `nodes`: the node set alone (index, level, C, stride, stems): what split and merge change;
- `fused_shapes`: the node set plus each block's fused stride and width, with every dilation and edge
  free (the signature less the maximal edge set).

    python benchmarks/shared_programs.py              # the suite's 3 methods x 3 seeds, 6 + 12 children

Prints one JSON line per search and a summary line.
"""

import argparse
import json
import os
import sys
import tempfile
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _stand_in(structure, workdir):
    rng = np.random.default_rng(zlib.crc32(structure.name.encode()))
    return float(rng.uniform()), {(j, i): float(rng.uniform()) for j, i in structure.edges()}


def node_key(structure) -> str:
    return json.dumps([(n.index, n.level, n.channels, n.stride, n.inputs if n.is_stem else None)
                       for n in structure.nodes])


def shape_key(structure) -> str:
    from model import edge_masks

    return json.dumps([node_key(structure), sorted(edge_masks.fused_shapes(structure).items())])


def signature(structure) -> str:
    from model import edge_masks

    return edge_masks.signature(structure, runtime_width=True)


def fixed_width(structure) -> str:
    from model import edge_masks

    return edge_masks.signature(structure)


def signature_with_r(structure) -> str:
    return json.dumps([fixed_width(structure), [n.dilation for n in structure.nodes]])


KEYS = {"signature": signature, "fixed_width": fixed_width, "signature_with_r": signature_with_r,
        "nodes": node_key, "fused_shapes": shape_key}


def simulate(method: str, seed: int, config, out) -> list:
    """The structures of one search, in the order they were proposed."""
    from model.structure import Structure
    from pipelines import evolve

    evolve.run_evolution(out, config.evolution_config(method, seed), evaluate=_stand_in, progress=False)
    history = json.loads((out / "history.json").read_text())
    return [Structure.from_json(h["structure"]) for h in history]


def shared(structures, key, population_size: int) -> int:
    seen = {key(s) for s in structures[:population_size]}
    count = 0
    for s in structures[population_size:]:
        k = key(s)
        count += k in seen
        seen.add(k)
    return count


def main(argv=None) -> None:
    from pathlib import Path

    from ablation.evolution_suite import CONFIG, METHODS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    keys = KEYS
    totals = dict.fromkeys(keys, 0)
    later = 0
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                structures = simulate(method, seed, CONFIG, Path(tmp) / f"{method}_{seed}")
                row = {name: shared(structures, key, CONFIG.population_size) for name, key in keys.items()}
                n = len(structures) - CONFIG.population_size
                later += n
                for name in keys:
                    totals[name] += row[name]
                print(json.dumps({"method": method, "seed": seed, "later_children": n, "shared": row}))
    print(json.dumps({"later_children": later, "shared": totals}))


if __name__ == "__main__":
    main()
