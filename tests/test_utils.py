"""Small shared helpers: the .npz writer and the heap settings of the command line."""

from __future__ import annotations

import io
import sys
import types

import numpy as np

from cellbench._utils import NpzWriter, map_large_buffers, release_free_memory


def test_npz_writer_reads_back_as_np_savez_writes():
    arrays = dict(index=np.arange(3 * (1 << 18)), proba=np.random.default_rng(0).random((999, 8)),
                  empty=np.zeros((0, 8)), text=np.array(["x", "yy"]),
                  objects=np.array([1, "a"], dtype=object), scalar=np.float32(3.5),
                  fortran=np.asfortranarray(np.arange(15.0).reshape(5, 3)),
                  strided=np.arange(40.0).reshape(10, 4)[:, ::2])
    ours, theirs = io.BytesIO(), io.BytesIO()
    with NpzWriter(ours) as npz:  # array by array, as run_unit writes them
        for name, value in arrays.items():
            npz.add(**{name: value})
    np.savez(theirs, **arrays)
    ours.seek(0)
    theirs.seek(0)
    with np.load(ours, allow_pickle=True) as a, np.load(theirs, allow_pickle=True) as b:
        assert sorted(a.files) == sorted(b.files) == sorted(arrays)
        for name in arrays:
            assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
            np.testing.assert_array_equal(a[name], b[name])


def test_heap_settings_are_harmless_calls():
    map_large_buffers()  # glibc: a setting; elsewhere nothing
    release_free_memory()
    assert np.ones(1 << 20).sum() == 1 << 20  # large buffers still allocate and free


def test_release_free_memory_empties_arrows_pool_once_pyarrow_is_loaded(monkeypatch):
    """The Parquet reader decodes pages with Arrow's default pool (mimalloc), which keeps
    freed pages cached; release_free_memory must hand them back."""
    released = []

    class Pool:
        def release_unused(self):
            released.append(True)

    monkeypatch.setitem(sys.modules, "pyarrow",
                        types.SimpleNamespace(default_memory_pool=lambda: Pool()))
    release_free_memory()
    assert released == [True]
    monkeypatch.delitem(sys.modules, "pyarrow")
    release_free_memory()  # without pyarrow loaded: nothing to release, no import
    assert released == [True] and "pyarrow" not in sys.modules
