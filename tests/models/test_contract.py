"""One contract over every tabular model in the registry (timm's test_models pattern)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cellbench.exceptions import InvalidParameterError, UnknownNameError
from cellbench.models import MODELS, BaseModel, count_parameters, create_model

TABULAR = [n for n in MODELS.list() if MODELS.get(n).input_kind in ("tabular", "any")]
NETWORKS = [n for n in TABULAR if MODELS.get(n).family == "nn"]


def _data(n_classes: int, n: int = 120, d: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, :n_classes] += 3 * np.eye(n_classes, d)[y][:, :n_classes]
    return X, y


@pytest.mark.parametrize("name", TABULAR)
@pytest.mark.parametrize("n_classes", [2, 5])
def test_every_model_fits_and_predicts_probabilities(name, n_classes):
    if name == "xgboost":
        pytest.importorskip("xgboost")
    X, y = _data(n_classes)
    model = create_model(name, n_features=X.shape[1], n_classes=n_classes)
    if isinstance(model, BaseModel):
        model.fit(X[:90], y[:90], X[90:], y[90:])
        proba = model.predict_proba(X)
    else:
        out = model(torch.from_numpy(X))
        assert out.shape == (len(X), n_classes)
        loss = nn.functional.cross_entropy(out, torch.from_numpy(y))
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        model.eval()
        proba = torch.softmax(model(torch.from_numpy(X)), 1).detach().numpy()
    assert proba.shape == (len(X), n_classes)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert count_parameters(model) >= 0


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("n_features", [1, 2, 3, 8, 24])
def test_networks_accept_any_feature_count(name, n_features):
    model = create_model(name, n_features=n_features, n_classes=3)
    model.eval()
    assert model(torch.randn(4, n_features)).shape == (4, 3)


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_overfit_32_samples(name):
    torch.manual_seed(0)
    X = torch.randn(32, 8)
    y = torch.arange(32) % 4
    model = create_model(name, n_features=8, n_classes=4, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_expose_features_and_head(name):
    model = create_model(name, n_features=10, n_classes=3).eval()
    x = torch.randn(5, 10)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))


class SeedCytometryCNN(nn.Module):
    """The network exactly as posted in seed 000 (dropout from its code: 0.5 / 0.9)."""

    def __init__(self, N, n_features):
        super().__init__()
        conv1_out = int(n_features)
        conv2_out = int(conv1_out)
        conv3_out = int(conv1_out)
        self.conv1 = nn.Conv1d(1, conv1_out, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv1d(conv1_out, conv2_out, kernel_size=3, stride=1, padding=1)
        self.conv3 = nn.Conv1d(conv2_out, conv3_out, kernel_size=3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm1d(conv1_out)
        self.bn2 = nn.BatchNorm1d(conv2_out)
        self.bn3 = nn.BatchNorm1d(conv3_out)
        self.relu = nn.LeakyReLU()
        self.pool = nn.AvgPool1d(kernel_size=2, stride=2)
        fc1_in = conv3_out * int(n_features / 2)
        fc1_out = int(fc1_in / 3)
        self.fc1 = nn.Linear(fc1_in, fc1_out)
        fc2_out = int(fc1_out / 2)
        self.fc2 = nn.Linear(fc1_out, fc2_out)
        self.fc3 = nn.Linear(fc2_out, N)
        self.dropout1 = nn.Dropout(0.5)
        self.dropout2 = nn.Dropout(0.9)

    def forward(self, x):
        x = x.unsqueeze(1)
        x = self.bn1(self.relu(self.conv1(x)))
        x = self.bn2(self.relu(self.conv2(x)))
        x = self.bn3(self.relu(self.conv3(x)))
        x = self.pool(x)
        x = x.view(x.size(0), -1)
        x = self.relu(self.dropout1(self.fc1(x)))
        x = self.relu(self.dropout2(self.fc2(x)))
        return self.fc3(x)


@pytest.mark.parametrize("n_features", [24, 7, 4])
def test_cnn1d_seed_preset_is_the_posted_network(n_features):
    ours = create_model("cnn1d-seed-0509", n_features=n_features, n_classes=2)
    theirs = SeedCytometryCNN(2, n_features)
    shapes = {k: v.shape for k, v in theirs.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
    ours.load_state_dict(theirs.state_dict())
    assert (ours.dropout1.p, ours.dropout2.p) == (0.5, 0.9)
    x = torch.randn(16, n_features)
    ours.train()
    theirs.train()
    torch.manual_seed(3)
    a = ours(x)
    torch.manual_seed(3)
    b = theirs(x)
    torch.testing.assert_close(a, b)  # same layers, same order, same dropout draws


def test_cnn1d_seed_text_preset_uses_025_05_and_can_drop_batchnorm():
    model = create_model("cnn1d-seed", n_features=24, n_classes=2)
    assert (model.dropout1.p, model.dropout2.p) == (0.25, 0.5)
    plain = create_model("cnn1d-seed", n_features=24, n_classes=2, batchnorm=False,
                         dropout=0.0)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    with pytest.raises(InvalidParameterError, match=r"dropout must be a float or a pair"):
        create_model("cnn1d-seed", n_features=24, n_classes=2, dropout=(0.1, 0.2, 0.3))


def test_unknown_model_and_argument_messages():
    with pytest.raises(UnknownNameError, match=r"Unknown model 'cnn1d-sed'\. Did you mean "
                                               r"'cnn1d-seed'\?.*Run `cellbench models`"):
        create_model("cnn1d-sed", n_features=3, n_classes=2)
    with pytest.raises(InvalidParameterError, match=r"model_kwargs for 'mlp' must be among "
                                                    r"depth, width.*got 'widht'"):
        create_model("mlp", n_features=3, n_classes=2, widht=4)


def test_init_schemes_change_weights():
    torch.manual_seed(0)
    a = create_model("mlp", n_features=5, n_classes=2)
    torch.manual_seed(0)
    b = create_model("mlp", n_features=5, n_classes=2, init="kaiming")
    assert not torch.equal(a.features[0].weight, b.features[0].weight)
    with pytest.raises(InvalidParameterError, match="init must be"):
        create_model("mlp", n_features=5, n_classes=2, init="orthogonal")


def test_linear_baselines_match_scikit_learn_probabilities():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression

    for n_classes in (2, 4):
        X, y = _data(n_classes, n=200)
        ours = create_model("lda", n_classes=n_classes).fit(X, y)
        ref = LinearDiscriminantAnalysis().fit(X, y)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)
        ours = create_model("logreg", n_classes=n_classes).fit(X, y)
        ref = LogisticRegression(max_iter=1000, random_state=0).fit(X, y)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_baselines_fill_classes_absent_from_training():
    X, y = _data(3)
    model = create_model("logreg", n_classes=4).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 4) and (proba[:, 3] == 0).all()


def test_lightgbm_stops_early_and_round_trips_its_state():
    X, y = _data(3, n=300)
    model = create_model("lightgbm", n_classes=3, n_estimators=500).fit(X[:200], y[:200],
                                                                      X[200:], y[200:])
    assert model.best_iteration_ < 500
    clone = create_model("lightgbm", n_classes=3)
    clone.set_state(model.get_state())
    np.testing.assert_allclose(clone.predict_proba(X), model.predict_proba(X))
    assert model.n_params > 0
