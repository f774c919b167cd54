# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Score matching: training a small network on 2-D data
#
# A sampler needs $\nabla_x \log p_t(x)$ at every $t$. For real data we learn it: a network
# $s_\theta(x, t)$ trained by **denoising score matching** (Vincent 2011; Song et al. 2021,
# Eq. 7). Here the data is an exact Gaussian mixture, so we can compare what the network learned
# with the true score, and the loss with its true minimum. Training is kept tiny (a few seconds
# on one CPU core); the point is the checks, not the quality.

# %%
import math

import matplotlib.pyplot as plt
import torch

import scoresde as sd
from scoresde.metrics import mmd2
from scoresde.nets import ResidualMLP
from scoresde.training import TrainConfig, Trainer

torch.manual_seed(0)  # the network's initial weights
g = torch.Generator().manual_seed(0)

# %% [markdown]
# ## Why denoising score matching works
#
# We cannot regress on $\nabla \log p_t(x_t)$: it is unknown. But the perturbation kernel is
# known, $x_t = \alpha_t x_0 + \sigma_t z$, with score $\nabla_{x_t} \log p_{0t}(x_t \mid x_0) =
# -z/\sigma_t$. Vincent's identity: for every $t$,
#
# $$\mathbb E\,\big\|s_\theta(x_t, t) + z/\sigma_t\big\|^2
#   = \mathbb E\,\big\|s_\theta(x_t, t) - \nabla \log p_t(x_t)\big\|^2 + C_t,$$
#
# with $C_t$ independent of $\theta$: the conditional target's mean given $x_t$ is the true
# score. So the minimiser is the true score, and the **minimum is not zero** but
# $C = \mathbb E_t \lambda(t) C_t$. `sd.dsm_loss` uses $\lambda(t) = \sigma_t^2$ and a factor
# $\tfrac12$:
#
# $$\mathcal L(\theta)
#   = \mathbb E_{t, x_0, z}\ \tfrac12\,\big\|\sigma_t s_\theta(x_t, t) + z\big\|^2 .$$
#
# With the exact score plugged in, `dsm_loss` estimates that floor.

# %%
sde = sd.VPSDE()
angles = 2 * math.pi * torch.arange(4) / 4
data = sd.GaussianMixture(2.0 * torch.stack([angles.cos(), angles.sin()], 1), stds=0.4)
exact = sd.exact_score(sde, data)


def exact_model(x, t, y=None):  # the signature dsm_loss calls a model with
    return exact(x, t)


x_eval = data.sample(20000, generator=g)
per_sample = sd.dsm_loss(sde, exact_model, x_eval, reduction="none", generator=g)
floor, floor_se = per_sample.mean().item(), (per_sample.std() / math.sqrt(len(x_eval))).item()
zero = sd.dsm_loss(sde, lambda x, t, y=None: torch.zeros_like(x), x_eval, generator=g).item()
print(f"DSM loss at the exact score (its minimum): {floor:.4f} ± {floor_se:.4f}")
print(f"DSM loss of the zero score:               {zero:.4f} (= d/2 = 1)")
# E ||z||^2 / 2 = d / 2, and ||z||^2 / 2 has variance d / 2: standard error sqrt(1 / N)
assert abs(zero - 1.0) < 4 * math.sqrt(1 / len(x_eval))

# %% [markdown]
# ## Training
#
# `ResidualMLP` predicts the noise $\hat\varepsilon$, and `ScoreModel(..., parameterization="eps")`
# turns it into the score $-\hat\varepsilon/\sigma_t$. `Trainer` runs Adam with warm-up,
# gradient clipping and an EMA of the weights; 600 steps of batch 256 take a few seconds.

# %%
train_data = data.sample(20000, generator=g).float()
net = ResidualMLP(2, hidden=64, depth=2)
model = sd.ScoreModel(net, sde, parameterization="eps")
config = TrainConfig(batch_size=256, lr=3e-3, warmup=100, ema_decay=0.99, log_every=25)
with Trainer(model, train_data, config) as trainer:  # no out_dir: nothing is written
    losses = trainer.train(600, progress=False)
ema = trainer.ema  # the exponential moving average of the weights: what we evaluate

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(torch.arange(len(losses)) * config.log_every, losses, label="training loss (logged)")
ax.axhline(floor, color="k", ls="--", label="minimum: exact score")
ax.axhline(zero, color="gray", ls=":", label="zero score")
ax.set(xlabel="step", ylabel="DSM loss", title="denoising score matching", ylim=(0, 1.1))
ax.legend()
plt.show()

