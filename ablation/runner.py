"""The ablation runner: registered suites, a resumable result store, per-suite tables and results.md.

The contract the suites build on (ablation/suites.py, evolution_suite.py, oneshot_suite.py):

    @suite("table1", title="...", paper={"variant": number, ...}, metric="top-1 accuracy (%)")
    def table1(ctx: SuiteContext) -> None:
        for seed in ctx.seeds:
            ctx.run(f"peer/seed{seed}", lambda: ctx.train(structure, attention="peer", seed=seed),
                    variant="peer", seed=seed)

- `ctx.bench` (benchmark.Benchmark), `ctx.budget` (harness.Budget), `ctx.seeds`, `ctx.out` (the
  suite's own folder), `ctx.progress` (a tqdm bar; `ctx.expect(n)` sets its total), `ctx.train`
  (harness.train_and_score with `bench` and `budget` bound; tests swap it for a fast stand-in).
- `ctx.run(key, fn, **labels) -> dict`: if `key` already finished in this output folder, returns the
  stored row without calling `fn` (resume after kill -9); else calls `fn()`, stores
  `{"suite", "key", **labels, **fn()}` and returns it. Rows that carry "variant" and "score" make the
  suite's table; others (`aux=True` rows: a preliminary search, say) are kept but not tabulated.
  `shared=True` stores one run for every suite of the folder (key `shared/<key>`).

The store is OUT/results.jsonl, append-only: one JSON line per finished run, written with a single
`write` on an O_APPEND descriptor and fsync-ed, so a kill leaves at most one torn last line, which
loading skips (and the run is redone). Several processes may run suites into one folder: a key not
yet stored is looked up again on disk before it runs, so a run another process finished is reused,
and one that another process is running is waited for (a per-key flock under OUT/.claims/).
OUT/ablation.json holds the benchmark and budget the folder was started with; resuming with others is
refused (their rows would not be comparable).

Tables: OUT/<suite>/results.csv and results.json (variant, n, mean, std with ddof 1, the paper's
number for that row where the paper gives one, the per-seed scores) and OUT/results.md for all suites.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.checks import UserError, write_text

STORE = "results.jsonl"
SETTINGS = "ablation.json"


@dataclasses.dataclass(frozen=True)
class SuiteInfo:
    """A registered suite: its function and what its table is compared with."""

    name: str
    fn: Callable[[SuiteContext], None]
    title: str
    paper: Mapping[str, float]  # variant -> the paper's number for that row
    paper_source: str  # where the paper's numbers come from (table/figure and dataset)
    metric: str
    order: tuple[str, ...]  # the variants in table order (others follow sorted)
    compare: tuple[tuple[str, str], ...] = ()  # (a, b) pairs tested: mean difference, permutation p-value


SUITES: dict[str, SuiteInfo] = {}


def suite(name: str, *, title: str = "", paper: Mapping[str, float] | None = None, paper_source: str = "",
          metric: str = "top-1 accuracy", order: Sequence[str] = (), compare: Sequence[tuple[str, str]] = ()):
    """Registers `fn(ctx) -> None` as suite `name` (a second registration of a name is an error).
    `compare`: pairs of variants whose difference the table reports with a permutation-test p-value."""
    def register(fn):
        if name in SUITES and SUITES[name].fn is not fn:
            raise ValueError(f"suite {name!r} is already registered (by {SUITES[name].fn.__module__})")
        SUITES[name] = SuiteInfo(name, fn, title or name, dict(paper or {}), paper_source, metric,
                                 tuple(order) or tuple(paper or {}), tuple(tuple(p) for p in compare))
        return fn
    return register


class ResultStore:
    """Append-only JSONL of finished runs, keyed by "key"; the first stored row of a key wins."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self.torn = 0
        self._offset = 0
        self.refresh()

    def refresh(self) -> None:
        """Reads the rows appended since the last read (by this or another process on the folder)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data.rfind(b"\n") + 1
        lines = data[:complete].decode().splitlines()
        tail = data[complete:]
        self._offset += complete
        if tail:
            try:  # a last line without its newline: whole (written by an older writer) or torn
                lines.append(tail.decode())
                json.loads(lines[-1])
                self._offset += len(tail)
            except (json.JSONDecodeError, UnicodeDecodeError):
                lines.pop()
                self.torn = 1
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                self.torn += 1  # a run killed mid-write: it is redone
                continue
            self.rows.setdefault(row["key"], row)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def get(self, key: str) -> dict | None:
        if key not in self.rows:
            self.refresh()  # another process on the same folder may have finished it
        return self.rows.get(key)

    def append(self, row: Mapping[str, Any]) -> None:
        data = (json.dumps(_plain(row), sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and not _ends_with_newline(self.path):
                data = b"\n" + data  # never glue a row to a torn line
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows.setdefault(row["key"], dict(row))

    def suite_rows(self, suite_name: str) -> list[dict]:
        return [r for r in self.rows.values() if r.get("suite") == suite_name]


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _plain(value):
    """JSON-safe copy: numpy scalars and arrays to Python numbers and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class SuiteContext:
    """What a suite function gets: the benchmark, the budget, the seeds, its folder and `run`."""

    def __init__(self, name: str, *, bench, budget, seeds: Sequence[int], out: str | Path,
                 store: ResultStore, progress=None, train: Callable[..., dict] | None = None):
        self.name = name
        self.bench = bench
        self.budget = budget
        self.seeds = [int(s) for s in seeds]
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.progress = progress if progress is not None else _NoProgress()
        self.calls = 0  # how many runs this context executed (not loaded from the store)
        if train is None:
            from ablation.harness import train_and_score

            train = train_and_score
        self.trainer = train  # fn(structure, bench, **kwargs); worker processes get it (evolution suite)

    def train(self, structure, **kwargs) -> dict:
        """harness.train_and_score(structure, bench, budget=ctx.budget, **kwargs); with
        ASSEMBLENET_ABLATION_FASTPATH=1, the same run on the process's fastpath.ChildTrainer (one compiled
        model per shape signature, attention and model options, shared by every suite of the process)."""
        kwargs.setdefault("budget", self.budget)
        from ablation import fastpath, harness

        if self.trainer is harness.train_and_score and fastpath.enabled():
            return fastpath.trainer_for(self.bench, self.budget)(structure, **kwargs)
        return self.trainer(structure, self.bench, **kwargs)

    def folder_rows(self, variant: str) -> list[dict]:
        """Every finished row of this suite's `variant` in the folder, this process's seeds and any other
        process's (several processes may share a folder, each with its own seeds), by seed: what a
        summary over "the seeds" is written from, so the last process to finish does not write one over
        its own seeds only."""
        self.store.refresh()
        rows = [r for r in self.store.suite_rows(self.name) if r.get("variant") == variant]
        return sorted(rows, key=lambda r: int(r.get("seed", 0)))

    def expect(self, runs: int) -> None:
        """Sets the progress bar's total to `runs` (the runs this suite will make or load)."""
        self.progress.total = int(runs)
        self.progress.refresh()

    def run(self, key: str, fn: Callable[[], Mapping[str, Any]], *, shared: bool = False, **labels) -> dict:
        """The stored row of `key` if it finished, else `fn()`'s result stored with `labels` (see the
        module doc). `shared=True`: one run for every suite of the folder (key `shared/<key>`, suite
        "shared"; e.g. the one-shot search whose peers Table 1 and Table 4 both use)."""
        full_key = f"shared/{key}" if shared else f"{self.name}/{key}"
        stored = self.store.get(full_key)
        if stored is not None:
            self.progress.update(1)
            return stored
        with self._claim(full_key):
            stored = self.store.get(full_key)  # another process may have run it while this one waited
            if stored is not None:
                self.progress.update(1)
                return stored
            return self._execute(key, full_key, fn, shared, labels)

    def _claim(self, full_key: str):
        """Blocks while another process on the folder runs the same key (e.g. several processes whose
        suites share the one-shot search): one trains it, the others then read its row. An flock, so a
        killed holder frees it at once."""
        claims = self.store.path.parent / ".claims"
        claims.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(full_key.encode()).hexdigest()[:16]
        return _flocked(claims / f"{name}.lock")

    def _execute(self, key: str, full_key: str, fn: Callable[[], Mapping[str, Any]], shared: bool,
                 labels: Mapping[str, Any]) -> dict:
        self.progress.set_postfix_str(key, refresh=True)
        started = time.time()
        result = dict(fn())
        row = {"suite": "shared" if shared else self.name, "key": full_key, **labels, **result}
        row.setdefault("wall_seconds", time.time() - started)
        row = _plain(row)
        self.store.append(row)
        self.calls += 1
        self.progress.update(1)
        return row


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


