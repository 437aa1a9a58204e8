"""Factories shared by the Batch API tests: a manual clock and input-file builders."""

from __future__ import annotations

import json
from typing import Any

from qlm.api.batch import BatchStore

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
T0 = 1_700_000_000.0
MODELS = frozenset({"m", "m2"})


class Clock:
    """A manual clock in Unix seconds: ``clock()`` reads it, ``clock.advance(dt)`` moves it."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def line(i: int | str, *, model: str = "m", url: str = CHAT, **extra: Any) -> dict[str, Any]:
    """One valid input line with ``custom_id`` ``req-<i>``."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]}
    return {"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body, **extra}


def jsonl(items: list[Any]) -> bytes:
    """Encode items as JSONL; strings are written as-is (for malformed lines)."""
    return "\n".join(x if isinstance(x, str) else json.dumps(x) for x in items).encode() + b"\n"


def requests_file(n: int, **kw: Any) -> bytes:
    return jsonl([line(i, **kw) for i in range(n)])


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(x) for x in data.decode().splitlines() if x.strip()]


def make_batch(store: BatchStore, n: int = 5, *, window: str = "24h", endpoint: str = CHAT) -> str:
    """Upload ``n`` requests and create a batch over them; returns the batch id."""
    f = store.create_file(requests_file(n, url=endpoint), filename="in.jsonl", known_models=MODELS)
    return store.create_batch(input_file_id=f.id, endpoint=endpoint, completion_window=window).id
