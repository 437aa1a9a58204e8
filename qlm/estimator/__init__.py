"""RWT estimator: waiting-time distributions for requests in virtual queues.

Public API: :class:`RWTEstimator` (+ :class:`EstimatorConfig`, :class:`GroupLoad`),
:class:`OutputLengthModel` (+ :class:`LengthPrior`), :class:`ServiceRateModel`, the queueing
arithmetic :func:`list_schedule` / :func:`queue_starts`, :class:`WaitSamples`, and
:func:`accuracy_block` for the simulator's ``estimator`` report.
"""

from qlm.estimator.accuracy import accuracy_block, reliability
from qlm.estimator.lengths import LengthPrior, OutputLengthModel
from qlm.estimator.rwt import EstimatorConfig, GroupLoad, RWTEstimator
from qlm.estimator.service import ServiceRateModel, StepTimes
from qlm.estimator.waiting import Segment, WaitSamples, list_schedule, queue_starts

__all__ = [
    "EstimatorConfig",
    "GroupLoad",
    "LengthPrior",
    "OutputLengthModel",
    "RWTEstimator",
    "Segment",
    "ServiceRateModel",
    "StepTimes",
    "WaitSamples",
    "accuracy_block",
    "list_schedule",
    "queue_starts",
    "reliability",
]
