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
# # 1. Brownian motion and Euler–Maruyama
#
# Every diffusion model is built on one object: Brownian motion $w_t$. This notebook builds it
# from coin flips, shows why its increments scale like $\sqrt{dt}$ (not $dt$), and measures the
# two kinds of error of the simplest SDE solver, Euler–Maruyama: the **strong** error (paths)
# shrinks like $\sqrt{h}$, the **weak** error (expectations) like $h$.
#
# Every claim is checked by an `assert` against a closed form, with a tolerance set by the
# Monte-Carlo standard error of a fixed-seed experiment.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import scoresde as sd

torch.set_default_dtype(torch.float64)
g = torch.Generator().manual_seed(0)

# %% [markdown]
# ## From a random walk to Brownian motion
#
# Flip a fair coin $n$ times per unit of time, step $\pm 1$, and shrink space by $\sqrt{n}$:
#
# $$W^{(n)}_t = \frac{1}{\sqrt{n}} \sum_{k=1}^{\lfloor n t \rfloor} \xi_k, \qquad
#   \xi_k = \pm 1 \text{ with probability } \tfrac12 .$$
#
# Each step has variance 1, so $\operatorname{Var} W^{(n)}_t = \lfloor nt \rfloor / n \to t$, and by
# the central limit theorem $W^{(n)}_t \to \mathcal N(0, t)$. Donsker's theorem says more: the
# whole path converges to Brownian motion. Shrinking space by $n$ instead of $\sqrt n$ would give
# the zero path; by less, a path that blows up. $\sqrt{n}$ is the only scaling with a limit.

# %%
n_paths, n = 4000, 400
xi = 2.0 * torch.randint(0, 2, (n_paths, n), generator=g) - 1.0
walks = torch.cat([torch.zeros(n_paths, 1), xi.cumsum(1) / math.sqrt(n)], 1)  # (paths, n + 1)
times = torch.linspace(0, 1, n + 1)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for k in range(5):
    axes[0].plot(times, walks[k], lw=0.8)
axes[0].set(title="scaled random walks, n = 400", xlabel="t", ylabel="$W_t$")
var_t = walks.var(0)
axes[1].plot(times, var_t, label="empirical Var $W_t$")
axes[1].plot(times, times, "k--", label="t")
axes[1].set(title="variance grows linearly", xlabel="t")
axes[1].legend()
plt.show()

# %% [markdown]
# **Check.** $\operatorname{Var} W_1 = 1$ and $W_1$ is nearly Gaussian: its fourth moment is
# $3\,(\operatorname{Var})^2 - 2/n$ for the walk (3 for the Gaussian). The sample variance of
# $N$ draws has standard error $\approx \sqrt{2/N}$; we allow four of them.

# %%
w1 = walks[:, -1]
se_var = math.sqrt(2 / n_paths)
print(f"Var W_1 = {w1.var():.4f} (exact 1, s.e. {se_var:.4f})")
assert abs(w1.var() - 1.0) < 4 * se_var
kurt = (w1**4).mean() / w1.var() ** 2
print(f"E W_1^4 / Var^2 = {kurt:.3f} (Gaussian 3)")
assert abs(kurt - 3.0) < 0.3  # s.e. of the sample kurtosis is about sqrt(24 / N) = 0.08

# %% [markdown]
# ## The $\sqrt{dt}$ scaling
#
# Brownian increments over a step $dt$ are $\Delta w \sim \mathcal N(0, dt)$, so
# $|\Delta w| \approx \sqrt{dt} \gg dt$. Two consequences over $[0, T]$ cut into $N = T/dt$
# steps:
#
# * the **quadratic variation** $\sum (\Delta w)^2$ has mean $T$ and variance $2T\,dt$: it
#   converges to $T$ (this is Itô's rule $dw^2 = dt$);
# * the **total variation** $\sum |\Delta w|$ has mean $\sqrt{2/\pi}\,T/\sqrt{dt} \to \infty$:
#   the path is nowhere differentiable, and ordinary calculus does not apply.

