"""Where sampling should end: eps and the final step, per SDE, on exact and trained scores.

Every sampler integrates from T down to a small time eps; what it returns there carries the
residual noise sigma(eps) (VP: sigma^2 ~ beta_min eps, so 0.01 at eps = 1e-3; VE: sigma >= sigma_min
= 0.01 at any eps), which widens modes narrower than a few sigma. The end points compared:

* ``stop``: return x_eps (eps = 1e-3, 1e-4, 1e-5);
* ``denoise``: Tweedie's x0 = (x + sigma^2 score) / alpha at eps (``sample(denoise=True)``, one
  more NFE): E[x0 | x_eps], whose spread is too small by the same factor;
* ``to 0``: the same number of grid steps, the last one from eps to t = 0 with the data
  prediction (an explicit grid ending at 0; for the exponential solvers this is x0_hat at eps);
* ``half``: (x + sigma^2 score / 2) / alpha at eps, one more NFE: Heun's step of the PF-ODE from
  sigma to 0 in EDM's variables (the derivative -sigma score vanishes at sigma = 0), which removes
  the widening to first order in sigma^2 / s^2 for a Gaussian mode of std s. Not a ``sample``
  option; measured here to see whether it should become one.

Metrics are against the **data** (p_0 of VP / sub-VP without noise; the clean mixture also for
VE), since that is what a user wants: MMD^2, and for mixtures the mode-weight TV and the width error
of ``scoresde.metrics``; the floors are the RMS of each metric over independent exact data sets.
For a trained model (checkerboard, trained here with the ``Trainer`` for ``--train-steps`` steps
per SDE, or loaded from ``--checkpoints DIR/cb_<sde>``) the data are held-out checkerboard samples
and "off board" is the share of samples off the black squares (0 for data; residual noise and
a poor score at small t both raise it).

    python benchmarks/endpoint.py --checkpoints /tmp/cb     # trains into /tmp/cb if missing
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import problems as P  # noqa: E402

import scoresde as sd  # noqa: E402
from scoresde.metrics import MMD, mode_weight_tv, width_error  # noqa: E402

F64 = torch.float64
#: (label, eps, end) per row: end is "stop", "denoise", "to0" or "half".
END_POINTS = (
    ("stop 1e-3", 1e-3, "stop"),
    ("stop 1e-4", 1e-4, "stop"),
    ("stop 1e-5", 1e-5, "stop"),
    ("denoise 1e-3", 1e-3, "denoise"),
    ("half 1e-3", 1e-3, "half"),
)
#: ``--all-ends`` adds these (to 0 matched denoise within 1% in every case measured).
MORE_END_POINTS = (("to 0 from 1e-3", 1e-3, "to0"), ("half 1e-4", 1e-4, "half"))


def run(sde, score_fn, shape, solver, steps, eps, end, seed, dtype=F64) -> tuple[torch.Tensor, int]:
    """Samples and NFE of ``solver`` at ``steps`` with one of the END_POINTS."""
    kw = dict(generator=torch.Generator().manual_seed(seed), dtype=dtype)
    if end == "to0":  # the default grid to eps with one step fewer, then eps -> 0
        s = sd.make_solver(solver)
        grid = sd.sampling.make_time_grid(sde, steps - 1, eps, s.default_time_grid)
        grid = torch.cat([grid, grid.new_zeros(1)])
        res = sd.sample(sde, score_fn, shape, solver, time_grid=grid, **kw)
        return res.samples, res.nfe
    res = sd.sample(sde, score_fn, shape, solver, steps, eps=eps, denoise=end == "denoise", **kw)
    x, nfe = res.samples, res.nfe
    if end == "half":
        t = torch.tensor(eps, dtype=F64)
        alpha, sigma = sde.marginal(t)
        with torch.no_grad():
            score = score_fn(x, t.to(x.dtype).expand(x.shape[0]))
        x, nfe = ((x + float(sigma) ** 2 / 2 * score) / float(alpha)), nfe + 1
    return x, nfe


def rms_floor(values: list[float]) -> float:
    v = torch.tensor(values, dtype=F64)
    return float(v.square().mean().sqrt())


def exact_study(problems, sdes, solvers, steps_list, n, seed, ends) -> list[list[str]]:
    rows = []
    for pname in problems:
        data = P.PROBLEMS[pname]()
        draw = [
            data.sample(n, generator=torch.Generator().manual_seed(seed + 100 + k))
            for k in range(9)
        ]
        mmd = MMD(draw[0])
        metric_fns = {
            "MMD²": mmd,
            "TV": lambda x, data=data: mode_weight_tv(x, data),
            "width": lambda x, data=data: width_error(x, data),
        }
        floor = {m: rms_floor([f(x) for x in draw[1:]]) for m, f in metric_fns.items()}
        rows.append(
            [pname, "—", "exact data (floor: RMS)", "—", "—", "—"]
            + [P.fmt(floor[m]) for m in metric_fns]
        )
        for sde_name in sdes:
            sde = P.make_sde(sde_name)
            score = sd.exact_score(sde, data)
            for solver in solvers:
                for steps in steps_list:
                    for label, eps, end in ends:
                        x, nfe = run(sde, score, (n, data.dim), solver, steps, eps, end, seed)
                        vals = [f(x) for f in metric_fns.values()]
                        cells = [
                            P.fmt(v) + (" *" if abs(v) <= 2 * floor[m] else "")
                            for m, v in zip(metric_fns, vals, strict=True)
                        ]
                        rows.append([pname, sde_name, solver, str(steps), label, str(nfe), *cells])
                        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def off_board(x: torch.Tensor) -> float:
    """Share of 2-D samples off the black squares of ``scoresde.data.checkerboard``."""
    inside = (x.abs() <= 2).all(1)
    black = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2 == 0
    return float(1 - (inside & black).double().mean())


def train_checkerboard(sde_name: str, out: Path, steps: int) -> float:
    from scoresde import cli

    t0 = time.perf_counter()
    cli.main(
        f"train --data checkerboard --sde {sde_name} --out {out} --steps {steps} "
        "--batch-size 512 --lr 2e-3 --width 128 --depth 3 --threads 1 --quiet "
        "--ckpt-every 0".split()
    )
    return time.perf_counter() - t0


def trained_study(
    root: Path, sdes, solvers, steps_list, n, seed, train_steps, ends
) -> list[list[str]]:
    from scoresde.data import checkerboard
    from scoresde.training import load_model

    held = [
        checkerboard(n, generator=torch.Generator().manual_seed(seed + 100 + k)) for k in range(9)
    ]
    mmd = MMD(held[0])
    floor_mmd = rms_floor([mmd(x) for x in held[1:]])
    rows = [
        ["checkerboard", "—", "held-out data (floor: RMS)", "—", "—", "—", P.fmt(floor_mmd), "0"]
    ]
    for sde_name in sdes:
        path = root / f"cb_{sde_name}"
        if not (path / "checkpoint.json").exists():
            secs = train_checkerboard(sde_name, path, train_steps)
            print(f"trained {path} in {secs:.0f} s", file=sys.stderr, flush=True)
        model, meta = load_model(path / "checkpoint")
        model.eval()

        def score(x, t, model=model):
            with torch.no_grad():
                return model(x, t)

        for solver in solvers:
            for steps in steps_list:
                for label, eps, end in END_POINTS:
                    x, nfe = run(
                        model.sde, score, (n, 2), solver, steps, eps, end, seed, torch.float32
                    )
                    v = mmd(x)
                    rows.append(
                        [
                            f"checkerboard ({meta['step']} steps)",
                            sde_name,
                            solver,
                            str(steps),
                            label,
                            str(nfe),
                            P.fmt(v) + (" *" if abs(v) <= 2 * floor_mmd else ""),
                            P.fmt(off_board(x)),
                        ]
                    )
                    print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", default="narrow,aniso256")
    p.add_argument("--sdes", default="vp,subvp,ve")
    p.add_argument("--solvers", default="dpm_solver")
    p.add_argument("--steps", default="20,200")
    p.add_argument("--n", type=int, default=10_000, help="samples (2-D mixtures)")
    p.add_argument("--n-high", type=int, default=2000, help="samples (>= 64-D mixtures)")
    p.add_argument("--n-trained", type=int, default=4000, help="samples (checkerboard)")
    p.add_argument("--all-ends", action="store_true", help="also the MORE_END_POINTS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", default=None, help="folder of cb_<sde> checkpoints")
    p.add_argument("--train-steps", type=int, default=4000)
    p.add_argument("--skip-exact", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sdes, solvers = args.sdes.split(","), args.solvers.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    ends = END_POINTS + (MORE_END_POINTS if args.all_ends else ())
    print(f"`{P.command_line()}`\n\n{P.environment_line()}\n")
    if not args.skip_exact:
        rows = []
        for pname in args.problems.split(","):
            n = args.n if P.PROBLEMS[pname]().dim <= 2 else args.n_high
            rows += exact_study([pname], sdes, solvers, steps, n, args.seed, ends)
        head = ["problem", "sde", "solver", "steps", "end", "NFE", "MMD²", "TV", "width"]
        print("Exact scores, metrics against the data (`*`: within 2x the floor):\n")
        print(P.markdown_table(head, rows) + "\n")
    if args.checkpoints:
        rows = trained_study(
            Path(args.checkpoints),
            sdes,
            solvers,
            steps,
            args.n_trained,
            args.seed,
            args.train_steps,
            ends,
        )
        head = ["problem", "sde", "solver", "steps", "end", "NFE", "MMD²", "off board"]
        print("Trained checkerboard models, against held-out data (`*`: within 2x the floor):\n")
        print(P.markdown_table(head, rows) + "\n")


if __name__ == "__main__":
    main()
