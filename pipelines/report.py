"""`assemblenet report RUN_DIR`: one page about a run, as HTML and Markdown with PNG figures.

Writes RUN_DIR/report/index.html (self-contained: figures embedded as base64 data URIs, so it opens
from disk or as a mail attachment) and RUN_DIR/report/report.md with the PNGs beside it. Every
section is built only from the run-directory file it needs (docs/CONTRACTS.md); when that file is
absent the section says so in one line instead of failing, so a report can be made at any stage.

Inputs (all optional):
    summary.json, config.json          model summary (params, FLOPs) and the run's settings
    history.csv                        training curves (Keras CSVLogger)
    metrics.json                       Charades per-class AP, or Toyota confusion matrix + per-class accuracy
    structure.json + connection_weights.json   learned connectivity (AssembleNet++ Fig. 4(a))
    attention_weights.json             peer-attention softmax(h) per block (AssembleNet++ §3.4)
    evolution/history.json             [{"round", "fitness", ...}]: fitness over rounds (AssembleNet Fig. 4),
                                       and the best child's graph when entries carry "structure" and
                                       "edge_weights" (as `pipelines.evolve` writes them); an evolve
                                       folder's own history.json is read too
    search/structure.json + search/connection_weights.json   one-shot search's learned connectivity
    [search/]final_structure.json      the pruned structure of a one-shot search, drawn beside it
    attention_nas/cell.png             the AttentionNAS cell, embedded as is
So `assemblenet report` also works on an `assemblenet search --out` or `assemblenet evolve` folder.
An `assemblenet ablate --out` folder (it holds ablation.json) gets a report of its own: per suite
(<suite>/results.json, ablation/runner.py) a bar chart with error bars beside the paper's
numbers, and the table, and the suite's own figures (<suite>/figures.json {png in <suite>/: caption},
e.g. the evolution suite's Fig. 4 curve).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import shutil
from pathlib import Path

from model.pruning import PRUNE_THRESHOLD
from pipelines import locks, plots
from pipelines.rundir import (
    ATTENTION_WEIGHTS,
    CONFIG,
    CONNECTION_WEIGHTS,
    HISTORY,
    METRICS,
    STRUCTURE,
    SUMMARY,
    RunDir,
    read_json,
)


@dataclasses.dataclass
class Section:
    """One titled part of the report: text lines, an optional key/value table, figures."""

    title: str
    lines: list[str] = dataclasses.field(default_factory=list)
    table: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    figures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (file name, caption)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Writes the report of `run_dir` into `out_dir` (default RUN_DIR/report) and returns index.html."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a run directory")
    out = Path(out_dir) if out_dir else run_dir / "report"
    with locks.writer_lock(out, "report folder"):  # one writer of the report at a time
        return _write_report(run_dir, out)


def _write_report(run_dir: Path, out: Path) -> Path:
    if (run_dir / "ablation.json").exists():  # an `assemblenet ablate --out` folder: its tables only
        sections = _ablation_sections(run_dir, out) or [
            Section("Ablations", ["No suite has finished a run yet (no <suite>/results.json)."])]
        title = f"AssembleNet ablations: {run_dir.resolve().name}"
        (out / "report.md").write_text(_markdown(title, sections))
        index = out / "index.html"
        index.write_text(_html(title, sections, out))
        return index
    sections = [
        _summary_section(run_dir),
        _training_section(run_dir, out),
        _evaluation_section(run_dir, out),
        _connectivity_section(run_dir, out, "", "Learned connectivity",
                              "Edge darkness is the learned connection weight σ(w) (AssembleNet++ §3.3); "
                              f"edges at or below {PRUNE_THRESHOLD} are faded, edges from the object stem are blue "
                              "(Fig. 4(a))."),
        _attention_section(run_dir, out),
        _evolution_section(run_dir, out),
        _connectivity_section(run_dir, out, "search", "One-shot search: learned connectivity",
                              "The one-shot model connects every block to all lower levels and learns the "
                              f"weights (AssembleNet++ §3.5); those above {PRUNE_THRESHOLD} are kept when pruning."),
        _attention_nas_section(run_dir, out),
    ]
    title = f"AssembleNet run report: {run_dir.resolve().name}"
    (out / "report.md").write_text(_markdown(title, sections))
    index = out / "index.html"
    index.write_text(_html(title, sections, out))
    return index


# ----------------------------------------------------------------------------------------------
# Sections.

def _absent(section: Section, *names: str) -> Section:
    section.lines.append(f"Not available: {' and '.join(names)} absent from the run directory.")
    return section


def _format_count(value) -> str:
    value = float(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:g}"


def _summary_section(run_dir: Path) -> Section:
    section = Section("Model summary")
    run = RunDir(run_dir)
    if run.summary.exists():
        summary = run.read(SUMMARY)
        for key, value in summary.items():
            if key == "params":
                section.table.append(("parameters", f"{_format_count(value)} ({int(value):,})"))
            elif key == "flops":
                section.table.append(("FLOPs per clip", f"{_format_count(value)}FLOPs ({int(value):,})"))
            elif isinstance(value, (str, int, float, bool)):
                section.table.append((key, str(value)))
    else:
        _absent(section, SUMMARY)
    if run.metrics.exists():
        metrics = run.read(METRICS)
        for key in ("mAP", "wAP", "accuracy", "mean_per_class_accuracy", "num_videos", "clips"):
            if key in metrics:
                value = metrics[key]
                section.table.append((key, f"{value:.4f}" if isinstance(value, float) else str(value)))
    if run.config.exists():
        config = run.read(CONFIG)
        flat = {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool))}
        if flat:
            section.lines.append("Configuration: " + ", ".join(f"{k}={v}" for k, v in flat.items()) + ".")
    return section


def read_history(path: str | Path) -> dict[str, list[float]]:
    """history.csv (Keras CSVLogger) -> {column: values}, numeric columns only."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    columns: dict[str, list[float]] = {}
    for name in rows[0]:
        try:
            columns[name] = [float(row[name]) for row in rows]
        except (TypeError, ValueError):
            continue
    return columns


