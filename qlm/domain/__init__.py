"""The domain model: hardware, models, SLO classes, requests, groups. No I/O."""

from qlm.domain.cluster import GPUType, InstanceSpec, ModelSpec, NodeSpec
from qlm.domain.groups import GroupTable, RequestGroup, VirtualQueue
from qlm.domain.request import Request, RequestState
from qlm.domain.slo import DEFAULT_SLO_CLASSES, SLOClass

__all__ = [
    "DEFAULT_SLO_CLASSES",
    "GPUType",
    "GroupTable",
    "InstanceSpec",
    "ModelSpec",
    "NodeSpec",
    "Request",
    "RequestGroup",
    "RequestState",
    "SLOClass",
    "VirtualQueue",
]