class _NoProgress:
    total = None

    def update(self, n=1):
        pass

    def refresh(self):
        pass

    def set_postfix_str(self, s="", refresh=True):
        pass

    def close(self):
        pass


# ----------------------------------------------------------------------------------------------
# Tables.

def aggregate(rows: Iterable[Mapping[str, Any]], info: SuiteInfo | None = None) -> list[dict]:
    """One row per variant: n, mean, std (ddof 1; NaN for n = 1), the paper's number, per-seed scores."""
    by_variant: dict[str, list[Mapping]] = {}
    for row in rows:
        if row.get("aux") or "variant" not in row or row.get("score") is None:
            continue
        by_variant.setdefault(str(row["variant"]), []).append(row)
    order = list(info.order) if info else []
    names = [v for v in order if v in by_variant] + sorted(v for v in by_variant if v not in order)
    table = []
    for variant in names:
        group = sorted(by_variant[variant], key=lambda r: r.get("seed", 0))
        scores = [float(r["score"]) for r in group]
        n = len(scores)
        mean = sum(scores) / n
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else float("nan")
        entry = {"variant": variant, "n": n, "mean": mean, "std": std,
                 "paper": (info.paper.get(variant) if info else None),
                 "seeds": [r.get("seed") for r in group], "scores": scores}
        params = {r.get("params") for r in group if r.get("params") is not None}
        if len(params) == 1:
            entry["params"] = params.pop()
        for extra in ("x",):  # a numeric position (e.g. Fig. 4b's object fraction) when rows carry one
            values = {r.get(extra) for r in group if r.get(extra) is not None}
            if len(values) == 1:
                entry[extra] = values.pop()
        table.append(entry)
    return table


