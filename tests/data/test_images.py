"""Loading images: folders, sample sheets, TIFF, npz; every bad input with a clear message."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from cellbench.data import ImageNormalizer, PixelFeatures, load_images, read_image
from cellbench.data.images import is_image_source, resize_images
from cellbench.exceptions import CellbenchWarning, DataError


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _class_folder(root, n=6, size=16, mode="L", seed=0):
    rng = np.random.default_rng(seed)
    for label in ("infected", "healthy"):
        for i in range(n):
            shape = (size, size) if mode == "L" else (size, size, 3)
            _png(root / label / f"C{i % 3}P{i}_{label}_{i}.png",
                 rng.integers(0, 255, shape, dtype=np.uint8))
    return root


def test_class_folders_load_into_one_uint8_array(tmp_path):
    ds = load_images(_class_folder(tmp_path))
    assert ds.kind == "image" and ds.X.shape == (12, 1, 16, 16) and ds.X.dtype == np.uint8
    assert ds.classes == ["healthy", "infected"] and list(np.bincount(ds.y)) == [6, 6]
    assert is_image_source(tmp_path) and not is_image_source(tmp_path / "nope")


def test_images_one_level_below_the_class_folders_take_the_subfolder_as_group(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("healthy", "infected"):
        for slide in ("s1", "s2", "s3"):
            for i in range(2):
                _png(tmp_path / label / slide / f"{i}.png",
                     rng.integers(0, 255, (8, 8), dtype=np.uint8))
    assert is_image_source(tmp_path)
    ds = load_images(tmp_path)
    assert ds.X.shape == (12, 1, 8, 8) and list(np.bincount(ds.y)) == [6, 6]
    assert ds.group_name == "subfolder" and sorted(set(ds.groups)) == ["s1", "s2", "s3"]
    assert list(ds.groups[:2]) == ["s1", "s1"]


def test_rgb_images_become_three_channels(tmp_path):
    ds = load_images(_class_folder(tmp_path, mode="RGB"))
    assert ds.X.shape == (12, 3, 16, 16)
    img = np.asarray(Image.open(sorted((tmp_path / "healthy").iterdir())[0]))
    np.testing.assert_array_equal(ds.X[0], np.moveaxis(img, -1, 0))


def test_group_regex_takes_the_first_group(tmp_path):
    ds = load_images(_class_folder(tmp_path), group_regex=r"^(C\d+)P")
    assert sorted(set(ds.groups)) == ["C0", "C1", "C2"]
    with pytest.raises(DataError, match=r"group regex '\^X' must match every file name; it "
                                        r"does not match 'C0P0_healthy_0\.png'"):
        load_images(tmp_path, group_regex="^X")


def test_sample_sheet_with_groups(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        _png(tmp_path / f"img{i}.png", rng.integers(0, 255, (10, 10), dtype=np.uint8))
        rows.append({"file": f"img{i}.png", "label": "a" if i < 4 else "b",
                     "slide": f"S{i // 2}"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    ds = load_images(tmp_path, sample_sheet=tmp_path / "labels.csv")
    assert ds.group_name == "group" and sorted(set(ds.groups)) == ["S0", "S1", "S2", "S3"]
    assert ds.X.shape == (8, 1, 10, 10)


def test_sixteen_bit_tiff_and_multipage_channels(tmp_path):
    data = np.random.default_rng(0).integers(0, 60000, (2, 12, 12), dtype=np.uint16)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            tifffile.imwrite(tmp_path / label / f"{i}.tif", data)  # two pages
    ds = load_images(tmp_path)
    assert ds.X.dtype == np.uint16 and ds.X.shape == (6, 2, 12, 12)
    np.testing.assert_array_equal(ds.X[0], data)
    rgb = np.random.default_rng(1).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert read_image(tmp_path / "rgb.tif").shape == (3, 12, 12)


def test_sixteen_bit_png(tmp_path):
    array = (np.arange(100, dtype=np.uint16) * 600).reshape(10, 10)
    path = _png(tmp_path / "x.png", array)
    out = read_image(path)
    assert out.dtype == np.uint16 and out.max() == 59400


def test_medmnist_npz_keeps_the_given_split(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for part, n in (("train", 20), ("val", 5), ("test", 6)):
        arrays[f"{part}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{part}_labels"] = rng.integers(0, 2, (n, 1))
    np.savez(tmp_path / "m.npz", **arrays)
    ds = load_images(tmp_path / "m.npz")
    assert ds.X.shape == (31, 1, 28, 28) and list(np.unique(ds.split)) == ["test", "train", "val"]


def test_generic_npz_with_group_key_and_label_names(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "g.npz", X=rng.integers(0, 255, (12, 20, 20, 3), dtype=np.uint8),
             y=np.arange(12) % 2, slide_id=np.repeat(["s1", "s2", "s3"], 4),
             label_names=np.array(["0=Uninfected", "1=Parasitized"]))
    ds = load_images(tmp_path / "g.npz", groups="slide_id")
    assert ds.X.shape == (12, 3, 20, 20) and ds.classes == ["Uninfected", "Parasitized"]
    assert ds.group_name == "slide_id"
    with pytest.raises(DataError, match=r"groups key 'patient' must be in npz file"):
        load_images(tmp_path / "g.npz", groups="patient")


# -- bad input -----------------------------------------------------------------------------


def test_mixed_sizes_list_examples_and_suggest_resize(tmp_path):
    _class_folder(tmp_path)
    _png(tmp_path / "healthy" / "big.png", np.zeros((20, 24), np.uint8))
    with pytest.raises(DataError, match=r"images must all have the same size; got 16x16 \(12 "
                                        r"files, .*\); 24x20 \(1 files, e.g. 'big\.png'\)\. Pass "
                                        r"--resize N"):
        load_images(tmp_path)
    ds = load_images(tmp_path, resize=16)
    assert ds.X.shape == (13, 1, 16, 16)


def test_resize_is_antialiased_bilinear_and_keeps_the_type():
    big = np.zeros((1, 1, 64, 64), np.uint16)
    big[..., ::2, :] = 1000  # stripes: antialiasing averages them instead of aliasing
    small = resize_images(big, 16)
    assert small.dtype == np.uint16 and small.shape == (1, 1, 16, 16)
    assert 400 < small.mean() < 600 and small.std() < 50


def test_mixed_channel_counts(tmp_path):
    _class_folder(tmp_path)
    _png(tmp_path / "healthy" / "rgb.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DataError, match=r"same number of channels; got 1 channel\(s\) \(12 files"
                                        r".*3 channel\(s\) \(1 files, e.g. 'rgb\.png'\)"):
        load_images(tmp_path)


def test_mixed_bit_depths(tmp_path):
    _class_folder(tmp_path)
    _png(tmp_path / "healthy" / "deep.png", np.zeros((16, 16), np.uint16) + 300)
    with pytest.raises(DataError, match=r"same bit depth; got uint8 \(12 files.*uint16"):
        load_images(tmp_path)


def test_corrupt_file_is_named_or_skipped_with_a_count(tmp_path):
    _class_folder(tmp_path)
    (tmp_path / "healthy" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"image file '.*broken\.png' must be a readable "
                                        r"PNG/JPEG/TIFF/BMP image.*--skip-bad"):
        load_images(tmp_path)
    with pytest.warns(CellbenchWarning, match=r"Skipped 1 unreadable image files.*'broken\.png'"):
        ds = load_images(tmp_path, skip_bad=True)
    assert ds.n_samples == 12


def test_empty_class_folder(tmp_path):
    _class_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*empty' must contain images"):
        load_images(tmp_path)


def test_label_csv_naming_a_missing_file(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    pd.DataFrame({"file": ["a.png", "gone.png"], "label": ["x", "y"]}).to_csv(
        tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"row 2 names file 'gone\.png', which must exist"):
        load_images(tmp_path, sample_sheet=tmp_path / "labels.csv")


def test_folder_without_class_subfolders_or_sheet(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"one subfolder per class.*--sample-sheet"):
        load_images(tmp_path)


def test_loading_writes_into_one_array_without_per_image_copies(tmp_path):
    """2,000 images of 32x32: peak memory stays near the final array, not a list of copies."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(1000):
            _png(tmp_path / label / f"{i}.png", rng.integers(0, 255, (32, 32), dtype=np.uint8))
    tracemalloc.start()
    ds = load_images(tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ds.X.nbytes == 2000 * 32 * 32
    assert peak < ds.X.nbytes + 1_500_000  # the array plus bookkeeping, not 2x the images


# -- preprocessing ----------------------------------------------------------------------------


def test_normalizer_scales_by_type_then_standardizes_per_channel():
    import torch

    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (50, 3, 8, 8), dtype=np.uint8)
    norm = ImageNormalizer().fit(X)
    out = norm.input_fn()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-3)
    unit = ImageNormalizer("unit").fit(X).input_fn()(torch.from_numpy(X)).numpy()
    assert unit.max() <= 1.0 and unit.min() >= 0
    raw = ImageNormalizer("none").fit(X)
    assert raw.input_fn()(torch.from_numpy(X)).max() > 200
    assert "unscaled" in raw.pixel_scale_issue()
    again = ImageNormalizer.from_state(norm.state_dict())
    np.testing.assert_allclose(again.input_fn()(torch.from_numpy(X)).numpy(), out)


