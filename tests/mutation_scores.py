"""The mutation score of each mutated module after `mutmut run` (`make mutation`, docs/testing.md).

Reads mutmut's per-file results (mutants/<path>.meta) and prints, per module, the mutants killed
(a test failed, or timed out) over those checked; mutants no test reaches count as survivors, and
mutants not checked yet (an interrupted run) are listed apart and left out of the score.
"""

import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code


def scores(root: Path = Path("mutants")) -> dict[str, dict[str, int]]:
    out = {}
    for meta in sorted(root.rglob("*.py.meta")):
        module = str(meta.relative_to(root))[: -len(".meta")]
        counts: dict[str, int] = {}
        for exit_code in json.loads(meta.read_text())["exit_code_by_key"].values():
            status = status_by_exit_code[exit_code]
            counts[status] = counts.get(status, 0) + 1
        out[module] = counts
    return out


def main() -> int:
    table = scores()
    if not table:
        print("no mutmut results under mutants/: run `mutmut run` first", file=sys.stderr)
        return 1
    print(f"{'module':32} {'killed':>7} {'survived':>9} {'no tests':>9} {'unchecked':>10} {'score':>7}")
    for module, counts in table.items():
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        survived = counts.get("survived", 0)
        untested = counts.get("no tests", 0)
        unchecked = sum(counts.values()) - killed - survived - untested
        total = killed + survived + untested
        score = f"{100 * killed / total:.0f} %" if total else "-"
        print(f"{module:32} {killed:7} {survived:9} {untested:9} {unchecked:10} {score:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
