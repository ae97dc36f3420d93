"""Probes on networks with known answers: each test fails if its probe is broken."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cellbench._config import TrainConfig
from cellbench.data import Dataset, from_arrays, holdout_split
from cellbench.diagnose import (
    GradientFlow,
    GradientFlowResult,
    InitLossResult,
    LRRangeResult,
    OverfitResult,
    gradient_flow,
    loss_at_init,
    lr_range_test,
    overfit_batch,
    probe_result_from_dict,
    run_probes,
    suggest_lr,
    valley_lr,
)
from cellbench.diagnose.probes.lr_range import smooth_centred
from cellbench.exceptions import InvalidParameterError
from cellbench.train.trainer import prepare

CPU = {"device": "cpu"}
#: bounds for the runs through every probe (the defaults are sized for real data)
QUICK = {"overfit_batch": {"n_steps": 60}, "gradient_flow": {"n_steps": 20},
         "lr_range_test": {"n_steps": 60, "max_sweeps": 2}}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks run as fast on one thread, and a shared machine does not stall them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def table(table_factory):
    """300 cells x 12 markers, 3 well-separated classes, and a holdout split."""
    frame = table_factory(n=300, separation=3.0)
    X = frame[[c for c in frame.columns if c.startswith("CD")]].to_numpy()
    ds = from_arrays(X, frame["label"].to_numpy())
    return ds, holdout_split(ds.y, val_size=0.15, test_size=0.15, random_state=0)


@pytest.fixture
def images():
    """64 random 1 x 16 x 16 uint8 images, 2 classes."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(64, 1, 16, 16), dtype=np.uint8)
    y = np.arange(64) % 2
    ds = Dataset(X=X, y=y, classes=["a", "b"], kind="image")
    return ds, holdout_split(ds.y, val_size=0.15, test_size=0.15, random_state=0)


def _mlp(**changes) -> TrainConfig:
    return TrainConfig(model="mlp", model_kwargs={"width": 32}, batch_size=32, **CPU).replace(
        **changes)


def _zero_last_hidden(model: torch.nn.Module) -> None:
    """mlp(depth=2): features = [Linear, ReLU, Linear, ReLU]; zero the second Linear."""
    layer = model.features[2]
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)


def _json_round_trip(result):
    return probe_result_from_dict(json.loads(json.dumps(result.to_dict())))


# -- loss at initialisation -------------------------------------------------------------------


def test_loss_at_init_of_a_fresh_net_is_near_log_k(table):
    ds, split = table
    res = loss_at_init(ds, split, _mlp())
    assert res.log_k == pytest.approx(math.log(3))
    assert abs(res.loss - res.log_k) < 0.15
    assert res.n_rows == len(split.train) and res.n_classes == 3
    assert sum(res.prior) == pytest.approx(1.0) and sum(res.mean_proba) == pytest.approx(1.0)
    assert 0 < res.prior_entropy <= res.log_k + 1e-12


def test_loss_at_init_with_a_huge_output_bias_is_far_above_log_k(table):
    ds, split = table

    def biased(model):
        with torch.no_grad():
            model.head.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))

    res = loss_at_init(ds, split, _mlp(), model_fn=biased)
    share = np.bincount(ds.y[split.train], minlength=3)[:2].sum() / len(split.train)
    assert res.loss > 10 * res.log_k
    assert res.loss == pytest.approx(50 * share, rel=0.05)  # rows not of class 2 pay ~50
    assert res.mean_proba[2] > 0.99 and res.logit_std > 10


# -- overfit one batch -------------------------------------------------------------------------


def test_a_sane_setting_memorises_the_batch(table):
    ds, split = table
    res = overfit_batch(ds, split, _mlp(optimizer="adam", lr=1e-3), batch_size=32, n_steps=150)
    assert res.final_accuracy >= 0.95
    assert res.memorised_step is not None and res.memorised_step <= len(res.eval_accuracy)
    assert res.loss[-1] < res.loss[0] / 5 and not res.diverged
    assert res.n_rows == 32 and len(res.loss) == len(res.eval_loss) == len(res.eval_accuracy)


def test_a_far_too_high_learning_rate_does_not_memorise_the_batch(table):
    ds, split = table
    res = overfit_batch(ds, split, _mlp(optimizer="sgd", lr=1e3), batch_size=32, n_steps=40)
    assert res.diverged or res.final_accuracy < 0.95
    assert res.memorised_step is None