def test_float_images_in_0_255_are_reported():
    X = np.random.default_rng(0).uniform(0, 255, (10, 1, 8, 8)).astype(np.float32)
    assert "0-255 pixels stored as floats" in ImageNormalizer().fit(X).pixel_scale_issue()
    assert ImageNormalizer().fit(X / 255).pixel_scale_issue() is None


def test_pixel_features_for_baselines():
    X = np.random.default_rng(0).integers(0, 255, (20, 1, 50, 50), dtype=np.uint8)
    feats = PixelFeatures(16).fit(X)
    Z = feats.transform(X)
    assert Z.shape == (20, 256)
    np.testing.assert_allclose(PixelFeatures.from_state(feats.state_dict()).transform(X), Z)


def test_warning_free_load_of_a_clean_folder(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CellbenchWarning)
        load_images(_class_folder(tmp_path, n=12))


def test_npz_with_an_object_array_is_refused_with_a_reason(tmp_path):
    np.savez(tmp_path / "o.npz", X=np.zeros((6, 8, 8), np.uint8),
             y=np.array(["a", "b", 1, 2, None, "c"], dtype=object))
    with pytest.raises(DataError, match=r"must hold plain numeric or text arrays; one of its "
                                        r"arrays holds Python objects"):
        load_images(tmp_path / "o.npz")


