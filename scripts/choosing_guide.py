"""Run the comparisons behind docs/choosing.md and write its tables and figures.

Every sampling table comes from ``sd.compare`` (exact-score Gaussian mixtures, common random
numbers, a measured noise floor, RMS distance to a tight float64 PF-ODE solution). Two sections
that ``compare`` cannot express are run here directly with ``sd.sample`` / ``sd.log_likelihood``:
classifier-free guidance (a guided score is not the exact score of a mixture) and likelihoods.

    python scripts/choosing_guide.py                       # everything, into results/choosing
    python scripts/choosing_guide.py --copy-figures        # also docs/figures/choosing_*.png
    python scripts/choosing_guide.py --only main,sdes      # some sections

Sections: ``main`` (ring and gmm64 under VP, every solver family), ``hard`` (the same solvers on
the narrow-mode 2-D and the 256-D anisotropic mixtures, with mode-weight TV and width error),
``sdes`` (one solver set under VP, sub-VP and VE), ``grids`` (time grids), ``guidance``,
``likelihood``. Output: ``tables.md``
(every table with the command that reproduces it), one ``scoresde compare`` folder per run
(table.md/csv/json and its own plots) and the four ``choosing_*.png`` figures.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import scoresde as sd  # noqa: E402
from scoresde import comparison as cmp  # noqa: E402
from scoresde import plots  # noqa: E402
from scoresde.comparison import ComparisonTable, Row, write_outputs  # noqa: E402

F64 = torch.float64
SEED = 0

# ----------------------------------------------------------------------------------------------
# the runs

DETERMINISTIC = [
    "ode_euler",
    "ode_heun",
    "ode_rk4",
    "ddim",
    "dpm_solver:order=2,prediction=data",
    "dpm_solver",
    "unipc",
]
STOCHASTIC = ["euler_maruyama", "ancestral", "dpm_solver_sde", "pc"]
ADAPTIVE = ["ode_rk45", "scipy"]
SDE_SET = [
    "ode_heun",
    "dpm_solver:order=2,prediction=data",
    "dpm_solver",
    "euler_maruyama",
    "ancestral",
    "dpm_solver_sde",
    "ode_rk45",
]
GRIDS = ("uniform", "quadratic", "logsnr", "karras")
GRID_SOLVERS = ["ode_heun", "dpm_solver:order=2,prediction=data", "dpm_solver"]

N = {"ring": 4000, "gmm64": 2000, "narrow": 4000, "aniso256": 2000}

#: id(row) -> (median per-sample distance to the reference, mode switches) of the deterministic
#: rows of every table run here (``add_per_sample_errors``); the tables live until the script
#: ends, so the ids stay theirs.
PER_SAMPLE: dict[int, tuple[float, int]] = {}


def cli_command(problem, sde, solvers, steps, n, rtols, out) -> str:
    return (
        f"scoresde compare --problem {problem} --sde {sde} "
        f"--solvers {','.join(solvers)} "
        f"--steps {','.join(map(str, steps))} --n {n} --rtols {','.join(f'{r:g}' for r in rtols)} "
        f"--threads 1 --out {out}"
    )


def run_compare(tag, problem, sde, solvers, steps, rtols, out: Path, log: list[str]):
    n = N[problem]
    t0 = time.perf_counter()
    table = sd.compare(problem, sde, solvers, steps, n=n, seed=SEED, rtols=rtols)
    wall = time.perf_counter() - t0
    add_per_sample_errors(table, problem, sde)
    folder = out / tag
    write_outputs(table, folder, trajectory=False)
    command = cli_command(problem, sde, solvers, steps, n, rtols, f"results/choosing/{tag}")
    log.append(f"{tag}: {wall:.1f} s")
    print(f"[{tag}] {wall:.1f} s")
    return table, command


def add_per_sample_errors(table: ComparisonTable, problem: str, sde_name: str) -> None:
    """Record the median error and the mode switches of the deterministic rows of ``table`` in
    ``PER_SAMPLE``.

    compare reports only the RMS over samples of the distance to the reference, which on a
    multimodal problem is dominated by the few samples the solver sends to another component than
    the exact flow (one such sample in 2000 adds ~0.03 on gmm64). This recomputes compare's
    reference (same x_T, same float64 ode_rk45 at the table's tolerance), checks that it gives the
    table's RMS, and adds the median per-sample error and the number of samples whose nearest
    component mean differs from the reference's ("mode switches")."""
    data, sde = cmp.PROBLEMS[problem](), cmp.SDES[sde_name]()
    m = table.meta
    g = torch.Generator().manual_seed(m["seed"] + 1)
    x_T = torch.randn(m["n"], m["dim"], generator=g, dtype=F64) * sde.prior_std
    tol = m["reference_tol"]
    ref = sd.sample(
        sde,
        sd.exact_score(sde, data),
        (m["n_ref"], m["dim"]),
        solver="ode_rk45",
        rtol=tol,
        atol=tol,
        eps=m["eps"],
        x_T=x_T[: m["n_ref"]],
    ).samples

    def component(x):
        return torch.cdist(x.to(F64), data.means).argmin(1)

    c_ref = component(ref)
    for (label, key), x in table.samples.items():
        for r in table.rows:
            if r.solver != label or not r.deterministic or r.error:
                continue
            if (r.steps if isinstance(key, int) else r.rtol) != key:
                continue
            e = (x[: ref.shape[0]].to(F64) - ref).pow(2).mean(1).sqrt()
            rms = float(e.pow(2).mean().sqrt())
            if not math.isclose(rms, r.ref_rms, rel_tol=1e-6, abs_tol=1e-12):
                raise RuntimeError(f"reference mismatch for {label} {key}: {rms} vs {r.ref_rms}")
            switches = int((component(x[: ref.shape[0]]) != c_ref).sum())
            PER_SAMPLE[id(r)] = (float(e.median()), switches)


def _err(r: Row) -> str:
    """'RMS / median (k)': k = mode switches, shown when non-zero."""
    median, switches = PER_SAMPLE.get(id(r), (None, 0))
    sw = f" ({switches})" if switches else ""
    return f"{cmp.fmt(r.ref_rms)} / {cmp.fmt(median)}{sw}"


def warm_up() -> None:
    """One tiny run of every solver, so that no timed row pays for imports or first calls."""
    solvers = DETERMINISTIC + STOCHASTIC + ADAPTIVE
    sd.compare("ring", "vp", solvers, (3,), n=16, rtols=(1e-2,), keep_samples=False)


def main_runs(out, log):
    res = {}
    for problem, steps, rtols in (
        ("ring", (5, 10, 20, 50, 100), (1e-2, 1e-3, 1e-4, 1e-5)),
        ("gmm64", (5, 10, 20, 50), (1e-2, 1e-3, 1e-4, 1e-5)),
    ):
        solvers = DETERMINISTIC + STOCHASTIC + ADAPTIVE
        res[problem] = run_compare(f"{problem}_vp", problem, "vp", solvers, steps, rtols, out, log)
    return res


def hard_runs(out, log):
    """The hard presets (issue 13): every solver family at 10, 20 and 200 steps."""
    res = {}
    for problem in ("narrow", "aniso256"):
        solvers = DETERMINISTIC + STOCHASTIC + ["ode_rk45"]
        res[problem] = run_compare(
            f"hard_{problem}_vp", problem, "vp", solvers, (10, 20, 200), (1e-5,), out, log
        )
    return res


def sde_runs(out, log):
    res = {}
    for problem in ("ring", "gmm64"):
        for sde_name in ("vp", "subvp", "ve"):
            res[(problem, sde_name)] = run_compare(
                f"sde_{problem}_{sde_name}",
                problem,
                sde_name,
                SDE_SET,
                (10, 20, 50),
                (1e-3, 1e-5),
                out,
                log,
            )
    return res


def grid_runs(out, log):
    res = {}
    solvers = [f"{s}{',' if ':' in s else ':'}time_grid={g}" for s in GRID_SOLVERS for g in GRIDS]
    for problem in ("ring", "gmm64"):
        res[problem] = run_compare(
            f"grids_{problem}_vp", problem, "vp", solvers, (10, 20, 50), (), out, log
        )
    return res


# ----------------------------------------------------------------------------------------------
# guidance: classifier-free guidance with exact conditional and unconditional scores

GUIDED_SOLVERS = [
    ("dpm_solver", {}),
    ("dpm_solver", {"order": 2}),
    ("dpm_solver", {"order": 2, "prediction": "data"}),
    ("dpm_solver", {"order": 2, "prediction": "data", "solver_type": "midpoint"}),
    ("dpm_solver", {"order": 3, "prediction": "data"}),
    ("unipc", {}),
    ("unipc", {"order": 2, "prediction": "data"}),
    ("ode_heun", {}),
]


def _class_data(problem: str) -> sd.ClassConditionalMixture:
    mix = cmp.PROBLEMS[problem]()
    k = mix.means.shape[0]
    stds = mix.stds if mix.stds.dim() > 1 else mix.stds.expand(k, mix.dim)
    if problem == "ring":  # class 0: the four components with angle < 180 degrees
        parts = [range(0, 4), range(4, 8)]
    else:  # gmm64: the first four components against the last four
        parts = [range(0, 4), range(4, 8)]
    return sd.ClassConditionalMixture(
        [
            sd.GaussianMixture(mix.means[list(p)], stds[list(p)], weights=mix.weights[list(p)])
            for p in parts
        ]
    )


def guidance_runs(out, log, scales=(1.0, 4.0, 8.0), nfes=(10, 20)):
    rows = []
    t_all = time.perf_counter()
    for problem, n in (("ring", 2000), ("gmm64", 1000)):
        data = _class_data(problem)
        sde = sd.VPSDE()
        s_c = sd.exact_class_score(sde, data, 0)
        s_u = sd.exact_score(sde, data.mixture)
        d = data.mixture.dim
        z = torch.randn(n, d, generator=torch.Generator().manual_seed(SEED + 1), dtype=F64)
        x_T64 = z * sde.prior_std
        for w in scales:
            score = sd.classifier_free_guidance(s_c, s_u, scale=w)
            ref = sd.sample(sde, score, (n, d), solver="ode_rk45", rtol=1e-7, atol=1e-7, x_T=x_T64)
            for name, opts in GUIDED_SOLVERS:
                for nfe in nfes:
                    # TODO(meta): NFE per step by name; switch to the class's ``nfe_per_step``.
                    s = nfe // 2 if name == "ode_heun" else nfe  # equal NFE: Heun spends 2
                    t0 = time.perf_counter()
                    res = sd.sample(
                        sde, score, (n, d), solver=name, steps=s, x_T=x_T64.float(), **opts
                    )
                    sec = time.perf_counter() - t0
                    e = (res.samples.to(F64) - ref.samples).pow(2).mean(1).sqrt()
                    rows.append(
                        {
                            "problem": problem,
                            "w": w,
                            "solver": cmp.solver_label(name, opts),
                            "steps": s,
                            "nfe": res.nfe,
                            "budget": nfe,
                            "rms": float(e.pow(2).mean().sqrt()),
                            "median": float(e.median()),
                            "max": float(e.max()),
                            "seconds": sec,
                            "ref_nfe": ref.nfe,
                        }
                    )
    wall = time.perf_counter() - t_all
    log.append(f"guidance: {wall:.1f} s")
    print(f"[guidance] {wall:.1f} s")
    return rows


def guidance_markdown(rows) -> str:
    out = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == problem]
        steps = sorted({r["budget"] for r in sub})
        scales = list(dict.fromkeys(r["w"] for r in sub))
        head = ["solver"] + [f"w = {w:g}, {s} NFE" for w in scales for s in steps]
        out += [
            f"**{problem}**, VP, CFG towards class 0; RMS / median per-sample distance to the "
            "float64 ode_rk45 (rtol = atol = 1e-7) solution of the same guided PF-ODE "
            f"(reference NFE: {', '.join(f'w={w:g}: {_ref_nfe(sub, w)}' for w in scales)}).",
            "",
        ]
        body = []
        for label in dict.fromkeys(r["solver"] for r in sub):
            cells = [label]
            for w in scales:
                for s in steps:
                    r = next(
                        r for r in sub if r["solver"] == label and r["w"] == w and r["budget"] == s
                    )
                    cells.append(f"{cmp.fmt(r['rms'])} / {cmp.fmt(r['median'])}")
            body.append(cells)
        out += [cmp.markdown_table(head, body), ""]
    return "\n".join(out)


