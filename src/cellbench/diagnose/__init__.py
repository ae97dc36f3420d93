"""Diagnosis: why a network is stuck, in a fixed vocabulary of findings.

``findings`` (the :class:`Finding` type, the ids and fixes), ``data_rules`` (what no training
fixes), ``probes`` (cheap experiments before long training), ``rules`` (training, model and
evaluation findings from experiments), ``fixes`` (each fix as a change of the user's setting)
and ``ranking`` (the cause a fix proved first). ``cellbench.experiment.doctor`` runs them.
"""

from .data_rules import DATA_RULES, check_data
from .findings import FIXES, VOCABULARY, Finding, rank
from .fixes import Change, combine, propose
from .probes import (
    PROBE_RESULTS,
    PROBES,
    GradientFlow,
    GradientFlowResult,
    InitLossResult,
    LRRangeResult,
    LRSweep,
    OverfitResult,
    ProbeResult,
    gradient_flow,
    loss_at_init,
    lr_range_test,
    overfit_batch,
    prepare_probe,
    probe_result_from_dict,
    run_probes,
    suggest_lr,
    sweep_result,
    valley_lr,
)
from .ranking import rerank
from .rules import RULES, Evidence, apply_rules

__all__ = [
    "DATA_RULES",
    "FIXES",
    "PROBES",
    "PROBE_RESULTS",
    "RULES",
    "VOCABULARY",
    "Change",
    "Evidence",
    "Finding",
    "GradientFlow",
    "GradientFlowResult",
    "InitLossResult",
    "LRRangeResult",
    "LRSweep",
    "OverfitResult",
    "ProbeResult",
    "apply_rules",
    "check_data",
    "combine",
    "gradient_flow",
    "loss_at_init",
    "lr_range_test",
    "overfit_batch",
    "prepare_probe",
    "probe_result_from_dict",
    "propose",
    "rank",
    "rerank",
    "run_probes",
    "suggest_lr",
    "sweep_result",
    "valley_lr",
]
