"""What one benchmark request produced, as measured by the client (wall seconds)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestRecord"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request's outcome, measured from the moment it was sent (``vllm bench serve``'s
    definitions):

    - ``ttft_s``: to the first SSE chunk with non-empty ``choices``;
    - ``itl_s``: every gap between successive chunks with ``choices`` after the first;
    - ``e2el_s``: to the last chunk with ``choices``;
    - ``output_tokens``: ``usage.completion_tokens`` when the server sent usage, else the
      number of chunks that carried text.

    ``success`` is False when the request got no 200, its stream carried an error or ended
    without a first token or with ``finish_reason`` ``abort``/``error``, or it raised;
    ``error`` is then the failure reason, grouped for counting (``"HTTP 429
    (rate_limit_error)"``, ``"ReadError"``, ``"timeout"``), and ``detail`` the message.
    ``send_lag_s`` is how late the request left relative to its planned send time
    (client falling behind, or waiting for ``--max-concurrency``).
    """

    index: int
    slo_class: str
    success: bool
    model: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float | None = None
    e2el_s: float | None = None
    itl_s: tuple[float, ...] = ()
    start_s: float = 0.0
    send_lag_s: float = 0.0
    finish_reason: str | None = None
    error: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.success and (self.ttft_s is None or self.e2el_s is None):
            raise ValueError(f"request {self.index}: a successful record needs ttft_s and e2el_s")
        if not self.success and not self.error:
            raise ValueError(f"request {self.index}: a failed record needs an error reason")

    @property
    def tpot_s(self) -> float | None:
        """``(e2el - ttft) / (output_tokens - 1)``; None for a failure or one output token."""
        if not self.success or self.output_tokens <= 1:
            return None
        assert self.ttft_s is not None and self.e2el_s is not None
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)
