"""Guidance (scoresde/guidance.py, nets/classifier.py, training.train_classifier) and the
conditional oracles (scoresde/oracle.py) against closed forms: Bayes' rule on Gaussian mixtures,
exact conditional scores, exact conditional samples. Every statistical check compares with the
spread of the same statistic between independent exact sample sets (the noise band), or with a
binomial standard error.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SONG_SDES as SDES
from torch.testing import assert_close

import scoresde as sd
from scoresde.guidance import (
    cfg_score_fn,
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob,
    constant_scale,
    cosine_scale,
    guidance_rescale,
    interval_scale,
    linear_scale,
    multi_condition_guidance,
    negative_guidance,
)
from scoresde.metrics import MMD
from scoresde.nets import NoisyClassifier, ResidualMLP, UNet
from scoresde.oracle import ClassConditionalMixture, exact_class_score, exact_classifier
from scoresde.training import train_classifier

F64 = torch.float64


def gm(means, stds, weights=None) -> sd.GaussianMixture:
    return sd.GaussianMixture(
        torch.tensor(means, dtype=F64), torch.tensor(stds, dtype=F64), weights
    )


def three_classes() -> ClassConditionalMixture:
    """2-D: class 0 two blobs on the left, class 1 one blob on the right, class 2 a wide blob
    in the middle that overlaps both; unequal class priors."""
    return ClassConditionalMixture(
        [
            gm([[-2.0, 1.0], [-2.0, -1.0]], [0.3, 0.5], weights=[0.7, 0.3]),
            gm([[2.0, 0.0]], [[0.4, 0.6]]),
            gm([[0.0, 0.5], [0.5, -0.5]], 0.8),
        ],
        class_weights=[0.5, 0.2, 0.3],
    )


def eight_d() -> sd.GaussianMixture:
    """8-D, components paired on the first 4 coordinates (so knowing them leaves a bimodal
    conditional on the last 4), anisotropic stds, unequal weights."""
    g = torch.Generator().manual_seed(0)
    centres = (2 * torch.randn(4, 4, generator=g, dtype=F64)).repeat_interleave(2, 0)
    means = torch.cat([centres, 2 * torch.randn(8, 4, generator=g, dtype=F64)], 1)
    stds = 0.3 + 0.3 * torch.rand(8, 8, generator=g, dtype=F64)
    return sd.GaussianMixture(means, stds, 0.2 + torch.rand(8, generator=g, dtype=F64))


def points(n: int, d: int = 2, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ----------------------------------------------------------------------------------------------
# Conditional oracles


def test_class_conditional_mixture_is_the_joint():
    data = three_classes()
    assert data.num_classes == 3 and data.dim == 2
    # The unconditional mixture's weights are pi_y w_{y,k}.
    assert_close(data.mixture.weights, torch.tensor([0.35, 0.15, 0.2, 0.15, 0.15], dtype=F64))
    assert data.component_class.tolist() == [0, 0, 1, 2, 2]
    x, y = data.sample(20_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(y, minlength=3) / 20_000.0
    se = torch.sqrt(data.class_weights * (1 - data.class_weights) / 20_000)
    assert torch.all((freq - data.class_weights).abs() < 4 * se)
    # Samples of class 1 come from its own blob.
    assert_close(x[y == 1].mean(0), torch.tensor([2.0, 0.0], dtype=F64), atol=0.03, rtol=0)


@pytest.mark.parametrize("name", list(SDES))
def test_exact_class_score_is_the_score_of_the_diffused_class_mixture(name):
    sde, data = SDES[name], three_classes()
    x, t = points(64), torch.linspace(0.01, 1.0, 64, dtype=F64)
    for y in range(3):
        expected = sd.exact_score(sde, data.conditional(y))(x, t)
        assert_close(exact_class_score(sde, data, y)(x, t), expected, rtol=1e-12, atol=1e-12)
    # Per-sample labels select per-sample classes.
    labels = torch.arange(64) % 3
    got = exact_class_score(sde, data, labels)(x, t)
    for y in range(3):
        expected = sd.exact_score(sde, data.conditional(y))(x, t)
        assert_close(got[labels == y], expected[labels == y], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(SDES))
def test_exact_classifier_is_bayes_rule(name):
    # log p_t(y | x) = log pi_y + log p_t(x | y) - log p_t(x), each from exact_log_prob.
    sde, data = SDES[name], three_classes()
    x, t = points(64, seed=1), torch.linspace(0.01, 1.0, 64, dtype=F64)
    log_px = sd.exact_log_prob(sde, data.mixture)(x, t)
    total = torch.zeros(64, dtype=F64)
    for y in range(3):
        log_pxy = sd.exact_log_prob(sde, data.conditional(y))(x, t)
        expected = torch.log(data.class_weights[y]) + log_pxy - log_px
        got = exact_classifier(sde, data, y)(x, t)
        assert_close(got, expected, rtol=1e-10, atol=1e-10)
        total += got.exp()
    assert_close(total, torch.ones(64, dtype=F64), rtol=1e-12, atol=1e-12)
    # t = 0 (VP): the data's own classifier.
    if name == "vp":
        x0 = points(16, seed=2)
        assert_close(
            data.log_prob_class(x0, 1), exact_classifier(sde, data, 1)(x0, 0.0), atol=1e-6, rtol=0
        )


def test_mixture_condition_is_bayes_rule_on_components():
    data = eight_d()
    mask = torch.tensor([True] * 4 + [False] * 4)
    known = data.sample(5, torch.Generator().manual_seed(3))
    cond = data.condition(known, mask)
    # r_k ∝ w_k N(x_M; m_kM, s_kM^2), computed independently with torch.distributions.
    normal = torch.distributions.Normal(data.means[:, :4], data.stds[:, :4])
    log_lik = normal.log_prob(known[:, None, :4]).sum(-1)
    expected = torch.log_softmax(torch.log(data.weights) + log_lik, 1)
    assert_close(cond.log_weights, expected, rtol=1e-12, atol=1e-12)
    # log p(x_M' | x_M) = log p(x) - log p(x_M), with p(x_M) the mixture of the known marginals.
    marginal = sd.GaussianMixture(data.means[:, :4], data.stds[:, :4], data.weights)
    x = torch.cat([known[:, :4], points(5, 4, seed=4)], 1)
    assert_close(cond.log_prob(x), data.log_prob(x) - marginal.log_prob(known[:, :4]))
    assert_close(cond.log_evidence, marginal.log_prob(known[:, :4]))
    # Samples: known coordinates exact, unknown ones with the mixture's mean.
    rows = known[:1].expand(20_000, 8)
    draws = data.condition(rows, mask).sample(torch.Generator().manual_seed(5))
    assert torch.equal(draws[:, :4], rows[:, :4])
    r = cond.log_weights[0].exp()
    mean = (r[:, None] * data.means[:, 4:]).sum(0)
    second = (r[:, None] * (data.means[:, 4:] ** 2 + data.stds[:, 4:] ** 2)).sum(0)
    se = torch.sqrt((second - mean**2) / 20_000)
    assert torch.all((draws[:, 4:].mean(0) - mean).abs() < 4 * se)


def test_mixture_condition_checks_its_arguments():
    data = eight_d()
    with pytest.raises(ValueError, match="bool"):
        data.condition(torch.zeros(8, dtype=F64), torch.ones(8))
    with pytest.raises(ValueError, match="mask must have"):
        data.condition(torch.zeros(3, 8, dtype=F64), torch.ones(5, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance


def test_cfg_is_the_affine_combination_of_the_branches():
    sde, data = SDES["vp"], three_classes()
    s_c, s_u = exact_class_score(sde, data, 0), sd.exact_score(sde, data.mixture)
    x, t = points(32), torch.linspace(0.05, 0.9, 32, dtype=F64)
    c, u = s_c(x, t), s_u(x, t)
    for w in (0.0, 1.0, 2.5, -1.0):
        got = classifier_free_guidance(s_c, s_u, scale=w)(x, t)
        assert_close(got, u + w * (c - u), rtol=1e-14, atol=1e-14)
    assert torch.equal(classifier_free_guidance(s_c, s_u, scale=1)(x, t), c)


def test_cfg_interval_guides_only_inside_and_is_conditional_outside():
    sde, data = SDES["vp"], three_classes()
    s_c, s_u = exact_class_score(sde, data, 0), sd.exact_score(sde, data.mixture)
    x, t = points(40), torch.linspace(0.0, 1.0, 40, dtype=F64)
    got = classifier_free_guidance(s_c, s_u, scale=3.0, interval=(0.2, 0.6))(x, t)
    inside = (t >= 0.2) & (t <= 0.6)
    c, u = s_c(x, t), s_u(x, t)
    assert_close(got[inside], (u + 3 * (c - u))[inside], rtol=1e-14, atol=1e-14)
    assert_close(got[~inside], c[~inside], rtol=1e-14, atol=1e-14)
    # A scalar time works too (the weight is a device-side select, no Python branch on t).
    assert_close(
        classifier_free_guidance(s_c, s_u, 3.0, (0.2, 0.6))(x, 0.9), s_c(x, 0.9), rtol=0, atol=0
    )


# ----------------------------------------------------------------------------------------------
# Guidance variants: schedules w(t), negative conditioning, several conditions, rescale. Each is
# compared pointwise with its formula evaluated independently from the exact oracle scores.


def _oracle(name: str = "vp"):
    sde, data = SDES[name], three_classes()
    s_u = sd.exact_score(sde, data.mixture)
    s_y = [exact_class_score(sde, data, y) for y in range(3)]
    return s_u, s_y


def test_schedules_follow_their_formulas():
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    assert constant_scale(2.5)(t) == 2.5
    assert_close(linear_scale(3.0, 1.0)(t), 3.0 - 2.0 * t, rtol=0, atol=1e-15)
    assert_close(linear_scale(3.0, 1.0, T=2.0)(2 * t), 3.0 - 2.0 * t, rtol=0, atol=1e-15)
    cos = cosine_scale(4.0, 1.0)(t)
    assert_close(cos, 1.0 + 3.0 * (1 + torch.cos(torch.pi * t)) / 2, rtol=0, atol=1e-15)
    assert cos[0] == 4.0 and abs(cos[-1] - 1.0) < 1e-15
    iv = interval_scale(3.0, 0.2, 0.6)(t)
    inside = (t >= 0.2) & (t <= 0.6)
    assert torch.equal(iv, torch.where(inside, 3.0, 1.0).to(F64))


@pytest.mark.parametrize("name", list(SDES))
def test_scheduled_cfg_is_the_affine_combination_with_w_of_t(name):
    s_u, s_y = _oracle(name)
    x, t = points(32), torch.linspace(0.02, 1.0, 32, dtype=F64)
    c, u = s_y[0](x, t), s_u(x, t)
    for sched in (linear_scale(4.0, 0.5), cosine_scale(4.0, 0.5), interval_scale(3.0, 0.2, 0.6)):
        w = sched(t)[:, None]
        got = classifier_free_guidance(s_y[0], s_u, scale=sched)(x, t)
        assert_close(got, u + w * (c - u), rtol=0, atol=1e-10)
    # A scalar time: the schedule is evaluated at the batch of equal times.
    got = classifier_free_guidance(s_y[0], s_u, scale=linear_scale(4.0, 0.5))(x, 0.5)
    assert_close(got, s_u(x, 0.5) + 2.25 * (s_y[0](x, 0.5) - s_u(x, 0.5)), rtol=0, atol=1e-10)
    # Classifier guidance with a schedule: s_u + w(t) grad log p_t(y | x); at w = 1 exact.
    clf = exact_classifier(SDES[name], three_classes(), 0)
    lin = linear_scale(4.0, 0.5)
    got = classifier_guidance(s_u, clf, scale=lin)(x, t)
    assert_close(got, u + lin(t)[:, None] * (c - u), rtol=0, atol=1e-10)


def test_constant_schedule_is_constant_cfg_bit_for_bit():
    s_u, s_y = _oracle()
    x, t = points(32), torch.linspace(0.05, 0.9, 32, dtype=F64)
    for w in (2.5, -1.0, 0.3):
        ref = classifier_free_guidance(s_y[1], s_u, scale=w)(x, t)
        for sched in (constant_scale(w), lambda tt, w=w: torch.full_like(tt, w)):
            assert torch.equal(classifier_free_guidance(s_y[1], s_u, scale=sched)(x, t), ref)
        ref_iv = classifier_free_guidance(s_y[1], s_u, w, interval=(0.2, 0.6))(x, t)
        got_iv = classifier_free_guidance(s_y[1], s_u, constant_scale(w), (0.2, 0.6))(x, t)
        assert torch.equal(got_iv, ref_iv)
    clf = exact_classifier(SDES["vp"], three_classes(), 1)
    ref = classifier_guidance(s_u, clf, scale=2.0)(x, t)
    assert torch.equal(classifier_guidance(s_u, clf, scale=constant_scale(2.0))(x, t), ref)


def test_scheduled_cfg_score_fn_batches_and_follows_the_schedule():
    torch.manual_seed(0)
    model = sd_model(ResidualMLP(2, hidden=16, depth=1, num_classes=3)).double()
    x, t = points(8), torch.linspace(0.1, 0.9, 8, dtype=F64)
    with torch.no_grad():
        for p in model.parameters():  # the output layer starts at 0: make both branches differ
            p.add_(0.3 * torch.randn_like(p))
        c = model(x, t, torch.full((8,), 2))
        u = model(x, t, torch.full((8,), 3))
        sched = cosine_scale(3.0, 1.0)
        got = cfg_score_fn(model, 2, scale=sched)(x, t)
        assert_close(got, u + sched(t)[:, None] * (c - u), rtol=0, atol=1e-10)
        ref = cfg_score_fn(model, 2, scale=2.0)(x, t)
        assert torch.equal(cfg_score_fn(model, 2, scale=constant_scale(2.0))(x, t), ref)
        got = cfg_score_fn(model, 2, scale=sched, rescale=0.7)(x, t)
        want = guidance_rescale(u + sched(t)[:, None] * (c - u), c, 0.7)
        assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(SDES))
def test_negative_guidance_is_its_formula(name):
    s_u, s_y = _oracle(name)
    x, t = points(32), torch.linspace(0.02, 1.0, 32, dtype=F64)
    c, n = s_y[2](x, t), s_y[0](x, t)
    for w in (0.5, 2.0, -0.5):
        got = negative_guidance(s_y[2], s_y[0], scale=w)(x, t)
        assert_close(got, c + w * (c - n), rtol=0, atol=1e-10)
    sched = linear_scale(3.0, 0.0)
    got = negative_guidance(s_y[2], s_y[0], scale=sched)(x, t)
    assert_close(got, c + sched(t)[:, None] * (c - n), rtol=0, atol=1e-10)
    # w = 0 is the conditional score, and the negative branch is not evaluated.
    calls = []
    neg = lambda x, t: calls.append(1) or s_y[0](x, t)  # noqa: E731
    assert torch.equal(negative_guidance(s_y[2], neg, scale=0)(x, t), c) and not calls
    # It is CFG with the negative condition as the "unconditional" branch at scale 1 + w.
    cfg = classifier_free_guidance(s_y[2], s_y[0], scale=3.0)(x, t)
    assert_close(negative_guidance(s_y[2], s_y[0], scale=2.0)(x, t), cfg, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(SDES))
def test_multi_condition_guidance_is_its_formula(name):
    s_u, s_y = _oracle(name)
    x, t = points(32), torch.linspace(0.02, 1.0, 32, dtype=F64)
    u, c = s_u(x, t), [s(x, t) for s in s_y]
    sched = cosine_scale(2.0, 0.0)
    ws = [1.5, -0.5, sched]
    got = multi_condition_guidance(s_u, s_y, ws)(x, t)
    want = u + 1.5 * (c[0] - u) - 0.5 * (c[1] - u) + sched(t)[:, None] * (c[2] - u)
    assert_close(got, want, rtol=0, atol=1e-10)
    # One condition is classifier-free guidance.
    one = multi_condition_guidance(s_u, [s_y[1]], [2.5])(x, t)
    assert_close(one, classifier_free_guidance(s_y[1], s_u, 2.5)(x, t), rtol=0, atol=1e-10)
    # Zero weights give the unconditional score exactly.
    assert torch.equal(multi_condition_guidance(s_u, s_y, [0.0, 0.0, 0.0])(x, t), u)


@pytest.mark.parametrize("name", list(SDES))
def test_guidance_rescale_is_lin_et_al_algorithm_2(name):
    s_u, s_y = _oracle(name)
    x, t = points(32), torch.linspace(0.02, 1.0, 32, dtype=F64)
    c, u = s_y[0](x, t), s_u(x, t)
    w, phi = 4.0, 0.7
    cfg = u + w * (c - u)
    # Alg. 2 of Lin et al. 2024, written out with population stds over the event dims.
    std_c = ((c - c.mean(1, keepdim=True)) ** 2).mean(1, keepdim=True).sqrt()
    std_g = ((cfg - cfg.mean(1, keepdim=True)) ** 2).mean(1, keepdim=True).sqrt()
    want = phi * cfg * (std_c / std_g) + (1 - phi) * cfg
    assert_close(guidance_rescale(cfg, c, phi), want, rtol=0, atol=1e-10)
    got = classifier_free_guidance(s_y[0], s_u, scale=w, rescale=phi)(x, t)
    assert_close(got, want, rtol=0, atol=1e-10)
    # phi = 0 is plain CFG; phi = 1 gives the conditional score's std to every sample.
    assert torch.equal(guidance_rescale(cfg, c, 0.0), cfg)
    assert_close(guidance_rescale(cfg, c, 1.0).std(1), c.std(1), rtol=1e-12, atol=0)
    # eps = -sigma_t s: rescaling noise predictions equals rescaling scores and converting.
    _, sigma = SDES[name].marginal(t)
    sig = sigma[:, None]
    eps = guidance_rescale(-sig * cfg, -sig * c, phi)
    assert_close(eps, -sig * guidance_rescale(cfg, c, phi), rtol=1e-12, atol=1e-12)
    # A constant guided prediction (std 0, e.g. a zero-initialised net) is left as it is.
    flat = torch.cat([torch.zeros(1, 2, dtype=F64), cfg[1:]])
    out = guidance_rescale(flat, c, phi)
    assert torch.equal(out[0], flat[0]) and torch.isfinite(out).all()
    assert_close(out[1:], want[1:], rtol=0, atol=1e-10)
    # Image-shaped events: the std is over all event dims of each sample.
    img_g, img_c = cfg.reshape(32, 1, 2, 1).repeat(1, 2, 1, 3), c.reshape(32, 1, 2, 1)
    img_c = img_c.repeat(1, 2, 1, 3)
    assert_close(
        guidance_rescale(img_g, img_c, phi),
        want.reshape(32, 1, 2, 1).repeat(1, 2, 1, 3),
        rtol=0,
        atol=1e-10,
    )


def _grad(log_density, x, t):
    xg = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(log_density(xg, t).sum(), xg)
    return g


@pytest.mark.parametrize("name", list(SDES))
def test_variants_are_gradients_of_their_tilted_log_densities(name):
    # An independent truth: autograd of the exact log-densities of the diffused mixtures, where
    # each variant is grad log of p_t(x) prod_k [p_t(x | c_k) / p_t(x)]^w_k at every t.
    sde, data = SDES[name], three_classes()
    s_u, s_y = _oracle(name)
    logp = sd.exact_log_prob(sde, data.mixture)
    logc = [sd.exact_log_prob(sde, data.conditional(y)) for y in range(3)]
    x, t = points(32), torch.linspace(0.05, 1.0, 32, dtype=F64)
    w = 1.7
    neg = _grad(lambda x, t: (1 + w) * logc[1](x, t) - w * logc[0](x, t), x, t)
    assert_close(negative_guidance(s_y[1], s_y[0], w)(x, t), neg, rtol=0, atol=1e-10)
    ws = [2.0, -0.5, 0.8]

    def tilted(x, t):
        return logp(x, t) + sum(
            wk * (lc(x, t) - logp(x, t)) for wk, lc in zip(ws, logc, strict=True)
        )

    multi = _grad(tilted, x, t)
    assert_close(multi_condition_guidance(s_u, s_y, ws)(x, t), multi, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [linear_scale(3.0, 1.0), cosine_scale(3.0, 1.0)])
def test_scheduled_guided_sampling_has_no_per_step_sync(scale):
    from test_sampling import count_syncs

    s_u, s_y = _oracle()
    for guided in (
        classifier_free_guidance(s_y[0], s_u, scale=scale, rescale=0.5),
        negative_guidance(s_y[0], s_y[1], scale=scale),
        multi_condition_guidance(s_u, s_y[:2], [scale, 0.5]),
    ):
        few = count_syncs(SDES["vp"], guided, "ode_euler", 5)
        many = count_syncs(SDES["vp"], guided, "ode_euler", 50)
        assert many.count == few.count, (few.names, many.names)


def test_guidance_variants_reject_bad_input():
    s_u, s_y = _oracle()
    x = points(4)
    with pytest.raises(ValueError, match="w0"):
        linear_scale(float("nan"), 1.0)
    with pytest.raises(ValueError, match="T"):
        cosine_scale(2.0, 1.0, T=0.0)
    with pytest.raises(ValueError, match="interval"):
        interval_scale(2.0, 0.6, 0.2)
    with pytest.raises(TypeError, match="scale"):
        classifier_free_guidance(s_y[0], s_u, scale="2")
    bad = classifier_free_guidance(s_y[0], s_u, scale=lambda t: torch.ones(3, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"w\(t\).*\(4,\)"):
        bad(x, 0.5)
    with pytest.raises(ValueError, match="w\\(t\\)"):
        classifier_free_guidance(s_y[0], s_u, scale=lambda t: float("inf"))(x, 0.5)
    with pytest.raises(ValueError, match="rescale"):
        classifier_free_guidance(s_y[0], s_u, scale=2.0, rescale=1.5)
    with pytest.raises(ValueError, match="scale"):
        negative_guidance(s_y[0], s_y[1], scale=float("inf"))
    with pytest.raises(TypeError, match="neg_score_fn"):
        negative_guidance(s_y[0], None, scale=1.0)
    with pytest.raises(ValueError, match="2 conditions but 1 scales"):
        multi_condition_guidance(s_u, s_y[:2], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        multi_condition_guidance(s_u, [], [])
    with pytest.raises(ValueError, match=r"scales\[1\]"):
        multi_condition_guidance(s_u, s_y[:2], [1.0, float("nan")])
    with pytest.raises(TypeError, match="sequence"):
        multi_condition_guidance(s_u, s_y[0], [1.0])
    with pytest.raises(ValueError, match="phi"):
        guidance_rescale(x, x, -0.1)
    with pytest.raises(ValueError, match="same shape"):
        guidance_rescale(x, x[:2], 0.5)
    with pytest.raises(ValueError, match="2 event entries"):
        guidance_rescale(x[:, :1], x[:, :1], 0.5)


def _band(sampler, n_pairs: int = 5):
    """(mean, std) of MMD^2 between independent exact sets: the noise band."""
    values = []
    for i in range(n_pairs):
        values.append(MMD(sampler(100 + 2 * i))(sampler(101 + 2 * i)))
    v = torch.tensor(values, dtype=F64)
    return float(v.mean()), float(v.std())


def test_cfg_scale_one_samples_the_class_conditional_and_zero_the_mixture():
    # With exact scores, w = 1 is the conditional score and w = 0 the unconditional one, so the
    # sampler's output must sit in the two-sample noise band of exact samples of p(x | y) and
    # p(x) respectively; p(x | y) and p(x) themselves are far apart (the test has power).
    sde, data, n, y = SDES["vp"], three_classes(), 2000, 2
    s_c, s_u = exact_class_score(sde, data, y), sd.exact_score(sde, data.mixture)

    def exact_cond(seed):
        return data.conditional(y).sample(n, torch.Generator().manual_seed(seed))

    def exact_uncond(seed):
        return data.mixture.sample(n, torch.Generator().manual_seed(seed))

    def guided_samples(w):
        score = classifier_free_guidance(s_c, s_u, scale=w)
        g = torch.Generator().manual_seed(7)
        return sd.sample(sde, score, (n, 2), "dpm_solver", 40, order=3, dtype=F64, generator=g)

    for w, exact in ((1.0, exact_cond), (0.0, exact_uncond)):
        mean, std = _band(exact)
        res = guided_samples(w)
        value = MMD(exact(1))(res.samples)
        assert abs(value - mean) < 4 * std + 1e-4, (w, value, mean, std)
    assert MMD(exact_cond(1))(exact_uncond(2)) > 0.05


def random_conditional_net(kind: str):
    """A float64 3-class ResidualMLP ("mlp", events (2,)) or UNet ("unet", events (1, 8, 8)) with
    random weights everywhere, so every label gives a different output; and a batch-8 shape."""
    torch.manual_seed(0)
    if kind == "mlp":
        net, shape = ResidualMLP(2, hidden=16, depth=1, num_classes=3).double(), (8, 2)
    else:
        net = UNet(channels=8, channel_mults=(1, 2), num_res_blocks=1, num_classes=3).double()
        shape = (8, 1, 8, 8)
    for p in net.parameters():  # the output layer starts at zero: make the branches differ
        torch.nn.init.normal_(p, std=0.3)
    return net, shape


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_cfg_score_fn_batches_both_branches_into_one_call(kind):
    net, shape = random_conditional_net(kind)
    model = sd_model(net)
    calls = []
    net.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.full((8,), 0.3, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    got = cfg_score_fn(model, y, scale=2.0)(x, t)
    assert calls == [16]
    c = model(x, t, y)
    u = model(x, t, torch.full((8,), 3))
    assert_close(got, u + 2.0 * (c - u))
    expected = model(x, t, torch.ones(8, dtype=torch.long))
    calls.clear()
    assert_close(cfg_score_fn(model, 1, scale=1.0)(x, t), expected)
    assert calls == [8]  # scale 1: the conditional branch alone


def sd_model(net):
    from scoresde.model import ScoreModel

    return ScoreModel(net, SDES["vp"])


# ----------------------------------------------------------------------------------------------
# Classifier guidance


@pytest.mark.parametrize("name", list(SDES))
def test_classifier_guidance_with_the_exact_classifier_is_the_conditional_score(name):
    # grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x): pointwise to 1e-8 in float64,
    # also when the caller runs under no_grad (autograd is switched on inside).
    sde, data = SDES[name], three_classes()
    x, t = points(128, seed=3), torch.linspace(1e-3, 1.0, 128, dtype=F64)
    for y in range(3):
        guided = classifier_guidance(
            sd.exact_score(sde, data.mixture), exact_classifier(sde, data, y), scale=1.0
        )
        with torch.no_grad():
            got = guided(x, t)
        expected = exact_class_score(sde, data, y)(x, t)
        assert (got - expected).abs().max() <= 1e-8


def test_classifier_guidance_rejects_bad_log_prob_functions():
    sde, data = SDES["vp"], three_classes()
    score = sd.exact_score(sde, data.mixture)
    x, t = points(4), torch.full((4,), 0.5, dtype=F64)
    with pytest.raises(ValueError, match=r"\(4,\) tensor"):
        classifier_guidance(score, lambda x, t: x)(x, t)
    with pytest.raises(ValueError, match="autograd"):
        classifier_guidance(score, lambda x, t: torch.zeros(4, dtype=F64))(x, t)


def test_noisy_classifier_learns_the_classes_and_guides():
    sde = SDES["vp"]
    data = ClassConditionalMixture([gm([[-2.0, 0.0]], 0.3), gm([[2.0, 0.0]], 0.3)])
    x, y = data.sample(4000, torch.Generator().manual_seed(0))
    x = x.float()
    torch.manual_seed(0)
    clf = NoisyClassifier(2, 2, hidden=32, depth=1)
    losses = train_classifier(
        sde, clf, x, y, steps=300, batch_size=128, lr=3e-3, generator=torch.Generator()
    )
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        acc = (clf(x[:1000], torch.full((1000,), 0.05)).argmax(1) == y[:1000]).float().mean()
    assert acc > 0.95
    # The classifier's gradient points towards its class: at x = 0, class 1 pulls to +x.
    log_p1 = classifier_log_prob(clf, 1)
    guided = classifier_guidance(lambda x, t: torch.zeros_like(x), log_p1, scale=1.0)
    with torch.no_grad():
        g = guided(torch.zeros(4, 2), torch.full((4,), 0.3))
    assert torch.all(g[:, 0] > 0)


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors


def test_labels_out_of_range_are_rejected():
    sde, data = SDES["vp"], three_classes()
    for bad in (3, -1, torch.tensor([0, 3]), 1.0):
        with pytest.raises(ValueError, match=r"\[0, 3\)|integer"):
            exact_class_score(sde, data, bad)
        with pytest.raises(ValueError, match=r"\[0, 3\)|integer"):
            exact_classifier(sde, data, bad)
    net = ResidualMLP(2, hidden=8, depth=1, num_classes=3)
    model = sd_model(net)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cfg_score_fn(model, 3, scale=2.0)  # 3 is the null label, not a class
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cfg_score_fn(model, torch.tensor([0, 5]), scale=2.0)
    clf = NoisyClassifier(2, 3, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        classifier_log_prob(clf, 7)


def test_guidance_on_an_unconditional_model_is_rejected():
    model = sd_model(ResidualMLP(2, hidden=8, depth=1))
    with pytest.raises(ValueError, match="class-conditional model"):
        cfg_score_fn(model, 0, scale=2.0)


def test_bad_guidance_scales_are_rejected():
    score = sd.exact_score(SDES["vp"], eight_d())
    with pytest.raises(ValueError, match="scale"):
        classifier_free_guidance(score, score, scale=float("nan"))
    with pytest.raises(ValueError, match="interval"):
        classifier_free_guidance(score, score, scale=2.0, interval=(0.5, 0.1))
