"""Exponential integrators (solvers/exponential.py): DDIM, DPM-Solver(++), SDE-DPM-Solver++, UniPC.

Ground truth is the exact probability-flow map of Gaussian data (``sd.gaussian_flow_map``). Orders
are fitted as log-log slopes over step sizes 2^-k in float64 (diffrax's test_integrate style),
dropping errors below the precision floor, with tolerance +-0.25.

Multistep DPM-Solver-k starts with lower-order steps, so its *global* order on an interval where
the start-up error is not damped is min(k, 2) (the first, first-order step has local error O(h^2)).
Its k-th order step rule is therefore tested through its *local* truncation error: one step from an
exact state with the exact model outputs at the k - 1 previous log-SNR times, error O(h^(k+1)).
"""

from __future__ import annotations

import pytest
import torch
from conftest import F64, GAUSS, GAUSS_MEAN, GAUSS_STD, SDES, fitted_slope
from torch.testing import assert_close

import scoresde as sd
from scoresde.solvers.base import Context, CountingScore

FLOOR = 1e-10  # errors below this are float64 round-off, not truncation error


def marginal_sample(sde, t, n: int, seed: int) -> torch.Tensor:
    """n exact draws of x_t = alpha_t x_0 + sigma_t z."""
    g = torch.Generator().manual_seed(seed)
    alpha, sigma = sde.marginal(torch.as_tensor(t, dtype=F64))
    return alpha * GAUSS.sample(n, generator=g) + sigma * torch.randn(n, 3, generator=g, dtype=F64)


def model_output(sde, x, t, prediction: str) -> torch.Tensor:
    """Exact data prediction (x + sigma^2 score) / alpha or noise prediction -sigma score."""
    alpha, sigma = sde.marginal(t)
    score = sd.exact_score(sde, GAUSS)(x, t)
    return (x + sigma**2 * score) / alpha if prediction == "data" else -sigma * score


# Earlier log-SNR steps of the multistep history, in units of the current step h: deliberately
# unequal (r0 = 0.8, r1 = 1.3), so the divided differences of the non-uniform formula are tested.
HISTORY_RATIOS = (0.8, 1.3)


def dpm_local_error(
    sde, order: int, prediction: str, h: float, lam0: float = 0.0, rule: str = "ours"
) -> float:
    """Max error of one DPM-Solver-k step of log-SNR size h from an exact state at lam0.

    ``rule="reference"``: DPM-Solver++(3M) as written in the reference code and diffusers
    (``multistep_dpm_solver_third_order_update``), implemented here independently."""
    lams = [lam0]
    for r in HISTORY_RATIOS[: order - 1]:
        lams.insert(0, lams[0] - r * h)
    ts = sde.t_from_log_snr(torch.tensor(lams + [lam0 + h], dtype=F64))
    t0, t1 = ts[order - 1], ts[order]
    x0 = marginal_sample(sde, t0, 32, seed=1)
    flow = sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)
    history = [model_output(sde, flow(x0, t0, ts[j]), ts[j], prediction) for j in range(order - 1)]
    if rule == "reference":
        assert order == 3 and prediction == "data"
        m2, m1, m0 = *history, model_output(sde, x0, t0, prediction)
        (a1, s1), s0 = sde.marginal(t1), sde.marginal(t0)[1]
        r0, r1 = HISTORY_RATIOS
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        e = torch.expm1(torch.tensor(-h, dtype=F64))
        x1 = (s1 / s0) * x0 - a1 * e * m0 + a1 * (e / h + 1) * d1 - a1 * ((e + h) / h**2 - 0.5) * d2
        return float((x1 - flow(x0, t0, t1)).abs().max())
    solver = sd.make_solver(
        "dpm_solver", order=order, prediction=prediction, lower_order_final=False
    )
    ctx = Context(sde, CountingScore(sd.exact_score(sde, GAUSS)), None, 1000)
    state = solver.init(ctx, x0, ts)
    state["ms"].extend(history)  # the history: exact model outputs on the exact trajectory
    x1, _ = solver.step(ctx, order - 1, t0, t1, x0, state)
    assert ctx.score.nfe == 1
    return float((x1 - flow(x0, t0, t1)).abs().max())


