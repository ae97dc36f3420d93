"""AnnData (.h5ad) input: X or a layer as features, obs columns as target and groups."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from cellbench.data import load_table
from cellbench.exceptions import DataError, InvalidParameterError, MissingDependencyError

ad = pytest.importorskip("anndata")
sp = pytest.importorskip("scipy.sparse")
h5py = pytest.importorskip("h5py")

from cellbench.data.anndata_io import H5adFile, read_anndata  # noqa: E402


def make_anndata(table: pd.DataFrame, sparse: bool = False):
    """The tiny table as an AnnData: markers in X (and x2 in layer 'raw'), label/donor in obs."""
    markers = [c for c in table.columns if c.startswith("CD")]
    X = table[markers].to_numpy(np.float32, copy=True)
    X[np.abs(X) < 0.5] = 0  # some zeros, so a sparse X is sparse
    obs = pd.DataFrame({"label": pd.Categorical(table["label"]),
                        "donor": table["donor"].to_numpy(dtype=object),
                        "n_events": np.arange(len(table)),
                        "note": np.array(["x"] * len(table), dtype=object)},
                       index=pd.Index([f"cell{i}" for i in range(len(table))], dtype=object))
    adata = ad.AnnData(X=sp.csr_matrix(X) if sparse else X, obs=obs,
                       var=pd.DataFrame(index=pd.Index(markers, dtype=object)))
    adata.layers["raw"] = sp.csr_matrix(X * 2) if sparse else X * 2
    return adata


@pytest.fixture(params=["dense", "sparse"])
def h5ad(request, tmp_path, tiny_table):
    adata = make_anndata(tiny_table, sparse=request.param == "sparse")
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return path, adata


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def test_load_table_reads_x_and_obs_and_never_takes_obs_as_features(h5ad):
    path, adata = h5ad
    ds = load_table(path, target="label", groups="donor")
    assert ds.X.dtype == np.float32 and ds.X.shape == (300, 12)
    assert ds.feature_names == list(adata.var_names)  # n_events (numeric obs) is no feature
    np.testing.assert_array_equal(ds.X, _dense(adata.X))
    assert ds.classes == ["type0", "type1", "type2"] and ds.group_name == "donor"
    assert len(np.unique(ds.groups)) == 12
    raw = load_table(path, target="label", groups="donor", layer="raw")
    np.testing.assert_array_equal(raw.X, 2 * _dense(adata.X))
    from_object = load_table(adata, target="label", groups="donor")
    np.testing.assert_array_equal(from_object.X, ds.X)


def test_chunked_reading_gives_what_anndata_reads_in_memory_and_backed(h5ad, monkeypatch):
    import cellbench.data.anndata_io as anndata_io

    path, _ = h5ad
    monkeypatch.setattr(anndata_io, "CHUNK_ROWS", 7)  # many chunks, a short last one
    rows = read_anndata(path)
    memory = ad.read_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    np.testing.assert_array_equal(rows.X, _dense(memory.X).astype(np.float32))
    np.testing.assert_array_equal(rows.X, _dense(backed.X[:]).astype(np.float32))
    assert rows.feature_names == list(memory.var_names)
    assert list(rows.obs.columns) == list(memory.obs.columns)
    assert (rows.obs["label"].astype(str).to_numpy() == memory.obs["label"].astype(str)).all()
    backed.file.close()

    pick = np.array([250, 3, 3, 17, 0])  # any order, repeats: read sorted, given back in order
    some = read_anndata(path, layer="raw", columns=["donor"], rows=pick)
    np.testing.assert_array_equal(some.X, 2 * _dense(memory.X)[pick])
    assert list(some.obs.columns) == ["donor"]
    assert some.obs["donor"].tolist() == memory.obs["donor"].iloc[pick].tolist()
    mask = np.zeros(300, bool)
    mask[[5, 9]] = True
    np.testing.assert_array_equal(read_anndata(path, rows=mask).X, _dense(memory.X)[[5, 9]])
    with H5adFile(path) as h5:
        np.testing.assert_array_equal(h5.features(slice(290, 300)), _dense(memory.X)[290:])
        assert h5.obs(["n_events"], slice(0, 3))["n_events"].tolist() == [0, 1, 2]


def test_an_h5ad_trains_through_the_cli(tmp_path, h5ad):
    from typer.testing import CliRunner

    from cellbench.cli import app

    path, _ = h5ad
    result = CliRunner().invoke(app, ["train", str(path), "-t", "label", "-g", "donor", "-m",
                                      "lda", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model.pt").is_file()


def test_a_missing_layer_or_obs_column_is_named(h5ad):
    path, _ = h5ad
    with pytest.raises(DataError, match=r"layer must be one of the layers of .*got 'rwa'\. "
                                        r"Did you mean 'raw'\? Its layers: 'raw'"):
        read_anndata(path, layer="rwa")
    with pytest.raises(DataError, match=r"obs column must be one of the obs columns .*got "
                                        r"'doner'\. Did you mean 'donor'\?"):
        read_anndata(path, columns=["doner"])
    with pytest.raises(DataError, match=r"target column must be one of the table's columns; "
                                        r"got 'cell_type'"):
        load_table(path, target="cell_type", groups="donor")
    with pytest.raises(InvalidParameterError, match=r"layer must be None for 'x\.csv'"):
        load_table("x.csv", layer="raw")


def test_a_non_numeric_x_is_refused(tmp_path, tiny_table):
    path = tmp_path / "text.h5ad"
    make_anndata(tiny_table).write_h5ad(path)
    with h5py.File(path, "r+") as f:  # X as strings: anndata itself would not write it
        del f["X"]
        f.create_dataset("X", data=np.full((300, 12), "high", dtype=object),
                         dtype=h5py.string_dtype())
    with pytest.raises(DataError, match=r"X of .*text\.h5ad' must be numeric; got dtype"):
        load_table(path, target="label")


def test_an_h5ad_without_obs_columns_says_where_labels_come_from(tmp_path, tiny_table):
    adata = make_anndata(tiny_table)
    adata.obs = adata.obs[[]]
    path = tmp_path / "bare.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(DataError, match=r"target and groups come from its obs columns; "
                                        r".*bare\.h5ad' has no obs columns"):
        load_table(path, target="label")


def test_a_half_written_or_cut_h5ad_is_named_so(tmp_path, tiny_table):
    path = tmp_path / "cells.h5ad"
    make_anndata(tiny_table).write_h5ad(path)
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="The file is cut short"):
        load_table(cut, target="label")
    with h5py.File(path, "r+") as f:  # what a writer that failed after X and obs leaves
        del f["var"]
        del f["obs"].attrs["encoding-type"]
    with pytest.raises(DataError, match=r"must be a complete \.h5ad; it lacks 'var': the write"):
        load_table(path, target="label")


def test_obs_and_var_names_must_differ(tmp_path, tiny_table):
    adata = make_anndata(tiny_table)
    adata.obs["CD3"] = 1.0
    path = tmp_path / "clash.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(DataError, match=r"must differ from its var_names.*'CD3'"):
        load_table(path, target="label")


def test_without_anndata_the_error_says_how_to_install_it(h5ad, monkeypatch):
    path, _ = h5ad
    monkeypatch.setitem(sys.modules, "anndata", None)  # import anndata now fails
    with pytest.raises(MissingDependencyError, match=r"cellbench\[anndata\]"):
        load_table(path, target="label")


@pytest.mark.parametrize("options", [
    dict(target="label", groups="donor"),
    dict(target="label", groups="donor", cells_per_sample=10, subsample_seed=3),
    dict(target="label", groups="donor", exclude_labels=["type1"], drop=["CD4"]),
    dict(target="label", features=["CD3", "CD8"], layer="raw"),
])
def test_a_file_loads_as_its_whole_table_would(h5ad, monkeypatch, options):
    """The file path reads obs, draws, then reads only the kept rows' features: the same
    dataset, checks and draw record as the whole table read into a frame."""
    import cellbench.data.io as io

    path, _ = h5ad
    ds = load_table(path, **options)
    monkeypatch.setattr(io, "_load_h5ad", lambda *a, **k: None)  # the whole-table path
    whole = load_table(path, **options)
    np.testing.assert_array_equal(ds.X, whole.X)
    np.testing.assert_array_equal(ds.y, whole.y)
    assert ds.classes == whole.classes and ds.feature_names == whole.feature_names
    assert (ds.groups is None) == (whole.groups is None)
    if ds.groups is not None:
        assert ds.groups.astype(str).tolist() == whole.groups.astype(str).tolist()
    assert ds.drawn == whole.drawn
    assert [i.code for i in ds.issues] == [i.code for i in whole.issues]


def test_only_the_drawn_rows_and_wanted_columns_are_held(h5ad, monkeypatch):
    import cellbench.data.anndata_io as anndata_io

    path, _ = h5ad
    monkeypatch.setattr(anndata_io, "CHUNK_ROWS", 16)
    held = []
    features = anndata_io.H5adFile.features

    def spy(self, rows):
        block = features(self, rows)
        held.append(block.shape[0])
        return block

    monkeypatch.setattr(anndata_io.H5adFile, "features", spy)
    ds = load_table(path, target="label", groups="donor", cells_per_sample=5,
                    features=["CD3", "CD8"])
    assert ds.X.shape == (60, 2)  # 12 donors x 5 cells, 2 of 12 markers
    assert sum(held) == 60 and max(held) <= 16  # never the whole matrix
