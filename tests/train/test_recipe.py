"""The training recipe: label smoothing, a moving average of the weights, test-time
augmentation and seed ensembles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cellbench._config import TrainConfig
from cellbench.data import Dataset, holdout_split, load_table
from cellbench.exceptions import InvalidParameterError
from cellbench.models import SeedEnsemble, member_seed, parse_model
from cellbench.train import Callback, fit, load_model, train_model
from cellbench.train.ema import WeightAverage
from cellbench.train.fitted import tta_views
from cellbench.train.trainer import Prepared, check_model
from synthetic import Interrupt  # tests/ is on sys.path (pytest rootdir)


@pytest.fixture
def ds(tiny_table):
    return load_table(tiny_table, target="label", groups="donor")


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (96, 1, 12, 12), dtype=np.uint8)
    y = np.arange(96) % 2
    X[y == 1, :, 2:6, 2:9] = 255  # asymmetric: flips change what the network sees
    return Dataset(X=X, y=y, classes=["a", "b"], kind="image", groups=np.arange(96) % 8)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- label smoothing ------------------------------------------------------------------------
class Frozen(nn.Module):
    """Fixed logits whatever the input (a tiny learning rate keeps them)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.as_tensor(logits))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_label_smoothing_is_the_training_loss(eps):
    X, y = torch.zeros(64, 3), torch.arange(64) % 3
    logits = [2.0, -1.0, 0.5]
    cfg = TrainConfig(max_epochs=1, lr=1e-12, batch_size=64, device="cpu",
                      label_smoothing=eps, optimizer="sgd")
    state = fit(Frozen(logits), X, y, n_classes=3, config=cfg)
    expected = F.cross_entropy(torch.tensor([logits] * 64), y, label_smoothing=eps).item()
    assert state.history[0]["running_loss"] == pytest.approx(expected, rel=1e-5)
    # evaluation losses stay plain cross-entropy, comparable across settings
    plain = F.cross_entropy(torch.tensor([logits] * 64), y).item()
    assert state.history[0]["train_loss"] == pytest.approx(plain, rel=1e-5)


def test_bad_recipe_settings_are_refused_with_a_hint():
    for bad, match in [({"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\)"),
                       ({"ema": 1.5}, r"ema must be a decay in \(0, 1\) or None.*0\.999"),
                       ({"tta": "rot"}, r"tta must be .auto., .flip., .d4. or None"),
                       ({"ensemble": 0}, r"ensemble must be an int in \[1, 100\]")]:
        with pytest.raises(InvalidParameterError, match=match):
            TrainConfig(**bad)


# -- moving average of the weights ------------------------------------------------------------
def test_weight_average_follows_the_warm_up_formula():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = WeightAverage(net, decay=0.9)
    avg = net[0].weight.detach().clone()
    for t in range(1, 30):
        with torch.no_grad():
            net[0].weight.add_(torch.randn_like(net[0].weight))
        net(torch.randn(8, 2))  # BatchNorm buffers move
        ema.update(net)
        d = min(0.9, (1 + t) / (10 + t))
        avg = d * avg + (1 - d) * net[0].weight.detach()
    torch.testing.assert_close(ema.module[0].weight, avg)
    assert int(ema.module[1].num_batches_tracked) == 29  # integers are copied


def test_ema_is_what_is_measured_kept_and_returned(ds):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    Xt, yt = torch.from_numpy(ds.X[split.train]), torch.from_numpy(ds.y[split.train])
    Xv, yv = torch.from_numpy(ds.X[split.val]), torch.from_numpy(ds.y[split.val])
    from cellbench.models import create_model

    def run(ema):
        torch.manual_seed(0)
        net = create_model("mlp", n_features=ds.X.shape[1], n_classes=3)
        cfg = TrainConfig(max_epochs=3, batch_size=32, device="cpu", ema=ema, lr=1e-2)
        return net, fit(net, Xt, yt, Xv, yv, n_classes=3, config=cfg)

    plain_net, plain = run(None)
    net, state = run(0.9)
    # the trained weights themselves are the same: the average only watches
    assert [r["running_loss"] for r in state.history] == \
        [r["running_loss"] for r in plain.history]
    # returned: the average, not the last step's weights
    for k, v in state.ema.module.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)
    assert any(not torch.equal(net.state_dict()[k], v)
               for k, v in plain_net.state_dict().items())
    # measured: the validation record is the average's
    logits = state.ema.module.eval()(Xv.float())
    assert state.history[-1]["valid_loss"] == pytest.approx(
        F.cross_entropy(logits, yv).item(), rel=1e-5)