LOCAL_H = [2.0**-k for k in range(3, 8)]


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_dpm_solver_local_error_is_order_plus_one(name, order, prediction):
    errors = [dpm_local_error(SDES[name], order, prediction, h) for h in LOCAL_H]
    slope = fitted_slope(LOCAL_H, errors, FLOOR)
    assert abs(slope - (order + 1)) <= 0.25, (slope, errors)
    assert sd.make_solver("dpm_solver", order=order).order == order  # the declared order


def test_third_order_needs_twice_the_reference_codes_second_difference():
    # The reference DPM-Solver code (and diffusers) multiply phi_3 by
    # D2 = (D1_0 - D1_1) / (r0 + r1) = h^2 m'' / 2, but the Taylor weight of h^2 m'' is phi_3
    # (int_0^h e^{-(h-u)} u^2/2 du = h^2 phi_3). Their rule's local error is O(h^3) (so only
    # second order globally), ours O(h^4).
    vp = SDES["vp"]
    ours = fitted_slope(LOCAL_H, [dpm_local_error(vp, 3, "data", h) for h in LOCAL_H], FLOOR)
    theirs = fitted_slope(
        LOCAL_H, [dpm_local_error(vp, 3, "data", h, rule="reference") for h in LOCAL_H], FLOOR
    )
    assert abs(ours - 4) <= 0.25, ours
    assert abs(theirs - 3) <= 0.25, theirs


def unipc_local_error(sde, order: int, prediction: str, variant: str, corrector: bool, h: float):
    """Max error of one UniPC step of log-SNR size h from an exact state with the exact model
    outputs at the order - 1 previous times (HISTORY_RATIOS); with the corrector, the step's
    result is the corrected x_1 (computed by the next step, from the output at the predicted x_1).
    """
    lams = [0.0]
    for r in HISTORY_RATIOS[: order - 1]:
        lams.insert(0, lams[0] - r * h)
    ts = sde.t_from_log_snr(torch.tensor(lams + [h, 2 * h], dtype=F64))
    t0, t1 = ts[order - 1], ts[order]
    x0 = marginal_sample(sde, t0, 32, seed=1)
    flow = sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)
    history = [model_output(sde, flow(x0, t0, ts[j]), ts[j], prediction) for j in range(order - 1)]
    solver = sd.make_solver(
        "unipc",
        order=order,
        prediction=prediction,
        variant=variant,
        corrector=corrector,
        lower_order_final=False,
    )
    ctx = Context(sde, CountingScore(sd.exact_score(sde, GAUSS)), None, 1000)
    state = solver.init(ctx, x0, ts)
    state["ms"].extend(history)  # x0 has no predecessor in the state: it is taken as exact
    x1, state = solver.step(ctx, order - 1, t0, t1, x0, state)
    if corrector:
        _, state = solver.step(ctx, order, t1, ts[order + 1], x1, state)
        x1 = state["x_prev"]
        assert ctx.score.nfe == 2
    return float((x1 - flow(x0, t0, t1)).abs().max())