def _ref_nfe(rows, w):
    return next(r["ref_nfe"] for r in rows if r["w"] == w)


# ----------------------------------------------------------------------------------------------
# likelihood: PF-ODE integrators against exact log p_eps


LIK_INTEGRATORS = [
    ("rk45", {"rtol": 1e-3, "atol": 1e-3}, "rk45 rtol=1e-3"),
    ("rk45", {"rtol": 1e-5, "atol": 1e-5}, "rk45 rtol=1e-5"),
    ("scipy", {"rtol": 1e-5, "atol": 1e-5}, "scipy RK45 rtol=1e-5"),
    ("euler", {"steps": 100}, "euler 100 steps"),
    ("heun", {"steps": 50}, "heun 50 steps"),
    ("rk4", {"steps": 25}, "rk4 25 steps"),
]


def likelihood_runs(out, log, n=64):
    rows = []
    t_all = time.perf_counter()
    ring = cmp.ring()
    shifted = sd.GaussianMixture(ring.means + torch.tensor([4.0, 0.0], dtype=F64), ring.stds)
    cases = [("ring", ring, s, LIK_INTEGRATORS) for s in ("vp", "subvp", "ve")]
    cases += [("ring + (4, 0)", shifted, s, LIK_INTEGRATORS[1:2]) for s in ("vp", "subvp", "ve")]
    for problem, data, sde_name, integrators in cases:
        sde = cmp.SDES[sde_name]()
        eps = 1e-5
        exact = sd.exact_log_prob(sde, data)
        g = torch.Generator().manual_seed(SEED + 5)
        x0 = data.sample(n, generator=g)
        alpha, sigma = sde.marginal(torch.tensor(eps, dtype=F64))
        x = alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)
        truth = exact(x, eps)
        exact_T = lambda z, sde=sde, exact=exact: exact(z, sde.T)  # noqa: E731
        for integ, opts, label in integrators:
            t0 = time.perf_counter()
            r = sd.log_likelihood(sde, _score(sde, data), x, integrator=integ, **opts)
            sec = time.perf_counter() - t0
            r_exact_prior = sd.log_likelihood(
                sde, _score(sde, data), x, integrator=integ, prior_logp=exact_T, **opts
            )
            rows.append(
                {
                    "problem": problem,
                    "sde": sde_name,
                    "integrator": label,
                    "nfe": r.nfe,
                    "seconds": sec,
                    "total": float((r.logp - truth).abs().mean()),
                    "integration": float((r_exact_prior.logp - truth).abs().mean()),
                    "prior": float((r.logp - r_exact_prior.logp).abs().mean()),
                }
            )
    wall = time.perf_counter() - t_all
    log.append(f"likelihood: {wall:.1f} s")
    print(f"[likelihood] {wall:.1f} s")
    return rows


