"""``mlp-plr`` (periodic numeric embeddings) and ``tabm`` (an ensemble trained at once)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from cellbench._config import TrainConfig
from cellbench.cli import app
from cellbench.data import holdout_split, load_table
from cellbench.diagnose import run_probes
from cellbench.exceptions import InvalidParameterError
from cellbench.models import MODELS, class_weight_vector, count_parameters, create_model
from cellbench.models.tabular_nets import EnsembleLinear, PeriodicEmbedding
from cellbench.train import Callback, fit, load_model, train_model

TABM_VARIANTS = [{}, {"arch": "tabm-mini"}, {"embedding": "plr"},
                 {"arch": "tabm-mini", "embedding": "plr", "lite": True}]


@pytest.fixture
def ds(table_factory):
    return load_table(table_factory(n=400, seed=1), target="label", groups="donor")


# -- shapes and parameters ---------------------------------------------------------------------
@pytest.mark.parametrize("lite", [False, True])
def test_periodic_embedding_shapes_and_trainable_frequencies(lite):
    emb = PeriodicEmbedding(5, n_frequencies=6, frequency_scale=0.5, d_embedding=4, lite=lite)
    x = torch.randn(7, 5)
    out = emb(x)
    assert out.shape == (7, 5 * 4) and (out >= 0).all()  # ReLU after the linear layer
    assert emb.frequencies.shape == (5, 6) and emb.frequencies.requires_grad
    out.sum().backward()
    assert emb.frequencies.grad is not None and emb.frequencies.grad.abs().sum() > 0
    before = emb.frequencies.detach().clone()
    torch.optim.SGD(emb.parameters(), lr=0.1).step()
    assert not torch.equal(before, emb.frequencies)


def test_frequencies_start_at_the_given_scale():
    torch.manual_seed(0)
    emb = PeriodicEmbedding(200, n_frequencies=50, frequency_scale=0.3)
    c = emb.frequencies.detach()
    assert abs(c.mean().item()) < 0.02 and 0.25 < c.std().item() < 0.3  # N(0, σ²) cut at 3σ
    assert c.abs().max() <= 0.9 + 1e-6


def test_mlp_plr_wraps_an_mlp_on_the_flattened_embeddings():
    net = create_model("mlp-plr", n_features=6, n_classes=4, d_embedding=5, width=32)
    assert net.mlp.features[0].in_features == 6 * 5
    assert net(torch.randn(3, 6)).shape == (3, 4)


@pytest.mark.parametrize("kwargs", TABM_VARIANTS)
def test_tabm_shapes(kwargs):
    net = create_model("tabm", n_features=6, n_classes=4, k=5, width=16, **kwargs)
    x = torch.randn(3, 6)
    assert net.forward_features(x).shape == (3, 5, 16)
    assert net.forward_members(x).shape == (3, 5, 4)
    assert net(x).shape == (3, 4)


def test_tabm_members_share_weights_but_differ_by_their_adapters():
    k, d, width, n_classes, depth = 6, 10, 32, 3, 2
    torch.manual_seed(0)
    net = create_model("tabm", n_features=d, n_classes=n_classes, k=k, width=width,
                       depth=depth).eval()
    layers = [m for m in net.modules() if isinstance(m, EnsembleLinear)]
    assert len(layers) == depth
    first = layers[0]
    assert first.linear.weight.shape == (width, d)  # one shared matrix, not k
    assert set(first.r.detach().unique().tolist()) == {-1.0, 1.0}  # random signs
    assert len({tuple(row) for row in first.r.detach().tolist()}) == k
    assert (layers[1].r == 1).all() and (first.s == 1).all()
    logits = net.forward_members(torch.randn(4, d))
    assert not torch.allclose(logits[:, 0], logits[:, 1])
    # parameters: the shared MLP's weights, plus k small per-member pieces
    shared = d * width + width * width
    adapters = k * (d + 2 * width) + k * (width + 2 * width)  # r, s, bias per layer
    heads = k * (width * n_classes + n_classes)
    assert count_parameters(net) == shared + adapters + heads
    mlp = create_model("mlp", n_features=d, n_classes=n_classes, width=width, depth=depth)
    assert count_parameters(net) < 0.5 * k * count_parameters(mlp)  # k separate MLPs: k x


def test_tabm_mini_has_one_input_adapter_and_a_shared_backbone():
    net = create_model("tabm", n_features=8, n_classes=3, k=4, width=16, arch="tabm-mini")
    assert not any(isinstance(m, EnsembleLinear) for m in net.modules())
    assert net.backbone[0].r.shape == (4, 8)
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 2


def test_eval_output_is_the_log_of_the_mean_member_probability():
    net = create_model("tabm", n_features=5, n_classes=4, k=3, width=8).eval()
    x = torch.randn(6, 5)
    mean_proba = torch.softmax(net.forward_members(x), -1).mean(1)
    torch.testing.assert_close(torch.softmax(net(x), 1), mean_proba)
    torch.testing.assert_close(net(x).exp(), mean_proba)  # log-probabilities, not logits
    # not the softmax of the mean logit
    assert not torch.allclose(torch.softmax(net.forward_members(x).mean(1), 1), mean_proba)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k": 0}, r"k must be an int >= 1; got 0"),
    ({"arch": "mini"}, r"arch must be 'tabm' or 'tabm-mini'; got 'mini'"),
    ({"embedding": "ple"}, r"embedding must be None or 'plr'; got 'ple'"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"embedding": "plr", "frequency_scale": 0.0}, r"frequency_scale must be a float > 0"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        create_model("tabm", n_features=4, n_classes=2, **kwargs)


def test_search_spaces_are_declared():
    assert {"n_frequencies", "frequency_scale", "d_embedding"} <= set(
        MODELS.get("mlp-plr").search_space)
    assert MODELS.get("mlp-plr").search_space["frequency_scale"].log
    assert {"k", "width", "depth", "dropout", "arch", "lr", "weight_decay"} <= set(
        MODELS.get("tabm").search_space)


# -- the engine's contract for ensembles ---------------------------------------------------
class _FirstLoss(Callback):
    def __init__(self):
        self.loss = None

    def on_after_backward(self, state):
        if self.loss is None:
            self.loss = state.loss.item()


def _one_batch_loss(model, X, y, augment_fn=None, **cfg):
    grab = _FirstLoss()
    fit(model, X, y, n_classes=3, callbacks=(grab,), augment_fn=augment_fn,
        config=TrainConfig(max_epochs=1, batch_size=len(X), lr=1e-12, device="cpu", **cfg))
    return grab.loss


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_training_loss_is_the_mean_of_the_members_losses(class_weight):
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 5, generator=g), torch.tensor([0] * 25 + [1] * 10 + [2] * 5)
    torch.manual_seed(0)
    net = create_model("tabm", n_features=5, n_classes=3, k=4, width=8)
    with torch.no_grad():
        members = net.forward_members(X)
    w = class_weight_vector(class_weight, y.numpy(), 3)
    w = None if w is None else torch.as_tensor(w, dtype=torch.float32)
    expected = np.mean([F.cross_entropy(members[:, i], y, weight=w).item() for i in range(4)])
    ensemble = F.nll_loss(net(X), y, weight=w).item()
    assert abs(expected - ensemble) > 1e-3  # not the loss of the averaged prediction
    got = _one_batch_loss(net, X, y, class_weight=class_weight)
    assert got == pytest.approx(expected, rel=1e-5)


def test_soft_targets_reach_every_member():
    X, y = torch.randn(30, 5), torch.arange(30) % 3

    def smooth(yb):
        return F.one_hot(yb, 3).float() * 0.7 + 0.1

    net = create_model("tabm", n_features=5, n_classes=3, k=3, width=8)
    with torch.no_grad():
        members = net.forward_members(X)
    got = _one_batch_loss(net, X, y, augment_fn=lambda xb, yb: (xb, smooth(yb)))
    expected = np.mean([F.cross_entropy(members[:, i], smooth(y)).item() for i in range(3)])
    assert got == pytest.approx(expected, rel=1e-5)


# -- end to end ----------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "kwargs", "settings"), [
    ("mlp-plr", {}, {}),
    ("tabm", {"k": 4}, {}),
    ("tabm", {"k": 4, "embedding": "plr", "arch": "tabm-mini"},
     {"class_weight": "balanced", "sampler": "balanced"}),
])
def test_trains_beats_chance_and_round_trips(tmp_path, ds, model, kwargs, settings):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    fm = train_model(ds, split, TrainConfig(model=model, model_kwargs=kwargs, max_epochs=8,
                                            lr=3e-3, device="cpu", **settings))
    X, y = ds.X[split.test], ds.y[split.test]
    proba = fm.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == y).mean() > 0.6  # 3 classes: chance is about 1/3
    assert all(np.isfinite(r["running_accuracy"]) for r in fm.history)
    if model == "tabm":  # the prediction is the mean of the members' probabilities
        inputs, _ = fm.network_inputs(X)
        with torch.no_grad():
            members = torch.softmax(fm.model.forward_members(inputs), -1).mean(1)
        np.testing.assert_allclose(proba, members.numpy(), atol=1e-5)
    again = load_model(fm.save(tmp_path / "model.pt"))
    np.testing.assert_array_equal(again.predict_proba(X), proba)


def test_cli_trains_tabm_with_class_weights_and_the_balanced_sampler(tmp_path, tiny_csv):
    out = tmp_path / "t"
    result = CliRunner().invoke(app, [
        "train", str(tiny_csv), "-t", "label", "-g", "donor", "--model",
        "tabm(k=4,class_weight=balanced,sampler=balanced)", "--max-epochs", "3",
        "--out", str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "tabm"
    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["config"]["sampler"] == "balanced"
    assert saved["model_kwargs"]["k"] == 4


@pytest.mark.parametrize(("model", "kwargs"), [("mlp-plr", {}), ("tabm", {"k": 4})])
def test_the_doctors_probes_run_on_the_new_networks(ds, model, kwargs):
    split = holdout_split(ds.y, ds.groups, random_state=0)
    cfg = TrainConfig(model=model, model_kwargs=kwargs, batch_size=64, device="cpu")
    results = run_probes(ds, split, cfg, options={
        "overfit_batch": {"n_steps": 30}, "gradient_flow": {"n_steps": 10},
        "lr_range_test": {"n_steps": 40, "max_sweeps": 1}})
    assert results["loss_at_init"].loss == pytest.approx(np.log(3), abs=0.5)
    flow = results["gradient_flow"]
    assert flow.layers and all(np.isfinite(v).all() for v in flow.grad_norm)
    assert len(flow.activations) == len(flow.dead_fraction)
    if model == "tabm":  # the shared weights, the adapters and the heads all get gradients
        assert {"backbone.0.layer", "backbone.0.layer.linear", "head"} <= set(flow.layers)
