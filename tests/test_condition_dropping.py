"""Condition dropping for classifier-free guidance (``TrainConfig.p_uncond``, Ho & Salimans 2022):
the rate at which the trainer replaces labels by the null label, and that one net trained with it
learns both the conditional and the unconditional score of the class-conditional oracle."""

from __future__ import annotations

import math

import torch

import scoresde as sd
from scoresde.model import ScoreModel
from scoresde.nets import ResidualMLP
from scoresde.oracle import ClassConditionalMixture, exact_class_score
from scoresde.training import TrainConfig, Trainer


def three_classes() -> ClassConditionalMixture:
    def gm(means, stds, weights=None):
        return sd.GaussianMixture(torch.tensor(means), torch.tensor(stds), weights)

    return ClassConditionalMixture(
        [
            gm([[-2.0, 1.0], [-2.0, -1.0]], [0.3, 0.5]),
            gm([[2.0, 0.0]], [0.5]),
            gm([[0.0, 0.0]], 0.8),
        ],
        class_weights=[0.5, 0.2, 0.3],
    )


def make_trainer(p_uncond: float, n: int = 4096, batch_size: int = 256) -> Trainer:
    torch.manual_seed(0)
    data = three_classes()
    x, y = data.sample(n, torch.Generator().manual_seed(0))
    net = ResidualMLP(2, hidden=64, depth=2, embed_dim=32, num_classes=3)
    cfg = TrainConfig(batch_size=batch_size, lr=3e-3, warmup=0, ema_decay=0, p_uncond=p_uncond)
    return Trainer(ScoreModel(net, sd.VPSDE()), x, cfg, labels=y)


def test_labels_are_dropped_at_the_asked_rate_and_kept_otherwise():
    p, steps = 0.3, 40
    trainer = make_trainer(p)
    seen: list[torch.Tensor] = []
    hook = trainer.model.net.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    try:
        with torch.no_grad():
            for step in range(steps):
                trainer.loss_at(step)
    finally:
        hook.remove()
    assert len(seen) == steps
    y = torch.cat(seen)
    true = torch.cat([trainer.labels[trainer._batch_indices(s)] for s in range(steps)])
    dropped = y == 3
    # Every label the net sees is either the true one or the null label.
    assert torch.equal(y[~dropped], true[~dropped])
    rate, se = dropped.double().mean().item(), math.sqrt(p * (1 - p) / y.numel())
    assert abs(rate - p) < 4 * se, (rate, p, se)
    # p_uncond = 0 never drops.
    seen.clear()
    trainer0 = make_trainer(0.0)
    hook = trainer0.model.net.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    try:
        with torch.no_grad():
            trainer0.loss_at(0)
    finally:
        hook.remove()
    assert torch.equal(seen[0], trainer0.labels[trainer0._batch_indices(0)])


def test_a_net_trained_with_dropping_learns_both_scores():
    data, sde = three_classes(), sd.VPSDE()
    trainer = make_trainer(0.2)
    model = trainer.model
    g = torch.Generator().manual_seed(1)
    x, _ = data.sample(512, g)
    t = 0.1 + 0.9 * torch.rand(512, generator=g)
    xt = model.marginal(t)[0][:, None] * x + model.marginal(t)[1][:, None] * torch.randn(
        x.shape, generator=g
    )
    xt = xt.float()
    y = torch.randint(0, 3, (512,), generator=g)
    exact_c = exact_class_score(sde, data, y)(xt, t).float()
    exact_u = sd.exact_score(sde, data.mixture)(xt, t).float()
    null = torch.full_like(y, 3)

    def errors() -> tuple[float, float]:
        # Relative mean squared error of each branch, weighted by sigma_t^2 (the eps scale).
        s2 = model.marginal(t)[1][:, None].float() ** 2
        with torch.no_grad():
            ec = (s2 * (model(xt, t, y) - exact_c) ** 2).mean() / (s2 * exact_c**2).mean()
            eu = (s2 * (model(xt, t, null) - exact_u) ** 2).mean() / (s2 * exact_u**2).mean()
        return ec.item(), eu.item()

    before = errors()
    trainer.train(400, progress=False)
    after = errors()
    assert after[0] < 0.5 * before[0] and after[1] < 0.5 * before[1], (before, after)
    # The branches differ: the conditional one is closer to the class score than the null one.
    with torch.no_grad():
        s2 = model.marginal(t)[1][:, None].float() ** 2
        gap = (s2 * (model(xt, t, null) - exact_c) ** 2).mean() / (s2 * exact_c**2).mean()
    assert after[0] < gap.item(), (after, gap)