def test_training_with_ema_resumes_exactly(tmp_path, ds):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    cfg = TrainConfig(model="mlp", max_epochs=5, patience=None, device="cpu", batch_size=32,
                      ema=0.95)
    straight = train_model(ds, split, cfg, run_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train_model(ds, split, cfg, run_dir=tmp_path / "b", callbacks=(Interrupt(2),))
    resumed = train_model(ds, split, cfg, run_dir=tmp_path / "b", resume=True)
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)


# -- test-time augmentation -----------------------------------------------------------------
def test_tta_views_are_the_symmetries_of_the_image():
    x = torch.arange(12.).view(1, 1, 3, 4)
    flips = {tuple(v(x).flatten().tolist()) for v in tta_views("flip", False)}
    assert len(flips) == 4 and all(v(x).shape == x.shape for v in tta_views("d4", False))
    sq = torch.arange(9.).view(1, 1, 3, 3)
    d4 = {tuple(v(sq).flatten().tolist()) for v in tta_views("d4", True)}
    rot = {tuple(torch.rot90(sq, k, (-2, -1)).flatten().tolist()) for k in range(4)}
    assert len(d4) == 8 and rot <= d4
    assert len(tta_views(None, True)) == 1


def test_tta_averages_the_probabilities_of_the_views(images):
    split = holdout_split(images.y, images.groups, random_state=0)
    cfg = TrainConfig(model="cnn-seed003", max_epochs=2, batch_size=16, device="cpu")
    fm = train_model(images, split, cfg)
    X = images.X[split.test]
    views = [X, X[..., ::-1], X[..., ::-1, :], X[..., ::-1, ::-1]]
    expected = np.mean([fm.predict_proba(np.ascontiguousarray(v)) for v in views], axis=0)
    plain = fm.predict_proba(X)
    fm.config = cfg.replace(tta="flip")
    got = fm.predict_proba(X)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(got - plain).max() > 1e-4  # the views do differ for this network


def test_tta_on_a_table_is_refused(ds):
    with pytest.raises(InvalidParameterError, match=r"tta must not be set for a table"):
        check_model(ds, TrainConfig(model="mlp", tta="flip"))


# -- seed ensembles ---------------------------------------------------------------------------
def test_seed_ensemble_averages_members_trained_with_their_own_seeds(tmp_path, ds):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    cfg = TrainConfig(model="mlp", max_epochs=3, device="cpu", random_state=7, batch_size=32)
    fm = train_model(ds, split, cfg.replace(ensemble=3))
    assert isinstance(fm.model, SeedEnsemble) and len(fm.model.members) == 3
    assert [m["seed"] for m in fm.info["members"]] == [7, 1007, 2007]
    assert member_seed(7, 2) == 2007
    X = ds.X[split.test]
    # member i is exactly the network trained alone with member i's seed
    for i, member in enumerate(fm.model.members):
        alone = train_model(ds, split, cfg.replace(random_state=member_seed(7, i)))
        for k, v in alone.model.state_dict().items():
            torch.testing.assert_close(member.state_dict()[k], v)
    inputs = torch.from_numpy(fm.preprocessor.transform(X))
    with torch.no_grad():
        mean = torch.stack([m(inputs).softmax(1) for m in fm.model.members]).mean(0)
    np.testing.assert_allclose(fm.predict_proba(X), mean.numpy(), rtol=1e-5, atol=1e-7)
    again = load_model(fm.save(tmp_path / "model.pt"))
    np.testing.assert_allclose(again.predict_proba(X), fm.predict_proba(X), rtol=1e-6)
    assert fm.n_params == 3 * train_model(ds, split, cfg).n_params


