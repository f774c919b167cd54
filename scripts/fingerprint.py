"""Hash the outputs of every public computation, to check that a refactoring changes no number.

    python scripts/fingerprint.py --out before.json      # on the old tree
    python scripts/fingerprint.py --check before.json    # on the new tree: lists what differs

Every entry runs with fixed seeds in float64 (and float32 for the front door) and hashes the
output's bytes, so "no difference" means bit-identical, not close. Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable

import numpy as np
import torch

import scoresde as sd
from scoresde import ddpm
from scoresde.nets import ResidualMLP


def _hash(*values) -> str:
    h = hashlib.sha256()
    for v in values:
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().contiguous()
            h.update(str((tuple(v.shape), v.dtype)).encode())
            h.update(
                v.numpy().tobytes() if v.dtype != torch.bfloat16 else v.float().numpy().tobytes()
            )
        elif isinstance(v, np.ndarray):
            h.update(v.tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()[:16]


def _sdes() -> dict[str, sd.SDE]:
    return {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}


def _mixture(dim: int = 2) -> sd.GaussianMixture:
    g = torch.Generator().manual_seed(1)
    means = torch.randn(3, dim, generator=g, dtype=torch.float64)
    return sd.GaussianMixture(means, stds=[0.3, 0.5, 0.2], weights=[0.5, 0.3, 0.2])


def sampling_entries() -> dict[str, Callable[[], object]]:
    mix = _mixture()
    out: dict[str, Callable[[], object]] = {}
    for sde_name, sde in _sdes().items():
        score = sd.exact_score(sde, mix)
        for solver in sd.SOLVERS:
            for dtype in (torch.float64, torch.float32):

                def run(sde=sde, score=score, solver=solver, dtype=dtype):
                    steps = None if solver in ("ode_rk45", "scipy") else 7
                    g = torch.Generator().manual_seed(3)
                    r = sd.sample(
                        sde, score, (16, 2), solver=solver, steps=steps, generator=g,
                        dtype=dtype,
                    )  # fmt: skip
                    return r.samples, r.nfe

                out[f"sample/{sde_name}/{solver}/{str(dtype)[6:]}"] = run
        # Options that take other code paths: EDM's churn (t_hat != t_i), Restart's churned
        # restart steps, ancestral with beta variance, PF drift through ReverseSDE.
        for solver, opts in (
            ("edm", {"S_churn": 10.0}),
            ("restart", {"restart_gamma": 0.05}),
            ("ancestral", {"variance": "beta"}),
        ):
            if solver == "ancestral" and sde_name == "subvp":
                continue
            for dtype in (torch.float64, torch.float32):
                out[f"sample/{sde_name}/{solver}_opts/{str(dtype)[6:]}"] = (
                    lambda sde=sde, score=score, solver=solver, opts=opts, dtype=dtype: sd.sample(
                        sde, score, (16, 2), solver=solver, steps=7, dtype=dtype,
                        generator=torch.Generator().manual_seed(3), **opts,
                    ).samples
                )  # fmt: skip
        out[f"sample/{sde_name}/default_steps"] = lambda sde=sde, score=score: (
            sd.sample(sde, score, (8, 2), generator=torch.Generator().manual_seed(4)).samples
        )
        for grid in sd.TIME_GRIDS:
            out[f"sample/{sde_name}/grid_{grid}"] = lambda sde=sde, score=score, grid=grid: (
                sd.sample(sde, score, (8, 2), "pc", 6, time_grid=grid, denoise=True,
                          seeds=list(range(8)), dtype=torch.float64).samples
            )  # fmt: skip
    return out


def other_entries() -> dict[str, Callable[[], object]]:
    mix = _mixture()
    out: dict[str, Callable[[], object]] = {}
    for sde_name, sde in _sdes().items():
        score = sd.exact_score(sde, mix)
        x = mix.sample(6, generator=torch.Generator().manual_seed(5))
        out[f"likelihood/{sde_name}"] = lambda sde=sde, score=score, x=x: (
            sd.log_likelihood(sde, score, x).logp
        )
        out[f"likelihood_hutch/{sde_name}"] = lambda sde=sde, score=score, x=x: sd.log_likelihood(
            sde, score, x, divergence="hutchinson", integrator="heun", steps=20,
            generator=torch.Generator().manual_seed(6),
        ).logp  # fmt: skip
        t = torch.tensor([0.01, 0.3, 0.7, 1.0], dtype=torch.float64)
        xt = torch.randn(4, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        out[f"oracle/{sde_name}"] = lambda sde=sde, score=score, xt=xt, t=t: (
            score(xt, t),
            sd.exact_log_prob(sde, mix)(xt, t),
            sd.gaussian_flow_map(sde, [0.5, -1.0], [0.3, 2.0])(xt, t, 0.5 * t),
        )
        out[f"sde/{sde_name}"] = lambda sde=sde, score=score, xt=xt, t=t: (
            sde.marginal(t), sde.log_snr(t), sde.diffusion(t), sde.drift(xt, t),
            sde.transition(t[:3], t[1:]), sde.t_from_log_snr(sde.log_snr(t)),
            sde.discretize(xt, t, 0.01 * t), sde.reverse(score).drift(xt, t),
        )  # fmt: skip
        for param in ("score", "eps", "x0", "v"):
            for weighting in ("sigma2", "likelihood", "none"):

                def loss(sde=sde, param=param, weighting=weighting):
                    torch.manual_seed(0)
                    net = ResidualMLP(2, hidden=16, depth=1).double()
                    model = sd.ScoreModel(net, sde, param)
                    x0 = mix.sample(32, generator=torch.Generator().manual_seed(8))
                    g = torch.Generator().manual_seed(9)
                    val = sd.dsm_loss(sde, model, x0, weighting=weighting, generator=g)
                    val.backward()
                    xt = x0 + 0.1
                    tt = torch.full((32,), 0.5, dtype=torch.float64)
                    return val, [p.grad for p in net.parameters()], model(xt, tt)

                out[f"loss/{sde_name}/{param}/{weighting}"] = loss
    out["ddpm_loss"] = _ddpm_loss
    out["ddpm_chains"] = _ddpm_chains
    out["guidance"] = _guidance
    for method in sd.INPAINT_METHODS:
        out[f"inpaint/{method}"] = lambda method=method: _inpaint(method)
    for name in INPAINT_CASES:
        for dtype in (torch.float64, torch.float32):
            key = f"inpaint_opts/{name}/{str(dtype)[6:]}"
            out[key] = lambda name=name, dtype=dtype: _inpaint_options(name, dtype)
    out["classifier"] = _classifier
    out["compare"] = _compare
    out["train"] = _train
    return out


def _ddpm_loss():
    sde = sd.VPSDE()
    torch.manual_seed(0)
    model = sd.ScoreModel(ResidualMLP(2, hidden=16, depth=1).double(), sde, "eps")
    x0 = _mixture().sample(16, generator=torch.Generator().manual_seed(8))
    return sd.ddpm_loss(sde, model, x0, generator=torch.Generator().manual_seed(1))


def _ddpm_chains():
    betas = sd.VPSDE().discrete_betas(50)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def eps_fn(x, i):
        return 0.1 * x + 0.01 * i.to(x.dtype).reshape(-1, 1) if torch.is_tensor(i) else 0.1 * x

    return (
        ddpm.ddpm_sample(eps_fn, betas, x, generator=torch.Generator().manual_seed(1)),
        ddpm.ddim_sample(eps_fn, betas, x, eta=0.5, generator=torch.Generator().manual_seed(1)),
    )


def _guidance():
    sde = sd.VPSDE()
    ccm = sd.ClassConditionalMixture(
        [sd.GaussianMixture([[-1.0, 0.0]], 0.3), sd.GaussianMixture([[1.0, 0.5]], 0.4)], [0.4, 0.6]
    )
    y = torch.tensor([0, 1, 1, 0])
    cond = sd.exact_class_score(sde, ccm, y)
    uncond = sd.exact_score(sde, ccm.mixture)
    guided = sd.classifier_free_guidance(cond, uncond, 3.0, interval=(0.2, 0.8))
    cg = sd.classifier_guidance(uncond, sd.exact_classifier(sde, ccm, y), 2.0)
    g = torch.Generator().manual_seed(2)
    return (
        sd.sample(sde, guided, (4, 2), steps=9, generator=g, dtype=torch.float64),
        sd.sample(sde, cg, (4, 2), steps=9, generator=g, dtype=torch.float64),
    )


def _inpaint(method: str):
    sde = sd.VPSDE()
    mix = _mixture(4)
    score = sd.exact_score(sde, mix)
    known = mix.sample(3, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([True, False, True, False])
    r = sd.inpaint(sde, score, known, mask, method=method, steps=8,
                   generator=torch.Generator().manual_seed(2))  # fmt: skip
    return r.samples, r.nfe, r.log_evidence, r.weights


#: inpaint beyond its defaults: RePaint's jumps (down to the last grid index) with and without a
#: corrector, ancestral's noiseless last step, denoise, the ald corrector, VE, a per-row mask,
#: smc with forced resampling and a twist floor.
INPAINT_CASES = {
    "repaint_j2_r3": ("vp", "repaint", dict(jump_length=2, repeats=3)),
    "repaint_langevin": (
        "subvp",
        "repaint",
        dict(jump_length=3, repeats=2, corrector="langevin", denoise=True),
    ),
    "replacement_ancestral_ald": (
        "vp",
        "replacement",
        dict(predictor="ancestral", corrector="ald", corrector_steps=2, denoise=True),
    ),
    "replacement_ve_em_rowmask": ("ve", "replacement", dict(predictor="euler_maruyama")),
    "smc_ve_resample": ("ve", "smc", dict(particles=5, ess_threshold=1.0, twist_var_floor=0.01)),
    "smc_vp_quadratic": ("vp", "smc", dict(particles=3, ess_threshold=0.7)),
}


def _inpaint_options(name: str, dtype: torch.dtype):
    sde_name, method, options = INPAINT_CASES[name]
    sde = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE(0.01, 20.0)}[sde_name]
    mix = _mixture(4)
    score = sd.exact_score(sde, mix)
    known = mix.sample(3, generator=torch.Generator().manual_seed(1)).to(dtype)
    mask = torch.tensor([True, False, True, False])
    if "rowmask" in name:
        mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(5)) < 0.5
    grid = "quadratic" if "quadratic" in name else None
    r = sd.inpaint(sde, score, known, mask, method=method, steps=7, time_grid=grid,
                   generator=torch.Generator().manual_seed(2), **options)  # fmt: skip
    return r.samples, r.nfe, r.times, r.log_evidence, r.weights, r.ess, r.resampled, r.stats


def _classifier():
    sde = sd.VPSDE()
    torch.manual_seed(0)
    clf = sd.NoisyClassifier(2, 2, hidden=16, depth=1)
    data = _mixture().sample(64, generator=torch.Generator().manual_seed(3)).float()
    labels = (data[:, 0] > 0).long()
    g = torch.Generator().manual_seed(4)
    losses = sd.train_classifier(sde, clf, data, labels, steps=5, batch_size=16, generator=g)
    log_p = sd.classifier_log_prob(clf, 1)
    guided = sd.classifier_guidance(lambda x, t: -x, log_p, 2.0)
    t = torch.full((8,), 0.3)
    return [
        losses,
        *(p.detach() for p in clf.parameters()),
        log_p(data[:8], t),
        guided(data[:8], t),
    ]


def _compare():
    table = sd.compare("ring", "vp", ["ode_heun", "dpm_solver", "pc"], [3, 5], n=200, seed=0)
    # the rows as the dicts of the JSON output, less the wall time
    rows = [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in table.rows]
    return repr(rows), repr(table.noise_floor), [table.samples[k] for k in sorted(table.samples)]


def _train():
    from scoresde.training import TrainConfig, Trainer

    torch.manual_seed(0)
    sde = sd.VPSDE()
    model = sd.ScoreModel(ResidualMLP(2, hidden=16, depth=1), sde, "eps")
    x = _mixture().sample(256, generator=torch.Generator().manual_seed(1)).float()
    with Trainer(model, x, TrainConfig(batch_size=32, lr=1e-3)) as trainer:
        losses = trainer.train(5, progress=False)
    return [losses, *(p.detach() for p in model.parameters())]


def fingerprints(only: str | None) -> dict[str, str]:
    entries = {**sampling_entries(), **other_entries()}
    result = {}
    for name, fn in entries.items():
        if only and only not in name:
            continue
        try:
            value = fn()
            flat = value if isinstance(value, tuple | list) else (value,)
            result[name] = _hash(*flat)
        except Exception as err:  # a failure is a fingerprint too: it must fail the same way
            result[name] = f"error: {type(err).__name__}: {err}"[:300]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the fingerprints to this JSON file")
    p.add_argument("--check", help="compare against this JSON file; exit 1 on any difference")
    p.add_argument("--only", help="only entries whose name contains this")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    now = fingerprints(args.only)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(now, f, indent=1, sort_keys=True)
    errors = {k: v for k, v in now.items() if v.startswith("error")}
    print(f"{len(now)} entries, {len(errors)} raise", file=sys.stderr)
    if args.check:
        with open(args.check) as f:
            old = json.load(f)
        keys = sorted(set(old) | set(now)) if not args.only else sorted(now)
        # Entries added to the script after the baseline was written cannot be compared: listed,
        # not counted (prove them on the old tree with --only NAME --out, then --check that).
        new = [k for k in keys if k not in old]
        diff = [k for k in keys if k in old and old[k] != now.get(k)]
        for k in new:
            print(f"NEW (not in {args.check}, unchecked) {k}")
        for k in diff:
            print(f"DIFFERS {k}: {old.get(k)} -> {now.get(k)}")
        print(f"{len(keys) - len(diff) - len(new)} identical, {len(diff)} differ, {len(new)} new")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
