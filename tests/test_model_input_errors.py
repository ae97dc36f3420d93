"""Settings a model cannot train or run with are refused before anything runs, in one line:
batch norm with one row per batch, images too small for a network's pooling, a table model
given an image shape (and the reverse), and a `cellbench models` filter that matches nothing."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cellbench._config import TrainConfig
from cellbench.cli import app
from cellbench.data.dataset import Dataset
from cellbench.exceptions import InvalidParameterError
from cellbench.train.trainer import check_model

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    text = " ".join(result.output.split())
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    return result, text


def _table(n: int = 40, features: int = 5) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(X=rng.normal(size=(n, features)).astype(np.float32),
                   y=np.arange(n) % 2, classes=["a", "b"],
                   feature_names=[f"m{i}" for i in range(features)])


def _images(side: int, n: int = 12) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(X=rng.integers(0, 255, (n, 1, side, side), dtype=np.uint8),
                   y=np.arange(n) % 2, classes=["a", "b"], kind="image")


# -- batch norm with a batch of one row ---------------------------------------------------------


def test_batch_norm_with_batches_of_one_row_is_refused():
    cfg = TrainConfig(model="mlp", model_kwargs={"batchnorm": True}, batch_size=1,
                      device="cpu")
    with pytest.raises(InvalidParameterError) as err:
        check_model(_table(), cfg)
    assert str(err.value).startswith(
        "batch_size must be at least 2 for a model with batch norm (mlp(batchnorm=true)); "
        "got 1.")
    assert "batchnorm=false" in str(err.value)
    with pytest.raises(InvalidParameterError, match=r"batch norm \(resmlp\); got 1"):
        check_model(_table(), TrainConfig(model="resmlp", batch_size=1, device="cpu"))
    # two rows, no batch norm, or a batch norm that sees several values per channel: fine
    check_model(_table(), cfg.replace(batch_size=2))
    check_model(_table(), cfg.replace(model_kwargs={"batchnorm": False}))
    check_model(_table(), TrainConfig(model="cnn1d-seed", batch_size=1, device="cpu"))


def test_train_with_batch_norm_and_batch_size_1_says_so(tmp_path, tiny_csv):
    result, text = _invoke("train", tiny_csv, "-t", "label", "-g", "donor", "-m",
                           "mlp(batchnorm=true)", "--batch-size", "1", "--max-epochs", "1",
                           "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2, text
    assert ("error: batch_size must be at least 2 for a model with batch norm "
            "(mlp(batchnorm=true)); got 1.") in text
    assert not (tmp_path / "run").exists()


# -- images too small for the network ------------------------------------------------------------


@pytest.mark.parametrize("model", ["cnn-seed003", "gap-seed003", "shallow-seed004"])
def test_images_too_small_for_the_pooling_suggest_resize(model):
    with pytest.raises(InvalidParameterError) as err:
        check_model(_images(4), TrainConfig(model=model, device="cpu"))
    message = str(err.value)
    assert message.startswith(f"images must be at least 8x8 pixels for model {model!r}")
    assert "got 4x4 images. Pass --resize 8" in message
    assert "buildable" not in message
    check_model(_images(8), TrainConfig(model=model, device="cpu"))


def test_compare_on_tiny_images_suggests_resize(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (4, 4), dtype=np.uint8)).save(
                tmp_path / "imgs" / cls / f"{cls}{i}.png")
    result, text = _invoke("compare", tmp_path / "imgs", "--models", "cnn-seed003",
                           "--max-epochs", "1", "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2, text
    assert "error: images must be at least 8x8 pixels for model 'cnn-seed003'" in text
    assert "Pass --resize 8" in text
    assert not (tmp_path / "run").exists()


# -- summary --------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (("cnn-seed003", "--input", "1x2x2"),
     "--input images must be at least 8x8 for 'cnn-seed003'"),
    (("cnn-seed003", "--input", "1x2x2"), "Try --input 1x8x8"),
    (("mlp", "--input", "1x28x28"),
     "--input must be the number of features for 'mlp', which takes a table; got '1x28x28'. "
     "Pass --input N_FEATURES"),
    (("resnet8", "--input", "24"), "--input must be CxHxW for 'resnet8', which takes images"),
    (("lda", "--input", "24"),
     "summary's model must be a network (family nn); got 'lda', a baseline model"),
])
def test_summary_of_an_input_the_model_cannot_take(args, fragment):
    result, text = _invoke("summary", *args)
    assert result.exit_code == 2, text
    assert "error:" in text and fragment in text


def test_summary_still_summarizes():
    result, text = _invoke("summary", "cnn-seed003", "--input", "1x8x8")
    assert result.exit_code == 0, text
    assert "Total params" in text


# -- models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (("foo",), "Unknown model 'foo'."),
    (("mpl",), "Unknown model 'mpl'. Did you mean 'mlp'?"),
    (("cnn",), "pass the filter 'cnn*'"),
    (("zz*",), "the filter 'zz*' must match at least one model; it matches none."),
    (("mlp", "--kind", "image"), "model 'mlp' must take image input to be listed with --kind "
                                 "image; it takes tabular input."),
    (("--kind", "img"), "Unknown --kind 'img'. Did you mean 'image'?"),
])
def test_models_that_match_nothing_is_an_error(args, fragment):
    result, text = _invoke("models", *args)
    assert result.exit_code == 2, text
    assert "error:" in text and fragment in text


def test_models_filters_still_list():
    result, text = _invoke("models", "cnn*", "--kind", "tabular")
    assert result.exit_code == 0 and "cnn1d-seed" in text and "cnn-seed003" not in text
    result, text = _invoke("models", "resnet8")
    assert result.exit_code == 0 and "resnet8" in text
