"""The variational bounds against the exact log-density: continuous ELBO, DDPM VLB, PF-ODE.

    python benchmarks/elbo.py [--n 2000] [--plot docs/figures/elbo_terms.png]
    python benchmarks/elbo.py --no-mixtures --quadrature [--reps 300]
    python benchmarks/elbo.py --digits [--no-mixtures] [--checkpoint DIR | --digits-steps 4000]

On two centred Gaussian mixtures (the 2-D ring, a seeded 8-D mixture) under VPSDE with the exact
score, per method the mean over n data points of -log p (nats) or of the bound on it, its gap to
the exact -log p_0, the standard error of that gap, score evaluations per point and time:
the oracle, the PF-ODE (``sd.log_likelihood``, rk45 at 1e-5, log p at eps = 1e-5),
``sd.continuous_elbo`` (64 draws of t per point) and ``sd.ddpm_vlb`` at N = 50/100/1000 with the
beta and beta-tilde ("posterior") reverse variances. The plot shows the DDPM per-step terms
L_{t-1} against t. ``--digits`` adds bits/dim of a U-Net trained on the 8x8 digits (CPU: about
12 minutes to train with the default 4000 steps), by the ODE and by both bounds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.comparison.problems import ring

F64 = torch.float64


def mixture8(seed: int = 0) -> sd.GaussianMixture:
    """3 anisotropic components in 8-D, weights 0.2/0.3/0.5, weighted mean of the means at 0."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    means = torch.randn(3, 8, generator=g, dtype=F64)
    means = means - (weights[:, None] * means).sum(0)
    stds = 0.3 + 0.4 * torch.rand(3, 8, generator=g, dtype=F64)
    return sd.GaussianMixture(means, stds, weights)


def counted(score_fn):
    def fn(x, t):
        fn.nfe += 1
        return score_fn(x, t)

    fn.nfe = 0
    return fn


def row(name, value, exact, nfe, seconds):
    gap = value - exact
    se = float(gap.std() / math.sqrt(gap.numel()))
    return (
        f"| {name} | {float(value.mean()):.3f} | {float(gap.mean()):+.3f} | {se:.3f} | {nfe} | "
        f"{seconds:.1f} |"
    )


def mixture_table(name: str, mix: sd.GaussianMixture, n: int, seed: int, terms: dict) -> None:
    sde = sd.VPSDE()
    x0 = mix.sample(n, generator=torch.Generator().manual_seed(seed))
    exact = -mix.log_prob(x0)
    print(f"\n{name} (d = {mix.dim}, n = {n}, VPSDE, exact score):\n")
    print("| method | mean -log p or bound | gap to exact | SE of gap | NFE / point | time (s) |")
    print("|---|---|---|---|---|---|")
    print(row("exact -log p_0 (oracle)", exact, exact, 0, 0.0))
    score = counted(sd.exact_score(sde, mix))
    start = time.perf_counter()
    ode = sd.log_likelihood(sde, score, x0, rtol=1e-5, atol=1e-5)
    print(row("PF-ODE (rk45, 1e-5)", -ode.logp, exact, ode.nfe, time.perf_counter() - start))
    score.nfe = 0
    start = time.perf_counter()
    res = sd.continuous_elbo(sde, score, x0, n_times=64, generator=torch.Generator().manual_seed(1))
    print(row("continuous_elbo (64 t)", -res.elbo, exact, score.nfe, time.perf_counter() - start))
    for variance in ("beta", "posterior"):
        for N in (50, 100, 1000):
            score.nfe = 0
            start = time.perf_counter()
            vlb = sd.ddpm_vlb(
                sde, score, x0, N=N, variance=variance, generator=torch.Generator().manual_seed(2)
            )
            label = f"ddpm_vlb N={N}, {'β' if variance == 'beta' else 'β̃'}"
            print(row(label, vlb.nll, exact, score.nfe, time.perf_counter() - start))
            if N in (100, 1000):
                terms[name, N, variance] = vlb
    print(
        f"\nDecomposition at N = 1000 (β): prior {float(vlb.prior.mean()):.2e}, "
        f"diffusion {float(terms[name, 1000, 'beta'].diffusion.mean()):.3f}, decoder "
        f"{float(terms[name, 1000, 'beta'].decoder.mean()):.3f}; continuous: prior "
        f"{float(res.prior.mean()):.2e}, diffusion {float(res.diffusion.mean()):.3f}, "
        f"decoder {float(res.decoder.mean()):.3f}, "
        f"mean per-point stderr {float(res.stderr.mean()):.3f}"
    )