def test_a_far_too_low_learning_rate_does_not_memorise_the_batch(table):
    ds, split = table
    res = overfit_batch(ds, split, _mlp(optimizer="adam", lr=1e-7), batch_size=32, n_steps=40)
    assert not res.diverged and res.final_accuracy < 0.95
    assert res.loss[-1] == pytest.approx(res.loss[0], abs=0.01)


# -- gradient flow and dead units --------------------------------------------------------------


def test_a_zeroed_layer_kills_its_units_and_the_gradients_below_it(table):
    ds, split = table
    res = gradient_flow(ds, split, _mlp(), n_steps=8, model_fn=_zero_last_hidden)
    assert res.layers == ("features.0", "features.2", "head")
    assert res.activations == ("features.1", "features.3")
    assert len(res.steps) == 8 and res.grad_norm[0] and len(res.grad_norm[0]) == 8
    dead_above, dead_below = res.dead_fraction[1], res.dead_fraction[0]
    assert all(d == 1.0 for d in dead_above)  # every unit after the zeroed layer is off
    assert max(dead_below) < 0.5
    assert all(g == 0.0 for g in res.grad_norm[0])  # nothing flows back through zero weights
    assert all(g == 0.0 for g in res.grad_norm[1])  # ReLU'(0) = 0 blocks the zeroed layer too
    assert all(g > 0 for g in res.grad_norm[2])  # the head's bias still learns
    assert all(r == 0.0 for r in res.update_ratio[0])
    assert res.first_last_grad_ratio == 0.0


def test_a_healthy_net_has_gradients_in_every_layer(table):
    ds, split = table
    res = gradient_flow(ds, split, _mlp(), n_steps=8)
    assert all(g > 0 for g in res.median_grad_norm)
    assert all(0 < r < 0.1 for r in res.median_update_ratio)
    assert all(d < 0.5 for d in res.median_dead_fraction)
    assert 0 < res.first_last_grad_ratio < math.inf and not res.nonfinite
    assert res.lr == (1e-3,) * 8 and len(res.loss) == 8


def test_leaky_relu_units_with_negative_pre_activations_count_as_dead(table):
    ds, split = table

    def negative_bias(model):
        torch.nn.init.constant_(model.features[0].bias, -100.0)

    cfg = _mlp(model_kwargs={"width": 32, "depth": 1, "activation": "leaky_relu"})
    res = gradient_flow(ds, split, cfg, n_steps=3, model_fn=negative_bias)
    assert res.activation_types == ("LeakyReLU",)
    assert res.dead_fraction[0][0] == 1.0
    healthy = gradient_flow(ds, split, cfg, n_steps=3)
    assert healthy.dead_fraction[0][0] < 0.5


def test_a_far_too_high_learning_rate_blows_the_loss_up(table):
    ds, split = table
    res = gradient_flow(ds, split, _mlp(optimizer="sgd", lr=1e3), n_steps=30)
    finite = [v for v in res.loss if math.isfinite(v)]
    assert res.nonfinite or max(finite) > 100 * res.loss[0]
    if res.nonfinite:
        assert res.first_nonfinite_step == res.steps[-1]  # stopped at the first bad step
        assert "loss became" in res.stop_reason


def test_layers_and_shared_activations_are_listed_in_forward_order(table):
    """The seed-000 CNN registers conv1..3 before bn1..3 and applies one LeakyReLU 5 times."""
    ds, split = table
    cfg = TrainConfig(model="cnn1d-seed-0509", optimizer="asgd", lr=0.01, batch_size=32, **CPU)
    res = gradient_flow(ds, split, cfg, n_steps=3)
    assert res.layers == ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "fc1", "fc2", "fc3")
    assert res.activations == tuple(f"relu#{k}" for k in range(1, 6))
    assert len(res.dead_fraction) == 5 and all(len(row) == 3 for row in res.dead_fraction)


def test_gradient_flow_callback_records_every_kth_step_and_removes_its_hooks(table):
    ds, split = table
    cfg = _mlp(max_epochs=2)
    p = prepare(ds, split, cfg)
    flow = GradientFlow(every=3)
    state = p.fit_network(cfg, callbacks=[flow])
    res = flow.result()
    assert res.steps == tuple(range(1, state.step + 1, 3))
    assert state.epoch == 2 and state.stop_reason is None  # it never stops normal training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in p.model.modules())


def test_gradient_flow_is_deterministic(table):
    ds, split = table
    a = gradient_flow(ds, split, _mlp(random_state=3), n_steps=5)
    b = gradient_flow(ds, split, _mlp(random_state=3), n_steps=5)
    assert a == b


