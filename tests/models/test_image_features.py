"""The image feature extractor (known answers, invariances, chunking) and ``image-lgbm``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import cellbench
from cellbench._config import TrainConfig
from cellbench.data import Dataset, holdout_split
from cellbench.data.image_features import ImageFeatureExtractor
from cellbench.exceptions import InvalidParameterError
from cellbench.experiment import DEFAULT_IMAGE_MODELS
from cellbench.models import MODELS, create_model

EX = ImageFeatureExtractor()


def _features(images: np.ndarray, ex: ImageFeatureExtractor = EX) -> list[dict[str, float]]:
    names = ex.feature_names(images.shape[1])
    return [dict(zip(names, row.tolist(), strict=True)) for row in ex.transform(images)]


def _disc(size: int = 64, radius: float = 15.0, inside: int = 200, outside: int = 20,
          center: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    cy, cx = center or ((size - 1) / 2, (size - 1) / 2)
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    return np.where(disc, inside, outside).astype(np.uint8)[None, None], disc


def _random_images(dtype: str, n: int = 6, shape: tuple[int, ...] = (3, 28, 28),
                   seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.normal(0.5, 0.2, (n, *shape)).astype(np.float32)
    top = np.iinfo(dtype).max
    return rng.integers(0, top, (n, *shape), endpoint=True).astype(dtype)


def test_feature_names_and_count_are_documented():
    per_channel = EX.per_channel_names()
    assert len(per_channel) == 27 and per_channel[:4] == ["mean", "std", "min", "max"]
    assert len(EX.feature_names(1)) == 27 + 8
    names = EX.feature_names(3)
    assert len(names) == 3 * 27 + 8 + 3 == len(set(names))
    assert names[0] == "c0_mean" and "c2_glcm_correlation" in names
    assert names[-3:] == ["corr_c0_c1", "corr_c0_c2", "corr_c1_c2"]
    assert len(ImageFeatureExtractor(rings=6).feature_names(2)) == 2 * 29 + 8 + 1


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 33, 47), (2, 5, 4)])
def test_features_are_finite_for_every_type_and_size(dtype, shape):
    images = _random_images(dtype, shape=shape)
    images[0] = images[0].flat[0]  # one constant image
    features = EX.transform(images)
    assert features.shape == (6, len(EX.feature_names(shape[0])))
    assert features.dtype == np.float32 and np.isfinite(features).all()


def test_constant_image_has_no_spread_texture_edges_or_foreground():
    f = _features(np.full((1, 2, 32, 32), 77, np.uint8))[0]
    for c in ("c0", "c1"):
        assert f[f"{c}_mean"] == pytest.approx(77 / 255, rel=1e-5)
        for name in ("std", "skew", "kurtosis", "glcm_contrast", "grad_mean", "grad_std"):
            assert f[f"{c}_{name}"] == 0, name
        assert f[f"{c}_min"] == f[f"{c}_max"] == f[f"{c}_p50"] == pytest.approx(77 / 255,
                                                                             rel=1e-5)
        assert f[f"{c}_glcm_energy"] == f[f"{c}_glcm_homogeneity"] == 1
        assert f[f"{c}_grad_hist0"] == 1
    assert f["shape_area"] == 0 and f["corr_c0_c1"] == 0


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_intensity_statistics_match_numpy_and_scipy(dtype):
    images = _random_images(dtype, n=3, shape=(2, 20, 30))
    scaled = images.astype(np.float64) / (255 if dtype == "uint8" else 1)
    f = _features(images)
    for i, c in np.ndindex(3, 2):
        pixels = scaled[i, c].ravel()
        got = f[i]
        assert got[f"c{c}_mean"] == pytest.approx(pixels.mean(), rel=1e-5)
        assert got[f"c{c}_std"] == pytest.approx(pixels.std(), rel=1e-4)
        assert got[f"c{c}_skew"] == pytest.approx(stats.skew(pixels), abs=1e-4)
        assert got[f"c{c}_kurtosis"] == pytest.approx(stats.kurtosis(pixels), abs=1e-4)
        for q in (5, 25, 50, 75, 95):
            assert got[f"c{c}_p{q:02d}"] == pytest.approx(np.percentile(pixels, q), rel=1e-5)
    r = np.corrcoef(scaled[0, 0].ravel(), scaled[0, 1].ravel())[0, 1]
    assert f[0]["corr_c0_c1"] == pytest.approx(r, abs=1e-5)


def test_bright_disc_on_dark_gives_its_area_and_round_shape():
    image, disc = _disc()
    f = _features(image)[0]
    assert f["shape_area"] == pytest.approx(disc.mean(), abs=1e-6)
    assert f["c0_mean_in"] == pytest.approx(200 / 255, rel=1e-4)
    assert f["c0_mean_out"] == pytest.approx(20 / 255, rel=1e-4)
    assert f["shape_eccentricity"] == pytest.approx(0, abs=1e-3)
    assert f["shape_centroid_offset"] == pytest.approx(0, abs=1e-6)
    assert f["shape_hu1"] == pytest.approx(1 / (2 * np.pi), rel=0.01)  # a uniform disc
    assert f["c0_ring0"] == pytest.approx(200 / 255, rel=1e-4)
    assert f["c0_ring3"] == pytest.approx(20 / 255, rel=1e-4)
    # a dark cell on a bright background (brightfield): the same mask, by the border rule
    dark = _features(255 - image)[0]
    assert dark["shape_area"] == pytest.approx(disc.mean(), abs=1e-6)
    assert dark["c0_mean_in"] == pytest.approx(55 / 255, rel=1e-4)


def test_an_off_centre_ellipse_is_eccentric_and_offset():
    yy, xx = np.mgrid[0:64, 0:64]
    ellipse = ((yy - 28) / 8.0) ** 2 + ((xx - 36) / 20.0) ** 2 < 1
    f = _features(np.where(ellipse, 180, 30).astype(np.uint8)[None, None])[0]
    assert f["shape_eccentricity"] == pytest.approx(np.sqrt(1 - (8 / 20) ** 2), abs=0.01)
    offset = np.hypot(28 - 31.5, 36 - 31.5) / 32
    assert f["shape_centroid_offset"] == pytest.approx(offset, abs=0.01)
    assert f["shape_area"] == pytest.approx(ellipse.mean(), abs=1e-6)


def _reference_glcm_features(q: np.ndarray, levels: int) -> np.ndarray:
    """Haralick features with Python loops over the pixels (the slow, obvious way)."""
    h, w = q.shape
    out = []
    for dy, dx in ((0, 1), (1, 0), (-1, 1), (1, 1)):
        counts = np.zeros((levels, levels))
        for y in range(h):
            for x in range(w):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    counts[q[y, x], q[y + dy, x + dx]] += 1
        p = counts + counts.T
        p /= p.sum()
        i, j = np.indices(p.shape)
        mu = (p * i).sum()
        var = (p * (i - mu) ** 2).sum()
        out.append([(p * (i - j) ** 2).sum(), (p / (1 + (i - j) ** 2)).sum(),
                    np.sqrt((p ** 2).sum()), (p * (i - mu) * (j - mu)).sum() / var])
    return np.mean(out, axis=0)


@pytest.mark.parametrize("levels", [8, 16])
def test_texture_matches_a_loop_over_pixels(levels):
    rng = np.random.default_rng(1)
    q = rng.integers(0, levels, (9, 11))
    q[0, 0], q[-1, -1] = 0, levels - 1  # the full range: quantising gives q back
    images = (q / (levels - 1)).astype(np.float32)[None, None]
    ex = ImageFeatureExtractor(levels=levels)
    f = _features(images, ex)[0]
    got = [f[f"c0_glcm_{k}"] for k in ("contrast", "homogeneity", "energy", "correlation")]
    np.testing.assert_allclose(got, _reference_glcm_features(q, levels), rtol=1e-5)


def test_rotating_by_90_degrees_leaves_the_features_nearly_unchanged():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:48, 0:48]
    cell = ((yy - 20) / 7.0) ** 2 + ((xx - 27) / 15.0) ** 2 < 1
    images = np.stack([np.where(cell, 170, 40), np.where(cell, 60, 120) + 40 * (xx > 30)])
    images = np.clip(images + rng.normal(0, 12, images.shape), 0, 255).astype(np.uint8)[None]
    base = EX.transform(images)[0]
    for k in (1, 2, 3):
        rotated = EX.transform(np.rot90(images, k, axes=(2, 3)).copy())[0]
        np.testing.assert_allclose(rotated, base, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_chunking_gives_identical_features(dtype):
    images = _random_images(dtype, n=11, shape=(3, 30, 30))
    whole = EX.transform(images)
    for chunk_size in (1, 4, 11):
        np.testing.assert_array_equal(EX.transform(images, chunk_size=chunk_size), whole)
    np.testing.assert_array_equal(EX.transform(images[3:5]), whole[3:5])


def test_bad_settings_and_shapes_are_refused_with_the_rule():
    with pytest.raises(InvalidParameterError, match=r"levels must be an int from 2 to 64; "
                                                    r"got 1; rings must be an int from 1 to 16"):
        ImageFeatureExtractor(levels=1, rings=0)
    with pytest.raises(InvalidParameterError, match=r"images must be an array \(n, C, H, W\) "
                                                    r"with C, H, W >= 1; got shape \(4, 8, 8\)"):
        EX.transform(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(InvalidParameterError, match=r"chunk_size must be a positive int"):
        EX.transform(np.zeros((4, 1, 8, 8), np.uint8), chunk_size=0)
    with pytest.raises(InvalidParameterError, match=r"model_kwargs for 'image-lgbm' must be"):
        create_model("image-lgbm", n_classes=2, width=3)


# -- the model ---------------------------------------------------------------------------


def _texture_task(n: int = 200, minority: float = 0.5, seed: int = 0) -> Dataset:
    """Two classes of noisy 2-channel images; class 'striped' has row stripes in channel 1."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < minority).astype(np.int64)
    X = rng.normal(110, 25, (n, 2, 24, 24))
    X[y == 1, 1, ::2, :] += 30
    X = np.clip(X, 0, 255).astype(np.uint8)
    return Dataset(X=X, y=y, classes=["plain", "striped"], kind="image",
                   groups=np.arange(n) % 10)