TABLE_COLUMNS = ("variant", "n", "mean", "std", "paper", "params", "scores")


def comparisons(table: Sequence[Mapping[str, Any]], info: SuiteInfo) -> list[dict]:
    """For each of the suite's (a, b) pairs with scores in both rows: mean(a) − mean(b) and the
    two-sided permutation-test p-value over the per-seed scores."""
    from ablation.stats import permutation_test

    rows = {r["variant"]: r for r in table}
    out = []
    for a, b in info.compare:
        if a in rows and b in rows:
            out.append({"a": a, "b": b, "difference": rows[a]["mean"] - rows[b]["mean"],
                        "n": [rows[a]["n"], rows[b]["n"]],
                        "p": permutation_test(rows[a]["scores"], rows[b]["scores"])})
    return out


def write_table(table: Sequence[Mapping[str, Any]], folder: str | Path, info: SuiteInfo) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "results.json", json.dumps(
        {"suite": info.name, "title": info.title, "metric": info.metric, "paper_source": info.paper_source,
         "rows": _plain(list(table)), "comparisons": _plain(comparisons(table, info))}, indent=2) + "\n")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(TABLE_COLUMNS)
    for row in table:
        writer.writerow([_csv_value(row.get(c)) for c in TABLE_COLUMNS])
    write_text(folder / "results.csv", buffer.getvalue())


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _fmt(value, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.2f}"


def markdown_table(table: Sequence[Mapping[str, Any]], info: SuiteInfo) -> str:
    """The suite's table with mean ± std (in %, like the papers) beside the paper's number."""
    lines = [f"### {info.title}", "",
             f"Metric: {info.metric} on the benchmark, in % (mean ± std over seeds, ddof 1). "
             f"Paper: {info.paper_source or 'no number for these rows'}.", "",
             "| variant | n | mean ± std | paper | params | per seed |", "|---|---|---|---|---|---|"]
    for row in table:
        scores = ", ".join(_fmt(s, 100) for s in row["scores"])
        params = f"{row['params']:,}" if row.get("params") is not None else "–"
        lines.append(f"| {row['variant']} | {row['n']} | {_fmt(row['mean'], 100)} ± {_fmt(row['std'], 100)} | "
                     f"{_fmt(row.get('paper'))} | {params} | {scores} |")
    tests = comparisons(table, info)
    if tests:
        lines += ["", "| comparison | difference (points) | seeds | p (two-sided permutation test) |",
                  "|---|---|---|---|"]
        lines += [f"| {t['a']} − {t['b']} | {_fmt(t['difference'], 100)} | {t['n'][0]} vs {t['n'][1]} | {t['p']:.3g} |"
                  for t in tests]
    return "\n".join(lines) + "\n"


