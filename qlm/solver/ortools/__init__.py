"""OR-Tools CP-SAT backend (solver types stay inside this package)."""

from qlm.solver.ortools.cpsat import solve_on_time

__all__ = ["solve_on_time"]
