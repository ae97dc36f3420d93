"""The HTML report, opened in a real headless Chromium: offline, every figure drawn, the run's
own numbers, user strings shown as text and never run; ``cellbench report`` on old and wrong
directories. One browser for the module; the runs are tiny."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from cellbench.cli import app
from cellbench.exceptions import CellbenchWarning
from cellbench.experiment import run_ablate, run_compare, run_train, run_tune
from cellbench.report import html as report_html
from cellbench.report.html import build_report, write_report
from cellbench.tune.study import TuneSettings
from synthetic import make_table  # tests/ is on sys.path (pytest rootdir)

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EVIL = ['<script>window.__xss = 1</script>', '"><img src=x onerror="window.__xss = 2">']
TINY = TrainConfig(max_epochs=3, patience=None, batch_size=64)


# ----------------------------------------------------------------------------- fixtures --


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright; skips, saying why, where it cannot start."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                   "(pip install -e '.[dev]')")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    manager = sync_api.sync_playwright().start()
    try:  # Playwright gives the browser a fresh profile (user data dir) of its own
        chromium = manager.chromium.launch(executable_path=executable, headless=True,
                                           args=FLAGS)
    except Exception as exc:  # a browser that cannot start here is not a failure of ours
        manager.stop()
        pytest.skip(f"Chromium at {executable} could not start: {str(exc).splitlines()[0]}")
    yield chromium
    chromium.close()
    manager.stop()


def _images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["healthy", "infected"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(24):
            pixels = rng.integers(0, 90, (12, 12), dtype=np.uint8)
            if c:
                pixels[3:9, 3:9] += 120
            Image.fromarray(pixels).save(folder / f"slide{i % 4}_{i}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A compare, a train, an ablate, an image compare and a tune run, each through its job
    (which writes report.html at its end)."""
    root = tmp_path_factory.mktemp("runs")
    make_table().to_csv(root / "cells.csv", index=False)
    table = RunConfig(data=DataConfig(path=str(root / "cells.csv"), target="label",
                                      groups="donor"), split=SplitConfig(cv=2), train=TINY)
    images = RunConfig(data=DataConfig(path=str(_images(root / "images")),
                                       group_regex=r"^(slide\d)"),
                       split=SplitConfig(cv=2), train=TINY.replace(batch_size=16),
                       models=("majority", "logreg", "shallow-seed004"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)
        run_compare(table.replace(models=("majority", "lda", "mlp(width=16,depth=1)")),
                    root / "compare")
        run_train(table.replace(split=SplitConfig(), train=TINY.replace(model="mlp")),
                  root / "train")
        run_ablate(table.replace(train=TINY.replace(model="mlp", model_kwargs={"width": 16})),
                   ["dropout=0,0.5"], out=root / "ablate")
        run_compare(images, root / "images_run")
        run_tune(table.replace(split=SplitConfig(), train=TINY.replace(model="mlp")),
                 TuneSettings(trials=3, final_seeds=1, pruner="none"), root / "tune")
    return {"compare": root / "compare", "train": root / "train", "ablate": root / "ablate",
            "image": root / "images_run", "tune": root / "tune"}


def _open(browser, path: Path, **kwargs):
    """Open ``path/report.html`` in a new context; return the page, its console errors and
    every request it made."""
    page = browser.new_page(viewport={"width": 1200, "height": 900}, **kwargs)
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = (path / "report.html").resolve().as_uri()
    page.goto(url, wait_until="load")
    page.wait_for_timeout(100)  # late requests and errors
    return page, errors, [r for r in requests if r != url]


def _figures(page) -> list[dict]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('figure svg, img'))
        .map(e => { const r = e.getBoundingClientRect();
                    return {w: r.width, h: r.height, n: e.childElementCount,
                            natural: e.naturalWidth === undefined ? null : e.naturalWidth}; })""")


def _expected(path: Path) -> tuple[str, str, dict[str, str]]:
    """The headline's model and number, and each model's accuracy, from the run's files."""
    if (path / "tune_results.json").is_file():
        r = json.loads((path / "tune_results.json").read_text())
        accs = {m["model"]: f"{m['test']['accuracy']['value'] * 100:.2f}" for m in r["final"]}
        return "tuned", accs["tuned"], accs
    if (path / "metrics.json").is_file():
        m = json.loads((path / "metrics.json").read_text())
        acc = f"{m['test']['accuracy']['value'] * 100:.2f}"
        return m["model"], acc, {m["model"]: acc}
    r = json.loads((path / "results.json").read_text())
    accs = {m["model"]: f"{m['test']['accuracy']['value'] * 100:.2f}" for m in r["models"]}
    if r["job"] == "ablate":
        top = max(r["ablation"]["rows"], key=lambda row: row["mean"])
        return top["config"], f"{top['mean'] * 100:.2f}", accs
    best = max(r["models"], key=lambda m: m["test"]["accuracy"]["value"])
    return best["model"], accs[best["model"]], accs