def test_npz_class_names_are_read_like_label_names(tmp_path):
    np.savez(tmp_path / "c.npz", X=np.zeros((12, 8, 8), np.uint8), y=np.arange(12) % 2,
             class_names=np.array(["healthy", "infected"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_images(tmp_path / "c.npz")
    assert ds.classes == ["healthy", "infected"]


def test_one_hot_npz_labels_are_read_as_classes_and_multi_label_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (12, 8, 8), dtype=np.uint8)
    classes = np.arange(12) % 3
    np.savez(tmp_path / "onehot.npz", X=X, y=np.eye(3, dtype=np.uint8)[classes])
    ds = load_images(tmp_path / "onehot.npz")
    assert list(ds.y) == list(classes) and len(ds.classes) == 3
    multi = np.eye(3, dtype=np.uint8)[classes]
    multi[0, 1] = 1
    np.savez(tmp_path / "multi.npz", X=X, y=multi)
    with pytest.raises(DataError, match=r"key y must hold one label per image; got shape "
                                        r"\(12, 3\), and its rows are not one-hot"):
        load_images(tmp_path / "multi.npz")


def test_hidden_folders_inside_class_folders_are_not_read(tmp_path):
    _class_folder(tmp_path)
    _png(tmp_path / "healthy" / ".ipynb_checkpoints" / "x.png", np.zeros((16, 16), np.uint8))
    ds = load_images(tmp_path)
    assert ds.X.shape[0] == 12 and ds.groups is None