def _training_section(run_dir: Path, out: Path) -> Section:
    section = Section("Training curves")
    path = RunDir(run_dir).history
    if not path.exists():
        return _absent(section, HISTORY)
    history = read_history(path)
    if len(history) < 2:
        section.lines.append(f"{path.name} has no numeric epoch rows yet.")
        return section
    plots.plot_history(history, out / "training_curves.png")
    last = {k: v[-1] for k, v in history.items() if k not in ("epoch", "step")}
    epochs = len(next(iter(history.values())))
    values = ", ".join(f"{k}={v:.4g}" for k, v in last.items())
    section.lines.append(f"{epochs} epochs; last epoch: {values}.")
    section.figures.append(("training_curves.png", "Loss, metrics and learning rate per epoch"))
    return section


def _evaluation_section(run_dir: Path, out: Path) -> Section:
    section = Section("Evaluation")
    run = RunDir(run_dir)
    if not run.metrics.exists():
        return _absent(section, METRICS)
    metrics = run.read(METRICS)
    if "per_class_ap" in metrics:
        section.lines.append(f"Charades mAP {metrics['mAP']:.4f}, weighted AP {metrics['wAP']:.4f} over "
                             f"{metrics.get('num_videos', '?')} videos (official Charades_v1_classify "
                             "definition).")
        if "chance_mAP" in metrics:
            section.lines.append(f"Random scores on the same videos: mAP {metrics['chance_mAP']:.4f} "
                                 "(the reference to beat).")
        missing = metrics.get("missing_classes") or []
        if missing:
            listed = ", ".join(missing[:30]) + (" ..." if len(missing) > 30 else "")
            section.lines.append(f"{len(missing)} class(es) with no positive in the evaluated set, left "
                                 f"out of the means: {listed}")
        if metrics["per_class_ap"]:
            plots.plot_per_class_ap(metrics["per_class_ap"], out / "per_class_ap.png", mean=metrics["mAP"])
            section.figures.append(("per_class_ap.png", "Per-class average precision, best to worst"))
    elif "accuracy" in metrics:
        section.lines.append(f"Toyota Smarthome accuracy {metrics['accuracy']:.4f}, mean per-class "
                             f"accuracy {metrics['mean_per_class_accuracy']:.4f} over "
                             f"{metrics.get('num_videos', '?')} videos.")
        if "confusion_matrix" in metrics and "classes" in metrics:
            plots.plot_confusion(metrics["confusion_matrix"], metrics["classes"],
                                 out / "confusion_matrix.png")
            section.figures.append(("confusion_matrix.png", "Confusion matrix (rows: true class)"))
        if metrics.get("per_class_accuracy"):
            plots.plot_per_class_accuracy(metrics["per_class_accuracy"], out / "per_class_accuracy.png",
                                          mean=metrics["mean_per_class_accuracy"])
            section.figures.append(("per_class_accuracy.png", "Accuracy of each class present"))
    else:
        section.lines.append(f"{METRICS} holds neither Charades (per_class_ap) nor Toyota (accuracy) "
                             "results.")
    return section