# %%
T, M = 1.0, 2000
Ns = [10, 100, 1000, 10000]
qv, tv = [], []
for N in Ns:
    dw = torch.randn(M, N, generator=g) * math.sqrt(T / N)
    qv.append((dw**2).sum(1))
    tv.append(dw.abs().sum(1).mean().item())

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(Ns, [q.mean().item() for q in qv], "o-", label=r"$\sum (\Delta w)^2$ (mean)")
ax.loglog(Ns, tv, "s-", label=r"$\sum |\Delta w|$ (mean)")
ax.loglog(Ns, [math.sqrt(2 / math.pi * N) for N in Ns], "k:", label=r"$\sqrt{2N/\pi}$")
ax.set(xlabel="steps N", title="quadratic vs total variation on [0, 1]")
ax.legend()
plt.show()

# %% [markdown]
# **Check.** The quadratic variation's mean is $T$ within its standard error
# $\sqrt{2T\,dt/M}$ and its spread shrinks like $\sqrt{2T\,dt}$; the total variation matches
# $\sqrt{2N/\pi}$ within its standard error $\sqrt{(1 - 2/\pi)\,T/M}$.

# %%
for N, q, v in zip(Ns, qv, tv, strict=True):
    dt = T / N
    assert abs(q.mean() - T) < 4 * math.sqrt(2 * T * dt / M), N
    assert abs(q.std() / math.sqrt(2 * T * dt) - 1) < 0.1, N  # s.e. of a std: 1 / sqrt(2M)
    assert abs(v - math.sqrt(2 * N / math.pi) * T) < 4 * math.sqrt((1 - 2 / math.pi) * T / M), N
print("quadratic variation -> T, total variation ~ sqrt(2N/pi): checked")

# %% [markdown]
# ## Euler–Maruyama: strong and weak error
#
# Euler–Maruyama integrates $dx = f(x)\,dt + g(x)\,dw$ by
#
# $$x_{k+1} = x_k + f(x_k)\,h + g(x_k)\,\Delta w_k, \qquad \Delta w_k \sim \mathcal N(0, h).$$
#
# We need an SDE with a known solution on the **same Brownian path**: geometric Brownian motion
# $dx = \mu x\,dt + \sigma x\,dw$ has
#
# $$x_T = x_0 \exp\!\big((\mu - \tfrac12 \sigma^2) T + \sigma w_T\big).$$
#
# The $-\tfrac12\sigma^2$ is Itô's correction, a direct consequence of $dw^2 = dt$. We measure
#
# * the **strong error** $\mathbb E\,|x^{\mathrm{EM}}_T - x_T|$ (same path): order $\tfrac12$;
# * the **weak error** $|\mathbb E\,x^{\mathrm{EM}}_T - \mathbb E\,x_T|$ with
#   $\mathbb E\,x_T = x_0 e^{\mu T}$: order 1.
#
# For the weak error we estimate $\mathbb E[x^{\mathrm{EM}}_T - x_T]$ on the same paths: the
# difference is small, so its Monte-Carlo noise is far below the bias we want to see. EM's mean is
# also known in closed form here, $x_0 (1 + \mu h)^{N}$, which the estimate must match.

# %%
mu, sigma, x0, T = 1.5, 1.0, 1.0, 1.0
M, N_fine = 20000, 512
dw_fine = torch.randn(M, N_fine, generator=g) * math.sqrt(T / N_fine)
x_exact = x0 * torch.exp((mu - 0.5 * sigma**2) * T + sigma * dw_fine.sum(1))

