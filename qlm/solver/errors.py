"""Errors of the solver package.

::

    ValueError
    ├── UnknownBackendError      backend name not in the registry
    └── BackendUnavailableError  known backend whose solver is not installed here
"""

from __future__ import annotations

__all__ = ["BackendUnavailableError", "UnknownBackendError"]


class UnknownBackendError(ValueError):
    """The backend name is not registered; the message lists the known names."""


class BackendUnavailableError(ValueError):
    """The backend is registered but its solver cannot run on this machine."""
