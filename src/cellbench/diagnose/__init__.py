"""Diagnosis: why a network is stuck, in a fixed vocabulary of findings.

``findings`` (the :class:`Finding` type, the ids and fixes), ``data_rules`` (what no training
fixes), ``probes`` (cheap experiments before long training), ``rules`` (training, model and
evaluation findings from experiments), ``fixes`` (each fix as a change of the user's setting)
and ``ranking`` (the cause a fix proved first). ``cellbench.experiment.doctor`` runs them.
"""

from . import probes
from .data_rules import DATA_RULES, check_data
from .findings import FIXES, VOCABULARY, Finding, rank
from .fixes import Change, combine, propose
from .probes import *  # noqa: F403  (the probes' own API, listed once in probes.__all__)
from .ranking import rerank
from .rules import RULES, Evidence, apply_rules

__all__ = [
    "DATA_RULES", "FIXES", "RULES", "VOCABULARY", "Change", "Evidence", "Finding", "apply_rules",
    "check_data", "combine", "propose", "rank", "rerank", *probes.__all__,
]
