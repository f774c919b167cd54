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
# # 3. The reverse SDE on a 1-D example you can solve by hand
#
# Pure diffusion $dx = \sqrt{2D}\,dw$ started at $x_0 = 0$ has the marginal
#
# $$p_t = \mathcal N(0,\, 2Dt), \qquad \nabla_x \log p_t(x) = -\frac{x}{2Dt}.$$
#
# Everything about the reverse process can be computed in closed form here: the drift, the
# variance of the reverse-time samples, the probability-flow map. We run Anderson's reverse SDE
# and the probability-flow ODE and check each against $p_t$, then do the same with the toolkit's
# VE SDE, which is this example with another clock.

# %%
import math

import matplotlib.pyplot as plt
import torch

import scoresde as sd

torch.set_default_dtype(torch.float64)
g = torch.Generator().manual_seed(0)
D, T, t_end = 0.5, 1.0, 0.05  # 2Dt = t: p_t = N(0, t)


def score(x, t):
    return -x / (2 * D * t)


# %% [markdown]
# ## The Fokker–Planck equation
#
# The density of $dx = f\,dt + g\,dw$ obeys $\partial_t p = -\partial_x(f p) + \tfrac12 g^2
# \partial_x^2 p$; here $f = 0$, $g^2 = 2D$, so the heat equation $\partial_t p = D\,\partial_x^2
# p$. We evaluate the residual $\partial_t p - D\,\partial_x^2 p$ of the claimed $p_t$ by central
# differences: it is zero up to the $O(h^2)$ error of the differences, while a wrong guess such as
# $\mathcal N(0, Dt)$ leaves a residual of order one.


# %%
def gauss(x, var):
    var = torch.as_tensor(var)
    return torch.exp(-0.5 * x**2 / var) / torch.sqrt(2 * math.pi * var)


def fp_residual(density, x, t, h=1e-4):
    dp_dt = (density(x, t + h) - density(x, t - h)) / (2 * h)
    d2p_dx2 = (density(x + h, t) - 2 * density(x, t) + density(x - h, t)) / h**2
    return dp_dt - D * d2p_dx2


x = torch.linspace(-3, 3, 601)
exact = fp_residual(lambda x, t: gauss(x, 2 * D * t), x, 0.5)
wrong = fp_residual(lambda x, t: gauss(x, D * t), x, 0.5)
print(f"max |residual|: exact p_t {exact.abs().max():.2e}, N(0, Dt) {wrong.abs().max():.2e}")
assert exact.abs().max() < 1e-5
assert wrong.abs().max() > 0.1

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(x, exact, label=r"$p_t = \mathcal{N}(0, 2Dt)$")
ax.plot(x, wrong, "--", label=r"wrong: $\mathcal{N}(0, Dt)$")
ax.set(title="Fokker–Planck residual at t = 0.5", xlabel="x")
ax.legend()
plt.show()

# %% [markdown]
# ## The outward-pointing drift
#
# Anderson (1982) and Song et al. (2021, Eq. 6): the process run backwards in time solves
#
# $$dx = \big[f(x, t) - g(t)^2 \nabla_x \log p_t(x)\big]\,dt + g(t)\,d\bar w, \qquad dt < 0.$$
#
# Here the drift is $f - g^2\nabla\log p_t = 0 - 2D \cdot (-x/(2Dt)) = +x/t$: it points **away**
# from the origin, and grows as $t \to 0$. Yet the reverse process must *shrink* $\mathcal N(0, 1)$
# to $\mathcal N(0, 0.05)$. The paradox dissolves once we remember that time runs backwards:
# one Euler–Maruyama step from $t$ to $t - h$ is
#
# $$x_{t-h} = x_t - h\,\frac{x_t}{t} + \sqrt{2Dh}\,z
#   = \Big(1 - \frac{h}{t}\Big)x_t + \sqrt{2Dh}\,z,$$
#
# a contraction. Its variance obeys $v_{t-h} = (1 - h/t)^2 v_t + 2Dh$, and with the exact
# $v_t = 2Dt$ on the right this is $2D(t - h) + 2Dh^2/t$: the scheme is exact up to $O(h^2)$ per
# step. The drift must out-run the noise the reverse process keeps injecting.

# %%
M, N = 20000, 500
ts = torch.linspace(T, t_end, N + 1)
x = math.sqrt(2 * D * T) * torch.randn(M, generator=g)  # x_T ~ p_T
v = torch.tensor(2 * D * T)  # the scheme's variance, propagated exactly
paths = [x[:6].clone()]
for k in range(N):
    t, h = ts[k], ts[k] - ts[k + 1]
    drift = 0 - 2 * D * score(x, t)  # f - g^2 score = +x/t: outward
    x = x - drift * h + math.sqrt(2 * D * h) * torch.randn(M, generator=g)
    v = (1 - h / t) ** 2 * v + 2 * D * h
    paths.append(x[:6].clone())
paths = torch.stack(paths)

print(f"reverse SDE at t = {t_end}: Var {x.var():.5f}; scheme {v:.5f}; exact 2Dt = {2 * D * t_end}")
assert abs(x.var() / v - 1) < 4 * math.sqrt(2 / M)  # Monte Carlo against the scheme's variance
assert abs(v / (2 * D * t_end) - 1) < 0.02  # the scheme's O(h) bias against p_t

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
xx = torch.linspace(-2.5, 2.5, 11)
for tq in [1.0, 0.5, 0.1]:
    axes[0].plot(xx, xx / tq, label=f"t = {tq}")
