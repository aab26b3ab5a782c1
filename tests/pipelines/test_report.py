"""The run report: sections from a fake but realistic RUN_DIR, rendered in headless Chromium."""

import json
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from matplotlib.image import imread

from model.structure import tiny
from pipelines import cli, plots
from pipelines.report import build_report

CHARADES_SECTIONS = ["Model summary", "Training curves", "Evaluation", "Learned connectivity",
                     "Peer-attention weights", "Evolution", "One-shot search: learned connectivity",
                     "AttentionNAS cell"]


def _connection_weights(structure, rng):
    # Every third edge below the 0.2 pruning threshold.
    return {str(n.index): {str(j): (0.1 if k % 3 == 0 else float(0.3 + 0.7 * rng.random()))
                           for k, j in enumerate(n.inputs)} for n in structure.blocks}


def _attention_weights(structure, rng):
    out = {}
    for n in structure.blocks:
        peers = structure.peers(n.index)
        h = rng.normal(size=len(peers))
        out[str(n.index)] = dict(zip(map(str, peers), (np.exp(h) / np.exp(h).sum()).tolist(), strict=True))
    return out


@pytest.fixture
def run_dir(tmp_path):
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    structure = tiny()
    structure.save(run / "structure.json")
    (run / "connection_weights.json").write_text(json.dumps(_connection_weights(structure, rng)))
    (run / "attention_weights.json").write_text(json.dumps(_attention_weights(structure, rng)))
    (run / "history.csv").write_text("epoch,auc,loss,lr,val_loss\n0,0.55,0.71,0.05,0.73\n"
                                     "1,0.61,0.52,0.1,0.58\n2,0.66,0.44,0.07,0.51\n3,0.70,0.40,0.02,0.49\n")
    per_class = {f"c{c:03d}": float(rng.random()) for c in range(12)}
    (run / "metrics.json").write_text(json.dumps({
        "mAP": float(np.mean(list(per_class.values()))), "wAP": 0.41, "per_class_ap": per_class,
        "num_videos": 30, "missing_classes": ["c012"], "chance_mAP": 0.3125}))
    summary = {"params": 123456, "flops": 2_500_000_000, "structure": "tiny", "attention": "peer"}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.json").write_text(json.dumps({"dataset": "charades", "frames": 8, "size": 64}))
    return run


def test_report_writes_every_section_and_figure(run_dir):
    index = build_report(run_dir)
    assert index == run_dir / "report" / "index.html"
    markdown = (run_dir / "report" / "report.md").read_text()
    for title in CHARADES_SECTIONS:
        assert f"## {title}\n" in markdown
    figures = ("training_curves.png", "per_class_ap.png", "learned_connectivity.png", "attention_weights.png")
    for png in figures:
        assert f"]({png})" in markdown
        assert imread(run_dir / "report" / png).shape[0] > 100
    # Absent optional inputs are named, not silently dropped.
    assert "Not available: evolution/history.json absent" in markdown
    assert "Not available: search/structure.json absent" in markdown
    assert "Not available: attention_nas/cell.png absent" in markdown
    assert "| parameters | 123.46 k (123,456) |" in markdown
    assert "| FLOPs per clip | 2.50 GFLOPs (2,500,000,000) |" in markdown
    assert "c012" in markdown  # the class without a positive is listed
    assert "Random scores on the same videos: mAP 0.3125" in markdown
    page = index.read_text()
    assert page.count('src="data:image/png;base64,') == 4
    assert "src=\"http" not in page and "src=\"/" not in page  # self-contained


def test_report_with_optional_search_sections(run_dir):
    rng = np.random.default_rng(1)
    (run_dir / "evolution").mkdir()
    history = [{"round": r, "fitness": 0.3 + 0.01 * r + 0.05 * float(rng.random()), "child": f"m{r}",
                "structure": tiny().to_json(), "edge_weights": _connection_weights(tiny(), rng)}
               for r in range(12)]
    (run_dir / "evolution" / "history.json").write_text(json.dumps(history))
    tiny().save(run_dir / "search" / "structure.json")
    (run_dir / "search" / "connection_weights.json").write_text(json.dumps(_connection_weights(tiny(), rng)))
    (run_dir / "attention_nas").mkdir()
    # Any PNG stands in for the AttentionNAS cell drawing, which the report embeds as is.
    plots.plot_fitness(history, run_dir / "attention_nas" / "cell.png")
    tiny().save(run_dir / "search" / "final_structure.json")
    markdown = (build_report(run_dir).parent / "report.md").read_text()
    assert "Not available" not in markdown
    for png in ("evolution_fitness.png", "evolution_best.png", "search_connectivity.png", "search_pruned.png",
                "attention_nas_cell.png"):
        assert f"]({png})" in markdown
    best = max(history, key=lambda e: e["fitness"])
    assert f"best fitness {best['fitness']:.4f} at round {best['round']}" in markdown


