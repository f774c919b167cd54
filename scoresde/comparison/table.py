"""The result of ``compare``: one ``Row`` per run, the noise floor and the set-up, written as
Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from .problems import TARGETS, Problem


@dataclass
class Row:
    """One run of the grid: a solver specification at one step count (or tolerance).

    Attributes
    ----------
    solver
        The label: the name plus its options, e.g. ``"dpm_solver(order=3)"``.
    name, options
        The solver's name and options as given to ``sample``.
    steps
        The step count; None for adaptive runs.
    rtol
        The tolerance of adaptive runs; None for fixed-step runs.
    nfe
        Score evaluations, counted by ``sample`` (None where the run failed).
    seconds
        Wall time of the run.
    deterministic
        Whether the solver integrates the PF-ODE (None where its options are invalid).
    metrics
        One value per metric of the table, by name (None where the run failed).
    ref_rms, ref_median
        Deterministic solvers: the RMS over samples, and the median, of each sample's RMS
        distance per coordinate to the reference PF-ODE solution. A few samples that end in
        another mode dominate the RMS; the median shows the typical accuracy.
    error
        Why the run failed (None where it ran).
    """

    solver: str
    name: str
    options: dict[str, Any]
    steps: int | None
    rtol: float | None
    nfe: int | None = None
    seconds: float | None = None
    deterministic: bool | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    ref_rms: float | None = None
    ref_median: float | None = None
    error: str | None = None

    def value(self, column: str) -> Any:
        """A column of the table by its name: a metric or one of the fields."""
        if column in self.metrics:
            return self.metrics[column]
        if column == "metrics" or column not in self._field_names():
            valid = [*self._field_names(), *self.metrics]
            valid.remove("metrics")
            raise KeyError(f"unknown column {column!r}; valid columns are {valid}")
        return getattr(self, column)

    def to_dict(self) -> dict[str, Any]:
        """The row as one flat dict (the JSON output): the fields in order, the metrics in the
        place of ``metrics``."""
        out: dict[str, Any] = {}
        for name in self._field_names():
            if name == "metrics":
                out.update(self.metrics)
            else:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def _field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


class ComparisonTable:
    """The result of ``compare``: ``rows`` (one ``Row`` per run), the noise floor and the set-up.

    ``noise_floor[metric] = (mean, std)`` of the metric between independent reference sets.
    ``samples[(label, steps or rtol)]`` holds the samples, ``target`` the reference set and
    ``problem`` the ``Problem`` (none of them saved to CSV/JSON).
    """

    def __init__(
        self,
        rows: list[Row],
        noise_floor: dict[str, tuple[float, float]],
        metrics: Iterable[str],
        meta: dict[str, Any],
        samples: dict[tuple, Tensor] | None = None,
        target: Tensor | None = None,
        problem: Problem | None = None,
    ):
        self.rows = rows
        self.noise_floor = noise_floor
        self.metrics = tuple(metrics)
        self.meta = meta
        self.samples = samples or {}
        self.target = target
        self.problem = problem

    @property
    def solvers(self) -> list[str]:
        """Solver labels in first-seen order."""
        return list(dict.fromkeys(r.solver for r in self.rows))

    #: A row is at the noise floor (``*`` in the table, the grey band in the plots) when its
    #: metric is at most the floor's mean + floor_stds standard deviations.
    floor_stds = 3.0

    def at_floor(self, row: Row, metric: str, k: float | None = None) -> bool:
        """Whether the row's metric is at most k (default ``floor_stds``) noise-floor stds above
        the floor's mean."""
        v = row.metrics.get(metric)
        mean, std = self.noise_floor[metric]
        k = self.floor_stds if k is None else k
        return v is not None and math.isfinite(v) and v <= mean + k * std

    @property
    def has_errors(self) -> bool:
        """Whether some run failed (only then do the table and CSV get an ``error`` column)."""
        return any(r.error for r in self.rows)

    def columns(self) -> list[str]:
        return [
            "solver",
            "steps",
            "rtol",
            "nfe",
            "seconds",
            *self.metrics,
            "ref_rms",
            "ref_median",
            *(["error"] if self.has_errors else []),
        ]

    def to_markdown(self) -> str:
        head = [
            "solver",
            "steps",
            "rtol",
            "NFE",
            "time [s]",
            *self.metrics,
            "ref RMS",
            "ref median",
            *(["error"] if self.has_errors else []),
        ]
        body = []
        for r in self.rows:
            cells = [
                r.solver,
                fmt(r.steps),
                fmt(r.rtol),
                fmt(r.nfe),
                fmt(r.seconds, 2),
                *(fmt(r.metrics[m]) + ("*" if self.at_floor(r, m) else "") for m in self.metrics),
                fmt(r.ref_rms),
                fmt(r.ref_median),
                *([(r.error or "").replace("|", "/")[:80]] if self.has_errors else []),
            ]
            body.append(cells)
        lines = [markdown_table(head, body)]
        floor = ", ".join(f"{m} {fmt(mu)} ± {fmt(sd)}" for m, (mu, sd) in self.noise_floor.items())
        me = self.meta
        if "checkpoint" in me:
            what = f"checkpoint {me['checkpoint']}, data {me['data']}"
        else:
            what = f"problem {me['problem']}"
        lines += [
            "",
            f"{what}, sde {me['sde']}, n = {me['n']}, seed {me['seed']}, "
            f"eps = {fmt(me['eps'])}; metrics against {TARGETS[me.get('target', 'exact')]}; "
            f"reference: ode_rk45 rtol = atol = {fmt(me['reference_tol'])} in float64 "
            f"({me['reference_nfe']} NFE).",
            f"Noise floor (mean ± std over {me['floor_pairs']} pairs of reference sets): {floor}. "
            f"* = at most {self.floor_stds:g} std above the floor's mean.",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def save_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = self.columns()
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*columns, "options"])
            w.writeheader()
            for r in self.rows:
                flat = {**{c: r.value(c) for c in columns}, "options": json.dumps(r.options)}
                w.writerow({k: ("" if v is None else v) for k, v in flat.items()})
        return path

    def to_dict(self) -> dict[str, Any]:
        rows = [r.to_dict() for r in self.rows]
        floor = {m: {"mean": mu, "std": sd} for m, (mu, sd) in self.noise_floor.items()}
        return {"meta": self.meta, "noise_floor": floor, "rows": _json_safe(rows)}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def fmt(v: float | int | None, digits: int = 3) -> str:
    """A table cell: ``digits`` significant digits, "—" for None, "nan" for non-finite values."""
    if v is None:
        return "—"
    if isinstance(v, bool | int):
        return str(v)
    if not math.isfinite(v):
        return "nan"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.{digits - 1}e}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table: the header, the separator and one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
