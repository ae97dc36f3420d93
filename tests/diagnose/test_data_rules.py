"""Data rules: each fires on a planted fault (right id, severity, evidence) and stays silent on
the same data without it; healthy tables and images get nothing above info."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellbench._config import DataConfig, SplitConfig
from cellbench.data import Dataset, from_arrays, load_table, make_splits
from cellbench.data.splits import Split
from cellbench.diagnose import data_rules as dr
from cellbench.diagnose.findings import FIXES, SEVERITIES, VOCABULARY, Finding, rank
from cellbench.exceptions import InvalidParameterError

pytestmark = pytest.mark.filterwarnings("ignore::cellbench.exceptions.CellbenchWarning")

DATA_IDS = {"unscaled_input", "class_imbalance", "tiny_class", "group_class_confound",
            "missing_groups", "duplicate_rows_across_splits", "leaking_feature",
            "too_few_samples", "label_conflict", "sample_shift", "unlabelled_class"}
ALL_IDS = DATA_IDS | {"lr_too_high", "lr_too_low", "too_few_epochs", "overfitting",
                      "underfitting", "stuck_at_chance", "dropout_gap", "nan_loss",
                      "below_baseline", "feature_order_arbitrary",
                      "difference_not_significant", "metric_misleading"}


# ---------------------------------------------------------------------------------------------
# builders


def cells(n: int = 1200, n_classes: int = 3, d: int = 8, n_donors: int = 12, seed: int = 0,
          separation: float = 1.5, weights: list[float] | None = None) -> tuple:
    """Overlapping Gaussian classes (class k shifts marker k); every donor has every class."""
    rng = np.random.default_rng(seed)
    p = None if weights is None else np.asarray(weights) / np.sum(weights)
    y = rng.choice(n_classes, n, p=p)
    X = rng.normal(size=(n, d))
    X[:, :n_classes] += separation * np.eye(n_classes)[y]
    donors = np.array([f"D{i:02d}" for i in rng.integers(0, n_donors, n)])
    return X.astype(np.float32), y, donors


def table(n: int = 1200, grouped: bool = True, **kw) -> Dataset:
    X, y, donors = cells(n, **kw)
    return from_arrays(X, y, groups=donors if grouped else None)


def images(n: int = 240, dtype=np.uint8, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(100 + 30 * y[:, None, None, None], 25, size=(n, 1, 12, 12))
    X = np.clip(X, 0, 255).astype(dtype)
    slides = np.array([f"S{i % 10}" for i in range(n)])
    return Dataset(X=X, y=y, classes=["healthy", "infected"], groups=slides, kind="image",
                   group_name="slide")


def splits(ds: Dataset, **kw) -> list[Split]:
    return make_splits(ds, SplitConfig(**kw))


def above_info(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.id, f.severity, f.message) for f in findings if f.severity != "info"]


def only(findings: list[Finding], id_: str) -> Finding:
    hits = [f for f in findings if f.id == id_]
    assert len(hits) == 1, findings
    return hits[0]


# ---------------------------------------------------------------------------------------------
# findings.py


def test_vocabulary_covers_every_id_with_a_rule_and_a_fix():
    assert set(VOCABULARY) == ALL_IDS
    for entry in VOCABULARY.values():
        assert entry.category in ("data", "training", "model", "evaluation")
        assert entry.detection and entry.meaning
        if not entry.fix.startswith("none:"):
            assert set(entry.fix.split(", ")) <= set(FIXES), entry
    assert {k for k, e in VOCABULARY.items() if e.category == "data"} == DATA_IDS
    assert set(dr.DATA_RULES) == DATA_IDS


def test_finding_round_trips_through_json_and_converts_numpy():
    f = Finding("tiny_class", "warning", "class 'B' has 8 test rows",
                {"n": np.int64(8), "hw": np.float32(0.25), "per": (1, 2), "nan": float("nan")},
                advice="collect more", strength=np.float64(1.5), plots=["plots/x.png"])
    d = json.loads(json.dumps(f.to_dict()))
    assert d["category"] == "data" and d["evidence"] == {"n": 8, "hw": 0.25, "per": [1, 2],
                                                          "nan": None}
    assert Finding.from_dict(d) == f
    assert type(f.evidence["n"]) is int and f.plots == ("plots/x.png",)


@pytest.mark.parametrize("kwargs, match", [
    ({"id": "nope"}, "VOCABULARY"),
    ({"severity": "fatal"}, "severity must be one of error, warning, info"),
    ({"fix": "pray"}, "fix must be None or a key of FIXES"),
    ({"evidence": {"x": object()}}, r"evidence\['x'\] must be JSON-able"),
])
def test_finding_rejects_bad_values(kwargs, match):
    base = {"id": "nan_loss", "severity": "error", "message": "m", "evidence": {}}
    with pytest.raises(InvalidParameterError, match=match):
        Finding(**{**base, **kwargs})


def test_rank_orders_by_severity_then_strength_stably():
    a = Finding("tiny_class", "info", "a", {}, strength=5)
    b = Finding("nan_loss", "error", "b", {}, strength=0)
    c = Finding("overfitting", "warning", "c", {}, strength=1)
    d = Finding("lr_too_low", "warning", "d", {}, strength=2)
    e = Finding("lr_too_high", "warning", "e", {}, strength=2)
    assert [f.message for f in rank([a, b, c, d, e])] == ["b", "d", "e", "c", "a"]
    assert SEVERITIES == ("error", "warning", "info")


# ---------------------------------------------------------------------------------------------
# healthy controls and odd data


def test_healthy_table_gets_nothing_above_info():
    ds = table()
    for kw in ({}, {"cv": 4}):
        assert above_info(dr.check_data(ds, splits(ds, **kw), DataConfig())) == []


def test_healthy_images_get_nothing_above_info():
    ds = images()
    assert above_info(dr.check_data(ds, splits(ds), DataConfig())) == []


def test_odd_data_never_raises():
    X, y, _ = cells(60, n_classes=2)
    ds = from_arrays(X, y)
    one_class = Split(np.arange(40), np.arange(0), np.flatnonzero(y == 1)[:5], "odd")
    for s in ([], [one_class], [Split(np.arange(60), np.arange(0), np.arange(0))]):
        dr.check_data(ds, s, DataConfig())
    empty = Dataset(X=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64), classes=["a", "b"],
                    feature_names=["a", "b", "c"])
    assert dr.check_data(empty, [], None) == []
    assert dr.check_data(images(20), [], DataConfig(image_norm="unit")) == []


def test_check_data_is_deterministic():
    ds = table(n_donors=3)
    s = splits(ds)
    assert dr.check_data(ds, s) == dr.check_data(ds, s)


# ---------------------------------------------------------------------------------------------
# unscaled_input


def test_unscaled_images_fire_only_without_normalization():
    ds = images()
    f = only(dr.check_unscaled_input(ds, splits(ds), DataConfig(image_norm="none")),
             "unscaled_input")
    assert f.severity == "warning" and f.fix == "normalize_input"
    assert f.evidence["reason"] == "raw_pixels" and f.evidence["rms"] > dr.RMS_LIMIT
    for norm in ("standardize", "unit"):
        assert dr.check_unscaled_input(ds, splits(ds), DataConfig(image_norm=norm)) == []
    as_unit = Dataset(**{**ds.__dict__, "X": ds.X.astype(np.float32) / 255})
    assert dr.check_unscaled_input(as_unit, [], DataConfig(image_norm="none")) == []


def test_raw_cytometry_intensities_fire_without_arcsinh():
    X, y, donors = cells()
    raw = from_arrays(np.sinh(1.5 * X + 1) * 5, y, groups=donors)  # arcsinh(x/5) undoes it
    f = only(dr.check_unscaled_input(raw, [], DataConfig(transform=("standardize",))),
             "unscaled_input")
    assert f.severity == "warning" and f.evidence["reason"] == "raw_intensities"
    assert dr.check_unscaled_input(raw, [], DataConfig(transform=("arcsinh", "standardize"))) \
        == []
    assert dr.check_unscaled_input(raw, [], DataConfig(transform=("quantile",))) == []


def test_feature_scales_spanning_orders_of_magnitude_fire_without_standardize():
    X, y, donors = cells()
    wide = X.copy()
    wide[:, 0] *= 1000
    ds = from_arrays(wide, y, groups=donors)
    f = only(dr.check_unscaled_input(ds, [], DataConfig(transform=())), "unscaled_input")
    assert f.evidence["reason"] == "feature_scales" and f.evidence["scale_span"] > 100
    assert dr.check_unscaled_input(ds, [], DataConfig(transform=("standardize",))) == []
    assert dr.check_unscaled_input(from_arrays(X, y), [], DataConfig(transform=())) == []


# ---------------------------------------------------------------------------------------------
# class_imbalance, tiny_class, too_few_samples


def test_class_imbalance_warns_when_the_majority_floor_is_high_and_classes_overlap():
    ds = table(n_classes=2, weights=[9, 1], separation=1.0)
    f = only(dr.check_class_imbalance(ds, splits(ds)), "class_imbalance")
    assert f.severity == "warning" and f.fix == "class_weights"
    assert f.evidence["floor"] == pytest.approx(np.bincount(ds.y).max() / ds.n_samples)
    assert f.evidence["floor"] >= f.evidence["warning_share"] == pytest.approx(5 / 6)
    assert dr.check_class_imbalance(table(n_classes=2, separation=1.0)) == []


def test_class_imbalance_is_info_when_a_feature_separates_the_minority():
    ds = table(n_classes=2, weights=[9, 1], separation=12.0)
    assert only(dr.check_class_imbalance(ds, splits(ds)), "class_imbalance").severity == "info"
    moderate = table(n_classes=3, weights=[4, 4, 1])  # 4:1 but the floor is below 3/4
    assert only(dr.check_class_imbalance(moderate), "class_imbalance").severity == "info"


def test_tiny_class_warns_with_the_recall_ci_width():
    X, y, donors = cells(1200)
    X = np.vstack([X, np.random.default_rng(1).normal(5, 1, (8, X.shape[1]))])
    ds = from_arrays(X, np.r_[y, [3] * 8], groups=np.r_[donors, [f"D0{i % 4}" for i in range(8)]])
    f = only(dr.check_tiny_class(ds, splits(ds, cv=3)), "tiny_class")
    assert f.severity == "warning" and "'3'" in f.message
    info = f.evidence["classes"]["3"]
    assert info["heldout_rows"] == 8 and info["recall_ci_halfwidth"] == pytest.approx(
        float(dr.wilson_halfwidth(8)))
    assert dr.check_tiny_class(table(), splits(table(), cv=3)) == []


def test_tiny_class_separates_a_small_class_from_a_small_test_part():
    uniform = table(n=300, n_classes=5, d=6, n_donors=4, grouped=False)  # ~9 test rows each
    found = dr.check_tiny_class(uniform, splits(uniform))
    assert [f.severity for f in found] == ["info"]
    X, y, _ = cells(1500, n_classes=3)
    y[np.flatnonzero(y == 2)[40:]] = 1  # class 2 keeps 40 rows: about 6 test rows
    ds = from_arrays(X, y)
    f = only(dr.check_tiny_class(ds, splits(ds)), "tiny_class")
    assert f.severity == "warning" and f.evidence["classes"]["2"]["train_rows"] >= 10


def test_tiny_class_counts_training_rows_of_each_split():
    ds = table()
    s = splits(ds)[0]
    starved = Split(s.train[ds.y[s.train] != 2], s.val, s.test)
    f = only(dr.check_tiny_class(ds, [starved]), "tiny_class")
    assert f.severity == "warning" and f.evidence["classes"]["2"]["train_rows"] == 0


def test_a_class_without_held_out_rows_has_no_recall_ci():
    ds = table()
    s = splits(ds)[0]
    absent = Split(s.train, s.val, s.test[ds.y[s.test] != 2])
    f = only(dr.check_tiny_class(ds, [absent]), "tiny_class")
    assert "class '2' has no test rows: its recall cannot be measured at all" in f.message
    assert "±" not in f.message
    most = Split(s.train, s.val, s.test[ds.y[s.test] == 0])  # 2 of 3 classes absent
    f = only(dr.check_too_few_samples(ds, [most]), "too_few_samples")
    assert "hold no rows of most classes" in f.message and "about 0" not in f.message


def test_too_few_samples_errors_when_any_labelling_is_separable():
    X, y, _ = cells(20, n_classes=2, d=12)
    f = only(dr.check_too_few_samples(from_arrays(X, y)), "too_few_samples")
    assert f.severity == "error" and f.evidence["train_rows"] <= f.evidence["separable_limit"]
    X, y, _ = cells(1200, d=12)
    assert dr.check_too_few_samples(from_arrays(X, y)) == []
    assert dr.check_too_few_samples(images(40)) == []


def test_too_few_samples_warns_when_the_test_part_cannot_measure_any_class():
    small = images(60)  # about 5 test images per class: recall CI ±35 points
    f = only(dr.check_too_few_samples(small, splits(small)), "too_few_samples")
    assert f.severity == "warning" and 2 * f.evidence["recall_ci_halfwidth"] >= 0.5
    assert "--cv" in f.advice
    assert dr.check_too_few_samples(small, splits(small, cv=3)) == []  # every row tested once


# ---------------------------------------------------------------------------------------------
# group_class_confound, missing_groups


def patient_labels(n_patients_per_class: int, n: int = 1200) -> Dataset:
    X, y, _ = cells(n, n_classes=2)
    patients = np.array([f"P{c}_{i % n_patients_per_class}" for i, c in enumerate(y)])
    return from_arrays(X, y, groups=patients)


def test_group_class_confound_errors_when_a_class_comes_from_two_samples():
    f = only(dr.check_group_class_confound(patient_labels(2)), "group_class_confound")
    assert f.severity == "error" and f.evidence["groups_per_class"] == {"0": 2, "1": 2}
    assert "group identity" in f.message  # named after the group column ('group' here)
    assert dr.check_group_class_confound(table()) == []  # every donor has every class


def test_group_class_confound_warns_with_few_patients_and_informs_with_more():
    f = only(dr.check_group_class_confound(patient_labels(4)), "group_class_confound")
    assert f.severity == "warning"
    assert f.evidence["group_accuracy_ci_halfwidth"] == pytest.approx(
        float(dr.wilson_halfwidth(8)))
    assert only(dr.check_group_class_confound(patient_labels(12)),
                "group_class_confound").severity == "info"
    assert dr.check_group_class_confound(patient_labels(60, n=3000)) == []


def test_group_class_confound_warns_when_a_class_lives_in_one_group():
    X, y, donors = cells(1200)
    y[(donors == "D03") & (y == 0)] = 3  # class 3 only in donor D03, which has others too
    ds = from_arrays(X, y, groups=donors)
    f = only(dr.check_group_class_confound(ds), "group_class_confound")
    assert f.severity == "warning" and f.evidence["single_group_classes"] == ["3"]
    # the same fault is not reported again as a tiny class (it has ~30 rows)
    assert {x.id for x in dr.check_data(ds, splits(ds, cv=3)) if x.severity != "info"} == {
        "group_class_confound"}


def with_patient_column(grouped: bool) -> Dataset:
    X, y, donors = cells()
    frame = pd.DataFrame(X, columns=[f"CD{i}" for i in range(X.shape[1])])
    frame["label"], frame["patient"] = y, donors
    if grouped:
        return load_table(frame, target="label", groups="patient")
    return load_table(frame, target="label", drop=["patient"])


def test_missing_groups_proposes_the_id_column_found_at_load():
    ds = with_patient_column(grouped=False)
    assert dr.group_candidates(ds) == ["patient"]
    f = only(dr.check_missing_groups(ds), "missing_groups")
    assert f.severity == "warning" and f.evidence["column"] == "patient"
    assert f.fix == "grouped_split"
    assert dr.check_missing_groups(with_patient_column(grouped=True)) == []
    assert dr.check_missing_groups(table(grouped=False)) == []


def test_missing_groups_finds_an_id_named_feature():
    X, y, donors = cells()
    ds = from_arrays(np.c_[X, np.unique(donors, return_inverse=True)[1]], y,
                     feature_names=[*(f"m{i}" for i in range(X.shape[1])), "sample_id"])
    assert dr.group_candidates(ds) == ["sample_id"]
    assert only(dr.check_missing_groups(ds), "missing_groups").evidence["is_feature"]


def test_missing_groups_finds_an_npz_slide_key(tmp_path: Path):
    from cellbench.data import load_images

    ds = images()
    path = tmp_path / "cells.npz"
    np.savez(path, X=ds.X[:, 0], y=ds.y, slide_id=ds.groups)
    loaded = load_images(path)
    assert dr.group_candidates(loaded) == ["slide_id"]
    assert dr.check_missing_groups(loaded)[0].evidence["column"] == "slide_id"
    assert dr.check_missing_groups(load_images(path, groups="slide_id")) == []


def test_missing_groups_finds_a_file_name_prefix(tmp_path: Path):
    from PIL import Image

    from cellbench.data import load_images

    ds = images(60)
    for i, (img, label) in enumerate(zip(ds.X, ds.y, strict=True)):
        folder = tmp_path / ("pos" if label else "neg")
        folder.mkdir(exist_ok=True)
        Image.fromarray(img[0]).save(folder / f"C{i % 6}P{i % 6}_cell_{i}.png")
    f = only(dr.check_missing_groups(load_images(tmp_path)), "missing_groups")
    assert f.evidence["regex"] == dr.GROUP_REGEX
    for i, path in enumerate(sorted(tmp_path.rglob("*.png"))):
        path.rename(path.with_name(f"cell{i}.png"))  # no repeated prefix: nothing to propose
    assert dr.check_missing_groups(load_images(tmp_path)) == []


# ---------------------------------------------------------------------------------------------
# duplicate_rows_across_splits, label_conflict


def with_copies(share: float, flip: bool = False, n: int = 1200) -> Dataset:
    """``share`` of the rows appended again (labels flipped to another class if ``flip``)."""
    X, y, _ = cells(n)
    pick = np.random.default_rng(3).choice(n, int(share * n), replace=False)
    y_copy = (y[pick] + 1) % 3 if flip else y[pick]
    return from_arrays(np.vstack([X, X[pick]]), np.r_[y, y_copy])


def test_duplicate_rows_across_splits_fire_on_copies():
    ds = with_copies(0.2)
    f = only(dr.check_duplicate_rows(ds, splits(ds)), "duplicate_rows_across_splits")
    assert f.severity == "warning"
    assert f.evidence["share"] >= f.evidence["ci_halfwidth"]
    assert f.evidence["shared"] > 0 and f.evidence["chance_share"] < 1e-6
    assert dr.check_duplicate_rows(table(grouped=False), splits(table(grouped=False))) == []


def test_duplicate_rows_across_splits_error_when_most_held_out_rows_are_copies():
    X, y, _ = cells(400)
    ds = from_arrays(np.tile(X, (4, 1)), np.tile(y, 4))
    f = only(dr.check_duplicate_rows(ds, splits(ds)), "duplicate_rows_across_splits")
    assert f.severity == "error" and f.evidence["share"] > 0.5


def test_natural_duplicates_of_discrete_features_stay_info():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    X = rng.integers(0, 3, size=(2000, 3)) + y[:, None]  # 3 columns of 4 values: collisions
    ds = from_arrays(X, y)
    found = dr.check_duplicate_rows(ds, splits(ds)) + dr.check_label_conflict(ds, splits(ds))
    assert {f.id for f in found} == {"duplicate_rows_across_splits", "label_conflict"}
    assert above_info(found) == []


def test_label_conflict_reports_the_ceiling():
    ds = with_copies(0.1, flip=True)
    f = only(dr.check_label_conflict(ds, splits(ds)), "label_conflict")
    assert f.severity == "warning"
    assert f.evidence["ceiling"] == pytest.approx(1 - 120 / 1320)
    assert f.evidence["conflicting_rows"] == 240
    assert dr.check_duplicate_rows(ds, splits(ds)) == []  # copies with other labels inflate nothing
    assert dr.check_label_conflict(with_copies(0.1)) == []  # copies, same labels


# ---------------------------------------------------------------------------------------------
# unlabelled_class


def _named(classes: list, weights: list[float]) -> Dataset:
    X, y, donors = cells(1200, n_classes=len(classes), weights=weights)
    return from_arrays(X, np.array(classes, dtype=object)[y], groups=donors)


@pytest.mark.parametrize("name", ["Unlabeled", "ungated", " unknown ", -1, "?"])
def test_unlabelled_class_is_found_with_the_flag_that_removes_it(name):
    ds = _named(["B cells", "T cells", name], [0.35, 0.35, 0.3])
    f = only(dr.check_unlabelled_class(ds, splits(ds)), "unlabelled_class")
    assert f.severity == "warning" and f.to_dict()["category"] == "data"
    assert f.evidence["heldout_share"] > f.evidence["heldout_ci_halfwidth"]
    assert f.advice.endswith(f"--exclude-labels {shlex.quote(str(name))}.")
    assert only(dr.check_data(ds, splits(ds)), "unlabelled_class") == f


def test_a_small_unlabelled_class_is_info_and_a_labelled_one_is_nothing():
    small = _named(["B cells", "T cells", "Unlabeled"], [0.495, 0.495, 0.01])
    f = only(dr.check_unlabelled_class(small, splits(small)), "unlabelled_class")
    assert f.severity == "info"  # ~1 % of the held-out rows: within the accuracy's noise
    named = _named(["B cells", "T cells", "NK cells"], [0.35, 0.35, 0.3])
    assert dr.check_unlabelled_class(named, splits(named)) == []
    assert dr.check_unlabelled_class(_named(["unknown", "ungated"], [0.5, 0.5])) != []


# ---------------------------------------------------------------------------------------------
# leaking_feature


def with_extra_column(values_from_y, n_classes: int = 3, seed: int = 0) -> Dataset:
    X, y, donors = cells(1500, n_classes=n_classes, seed=seed)
    rng = np.random.default_rng(seed)
    extra = values_from_y(y, rng)
    return from_arrays(np.c_[X, extra], y, groups=donors,
                       feature_names=[*(f"CD{i}" for i in range(X.shape[1])), "extra"])


def test_leaking_feature_errors_on_a_copy_of_the_label():
    ds = with_extra_column(lambda y, rng: y + rng.normal(0, 0.05, len(y)))
    f = only(dr.check_leaking_feature(ds, splits(ds)), "leaking_feature")
    assert f.severity == "error" and f.evidence["column"] == "extra"
    assert f.evidence["kind"] == "separates_all" and f.fix == "drop_column"
    assert f.evidence["lower_bound"] >= f.evidence["threshold"]
    assert dr.check_leaking_feature(table(), splits(table())) == []


def test_leaking_feature_in_two_classes_needs_a_code_or_an_identifier():
    code = with_extra_column(lambda y, rng: (y * 7).astype(float), n_classes=2)
    f = only(dr.check_leaking_feature(code, splits(code)), "leaking_feature")
    assert (f.severity, f.evidence["kind"]) == ("error", "code")

    def sorted_row_id(y, rng):
        ids = np.empty(len(y))
        ids[np.argsort(y, kind="stable")] = np.arange(len(y))
        return ids

    ident = with_extra_column(sorted_row_id, n_classes=2)
    f = only(dr.check_leaking_feature(ident, splits(ident)), "leaking_feature")
    assert (f.severity, f.evidence["kind"]) == ("error", "identifier")

    # a strong measured marker (continuous, like CD19 for B vs T cells) is only info
    marker = with_extra_column(lambda y, rng: rng.normal(0, 1, len(y)) + 8 * y, n_classes=2)
    f = only(dr.check_leaking_feature(marker, splits(marker)), "leaking_feature")
    assert (f.severity, f.evidence["kind"]) == ("info", "marker")


def test_unpredictive_row_id_is_info():
    ds = with_extra_column(lambda y, rng: rng.permutation(len(y)).astype(float))
    f = only(dr.check_leaking_feature(ds, splits(ds)), "leaking_feature")
    assert (f.severity, f.evidence["kind"]) == ("info", "identifier")
