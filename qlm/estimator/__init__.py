"""RWT estimator: waiting-time distributions for requests in virtual queues.

Public API: :class:`RWTEstimator` (+ :class:`EstimatorConfig`, :class:`GroupLoad`,
:class:`PoolMember`), the paper's mean-only variant :class:`MeanOnlyEstimator` (ablation),
:class:`OutputLengthModel` (+ :class:`LengthPrior`),
:class:`ServiceRateModel`, the chunked-prefill replay :func:`prefill_done`, the pulling-rule
replay :class:`DispatchReplay`, the queueing arithmetic :func:`list_schedule` /
:func:`queue_starts`, :class:`WaitSamples`, and :func:`accuracy_block` for the simulator's
``estimator`` report.
"""

from qlm.estimator.accuracy import accuracy_block, reliability
from qlm.estimator.dispatch import DispatchReplay
from qlm.estimator.lengths import LengthPrior, OutputLengthModel
from qlm.estimator.mean_only import MeanOnlyEstimator
from qlm.estimator.prefill import prefill_done
from qlm.estimator.rwt import EstimatorConfig, GroupLoad, PoolMember, RWTEstimator
from qlm.estimator.service import ServiceRateModel, StepTimes
from qlm.estimator.waiting import Segment, WaitSamples, list_schedule, queue_starts

__all__ = [
    "DispatchReplay",
    "EstimatorConfig",
    "GroupLoad",
    "LengthPrior",
    "MeanOnlyEstimator",
    "OutputLengthModel",
    "PoolMember",
    "RWTEstimator",
    "Segment",
    "ServiceRateModel",
    "StepTimes",
    "WaitSamples",
    "accuracy_block",
    "list_schedule",
    "prefill_done",
    "queue_starts",
    "reliability",
]