axes[0].axhline(0, color="k", lw=0.5)
axes[0].set(title=r"reverse drift $f - g^2\nabla\log p_t = x/t$", xlabel="x")
axes[0].legend()
axes[1].plot(ts, paths, lw=0.8)
axes[1].fill_between(
    ts, -2 * ts.sqrt(), 2 * ts.sqrt(), color="gray", alpha=0.2, label=r"$\pm 2\sqrt{2Dt}$"
)
axes[1].invert_xaxis()
axes[1].set(title="reverse-time paths (time runs right to left)", xlabel="t")
axes[1].legend()
plt.show()

# %% [markdown]
# ## The probability-flow ODE
#
# The ODE $dx/dt = f - \tfrac12 g^2 \nabla\log p_t = x/(2t)$ (Song et al., Eq. 13) has the same
# marginals as the SDE, with no noise. Its solution is the flow map
# $x_t = x_T \sqrt{t/T}$: it rescales the prior by exactly the ratio of standard deviations. We
# integrate it with Heun's method and compare with the flow map (the error must fall 4x when
# the steps halve: Heun is second order), and check that its velocity $v = x/(2t)$ satisfies
# the continuity equation $\partial_t p + \partial_x(v p) = 0$.

# %%
xT = math.sqrt(2 * D * T) * torch.randn(M, generator=g)
flow = xT * math.sqrt(t_end / T)


def heun(x, ts):
    for k in range(len(ts) - 1):
        t, s = ts[k], ts[k + 1]
        d1 = x / (2 * t)  # f - g^2 score / 2
        x_pred = x + (s - t) * d1
        x = x + (s - t) * 0.5 * (d1 + x_pred / (2 * s))
    return x


errors = {
    n: (heun(xT, torch.linspace(T, t_end, n + 1)) - flow).abs().max() for n in (125, 250, 500)
}
x = heun(xT, ts)
for n, e in errors.items():
    print(f"PF-ODE, Heun with {n:3d} steps: max |x - flow map| = {e:.2e}")
assert 3.5 < errors[125] / errors[250] < 4.5 and 3.5 < errors[250] / errors[500] < 4.5  # order 2
assert errors[500] < 1e-4
assert abs(x.var() / (2 * D * t_end) - 1) < 4 * math.sqrt(2 / M)

h = 1e-4
tc, xc = 0.5, torch.linspace(-3, 3, 601)


def pv(x, t):
    return x / (2 * t) * gauss(x, 2 * D * t)


continuity = (gauss(xc, 2 * D * (tc + h)) - gauss(xc, 2 * D * (tc - h))) / (2 * h) + (
    pv(xc + h, tc) - pv(xc - h, tc)
) / (2 * h)
print(f"continuity-equation residual: {continuity.abs().max():.2e}")
assert continuity.abs().max() < 1e-6

fig, ax = plt.subplots(figsize=(6, 3.5))
grid = torch.linspace(-1, 1, 200)
ax.hist(x.numpy(), bins=80, density=True, alpha=0.5, label="PF-ODE samples")
ax.plot(
    grid, gauss(grid, torch.tensor(2 * D * t_end)), "k", label=r"$p_{0.05} = \mathcal{N}(0, 0.05)$"
)
ax.set(title="probability-flow ODE at t = 0.05", xlabel="x")
ax.legend()
plt.show()

# %% [markdown]
# ## The same with the toolkit: the VE SDE
#
# The VE SDE $dx = \sqrt{d\sigma_t^2/dt}\,dw$ is pure diffusion too; only the clock differs
# ($\sigma_t^2$ in place of $2Dt$). With Gaussian data $\mathcal N(0, s^2)$ the marginal is
# $\mathcal N(0, s^2 + \sigma_t^2)$, `sd.exact_score` gives its score and `sd.gaussian_flow_map`
# the exact PF-ODE map. `sd.sample` runs the reverse SDE (`euler_maruyama`) and the PF-ODE
# (`ode_rk45`) from the same prior draw.

# %%
ve = sd.VESDE()
s0 = 0.5
data = sd.GaussianMixture(means=[[0.0]], stds=s0)
score_fn = sd.exact_score(ve, data)
M = 5000
x_T = ve.prior_sample((M, 1), generator=g)
eps = 1e-3
_, sigma_eps = ve.marginal(torch.tensor(eps))
var_eps = s0**2 + sigma_eps**2

sde_res = sd.sample(ve, score_fn, (M, 1), "euler_maruyama", 500, eps=eps, x_T=x_T, generator=g)
ode_res = sd.sample(ve, score_fn, (M, 1), "ode_rk45", eps=eps, x_T=x_T, rtol=1e-8, atol=1e-8)
flow = sd.gaussian_flow_map(ve, [[0.0]], [[s0]])(x_T, ve.T, eps)
print(f"exact variance at eps: {var_eps:.5f}")
print(f"reverse SDE (EM, 500 steps): Var {sde_res.samples.var():.5f}")
print(
    f"PF-ODE (RK45, {ode_res.nfe} NFE): Var {ode_res.samples.var():.5f}, "
    f"max |x - flow map| {(ode_res.samples - flow).abs().max():.1e}"
)
assert abs(sde_res.samples.var() / var_eps - 1) < 4 * math.sqrt(2 / M) + 0.01  # + EM bias
assert torch.allclose(ode_res.samples, flow, atol=1e-5)
assert abs(ode_res.samples.var() / var_eps - 1) < 4 * math.sqrt(2 / M)

fig, ax = plt.subplots(figsize=(6, 3.5))
grid = torch.linspace(-2, 2, 200)
ax.hist(sde_res.samples[:, 0].numpy(), bins=80, density=True, alpha=0.4, label="reverse SDE")
ax.hist(ode_res.samples[:, 0].numpy(), bins=80, density=True, alpha=0.4, label="PF-ODE")
ax.plot(grid, gauss(grid, var_eps), "k", label="exact")
ax.set(title="VE SDE, Gaussian data: both reach the exact marginal", xlabel="x")
ax.legend()
plt.show()
