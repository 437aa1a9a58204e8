"""Driving real vLLM engines over HTTP (no ``import vllm``)."""

from qlm.runtime.vllm.driver import ModelEndpoint, VLLMInstance, stats_from_metrics
from qlm.runtime.vllm.stream import RequestStream, StreamChunk, StreamEnd

__all__ = ["ModelEndpoint", "RequestStream", "StreamChunk", "StreamEnd", "VLLMInstance",
           "stats_from_metrics"]
