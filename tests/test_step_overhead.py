"""The per-call and per-step shortcuts of ``sample`` (issue 21) compute exactly what they replace.

Each shortcut skips work whose result is known (the grid's times cast once instead of per score
call, the multistep weights of orders a grid does not use, DDIM's transition at eta = 0, a cached
solver signature): these tests compare the shortcut with the full computation bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from conftest import F64

import scoresde as sd
from scoresde.noise import GaussianNoise
from scoresde.sampling import solver_class
from scoresde.solvers.base import Context, CountingScore
from scoresde.solvers.exponential import DDIM, _multistep_weights, _phis, _unipc_tables
from scoresde.validation import batch_time


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("solver", ["ddim", "dpm_solver", "pc", "ode_heun"])
def test_score_sees_batch_time_of_each_call(solver, dtype):
    """The times a score function gets equal ``batch_time(t, x)`` exactly: the grid's casts made
    once by ``CountingScore.use_grid`` (Heun calls at both ends of a step, pc twice at t0)."""
    sde, seen = sd.VPSDE(), []

    def score(x, t):
        seen.append(t)
        return -x

    res = sd.sample(sde, score, (5, 2), solver, steps=4, dtype=dtype)
    x = torch.zeros(5, 2, dtype=dtype)
    grid = [batch_time(t, x) for t in res.times]
    assert len(seen) == res.nfe
    for t in seen:
        assert t.dtype == dtype and t.shape == (5,)
        assert any(torch.equal(t, g) for g in grid)


def test_counting_score_off_grid_and_other_batch():
    """A time that is not one of the grid's objects, or a batch of another size, still goes
    through ``batch_time`` (the cache is keyed by the grid's tensors, checked by identity), and
    so does a state of another batch size or dtype."""
    counted = CountingScore(lambda x, t: x * t[:, None])
    x = torch.ones(3, 2)
    times = counted.use_grid(torch.tensor([1.0, 0.5], dtype=F64), x)
    assert torch.equal(counted(x, times[1]), torch.full((3, 2), 0.5))
    assert torch.equal(counted(x, torch.tensor(0.25, dtype=F64)), torch.full((3, 2), 0.25))
    assert torch.equal(counted(torch.ones(4, 2), times[0]), torch.ones(4, 2))
    out = counted(torch.ones(3, 2, dtype=F64), times[1])
    assert out.dtype == F64 and torch.equal(out, torch.full((3, 2), 0.5, dtype=F64))
    assert counted.nfe == 4


def _all_orders_weights(h, phis, orders, midpoint):
    """The weights of every order for every step, then selected (the full computation)."""
    p1, p2, p3 = phis
    ones = torch.ones_like(h[:2])
    r0 = torch.cat([ones[:1], h[:-1]]) / h
    r1 = torch.cat([ones, h[:-2]]) / h
    zero = torch.zeros_like(h)
    q = (0.5 * p1 if midpoint else p2) / r0
    a = (p2 * (1 + r0 / (r0 + r1)) + 2 * p3 / (r0 + r1)) / r0
    b = -(p2 * r0 / (r0 + r1) + 2 * p3 / (r0 + r1)) / r1
    w1 = torch.stack([p1, zero, zero], 1)
    w2 = torch.stack([p1 + q, -q, zero], 1)
    w3 = torch.stack([p1 + a, b - a, -b], 1)
    k = torch.tensor(orders)[:, None]
    return torch.where(k == 1, w1, torch.where(k == 2, w2, w3))


@pytest.mark.parametrize(
    "orders", [[1], [1, 1], [1, 2, 1], [1, 2, 2, 2], [1, 2, 3, 3, 2, 1], [1, 2, 3, 0], [1, 0]]
)
@pytest.mark.parametrize("midpoint", [False, True])
@pytest.mark.parametrize("sign", [1, -1])
def test_multistep_weights_of_used_orders_equal_full_computation(orders, midpoint, sign):
    """Weights computed only for the orders a grid uses equal the all-orders computation in
    every row that is used (a row of order 0 is overwritten by ``_end_at_zero``)."""
    g = torch.Generator().manual_seed(len(orders))
    h = 0.1 + torch.rand(len(orders), generator=g, dtype=F64)
    phis = _phis(h, sign)
    got = _multistep_weights(h, phis, orders, midpoint)
    want = _all_orders_weights(h, phis, orders, midpoint)
    used = torch.tensor(orders) > 0
    assert torch.equal(got[used], want[used])


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()])
@pytest.mark.parametrize("end", [None, 0.0])
def test_ddim_eta_zero_weights_equal_the_general_formula(sde, end):
    """At eta = 0 DDIM skips the transition variance; its weights equal the eta formula's."""
    ts = sd.make_time_grid(sde, 7, kind="quadratic")
    if end is not None:
        ts[-1] = end
    x = torch.zeros(2, 2, dtype=F64)
    ctx = Context(sde, CountingScore(lambda x, t: -x), GaussianNoise(x.shape, x.device, F64), 7)
    got = DDIM(0.0).init(ctx, x, ts)
    c = sde.coeffs(ts)
    a0, s0, a1, s1 = c.alpha[:-1], c.sigma[:-1], c.alpha[1:], c.sigma[1:]
    var_eta = 0.0 * sde.transition(ts[1:], ts[:-1])[1] * (s1 / s0) ** 2
    c_eta = torch.sqrt(s1**2 - var_eta)
    assert torch.equal(got["x"], a1 / a0)
    assert torch.equal(got["score"], a1 * s0**2 / a0 - c_eta * s0)
    assert torch.equal(got["noise"], torch.sqrt(var_eta))


def test_progress_bar_changes_no_sample():
    """``progress=True`` (tqdm) and the bare loop give the same samples."""
    sde = sd.VPSDE()
    runs = [
        sd.sample(
            sde,
            lambda x, t: -x,
            (8, 2),
            "ancestral",
            steps=5,
            progress=p,
            generator=torch.Generator().manual_seed(0),
        ).samples
        for p in (False, True)
    ]
    assert torch.equal(*runs)


def test_solver_options_are_the_signature():
    """``Solver.options()`` (cached per class) lists ``__init__``'s keywords, as a fresh list."""
    cls = solver_class("dpm_solver")
    opts = cls.options()
    assert opts == ["order", "prediction", "solver_type", "lower_order_final"]
    opts.append("x")
    assert cls.options() == ["order", "prediction", "solver_type", "lower_order_final"]


@pytest.mark.parametrize("prediction", ["noise", "data"])
def test_unipc_cached_tables_give_the_same_samples(prediction):
    """UniPC's per-step weights are cached per grid: a second call on the grid reads them from
    the cache (read-only, copied before use) and gives the first call's samples bit for bit."""
    sde = sd.VPSDE()
    _unipc_tables.cache_clear()
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(5)
        res = sd.sample(
            sde, lambda x, t: -x, (6, 2), "unipc", steps=9, generator=g, prediction=prediction
        )
        runs.append(res.samples)
    info = _unipc_tables.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert torch.equal(*runs)
    pred_w, corr_w = _unipc_tables((0.0, 0.5, 1.5), (1, 2), 4, True, "bh2", True)
    assert not pred_w.flags.writeable and not corr_w.flags.writeable
