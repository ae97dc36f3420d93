"""Findings: what `cellbench doctor` says is wrong, in a fixed vocabulary.

A :class:`Finding` is one diagnosis with its evidence: a stable ``id`` (a key of
:data:`VOCABULARY`), a ``severity``, a one-line ``message`` with the key number, the numbers
behind it, the fix experiment that would test it (a key of :data:`FIXES`) or the advice the user
must follow themselves. Findings come from the data rules (``diagnose.data_rules``), the probes
and the experiments, and are ranked by :func:`rank` for the report.

Severities:

``error``
    The numbers cannot be trusted, or training cannot work (a leak, a confound, NaN loss).
``warning``
    It costs accuracy; a fix is tried.
``info``
    Worth knowing; nothing is wrong by itself. A healthy setup gets nothing above this.

>>> f = Finding("class_imbalance", "info", "majority class holds 60% of rows",
...             {"majority_share": 0.6}, fix="class_weights")
>>> Finding.from_dict(f.to_dict()) == f
True
>>> [x.severity for x in rank([f, Finding("nan_loss", "error", "loss is NaN", {})])]
['error', 'info']
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..exceptions import InvalidParameterError

__all__ = ["CATEGORIES", "FIXES", "SEVERITIES", "VOCABULARY", "Entry", "Finding", "rank"]

SEVERITIES = ("error", "warning", "info")  # most severe first; rank() sorts by this order
CATEGORIES = ("data", "training", "model", "evaluation")


@dataclass(frozen=True)
class Entry:
    """One finding id: what it means, how it is detected, what is tried.

    Attributes
    ----------
    id : str
        The finding id (the key in :data:`VOCABULARY`).
    category : {"data", "training", "model", "evaluation"}
        Where the problem lives.
    meaning : str
        What is wrong, in one sentence a biologist can read.
    detection : str
        The one-sentence rule with its threshold (relative to the data: chance rate, class
        counts, number of groups, CI width).
    fix : str
        Id(s) of the fix experiments tried (keys of :data:`FIXES`), or ``"none: ..."`` saying
        what the user must change.
    """

    id: str
    category: Literal["data", "training", "model", "evaluation"]
    meaning: str
    detection: str
    fix: str


def _entries(*entries: Entry) -> dict[str, Entry]:
    return {e.id: e for e in entries}


VOCABULARY: dict[str, Entry] = _entries(
    # -- data ---------------------------------------------------------------------------------
    Entry("unscaled_input", "data",
          "The network sees inputs far from unit scale: raw 0-255 pixels, un-transformed "
          "cytometry intensities, or features whose scales differ by orders of magnitude.",
          "Images whose values as fed have an RMS above 10 (10x a standardized input); a table "
          "that checks.check_scale calls raw intensities with neither arcsinh nor quantile in "
          "the transform; or, without standardize/quantile, per-feature RMS spanning more than "
          "100x or exceeding 100.",
          "normalize_input"),
    Entry("sample_shift", "data",
          "The same cell type sits at other intensities in other samples: a batch or "
          "instrument shift that a new patient's cells will carry too.",
          "Tables with groups and no sample-* step in the transform: per class present in at "
          "least 3 groups with 10 or more training cells each, the spread across groups of "
          "the class's per-marker mean (net of its sampling noise) in pooled within-group "
          "standard deviations, median over classes and markers; warning at 1 or more (samples "
          "differ as much as one sample's cells do), info from 0.5.",
          "normalize_samples"),
    Entry("class_imbalance", "data",
          "Classes have very different sizes, so accuracy flatters the majority class and the "
          "loss neglects the small ones.",
          "warning when always predicting the majority class already removes two thirds of "
          "chance's error (majority share >= 1 - (1 - 1/K)/3, i.e. 5:1 for two classes) and some "
          "smaller class is not separated from the rest by any single feature (held-out "
          "one-vs-rest balanced accuracy < 97.5%); info when the largest class is >= 3x the "
          "smallest.",
          "class_weights, balanced_sampler"),
    Entry("tiny_class", "data",
          "A class has so few held-out rows that its recall cannot be measured, or so few "
          "training rows that it cannot be learned.",
          "warning when a class's pooled held-out rows give a 95% Wilson CI of its recall (at "
          "50%) as wide as the whole range from chance 1/K to perfect or number fewer than 10, "
          "or it has fewer than 10 training rows, and it has at most half the median class's "
          "rows there; info when that CI is half that range.",
          "none: collect more rows of the class, merge it, or use k-fold CV (--cv) so every row "
          "is tested once"),
    Entry("group_class_confound", "data",
          "Labels are constant within each patient/sample/batch, so the model can score by "
          "recognising the sample instead of the disease.",
          "error when a class occurs only in groups that hold nothing else and in fewer than 3 "
          "of them; warning when labels are per group and the group-level accuracy CI (Wilson, "
          "n = number of groups) is as wide as the range from chance to perfect (info at half "
          "that range); warning when a class occurs in one group only (a grouped split cannot "
          "both train and test it).",
          "none: collect more patients/samples per class, or balance batches across classes"),
    Entry("missing_groups", "data",
          "No groups were given, but a column (or image file-name prefix) looks like a "
          "patient/sample/slide id: cells of one sample may sit in both train and test.",
          "A candidate from checks.id_like_columns (recorded at load time) or an id-named "
          "feature, an id-like key of an .npz, or a file-name prefix with 2..n/5 values; the "
          "doctor confirms it (error) when LightGBM (tables) or logistic regression (images) "
          "on a random split beats the same model on a split grouped by the candidate by more "
          "than the two accuracies' combined 95% half-widths, and drops it to info otherwise.",
          "grouped_split"),
    Entry("duplicate_rows_across_splits", "data",
          "Identical rows sit in train and in a held-out part, so held-out scores partly "
          "measure memory.",
          "warning when the share of held-out rows with an exact same-label copy in train "
          "exceeds that part's accuracy Wilson half-width and copies are 10x more than chance "
          "collisions of the columns' values would give; error when more than half are copies; "
          "info below.",
          "none: remove duplicated rows/files before splitting"),
    Entry("leaking_feature", "data",
          "One feature alone gives the label away: a copy or code of the label, or a row id "
          "ordered with the label.",
          "error when a one-feature classifier (quantile bins -> class, fitted on train, scored "
          "on held-out rows) has a balanced-accuracy Wilson lower bound recovering >= 95% of the "
          "range from chance 1/K to perfect, with >= 3 classes, or with 2 classes when the "
          "feature is also discrete (<= sqrt(n) integer values) or a row identifier; info for a "
          "2-class continuous marker (CD19 separates B cells) and for unpredictive row ids.",
          "drop_column"),
    Entry("too_few_samples", "data",
          "Too few rows: a model can fit any labelling of the training part, or the held-out "
          "part cannot measure any class.",
          "error when a table's training rows are at most 2(d+1) for d features (every "
          "labelling is linearly separable: Cover 1965); warning when the median class has "
          "fewer than 10 training rows or held-out rows giving a recall CI (Wilson, 95%) as wide "
          "as chance 1/K to perfect; info "
          "below 10(d+1) training rows; the doctor adds a learning curve still rising at full "
          "size.",
          "none: collect more cells/images, fewer features, or k-fold CV"),
    Entry("label_conflict", "data",
          "Identical feature rows carry different labels, which caps the accuracy any model "
          "can reach.",
          "warning when the accuracy lost on conflicting duplicates (1 - ceiling) exceeds the "
          "held-out accuracy's Wilson half-width and duplicates are more than chance collisions "
          "would give; info otherwise.",
          "none: check the labels of duplicated rows (gating, merges of files)"),
    Entry("unlabelled_class", "data",
          "A class is named like cells without a label (Unlabeled, ungated, unknown, -1): it "
          "is learned and scored as a population of its own, though it may hold cells of any "
          "population.",
          "A class name matching un-labelled/gated/assigned/known, not gated, no label, -1 or "
          "?; warning when its share of the held-out rows exceeds the held-out accuracy's "
          "Wilson half-width, info otherwise.",
          "none: remove the class with --exclude-labels if its cells have no label"),
    # -- training ------------------------------------------------------------------------------
    Entry("lr_too_high", "training",
          "The learning rate is past the stable range: the loss jumps or diverges.",
          "The LR is at or past where the LR range test's loss blew up, or more than 10x the "
          "test's suggestion while the training loss rises over epochs (slope above 2 "
          "standard errors) or while the network is stuck at chance with the LR nearer (in "
          "decades) to the blow-up than to the suggestion.",
          "lr_from_range_test"),
    Entry("lr_too_low", "training",
          "The learning rate is so small that training crawls.",
          "The LR is more than 10x below the range test's suggestion and, in most runs, the "
          "validation loss is still falling at the end (slope below -2 standard errors), or "
          "the network is stuck at chance.",
          "lr_from_range_test"),
    Entry("too_few_epochs", "training",
          "Training stopped while the network was still improving.",
          "Most runs used every epoch (no early stop), kept a weight set from the last 10% of "
          "epochs and their validation accuracy still rose over the last third (slope above "
          "2 standard errors; with under 3 epochs: the last epoch best, the loss falling).",
          "more_epochs"),
    Entry("overfitting", "training",
          "The model fits the training set much better than held-out data.",
          "Eval-mode train accuracy exceeds validation accuracy by more than the difference's "
          "95% half-width, and validation loss rose after its best epoch by more than twice "
          "its epoch-to-epoch noise, in most runs.",
          "regularize"),
    Entry("underfitting", "training",
          "The model fits its own training set no better than another model does held-out "
          "data.",
          "Another model beats yours by a paired test and your eval-mode training accuracy "
          "is below the lower 95% bound of that model's held-out accuracy.",
          "bigger_model"),
    Entry("stuck_at_chance", "training",
          "The network predicts (almost) one class: it never left chance level.",
          "Balanced accuracy's 95% CI reaches chance 1/K while another model is significantly "
          "better; the likely cause is named from the settings and probes: a dropout rate >= "
          "0.5, too few epochs, an LR 10x off the range test, over half the units of a layer "
          "dead, or vanishing gradients (first/last layer gradient-norm ratio below 1e-3).",
          "normalize_input, lighter_dropout, more_epochs, lr_from_range_test, add_batchnorm, "
          "shallower_model, default_recipe"),
    Entry("dropout_gap", "training",
          "Dropout makes training accuracy (measured with dropout on) look lower than "
          "validation, or heavy dropout keeps the network from learning.",
          "Validation accuracy exceeds the dropout-on running train accuracy by more than the "
          "difference's 95% half-width while eval-mode train accuracy does not; or the network "
          "trails another model and some dropout rate is 0.5 or more (then tested).",
          "lighter_dropout"),
    Entry("nan_loss", "training",
          "The loss became NaN or infinite: training broke.",
          "A run stopped as diverged with a non-finite training loss or one past the square "
          "root of float32's largest number (1.8e19, where the next step's squared gradients "
          "overflow), or the gradient-flow probe's loss became non-finite; a loss that "
          "exploded below that bound is lr_too_high's.",
          "lr_from_range_test, grad_clip"),
    # -- model ---------------------------------------------------------------------------------
    Entry("below_baseline", "model",
          "The network is worse than a simple baseline or the reference network on the same "
          "splits.",
          "A baseline (majority, logistic regression, LDA, LightGBM) or the reference network "
          "(MLP for tables, ResNet-8 for images) beats it by a paired test (Holm) by more than "
          "the smallest difference worth detecting (--set min_effect, 0.5 points); fix: an "
          "MLP for a convolution over table columns, else the default recipe.",
          "mlp_instead_of_conv, default_recipe"),
    Entry("feature_order_arbitrary", "model",
          "A 1-D CNN runs over table columns whose order means nothing, so its convolutions "
          "see arbitrary neighbours.",
          "Run when a convolution over table columns trails another model and is not stuck: "
          "warning when its accuracy over 5 random column orders varies more than over 5 "
          "seeds (variance ratio above the F test's 95% point); info otherwise, raised to a "
          "warning when the order-free MLP is tested and helps.",
          "mlp_instead_of_conv"),
    # -- evaluation ----------------------------------------------------------------------------
    Entry("difference_not_significant", "evaluation",
          "The models' differences are within noise: none is shown better than yours.",
          "Every other model's paired test against yours has a Holm-adjusted p above alpha "
          "although their pooled accuracies differ; for a finished run (doctor RUN_DIR), the "
          "networks whose test against the run's reference is above alpha, a warning named "
          "first when the reference is a network too (a ladder of variants whose steps "
          "cannot be told apart).",
          "none: report them as equivalent, or collect more test rows/groups"),
    Entry("metric_misleading", "evaluation",
          "Accuracy hides a failure: some classes are barely recalled.",
          "Accuracy's 95% CI lies above balanced accuracy's and some class is recalled below "
          "chance 1/K, while the network is not stuck at chance; its fix is judged on "
          "balanced accuracy.",
          "class_weights"),
)

FIXES: dict[str, str] = {
    "normalize_input": "Scale inputs to unit range: per-channel image standardization, arcsinh "
                       "(cofactor 5 mass / 150 flow) then standardize for cytometry.",
    "normalize_samples": "Align each sample's markers to the training samples' mean and "
                         "spread from its own cells (sample-standardize after arcsinh).",
    "lr_from_range_test": "Set the learning rate to the LR range test's suggestion (where "
                          "the smoothed loss has fallen half-way to its minimum; geometric "
                          "mean over seeded sweeps).",
    "add_batchnorm": "Add batch normalization after each convolution / hidden layer.",
    "lighter_dropout": "Lower dropout (e.g. halve it, or 0.1-0.2) and compare.",
    "regularize": "Add weight decay and/or dropout, with early stopping on validation loss.",
    "class_weights": "Weight the loss by inverse class frequency (class_weight='balanced').",
    "balanced_sampler": "Draw each class equally often in each batch (sampler='balanced').",
    "more_epochs": "Train longer (raise max_epochs and patience) until validation stops "
                   "improving.",
    "grouped_split": "Split by the candidate group column so no patient/sample is in two "
                     "parts, and compare with the random split.",
    "drop_column": "Retrain without the suspect feature(s) and compare.",
    "mlp_instead_of_conv": "Replace the 1-D CNN by an MLP (feature order carries no meaning "
                           "in a table).",
    "bigger_model": ("Widen the network 4x, to at least its preset width (an image "
                     "network's width multiplier 2x), and give a one-layer network a second."),
    "shallower_model": "Use fewer layers (or residual connections) when a deep network does "
                       "not train.",
    "grad_clip": "Clip the global gradient norm.",
    "default_recipe": "Train the default network for the data kind (MLP for tables, ResNet-8 "
                      "for images) with default settings (Adam, lr 1e-3, early stopping).",
}

_SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}


def _jsonable(value: Any, where: str) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise InvalidParameterError(
        f"Finding evidence {where} must be JSON-able (numbers, strings, lists, dicts); got "
        f"{type(value).__name__}. Convert it with str() or float() first."
    )


@dataclass(frozen=True)
class Finding:
    """One diagnosis with its evidence.

    Parameters
    ----------
    id : str
        A key of :data:`VOCABULARY`.
    severity : {"error", "warning", "info"}
        See the module docstring.
    message : str
        One line, in words, with the key number.
    evidence : mapping
        The numbers behind it; converted to plain JSON types (numpy scalars become floats/ints,
        tuples lists, NaN None).
    fix : str or None
        Id of the fix experiment proposed (a key of :data:`FIXES`), or None.
    advice : str
        What the user must change themselves (data problems no training fixes).
    strength : float
        How far past its threshold, in units of its own noise where possible; ranks findings
        of equal severity.
    plots : tuple of str
        Run-directory-relative paths of evidence plots (filled by the doctor).

    Raises
    ------
    InvalidParameterError
        Unknown id, severity or fix, or evidence that is not JSON-able.
    """

    id: str
    severity: str
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    fix: str | None = None
    advice: str = ""
    strength: float = 0.0
    plots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.id not in VOCABULARY:
            problems.append(f"Finding id must be a key of VOCABULARY; got {self.id!r}. Add an "
                            "Entry for it in diagnose/findings.py.")
        if self.severity not in SEVERITIES:
            problems.append(f"Finding severity must be one of {', '.join(SEVERITIES)}; got "
                            f"{self.severity!r}.")
        if self.fix is not None and self.fix not in FIXES:
            problems.append(f"Finding fix must be None or a key of FIXES; got {self.fix!r}. "
                            f"Known fixes: {', '.join(FIXES)}.")
        if not isinstance(self.strength, (int, float)) or not math.isfinite(self.strength):
            problems.append(f"Finding strength must be a finite number; got {self.strength!r}.")
        if problems:
            raise InvalidParameterError(" ".join(problems))
        evidence = _jsonable(dict(self.evidence), "evidence")
        object.__setattr__(self, "evidence", evidence)
        object.__setattr__(self, "strength", float(self.strength))
        object.__setattr__(self, "plots", tuple(str(p) for p in self.plots))

    @property
    def entry(self) -> Entry:
        """The vocabulary entry of this finding's id."""
        return VOCABULARY[self.id]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``json.dumps`` works on it)."""
        return {
            "id": self.id,
            "severity": self.severity,
            "category": self.entry.category,
            "message": self.message,
            "evidence": json.loads(json.dumps(dict(self.evidence))),
            "fix": self.fix,
            "advice": self.advice,
            "strength": self.strength,
            "plots": list(self.plots),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict` (``category`` is derived, so it is ignored)."""
        missing = [k for k in ("id", "severity", "message") if k not in d]
        if missing:
            raise InvalidParameterError(
                f"Finding dict must have keys id, severity and message; got none for "
                f"{', '.join(missing)} (keys: {', '.join(map(str, d))})."
            )
        return cls(
            id=d["id"],
            severity=d["severity"],
            message=d["message"],
            evidence=dict(d.get("evidence") or {}),
            fix=d.get("fix"),
            advice=d.get("advice", ""),
            strength=float(d.get("strength", 0.0)),
            plots=tuple(d.get("plots", ())),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Finding):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.id, self.severity, self.message))


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Findings sorted by severity (error first), then strength (largest first); stable."""
    return sorted(findings, key=lambda f: (_SEVERITY_ORDER[f.severity], -f.strength))
