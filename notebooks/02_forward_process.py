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
# # 2. The forward process: from DDPM's chain to the VP, sub-VP and VE SDEs
#
# The forward process destroys data by adding Gaussian noise. DDPM (Ho et al. 2020) does it in
# $N = 1000$ discrete steps; Song et al. (2021) take the limit $N \to \infty$ and get an SDE. In
# both, the marginal $q(x_t \mid x_0)$ is Gaussian in closed form, which is what makes training
# (sample $x_t$ in one shot) and the exact oracle of this toolkit possible.

# %%
import math

import matplotlib.pyplot as plt
import torch

import scoresde as sd

torch.set_default_dtype(torch.float64)
g = torch.Generator().manual_seed(0)

# %% [markdown]
# ## DDPM's chain and $q(x_t \mid x_0)$ by induction
#
# One step of the chain is $x_t = \sqrt{1 - \beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \varepsilon_t$,
# $\varepsilon_t \sim \mathcal N(0, I)$ (Ho et al. 2020, Eq. 2). Suppose
# $q(x_{t-1} \mid x_0) = \mathcal N(\sqrt{\bar\alpha_{t-1}}\, x_0, (1 - \bar\alpha_{t-1}) I)$ with
# $\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)$. A linear map of a Gaussian plus independent
# Gaussian noise is Gaussian, with
#
# $$\text{mean } \sqrt{1-\beta_t}\sqrt{\bar\alpha_{t-1}}\,x_0 = \sqrt{\bar\alpha_t}\,x_0, \qquad
#   \text{variance } (1-\beta_t)(1-\bar\alpha_{t-1}) + \beta_t = 1 - \bar\alpha_t .$$
#
# With $\bar\alpha_0 = 1$ this proves (Ho et al., Eq. 4)
# $$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) I\big).$$
#
# The linear schedule is $\beta_t$ = `linspace(1e-4, 0.02, 1000)`, which is
# `sd.VPSDE().discrete_betas(1000)`.

# %%
sde = sd.VPSDE()
N = 1000
betas = sde.discrete_betas(N)
alpha_bar = torch.cumprod(1 - betas, 0)  # alpha_bar[t - 1] is \bar\alpha_t

# The induction, run as a recursion on (mean coefficient, variance) ...
m, v = torch.tensor(1.0), torch.tensor(0.0)
ms, vs = [], []
for b in betas:
    m, v = (1 - b).sqrt() * m, (1 - b) * v + b
    ms.append(m)
    vs.append(v)
ms, vs = torch.stack(ms), torch.stack(vs)
# ... equals the closed form to round-off.
assert torch.allclose(ms, alpha_bar.sqrt(), rtol=1e-12, atol=0)
assert torch.allclose(vs, 1 - alpha_bar, rtol=1e-10, atol=0)

# And the chain itself, simulated from x_0 = 1.5, has these moments at every step.
M, x0 = 20000, 1.5
x = torch.full((M,), x0)
checkpoints = {}
for t in range(1, N + 1):
    x = (1 - betas[t - 1]).sqrt() * x + betas[t - 1].sqrt() * torch.randn(M, generator=g)
    if t % 250 == 0:
        checkpoints[t] = x.clone()
for t, xt in checkpoints.items():
    mean, var = alpha_bar[t - 1].sqrt() * x0, 1 - alpha_bar[t - 1]
    print(f"t = {t:4d}: mean {xt.mean():+.4f} (exact {mean:+.4f}), var {xt.var():.4f} ({var:.4f})")
    assert abs(xt.mean() - mean) < 4 * math.sqrt(var / M)
    assert abs(xt.var() / var - 1) < 4 * math.sqrt(2 / M)

# %% [markdown]
# ## $\bar\alpha$ and the signal-to-noise ratio of the linear schedule
#
# The signal-to-noise ratio of $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$
# is $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$. Since $\log(1 - \beta) \approx -\beta
# - \beta^2/2$,
#
# $$\log \bar\alpha_N \approx -\sum_t \beta_t - \tfrac12 \sum_t \beta_t^2
#   = -10.05 - 0.067, \qquad \bar\alpha_{1000} \approx 4.04 \times 10^{-5}.$$
#
# So the last step keeps about $0.6\%$ of the signal's amplitude ($\sqrt{\bar\alpha} \approx
# 0.0064$): $x_{1000}$ is practically $\mathcal N(0, I)$, and the SNR has fallen from
# $\approx 10^4$ at $t = 1$ to $4 \times 10^{-5}$.