@pytest.mark.parametrize("corrector", [True, False], ids=["unipc", "unip"])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_unipc_corrector_raises_the_local_order_by_one(name, order, prediction, variant, corrector):
    # Zhao et al. 2023, Cor. 3.2 and Thm. 3.1: UniP-p is of order p (local error O(h^(p+1))), UniC
    # after it of order p + 1, at no extra evaluation.
    errors = [
        unipc_local_error(SDES[name], order, prediction, variant, corrector, h) for h in LOCAL_H
    ]
    expected = order + 2 if corrector else order + 1
    slope = fitted_slope(LOCAL_H, errors, FLOOR)
    assert abs(slope - expected) <= 0.25, (slope, errors)
    # The declared order is the pair's: local error O(h^(order + 1)).
    assert sd.make_solver("unipc", order=order, corrector=corrector).order + 1 == expected


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_unipc_global_order_on_full_interval(name, order, prediction):
    # With the corrector, even the start-up steps (UniP-1 + UniC-1) are second order, so orders
    # 1 and 2 reach p + 1 on the whole interval; order 3's start-up error masks its fourth order.
    sde = SDES[name]
    x_T = sde.prior_sample((64, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)(x_T, sde.T, sde.sampling_eps)
    score = sd.exact_score(sde, GAUSS)
    steps, errors = [16, 32, 64, 128], []
    for n in steps:
        res = sd.sample(
            sde,
            score,
            x_T.shape,
            "unipc",
            steps=n,
            x_T=x_T,
            order=order,
            prediction=prediction,
            lower_order_final=False,
            time_grid="logsnr",
        )
        assert res.nfe == n  # the corrector reuses the next step's evaluation
        errors.append(float((res.samples - exact).abs().max()))
    slope = fitted_slope([1 / n for n in steps], errors, FLOOR)
    assert slope >= order + 1 - 0.25, (slope, errors)


# Global order on the whole sampling interval [T, eps], logsnr grid (the solver's default). The
# start-up steps' lower-order errors are damped by sigma_eps / sigma_T (data form) there, so the
# k-th order term dominates over this range of steps; for much finer grids the damped O(h^2)
# start-up error eventually takes over for k = 3.
GLOBAL_STEPS = [8, 16, 32, 64]


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("name", list(SDES))
def test_dpm_solver_global_order_on_full_interval(name, order, prediction):
    sde = SDES[name]
    x_T = sde.prior_sample((64, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)(x_T, sde.T, sde.sampling_eps)
    score = sd.exact_score(sde, GAUSS)
    errors = []
    for n in GLOBAL_STEPS:
        res = sd.sample(
            sde,
            score,
            x_T.shape,
            "dpm_solver",
            steps=n,
            x_T=x_T,
            order=order,
            prediction=prediction,
            lower_order_final=False,
            time_grid="logsnr",  # the order is measured on a fixed grid, not the default
        )
        assert res.nfe == n
        errors.append(float((res.samples - exact).abs().max()))
    slope = fitted_slope([1 / n for n in GLOBAL_STEPS], errors, FLOOR)
    assert slope >= order - 0.25, (slope, errors)


def mid_interval_errors(sde, solver: str, steps_list, **options) -> list[float]:
    """Errors against the exact flow over lambda in [-1, 2] on a grid uniform in lambda."""
    t_a = sde.t_from_log_snr(torch.tensor(-1.0, dtype=F64))
    x_a = marginal_sample(sde, t_a, 64, seed=0)
    score = sd.exact_score(sde, GAUSS)
    errors = []
    for n in steps_list:
        grid = sde.t_from_log_snr(torch.linspace(-1.0, 2.0, n + 1, dtype=F64))
        res = sd.sample(sde, score, x_a.shape, solver, time_grid=grid, x_T=x_a, **options)
        exact = sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)(x_a, grid[0], grid[-1])
        errors.append(float((res.samples - exact).abs().max()))
    return errors


MID_STEPS = [2**k for k in range(3, 9)]


@pytest.mark.parametrize(
    "options, order",
    [
        ({"order": 1}, 1),
        ({"order": 2}, 2),
        ({"order": 2, "solver_type": "midpoint"}, 2),
        ({"order": 2, "prediction": "noise"}, 2),
        ({"order": 2, "prediction": "noise", "solver_type": "midpoint"}, 2),
    ],
    ids=["1", "2", "2-midpoint", "2-noise", "2-noise-midpoint"],
)
def test_dpm_solver_global_order_on_mid_interval(options, order):
    errors = mid_interval_errors(
        SDES["vp"], "dpm_solver", MID_STEPS, lower_order_final=False, **options
    )
    slope = fitted_slope([1 / n for n in MID_STEPS], errors, FLOOR)
    assert abs(slope - order) <= 0.25, (slope, errors)


def test_ddim_global_order_is_one():
    errors = mid_interval_errors(SDES["vp"], "ddim", MID_STEPS)
    slope = fitted_slope([1 / n for n in MID_STEPS], errors, FLOOR)
    assert abs(slope - 1) <= 0.25, (slope, errors)


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("name", list(SDES))
def test_ddim_eta0_is_dpm_solver_1(name, prediction):
    # Lu et al. 2022a, Sec. 4.1 / 2022b Sec. 4: DPM-Solver-1 (either form) is DDIM.
    sde = SDES[name]
    x_T = sde.prior_sample((16, 3), generator=torch.Generator().manual_seed(3), dtype=F64)
    score = sd.exact_score(sde, GAUSS)
    ddim = sd.sample(sde, score, x_T.shape, "ddim", steps=20, x_T=x_T, time_grid="logsnr")
    dpm = sd.sample(
        sde,
        score,
        x_T.shape,
        "dpm_solver",
        steps=20,
        x_T=x_T,
        order=1,
        prediction=prediction,
        time_grid="logsnr",
    )
    assert_close(dpm.samples, ddim.samples, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(SDES))
def test_sde_dpm_solver_1_is_ddim_eta1(name):
    # Lu et al. 2022b, App. D: first-order SDE-DPM-Solver++ is DDIM with eta = 1 (the same
    # variance sigma_1^2 (1 - e^{-2h}) and mean), so with the same noise they agree.
    sde = SDES[name]
    x_T = sde.prior_sample((16, 3), generator=torch.Generator().manual_seed(4), dtype=F64)
    score = sd.exact_score(sde, GAUSS)
    runs = []
    for solver, options in (("ddim", {"eta": 1.0}), ("dpm_solver_sde", {"order": 1})):
        runs.append(
            sd.sample(
                sde,
                score,
                x_T.shape,
                solver,
                steps=20,
                x_T=x_T,
                time_grid="logsnr",
                generator=torch.Generator().manual_seed(5),
                **options,
            ).samples
        )
    assert_close(runs[0], runs[1], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize(
    "solver, options",
    [
        ("dpm_solver", {"order": 2}),
        ("dpm_solver", {"order": 3}),
        ("dpm_solver", {"order": 3, "prediction": "noise"}),
        ("dpm_solver_sde", {"order": 2}),
    ],
)
@pytest.mark.parametrize("steps", [1, 2])
def test_short_grids_finish_with_first_order_steps(solver, options, steps):
    # lower_order_final: with < 15 steps the last steps drop to lower order (Lu et al. 2022b,
    # Sec. 5), so on 1 and 2 steps every step is first order, i.e. DPM-Solver-1 = DDIM.
    sde = SDES["vp"]
    x_T = sde.prior_sample((16, 3), generator=torch.Generator().manual_seed(6), dtype=F64)
    score = sd.exact_score(sde, GAUSS)
    first = {"dpm_solver": {"order": 1}, "dpm_solver_sde": {"order": 1}}[solver]
    first = {**options, **first}
    runs = [
        sd.sample(
            sde,
            score,
            x_T.shape,
            solver,
            steps=steps,
            x_T=x_T,
            generator=torch.Generator().manual_seed(7),
            **opts,
        ).samples
        for opts in (options, first)
    ]
    assert torch.isfinite(runs[0]).all()
    assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-12)


# Explicit grids may end at t = 0 (DDPM's x_0, sigma = 0, lambda = +inf). The only finite
# first-order step to sigma = 0 is x_1 = alpha_1 x0_hat (DDIM's last step, diffusers'
# final_sigmas_type="zero"), and a higher-order extrapolation to lambda = inf has no finite limit,
# so the last step must be the data prediction, whatever the order or form.
def t0_case(solver, options, steps):
    name = "-".join([solver, *(f"{k}={v}" for k, v in options.items()), f"{steps}steps"])
    return pytest.param(solver, options, steps, id=name)


@pytest.mark.parametrize(
    "solver, options, steps",
    [
        t0_case("ddim", {}, 20),
        t0_case("dpm_solver", {"order": 1}, 20),
        t0_case("dpm_solver", {"order": 2}, 10),  # lower_order_final: last step first order
        t0_case("dpm_solver", {"order": 3}, 10),
        t0_case("dpm_solver_sde", {"order": 2}, 10),
        t0_case("dpm_solver", {"order": 2}, 20),
        t0_case("dpm_solver", {"order": 3}, 20),
        t0_case("dpm_solver", {"order": 1, "prediction": "noise"}, 10),
        t0_case("dpm_solver", {"order": 2, "prediction": "noise"}, 20),
        t0_case("dpm_solver_sde", {"order": 2}, 20),
        # UniPC's noise form combines the corrected x with the output at the predicted x, which
        # the trajectory does not record; its data form ends in alpha_1 x0_hat(x~) alone.
        t0_case("unipc", {"prediction": "data"}, 10),
        t0_case("unipc", {"order": 2, "prediction": "data"}, 20),
    ],
)
def test_last_step_to_t0_is_the_data_prediction(solver, options, steps):
    vp = sd.VPSDE(T=float(sd.VPSDE().discrete_times(1000)[-1]))
    ts = vp.discrete_times(1000)
    grid = ts[torch.linspace(1000, 0, steps + 1).round().long()]
    assert grid[-1] == 0
    score = sd.exact_score(vp, GAUSS)
    x_T = vp.prior_sample((16, 3), generator=torch.Generator().manual_seed(8), dtype=F64)
    res = sd.sample(
        vp,
        score,
        x_T.shape,
        solver,
        time_grid=grid,
        x_T=x_T,
        generator=torch.Generator().manual_seed(9),
        return_trajectory=True,
        **options,
    )
    x, t = res.trajectory[-2], grid[-2]
    alpha, sigma = vp.marginal(t)
    x0_hat = (x + sigma**2 * score(x, t)) / alpha
    assert_close(res.samples, x0_hat, rtol=1e-12, atol=1e-12)


def test_exponential_solvers_use_their_benchmarked_default_grids():
    # docs/samplers.md: noise-form DPM-Solver on log-SNR, data forms and SDE-DPM-Solver++ quadratic.
    sde = SDES["vp"]
    score = sd.exact_score(sde, GAUSS)
    expected = sd.make_time_grid(sde, 7, kind="logsnr")
    for solver, options, kind in (
        ("dpm_solver", {}, "logsnr"),
        ("dpm_solver", {"prediction": "data"}, "quadratic"),
        ("dpm_solver_sde", {}, "quadratic"),
        ("unipc", {}, "quadratic"),
        ("unipc", {"prediction": "data"}, "quadratic"),
    ):
        res = sd.sample(sde, score, (4, 3), solver, steps=7, dtype=F64, **options)
        assert torch.equal(res.times, sd.make_time_grid(sde, 7, kind=kind))
    lam = sde.log_snr(expected)
    assert_close(lam.diff(), torch.full((7,), float(lam[1] - lam[0]), dtype=F64), rtol=1e-9, atol=0)


def test_unipc_options():
    # B(h) defaults to the choice that stays bounded in each form (docs/samplers.md)
    assert sd.make_solver("unipc").variant == "bh1"
    assert sd.make_solver("unipc", prediction="data").variant == "bh2"
    assert sd.make_solver("unipc", prediction="data", variant="bh1").variant == "bh1"
    with pytest.raises(ValueError, match="order"):
        sd.make_solver("unipc", order=4)
    with pytest.raises(ValueError, match="bh1"):
        sd.make_solver("unipc", variant="bh3")
