"""The training loop: history, determinism, optimizers, schedules, weights, stopping."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from cellbench._config import TrainConfig
from cellbench.exceptions import InvalidParameterError, StopTraining
from cellbench.models import class_weight_vector, create_model
from cellbench.train import Callback, EarlyStopping, fit
from cellbench.train.optim import OPTIMIZERS, SCHEDULERS


def _data(n=600, d=8, n_classes=3, seed=0, noise=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    X = torch.randn(n, d, generator=g) * noise
    X[:, :n_classes] += 2.0 * torch.eye(n_classes)[y]
    return X, y


def _fit(config, model=None, n_classes=3, callbacks=(), **data):
    X, y = _data(n_classes=n_classes, **data)
    torch.manual_seed(config.random_state)
    model = model or create_model("mlp", n_features=X.shape[1], n_classes=n_classes, width=32)
    return fit(model, X[:400], y[:400], X[400:], y[400:], n_classes=n_classes, config=config,
               callbacks=callbacks)


def test_history_records_running_eval_mode_and_validation_metrics():
    state = _fit(TrainConfig(max_epochs=3, device="cpu"))
    assert len(state.history) == 3
    rec = state.history[-1]
    for key in ("epoch", "lr", "time", "running_loss", "running_accuracy", "train_loss",
                "train_accuracy", "train_balanced_accuracy", "valid_loss", "valid_accuracy",
                "valid_balanced_accuracy"):
        assert key in rec and math.isfinite(rec[key])
    assert state.history.column("epoch") == [1, 2, 3]


def test_eval_mode_train_accuracy_is_not_faked_down_by_dropout():
    """Heavy dropout: running train accuracy falls below validation; eval-mode does not."""
    X, y = _data(n=1200, seed=1)
    torch.manual_seed(0)
    model = create_model("cnn1d-seed-0509", n_features=8, n_classes=3)
    state = fit(model, X[:800], y[:800], X[800:], y[800:], n_classes=3,
                config=TrainConfig(max_epochs=15, lr=3e-3, device="cpu", batch_size=64))
    last = state.history[-5:]
    running = np.mean([r["running_accuracy"] for r in last])
    evaluated = np.mean([r["train_accuracy"] for r in last])
    valid = np.mean([r["valid_accuracy"] for r in last])
    assert running < valid - 0.05
    assert evaluated >= valid - 0.03


def test_same_seed_same_history_on_cpu():
    cfg = TrainConfig(max_epochs=3, device="cpu", random_state=7)
    a, b = _fit(cfg), _fit(cfg)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in b.history]
    c = _fit(cfg.replace(random_state=8))
    assert c.history[-1]["running_loss"] != a.history[-1]["running_loss"]


@pytest.mark.parametrize("optimizer", OPTIMIZERS.list())
def test_every_optimizer_trains(optimizer):
    lr = {"sgd": 0.05, "asgd": 0.05}.get(optimizer, 3e-3)
    state = _fit(TrainConfig(optimizer=optimizer, lr=lr, max_epochs=6, device="cpu"))
    assert state.history[-1]["valid_loss"] < state.history[0]["valid_loss"]


def test_sgd_kwargs_reach_the_optimizer_and_bad_ones_are_named():
    state = _fit(TrainConfig(optimizer="sgd", optimizer_kwargs={"nesterov": True,
                                                               "momentum": 0.8},
                             max_epochs=1, device="cpu"))
    group = state.optimizer.param_groups[0]
    assert group["nesterov"] is True and group["momentum"] == 0.8
    with pytest.raises(InvalidParameterError, match=r"optimizer_kwargs for 'adam' must be among"
                                                    r".*got 'momentum'"):
        _fit(TrainConfig(optimizer="adam", optimizer_kwargs={"momentum": 0.9}, max_epochs=1))


@pytest.mark.parametrize("scheduler", SCHEDULERS.list())
def test_every_schedule_changes_the_learning_rate(scheduler):
    kwargs = {"plateau": {"patience": 0, "factor": 0.5}, "step": {"step_size": 1}}.get(
        scheduler, {})
    state = _fit(TrainConfig(scheduler=scheduler, scheduler_kwargs=kwargs, max_epochs=5,
                             lr=1e-2, device="cpu", patience=None, monitor="valid_accuracy"))
    lrs = [*state.history.column("lr"), state.optimizer.param_groups[0]["lr"]]
    assert len(set(lrs)) > 1, lrs


def test_onecycle_and_cosine_step_every_batch():
    state = _fit(TrainConfig(scheduler="cosine", max_epochs=2, lr=1e-2, batch_size=50,
                             device="cpu", patience=None))
    # 400 rows / 50 = 8 steps per epoch, T_max = 16 steps: the LR ends at eta_min
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_early_stopping_stops_and_restores_the_best_weights():
    snapshots = {}

    class Snapshot(Callback):
        order = 5  # before EarlyStopping

        def on_epoch_end(self, state):
            snapshots[state.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}

    X, y = _data()
    torch.manual_seed(0)
    model = create_model("mlp", n_features=8, n_classes=3, width=64)
    # a validation set with shuffled labels: validation loss gets worse as training fits
    y_val = y[400:][torch.randperm(200)]
    es = EarlyStopping("valid_loss", patience=3)
    state = fit(model, X[:400], y[:400], X[400:], y_val, n_classes=3,
                config=TrainConfig(max_epochs=50, lr=1e-2, device="cpu"),
                callbacks=[es, Snapshot()])
    assert state.stop_reason and "has not improved for 3 epochs" in state.stop_reason
    assert state.epoch == es.best_epoch + 3 < 50
    assert state.best_epoch == es.best_epoch
    best = snapshots[es.best_epoch]
    for k, v in state.model.state_dict().items():
        torch.testing.assert_close(v, best[k])


def test_callback_can_stop_training():
    class StopAtTwo(Callback):
        def on_epoch_end(self, state):
            if state.epoch == 2:
                raise StopTraining("enough")

    state = _fit(TrainConfig(max_epochs=10, device="cpu"), callbacks=[StopAtTwo()])
    assert state.epoch == 2 and state.stop_reason == "enough"


def test_divergence_stops_with_advice():
    state = _fit(TrainConfig(optimizer="sgd", lr=1e6, max_epochs=5, device="cpu"))
    assert state.stop_reason.startswith("diverged")
    assert "--lr" in state.stop_reason and state.epoch < 5


def test_an_exploding_loss_is_divergence_even_while_it_stays_finite():
    """Adam at lr 1e6 reaches a loss of ~1e21, finite, and must not pass as a trained model."""
    state = _fit(TrainConfig(optimizer="adam", lr=1e6, max_epochs=5, device="cpu"))
    assert state.stop_reason is not None and state.stop_reason.startswith("diverged")
    assert "exploded to more than 100 x" in state.stop_reason and state.epoch < 5


def test_class_weights_follow_scikit_learn_and_accept_label_mappings():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 80 + [1] * 15 + [2] * 5)
    ref = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(class_weight_vector("balanced", y, 3), ref)
    np.testing.assert_allclose(class_weight_vector({"b": 4, "c": 2.5}, y, 3, ["a", "b", "c"]),
                               [1, 4, 2.5])
    with pytest.raises(InvalidParameterError, match=r"class_weight keys must be class labels"):
        class_weight_vector({"z": 1}, y, 3, ["a", "b", "c"])


def test_balanced_sampler_draws_classes_equally_often(monkeypatch):
    seen = []
    X = torch.randn(1000, 4)
    y = torch.tensor([0] * 900 + [1] * 100)
    model = create_model("mlp", n_features=4, n_classes=2, width=8)
    original = torch.multinomial

    def spy(weights, n, replacement=False, generator=None):
        draw = original(weights, n, replacement, generator=generator)
        seen.append(y[draw])
        return draw

    monkeypatch.setattr(torch, "multinomial", spy)
    fit(model, X, y, n_classes=2, config=TrainConfig(sampler="balanced", max_epochs=2,
                                                     device="cpu", patience=None))
    assert len(seen) == 2  # one draw of n rows per epoch
    assert abs(torch.cat(seen).float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("clip", [0.01, None])
def test_gradient_clipping_bounds_the_update(clip):
    X, y = _data()
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    before = torch.cat([model.weight.detach().flatten(), model.bias.detach().flatten()])
    # one SGD step (8 rows, batch 8) with lr 1 and no momentum: the step is the gradient
    fit(model, X[:8] * 1000, y[:8], n_classes=3,
        config=TrainConfig(optimizer="sgd", lr=1.0, grad_clip=clip, batch_size=8,
                           max_epochs=1, device="cpu", patience=None,
                           optimizer_kwargs={"momentum": 0.0}))
    after = torch.cat([model.weight.detach().flatten(), model.bias.detach().flatten()])
    step = (after - before).norm().item()
    if clip is None:
        assert step > 1.0
    else:
        assert step == pytest.approx(clip, rel=1e-4)


def test_trailing_batch_of_one_is_skipped_for_batchnorm():
    X, y = _data(n=401)
    model = create_model("mlp", n_features=8, n_classes=3, batchnorm=True)
    state = fit(model, X, y, n_classes=3, config=TrainConfig(batch_size=100, max_epochs=1,
                                                             device="cpu", patience=None))
    assert state.steps_per_epoch == 4


def test_without_validation_the_monitor_falls_back_to_train():
    X, y = _data()
    model = create_model("mlp", n_features=8, n_classes=3)
    es = EarlyStopping("train_loss", patience=2)
    state = fit(model, X, y, n_classes=3, config=TrainConfig(max_epochs=3, device="cpu"),
                callbacks=[es])
    assert "valid_loss" not in state.history[-1] and es.best_epoch >= 1


@pytest.mark.parametrize("n_classes", [2, 3])
def test_auroc_is_recorded_when_monitored_and_early_stopping_keeps_its_best_epoch(n_classes):
    from sklearn.metrics import roc_auc_score

    from cellbench.train.engine import predict_logits

    X, y = _data(n_classes=n_classes, noise=2.0)
    torch.manual_seed(0)
    model = create_model("mlp", n_features=8, n_classes=n_classes, width=32)
    es = EarlyStopping("valid_auroc", patience=None)
    state = fit(model, X[:400], y[:400], X[400:], y[400:], n_classes=n_classes,
                config=TrainConfig(max_epochs=6, lr=3e-3, device="cpu", patience=None,
                                   monitor="valid_auroc"), callbacks=[es])
    aucs = state.history.column("valid_auroc")
    assert all(0.5 < a <= 1 for a in aucs) and "train_auroc" in state.history[-1]
    assert es.best_epoch == 1 + int(np.argmax(aucs))  # the first of equal bests
    # fit restored the best epoch's weights: their AUROC is the best one recorded
    proba = torch.softmax(predict_logits(model, X[400:]), 1).numpy()
    truth = roc_auc_score(y[400:].numpy(), proba[:, 1] if n_classes == 2 else proba,
                          multi_class="ovr")
    assert max(aucs) == pytest.approx(truth, abs=1e-6)
    plain = _fit(TrainConfig(max_epochs=1, device="cpu"))
    assert not any(k.endswith("_auroc") for k in plain.history[-1])  # only when monitored


def test_unknown_monitor_is_refused():
    with pytest.raises(InvalidParameterError, match=r"monitor must be a history key"):
        EarlyStopping("val_los")


def test_progress_bar_runs_alone_and_inside_a_shared_display():
    from rich.console import Console
    from rich.progress import Progress

    from cellbench.train import ProgressBar

    state = _fit(TrainConfig(max_epochs=2, device="cpu"), callbacks=[ProgressBar("solo")])
    assert state.epoch == 2
    shared = Progress(console=Console(file=io.StringIO()))
    with shared:
        _fit(TrainConfig(max_epochs=2, device="cpu"), callbacks=[ProgressBar("a", shared)])
        assert shared.tasks == []  # a shared display gets its task back


def test_before_batch_hook_sets_the_learning_rate_of_the_next_step():
    """An LR range test sets the rate before each batch: the history and the step obey it."""
    seen = []

    class Sweep(Callback):
        def on_batch_begin(self, state):
            for group in state.optimizer.param_groups:
                group["lr"] = 1e-3 * 2 ** state.step

        def on_batch_end(self, state):
            seen.append((state.step, state.optimizer.param_groups[0]["lr"],
                         float(state.loss)))

    _fit(TrainConfig(max_epochs=1, batch_size=100, device="cpu", patience=None),
         callbacks=[Sweep()])
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert [lr for _, lr, _ in seen] == [1e-3 * 2 ** k for k in range(4)]
    assert all(math.isfinite(loss) for _, _, loss in seen)


def test_after_backward_hook_sees_raw_gradients_before_clipping():
    norms = []

    class GradNorm(Callback):
        def on_after_backward(self, state):
            norms.append(torch.cat([p.grad.flatten() for p in state.model.parameters()])
                         .norm().item())

    X, y = _data()
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    fit(model, X[:8] * 1000, y[:8], n_classes=3, callbacks=[GradNorm()],
        config=TrainConfig(optimizer="sgd", lr=1.0, grad_clip=0.01, batch_size=8,
                           max_epochs=1, device="cpu", patience=None))
    assert len(norms) == 1 and norms[0] > 1.0  # clipping to 0.01 came after the hook


def test_a_given_optimizer_and_schedule_are_used_instead_of_the_config():
    from cellbench.train.optim import Schedule

    X, y = _data()
    torch.manual_seed(0)
    model = create_model("mlp", n_features=8, n_classes=3, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = Schedule(torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step), "step")
    state = fit(model, X[:400], y[:400], X[400:], y[400:], n_classes=3, optimizer=opt,
                schedule=sched, config=TrainConfig(optimizer="adam", lr=1e-3, max_epochs=2,
                                                   batch_size=100, device="cpu"))
    assert state.optimizer is opt and isinstance(opt, torch.optim.SGD)
    # 4 steps per epoch, halving each step: epoch 2 starts at 0.5 * 0.5**4
    assert state.history.column("lr") == [0.5, pytest.approx(0.5 * 0.5 ** 4)]
    assert state.history[-1]["valid_loss"] < math.log(3)  # the given optimizer trained it
