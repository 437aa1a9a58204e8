"""Errors raised by qlm.

    QLMError
    ├── ConfigError        bad scenario, config, trace or snapshot input (one line: source, field, reason)
    └── PolicyError        a policy asked for an action the cluster cannot carry out
"""

from __future__ import annotations


class QLMError(Exception):
    """Base of every error qlm raises on purpose."""


class ConfigError(QLMError, ValueError):
    """Invalid input data. ``str(err)`` is one line: ``<source>: <field>: <reason>``."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {reason}")


class PolicyError(QLMError):
    """A policy issued an action that is invalid in the current cluster state."""


def pydantic_error_line(source: str, exc: Exception) -> ConfigError:
    """Turn a pydantic ``ValidationError`` into a one-line :class:`ConfigError` (first error only)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        errs = errors()
        if errs:
            first = errs[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            msg = str(first.get("msg", "invalid value"))
            if "input" in first and first.get("type") != "missing":
                inp = repr(first["input"])
                if len(inp) <= 60:
                    msg = f"{msg} (got {inp})"
            more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
            return ConfigError(source, loc, msg + more)
    return ConfigError(source, "", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def validation_error(source: str, exc: Exception) -> ConfigError:
    """Like :func:`pydantic_error_line`, and when a validator's message names a nested field
    itself (``"engines.0.models.1.url: required ..."``), that field is reported as the field."""
    err = pydantic_error_line(source, exc)
    reason = err.reason.removeprefix("Value error, ")
    head, sep, rest = reason.partition(": ")
    parts = head.split(".")
    if sep and head and all(x.isdigit() or x.replace("-", "_").isidentifier() for x in parts):
        nested = err.field and not head.startswith(err.field) and not head.startswith(err.field.split(".")[0] + ".")
        return ConfigError(source, f"{err.field}.{head}" if nested else head, rest)
    return ConfigError(source, err.field, reason)