hs, strong, weak, weak_se, weak_closed = [], [], [], [], []
for N in [16, 32, 64, 128, 256, 512]:
    h = T / N
    dw = dw_fine.reshape(M, N, N_fine // N).sum(2)  # the same path, coarser increments
    x = torch.full((M,), x0)
    for k in range(N):
        x = x + mu * x * h + sigma * x * dw[:, k]
    diff = x - x_exact
    hs.append(h)
    strong.append(diff.abs().mean().item())
    weak.append(diff.mean().abs().item())
    weak_se.append((diff.std() / math.sqrt(M)).item())
    weak_closed.append(abs(x0 * (1 + mu * h) ** N - x0 * math.exp(mu * T)))

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(hs, strong, "o-", label=r"strong $\mathbb{E}|x^{EM}_T - x_T|$")
ax.loglog(hs, weak, "s-", label=r"weak $|\mathbb{E}x^{EM}_T - \mathbb{E}x_T|$")
ax.loglog(hs, weak_closed, "k:", label="weak, closed form")
ax.set(xlabel="step h", title="Euler–Maruyama on geometric Brownian motion")
ax.legend()
plt.show()

# %% [markdown]
# **Check.** The fitted log–log slopes are the orders: $\approx 0.5$ (strong) and $\approx 1$
# (weak); the measured weak error matches EM's closed-form bias within its standard error.

# %%
strong_order = np.polyfit(np.log(hs), np.log(strong), 1)[0]
weak_order = np.polyfit(np.log(hs), np.log(weak), 1)[0]
print(f"strong order {strong_order:.3f}, weak order {weak_order:.3f}")
assert abs(strong_order - 0.5) < 0.1
assert abs(weak_order - 1.0) < 0.1
for w, se, c in zip(weak, weak_se, weak_closed, strict=True):
    assert abs(w - c) < 4 * se, (w, c, se)

# %% [markdown]
# ## The forward SDE of a diffusion model is such an SDE
#
# The VP SDE $dx = -\tfrac12 \beta(t)\,x\,dt + \sqrt{\beta(t)}\,dw$ (Song et al. 2021, Eq. 11)
# is linear, so its marginal is Gaussian: $x_t = \alpha_t x_0 + \sigma_t z$ with
# `sde.marginal(t)` $= (\alpha_t, \sigma_t)$. Euler–Maruyama with `sde.drift` and
# `sde.diffusion` must reproduce it up to an $O(h)$ weak error. For a linear SDE, EM's own mean
# and variance follow a recursion, $m_{k+1} = (1 + f h)\,m_k$ and
# $v_{k+1} = (1 + f h)^2 v_k + g^2 h$: the samples must match it within their Monte-Carlo error,
# and it must match the marginal up to $O(h)$.

# %%
sde = sd.VPSDE()
M, N = 20000, 500
x = torch.full((M, 1), 2.0)  # x_0 = 2
m, v = torch.tensor(2.0), torch.tensor(0.0)  # EM's own mean and variance, propagated exactly
ts = torch.linspace(0, 1, N + 1)
for k in range(N):
    h = ts[k + 1] - ts[k]
    dw = torch.randn(M, 1, generator=g) * h.sqrt()
    x = x + sde.drift(x, ts[k]) * h + sde.diffusion(ts[k]) * dw
    m, v = (1 + sde.f(ts[k]) * h) * m, (1 + sde.f(ts[k]) * h) ** 2 * v + sde.g2(ts[k]) * h
alpha, std = sde.marginal(torch.tensor(1.0))
print(f"EM samples: mean {x.mean():.4f}, std {x.std():.4f}")
print(
    f"EM's exact moments: {m:.4f}, {v.sqrt():.4f};  the SDE's marginal: {2 * alpha:.4f}, {std:.4f}"
)
assert abs(x.mean() - m) < 4 * v.sqrt() / math.sqrt(M)  # Monte Carlo error only
assert abs(x.var() / v - 1) < 4 * math.sqrt(2 / M)
assert abs(m - 2 * alpha) < 0.01 and abs(v.sqrt() / std - 1) < 0.01  # EM's O(h) weak error
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.hist(x[:, 0].numpy(), bins=60, density=True, alpha=0.6, label="EM, t = 1")
grid = torch.linspace(-4, 4, 200)
ax.plot(grid, torch.exp(-0.5 * ((grid - 2 * alpha) / std) ** 2) / (std * math.sqrt(2 * math.pi)))
ax.set(title=r"VP SDE from $x_0 = 2$: EM vs exact marginal", xlabel="$x_1$")
ax.legend()
plt.show()
