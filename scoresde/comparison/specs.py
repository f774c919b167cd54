"""Solver specifications: ``"name:key=val,key=val"`` strings, labels, and what kind of run a
specification makes (adaptive: tolerances instead of steps; deterministic: a PF-ODE path)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any, cast

from ..sampling import SOLVERS, make_solver, sample, solver_class
from ..solvers.base import Solver


def _parse_value(v: str) -> Any:
    """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, 'none' -> None, anything else a string."""
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for convert in (int, float):
        try:
            return convert(v)
        except ValueError:
            pass
    return v.strip()


def parse_options(items: Iterable[str], context: str = "") -> dict[str, Any]:
    """``["key=val", ...]`` -> ``{key: value}``, values parsed as numbers, booleans or None."""
    options = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"option {item!r}{context} is not key=value")
        options[key.strip()] = _parse_value(val)
    return options


def parse_solver(spec: str | Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``"name"``, ``("name", {options})`` or ``"name:key=val,key=val"`` -> (name, options).

    Examples
    --------
    >>> parse_solver("dpm_solver:order=2,prediction=data")
    ('dpm_solver', {'order': 2, 'prediction': 'data'})
    >>> parse_solver(("ddim", {"eta": 1.0}))
    ('ddim', {'eta': 1.0})
    """
    if isinstance(spec, str):
        name, _, rest = spec.partition(":")
        items = filter(None, (s.strip() for s in rest.split(",")))
        options = parse_options(items, f" in solver spec {spec!r}")
        name = name.strip()
    else:
        # A (name, options) pair; the cast because mypy keeps str in Sequence[Any] after the
        # isinstance test above.
        name, given = cast(Sequence[Any], spec)
        options = dict(given)
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers are {SOLVERS}")
    return name, options


def split_solvers(text: str) -> list[str]:
    """Split the command line's ``a,b:k=v,k2=v2,c`` into specs: a comma-separated item holding
    '=' but no ':' is another option of the preceding solver."""
    out: list[str] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" in item and ":" not in item and out:
            out[-1] += ("," if ":" in out[-1] else ":") + item
        else:
            out.append(item)
    return out


def solver_label(name: str, options: dict[str, Any]) -> str:
    """'dpm_solver(order=3)': the name plus options, tolerances left to their own column."""
    shown = {k: v for k, v in options.items() if k not in ("rtol", "atol")}
    if not shown:
        return name
    return name + "(" + ",".join(f"{k}={v}" for k, v in shown.items()) + ")"


#: Options of a solver spec that go to ``sample`` itself (time_grid, rho, denoise, ...).
_SAMPLE_KEYWORDS = frozenset(
    p.name for p in inspect.signature(sample).parameters.values() if p.kind is p.KEYWORD_ONLY
)


def _build(name: str, options: dict[str, Any]) -> Solver | None:
    """The solver a spec's options build (``sample``'s own keywords left out), or None when they
    are invalid: the run then reports the error in its row."""
    solver_options = {k: v for k, v in options.items() if k not in _SAMPLE_KEYWORDS}
    try:
        return make_solver(name, **solver_options)
    except (ValueError, TypeError):
        return None


def is_adaptive(name: str, options: dict[str, Any]) -> bool:
    """Whether the solver chooses its own steps (it then takes ``rtol`` / ``atol``, not steps).

    Read from the metadata, ``nfe_per_step is None``, of the solver the options build (an option
    can change it: torchsde's ``adaptive``), or of its class where the options are invalid.
    """
    solver = _build(name, options)
    return (solver if solver is not None else solver_class(name)).nfe_per_step is None


def is_deterministic(name: str, options: dict[str, Any]) -> bool | None:
    """Whether the solver integrates the PF-ODE (None when its options are invalid)."""
    # TODO(meta): stochastic from an instance built from the options; switch to the solver
    # class's ``stochastic`` attribute (where options such as ddim's eta do not change it).
    solver = _build(name, options)
    return None if solver is None else not solver.stochastic
