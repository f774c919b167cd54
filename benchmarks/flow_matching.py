"""Flow matching on the checkerboard: independent vs minibatch-OT coupling, and one reflow.

    python benchmarks/flow_matching.py --threads 1

Trains a velocity MLP on ``RectifiedFlow`` (alpha = 1 - t, sigma = t) by conditional flow
matching (``Trainer``, ``TrainConfig(loss="fm")``) twice, with the independent coupling and with
the minibatch-OT coupling (Tong et al. 2024), then generates reflow pairs from the independent
model (``reflow_pairs``: its ODE map of 20k noise draws, RK4, 50 steps) and trains the
2-rectified flow on them, starting from the 1-rectified weights (Liu et al. 2023, Sec. 2.3).

For each model, on 10k fixed noise draws:
- reference samples: the model's ODE solved with RK4 at 100 uniform steps (400 NFE); their MMD^2
  to 10k held-out points, divided by the noise floor (the std of MMD^2 between 5 pairs of
  held-out sets; the training benchmark's target is <= 5x, benchmarks/training.py);
- Euler at 1, 2, 4, 8 NFE (uniform grid): RMSE to the same noise's reference sample (the
  discretisation error) and MMD^2 / floor against the data;
- straightness S (Liu et al. 2023, Sec. 2.2) of 2000 reference trajectories, mean +- SE;
- training-loss spread: the std of the per-step loss over the last half of training.
Prints Markdown tables and the command.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

import scoresde as sd
from scoresde.data import checkerboard
from scoresde.metrics import MMD, mmd2
from scoresde.model import ScoreModel
from scoresde.nets import ResidualMLP
from scoresde.training import TrainConfig, Trainer

NFES = (1, 2, 4, 8)


def train(sde, data, coupling: str, steps: int, args, init=None, noise=None) -> tuple:
    torch.manual_seed(0)
    model = ScoreModel(ResidualMLP(2, hidden=args.width, depth=3), sde, "velocity")
    if init is not None:
        model.load_state_dict(init.state_dict())
    cfg = TrainConfig(
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=200 if init is None else 0,
        loss="fm",
        coupling=coupling,
        log_every=1,
        seed=1,
    )
    start = time.perf_counter()
    with Trainer(model, data, cfg, noise=noise) as tr:
        losses = tr.train(steps, progress=False)
        ema = copy.deepcopy(tr.ema).eval()
    half = losses[len(losses) // 2 :]
    return ema, time.perf_counter() - start, statistics.fmean(half), statistics.stdev(half)


def evaluate(sde, model, noise, held, floor) -> dict:
    kw = {"x_T": sde.prior_std * noise, "time_grid": "uniform"}
    mmd = MMD(held)
    with torch.no_grad():
        ref = sd.sample(sde, model, noise.shape, "ode_rk4", 100, **kw).samples
        traj = sd.sample(
            sde,
            model,
            (2000, 2),
            "ode_rk4",
            100,
            **{**kw, "x_T": kw["x_T"][:2000]},
            return_trajectory=True,
        )
        s = sd.straightness(traj.trajectory, traj.times)
        row = {
            "ref MMD²/floor": mmd(ref) / floor,
            "S": f"{float(s.mean()):.4f} ± {float(s.std()) / len(s) ** 0.5:.4f}",
        }
        for nfe in NFES:
            x = sd.sample(sde, model, noise.shape, "ode_euler", nfe, **kw).samples
            row[f"RMSE@{nfe}"] = float((x - ref).pow(2).sum(1).mean().sqrt())
            row[f"MMD²/floor@{nfe}"] = mmd(x) / floor
    return row


def table(rows: dict[str, dict]) -> str:
    cols = list(next(iter(rows.values())))
    out = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="training steps per coupling")
    parser.add_argument("--reflow-steps", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=20_000, help="reflow pairs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--n", type=int, default=10_000, help="evaluation samples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--couplings", default="independent,ot", help="comma-separated couplings to train"
    )
    parser.add_argument("--skip-reflow", action="store_true", help="no reflow round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("command: python " + " ".join(sys.argv))
    sde = sd.RectifiedFlow()
    data = checkerboard(100_000, torch.Generator().manual_seed(0))
    held = [checkerboard(args.n, torch.Generator().manual_seed(1000 + i)) for i in range(11)]
    floor = statistics.stdev(mmd2(held[2 * i + 1], held[2 * i + 2]) for i in range(5))
    noise = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(7))

    models, train_rows = {}, {}
    for coupling in args.couplings.split(","):
        ema, secs, mean, std = train(sde, data, coupling, args.steps, args)
        models[f"FM, {coupling}"] = ema
        train_rows[f"FM, {coupling}"] = {
            "steps": args.steps,
            "train time (s)": f"{secs:.0f}",
            "loss (2nd half)": mean,
            "loss std per step": std,
        }
    if not args.skip_reflow:
        reflow(sde, models, train_rows, args)
    print(f"\nnoise floor (std of MMD² between held-out sets): {floor:.2e}\n")
    print(table(train_rows))
    print()
    rows = {name: evaluate(sde, m, noise, held[0], floor) for name, m in models.items()}
    print(table({k: {c: v[c] for c in ("ref MMD²/floor", "S")} for k, v in rows.items()}))
    print()
    cols = [f"RMSE@{n}" for n in NFES] + [f"MMD²/floor@{n}" for n in NFES]
    print(table({k: {c: v[c] for c in cols} for k, v in rows.items()}))


def reflow(sde, models: dict, train_rows: dict, args) -> None:
    """Pairs from the independent-coupling model, and the 2-rectified flow trained on them."""
    start = time.perf_counter()
    z, x1 = sd.reflow_pairs(
        sde,
        models["FM, independent"],
        args.pairs,
        (2,),
        solver="ode_rk4",
        steps=50,
        time_grid="uniform",
        generator=torch.Generator().manual_seed(3),
    )
    pair_secs = time.perf_counter() - start
    ema, secs, mean, std = train(
        sde, x1, "pairs", args.reflow_steps, args, init=models["FM, independent"], noise=z
    )
    models["2-rectified (reflow of independent)"] = ema
    train_rows["2-rectified (reflow of independent)"] = {
        "steps": args.reflow_steps,
        "train time (s)": f"{secs:.0f} (+{pair_secs:.0f} pairs)",
        "loss (2nd half)": mean,
        "loss std per step": std,
    }


if __name__ == "__main__":
    main()