# %% [markdown]
# **Check: the loss reaches its floor.** On 20 000 fresh points (not the training set) the EMA
# model's DSM loss must be within 3% of the exact score's, and (up to the Monte-Carlo error,
# which the shared time and noise draws make small) not below it.

# %%
x_test = x_eval.float()
with torch.no_grad():
    g_eval = torch.Generator().manual_seed(1)
    model_loss = sd.dsm_loss(sde, ema, x_test, reduction="none", generator=g_eval)
    g_eval = torch.Generator().manual_seed(1)
    exact_loss = sd.dsm_loss(sde, exact_model, x_test, reduction="none", generator=g_eval)
gap = model_loss - exact_loss  # same t and z: a paired difference
gap_mean, gap_se = gap.mean().item(), (gap.std() / math.sqrt(len(gap))).item()
print(f"model {model_loss.mean():.4f}, exact {exact_loss.mean():.4f}")
print(f"gap {gap_mean:.4f} ± {gap_se:.4f}")
assert gap_mean > -4 * gap_se  # the exact score is the minimiser
assert gap_mean < 0.03 * exact_loss.mean().item()

# %% [markdown]
# ## The learned score against the exact score
#
# The gap above is, by Vincent's identity, the $\sigma_t^2$-weighted squared error of the score
# averaged over $t$. Per time, the relative error
# $\mathbb E\|s_	heta - \nabla\log p_t\|^2 / \mathbb E\|\nabla\log p_t\|^2$ on samples of
# $p_t$ shows where the network is good (large $t$: $p_t$ is nearly Gaussian) and where it is
# hard (small $t$: four sharp modes).

# %%
times = [0.05, 0.1, 0.25, 0.5, 0.9]
rel = {}
for t in times:
    a, s = sde.marginal(torch.tensor(t))
    xt = a * x_test + s * torch.randn(x_test.shape, generator=g)
    tt = torch.full((len(xt),), t)
    with torch.no_grad():
        err = (ema(xt, tt) - exact(xt, tt)).pow(2).sum(1).mean()
    rel[t] = (err / exact(xt, tt).pow(2).sum(1).mean()).item()
    print(f"t = {t:4.2f}: relative squared score error {rel[t]:.4f}")
assert all(r < 0.1 for t, r in rel.items() if t >= 0.1)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
t = 0.1
xs = torch.linspace(-3.5, 3.5, 15)
grid = torch.cartesian_prod(xs, xs)
tt = torch.full((len(grid),), t)
with torch.no_grad():
    learned = ema(grid, tt)
true = exact(grid, tt)
for ax, field, title in [(axes[0], true, "exact score"), (axes[1], learned, "learned score")]:
    ax.quiver(grid[:, 0], grid[:, 1], field[:, 0], field[:, 1], color="C0")
    ax.scatter(data.means[:, 0], data.means[:, 1], c="r", s=20)
    ax.set(title=f"{title}, t = {t}", aspect="equal")
plt.show()

# %% [markdown]
# ## Samples
#
# With the learned score every solver of `sd.sample` works unchanged. We sample with DPM-Solver
# (20 steps) and compare with exact data by MMD², against two references: the noise floor (MMD²
# between two independent exact sample sets, several pairs) and the $\mathcal N(0, I)$ prior.

# %%
n = 2000
with torch.no_grad():
    res = sd.sample(sde, ema, (n, 2), "dpm_solver", 20, order=3, generator=g)
exact_res = sd.sample(sde, exact, (n, 2), "dpm_solver", 20, order=3, generator=g)
held_out = data.sample(n, generator=g).float()
floor_mmd = [mmd2(data.sample(n, generator=g), data.sample(n, generator=g)) for _ in range(5)]
floor_std = torch.tensor(floor_mmd).std().item()
m_model = mmd2(res.samples, held_out)
m_exact = mmd2(exact_res.samples.float(), held_out)
m_prior = mmd2(torch.randn(n, 2, generator=g), held_out)
print(
    f"MMD^2: learned {m_model:.2e}, exact score {m_exact:.2e}, prior {m_prior:.2e}; "
    f"noise floor (std of 5 exact pairs) {floor_std:.1e}"
)
assert m_model < m_prior / 20
assert m_model < 10 * floor_std

fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
for ax, pts, title in [
    (axes[0], held_out, "data"),
    (axes[1], exact_res.samples, "exact score, 20 steps"),
    (axes[2], res.samples, "learned score, 20 steps"),
]:
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
    ax.set(title=title, aspect="equal", xlim=(-4, 4), ylim=(-4, 4))
plt.show()
