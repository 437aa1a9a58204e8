"""PuLP backends: the on-time program on CBC/HiGHS/Gurobi/CPLEX, and the paper baseline."""

from qlm.solver.pulp.milp import make_solver_factory, solve_on_time
from qlm.solver.pulp.paper import solve_paper

__all__ = ["make_solver_factory", "solve_on_time", "solve_paper"]
