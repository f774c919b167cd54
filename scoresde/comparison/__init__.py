"""Compare samplers numerically: a solver x steps grid on a ``Problem``.

``problems``: what a grid runs on (exact-score mixtures, the presets, trained checkpoints);
``specs``: the ``"name:key=val"`` solver specifications; ``runner``: ``compare`` itself;
``table``: its result, one ``Row`` per run; ``report``: the table and figures as files. The
``scoresde compare`` and ``scoresde demo`` commands are in ``scoresde.cli.compare``.
"""

from .problems import (
    FLOOR_PAIRS,
    PROBLEMS,
    SDES,
    TARGETS,
    Problem,
    aniso256,
    checkpoint_problem,
    gmm64,
    grid,
    mixture_problem,
    narrow,
    resolve_problem,
    resolve_sde,
    ring,
)
from .report import write_outputs
from .runner import DEFAULT_RTOLS, METRICS, MIXTURE_METRICS, compare
from .specs import (
    is_adaptive,
    is_deterministic,
    parse_options,
    parse_solver,
    solver_label,
    split_solvers,
)
from .table import ComparisonTable, Row, fmt, markdown_table

__all__ = [
    "compare",
    "ComparisonTable",
    "Row",
    "Problem",
    "PROBLEMS",
    "SDES",
    "TARGETS",
    "METRICS",
    "MIXTURE_METRICS",
    "DEFAULT_RTOLS",
    "FLOOR_PAIRS",
    "mixture_problem",
    "checkpoint_problem",
    "resolve_problem",
    "resolve_sde",
    "ring",
    "grid",
    "gmm64",
    "narrow",
    "aniso256",
    "parse_solver",
    "parse_options",
    "split_solvers",
    "solver_label",
    "is_adaptive",
    "is_deterministic",
    "write_outputs",
    "fmt",
    "markdown_table",
]
