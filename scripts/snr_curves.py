"""Plot the log-SNR lambda_t = log(alpha_t / sigma_t) of every noise schedule and path.

One figure, docs/figures/snr_curves.png: VP with the linear (Song et al. 2021), cosine (Nichol &
Dhariwal 2021), polynomial (Hoogeboom et al. 2022) and sigmoid (Chen 2023) schedules, sub-VP
(linear), VE (sigma in [0.01, 50]) and the rectified-flow path alpha = 1 - t, sigma = t, each on
its own [0, T]; a second panel shows g(t)^2 on a log scale (the diffusion each solver sees).

    python scripts/snr_curves.py                      # writes docs/figures/snr_curves.png
    python scripts/snr_curves.py --out other.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import scoresde as sd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CURVES = {
    "VP, linear": sd.VPSDE(),
    "VP, cosine": sd.VPSDE(schedule="cosine"),
    "VP, polynomial (p = 2)": sd.VPSDE(schedule="polynomial"),
    "VP, sigmoid (-3, 3, 1)": sd.VPSDE(schedule="sigmoid"),
    "sub-VP, linear": sd.SubVPSDE(),
    "VE": sd.VESDE(),
    "rectified flow": sd.RectifiedFlow(),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "snr_curves.png")
    args = parser.parse_args(argv)
    fig, (ax_lam, ax_g2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, sde in CURVES.items():
        t = torch.linspace(1e-3, sde.T, 400, dtype=torch.float64)
        c = sde.coeffs(t)
        style = {"lw": 2.2, "color": "k"} if label == "rectified flow" else {"lw": 1.4}
        ax_lam.plot(t, c.log_snr, label=label, **style)
        ax_g2.plot(t, c.g2, label=label, **style)
    ax_lam.set(xlabel="t", ylabel=r"$\lambda_t = \log(\alpha_t/\sigma_t)$", title="log-SNR / 2")
    ax_g2.set(xlabel="t", ylabel=r"$g(t)^2$", yscale="log", title="diffusion $g^2$")
    ax_lam.grid(alpha=0.3)
    ax_g2.grid(alpha=0.3)
    ax_lam.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