def _score(sde, data):
    return sd.exact_score(sde, data)


def likelihood_markdown(rows) -> str:
    head = [
        "data",
        "sde",
        "integrator",
        "NFE",
        "time [s]",
        "integration error (nats)",
        "prior mismatch (nats)",
        "total error (nats)",
    ]
    body = [
        [r["problem"], r["sde"], r["integrator"], str(r["nfe"]), f"{r['seconds']:.2f}"]
        + [cmp.fmt(r[k]) for k in ("integration", "prior", "total")]
        for r in rows
    ]
    return cmp.markdown_table(head, body)


# ----------------------------------------------------------------------------------------------
# summary tables


def _row(table: ComparisonTable, label: str, steps=None, rtol=None):
    for r in table.rows:
        if r.solver == label and r.steps == steps and (rtol is None or r.rtol == rtol):
            return r
    return None


def sde_markdown(res) -> str:
    """solver x steps rows; per SDE: ref RMS (deterministic) or MMD^2 (stochastic)."""
    out = []
    for problem in ("ring", "gmm64"):
        tabs = {s: res[(problem, s)][0] for s in ("vp", "subvp", "ve")}
        head = ["solver", "steps", "error", "VP", "sub-VP", "VE"]
        floor = ", ".join(
            f"{s}: {cmp.fmt(t.noise_floor['mmd2'][0])} ± {cmp.fmt(t.noise_floor['mmd2'][1])}"
            for s, t in tabs.items()
        )
        ref = ", ".join(f"{s}: {t.meta['reference_nfe']}" for s, t in tabs.items())
        out += [
            f"**{problem}** (n = {N[problem]}). MMD² noise floor (mean ± std) {floor}. "
            f"NFE of the float64 rk45 reference at rtol = 1e-7: {ref}.",
            "",
        ]
        body = []
        first = tabs["vp"]
        for label in first.solvers:
            keys = [(r.steps, r.rtol) for r in first.rows if r.solver == label]
            for steps, rtol in keys:
                cells = []
                kind = None
                for t in tabs.values():
                    r = _row(t, label, steps, rtol)
                    if r is None or r.error:
                        cells.append("fails" if r is not None else "—")
                        continue
                    if r.deterministic:
                        kind = "RMS / median (switches)"
                        cells.append(f"{_err(r)}, {r.nfe} NFE")
                    else:
                        kind = "MMD²"
                        star = "*" if t.at_floor(r, "mmd2") else ""
                        cells.append(f"{cmp.fmt(r.metrics['mmd2'])}{star}")
                what = f"rtol {rtol:g}" if rtol is not None else str(steps)
                body.append([label, what, str(kind), *cells])
        out += [cmp.markdown_table(head, body)]
        out += ["", "`*`: within 3 std of that SDE's MMD² noise floor.", ""]
    return "\n".join(out)