# -- LR range test ------------------------------------------------------------------------------


def test_lr_range_suggestion_is_within_the_sweep_deterministic_and_sensible(table):
    ds, split = table
    cfg = _mlp(optimizer="adam")
    a = lr_range_test(ds, split, cfg, n_steps=80)
    b = lr_range_test(ds, split, cfg, n_steps=80)
    assert a == b
    assert a.lr_min <= a.suggestion <= a.lr_max
    assert 1e-4 <= a.suggestion <= 1.0
    assert a.valley is not None and a.lr_min <= a.valley <= a.lr_max and a.valley == a.valleys[0]
    # two informative sweeps are enough on a table: the suggestion is their geometric mean
    assert a.informative == (True, True) and a.seeds == (0, 10_007)
    assert a.suggestion == pytest.approx(math.sqrt(a.suggestions[0] * a.suggestions[1]))
    assert all(s < m for s, m in zip(a.suggestions, a.lr_at_min, strict=True))
    assert a.lr[0] == pytest.approx(1e-5) and np.all(np.diff(np.log(a.lr)) > 0)
    assert [len(x) for x in a.loss] == [len(x) for x in a.smooth_loss] == [
        len(x) for x in a.centred_loss]


def test_uninformative_sweeps_are_repeated_and_give_no_suggestion(table):
    ds, split = table
    # lr at most 1e-6 for 20 steps: the loss cannot fall, so no sweep is informative
    res = lr_range_test(ds, split, _mlp(), lr_min=1e-8, lr_max=1e-6, n_steps=20, max_sweeps=3)
    assert len(res.loss) == 3 and res.informative == (False, False, False)
    assert all(d < 0.03 for d in res.depth)
    assert math.isnan(res.suggestion)
    assert len(set(res.seeds)) == 3


def test_each_lr_sweep_is_the_network_training_would_build_for_its_seed(table):
    ds, split = table
    both = lr_range_test(ds, split, _mlp(random_state=1), n_steps=30, min_informative=2,
                         max_sweeps=2, min_depth=2.0)  # never informative: both sweeps run
    second = lr_range_test(ds, split, _mlp(random_state=both.seeds[1]), n_steps=30,
                           max_sweeps=1)
    assert len(both.loss) == 2
    assert both.loss[1] == second.loss[0]
    assert both.loss[0] != both.loss[1]


def test_lr_sweep_follows_the_exponential_schedule_to_lr_max(table):
    ds, split = table
    res = lr_range_test(ds, split, _mlp(), lr_min=1e-6, lr_max=1e-4, n_steps=20, max_sweeps=1)
    assert len(res.lr) == 20 and res.stop_reasons == ("lr sweep: 20 steps done",)
    np.testing.assert_allclose(res.lr, np.geomspace(1e-6, 1e-4, 20), rtol=1e-9)


def test_lr_sweep_stops_when_the_loss_blows_up(table):
    ds, split = table
    res = lr_range_test(ds, split, _mlp(optimizer="sgd"), lr_min=1e-3, lr_max=1e6, n_steps=60,
                        max_sweeps=1)
    assert len(res.loss[0]) < 60
    assert "lr sweep: the" in res.stop_reasons[0]


def test_valley_follows_fastai_on_a_known_curve():
    lrs = np.geomspace(1e-7, 10, 100)
    # flat, a long descent (indices 30-69), then a rise
    loss = np.concatenate([np.full(30, 2.0), np.linspace(2.0, 0.5, 41)[1:],
                           np.linspace(0.6, 5, 30)])
    expected = lrs[10 + _fastai_valley_index(loss[10:-5])]  # lr_find drops 10 + 5 points
    assert valley_lr(lrs, loss) == expected
    assert lrs[40] < expected < lrs[60]  # about half-way down the descent


def _fastai_valley_index(losses: np.ndarray) -> int:
    """Reference: fastai's valley index, spelled out independently (O(n^2) loops)."""
    n = len(losses)
    lds = [1] * n
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[best_end] < lds[i]:
            best_end = i
    start = best_end - lds[best_end]
    sections = (best_end - start) / 3
    return start + int(sections) + int(sections / 2)


