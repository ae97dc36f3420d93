"""``predict`` on tables in chunks: the same rows whatever the chunk size, memory bounded by it,
and an .h5ad input copied with its predictions."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellbench.cli import app
from cellbench.exceptions import DataError, RunDirectoryError
from cellbench.experiment import run_predict
from cellbench.train.trainer import FittedModel


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An LDA trained on the tiny table (300 cells, 12 markers, 3 classes)."""
    from synthetic import make_table

    root = tmp_path_factory.mktemp("model")
    make_table().to_csv(root / "cells.csv", index=False)
    result = CliRunner().invoke(app, ["train", str(root / "cells.csv"), "-t", "label", "-g",
                                      "donor", "-m", "lda", "--out", str(root / "run"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "run" / "model.pt"


def _markers(table):
    return [c for c in table.columns if c.startswith("CD")]


def _source(kind, tmp_path, table, fcs_writer):
    """The tiny table as a CSV, a Parquet file, a folder of FCS files or an .h5ad."""
    if kind == "csv":
        table.to_csv(tmp_path / "cells.csv", index=False)
        return tmp_path / "cells.csv"
    if kind == "parquet":
        table.to_parquet(tmp_path / "cells.parquet", row_group_size=64)
        return tmp_path / "cells.parquet"
    if kind == "fcs":  # one subfolder per class, two files per class
        for label, rows in table.groupby("label"):
            (tmp_path / "fcs" / label).mkdir(parents=True)
            for i, part in enumerate(np.array_split(rows[_markers(table)].to_numpy(), 2)):
                fcs_writer(tmp_path / "fcs" / label / f"{label}_{i}.fcs", part, _markers(table))
        return tmp_path / "fcs"
    ad = pytest.importorskip("anndata")
    obs = pd.DataFrame({"label": pd.Categorical(table["label"]),
                        "donor": table["donor"].to_numpy(dtype=object)},
                       index=pd.Index([f"cell{i}" for i in range(len(table))], dtype=object))
    adata = ad.AnnData(X=table[_markers(table)].to_numpy(np.float32), obs=obs,
                       var=pd.DataFrame(index=pd.Index(_markers(table), dtype=object)))
    adata.write_h5ad(tmp_path / "cells.h5ad")
    return tmp_path / "cells.h5ad"


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    proba = [c for c in a.columns if c.startswith("proba_")]
    pd.testing.assert_frame_equal(a.drop(columns=proba), b.drop(columns=proba))
    np.testing.assert_allclose(a[proba].to_numpy(), b[proba].to_numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["csv", "parquet", "fcs", "h5ad"])
def test_small_chunks_give_the_rows_one_chunk_gives(kind, model, tmp_path, tiny_table,
                                                    fcs_writer):
    data = _source(kind, tmp_path, tiny_table, fcs_writer)
    whole = run_predict(model, data, tmp_path / "whole.csv")
    small = run_predict(model, data, tmp_path / "small.csv", chunk_rows=7)
    _same(pd.read_csv(tmp_path / "whole.csv"), pd.read_csv(tmp_path / "small.csv"))
    _same(whole.frame, small.frame)
    assert whole.n_rows == small.n_rows == 300 and whole.counts == small.counts
    assert whole.accuracy == small.accuracy and whole.accuracy > 0.7
    assert whole.accuracy_text == small.accuracy_text and whole.notes == small.notes
    if kind == "fcs":
        assert set(pd.read_csv(tmp_path / "small.csv")["sample"]) == {
            f"type{k}_{i}" for k in range(3) for i in range(2)}
    unkept = run_predict(model, data, tmp_path / "unkept.csv", chunk_rows=7, keep_frame=False)
    assert unkept.frame is None and unkept.accuracy == whole.accuracy
    assert unkept.counts == whole.counts and unkept.n_rows == 300


def test_the_model_never_sees_more_rows_than_a_chunk(model, tmp_path, tiny_table, monkeypatch):
    """Memory bound, not timed: every batch the model is given is at most one chunk."""
    big = pd.concat([tiny_table] * 4, ignore_index=True)  # 1,200 rows
    big.to_parquet(tmp_path / "big.parquet", row_group_size=500)
    seen = []
    original = FittedModel.predict_proba

    def recording(self, X, *args, **kwargs):
        seen.append(len(X))
        return original(self, X, *args, **kwargs)

    monkeypatch.setattr(FittedModel, "predict_proba", recording)
    done = run_predict(model, tmp_path / "big.parquet", tmp_path / "p.csv", chunk_rows=64)
    seen = seen[1:]  # the first is load_model's check on one row of zeros
    assert max(seen) <= 64 and sum(seen) == 1200 and done.n_rows == 1200
    assert done.frame is not None and len(done.frame) == 1200  # small: kept


def test_large_inputs_keep_no_frame_in_memory(model, tmp_path, tiny_table, monkeypatch):
    import cellbench.experiment.predict as predict

    monkeypatch.setattr(predict, "KEEP_ROWS", 100)
    tiny_table.to_csv(tmp_path / "cells.csv", index=False)
    done = run_predict(model, tmp_path / "cells.csv", tmp_path / "p.csv", chunk_rows=32)
    assert done.frame is None and done.n_rows == 300 and sum(done.counts.values()) == 300
    assert len(pd.read_csv(tmp_path / "p.csv")) == 300 and done.accuracy is not None
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "cells.csv"),
                                      "--out", str(tmp_path / "q.csv")])
    assert result.exit_code == 0 and "wrote 300 predictions" in result.output


