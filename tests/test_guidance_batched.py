"""Guidance of a class-conditional network in one batched call (scoresde/guidance/conditional.py):
``negative_score_fn`` and ``multi_condition_score_fn`` equal the per-branch combinators
``negative_guidance`` and ``multi_condition_guidance`` pointwise, on the class-conditional oracle
(exact scores) and on a random network, and call the network once per evaluation.
"""

from __future__ import annotations

import pytest
import torch
from test_guidance import (
    F64,
    SDES,
    _oracle,
    points,
    random_conditional_net,
    sd_model,
    three_classes,
)
from torch import Tensor
from torch.testing import assert_close

import scoresde as sd
from scoresde.guidance import (
    cfg_score_fn,
    classifier_free_guidance,
    cosine_scale,
    linear_scale,
    multi_condition_guidance,
    multi_condition_score_fn,
    negative_guidance,
    negative_score_fn,
)
from scoresde.nets import ResidualMLP
from scoresde.oracle import exact_class_score


class OracleConditional(torch.nn.Module):
    """The class-conditional oracle in the shape of a network trained with label dropout:
    ``model(x, t, y)`` is the exact grad log p_t(x | y_i) for each sample's label, and the exact
    grad log p_t(x) for the null label ``num_classes``. Records the batch size of every call."""

    def __init__(self, sde: sd.SDE, data) -> None:
        super().__init__()
        self.num_classes = data.num_classes
        self.scores = [exact_class_score(sde, data, y) for y in range(data.num_classes)]
        self.scores.append(sd.exact_score(sde, data.mixture))
        self.calls: list[int] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        out = torch.zeros_like(x)
        for k, score in enumerate(self.scores):
            out = torch.where((y == k)[:, None], score(x, t), out)
        return out


def _branch(model, y):
    """The score function of one label of a conditional model (one call per evaluation)."""

    def score_fn(x, t):
        tt = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        return model(x, tt, y if isinstance(y, Tensor) else torch.full((x.shape[0],), y))

    return score_fn


LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1] * 4)  # 32 per-sample labels
OTHER = (LABELS + 1) % 3


@pytest.mark.parametrize("name", list(SDES))
def test_batched_negative_guidance_equals_negative_guidance_on_the_oracle(name):
    model = OracleConditional(SDES[name], three_classes())
    s_u, s_y = _oracle(name)
    x, t = points(32), torch.linspace(0.02, 1.0, 32, dtype=F64)
    for y, neg in ((2, 0), (LABELS, OTHER), (LABELS, 1)):
        for w in (0.5, 2.0, -0.5, linear_scale(3.0, 0.0)):
            model.calls.clear()
            got = negative_score_fn(model, y, neg, scale=w)(x, t)
            assert model.calls == [64]  # one call on the batch [y, y_neg]
            want = negative_guidance(_branch(model, y), _branch(model, neg), scale=w)(x, t)
            assert_close(got, want, rtol=0, atol=1e-10)
    # Against the exact per-class scores directly (class 2 away from class 0), and at w = 0
    # the conditional branch alone.
    c, n = s_y[2](x, t), s_y[0](x, t)
    assert_close(negative_score_fn(model, 2, 0, 1.5)(x, t), c + 1.5 * (c - n), rtol=0, atol=1e-10)
    model.calls.clear()
    assert_close(negative_score_fn(model, 2, 0, 0.0)(x, t), c, rtol=0, atol=1e-10)
    assert model.calls == [32]


