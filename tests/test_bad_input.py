"""Bad input, table-driven: every case runs the command line on tiny files and checks that it
ends with a message, not a traceback; says what the expected fragment says; and leaves the
run directory as it should (none made, a finished run, or the earlier run kept as it was).

A case is ``(id, args, exit code, message fragment, run directory state)``. In ``args``,
``@name`` is a file or folder that :data:`BUILD` writes into the test's folder on demand,
and ``OUT`` is the run directory (``tmp/run``). States:

``none``
    nothing was created at ``OUT``;
``done``
    the job finished: ``OUT`` holds its results (the fragment is then a warning or a note);
``kept``
    ``OUT`` held a finished run before, and its files are exactly as they were.
"""

from __future__ import annotations

import gzip
import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cellbench.cli import app


def _shared_helpers():
    """``make_table`` and ``write_fcs`` from tests/conftest.py (by path: the name conftest is
    ambiguous when sub-folders have their own)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cellbench_test_helpers",
                                                  Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_table, module.write_fcs


make_table, write_fcs = _shared_helpers()
runner = CliRunner()
FAST = ("--max-epochs", "1", "--quiet")


class Case(NamedTuple):
    id: str
    args: tuple[str, ...]
    code: int
    fragment: str
    state: str = "none"


# -- the files the cases run on ------------------------------------------------------------


def _table(n: int = 120, **kwargs) -> pd.DataFrame:
    return make_table(n=n, n_features=4, n_classes=3, n_donors=6, **kwargs)


def _csv(frame: pd.DataFrame, **kwargs) -> Callable[[Path], None]:
    return lambda path: frame.to_csv(path, index=False, **kwargs)


def _edit(fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    return lambda path: fn(_table()).to_csv(path, index=False)


def _set(frame: pd.DataFrame, row: int, col: str, value) -> pd.DataFrame:
    numeric = pd.api.types.is_numeric_dtype(frame[col]) and not isinstance(value, str)
    frame = frame.astype({col: np.float64 if numeric else object})
    frame.loc[row, col] = value
    return frame


def _mix(path: Path) -> None:
    """Per-sample gates: each sample numbers its populations its own way."""
    rng = np.random.default_rng(0)
    rows = []
    for sample in range(6):
        k = int(rng.integers(3, 6))
        sizes = rng.dirichlet(np.ones(k)) * 60
        for gate, label in enumerate(rng.permutation(6)[:k]):
            rows += [(f"S{sample}", f"pop{label}", *(rng.normal(size=3) + 3 * gate))
                     for _ in range(int(sizes[gate]) + 4)]
    pd.DataFrame(rows, columns=["sample", "label", "a", "b", "c"]).to_csv(path, index=False)


def _conflict(path: Path) -> None:
    frame = _table()
    copies = frame.iloc[:10].copy()
    copies["label"] = np.where(copies["label"] == "type0", "type1", "type0")
    pd.concat([frame, copies]).to_csv(path, index=False)


def _npz(**arrays) -> Callable[[Path], None]:
    return lambda path: np.savez(path, **arrays)


def _images(layout: dict[str, list[tuple[int, int] | bytes]]) -> Callable[[Path], None]:
    from PIL import Image

    def build(root: Path) -> None:
        for label, items in layout.items():
            (root / label).mkdir(parents=True)
            for i, item in enumerate(items):
                path = root / label / f"{label}{i}.png"
                if isinstance(item, bytes):
                    path.write_bytes(item)
                else:
                    Image.fromarray(np.full(item, 50 * i % 255, np.uint8)).save(path)
    return build


def _fcs_folder(sheet: str | None, subfolders: bool = False,
                bad: bytes | None = None) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        root.mkdir()
        rng = np.random.default_rng(0)
        for i in range(4):
            folder = root / ("ab"[i % 2] if subfolders else "")
            folder.mkdir(exist_ok=True)
            path = folder / f"s{i}.fcs"
            if bad is not None and i == 0:
                path.write_bytes(bad)
            else:
                write_fcs(path, rng.gamma(2, 50, size=(20, 2)), ["FL1-A", "FL2-A"])
        if sheet is not None:
            (root / "sheet.csv").write_text(sheet)
    return build


def _model(path: Path) -> None:
    from cellbench import TrainConfig, load_table
    from cellbench.data import holdout_split
    from cellbench.train import train_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_table(_table(), target="label", groups="donor")
    fm = train_model(ds, holdout_split(ds.y, ds.groups), TrainConfig(model="lda"))
    fm.save(path)


def _crafted(path: Path) -> None:
    torch.save({"format": "cellbench-model", "name": "mlp", "version": 1}, path)


def _finished(path: Path) -> None:
    """A finished compare run in ``path`` (for the cases that must leave it alone)."""
    (path.parent / "cells.csv").exists() or BUILD["cells.csv"](path.parent / "cells.csv")
    result = runner.invoke(app, ["compare", str(path.parent / "cells.csv"), "-t", "label",
                                 "-g", "donor", "--models", "lda", "--out", str(path),
                                 "--quiet"])
    assert result.exit_code == 0, result.output


BUILD: dict[str, Callable[[Path], None]] = {
    "cells.csv": _csv(_table()),
    "empty.csv": lambda p: p.write_bytes(b""),
    "header.csv": lambda p: p.write_text("CD1,CD2,label\n"),
    "cells.xlsx": lambda p: p.write_bytes(b"PK\x03\x04 not really a workbook"),
    "cells.npy": lambda p: np.save(p, np.zeros((3, 3))),
    "cells.dat": lambda p: p.write_text("1 2 3\n"),
    "nolabel.csv": _edit(lambda f: f.rename(columns={"label": "kind"})),
    "nonelabel.csv": _edit(lambda f: f.assign(label=f["label"].astype(str).where(
        f["label"].astype(str) != f["label"].astype(str).iloc[0], "None"))),
    "text.csv": _edit(lambda f: _set(f, 3, "CD2", "high")),
    "nan.csv": _edit(lambda f: _set(f, 5, "CD3", np.nan)),
    "inf.csv": _edit(lambda f: _set(f, 5, "CD3", np.inf)),
    "nolabelrow.csv": _edit(lambda f: _set(f, 7, "label", np.nan)),
    "oneclass.csv": _edit(lambda f: f.assign(label="T")),
    "dup.csv": lambda p: p.write_text("CD1,CD2,CD2,label\n" + "1,2,3,a\n4,5,6,b\n" * 20),
    "semi.csv": _csv(_table(), sep=";"),
    "cont.csv": _edit(lambda f: f.drop(columns="label").assign(
        level=np.random.default_rng(1).normal(size=120))),
    "idtarget.csv": _edit(lambda f: f.assign(cell=[f"c{i}" for i in range(120)])),
    "big.csv": _edit(lambda f: _set(f, 9, "CD2", 1e39)),
    "split_bad.csv": _edit(lambda f: f.assign(part=["trian"] + ["train"] * 119)),
    "split_notrain.csv": _edit(lambda f: f.assign(part=["test", "val"] * 60)),
    "split_leak.csv": _edit(lambda f: f.assign(part=np.where(np.arange(120) < 60, "train",
                                                             "test"))),
    "classgroup.csv": _edit(lambda f: f.drop(columns="donor").assign(
        patient=f["label"].map({"type0": "P1", "type1": "P2", "type2": "P3"}))),
    "twodonors.csv": _edit(lambda f: f.assign(donor=np.where(np.arange(120) % 2, "A", "B"))),
    "smallclass.csv": _edit(lambda f: _set(_set(f.drop(columns="donor"), 0, "label", "rare"),
                                           1, "label", "rare")),
    "binary.csv": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "trailing.csv": lambda p: p.write_text("\n".join(
        line + "," for line in _table().to_csv(index=False).strip().splitlines()) + "\n"),
    "workbook.csv": lambda p: p.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 8),
    "bad.csv.gz": lambda p: p.write_bytes(b"\x1f\x8b\x08 truncated"),
    "bad.parquet": lambda p: p.write_bytes(b"PAR1 this is not parquet"),
    "spelling.csv": _edit(lambda f: f.assign(label=f["label"].astype(str).where(
        np.arange(len(f)) % 7 != 0, f["label"].astype(str).str.upper() + " "))),
    "numbered.csv": _edit(lambda f: f.assign(label=f["label"].map(
        {"type0": "1", "type1": "2", "type2": "3"}).where(np.arange(len(f)) % 5 != 0, "01"))),
    "notest.csv": _edit(lambda f: f.assign(part=np.where(f["donor"] == f["donor"].iloc[0],
                                                         "val", "train"))),
    "dates.parquet": lambda p: _table().assign(when=pd.date_range(
        "2024-01-01", periods=120, freq="s")).to_parquet(p),
    "conflict.csv": _conflict,
    "mix.csv": _mix,
    "bad.yaml": lambda p: p.write_text("train: [1\n"),
    "list.yaml": lambda p: p.write_text("- 1\n- 2\n"),
    "quoted.yaml": lambda p: p.write_text('data:\n  dropna: "false"\n'),
    "section.yaml": lambda p: p.write_text("train: [1, 2]\n"),
    "space.yaml": lambda p: p.write_text("lr: {type: float, low: 1, high: 0}\n"),
    "obj.npz": _npz(X=np.zeros((6, 8, 8), np.uint8), y=np.array(["a", 1, None, "b", 2, 3],
                                                                   dtype=object)),
    "keys.npz": _npz(images=np.zeros((6, 8, 8), np.uint8), labels=np.arange(6) % 2),
    "count.npz": _npz(X=np.zeros((6, 8, 8), np.uint8), y=np.arange(5) % 2),
    "text.npz": _npz(X=np.full((6, 8, 8), "a"), y=np.arange(6) % 2),
    "medmnist.npz": _npz(**{f"{part}_{kind}": (
        np.random.default_rng(1).integers(0, 255, (12, 8, 8), dtype=np.uint8) if kind == "images"
        else np.arange(12) % 2) for part in ("train", "val", "test") for kind in ("images",
                                                                                   "labels")}),
    "ok.npz": _npz(X=np.random.default_rng(0).integers(0, 255, (24, 8, 8), dtype=np.uint8),
                   y=np.arange(24) % 2, slide=np.repeat(list("abcdef"), 4)),
    "imgs_ok": _images({"a": [(8, 8)] * 4, "b": [(8, 8)] * 4}),
    "imgs_sheet": lambda p: (_images({"a": [(8, 8)] * 2})(p),
                             (p / "sheet.csv").write_text("file,label\na/a0.png,x\n"
                                                          "a/a9.png,y\n")),
    "fcs_channels": lambda p: (_fcs_folder(None, subfolders=True)(p),
                               write_fcs(p / "a" / "s0.fcs", np.ones((5, 3)),
                                         ["FL1-A", "FL2-A", "FL3-A"])),
    "constant.csv": _edit(lambda f: f.assign(CD1=1.0, CD2=1.0, CD3=1.0, CD4=1.0)),
    "latin1.csv": lambda p: _table().rename(columns={"CD1": "CDé"}).to_csv(
        p, index=False, encoding="latin-1"),
    "indexed.csv": lambda p: _table().sort_values("label").to_csv(p),  # "Unnamed: 0"
    "nan.npz": _npz(X=np.full((24, 8, 8), np.nan, np.float32), y=np.arange(24) % 2,
                    slide=np.repeat(list("abcdef"), 4)),
    "manyclasses.csv": lambda p: pd.DataFrame({
        "a": np.arange(600.0) % 7, "b": np.arange(600.0) % 11,
        "label": [f"class{i // 2}" for i in range(600)]}).to_csv(p, index=False),
    "lonely.csv": _edit(lambda f: f.assign(
        label=np.where(f["donor"] == "D00", "sick", "healthy"),
        donor=np.where(f["donor"] <= "D01", "D00", f["donor"]))),
    "split_ok.csv": _edit(lambda f: f.assign(part=np.where(f["donor"] < "D04", "train",
                                                           "test"))),
    "imgs_emptyclass": _images({"a": [(8, 8)] * 3, "b": []}),
    "imgs_mixed": lambda p: (_images({"a": [(8, 8)] * 3, "b": [(8, 8)] * 3})(p),
                             _images({"s1": [(8, 8)] * 2})(p / "a")),
    "nothing": lambda p: p.mkdir(),
    "puredonor.csv": _edit(lambda f: f.assign(label=np.where(f["donor"] == f["donor"].iloc[0],
                                                             "type0", f["label"]))),
    "imgs_corrupt": _images({"a": [(8, 8)] * 3, "b": [(8, 8), b"\x89PNG broken"]}),
    "imgs_sizes": _images({"a": [(8, 8)] * 3, "b": [(8, 8), (12, 12)]}),
    "fcs_nolabels": _fcs_folder(None),
    "fcs_missing": _fcs_folder("file,label\ns0.fcs,a\ns9.fcs,b\n"),
    "fcs_pateint": _fcs_folder("file,label,pateint\ns0.fcs,a,P1\ns1.fcs,b,P2\n"
                               "s2.fcs,a,P3\ns3.fcs,b,P4\n"),
    "fcs_nolabelcol": _fcs_folder("file,kind\ns0.fcs,a\ns1.fcs,b\n"),
    "fcs_empty": _fcs_folder(None, subfolders=True, bad=b""),
    "fcs_corrupt": _fcs_folder(None, subfolders=True, bad=b"FCS3.1    garbage" * 4),
    "model.pt": _model,
    "corrupt.pt": lambda p: p.write_bytes(b"not a checkpoint"),
    "crafted.pt": _crafted,
    "nocols.csv": _edit(lambda f: f.drop(columns="CD2")),
    "a_file": lambda p: p.write_text("x"),
    "full": lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")),
}


# -- the cases -----------------------------------------------------------------------------

T = ("-t", "label")
TG = ("-t", "label", "-g", "donor")
CMP = ("compare", "@cells.csv", *TG, "--models", "lda", "--out", "OUT")
TRAIN = ("train", "@cells.csv", *TG, "--out", "OUT", *FAST)

CASES = [
    # reading tables
    Case("missing-file", ("compare", "nowhere.csv", *T, "--out", "OUT"), 2,
         "data path must exist; got"),
    Case("empty-file", ("compare", "@empty.csv", *T, "--out", "OUT"), 2,
         "must not be empty; got 0 bytes"),
    Case("header-only", ("compare", "@header.csv", *T, "--out", "OUT"), 2,
         "must hold at least one row"),
    Case("excel-workbook", ("compare", "@cells.xlsx", *T, "--out", "OUT"), 2,
         "'cells.xlsx', an Excel workbook. Export the sheet as CSV"),
    Case("numpy-array", ("compare", "@cells.npy", *T, "--out", "OUT"), 2,
         "'cells.npy', a NumPy array without labels or column names"),
    Case("unknown-suffix", ("compare", "@cells.dat", *T, "--out", "OUT"), 2,
         "must be CSV, TSV, Parquet or FCS"),
    Case("trailing-commas", ("compare", "@trailing.csv", *TG, "--models", "lda", "--out", "OUT",
                             "--quiet"), 0, "Dropped 1 empty unnamed column at the end", "done"),
    Case("workbook-as-csv", ("compare", "@workbook.csv", *T, "--out", "OUT"), 2,
         "it is a zip archive (an Excel .xlsx workbook is one). Export it as CSV"),
    Case("binary-as-csv", ("compare", "@binary.csv", *T, "--out", "OUT"), 2,
         "must be UTF-8 text; byte 0x80 at position 128"),
    Case("broken-gzip", ("compare", "@bad.csv.gz", *T, "--out", "OUT"), 2,
         "must be a readable CSV table"),
    Case("label-spelling", ("compare", "@spelling.csv", *TG, "--models", "lda", "--out", "OUT",
                            "--quiet"), 0, "differ only in case or spaces", "done"),
    Case("labels-one-number", ("compare", "@numbered.csv", *TG, "--models", "lda", "--out",
                               "OUT", "--quiet"), 0,
         "write one number several ways ('01', '1' are all 1)", "done"),
    Case("split-column-without-test", ("compare", "@notest.csv", *TG, "--split-column", "part",
                                       "--models", "lda", "--out", "OUT"), 2,
         "the given split (part) marks no row 'test'"),
    Case("datetime-feature", ("compare", "@dates.parquet", *TG, "--out", "OUT"), 2,
         "Feature column 'when' must be numeric; got date-times such as 2024-01-01 00:00:00"),
    Case("broken-parquet", ("compare", "@bad.parquet", *T, "--out", "OUT"), 2,
         "must be a readable PARQUET table"),
    Case("semicolon-separated", ("compare", "@semi.csv", *T, "--out", "OUT"), 2,
         "looks semicolon-separated"),
    Case("repeated-column-names", ("compare", "@dup.csv", *T, "--out", "OUT"), 2,
         "got 'CD2' (columns 2, 3)"),
    # columns and their roles
    Case("target-typo", ("compare", "@cells.csv", "-t", "lable", "--out", "OUT"), 2,
         "Did you mean 'label'?"),
    Case("groups-typo", ("compare", "@cells.csv", *T, "-g", "donr", "--out", "OUT"), 2,
         "Did you mean 'donor'?"),
    Case("no-target-to-guess", ("compare", "@nolabel.csv", "--out", "OUT"), 2,
         "target column must be given"),
    Case("text-in-feature", ("compare", "@text.csv", *TG, "--out", "OUT"), 2,
         "Feature column 'CD2' must be numeric; got text such as 'high' (row 4)"),
    Case("nan-feature", ("compare", "@nan.csv", *TG, "--out", "OUT"), 2,
         "'CD3' (1 NaN, first at row 6)"),
    Case("inf-feature", ("compare", "@inf.csv", *TG, "--out", "OUT"), 2,
         "'CD3' (1 inf, first at row 6)"),
    Case("missing-label", ("compare", "@nolabelrow.csv", *TG, "--out", "OUT"), 2,
         "must have a label on every row; 1 rows have none (first at row 8)"),
    Case("one-class", ("compare", "@oneclass.csv", *TG, "--out", "OUT"), 2,
         "must have at least 2 classes; got 1 ('T'"),
    Case("continuous-target", ("compare", "@cont.csv", "-t", "level", "-g", "donor", "--out",
                               "OUT"), 2, "distinct decimal values"),
    Case("id-as-target", ("compare", "@idtarget.csv", "-t", "cell", "-g", "donor", "--out",
                          "OUT"), 2, "it looks like an id or a measurement"),
    Case("overflows-float32", ("compare", "@big.csv", *TG, "--out", "OUT"), 2,
         "overflow float32 in 'CD2' (1 values, first 1e+39 at row 10)"),
    Case("latin-1-file", ("compare", "@latin1.csv", *TG, "--out", "OUT"), 2,
         "must be UTF-8 text; byte 0xe9"),
    Case("every-feature-constant", ("compare", "@constant.csv", *TG, "--out", "OUT"), 2,
         "all 4 are constant"),
    Case("exclude-every-label", ("compare", "@cells.csv", *TG, "--exclude-labels",
                                 "type0,type1,type2", "--out", "OUT"), 2,
         "must leave some rows; it removes all 120"),
    Case("feature-glob-matches-nothing", ("compare", "@cells.csv", *TG, "--features", "XY*",
                                          "--out", "OUT"), 2, "'XY*' must name a column"),
    Case("feature-is-target", ("compare", "@cells.csv", *TG, "--features", "CD1,label",
                               "--out", "OUT"), 2, "must not include the target"),
    Case("drop-every-feature", ("compare", "@cells.csv", *TG, "--drop", "CD*", "--out",
                                "OUT"), 2, "at least one feature column must remain"),
    Case("split-column-bad-value", ("compare", "@split_bad.csv", *TG, "--split-column",
                                    "part", "--out", "OUT"), 2,
         "must hold train, val or test on every row; got 'trian' at row 1"),
    Case("split-column-no-train", ("compare", "@split_notrain.csv", *TG, "--split-column",
                                   "part", "--out", "OUT"), 2, "must mark some rows 'train'"),
    Case("split-column-leaks-a-group", ("compare", "@split_leak.csv", *TG, "--split-column",
                                        "part", "--out", "OUT"), 2,
         "must be in one part only"),
    # splits that cannot work
    Case("class-is-group", ("compare", "@classgroup.csv", *T, "-g", "patient", "--out",
                            "OUT"), 2, "cannot be separated from the group 'patient'"),
    Case("two-groups-for-three-parts", ("compare", "@twodonors.csv", *TG, "--out", "OUT"),
         2, "must have at least 3 distinct values for a grouped train/val/test split"),
    Case("more-folds-than-groups", ("compare", "@cells.csv", *TG, "--cv", "10", "--out",
                                    "OUT"), 2, "at least 10 distinct values for 10-fold"),
    Case("class-smaller-than-folds", ("compare", "@smallclass.csv", *T, "--cv", "5",
                                      "--out", "OUT"), 2, "'rare' has 2"),
    Case("single-class-training-part", ("compare", "@lonely.csv", *TG, "--cv", "3",
                                        "--val-size", "0", "--models", "lda,logreg", "--out",
                                        "OUT"), 2,
         "must hold at least 2 classes to learn a classifier; it holds only 'healthy'"),
    Case("hundreds-of-tiny-classes", ("compare", "@manyclasses.csv", *T, "--out", "OUT"), 2,
         "has 2 and 295 more classes are as small"),
    Case("repeats-without-cv", (*CMP, "--repeats", "3"), 2, "split.repeats needs k-fold CV"),
    Case("within-groups-without-groups", ("compare", "@cells.csv", *T, "--drop", "donor",
                                          "--within-groups", "--out", "OUT"), 2,
         "--within-groups must come with groups"),
    # settings
    Case("within-groups-with-a-given-split", ("compare", "@split_ok.csv", *TG,
                                              "--split-column", "part", "--within-groups",
                                              "--models", "lda", "--out", "OUT"), 2,
         "must not be combined with a given split"),
    Case("no-test-part-to-compare", (*CMP, "--test-size", "0"), 2,
         "compare needs a test part to compare on"),
    Case("cv-1", (*CMP, "--cv", "1"), 2,
         "split.cv (--cv) must be an int >= 2, the number of folds; got 1"),
    Case("zero-patience", (*TRAIN, "--patience", "0"), 2, "train.patience must be an int >= 1"),
    Case("zero-batch-size", (*TRAIN, "--batch-size", "0"), 2,
         "train.batch_size must be an int >= 1"),
    Case("negative-weight-decay", (*TRAIN, "--weight-decay", "-1"), 2,
         "train.weight_decay must be a number >= 0"),
    Case("zero-grad-clip", (*TRAIN, "--grad-clip", "0"), 2, "train.grad_clip must be a number"),
    Case("sampler-typo", (*TRAIN, "--sampler", "balance"), 2,
         "train.sampler must be 'balanced' or None"),
    Case("zero-seeds", (*CMP, "--seeds", "0"), 2, "seeds must be an int >= 1"),
    Case("ablate-factor-typo", ("ablate", "@cells.csv", *TG, "--model", "mlp", "--factor",
                                "widht=1,2", "--out", "OUT"), 2, "Did you mean 'width'?"),
    Case("ablate-factor-without-levels", ("ablate", "@cells.csv", *TG, "--model", "mlp",
                                          "--factor", "width", "--out", "OUT"), 2,
         "--factor must look like name=level1,level2"),
    Case("val-size-above-1", (*CMP, "--val-size", "1.5"), 2,
         "split.val_size must be a fraction in [0, 1)"),
    Case("no-room-to-train", (*CMP, "--val-size", "0.5", "--test-size", "0.45"), 2,
         "must leave at least 10% for training"),
    Case("negative-lr", (*TRAIN, "--lr", "-1"), 2, "train.lr must be a number > 0"),
    Case("zero-epochs", ("train", "@cells.csv", *TG, "--max-epochs", "0", "--out", "OUT"), 2,
         "train.max_epochs must be an int >= 1"),
    Case("optimizer-typo", (*TRAIN, "--optimizer", "adamm"), 2,
         "train.optimizer must be one of sgd, asgd, adam, adamw, rmsprop"),
    Case("scheduler-typo", (*TRAIN, "--scheduler", "cosin"), 2,
         "train.scheduler must be one of"),
    Case("unknown-model", (*TRAIN, "--model", "resnet81"), 2, "Did you mean 'resnet8'?"),
    Case("model-argument-typo", (*TRAIN, "--model", "mlp(widht=8)"), 2,
         "Did you mean 'width'?"),
    Case("model-argument-value", (*TRAIN, "--model", "mlp(width=-1)"), 2,
         "width must be an int >= 1; got -1"),
    Case("model-argument-unbuildable", (*TRAIN, "--model", "cnn1d-seed(dropout=x)"), 2,
         "must be buildable with the given arguments"),
    Case("optimizer-argument-typo", (*TRAIN, "--model", "mlp", "--set",
                                     "train.optimizer_kwargs.momentun=0.9"), 2,
         "optimizer_kwargs for 'adam' must be among"),
    Case("missing-gpu", (*TRAIN, "--device", "cuda:3"), 2, "PyTorch sees no CUDA GPU"),
    Case("unknown-device", (*TRAIN, "--device", "tpu"), 2,
         "device must be 'auto', 'cpu' or 'cuda[:index]'; got 'tpu'"),
    Case("augment-on-a-table", (*TRAIN, "--model", "mlp", "--augment", "flip"), 2,
         "augment must not be set for a table"),
    Case("resize-on-a-table", (*CMP, "--resize", "32"), 2,
         "resize must not be set for a table; it applies to images"),
    Case("class-weight-typo", (*TRAIN, "--class-weight", "balance"), 2,
         "train.class_weight must be 'balanced'"),
    Case("class-weight-unknown-label", (*TRAIN, "--set", "train.class_weight={typeX: 2}"), 2,
         "class_weight keys must be class labels"),
    Case("augment-typo", ("compare", "@obj.npz", "--augment", "flipp", "--out", "OUT"), 2,
         "Did you mean 'flip'?"),
    Case("transform-typo", (*CMP, "--transform", "arcsin"), 2, "Did you mean 'arcsinh'?"),
    Case("cytometry-typo", (*CMP, "--cytometry", "liquid"), 2,
         "data.cytometry must be 'mass' or 'flow'"),
    Case("negative-cofactor", (*CMP, "--cofactor", "-5"), 2, "must be a number > 0"),
    Case("test-unit-typo", (*CMP, "--test-unit", "patients"), 2,
         "test_unit must be auto, groups, runs or cells"),
    Case("alpha-out-of-range", (*CMP, "--alpha", "0.7"), 2, "alpha must be a float in"),
    Case("reference-typo", ("compare", "@cells.csv", *TG, "--models", "lda,logreg",
                            "--reference", "lad", "--out", "OUT"), 2, "Did you mean 'lda'?"),
    Case("repeated-label", ("compare", "@cells.csv", *TG, "--models", "a=lda,a=logreg",
                            "--out", "OUT"), 2, "'a' repeats"),
    Case("set-key-typo", (*TRAIN, "--set", "train.lrr=1"), 2, "did you mean 'lr'?"),
    Case("set-without-value", (*TRAIN, "--set", "train.lr"), 2,
         "--set must look like section.key=value"),
    Case("set-a-list-to-a-mapping", (*CMP, "--set", "data.features={a: 1}"), 2,
         "data.features must be a list or comma-separated text; got a mapping"),
    Case("set-a-list-to-a-number", (*CMP, "--set", "data.exclude_labels=7", "--quiet"), 0,
         "exclude_labels '7' match no row", "done"),
    Case("empty-model-argument", (*TRAIN, "--model", "mlp(width=)"), 2,
         "model argument must look like key=value; got 'width='"),
    Case("unbalanced-model-spec", (*TRAIN, "--model", "mlp("), 2,
         "model must look like name, name(key=value,...)"),
    Case("config-missing", (*TRAIN, "--config", "nowhere.yaml"), 2,
         "config file must exist"),
    Case("config-not-yaml", (*TRAIN, "--config", "@bad.yaml"), 2, "must be valid YAML"),
    Case("config-not-a-mapping", (*TRAIN, "--config", "@list.yaml"), 2,
         "must be a YAML mapping"),
    Case("config-quoted-boolean", (*CMP, "--config", "@quoted.yaml"), 2,
         "data.dropna must be true or false; got 'false' (a string)"),
    Case("config-section-not-a-mapping", (*CMP, "--config", "@section.yaml"), 2,
         "train must be a mapping of settings (e.g. train: {max_epochs: 20}); got [1, 2]"),
    Case("set-a-boolean-to-text", (*CMP, "--set", "data.dropna=maybe"), 2,
         "data.dropna must be true or false; got 'maybe' (a string)"),
    Case("set-a-column-to-a-list", (*CMP, "--set", "data.groups=[a,b]"), 2,
         "data.groups must be a column name (a string); got ['a', 'b'] (a list)"),
    Case("set-a-column-to-a-number", (*CMP, "--set", "data.target=5"), 2,
         "target column must be one of the table's columns; got '5'"),
    Case("set-a-section-to-a-value", (*CMP, "--set", "train=1"), 2,
         "train must be a mapping of settings"),
    Case("empty-model-list", ("compare", "@cells.csv", *TG, "--models", "", "--out", "OUT"),
         2, "models must name at least one model; got ''"),
    Case("blank-model-list", ("compare", "@cells.csv", *TG, "-m", ",", "--out", "OUT"),
         2, "models must name at least one model; got ''"),
    Case("model-argument-twice", (*TRAIN, "--model", "mlp(width=64,width=32)"), 2,
         "model argument 'width' must be given once in 'mlp(width=64,width=32)'"),
    Case("model-argument-not-a-number", (*TRAIN, "--model", "mlp(dropout=abc)"), 2,
         "dropout must be a number; got 'abc' (a string)"),
    Case("cv-with-a-given-split", ("compare", "@split_ok.csv", *TG, "--split-column", "part",
                                   "--cv", "3", "--models", "lda", "--out", "OUT"), 2,
         "split.cv must not be combined with a given split (--split-column part)"),
    # run directories
    Case("out-is-a-file", ("compare", "@cells.csv", *TG, "--out", "@a_file"), 2,
         "must be empty or a cellbench run; it is a file, not a folder"),
    Case("out-under-a-file", ("compare", "@cells.csv", *TG, "--out", "@a_file/run"), 2,
         "is a file, not a folder"),
    Case("out-holds-other-files", ("compare", "@cells.csv", *TG, "--out", "@full"), 2,
         "must be empty or a cellbench run; it holds other files"),
    Case("train-into-a-finished-run", ("train", "@cells.csv", *TG, "--out", "@@finished"), 2,
         "must be new; it already holds a run", "kept"),
    Case("rerun-on-other-data", ("compare", "@cells.csv", *TG, "--cv", "3", "--models", "lda",
                                 "--out", "@@finished"), 2,
         "holds a run on different data or splits", "kept"),
    Case("resume-nothing", ("train", "--resume", "@full"), 2, "holds no config.yaml"),
    Case("resume-a-compare-run", ("train", "--resume", "@@finished"), 2,
         "must hold a train run for `cellbench train` to continue it; it holds a compare run",
         "kept"),
    Case("doctor-into-a-compare-run", ("doctor", "@cells.csv", *TG, "--out", "@@finished",
                                       "--quiet"), 2,
         "it holds a compare run. Pass a new --out", "kept"),
    Case("tune-into-a-compare-run", ("tune", "@cells.csv", *TG, "--out", "@@finished",
                                     "--quiet"), 2, "it holds a compare run", "kept"),
    Case("rerun-with-other-settings", ("compare", "@cells.csv", *TG, "--models", "lda",
                                       "--max-epochs", "3", "--out", "@@finished"), 2,
         "was trained with max_epochs", "kept"),
    Case("predict-over-its-input", ("predict", "@model.pt", "@cells.csv", "--out",
                                    "@cells.csv"), 2, "must not be the input data"),
    Case("predict-to-parquet", ("predict", "@model.pt", "@cells.csv", "--out",
                                "p.parquet"), 2, "must end in .csv"),
    Case("predict-with-a-compare-run", ("predict", "@@finished", "@cells.csv", "--out",
                                        "p.csv"), 2, "this run keeps one per unit", "kept"),
    Case("label-named-none", ("compare", "@nonelabel.csv", *TG, "--out", "OUT"), 2,
         "read as missing: if one of those names a class"),
    # images and npz
    Case("npz-object-array", ("compare", "@obj.npz", "--out", "OUT"), 2,
         "one of its arrays holds Python objects"),
    Case("npz-unknown-keys", ("compare", "@keys.npz", "--out", "OUT"), 2,
         "must hold train_images/train_labels (MedMNIST layout) or X and y"),
    Case("npz-label-count", ("compare", "@count.npz", "--out", "OUT"), 2,
         "must have one label per image; got 6 images and 5 labels"),
    Case("npz-text-images", ("compare", "@text.npz", "--out", "OUT"), 2,
         "must hold images as numbers"),
    Case("npz-split-with-cv", ("compare", "@medmnist.npz", "--cv", "3", "--models", "majority",
                               "--out", "OUT"), 2,
         "must not be combined with a given split (--split-column, or the train/val/test parts "
         "of an .npz); the given split already fixes every part (got --cv 3)"),
    Case("npz-groups-key-missing", ("compare", "@ok.npz", "-g", "patient", "--out", "OUT"), 2,
         "groups key 'patient' must be in npz file"),
    Case("table-model-on-images", ("compare", "@ok.npz", "-g", "slide", "--models", "lda",
                                   "--out", "OUT"), 2, "takes tabular input and cannot train "
                                                       "on images"),
    Case("image-model-on-a-table", (*TRAIN, "--model", "resnet8"), 2,
         "takes image input and cannot train on a table"),
    Case("resize-too-small", ("compare", "@imgs_ok", "--resize", "2", "--out", "OUT"), 2,
         "data.resize must be an int >= 4"),
    Case("image-norm-typo", ("compare", "@imgs_ok", "--image-norm", "zscore", "--out", "OUT"),
         2, "data.image_norm must be standardize, unit or none"),
    Case("group-regex-invalid", ("compare", "@imgs_ok", "--group-regex", "([a-z", "--out",
                                 "OUT"), 2, "must be a valid regular expression"),
    Case("group-regex-no-match", ("compare", "@imgs_ok", "--group-regex", r"^(C\d+)", "--out",
                                  "OUT"), 2, "must match every file name"),
    Case("image-sheet-missing-file", ("compare", "@imgs_sheet", "--sample-sheet",
                                      "@imgs_sheet/sheet.csv", "--out", "OUT"), 2,
         "names file 'a/a9.png', which must exist"),
    Case("npz-nan-images", ("compare", "@nan.npz", "-g", "slide", "--out", "OUT"), 2,
         "images must hold finite pixel values; 24 of 24 have NaN or inf"),
    Case("image-folders-mixed", ("compare", "@imgs_mixed", "--out", "OUT"), 2,
         "must hold images either directly or in subfolders"),
    Case("empty-folder", ("compare", "@nothing", "--group-regex", "x", "--out", "OUT"), 2,
         "must hold images (root/<class>/*.png), FCS files or Parquet files; it holds none "
         "(it is empty)"),
    Case("folder-of-notes", ("compare", "@full", "--out", "OUT"), 2,
         "it holds none (it holds '.txt' files)"),
    Case("predict-empty-folder", ("predict", "@model.pt", "@nothing"), 2,
         "it holds none (it is empty)"),
    Case("image-class-folder-empty", ("compare", "@imgs_emptyclass", "--out", "OUT"), 2,
         "must contain images"),
    Case("image-corrupt", ("compare", "@imgs_corrupt", "--out", "OUT"), 2,
         "must be a readable PNG/JPEG/TIFF/BMP image"),
    Case("image-sizes-differ", ("compare", "@imgs_sizes", "--out", "OUT"), 2,
         "Pass --resize N"),
    Case("target-for-images", ("compare", "@imgs_sizes", "-t", "label", "--out", "OUT"), 2,
         "target must not be set for image data"),
    # FCS
    Case("fcs-folder-without-labels", ("compare", "@fcs_nolabels", "--out", "OUT"), 2,
         "must come with labels"),
    Case("fcs-sheet-names-missing-file", ("compare", "@fcs_missing", "--sample-sheet",
                                          "@fcs_missing/sheet.csv", "--out", "OUT"), 2,
         "names file 's9.fcs', which must exist"),
    Case("fcs-sheet-column-typo", ("compare", "@fcs_pateint", "--sample-sheet",
                                   "@fcs_pateint/sheet.csv", "--out", "OUT"), 2,
         "did you mean 'patient'?"),
    Case("fcs-sheet-without-label", ("compare", "@fcs_nolabelcol", "--sample-sheet",
                                     "@fcs_nolabelcol/sheet.csv", "--out", "OUT"), 2,
         "must have columns file,label[,patient]"),
    Case("fcs-channels-differ", ("compare", "@fcs_channels", "--out", "OUT"), 2,
         "FCS files must share their channels"),
    Case("fcs-empty-file", ("compare", "@fcs_empty", "--out", "OUT"), 2,
         "must not be empty; got 0 bytes"),
    Case("fcs-corrupt-file", ("compare", "@fcs_corrupt", "--out", "OUT"), 2,
         "must be a readable FCS 2.0/3.0/3.1 file"),
    # predict
    Case("predict-missing-model", ("predict", "nowhere.pt", "@cells.csv"), 2,
         "model file must exist"),
    Case("predict-corrupt-model", ("predict", "@corrupt.pt", "@cells.csv"), 2,
         "must be a cellbench checkpoint"),
    Case("predict-crafted-model", ("predict", "@crafted.pt", "@cells.csv"), 2,
         "must hold a complete cellbench model; it lacks"),
    Case("predict-missing-columns", ("predict", "@model.pt", "@nocols.csv"), 2,
         "lacks 'CD2'"),
    Case("predict-nan-rows", ("predict", "@model.pt", "@nan.csv"), 2, "Pass --dropna"),
    Case("predict-out-is-a-folder", ("predict", "@model.pt", "@cells.csv", "--out", "@full"),
         2, "must be a file path for the CSV; it is a folder"),
    Case("predict-table-with-resize", ("predict", "@model.pt", "@cells.csv", "--resize", "8"),
         2, "--resize must not be set for a table"),
    Case("predict-images-with-a-table-model", ("predict", "@model.pt", "@imgs_sizes"), 2,
         "was trained on a table"),
    # other commands
    Case("summary-bad-input", ("summary", "mlp", "--input", "0x2x2"), 2,
         "--input must be CxHxW"),
    Case("report-on-a-plain-folder", ("report", "@full"), 2, "must"),
    Case("tune-storage-not-a-url", ("tune", "@cells.csv", *TG, "--model", "lda", "--storage",
                                    "redis://x", "--out", "OUT"), 2,
         "storage must be a database URL"),
    Case("tune-timeout-typo", ("tune", "@cells.csv", *TG, "--model", "lda", "--timeout",
                               "5x", "--out", "OUT"), 2, "--timeout must be a positive duration"),
    Case("doctor-budget-typo", ("doctor", "@cells.csv", *TG, "--budget", "10x", "--out",
                                "OUT"), 2,
         "--budget must be a positive duration like 90s, 30m or 2h; got '10x'"),
    Case("doctor-budget-negative", ("doctor", "@cells.csv", *TG, "--budget", "-5m", "--out",
                                    "OUT"), 2, "--budget must be a positive duration"),
    Case("doctor-missing-target", ("doctor", "@cells.csv", "-t", "nolabel", "--out", "OUT"),
         2, "target column must be one of the table's columns; got 'nolabel'"),
    Case("doctor-unknown-model", ("doctor", "@cells.csv", *TG, "--model", "foo(bar=1)",
                                  "--out", "OUT"), 2, "Unknown model 'foo'"),
    Case("doctor-table-model-on-images", ("doctor", "@ok.npz", "--model", "mlp(width=8)",
                                          "--out", "OUT"), 2,
         "model 'mlp' takes tabular input and cannot train on images"),
    Case("tune-space-missing", ("tune", "@cells.csv", *TG, "--model", "lda", "--space",
                                "nowhere.yaml", "--out", "OUT"), 2,
         "--space must be a YAML file"),
    # data that trains, but must not pass silently
    Case("label-conflict", ("compare", "@conflict.csv", *TG, "--models", "lda", "--out",
                            "OUT", "--quiet"), 0, "share their exact feature values", "done"),
    Case("label-mix-per-sample", ("compare", "@mix.csv", *T, "-g", "sample", "--models",
                                  "lda", "--cv", "3", "--out", "OUT", "--quiet"), 0,
         "label mix differs wildly", "done"),
    Case("diverged-train", (*TRAIN, "--model", "mlp(width=8)", "--optimizer", "sgd", "--lr",
                            "1e6", "--max-epochs", "3"), 1, "mlp failed: diverged", "done"),
    Case("saved-row-index-as-feature", ("compare", "@indexed.csv", *TG, "--models", "lda",
                                        "--out", "OUT", "--quiet"), 0,
         "not biology: drop it with --drop 'Unnamed: 0'.", "done"),
    Case("failed-reference", ("compare", "@cells.csv", *TG, "--models",
                              "lda,logreg,boom=mlp(lr=1e6)", "--reference", "boom",
                              "--max-epochs", "2", "--out", "OUT", "--quiet"), 0,
         "boom: not tested, its training failed (diverged", "done"),
    Case("exclude-label-typo", ("compare", "@cells.csv", *TG, "--models", "lda",
                                "--exclude-labels", "typ0", "--out", "OUT", "--quiet"), 0,
         "exclude_labels 'typ0' match no row", "done"),
    Case("train-without-a-test-part", ("train", "@cells.csv", *TG, "--model", "lda",
                                       "--test-size", "0", "--out", "OUT", "--quiet"), 0,
         "no test part (--test-size 0)", "done"),
    Case("given-split-is-described-as-given", ("compare", "@split_ok.csv", *TG,
                                               "--split-column", "part", "--models", "lda",
                                               "--out", "OUT", "--quiet"), 0,
         "(as given by the split column, grouped by 'donor')", "done"),
    Case("within-groups-one-class", ("compare", "@puredonor.csv", *TG, "--within-groups",
                                     "--out", "OUT"), 2,
         "every donor must hold at least 2 classes to be split on its own (--within-groups)"),
    Case("groups-is-target", ("compare", "@cells.csv", "-t", "label", "-g", "label", "--out",
                              "OUT"), 2,
         "groups column must differ from the target column; got 'label' for both"),
    Case("val-size-0", ("compare", "@cells.csv", *TG, "--models", "lda", "--cv", "3",
                        "--val-size", "0", "--out", "OUT", "--quiet"), 0,
         "no validation part (--val-size 0)", "done"),
]


# -- the runner ----------------------------------------------------------------------------


def _build(name: str, tmp: Path) -> Path:
    path = tmp / name
    if name.startswith("@"):  # a finished run
        path = tmp / name[1:]
        if not path.exists():
            _finished(path)
        return path
    root = tmp / name.split("/")[0]
    if not root.exists():
        BUILD[name.split("/")[0]](root)
    return path


def _snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative names ("nowhere.csv") stay in the test's folder
    out = tmp_path / "run"
    args = []
    for arg in case.args:
        if arg == "OUT":
            args.append(str(out))
        elif arg.startswith("@"):
            built = _build(arg[1:], tmp_path)
            if arg.startswith("@@"):
                out = built
            args.append(str(built))
        else:
            args.append(arg)
    before = _snapshot(out) if case.state == "kept" else None
    result = runner.invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{case.id}: {type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in result.output
    assert result.exit_code == case.code, text
    assert case.fragment in text, text
    if case.code == 2:
        assert "error:" in text
    if case.state == "none":
        assert not (tmp_path / "run").exists(), f"{case.id} left a run directory"
    elif case.state == "done":
        assert any((out / name).is_file() for name in ("results.json", "metrics.json"))
    else:
        assert _snapshot(out) == before, f"{case.id} changed the finished run"


def test_a_run_directory_in_use_is_refused_and_kept(tmp_path):
    """Two processes on one --out: the second says so instead of training units twice."""
    from cellbench._config import RunConfig
    from cellbench.experiment import open_run_dir

    _finished(tmp_path / "run")
    before = _snapshot(tmp_path / "run")
    with open_run_dir(tmp_path / "runs2", RunConfig()):
        pass  # a lock is released when its job ends
    cfg = RunConfig.from_yaml((tmp_path / "run" / "config.yaml").read_text())
    with open_run_dir(tmp_path / "run", cfg):  # another job holds the directory
        before = _snapshot(tmp_path / "run")
        result = runner.invoke(app, ["compare", str(tmp_path / "cells.csv"), *TG,
                                     "--models", "lda", "--out", str(tmp_path / "run")])
        after = _snapshot(tmp_path / "run")
    assert result.exit_code == 2 and "must not be in use by another job" in " ".join(
        result.output.split())
    assert after == before


def test_the_suite_is_large_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_a_gzip_table_that_is_fine_loads(tmp_path):
    """The compressed twin of the broken-gzip case, so that case fails for its reason."""
    with gzip.open(tmp_path / "cells.csv.gz", "wt") as fh:
        _table().to_csv(fh, index=False)
    result = runner.invoke(app, ["compare", str(tmp_path / "cells.csv.gz"), *TG, "--models",
                                 "lda", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