# %%
snr = alpha_bar / (1 - alpha_bar)
print(f"alpha_bar_1000 = {alpha_bar[-1]:.4e}, SNR(1) = {snr[0]:.1f}, SNR(1000) = {snr[-1]:.3e}")
assert abs(alpha_bar[-1] - 4.04e-5) < 0.005e-5
second_order = -betas.sum() - 0.5 * (betas**2).sum()
assert abs(alpha_bar[-1].log() - second_order) < (betas**3).sum()  # the next term, sum beta^3/3
assert (snr[1:] < snr[:-1]).all()  # SNR falls at every step

ts = torch.arange(1, N + 1)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].plot(ts, alpha_bar, label=r"$\bar\alpha_t$")
axes[0].plot(ts, 1 - alpha_bar, label=r"$1 - \bar\alpha_t$")
axes[0].set(xlabel="step t", title="signal and noise variance")
axes[0].legend()
axes[1].semilogy(ts, snr)
axes[1].set(xlabel="step t", ylabel="SNR", title=r"SNR $= \bar\alpha_t / (1 - \bar\alpha_t)$")
plt.show()

# %% [markdown]
# ## $x_t$ at $t = 0, 250, \dots, 1000$ on 2-D data
#
# Eight Gaussians on a ring (an exact `sd.GaussianMixture`) pushed through the chain in one shot
# with $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\varepsilon$. The mixture stays a
# mixture: component means shrink by $\sqrt{\bar\alpha_t}$, variances become
# $\bar\alpha_t s^2 + 1 - \bar\alpha_t$. We check each panel's covariance against
# $\bar\alpha_t \operatorname{Cov}(x_0) + (1 - \bar\alpha_t) I$, where the ring's
# $\operatorname{Cov}(x_0) = (r^2/2 + s^2) I$, within four standard errors.

# %%
angles = 2 * math.pi * torch.arange(8) / 8
radius, s = 2.0, 0.2
ring = sd.GaussianMixture(radius * torch.stack([angles.cos(), angles.sin()], 1), s)
x0 = ring.sample(4000, generator=g)
steps = [0, 250, 500, 750, 1000]
fig, axes = plt.subplots(1, 5, figsize=(15, 3.2), sharex=True, sharey=True)
for ax, t in zip(axes, steps, strict=True):
    ab = torch.tensor(1.0) if t == 0 else alpha_bar[t - 1]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=g)
    ax.scatter(xt[:, 0], xt[:, 1], s=1, alpha=0.4)
    ax.set(title=f"t = {t}", aspect="equal", xlim=(-3.5, 3.5), ylim=(-3.5, 3.5))
    cov = torch.cov(xt.T)
    expected = ab * (radius**2 / 2 + s**2) + 1 - ab
    # within 4 standard errors, sqrt(2 / n) of the variance (a bound for these light tails)
    assert torch.allclose(cov, expected * torch.eye(2), atol=4 * math.sqrt(2 / len(xt)) * expected)
plt.show()

# %% [markdown]
# ## The continuous-time limit: VP, sub-VP and VE
#
# Let $N \to \infty$ with $\beta_i = \beta(t_i)/N$: the chain becomes the **VP SDE**
# $dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dw$ (Song et al. 2021, Eq. 11) with
# $\beta(t) = 0.1 + 19.9\,t$. Every SDE here is linear, $dx = f(t)x\,dt + g(t)\,dw$, so
# $x_t = \alpha_t x_0 + \sigma_t z$ with (Song et al., Eq. 29)
#
# | SDE | $\alpha_t$ | $\sigma_t$ |
# |---|---|---|
# | VP | $e^{-B(t)/2}$ | $\sqrt{1 - e^{-B(t)}}$ |
# | sub-VP | $e^{-B(t)/2}$ | $1 - e^{-B(t)}$ |
# | VE | $1$ | $\sigma_{\min} (\sigma_{\max}/\sigma_{\min})^t$ |
#
# with $B(t) = \int_0^t \beta$. `sde.marginal(t)` returns $(\alpha_t, \sigma_t)$. The chain and
# the SDE agree exactly at the times `sde.discrete_times(N)`, and nearly at $t = i/N$ (the chain
# decays faster by $\tfrac12\sum\beta_i^2$ in $\log\bar\alpha$).

# %%
t_match = sde.discrete_times(N)[1:]
a_match, _ = sde.marginal(t_match)
assert torch.allclose(a_match**2, alpha_bar, rtol=1e-10)
a_grid, _ = sde.marginal(ts / N)
gap = (alpha_bar.log() - 2 * a_grid.log()).abs().max()
half_sq = 0.5 * (betas**2).sum()
print(f"max |log alpha_bar_i - log alpha(i/N)^2| = {gap:.4f}; sum beta^2 / 2 = {half_sq:.4f}")
assert gap < half_sq + 0.01