def test_image_lgbm_is_registered_in_the_image_ladder():
    spec = MODELS.get("image-lgbm")
    assert (spec.input_kind, spec.family) == ("image", "gbdt")
    assert spec.search_space == MODELS.get("lightgbm").search_space
    assert DEFAULT_IMAGE_MODELS.index("image-lgbm") == DEFAULT_IMAGE_MODELS.index("logreg") + 1


def test_image_lgbm_beats_chance_on_texture_and_saves_and_loads(tmp_path):
    ds = _texture_task()
    split = holdout_split(ds.y, ds.groups, random_state=0)
    fm = cellbench.train_model(ds, split, TrainConfig(model="image-lgbm"))
    test = split.test
    accuracy = (fm.predict_proba(ds.X[test]).argmax(1) == ds.y[test]).mean()
    assert accuracy > 0.9
    assert fm.info["n_features"] == 2 * 27 + 8 + 1 and fm.info["top_features"]
    assert all(name in EX.feature_names(2) for name in fm.info["top_features"])
    loaded = cellbench.load_model(fm.save(tmp_path / "model.pt"))
    np.testing.assert_allclose(loaded.predict_proba(ds.X), fm.predict_proba(ds.X))
    assert loaded.kind == "image" and loaded.model.feature_names_ == EX.feature_names(2)


