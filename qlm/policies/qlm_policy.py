"""``qlm``: the QLM policy slot (request groups, RWT estimator, MILP plan).

Until the estimator and solver land it runs EDF ordering with on-demand swapping.
"""

from __future__ import annotations

from qlm.policies.edf import EDFPolicy


class QLMPolicy(EDFPolicy):
    name = "qlm"