sdes = {"VP": sd.VPSDE(), "sub-VP": sd.SubVPSDE(), "VE": sd.VESDE()}
tt = torch.linspace(1e-3, 1, 400)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, s_ in sdes.items():
    a, sig = s_.marginal(tt)
    axes[0].plot(tt, a, label=name)
    axes[1].semilogy(tt, sig, label=name)
axes[0].set(title=r"$\alpha_t$", xlabel="t")
axes[1].set(title=r"$\sigma_t$", xlabel="t")
axes[0].legend()
plt.show()

# %% [markdown]
# **Checks.** The table's identities hold; the drift and diffusion are consistent with the
# marginal: $f = d\log\alpha_t/dt$ and $g^2 = d\sigma_t^2/dt - 2 f \sigma_t^2$ (checked by central
# differences); and a 1-D mixture pushed forward by each SDE has density
# `sd.exact_log_prob(sde, data)` which integrates to one and matches a histogram of samples.

# %%
vp, subvp, ve = sdes["VP"], sdes["sub-VP"], sdes["VE"]
a, sig = vp.marginal(tt)
assert torch.allclose(a**2 + sig**2, torch.ones_like(tt))
a2, sig2 = subvp.marginal(tt)
assert torch.allclose(a2, a) and torch.allclose(sig2, 1 - a**2)
a3, sig3 = ve.marginal(tt)
assert torch.allclose(a3, torch.ones_like(tt)) and torch.allclose(sig3, 0.01 * 5000**tt)

h = 1e-5
tc = torch.linspace(0.05, 0.95, 19)
for name, s_ in sdes.items():
    (ap, sp), (am, sm) = s_.marginal(tc + h), s_.marginal(tc - h)
    _, sc = s_.marginal(tc)
    f_fd = (ap.log() - am.log()) / (2 * h)
    g2_fd = (sp**2 - sm**2) / (2 * h) - 2 * s_.f(tc) * sc**2
    assert torch.allclose(s_.f(tc), f_fd, rtol=1e-6, atol=1e-8), name
    assert torch.allclose(s_.g2(tc), g2_fd, rtol=1e-5), name

data = sd.GaussianMixture(means=[[-1.0], [1.5]], stds=[0.2, 0.4], weights=[0.3, 0.7])
x0 = data.sample(20000, generator=g)
grid = torch.linspace(-40, 40, 16001).unsqueeze(1)
fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
for ax, (name, s_) in zip(axes, sdes.items(), strict=True):
    a, sig = s_.marginal(torch.tensor(0.5))
    xt = a * x0 + sig * torch.randn(x0.shape, generator=g)
    p = sd.exact_log_prob(s_, data)(grid, torch.tensor(0.5)).exp()
    mass = torch.trapezoid(p, grid[:, 0])
    mean = torch.trapezoid(p * grid[:, 0], grid[:, 0])
    print(f"{name:6s} t = 0.5: integral {mass:.6f}, mean {mean:+.4f}, samples {xt.mean():+.4f}")
    assert abs(mass - 1) < 1e-6
    assert abs(xt.mean() - mean) < 4 * xt.std() / math.sqrt(len(xt))
    ax.hist(xt[:, 0].numpy(), bins=80, density=True, alpha=0.5, label="samples")
    ax.plot(grid[:, 0], p, "k", lw=1, label="exp(exact_log_prob)")
    ax.set(title=f"{name}, t = 0.5", xlim=(-4, 5))
axes[0].legend()
plt.show()

# %% [markdown]
# ## SNR curves of the schedules
#
# The half log-SNR $\lambda_t = \log(\alpha_t/\sigma_t)$ (`sde.log_snr(t)`) is the one number
# that matters to a sampler: two SDEs with the same $\lambda$ range are the same process up to a
# rescaling of $x$ and a change of time (Kingma et al. 2021). It must fall monotonically; the
# cosine schedule (Nichol & Dhariwal 2021) spends more time at middle SNRs than the linear one.

# %%
schedules = {**sdes, "VP cosine": sd.VPSDE(schedule="cosine")}
fig, ax = plt.subplots(figsize=(6, 4))
for name, s_ in schedules.items():
    t_end = min(s_.T, 1.0)
    tq = torch.linspace(1e-3, t_end, 400)
    lam = s_.log_snr(tq)
    assert (lam[1:] < lam[:-1]).all(), name
    ax.plot(tq, lam, label=name)
discrete = 0.5 * snr.log()
ax.plot(ts / N, discrete, "k:", label="DDPM chain (t = i/N)")
ax.set(xlabel="t", ylabel=r"$\lambda_t = \log(\alpha_t / \sigma_t)$", title="half log-SNR")
ax.legend()
plt.show()
# The DDPM chain's log-SNR is the VP SDE's at the matching times.
assert torch.allclose(discrete, vp.log_snr(t_match), rtol=1e-8, atol=1e-8)
