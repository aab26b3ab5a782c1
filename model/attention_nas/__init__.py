"""AttentionNAS (Wang et al., ECCV 2020): searched spatiotemporal attention cells.

- `operations`: the attention operation (dimension × type × G₁/G₂/G₃ × φ × reduced width), its cost,
  and `degenerate_pairs` (the operations that cannot attend at a feature size);
- `cell_spec`: a cell's JSON description, defaults and validation (`normalize_cell`, `dumps`, `load_cell`);
- `cell`: the cell builder `apply_cell`, `cell_cost`, `insert_cells`;
- `nonlocal_block`: the non-local block (Wang et al. 2018), the baseline cell;
- `supernet`: the one-shot supernet cell, its architecture weights and the derived cell.
The decisions the paper leaves open are the project's own: docs/attention_nas.md.
"""

from model.attention_nas.cell import apply_cell, cell_cost, insert_cells
from model.attention_nas.cell_spec import NONLOCAL, NONLOCAL_AS_CELL, dumps, load_cell, normalize_cell
from model.attention_nas.nonlocal_block import NonLocalBlock
from model.attention_nas.operations import AttentionOperation, degenerate_pairs
from model.attention_nas.supernet import (
    AlternatingAdam,
    SupernetCell,
    architecture_variables,
    architecture_weights,
    derive_cell,
    inherit_weights,
    supernet_cells,
)

__all__ = [
    "AlternatingAdam",
    "NONLOCAL",
    "NONLOCAL_AS_CELL",
    "AttentionOperation",
    "NonLocalBlock",
    "SupernetCell",
    "apply_cell",
    "architecture_variables",
    "architecture_weights",
    "cell_cost",
    "degenerate_pairs",
    "derive_cell",
    "dumps",
    "inherit_weights",
    "insert_cells",
    "load_cell",
    "normalize_cell",
    "supernet_cells",
]
