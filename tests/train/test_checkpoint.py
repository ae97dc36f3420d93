"""Saved models and resumable training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellbench._config import DataConfig, TrainConfig
from cellbench.data import holdout_split, load_table
from cellbench.exceptions import RunDirectoryError
from cellbench.train import load_model, train_model
from synthetic import Interrupt  # tests/ is on sys.path (pytest rootdir)


@pytest.fixture
def ds(tiny_table):
    return load_table(tiny_table, target="label", groups="donor")


@pytest.mark.parametrize("model", ["mlp", "cnn1d-seed", "lda", "lightgbm", "majority"])
def test_saved_model_predicts_the_same_after_loading(tmp_path, ds, model):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    fm = train_model(ds, split, TrainConfig(model=model, max_epochs=3, device="cpu"),
                     DataConfig(transform=("arcsinh", "standardize"), cofactor=2.0))
    path = fm.save(tmp_path / "model.pt")
    raw = torch.load(path, weights_only=True)  # no pickled code in a checkpoint
    assert raw["format"] == "cellbench-model" and raw["name"] == model
    again = load_model(path)
    X = ds.X[split.test]
    np.testing.assert_allclose(again.predict_proba(X), fm.predict_proba(X), rtol=1e-6)
    assert list(again.predict(X)) == list(fm.predict(X))
    assert again.preprocessor.steps == ("arcsinh", "standardize")
    assert again.classes == ["type0", "type1", "type2"]


def _strip(history):
    return [{k: v for k, v in r.items() if k != "time"} for r in history]


@pytest.mark.parametrize("scheduler", [None, "onecycle", "plateau"])
def test_resume_continues_exactly_where_training_stopped(tmp_path, ds, scheduler):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    cfg = TrainConfig(model="cnn1d-seed", max_epochs=6, patience=None, device="cpu",
                      optimizer="asgd", lr=0.05, scheduler=scheduler, batch_size=32)
    straight = train_model(ds, split, cfg, run_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train_model(ds, split, cfg, run_dir=tmp_path / "b", callbacks=(Interrupt(3),))
    last = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 3
    resumed = train_model(ds, split, cfg, run_dir=tmp_path / "b", resume=True)
    assert _strip(resumed.history) == _strip(straight.history)
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)


def test_resume_with_other_settings_is_refused(tmp_path, ds):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    cfg = TrainConfig(model="mlp", max_epochs=4, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train_model(ds, split, cfg, run_dir=tmp_path, callbacks=(Interrupt(2),))
    with pytest.raises(RunDirectoryError, match=r"--resume must use the configuration"):
        train_model(ds, split, cfg.replace(lr=0.1), run_dir=tmp_path, resume=True)


def test_damaged_checkpoint_is_reported_not_loaded(tmp_path, ds):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    fm = train_model(ds, split, TrainConfig(model="mlp", max_epochs=1, device="cpu"))
    path = fm.save(tmp_path / "model.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RunDirectoryError, match=r"must be a cellbench checkpoint; loading "
                                                r"failed.*truncated"):
        load_model(path)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(RunDirectoryError, match=r"must be a 'cellbench-model' checkpoint"):
        load_model(tmp_path / "other.pt")


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch, ds):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    fm = train_model(ds, split, TrainConfig(model="lda"))
    path = fm.save(tmp_path / "model.pt")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        fm.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left


def test_image_training_with_augmentation_resumes_exactly(tmp_path):
    from cellbench.data import Dataset

    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (120, 1, 16, 16), dtype=np.uint8)
    y = np.arange(120) % 2
    X[y == 1, :, 4:12, 4:12] = 255
    ds = Dataset(X=X, y=y, classes=["a", "b"], kind="image", groups=np.arange(120) % 10)
    split = holdout_split(ds.y, ds.groups, random_state=0)
    cfg = TrainConfig(model="resnet8", max_epochs=4, patience=None, device="cpu",
                      batch_size=16, augment="flip,rot90,rotate=10,mixup=0.2")
    straight = train_model(ds, split, cfg, run_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train_model(ds, split, cfg, run_dir=tmp_path / "b", callbacks=(Interrupt(2),))
    resumed = train_model(ds, split, cfg, run_dir=tmp_path / "b", resume=True)
    assert _strip(resumed.history) == _strip(straight.history)
    path = resumed.save(tmp_path / "m.pt")
    again = load_model(path)
    np.testing.assert_allclose(again.predict_proba(X), resumed.predict_proba(X), rtol=1e-5)
    assert again.kind == "image" and again.input_shape == [1, 16, 16]


@pytest.fixture
def saved(tmp_path, ds):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    fm = train_model(ds, split, TrainConfig(model="mlp", model_kwargs={"width": 8, "depth": 1},
                                            max_epochs=1, device="cpu"))
    return torch.load(fm.save(tmp_path / "model.pt"), weights_only=True)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.pop("classes"), r"must hold a complete cellbench model; it lacks 'classes'"),
    (lambda c: c.pop("state"), r"it lacks 'state'"),
    (lambda c: c.update(model_kwargs="width=8"), r"it has 'model_kwargs' \(str, not dict\)"),
    (lambda c: c.update(input_shape=[0]), r"must give an input shape of 1 or 3 positive sizes"),
    (lambda c: c.update(classes=["only"]), r"must list between 2 and 10\^6 classes; got 1"),
    (lambda c: c.update(name="mlp9"), r"names model 'mlp9', which this cellbench does not know"),
    # 10^6 x 50 units: refused from the meta-device build, before any memory is allocated
    (lambda c: c["model_kwargs"].update(width=10**6, depth=50),
     r"asks for 'mlp' with 49,000,\d{3},\d{3},\d{3} parameters \(more than 2,000,000,000\)"),
    (lambda c: c["model_kwargs"].update(width=16), r"its weights differ in"),
    (lambda c: c.update(preprocessing={"steps": "nonsense"}), r"must hold a model cellbench "
                                                              r"can rebuild; rebuilding failed"),
])
def test_a_crafted_checkpoint_is_refused_before_the_model_is_built(tmp_path, saved, change,
                                                                   message):
    change(saved)
    path = tmp_path / "crafted.pt"
    torch.save(saved, path)
    with pytest.raises(RunDirectoryError, match=message):
        load_model(path)