def write_tables(out: str | Path, names: Iterable[str] | None = None) -> dict[str, list[dict]]:
    """Tables of every registered suite with rows in OUT/results.jsonl (or of `names`), and OUT/results.md."""
    out = Path(out)
    store = ResultStore(out / STORE)
    suites_with_rows = {r.get("suite") for r in store.rows.values()}
    chosen = [n for n in (names or SUITES) if n in SUITES and n in suites_with_rows]
    tables, parts = {}, ["# Ablation results", ""]
    settings = out / SETTINGS
    if settings.exists():
        parts += ["Settings (benchmark and budget): `" + json.dumps(json.loads(settings.read_text())["budget"])
                  + "`", ""]
    for name in chosen:
        info = SUITES[name]
        table = aggregate(store.suite_rows(name), info)
        write_table(table, out / name, info)
        tables[name] = table
        parts.append(markdown_table(table, info))
    write_text(out / "results.md", "\n".join(parts) + "\n")
    return tables


# ----------------------------------------------------------------------------------------------
# Running suites.

def check_settings(out: Path, settings: Mapping[str, Any]) -> None:
    """Refuses to resume OUT with another benchmark, budget or trainer (one line, naming what differs).
    `trainer` is {"fastpath": true} for a folder run with ASSEMBLENET_ABLATION_FASTPATH=1, else absent."""
    path = out / SETTINGS
    if path.exists():
        stored = json.loads(path.read_text())
        for section in ("benchmark", "budget", "trainer"):
            old, new = stored.get(section, {}), _plain(settings.get(section, {}))
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
                raise UserError(f"{path}: this folder holds runs with another {section} ({changes}); "
                                "use a new --out or the same settings")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(_plain(dict(settings)), indent=2) + "\n")


def load_suites() -> None:
    """Imports the modules that register suites (those present on this branch)."""
    import importlib

    for module in ("ablation.suites", "ablation.evolution_suite",
                   "ablation.oneshot_suite", "ablation.planted_suite"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def run_suites(names: Sequence[str], *, out: str | Path, seeds: Sequence[int] = (0, 1, 2), budget=None,
               benchmark=None, progress: bool = True, train: Callable[..., dict] | None = None,
               report: bool = True) -> dict[str, list[dict]]:
    """Runs suites `names` into `out` (resuming what finished), writes their tables, results.md and,
    with `report`, the HTML report OUT/report/index.html. `benchmark` is a BenchmarkConfig (its frames
    and size are the budget's)."""
    from tqdm import tqdm

    from ablation.benchmark import BenchmarkConfig, load_or_generate
    from ablation.harness import Budget

    load_suites()
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise UserError(f"unknown suite(s) {', '.join(unknown)}; expected some of {', '.join(sorted(SUITES))}")
    if not seeds:
        raise UserError("no seeds: pass at least one (the suites want >= 3)")
    budget = budget or Budget()
    config = dataclasses.replace(benchmark or BenchmarkConfig(), frames=budget.frames, size=budget.size)
    out = Path(out)
    # Seeds may grow between runs of one folder (more rows); the benchmark and budget may not.
    from ablation import fastpath

    settings = {"benchmark": dataclasses.asdict(config), "budget": dataclasses.asdict(budget)}
    if fastpath.enabled() and train is None:
        settings["trainer"] = {"fastpath": True}
    check_settings(out, settings)
    bench = load_or_generate(config, out / "benchmark", progress=progress)
    store = ResultStore(out / STORE)
    for name in names:
        bar = tqdm(desc=name, unit="run", disable=not progress, dynamic_ncols=True)
        ctx = SuiteContext(name, bench=bench, budget=budget, seeds=seeds, out=out / name, store=store,
                           progress=bar, train=train)
        try:
            SUITES[name].fn(ctx)
        finally:
            bar.close()
        write_tables(out, names)
    tables = write_tables(out, names)
    if report:
        from pipelines.report import build_report

        build_report(out)
    return tables