def test_seed_ensemble_resumes_finished_members_without_training_them(tmp_path, ds,
                                                                      monkeypatch):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    cfg = TrainConfig(model="mlp", max_epochs=4, patience=None, device="cpu", batch_size=32,
                      ensemble=3)

    class Count(Callback):
        epochs = 0

        def on_epoch_end(self, state):
            Count.epochs += 1

    straight = train_model(ds, split, cfg, run_dir=tmp_path / "a")
    rebuild = Prepared.rebuild

    def interrupted(self, random_state):  # Ctrl-C as the third member starts
        if random_state == member_seed(0, 2):
            raise KeyboardInterrupt
        return rebuild(self, random_state)

    monkeypatch.setattr(Prepared, "rebuild", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_model(ds, split, cfg, run_dir=tmp_path / "b")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == \
        ["last.pt", "member1.pt"]
    saved = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "b" / "checkpoints").iterdir()}
    resumed = train_model(ds, split, cfg, run_dir=tmp_path / "b", resume=True,
                          callbacks=(Count(),))
    assert Count.epochs == 0  # the first member finished: loaded, not trained again
    # neither finished member was trained (a training rewrites its checkpoint every epoch)
    assert all((tmp_path / "b" / "checkpoints" / name).stat().st_mtime_ns == ns
               for name, ns in saved.items())
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)
    assert resumed.info["members"] == straight.info["members"]


def test_recipe_settings_are_per_model_and_only_for_networks():
    choice = parse_model("mlp(ensemble=3,ema=0.99,label_smoothing=0.1)")
    assert choice.train == {"ensemble": 3, "ema": 0.99, "label_smoothing": 0.1}
    assert parse_model("resnet8(tta=d4)").train == {"tta": "d4"}
    with pytest.raises(InvalidParameterError, match=r"must be arguments of 'lightgbm' or "
                                                    r"training settings; got 'ensemble'"):
        parse_model("lightgbm(ensemble=3)")


def test_later_settings_at_their_defaults_keep_older_units_reusable():
    ident = TrainConfig().ident()
    assert not {"label_smoothing", "ema", "tta", "ensemble"} & set(ident)
    assert TrainConfig(ensemble=2).ident()["ensemble"] == 2
    assert set(TrainConfig().to_dict()) - set(ident) == {"label_smoothing", "ema", "tta",
                                                         "ensemble"}
    assert math.isclose(TrainConfig(ema=0.99).ident()["ema"], 0.99)


def test_tta_auto_takes_the_views_the_augmentation_trained_for(images):
    from cellbench._augment_spec import trained_symmetries

    assert [trained_symmetries(a) for a in (None, "rotate=10", "flip,shift=0.1",
                                            "rot90,flip")] == [None, None, "flip", "d4"]
    split = holdout_split(images.y, images.groups, random_state=0)
    cfg = TrainConfig(model="cnn-seed003", max_epochs=1, batch_size=16, device="cpu",
                      augment="flip,shift=0.1")
    fm = train_model(images, split, cfg)
    X = images.X[split.test]
    fm.config = cfg.replace(tta="flip")
    flip = fm.predict_proba(X)
    fm.config = cfg.replace(tta="auto")
    np.testing.assert_array_equal(fm.predict_proba(X), flip)


def test_tta_views_the_augmentation_never_showed_are_warned_about(images):
    from cellbench.exceptions import CellbenchWarning

    with pytest.warns(CellbenchWarning, match=r"tta='d4' averages over views the network "
                                              r"never saw.*covers flip views.*add rot90"):
        check_model(images, TrainConfig(model="cnn-seed003", tta="d4", augment="flip"))
    with pytest.warns(CellbenchWarning, match=r"covers no views.*add flip"):
        check_model(images, TrainConfig(model="cnn-seed003", tta="flip"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model(images, TrainConfig(model="cnn-seed003", tta="d4", augment="rot90,flip"))
        check_model(images, TrainConfig(model="cnn-seed003", tta="auto"))