def test_image_lgbm_takes_class_weights():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.15).astype(np.int64)  # 15 % minority, overlapping brightness
    level = rng.normal(100, 15, 300) + 15 * y
    X = np.clip(rng.normal(level[:, None, None, None], 10, (300, 1, 16, 16)), 0, 255)
    ds = Dataset(X=X.astype(np.uint8), y=y, classes=["a", "b"], kind="image",
                 groups=np.arange(300) % 10)
    split = holdout_split(ds.y, ds.groups, random_state=0)
    proba = {weight: cellbench.train_model(ds, split, TrainConfig(
        model="image-lgbm", class_weight=weight)).predict_proba(ds.X)
        for weight in (None, "balanced")}
    assert proba["balanced"][:, 1].mean() > 1.5 * proba[None][:, 1].mean()
    assert (proba["balanced"].argmax(1) == 1).sum() > 2 * (proba[None].argmax(1) == 1).sum()


def test_compare_and_predict_on_an_image_folder(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from cellbench.cli import app

    ds = _texture_task(n=80)
    for i, (image, label) in enumerate(zip(ds.X, ds.y, strict=True)):
        folder = tmp_path / "imgs" / ds.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[1]).save(folder / f"S{i % 8}_{i}.png")
    runner = CliRunner()
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(tmp_path / "imgs"), "--group-regex",
                                 r"^(S\d+)_", "--models", "majority,image-lgbm", "--out",
                                 str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    accs = {m["model"]: m["test"]["accuracy"]["value"] for m in summary["models"]}
    assert accs["image-lgbm"] > 0.8
    model = out / "units" / "image-lgbm" / "seed0" / "holdout" / "model.pt"
    result = runner.invoke(app, ["predict", str(model), str(tmp_path / "imgs"), "--out",
                                 str(tmp_path / "p.csv")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "p.csv")
    truth = frame["file"].str.split("/").str[0]  # the class folder
    assert len(frame) == 80 and (frame["predicted"] == truth).mean() > 0.8