def test_dropna_rows_and_nan_errors_span_chunks(model, tmp_path, tiny_table):
    table = tiny_table.copy()
    table.loc[[4, 250], "CD3"] = np.nan
    table.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(DataError, match=r"2 rows of .* have NaN or inf \(first at row 5\)\. "
                                        r"Pass --dropna"):
        run_predict(model, tmp_path / "nan.csv", tmp_path / "p.csv", chunk_rows=7)
    assert not (tmp_path / "p.csv").exists() and list(tmp_path.glob(".p.csv*")) == []
    done = run_predict(model, tmp_path / "nan.csv", tmp_path / "p.csv", chunk_rows=7,
                       dropna=True)
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame["predicted"].isna().tolist() == [i in (4, 250) for i in range(300)]
    assert done.n_rows == 300 and sum(done.counts.values()) == 298


def test_a_non_number_is_named_with_its_column_and_row(model, tmp_path, tiny_table):
    table = tiny_table.astype({"CD5": object})
    table.loc[123, "CD5"] = "12,5"
    table.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(DataError, match=r"feature columns of .* must be numeric; column 'CD5' "
                                        r"holds '12,5' in row 124"):
        run_predict(model, tmp_path / "text.csv", tmp_path / "p.csv", chunk_rows=50)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_h5ad_is_copied_with_its_predictions_and_left_unchanged(model, tmp_path, tiny_table,
                                                                   fcs_writer):
    ad = pytest.importorskip("anndata")
    data = _source("h5ad", tmp_path, tiny_table, fcs_writer)
    before = _digest(data)
    csv = run_predict(model, data, tmp_path / "p.csv")
    done = run_predict(model, data, tmp_path / "out.h5ad", chunk_rows=7)
    assert _digest(data) == before and done.out == tmp_path / "out.h5ad"
    copy = ad.read_h5ad(tmp_path / "out.h5ad")
    predicted = copy.obs["cellbench_predicted"]
    assert isinstance(predicted.dtype, pd.CategoricalDtype)
    assert predicted.astype(str).tolist() == csv.frame["predicted"].tolist()
    assert list(copy.uns["cellbench_classes"]) == ["type0", "type1", "type2"]
    proba = copy.obsm["cellbench_proba"]
    assert proba.dtype == np.float32 and proba.shape == (300, 3)
    np.testing.assert_allclose(proba, csv.frame.filter(like="proba_").to_numpy(), rtol=1e-6)
    np.testing.assert_array_equal(copy.X, ad.read_h5ad(data).X)  # the rest is the input's
    assert list(copy.obs.columns) == [*ad.read_h5ad(data).obs.columns, "cellbench_predicted"]

    again = run_predict(model, tmp_path / "out.h5ad", tmp_path / "again.h5ad")  # replaced
    assert ad.read_h5ad(tmp_path / "again.h5ad").obs.columns.tolist().count(
        "cellbench_predicted") == 1 and again.n_rows == 300
    with pytest.raises(RunDirectoryError, match="must not be the input data"):
        run_predict(model, data, data)
    tiny_table.to_csv(tmp_path / "cells.csv", index=False)
    with pytest.raises(DataError, match=r"must be a CSV unless the data is an \.h5ad file"):
        run_predict(model, tmp_path / "cells.csv", tmp_path / "x.h5ad")
    assert _digest(data) == before


class _NotData:
    """A pickled object: torch.load(weights_only=True) refuses it."""


def test_a_train_run_folder_stands_for_its_model_and_bad_files_are_named_safely(model,
                                                                                 tmp_path,
                                                                                 tiny_table):
    import torch

    tiny_table.to_csv(tmp_path / "cells.csv", index=False)
    by_file = run_predict(model, tmp_path / "cells.csv", tmp_path / "a.csv")
    by_run = run_predict(model.parent, tmp_path / "cells.csv", tmp_path / "b.csv")
    _same(pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv"))
    assert by_run.n_rows == by_file.n_rows == len(tiny_table)

    (tmp_path / "empty_run").mkdir()
    with pytest.raises(RunDirectoryError, match=r"must be a model\.pt file or a run directory "
                                                r"holding one; got the folder"):
        run_predict(tmp_path / "empty_run", tmp_path / "cells.csv", tmp_path / "c.csv")
    torch.save({"format": _NotData()}, tmp_path / "pickled.pt")
    with pytest.raises(RunDirectoryError, match="must be a cellbench checkpoint") as err:
        run_predict(tmp_path / "pickled.pt", tmp_path / "cells.csv", tmp_path / "c.csv")
    assert "never loaded (they could run code)" in str(err.value)
    assert "weights_only" not in str(err.value)  # never PyTorch's advice to load unsafely


def test_out_is_a_new_csv_never_the_input(model, tmp_path, tiny_table):
    tiny_table.to_csv(tmp_path / "cells.csv", index=False)
    before = _digest(tmp_path / "cells.csv")
    with pytest.raises(RunDirectoryError, match="must not be the input data"):
        run_predict(model, tmp_path / "cells.csv", tmp_path / "cells.csv")
    with pytest.raises(DataError, match=r"must end in \.csv .*got '\.parquet'"):
        run_predict(model, tmp_path / "cells.csv", tmp_path / "p.parquet")
    assert _digest(tmp_path / "cells.csv") == before and not (tmp_path / "p.parquet").exists()