def _connectivity_section(run_dir: Path, out: Path, subdir: str, title: str, explanation: str) -> Section:
    from model.structure import Structure

    section = Section(title)
    folder = RunDir(run_dir / subdir if subdir else run_dir)  # a run, or a one-shot search's OUT (same names)
    prefix = f"{subdir}/" if subdir else ""
    if not folder.structure.exists():
        return _absent(section, f"{prefix}{STRUCTURE}")
    structure = Structure.from_json(folder.structure)
    weights = None
    if folder.connection_weights.exists():
        weights = folder.read(CONNECTION_WEIGHTS)
        section.lines.append(explanation)
    else:
        _absent(section, f"{prefix}{CONNECTION_WEIGHTS}")
        section.lines.append("The structure's edges are drawn without learned weights.")
    name = f"{subdir or 'learned'}_connectivity.png"
    plots.plot_connectivity(structure, weights, out / name, title=f"{title} ({structure.name})")
    if (folder.path / "final_structure.json").exists():
        pruned = Structure.from_json(folder.path / "final_structure.json")
        pruned_name = f"{subdir or 'learned'}_pruned.png"
        plots.plot_connectivity(pruned, weights, out / pruned_name, title=f"Pruned structure ({pruned.name})")
        section.figures.append((pruned_name, f"{prefix}final_structure.json: the edges kept after pruning"))
    caption = (f"{structure.name}: {len(structure.blocks)} blocks, {len(structure.edges())} edges, "
               f"modalities {', '.join(structure.modalities)}")
    section.figures.append((name, caption))
    return section


def _attention_section(run_dir: Path, out: Path) -> Section:
    section = Section("Peer-attention weights")
    run = RunDir(run_dir)
    if not run.attention_weights.exists():
        return _absent(section, ATTENTION_WEIGHTS)
    attention = run.read(ATTENTION_WEIGHTS)
    if not attention:
        section.lines.append(f"{ATTENTION_WEIGHTS} is empty.")
        return section
    section.lines.append("softmax(h) over each block's candidate peers (AssembleNet++ §3.4–3.5); "
                         "the arg-max is the peer kept by the attention search.")
    plots.plot_attention(attention, out / "attention_weights.png")
    for block in sorted(attention, key=int):
        if attention[block]:
            peer = max(attention[block], key=attention[block].get)
            section.table.append((f"block {block}", f"peer {peer} ({attention[block][peer]:.2f})"))
    section.figures.append(("attention_weights.png", "Peer-attention weights per block"))
    return section


