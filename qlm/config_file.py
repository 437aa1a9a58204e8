"""Reading configuration files: the only I/O step before validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qlm.errors import ConfigError


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML of ``path``; an unreadable file or bad YAML is a one-line ConfigError
    naming the file (and the line, when the parser knows it)."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(p), where, f"invalid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "", f"cannot read ({getattr(exc, 'strerror', None) or exc})") from None
