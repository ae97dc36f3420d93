"""CellbenchClassifier behaves as a scikit-learn estimator."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from cellbench import CellbenchClassifier, CellbenchWarning, InvalidParameterError


@parametrize_with_checks([
    CellbenchClassifier(model="mlp", max_epochs=20, random_state=0, device="cpu"),
    CellbenchClassifier(model="lda", random_state=0),
])
def test_scikit_learn_common_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellbenchWarning)
        check(estimator)


def _xy(tiny_table):
    return (tiny_table.iloc[:, :12].to_numpy(), tiny_table["label"].to_numpy(),
            tiny_table["donor"].to_numpy())


def test_cross_val_score_with_groups(tiny_table):
    X, y, groups = _xy(tiny_table)
    clf = CellbenchClassifier(model="cnn1d-seed", max_epochs=30, batch_size=32, lr=3e-3,
                              random_state=0, device="cpu")
    scores = cross_val_score(clf, X, y, groups=groups, cv=GroupKFold(3),
                             params={"groups": groups})
    assert scores.shape == (3,) and scores.min() > 0.6  # chance is 1/3


def test_clone_pipeline_and_pickle(tiny_table):
    X, y, _ = _xy(tiny_table)
    clf = CellbenchClassifier(model="mlp", model_kwargs={"width": 16}, max_epochs=20,
                              batch_size=32, random_state=0)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params()
    pipe = make_pipeline(FunctionTransformer(np.abs), clf).fit(X, y)
    assert pipe.score(X, y) > 0.5
    fitted = pipe[-1]
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(again.predict_proba(np.abs(X)), fitted.predict_proba(np.abs(X)))
    assert list(fitted.classes_) == ["type0", "type1", "type2"]
    assert fitted.history_ and fitted.best_epoch_ >= 1


def test_same_random_state_same_predictions(tiny_table):
    X, y, groups = _xy(tiny_table)
    a = CellbenchClassifier(model="cnn1d-seed", max_epochs=4, random_state=3).fit(X, y, groups)
    b = CellbenchClassifier(model="cnn1d-seed", max_epochs=4, random_state=3).fit(X, y, groups)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_seed_ensemble_through_the_estimator(tiny_table):
    X, y, groups = _xy(tiny_table)
    est = CellbenchClassifier(model="mlp", max_epochs=2, ensemble=3, ema=0.9,
                              label_smoothing=0.1, random_state=1).fit(X, y, groups)
    assert [m["seed"] for m in est.model_.info["members"]] == [1, 1001, 2001]
    assert est.predict_proba(X).shape == (len(X), 3)
    with pytest.raises(InvalidParameterError, match=r"The 'ensemble' parameter of "
                                                    r"CellbenchClassifier must be an int"):
        CellbenchClassifier(ensemble=0).fit(X, y)


def test_dict_class_weights_shift_predictions(tiny_table):
    X, y, _ = _xy(tiny_table)
    plain = CellbenchClassifier(model="logreg", random_state=0).fit(X, y)
    heavy = CellbenchClassifier(model="logreg", class_weight={"type2": 50.0},
                                random_state=0).fit(X, y)
    assert (heavy.predict(X) == "type2").sum() > (plain.predict(X) == "type2").sum()


def test_bad_parameters_use_scikit_learn_wording(tiny_table):
    X, y, _ = _xy(tiny_table)
    with pytest.raises(InvalidParameterError, match=r"The 'lr' parameter of CellbenchClassifier "
                                                    r"must be a number > 0; got -1"):
        CellbenchClassifier(lr=-1).fit(X, y)
    with pytest.raises(InvalidParameterError, match=r"The 'val_size' parameter"):
        CellbenchClassifier(val_size=1.5).fit(X, y)
    with pytest.raises(InvalidParameterError, match=r"Unknown model 'mpl'\. Did you mean 'mlp'"):
        CellbenchClassifier(model="mpl").fit(X, y)


def test_a_diverged_fit_warns_instead_of_passing_as_trained(tiny_table):
    X = tiny_table.filter(like="CD").to_numpy()
    clf = CellbenchClassifier(model="mlp", lr=1e6, max_epochs=3, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CellbenchWarning)
        clf.fit(X, tiny_table["label"].to_numpy())
    assert any("failed to train (diverged" in str(w.message) for w in caught)