# -------------------------------------------------------------------------------- tests --


@pytest.mark.parametrize("kind", ["compare", "train", "image", "ablate", "tune"])
def test_report_loads_offline_with_every_figure_and_the_runs_numbers(browser, runs, kind,
                                                                     tmp_path):
    run = runs[kind]
    page, errors, requests = _open(browser, run)
    assert errors == []
    assert requests == []  # only the file itself: no CDN, font or image fetch
    figures = _figures(page)
    assert len(figures) >= (2 if kind == "train" else 4)
    for fig in figures:
        assert fig["w"] > 0 and fig["h"] > 0 and fig["n"] > 2, fig
        assert fig["natural"] is None or fig["natural"] > 0
    best, number, accuracies = _expected(run)
    headline = page.inner_text("#summary")
    assert best in headline and f"{number} %" in headline
    rows = page.locator("#results table.results tbody tr")
    assert rows.count() == len(accuracies)
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        label = cells.nth(0).inner_text().split("\n")[0].strip()
        assert cells.nth(3).inner_text().split("\n")[0] == accuracies[label]
    sections = page.eval_on_selector_all("main > section", "s => s.map(e => e.id)")
    assert sections[:3] == ["summary", "data", "results"] and sections[-1] == "reproduce"
    assert ("ablation" in sections) == (kind == "ablate")
    assert ("tune" in sections) == (kind == "tune")
    if kind == "tune":  # the optimisation history (from the journal) and the importances
        assert page.locator("#tune figure svg").count() == 2
    assert "curves" in sections and "confusion" in sections
    assert "could not be built" not in page.inner_text("body")
    page.screenshot(path=str(tmp_path / f"{kind}.png"), full_page=True)
    assert (tmp_path / f"{kind}.png").stat().st_size > 10_000
    page.close()


def test_report_reads_without_scripts_and_sorts_with_them(browser, runs):
    run = runs["compare"]
    page = browser.new_page(java_script_enabled=False)
    page.goto((run / "report.html").resolve().as_uri())
    assert all(f["w"] > 0 and f["h"] > 0 for f in _figures(page))
    assert "highest test accuracy" in page.inner_text("#summary")
    page.close()
    page, errors, _ = _open(browser, run)
    first = "#results table.results tbody tr:first-child td:first-child"
    assert page.inner_text(first).strip().startswith("lda")  # best first
    page.click("#results table.results thead th:nth-child(4) button")  # accuracy
    page.click("#results table.results thead th:nth-child(4) button")  # ascending
    assert page.inner_text(first).strip().startswith("majority")
    assert errors == []
    page.close()


