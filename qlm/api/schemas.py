"""OpenAI request bodies the gateway accepts, validated (strict types), and their token counts.

Only the fields the gateway reads are declared; any other OpenAI field is kept and forwarded
to the engine. ``slo_class`` (SDK: ``extra_body``) and ``service_tier`` choose the SLO class
and are not forwarded.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatBody", "CompletionBody", "GATEWAY_FIELDS", "prompt_tokens"]

GATEWAY_FIELDS = ("slo_class", "service_tier")
"""Body fields the gateway consumes (removed before forwarding)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class ContentPart(_Body):
    type: str
    text: str | None = None


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class _Common(_Body):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    slo_class: str | None = Field(default=None, min_length=1, description="qlm: SLO class")
    service_tier: str | None = Field(default=None, description="OpenAI tier, mapped to a class")


class ChatBody(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionBody(_Common):
    """``POST /v1/completions`` (one prompt: a string or a list of token ids)."""

    prompt: str | list[int] | list[str] | list[list[int]]

    @property
    def limit(self) -> int | None:
        return self.max_tokens


def _text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def prompt_tokens(body: ChatBody | CompletionBody) -> int:
    """Prompt length as the engines count it (4 characters per token; token ids exactly).

    Raises ``ValueError`` for a batch of several prompts (one prompt per request)."""
    if isinstance(body, ChatBody):
        n = 2
        for m in body.messages:
            if isinstance(m.content, str):
                n += 4 + _text_tokens(m.content)
            elif isinstance(m.content, list):
                n += 4 + sum(_text_tokens(p.text or "") for p in m.content)
            else:
                n += 4
        return n
    p: Any = body.prompt
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str | list):
        p = p[0]
    if isinstance(p, str):
        return _text_tokens(p) if p else 1
    if isinstance(p, list) and p and all(isinstance(x, int) for x in p):
        return len(p)
    raise ValueError("prompt: a string or a list of token ids is required (one prompt only)")
