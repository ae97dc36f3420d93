"""The doctor's section of the HTML report, opened in the real headless Chromium of
``test_html``: a real doctor run on a tiny table (an MLP with dropout 0.9), its findings in the
doctor's order with their ids, the fixes table holding ``doctor.json``'s numbers, every figure
drawn; user strings in a finding shown as text, and only the run's own PNGs embedded."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from cellbench._config import DataConfig, RunConfig, SplitConfig, TrainConfig
from cellbench.exceptions import CellbenchWarning
from cellbench.experiment.doctor import run_doctor
from cellbench.models import parse_model
from cellbench.report.html import build_report
from synthetic import make_table  # tests/ is on sys.path (pytest rootdir)

from . import test_html
from .test_html import EVIL, _figures, _open

browser = test_html.browser  # its Chromium fixture: one browser for this module too


@pytest.fixture(scope="module")
def doctor_run(tmp_path_factory) -> Path:
    """``run_doctor`` on 320 cells of 8 donors, 4 folds: a network stuck by dropout 0.9."""
    root = tmp_path_factory.mktemp("doctor")
    make_table(n=320, n_features=6, n_classes=3, n_donors=8).to_csv(root / "cells.csv",
                                                                     index=False)
    choice = parse_model("mlp(width=16,dropout=0.9)")
    train = TrainConfig(max_epochs=8, patience=None, device="cpu").replace(model=choice.name)
    cfg = RunConfig(data=DataConfig(path=str(root / "cells.csv"), target="label",
                                    groups="donor"), split=SplitConfig(cv=4),
                    train=choice.configure(train))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)
        run_doctor(cfg, root / "run", budget=None)
    build_report(root / "run")  # from the directory alone, as `cellbench report` does
    return root / "run"


def _doctor_json(run: Path) -> dict:
    return json.loads((run / "doctor.json").read_text())


def _pct(e: dict) -> tuple[str, str]:
    return f"{e['value'] * 100:.2f}", f"{e['ci'][0] * 100:.2f}–{e['ci'][1] * 100:.2f}"


def test_doctor_report_shows_the_findings_in_order_the_fixes_and_every_figure(
        browser, doctor_run, tmp_path):
    saved = _doctor_json(doctor_run)
    page, errors, requests = _open(browser, doctor_run)
    assert errors == [] and requests == []
    sections = page.eval_on_selector_all("main > section", "s => s.map(e => e.id)")
    assert sections[:3] == ["summary", "doctor", "data"] and sections[-1] == "reproduce"
    assert "could not be built" not in page.inner_text("body")

    findings = page.locator("#doctor ol.findings > li")
    assert [findings.nth(i).get_attribute("data-id") for i in range(findings.count())] == \
        [f["id"] for f in saved["findings"]]
    for i, f in enumerate(saved["findings"]):
        item = findings.nth(i)
        assert item.locator("code.fid").inner_text() == f["id"]
        assert item.locator(".tag").inner_text().lower() == f["severity"]
        assert item.locator("p.msg").inner_text() == f["message"]
    lead = page.inner_text("#doctor .lead")
    top = saved["findings"][0]
    assert lead.startswith(f"The most likely cause, {top['id']}") if top["severity"] != "info" \
        else lead.startswith("No problem found")

    rows = page.locator("#doctor table.fixes tbody tr")
    assert rows.count() == len(saved["fixes"]) > 0
    for i, fix in enumerate(saved["fixes"]):
        cells = rows.nth(i).locator("td")
        assert cells.nth(0).inner_text().strip().startswith(fix["label"])
        assert cells.nth(2).inner_text().split("\n") == list(_pct(fix["accuracy"]))
        diff = cells.nth(3).inner_text().split("\n")
        assert diff[0] == f"{fix['difference'] * 100:+.2f}"
        assert diff[1] == f"[{fix['ci'][0] * 100:+.2f}, {fix['ci'][1] * 100:+.2f}]"
        assert cells.nth(4).inner_text() == f"{fix['p_adjusted']:.3g}"
        assert cells.nth(5).inner_text() == ("helped" if fix["accepted"] else
                                             "no detectable gain")
    final = page.locator("#doctor table.final tbody tr").first.locator("td")
    assert final.nth(0).inner_text().strip().startswith(saved["final"]["label"])
    assert final.nth(2).inner_text().split("\n") == list(_pct(saved["final"]["test"]
                                                               ["accuracy"]))
    assert saved["final"]["model_path"] in page.inner_text("#doctor")

    # probes, and each finding's plots, redrawn inline: LR range, gradient flow, curves...
    assert page.locator("#doctor figure svg").count() >= 8
    for fig in _figures(page):
        assert fig["w"] > 0 and fig["h"] > 0 and fig["n"] > 2, fig
    for name in ("LR range test", "Gradient flow", "Loss at initialisation",
                 "Overfitting one batch"):
        assert name in page.inner_text("#doctor")
    page.screenshot(path=str(tmp_path / "doctor.png"), full_page=True)
    assert (tmp_path / "doctor.png").stat().st_size > 10_000
    page.close()


def test_a_findings_user_strings_are_text_and_only_the_runs_own_pngs_are_embedded(
        browser, doctor_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(doctor_run, run)
    shutil.copyfile(run / "doctor" / "models.png", tmp_path / "secret.png")  # outside the run
    shutil.copyfile(run / "doctor" / "models.png", run / "doctor" / "other.png")
    saved = _doctor_json(run)
    first = saved["findings"][0]
    first.update(message=f"class {EVIL[0]} is rare", advice=EVIL[1],
                 evidence={**first["evidence"], "column": EVIL[1]},
                 plots=["doctor/other.png", "../secret.png"])
    saved["fixes"][0]["label"] = EVIL[0]
    saved["not_run"] = [{"what": EVIL[1], "why": EVIL[0]}]
    saved["probes"]["column_order"] = {"permuted": [0.612, 0.66, 0.6444], "seeds": [0.65, 0.66],
                                       "split": 0}
    (run / "doctor.json").write_text(json.dumps(saved))
    build_report(run)
    page, errors, requests = _open(browser, run)
    page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
    assert page.evaluate("() => window.__xss") is None
    assert errors == [] and requests == []
    assert page.evaluate("() => document.querySelectorAll('main script').length") == 0
    text = page.inner_text("#doctor")
    assert f"class {EVIL[0]} is rare" in text and EVIL[1] in text
    images = page.eval_on_selector_all("#doctor img", "is => is.map(i => [i.src.slice(0, 22), "
                                                      "i.naturalWidth])")
    assert images == [["data:image/png;base64,", images[0][1]]] and images[0][1] > 0
    assert "The plot ../secret.png is not in the run directory." in text
    assert "Column order" in text and "61.2, 66.0, 64.4" in text and "65.0, 66.0" in text
    page.close()


def test_a_doctor_run_without_findings_probes_or_fixes_says_no_problem_found(
        browser, doctor_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(doctor_run, run)
    saved = _doctor_json(run)
    saved.update(findings=[], probes={}, fixes=[], not_run=[])
    saved["final"] = {**saved["final"], "label": "yours"}
    (run / "doctor.json").write_text(json.dumps(saved))
    build_report(run)
    page, errors, requests = _open(browser, run)
    assert errors == [] and requests == []
    lead = page.inner_text("#doctor .lead")
    assert lead.startswith("No problem found") and "final model is your setting" in lead
    assert "No probe ran" in page.inner_text("#doctor")
    assert all(f["w"] > 0 and f["h"] > 0 for f in _figures(page))
    page.close()
