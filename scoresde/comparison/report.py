"""``write_outputs``: a comparison table and its figures as files in one folder."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..cliutil import say
from ..sampling import sample
from .table import ComparisonTable

F64 = torch.float64


def write_outputs(table: ComparisonTable, out: str | Path, trajectory: bool = True) -> list[Path]:
    """table.md, table.csv, table.json and the PNG plots of ``table`` into ``out``.

    Plots: error_vs_nfe_<metric>.png per metric, error_vs_nfe_ref_rms.png (deterministic
    solvers), time_vs_error.png, samples.png (each solver's largest step count / tightest
    tolerance, the reference set first: scatters of the first two coordinates for vectors, image
    grids for (C, H, W) images with 1 or 3 channels) and, for 2-D problems, trajectories.png
    (ode_heun's PF-ODE paths of 8 samples from the table's x_T seed).
    """
    from .. import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table.to_markdown() + "\n")
    files = [
        out / "table.md",
        table.save_csv(out / "table.csv"),
        table.save_json(out / "table.json"),
    ]
    ok = [r for r in table.rows if not r.error]
    for m in table.metrics:
        if any((v := r.metrics[m]) is not None and math.isfinite(v) for r in ok):
            files.append(plots.plot_error_vs_nfe(table, out / f"error_vs_nfe_{m}.png", m))
        else:
            say(f"compare: no error_vs_nfe_{m}.png: no run has a finite {m}")
    if any(r.ref_rms for r in ok):
        files.append(plots.plot_error_vs_nfe(table, out / "error_vs_nfe_ref_rms.png", "ref_rms"))
    if ok and table.metrics:
        files.append(plots.plot_time_vs_error(table, out / "time_vs_error.png", table.metrics[0]))
    best: dict[str, tuple] = {}
    for label, key in table.samples:  # largest steps (or smallest rtol) per solver
        adaptive = isinstance(key, float)
        rank = -key if adaptive else key
        if label not in best or rank > best[label][0]:
            best[label] = (rank, key)
    event = tuple(table.meta.get("event_shape", (table.meta["dim"],)))
    if best and (len(event) == 1 or (len(event) == 3 and event[0] in (1, 3))):
        styles = plots.solver_styles(table.solvers)
        panels, colors = {}, {}
        for label, (_, k) in best.items():
            name = f"{label} ({'rtol ' if isinstance(k, float) else 'steps '}{k:g})"
            panels[name], colors[name] = table.samples[(label, k)], styles[label]["color"]
        files.append(
            plots.plot_samples_grid(
                panels,
                out / "samples.png",
                reference=table.target,
                reference_label=table.meta.get("target", "exact"),
                colors=colors,
            )
        )
    prob = table.problem
    if trajectory and prob is not None and prob.event_shape == (2,):
        g = torch.Generator().manual_seed(table.meta["seed"] + 1)
        x_T = torch.randn(8, 2, generator=g, dtype=F64) * prob.sde.prior_std
        res = sample(
            prob.sde,
            prob.reference_score_fn or prob.score_fn,
            (8, 2),
            solver="ode_heun",
            steps=50,
            x_T=x_T.to(prob.device),
            eps=table.meta["eps"],
            return_trajectory=True,
        )
        assert res.trajectory is not None  # return_trajectory=True
        files.append(
            plots.plot_trajectories(
                res.trajectory,
                res.times,
                out / "trajectories.png",
                title=plots.figure_title(table, "PF-ODE paths (ode_heun, 50 steps)"),
            )
        )
    return files