def grid_markdown(res) -> str:
    out = []
    for problem, (table, _) in res.items():
        steps = sorted({r.steps for r in table.rows})
        head = ["solver", "time grid"] + [f"{s} steps" for s in steps]
        out += [
            f"**{problem}**, VP: RMS / median per-sample distance to the exact PF-ODE solution "
            "(mode switches in brackets when there are any); bold = the solver's default grid.",
            "",
        ]
        body = []
        for base in GRID_SOLVERS:
            name, opts = cmp.parse_solver(base)
            default = sd.make_solver(name, **opts).default_time_grid
            for g in GRIDS:
                label = cmp.solver_label(name, {**opts, "time_grid": g})
                cells = [_err(_row(table, label, s)) for s in steps]
                gname = f"**{g}**" if g == default else g
                body.append([cmp.solver_label(name, opts), gname, *cells])
        out += [cmp.markdown_table(head, body), ""]
    return "\n".join(out)


def main_markdown(table: ComparisonTable) -> str:
    """Compact solver x steps view of a main run: deterministic cells 'RMS / median (switches)',
    stochastic cells MMD^2 (* = within 3 std of the noise floor); adaptive runs by tolerance."""
    steps = sorted({r.steps for r in table.rows if r.steps is not None})
    head = ["solver", "NFE/step", "error", *[f"{s} steps" for s in steps]]
    body, adaptive = [], []
    for label in table.solvers:
        rows = [r for r in table.rows if r.solver == label]
        if rows[0].steps is None:
            adaptive += rows
            continue
        det = bool(rows[0].deterministic)
        cells = []
        for s in steps:
            r = next((r for r in rows if r.steps == s), None)
            if r is None or r.error:
                cells.append("fails")
            elif det:
                cells.append(_err(r))
            else:
                cells.append(
                    cmp.fmt(r.metrics["mmd2"]) + ("*" if table.at_floor(r, "mmd2") else "")
                )
        per = rows[0].nfe // rows[0].steps
        kind = "RMS / median" if det else "MMD²"
        body.append([label, str(per), kind, *cells])
    lines = [cmp.markdown_table(head, body)]
    if adaptive:
        head = ["adaptive", "rtol = atol", "NFE", "RMS / median (switches)", "MMD²"]
        body = []
        for r in adaptive:
            mmd = cmp.fmt(r.metrics["mmd2"]) + ("*" if table.at_floor(r, "mmd2") else "")
            body.append([r.solver, f"{r.rtol:g}", str(r.nfe), _err(r), mmd])
        lines += ["", cmp.markdown_table(head, body)]
    mu, sdv = table.noise_floor["mmd2"]
    me = table.meta
    lines += [
        "",
        f"n = {me['n']}; MMD² noise floor {cmp.fmt(mu)} ± {cmp.fmt(sdv)} (* = within 3 std); "
        f"reference: float64 ode_rk45 at rtol = atol = {me['reference_tol']:g} "
        f"({me['reference_nfe']} NFE); switches = samples whose nearest component differs from "
        "the reference's.",
    ]
    return "\n".join(lines)