def test_toyota_metrics_give_confusion_matrix_and_per_class_accuracy(tmp_path, capsys):
    run = tmp_path / "toyota_run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({
        "accuracy": 0.75, "mean_per_class_accuracy": 5 / 6, "num_videos": 4, "classes": ["Sitdown", "Walk"],
        "per_class_accuracy": {"Sitdown": 1.0, "Walk": 2 / 3}, "confusion_matrix": [[1, 0], [1, 2]]}))
    assert cli.main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report" / "index.html")
    markdown = (run / "report" / "report.md").read_text()
    assert "](confusion_matrix.png)" in markdown and "](per_class_accuracy.png)" in markdown
    assert "accuracy 0.7500, mean per-class accuracy 0.8333 over 4 videos" in markdown
    for missing in ("summary.json", "history.csv", "structure.json", "attention_weights.json"):
        assert f"Not available: {missing} absent" in markdown


def test_empty_run_dir_reports_what_is_absent(tmp_path):
    index = build_report(tmp_path)
    page = index.read_text()
    assert page.count("Not available:") == len(CHARADES_SECTIONS)
    assert "<img" not in page


def test_top_3_mean_per_round_hand_case():
    history = [{"round": 0, "fitness": 0.1}, {"round": 0, "fitness": 0.5}, {"round": 1, "fitness": 0.3},
               {"round": 2, "fitness": 0.2}, {"round": 3, "fitness": 0.9}]
    rounds, means = plots.top_k_mean_per_round(history, k=3)
    np.testing.assert_array_equal(rounds, [0, 1, 2, 3])
    np.testing.assert_allclose(means, [0.3, 0.3, (0.5 + 0.3 + 0.2) / 3, (0.9 + 0.5 + 0.3) / 3])


def _blue_pixels(path):
    rgb = imread(path)[..., :3]
    return int(((rgb[..., 2] > 0.75) & (rgb[..., 0] < 0.5) & (rgb[..., 2] - rgb[..., 1] > 0.25)).sum())


def test_object_edges_are_blue_and_weak_edges_faded(tmp_path):
    structure = tiny()
    strong = {str(n.index): {str(j): 0.95 for j in n.inputs} for n in structure.blocks}
    weak = {str(n.index): {str(j): (0.05 if j == 2 else 0.95) for j in n.inputs} for n in structure.blocks}
    blue_strong = _blue_pixels(plots.plot_connectivity(structure, strong, tmp_path / "strong.png"))
    blue_weak = _blue_pixels(plots.plot_connectivity(structure, weak, tmp_path / "weak.png"))
    # Five edges leave the object stem (node 2): drawn dark blue when strong, faded when below 0.2.
    assert blue_strong > 3 * blue_weak, (blue_strong, blue_weak)
    # Weights of edges the structure lacks (pruned ones) are counted, not drawn; missing ones are NaN.
    edges, extra = plots.edge_weights(structure, {"8": {"2": 0.7, "3": 0.4}, "99": {"0": 0.5}})
    assert extra == 2 and edges[(2, 8)] == 0.7
    assert set(edges) == set(structure.edges()) and np.isnan(edges[(4, 8)])


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver_path):
        missing = [name for name, path in (("chromium", browser), ("chromedriver", driver_path)) if not path]
        pytest.fail(f"{' and '.join(missing)} not on PATH: run `make system-deps` (as root on Debian/Ubuntu "
                    "it apt-get installs chromium and chromium-driver), or install Chromium and its "
                    "driver yourself")
    index = build_report(run_dir)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(driver_path, log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(index.as_uri())
        images = driver.execute_script("return Array.from(document.images).map("
                                       "i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);")
        titles = driver.execute_script("return Array.from(document.querySelectorAll('h2'))"
                                       ".map(h => h.textContent);")
        heading = driver.execute_script("return document.querySelector('h1').textContent;")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert len(images) == 4, images
    for complete, width, height, alt in images:
        assert complete and width > 0 and height > 0, f"image {alt!r} did not load: {width}x{height}"
    assert titles == CHARADES_SECTIONS
    assert heading == "AssembleNet run report: run"