def test_suggestion_on_a_known_curve():
    lrs = np.geomspace(1e-6, 1, 121)  # 20 steps per decade
    x = np.log10(lrs)
    # a sigmoid descent from 1.2 to 0.2 centred on 1e-3, then a blow-up from about 0.1
    loss = 1.0 / (1 + np.exp(3 * (x + 3))) + 0.2 + np.exp(4 * (x + 0.5))
    assert suggest_lr(lrs, loss) == pytest.approx(1e-3, rel=0.05)
    # the same curve with noise added still lands near its middle
    noisy = loss + np.random.default_rng(0).normal(scale=0.02, size=len(loss))
    assert suggest_lr(lrs, smooth_centred(noisy, 0.35 * 20)) == pytest.approx(1e-3, rel=0.3)
    assert math.isnan(suggest_lr(lrs, np.full(121, np.nan)))


# -- results round-trip and validation ---------------------------------------------------------


def test_every_result_round_trips_through_json(table):
    ds, split = table
    cfg = _mlp(optimizer="sgd", lr=1e3)  # non-finite values included
    results = [loss_at_init(ds, split, cfg), overfit_batch(ds, split, cfg, n_steps=10),
               gradient_flow(ds, split, cfg, n_steps=10),
               lr_range_test(ds, split, _mlp(), n_steps=30, max_sweeps=2)]
    for res, cls in zip(results, (InitLossResult, OverfitResult, GradientFlowResult,
                                  LRRangeResult), strict=True):
        back = _json_round_trip(res)
        assert type(back) is cls
        assert json.dumps(back.to_dict()) == json.dumps(res.to_dict())
        assert cls.from_dict(res.to_dict()) == res or _has_nan(res)


def _has_nan(res) -> bool:
    return "NaN" in json.dumps(res.to_dict())


def test_from_dict_rejects_other_probes_and_unknown_keys(table):
    ds, split = table
    data = loss_at_init(ds, split, _mlp()).to_dict()
    with pytest.raises(InvalidParameterError, match="'overfit_batch' probe"):
        OverfitResult.from_dict(data)
    with pytest.raises(InvalidParameterError, match="unknown \\['extra'\\]"):
        InitLossResult.from_dict({**data, "extra": 1})
    with pytest.raises(InvalidParameterError, match="'probe' key"):
        probe_result_from_dict({"loss": 1.0})


def test_bad_settings_raise_with_the_rule(table):
    ds, split = table
    with pytest.raises(InvalidParameterError, match="n_steps must be an int >= 1; got 0"):
        overfit_batch(ds, split, _mlp(), n_steps=0)
    with pytest.raises(InvalidParameterError, match="0 < lr_min < lr_max"):
        lr_range_test(ds, split, _mlp(), lr_min=1.0, lr_max=1e-3)
    with pytest.raises(InvalidParameterError, match="must be a network"):
        loss_at_init(ds, split, _mlp(model="logreg"))
    with pytest.raises(InvalidParameterError, match="every must be an int >= 1"):
        GradientFlow(every=0)


# -- every probe on the seeds' networks --------------------------------------------------------


@pytest.mark.parametrize("model,extra", [
    ("mlp", {}),
    ("cnn1d-seed-0509", {"optimizer": "asgd", "lr": 0.01}),
])
def test_table_networks_run_through_every_probe(table, model, extra):
    ds, split = table
    cfg = TrainConfig(model=model, batch_size=64, **CPU, **extra)
    results = run_probes(ds, split, cfg, options=QUICK)
    assert list(results) == ["loss_at_init", "overfit_batch", "gradient_flow", "lr_range_test"]
    for res in results.values():
        assert _json_round_trip(res).to_dict() == json.loads(json.dumps(res.to_dict()))
    assert results["gradient_flow"].layers
    sweep = results["lr_range_test"]
    assert sweep.lr_min <= sweep.suggestion <= sweep.lr_max


def test_an_image_network_runs_through_every_probe(images):
    ds, split = images
    cfg = TrainConfig(model="shallow-seed004", batch_size=16, **CPU)
    results = run_probes(ds, split, cfg, options=QUICK)
    init = results["loss_at_init"]
    assert init.n_classes == 2 and abs(init.loss - math.log(2)) < 0.2
    flow = results["gradient_flow"]
    assert flow.layer_types[0] == "Conv2d" and flow.layer_types[-1] == "Linear"
    assert len(flow.activations) == 5 and all(len(r) == len(flow.steps) for r in
                                              flow.dead_fraction)
    assert results["overfit_batch"].n_rows == min(64, len(split.train))


def test_run_probes_rejects_unknown_probe_names(table):
    ds, split = table
    with pytest.raises(InvalidParameterError, match="'lr_find'"):
        run_probes(ds, split, _mlp(), options={"lr_find": {}})