def _evolution_section(run_dir: Path, out: Path) -> Section:
    """RUN_DIR/evolution/history.json, or RUN_DIR/history.json for an `assemblenet evolve` folder."""
    section = Section("Evolution")
    candidates = [run_dir / "evolution" / "history.json", run_dir / "history.json"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        return _absent(section, "evolution/history.json")
    history = read_json(path)
    if not isinstance(history, list) or not history:
        section.lines.append(f"{path.relative_to(run_dir)} holds no evaluated child.")
        return section
    plots.plot_fitness(history, out / "evolution_fitness.png")
    best = max(history, key=lambda e: float(e["fitness"]))
    rounds = len({e["round"] for e in history})
    section.lines.append(f"{len(history)} models over {rounds} rounds; best fitness "
                         f"{float(best['fitness']):.4f} at round {best['round']}.")
    state = path.parent / "state.json"
    evaluation = read_json(state).get("evaluation") if state.exists() else None
    if evaluation:
        section.lines.append(_fitness_data_line(evaluation))
    section.figures.append(("evolution_fitness.png", "Fitness of each child and mean of the top 3 per round "
                                                     "(like AssembleNet Fig. 4)"))
    if "structure" in best:
        from model.structure import Structure

        structure = Structure.from_json(best["structure"])
        plots.plot_connectivity(structure, best.get("edge_weights"), out / "evolution_best.png",
                                title=f"Best evolved model (round {best['round']})")
        section.figures.append(("evolution_best.png", "The best child's connectivity and learned weights"))
    return section


def _fitness_data_line(evaluation: dict) -> str:
    """Where the fitness was measured (pipelines.evolve.evaluation_data; AssembleNet §3.2)."""
    if evaluation.get("mode") == "held-out":
        return (f"Fitness on {evaluation['eval_videos']} held-out training videos (fraction "
                f"{evaluation['fraction']} of {evaluation['source']}, by video-id hash); the children trained on "
                f"the other {evaluation['train_videos']}.")
    if evaluation.get("mode") == "eval-data":
        return (f"Fitness on {evaluation['eval_videos']} videos of {evaluation['eval']}, none of them among the "
                f"{evaluation['train_videos']} training videos.")
    return f"Fitness data: {evaluation.get('mode')}."


def _attention_nas_section(run_dir: Path, out: Path) -> Section:
    section = Section("AttentionNAS cell")
    path = run_dir / "attention_nas" / "cell.png"
    if not path.exists():
        return _absent(section, "attention_nas/cell.png")
    shutil.copyfile(path, out / "attention_nas_cell.png")
    section.figures.append(("attention_nas_cell.png", "The searched attention cell"))
    return section


def _ablation_sections(run_dir: Path, out: Path) -> list[Section]:
    """One section per ablation suite table (RUN_DIR/<suite>/results.json, `assemblenet ablate`)."""
    sections = []
    for path in sorted(run_dir.glob("*/results.json")):
        data = read_json(path)
        if not isinstance(data, dict) or "suite" not in data or not data.get("rows"):
            continue
        name = f"ablation_{data['suite']}.png"
        section = Section(f"Ablation: {data.get('title', data['suite'])}")
        section.lines.append(f"Metric: {data.get('metric', 'score')} on the controlled benchmark (docs/ablations.md), "
                             f"mean ± std over training seeds (ddof 1), every seed's score as a dot. Paper: "
                             f"{data.get('paper_source') or 'no number for these rows'}. The two are different "
                             "datasets and metrics: compare orderings, not values.")
        for row in data["rows"]:
            std = row.get("std")
            spread = "" if std is None or std != std else f" ± {100 * std:.2f}"
            paper = f"; paper {row['paper']:.2f}" if row.get("paper") is not None else ""
            section.table.append((row["variant"], f"{100 * row['mean']:.2f}{spread} (n={row['n']}){paper}"))
        for test in data.get("comparisons") or ():  # the suite's tested differences (runner.comparisons)
            section.table.append((f"{test['a']} − {test['b']}",
                                  f"{100 * test['difference']:+.2f} points, p = {test['p']:.3g} (permutation test)"))
        plots.plot_ablation(data["rows"], out / name, title=section.title, metric=data.get("metric", "score"))
        section.figures.append((name, f"{path.relative_to(run_dir)}: per variant mean ± std over seeds"))
        # A suite's own figures (e.g. the evolution suite's Fig. 4 curve): <suite>/figures.json {png: caption}.
        extra = read_json(path.parent / "figures.json") if (path.parent / "figures.json").exists() else {}
        for figure, caption in (extra.items() if isinstance(extra, dict) else ()):
            if Path(figure).name == figure and (path.parent / figure).is_file():  # a file of <suite>/ only
                shutil.copyfile(path.parent / figure, out / f"ablation_{data['suite']}_{figure}")
                section.figures.append((f"ablation_{data['suite']}_{figure}", str(caption)))
        sections.append(section)
    return sections


# ----------------------------------------------------------------------------------------------
# Rendering.

def _markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}\n"]
    for s in sections:
        parts.append(f"## {s.title}\n")
        parts.extend(f"{line}\n" for line in s.lines)
        if s.table:
            parts.append("| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in s.table))
        parts.extend(f"![{caption}]({name})\n\n*{caption}*\n" for name, caption in s.figures)
    return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; } td { border: 1px solid #ddd; padding: .25em .6em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; }
"""


def _html(title: str, sections: list[Section], out: Path) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f"<section><h2>{html.escape(s.title)}</h2>")
        body.extend(f"<p>{html.escape(line)}</p>" for line in s.lines)
        if s.table:
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in s.table)
            body.append(f"<table>{rows}</table>")
        for name, caption in s.figures:
            data = base64.b64encode((out / name).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        body.append("</section>")
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style>'
    content = "\n".join(body)
    return f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>\n<body>\n{content}\n</body></html>\n'