def quadrature_check(reps: int) -> None:
    """E over the data of the per-point gap, by quadrature over x_0 on a grid (1-D mixture)."""
    mix = sd.GaussianMixture(
        torch.tensor([[-1.5], [1.0]], dtype=F64),
        torch.tensor([0.2, 0.3], dtype=F64),
        torch.tensor([0.4, 0.6], dtype=F64),
    )
    sde = sd.VPSDE()
    score = sd.exact_score(sde, mix)
    grid = torch.linspace(-3, 3, 301, dtype=F64)[:, None]
    w = mix.log_prob(grid).exp() * (6 / 300)  # quadrature weights, sum 1 - 6e-12
    x0, logp = grid.repeat_interleave(reps, 0), mix.log_prob(grid)
    print(f"\n1-D two-component mixture, {reps} noise draws at each of 301 grid points:\n")
    print("| method | E_data[gap] by quadrature | SE | per-point gap min | max |")
    print("|---|---|---|---|---|")
    cont = sd.continuous_elbo(
        sde, score, x0, n_times=16, generator=torch.Generator().manual_seed(2)
    )
    for N in (100, 1000):
        vlb = sd.ddpm_vlb(
            sde, score, x0, N=N, variance="beta", generator=torch.Generator().manual_seed(1)
        )
        for name, sign, v in (
            (f"ddpm_vlb N={N}, β", 1, vlb.nll),
            ("continuous_elbo", -1, cont.elbo),
        ):
            if name == "continuous_elbo" and N == 100:
                continue
            per = v.reshape(301, reps)
            gap = sign * per.mean(1) + logp  # nll + log p, or log p - elbo
            se = float(((w * per.std(1) / math.sqrt(reps)) ** 2).sum().sqrt())
            print(
                f"| {name} | {float((w * gap).sum()):+.4f} | {se:.4f} | {float(gap.min()):+.3f} | "
                f"{float(gap.max()):+.3f} |"
            )


def plot_terms(terms: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k[0] for k in terms})
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for (nm, N, variance), res in sorted(terms.items()):
            if nm != name:
                continue
            k = torch.arange(1, N)
            label = f"N = {N}, {'β' if variance == 'beta' else 'β̃'}"
            ax.plot(res.times[k], res.terms[k] * N / 1000, label=label, lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("chain time $t_k$ (log scale)")
        ax.set_ylabel("$L_{k}$ × N / 1000 (nats, batch mean)")
        ax.set_title(f"DDPM bound, per-step terms: {name}")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path}")


def bits_row(name: str, bits, seconds: float) -> str:
    se = float(bits.std()) / math.sqrt(bits.numel())
    return f"| {name} | {float(bits.mean()):.3f} | {se:.3f} | {seconds:.0f} |"


def digits_table(args) -> None:
    from scoresde import cli
    from scoresde.data import digits
    from scoresde.training import load_model

    out = Path(args.checkpoint) if args.checkpoint else Path(args.out) / "digits_elbo"
    if not args.checkpoint:
        start = time.perf_counter()
        cli.main(
            [
                "train", "--data", "digits", "--out", str(out), "--sde", "vp", "--quiet",
                "--ckpt-every", "0", "--steps", str(args.digits_steps), "--batch-size", "128",
                "--lr", "1e-3", "--width", "16", "--warmup", "200",
            ]
        )  # fmt: skip
        print(f"\ntrained {args.digits_steps} steps in {time.perf_counter() - start:.0f} s")
        out = out / "checkpoint"
    model, _ = load_model(out)
    model.eval()
    sde = model.sde
    x = digits()[-args.digits_n :].to(F64)  # 17 levels k/8 - 1 in [-1, 1]; all digits train
    model = model.to(F64)
    dims, bin_bits = x[0].numel(), 3.0  # bins of width 1/8: -log2(1/8) = 3 bits per dimension
    g = torch.Generator().manual_seed(3)
    y = x + (torch.rand(x.shape, generator=g, dtype=F64) - 0.5) / 8  # uniform in each bin

    def score(z, t):
        with torch.no_grad():
            return model(z, t)

    def score_grad(z, t):
        return model(z, t)

    print(f"\nDigits (8x8, 17 levels, the last {len(x)} training images, VPSDE U-Net):\n")
    print("| method | bits/dim | SE | time (s) |")
    print("|---|---|---|---|")
    start = time.perf_counter()
    ode = sd.log_likelihood(
        sde, score_grad, y, divergence="hutchinson", generator=g, rtol=1e-5, atol=1e-5
    )
    bits = -ode.logp / (dims * math.log(2)) + bin_bits
    print(bits_row("PF-ODE (Hutchinson), dequantised", bits, time.perf_counter() - start))
    start = time.perf_counter()
    res = sd.continuous_elbo(sde, score, y, n_times=64, generator=g)
    bits = -res.elbo / (dims * math.log(2)) + bin_bits
    print(bits_row("continuous_elbo, dequantised", bits, time.perf_counter() - start))
    for variance in ("beta", "posterior"):
        start = time.perf_counter()
        vlb = sd.ddpm_vlb(
            sde, score, x, N=1000, decoder="discretized", variance=variance, levels=17, generator=g
        )
        label = f"ddpm_vlb N=1000, {variance}, discretised decoder"
        print(bits_row(label, vlb.bits_per_dim, time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--plot", default="docs/figures/elbo_terms.png")
    parser.add_argument("--digits", action="store_true")
    parser.add_argument("--checkpoint", default=None, help="a trained digits run (skips training)")
    parser.add_argument("--digits-steps", type=int, default=4000)
    parser.add_argument("--digits-n", type=int, default=256)
    parser.add_argument("--out", default="results")
    parser.add_argument("--mixtures", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--quadrature", action="store_true", help="the 1-D grid check")
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("command: python " + " ".join(sys.argv))
    if args.mixtures:
        terms: dict = {}
        mixture_table("ring", ring(), args.n, 10, terms)
        mixture_table("8-D mixture", mixture8(), args.n, 11, terms)
        if args.plot:
            plot_terms(terms, Path(args.plot))
    if args.quadrature:
        quadrature_check(args.reps)
    if args.digits:
        digits_table(args)


if __name__ == "__main__":
    main()