def det_vs_stoch_markdown(res) -> str:
    """For each NFE budget: the best deterministic and the best stochastic run by MMD^2."""
    out = []
    for problem, (table, _) in res.items():
        mu, sdv = table.noise_floor["mmd2"]
        head = [
            "NFE",
            "best deterministic: MMD²; RMS / median (switches)",
            "best stochastic: MMD²",
        ]
        out += [
            f"**{problem}**, VP, n = {table.meta['n']}; MMD² noise floor {cmp.fmt(mu)} ± "
            f"{cmp.fmt(sdv)} (* = within 3 std of it).",
            "",
        ]
        body = []
        ok = [r for r in table.rows if not r.error and r.steps is not None]
        for nfe in sorted({r.nfe for r in ok if r.nfe in (5, 10, 20, 50, 100)}):
            cells = [str(nfe)]
            for det in (True, False):
                cand = [r for r in ok if r.nfe == nfe and bool(r.deterministic) == det]
                if not cand:
                    cells.append("—")
                    continue
                b = min(cand, key=lambda r: r.metrics["mmd2"])
                star = "*" if table.at_floor(b, "mmd2") else ""
                extra = f"; {_err(b)}" if det else ""
                cells.append(f"{b.solver}: {cmp.fmt(b.metrics['mmd2'])}{star}{extra}")
            body.append(cells)
        out += [cmp.markdown_table(head, body), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# figures

DPI = 80


def _floor_band(ax, table, metric, lo):
    mu, sdv = table.noise_floor[metric]
    top = mu + 2 * sdv
    ax.axhspan(
        lo,
        max(top, lo),
        color="0.85",
        zorder=0,
        label=f"noise floor (mean + 2 sd = {top:.1g})",
    )


def _lines(ax, table, labels, x_key, metric, lo=None):
    """One line per solver label; points joined in NFE order (so adaptive runs read from loose
    to tight tolerance even when x is time)."""
    for k, label in enumerate(labels):
        pts = sorted(
            (r.nfe, r.value(x_key), r.value(metric))
            for r in table.rows
            if r.solver == label and not r.error and r.value(metric) is not None
        )
        if not pts:
            continue
        _, xs, ys = zip(*pts, strict=True)
        if lo is not None:
            ys = [max(y, lo) for y in ys]
        ax.plot(xs, ys, marker="osD^v<>ph*"[k % 10], ms=4, lw=1.3, label=label)


def _finish(ax, xlabel, ylabel, title, legend=True):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    if legend:
        ax.legend(fontsize=7, loc="best")


def _row_any(table, label):
    return next(r for r in table.rows if r.solver == label and not r.error)


def fig_error_vs_nfe(main, path):
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.2))
    for i, (problem, (table, _)) in enumerate(main.items()):
        det = [s for s in table.solvers if _row_any(table, s).deterministic]
        stoch = [s for s in table.solvers if not _row_any(table, s).deterministic]
        _lines(axes[i, 0], table, det, "nfe", "ref_rms")
        _finish(
            axes[i, 0],
            "NFE (score evaluations)",
            "RMS distance to the exact PF-ODE solution",
            f"{problem}, VP, n = {table.meta['n']}: deterministic solvers",
        )
        positive = [
            r.metrics["mmd2"] for r in table.rows if r.metrics["mmd2"] and r.metrics["mmd2"] > 0
        ]
        mu, sdv = table.noise_floor["mmd2"]
        lo = max(min(positive) / 3, (mu + 2 * sdv) / 30)
        _floor_band(axes[i, 1], table, "mmd2", lo)
        _lines(axes[i, 1], table, stoch + ["dpm_solver"], "nfe", "mmd2", lo=lo)
        axes[i, 1].set_ylim(bottom=lo)
        _finish(
            axes[i, 1],
            "NFE (score evaluations)",
            "MMD² to exact samples",
            f"{problem}, VP: stochastic (+ dpm_solver); ≤ floor at bottom edge",
            legend=False,
        )
        axes[i, 1].legend(fontsize=7, loc="upper right")
    return plots.save_figure(fig, path, dpi=DPI)