@pytest.mark.parametrize("name", list(SDES))
def test_batched_multi_condition_guidance_equals_multi_condition_guidance_on_the_oracle(name):
    model = OracleConditional(SDES[name], three_classes())
    s_u, s_y = _oracle(name)
    x, t = points(32), torch.linspace(0.02, 1.0, 32, dtype=F64)
    sched = cosine_scale(2.0, 0.0)
    for ys, ws in (
        ([0, 1, 2], [1.5, -0.5, sched]),
        ([LABELS, OTHER], [3.0, -1.0]),
        ([1], [2.5]),
        ([0, 2], [0.0, 0.0]),
    ):
        model.calls.clear()
        got = multi_condition_score_fn(model, ys, ws)(x, t)
        assert model.calls == [32 * (len(ys) + 1)]  # one call on [null, y_1, ..., y_K]
        fns = [_branch(model, y) for y in ys]
        want = multi_condition_guidance(_branch(model, 3), fns, ws)(x, t)
        assert_close(got, want, rtol=0, atol=1e-10)
    # Against the exact scores directly.
    u, c = s_u(x, t), [s(x, t) for s in s_y]
    got = multi_condition_score_fn(model, [0, 1, 2], [1.5, -0.5, sched])(x, t)
    want = u + 1.5 * (c[0] - u) - 0.5 * (c[1] - u) + sched(t)[:, None] * (c[2] - u)
    assert_close(got, want, rtol=0, atol=1e-10)
    # One condition is classifier-free guidance (cfg_score_fn, also one call).
    one = multi_condition_score_fn(model, [1], [2.5])(x, t)
    assert_close(one, cfg_score_fn(model, 1, 2.5)(x, t), rtol=0, atol=1e-10)
    assert_close(one, classifier_free_guidance(s_y[1], s_u, 2.5)(x, t), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_batched_variants_make_one_network_call_per_evaluation(kind):
    # A random network (every branch differs) and a sampler: the counted NFE equals the number of
    # network calls, each on (branches x batch) rows, and the result equals the per-branch
    # combinators evaluated with one call per branch.
    net, shape = random_conditional_net(kind)
    model = sd_model(net)
    calls: list[int] = []
    net.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.full((8,), 0.3, dtype=F64)
    y, other = LABELS[:8], OTHER[:8]
    with torch.no_grad():
        neg = negative_score_fn(model, y, other, 2.0)
        got = neg(x, t)
        assert calls == [16]
        want = negative_guidance(_branch(model, y), _branch(model, other), 2.0)(x, t)
        assert_close(got, want, rtol=0, atol=1e-10)
        multi = multi_condition_score_fn(model, [y, other], [3.0, -1.0])
        calls.clear()
        got = multi(x, t)
        assert calls == [24]
        fns = [_branch(model, y), _branch(model, other)]
        want = multi_condition_guidance(_branch(model, 3), fns, [3.0, -1.0])(x, t)
        assert_close(got, want, rtol=0, atol=1e-10)
        for score, rows in ((neg, 16), (multi, 24)):
            calls.clear()
            res = sd.sample(
                SDES["vp"], score, shape, "ode_euler", 5, dtype=F64,
                generator=torch.Generator().manual_seed(1),
            )  # fmt: skip
            assert calls == [rows] * res.nfe and res.nfe == 5


def test_batched_variants_reject_bad_input():
    model = OracleConditional(SDES["vp"], three_classes())
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        negative_score_fn(model, 0, 3)  # 3 is the null label, not a class
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        multi_condition_score_fn(model, [0, torch.tensor([1, 5])], [1.0, 1.0])
    with pytest.raises(ValueError, match="scale"):
        negative_score_fn(model, 0, 1, scale=float("nan"))
    with pytest.raises(ValueError, match="2 conditions but 1 scales"):
        multi_condition_score_fn(model, [0, 1], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        multi_condition_score_fn(model, [], [])
    with pytest.raises(TypeError, match="sequence"):
        multi_condition_score_fn(model, torch.tensor([0, 1]), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"shape \(3,\) but the batch size is 4"):
        negative_score_fn(model, torch.tensor([0, 1, 2]), 1, 2.0)(points(4), 0.5)
    unconditional = sd_model(ResidualMLP(2, hidden=8, depth=1))
    for make in (
        lambda m: negative_score_fn(m, 0, 1),
        lambda m: multi_condition_score_fn(m, [0], [1]),
    ):
        with pytest.raises(ValueError, match="class-conditional model"):
            make(unconditional)
