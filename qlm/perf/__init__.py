"""Performance model: the catalogue (data) and the engine and swap models derived from it."""

from qlm.perf.catalog import Catalog, default_catalog, parse_catalog
from qlm.perf.engine_model import EngineProfile, build_profile, default_profile, fits
from qlm.perf.swap_model import Residency, SwapCosts, swap_costs

__all__ = [
    "Catalog",
    "EngineProfile",
    "Residency",
    "SwapCosts",
    "build_profile",
    "default_catalog",
    "default_profile",
    "fits",
    "parse_catalog",
    "swap_costs",
]