def test_user_strings_are_shown_as_text_and_never_run(browser, tmp_path):
    frame = make_table(n=120, n_features=4, n_classes=2, n_donors=6)
    frame.columns = ["CD1", "CD2", EVIL[0], EVIL[1], "label", "donor"]
    frame["label"] = frame["label"].map({"type0": EVIL[0], "type1": EVIL[1]})
    frame["donor"] = frame["donor"].str.replace("D0", "<b>D</b>")
    (tmp_path / "evil.csv").write_text(frame.to_csv(index=False))
    cfg = RunConfig(data=DataConfig(path=str(tmp_path / "evil.csv"), target="label",
                                    groups="donor"), split=SplitConfig(cv=2),
                    models=("majority", "lda"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)
        run_compare(cfg, tmp_path / "run")
    page, errors, requests = _open(browser, tmp_path / "run")
    page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
    assert page.evaluate("() => window.__xss") is None
    assert page.evaluate("() => document.querySelectorAll('main script, main img').length") == 0
    assert errors == [] and requests == []  # an <img src=x> would have requested ./x
    text = page.inner_text("body")
    for s in EVIL:
        assert s in text  # the literal string, as text (class table, feature list)
    assert "<b>D</b>1" in text
    svg_text = page.eval_on_selector_all("svg text", "ts => ts.map(t => t.textContent)")
    assert EVIL[0][:20] in " ".join(svg_text)  # figure labels too
    page.close()


def test_cellbench_report_rebuilds_runs_of_the_previous_format(browser, tmp_path):
    for name, source in (("golden", ROOT / "tests" / "experiment" / "golden"),
                         ("bench", ROOT / "bench" / "results" / "seed003_malaria")):
        run = tmp_path / name
        shutil.copytree(source, run)
        result = CliRunner().invoke(app, ["report", str(run)])
        assert result.exit_code == 0, result.output
        assert "report.html" in result.output and (run / "report.html").is_file()
        best, number, _ = _expected(run)
        page, errors, requests = _open(browser, run)
        assert errors == [] and requests == []
        summary = page.inner_text("#summary")
        assert best in summary and f"{number} %" in summary
        assert "could not be built" not in page.inner_text("body")
        page.close()


@pytest.mark.parametrize("make", [lambda p: p, lambda p: p / "missing",
                                  lambda p: (p / "config.yaml").write_text("") and p])
def test_cellbench_report_on_a_directory_that_is_not_a_run_says_so(tmp_path, make):
    (tmp_path / "notes.txt").write_text("not a run")
    target = make(tmp_path)
    result = CliRunner().invoke(app, ["report", str(target)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert message.startswith("error: run directory") and "must" in message
    assert "Traceback" not in result.output and message.count("error:") == 1


def test_a_failing_report_warns_and_keeps_the_results(runs, monkeypatch):
    run = runs["compare"]
    before = (run / "results.json").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(report_html, "render_report", broken)
    with pytest.warns(CellbenchWarning, match="cellbench report"):
        assert write_report(run) is None
    assert (run / "results.json").read_bytes() == before


def test_ten_models_by_five_folds_stay_under_five_megabytes(runs, tmp_path):
    """A synthetic 10-model x 5-fold compare (results.json of a real run, copied ten times;
    300-epoch histories): curves are downsampled, not dropped."""
    source = json.loads((runs["compare"] / "results.json").read_text())
    mlp = next(m for m in source["models"] if m["name"] == "mlp")
    models = []
    rng = np.random.default_rng(0)
    for k in range(10):
        m = json.loads(json.dumps(mlp))
        m.update(model=f"net{k}", slug=f"net{k}", spec=f"net{k}=mlp(width={k + 8})")
        m["per_unit"] = [dict(m["per_unit"][0], split=f"fold{f + 1}") for f in range(5)]
        models.append(m)
        for f in range(5):
            unit = tmp_path / "units" / f"net{k}" / "seed0" / f"fold{f + 1}"
            unit.mkdir(parents=True)
            epochs = np.arange(1, 301)
            curve = {"epoch": epochs}
            for split in ("running", "train", "valid"):
                curve[f"{split}_loss"] = 1 / np.sqrt(epochs) + rng.normal(0, .01, 300)
                curve[f"{split}_accuracy"] = 1 - curve[f"{split}_loss"] / 2
            pd.DataFrame(curve).to_csv(unit / "history.csv", index=False)
    source["models"], source["comparisons"] = models, None
    (tmp_path / "results.json").write_text(json.dumps(source))
    path = build_report(tmp_path)
    size = path.stat().st_size
    assert size <= 5_000_000, size
    text = path.read_text()
    assert text.count("<polyline") >= 10 * 5 * 3 * 2  # every unit's curves, both panels