def fig_time_vs_error(main, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, (problem, (table, _)) in zip(axes, main.items(), strict=True):
        det = [s for s in table.solvers if _row_any(table, s).deterministic]
        _lines(ax, table, det, "seconds", "ref_rms")
        _finish(
            ax,
            f"wall time per run [s] (n = {table.meta['n']}, 1 thread, shared CPU)",
            "RMS distance to the exact PF-ODE solution",
            f"{problem}, VP: error vs wall time",
        )
    return plots.save_figure(fig, path, dpi=DPI)


def _two_legends(ax, colors, styles, color_title, style_title):
    from matplotlib.lines import Line2D

    h1 = [Line2D([], [], c=c, lw=2, label=k) for k, c in colors.items()]
    h2 = [Line2D([], [], c="0.3", ls=ls, lw=1.5, label=k) for k, ls in styles.items()]
    leg = ax.legend(handles=h1, title=color_title, fontsize=7, title_fontsize=7, loc="lower left")
    ax.add_artist(leg)
    ax.legend(handles=h2, title=style_title, fontsize=7, title_fontsize=7, loc="upper right")


def _median_series(table, label, x_key="nfe"):
    pts = sorted(
        (r.value(x_key), PER_SAMPLE[id(r)][0])
        for r in table.rows
        if r.solver == label and not r.error and id(r) in PER_SAMPLE
    )
    return zip(*pts, strict=True)


def fig_sdes(sdes, path):
    colors = {"ode_heun": "C0", "dpm_solver(order=2,prediction=data)": "C1", "dpm_solver": "C2"}
    styles = {"VP": "-", "sub-VP": "--", "VE": ":"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, problem in zip(axes, ("ring", "gmm64"), strict=True):
        for sde_name, ls in zip(("vp", "subvp", "ve"), styles.values(), strict=True):
            table = sdes[(problem, sde_name)][0]
            for label, c in colors.items():
                xs, ys = _median_series(table, label)
                ax.plot(xs, ys, ls=ls, c=c, marker="o", ms=3, lw=1.3)
        _finish(
            ax,
            "NFE (score evaluations)",
            "median per-sample distance to exact PF-ODE solution",
            f"{problem} (n = {N[problem]}): one solver set under three SDEs",
            legend=False,
        )
        _two_legends(ax, colors, styles, "solver", "SDE")
    return plots.save_figure(fig, path, dpi=DPI)


def fig_grids(grids, path):
    colors = dict(zip(GRIDS, ("C0", "C1", "C2", "C3"), strict=True))
    styles = {"ode_heun": ":", "dpm_solver(order=2,prediction=data)": "--", "dpm_solver": "-"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, (problem, (table, _)) in zip(axes, grids.items(), strict=True):
        for base in GRID_SOLVERS:
            name, opts = cmp.parse_solver(base)
            short = cmp.solver_label(name, opts)
            for g in GRIDS:
                label = cmp.solver_label(name, {**opts, "time_grid": g})
                xs, ys = _median_series(table, label, "steps")
                ax.plot(xs, ys, ls=styles[short], c=colors[g], marker="o", ms=3, lw=1.3)
        _finish(
            ax,
            "steps (NFE = steps, 2 × steps for ode_heun)",
            "median per-sample distance to exact PF-ODE solution",
            f"{problem}, VP (n = {N[problem]}): time grids × solvers",
            legend=False,
        )
        ax.set_xticks([10, 20, 50], ["10", "20", "50"])
        ax.minorticks_off()
        ax.grid(True, which="major", alpha=0.25)
        _two_legends(ax, colors, styles, "time grid", "solver")
    return plots.save_figure(fig, path, dpi=DPI)


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/choosing")
    p.add_argument("--only", default="main,hard,sdes,grids,guidance,likelihood")
    p.add_argument("--copy-figures", action="store_true", help="copy PNGs to docs/figures/")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    log: list[str] = []
    md = [f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), seed {SEED}", ""]
    figs = []
    t0 = time.perf_counter()
    warm_up()
    log.append(f"warm-up: {time.perf_counter() - t0:.1f} s")

    if "main" in only:
        main_res = main_runs(out, log)
        for problem, (table, command) in main_res.items():
            md += [f"## {problem} / vp: every solver family", "", "```", command, "```", ""]
            md += [main_markdown(table), ""]
            md += ["<details><summary>full compare table</summary>", "", table.to_markdown()]
            md += ["", "</details>", ""]
        md += ["## deterministic vs stochastic at equal NFE", ""]
        md += ["```", "python scripts/choosing_guide.py --only main", "```", ""]
        md += [det_vs_stoch_markdown(main_res), ""]
        figs.append(fig_error_vs_nfe(main_res, out / "choosing_error_vs_nfe.png"))
        figs.append(fig_time_vs_error(main_res, out / "choosing_time_vs_error.png"))
    if "hard" in only:
        for problem, (table, command) in hard_runs(out, log).items():
            md += [f"## {problem} / vp: the hard mixtures", "", "```", command, "```", ""]
            md += [table.to_markdown(), ""]
    if "sdes" in only:
        sde_res = sde_runs(out, log)
        md += ["## one solver set under VP, sub-VP and VE", ""]
        md += ["```", "python scripts/choosing_guide.py --only sdes", "```", ""]
        md += ["per SDE:", ""]
        md += ["```"] + [c for _, c in sde_res.values()] + ["```", ""]
        md += [sde_markdown(sde_res), ""]
        figs.append(fig_sdes(sde_res, out / "choosing_sdes.png"))
    if "grids" in only:
        grid_res = grid_runs(out, log)
        md += ["## time grids", ""]
        md += ["```", "python scripts/choosing_guide.py --only grids", "```", ""]
        md += [grid_markdown(grid_res), ""]
        figs.append(fig_grids(grid_res, out / "choosing_time_grids.png"))
    if "guidance" in only:
        rows = guidance_runs(out, log)
        md += ["## classifier-free guidance: noise vs data form", ""]
        md += ["```", "python scripts/choosing_guide.py --only guidance", "```", ""]
        md += [guidance_markdown(rows), ""]
    if "likelihood" in only:
        rows = likelihood_runs(out, log)
        md += ["## likelihood: PF-ODE integrators", ""]
        md += ["```", "python scripts/choosing_guide.py --only likelihood", "```", ""]
        md += [
            "ring and the ring shifted by (4, 0), 64 points drawn from p_eps (eps = 1e-5), "
            "exact divergence; mean absolute errors against the exact log p_eps. Integration "
            "error: with the exact log p_T as the prior; prior mismatch: |log p_T − log π| "
            "carried into the result.",
            "",
            likelihood_markdown(rows),
            "",
        ]
    total = time.perf_counter() - t0
    log.append(f"total: {total:.1f} s")
    md += ["## run times", ""] + [f"- {line}" for line in log] + [""]
    name = (
        "tables.md"
        if only == {"main", "hard", "sdes", "grids", "guidance", "likelihood"}
        else ("tables_" + "_".join(sorted(only)) + ".md")
    )
    (out / name).write_text("\n".join(md))
    print(f"wrote {out / name} and {len(figs)} figures in {total:.1f} s")
    if args.copy_figures:
        dest = Path(__file__).resolve().parents[1] / "docs" / "figures"
        for f in figs:
            shutil.copy(f, dest / f.name)
            print(f"copied {f.name} -> {dest} ({f.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
