"""Exact answers: Gaussian mixtures pushed through linear SDEs.

If x_0 ~ sum_k w_k N(m_k, diag(s_k^2)) and x_t = alpha_t x_0 + sigma_t z, then
x_t ~ sum_k w_k N(alpha_t m_k, diag(alpha_t^2 s_k^2 + sigma_t^2)) — a mixture again, so its density,
score and the probability-flow map of a single Gaussian are available in closed form. These are the
ground truth every solver and estimator in the package is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .sde import SDE, TimeLike
from .validation import (
    batch_time,
    check_generator,
    check_instance,
    check_int,
    check_label_values,
)

__all__ = [
    "GaussianMixture",
    "exact_score",
    "exact_log_prob",
    "exact_velocity",
    "gaussian_flow_map",
    "ClassConditionalMixture",
    "MixtureConditional",
    "exact_class_score",
    "exact_classifier",
]


class GaussianMixture:
    """A mixture of K axis-aligned Gaussians in d dimensions.

    Parameters
    ----------
    means
        ``(K, d)`` tensor-like.
    stds
        Scalar, ``(K,)`` or ``(K, d)``, all > 0.
    weights
        ``(K,)`` non-negative with a positive sum (normalised here); default uniform.
    """

    def __init__(self, means, stds, weights=None) -> None:
        means = torch.as_tensor(means)
        if means.dtype == torch.bool or means.is_complex():
            raise TypeError(f"means must be real numbers, got {means.dtype}")
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        if means.dim() != 2 or means.numel() == 0:
            raise ValueError(
                f"means must have shape (K, d) with K, d >= 1, got {tuple(means.shape)}"
            )
        if not bool(torch.isfinite(means).all()):
            raise ValueError("means must be finite (no NaN or inf)")
        k, d = means.shape
        stds = torch.as_tensor(stds, dtype=means.dtype, device=means.device)
        if stds.dim() == 0 or stds.shape == (k,):
            stds = stds.reshape(-1, 1).expand(k, d)
        elif stds.shape != (k, d):
            raise ValueError(
                f"stds must be a scalar, (K,) or (K, d) = {(k, d)} tensor, got {tuple(stds.shape)}"
            )
        if not torch.all(torch.isfinite(stds) & (stds > 0)):
            raise ValueError("stds must be finite and positive")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape (K,) = ({k},), got {tuple(weights.shape)}")
        total = weights.sum()
        if not (torch.all(weights >= 0) and torch.isfinite(total) and total > 0):
            raise ValueError("weights must be non-negative with a finite positive sum")
        self.means = means
        self.stds = stds.contiguous()
        self.weights = weights / total
        # Converted copies per (device, dtype): a score function called every solver step must not
        # re-validate (validation syncs with the device) or re-copy its parameters.
        self._cache: dict = {}

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, device=None, dtype=None) -> GaussianMixture:
        return GaussianMixture(
            self.means.to(device=device, dtype=dtype),
            self.stds.to(device=device, dtype=dtype),
            self.weights.to(device=device, dtype=dtype),
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, d) exact samples: a component by its weight, then its Gaussian."""
        n = check_int("n", n, 1)
        check_generator("generator", generator)
        dev = generator.device if generator is not None else self.means.device
        w = self.weights.to(dev)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=dev, dtype=self.means.dtype)
        k = k.to(self.means.device)
        return self.means[k] + self.stds[k] * z.to(self.means.device)

    def _params(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = tuple(
                p.to(device=device, dtype=dtype)
                for p in (self.means, self.stds, torch.log(self.weights))
            )
        return self._cache[key]

    def _at(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, K) log w_k + log N(x; mean_k, var_k), and the (B, K, d) means and variances."""
        means, stds, log_w = self._params(x.device, x.dtype)
        a = alpha.to(x.dtype).reshape(-1, 1, 1)
        mean = a * means
        var = (a * stds) ** 2 + sigma.to(x.dtype).reshape(-1, 1, 1) ** 2
        diff = x.unsqueeze(1) - mean
        log_n = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
        return log_w + log_n, mean, var

    def _check_x(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"x must be a floating tensor, got {got}")
        if x.dim() < 2 or x[0].numel() != self.dim:
            raise ValueError(
                f"x must have shape (batch, ...) with {self.dim} values per sample, "
                f"got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim)

    def log_prob(self, x: Tensor) -> Tensor:
        """(batch,) log density of the mixture itself (t = 0 of a VP/sub-VP SDE)."""
        one = torch.ones(1, dtype=x.dtype, device=x.device)
        return _log_prob(self, self._check_x(x), one, 0 * one)

    def score(self, x: Tensor) -> Tensor:
        """grad_x log p(x), same shape as x."""
        one = torch.ones(1, dtype=x.dtype, device=x.device)
        return _score(self, self._check_x(x), one, 0 * one).reshape(x.shape)

    def condition(self, known: Tensor, mask: Tensor) -> MixtureConditional:
        """The exact conditional p(x_missing | x_known) (see ``MixtureConditional``).

        Parameters
        ----------
        known
            ``(B, d)`` or ``(d,)`` values (only the masked entries are read).
        mask
            Bool, True where known, of known's shape, or ``(d,)`` shared by every row.
        """
        known = torch.as_tensor(known, dtype=self.means.dtype, device=self.means.device)
        known = known.reshape(1, -1) if known.dim() == 1 else known.reshape(known.shape[0], -1)
        if known.shape[1] != self.dim:
            raise ValueError(f"known must have {self.dim} values per row, got {known.shape[1]}")
        mask = torch.as_tensor(mask, device=known.device)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = known), got {mask.dtype}")
        if mask.numel() == self.dim:
            mask = mask.reshape(1, -1)
        elif mask.numel() == known.numel():
            mask = mask.reshape(known.shape)
        else:
            raise ValueError(
                f"mask must have {self.dim} entries or known's {known.numel()}, got {mask.shape}"
            )
        mask = mask.expand(known.shape)
        known = torch.where(mask, known, torch.zeros((), dtype=known.dtype, device=known.device))
        return MixtureConditional(self, known, mask)


def _log_prob(mix: GaussianMixture, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    log_joint, _, _ = mix._at(x, alpha, sigma)  # noqa: SLF001
    return torch.logsumexp(log_joint, dim=1)


def _score(mix: GaussianMixture, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    # score = sum_k r_k(x) (mean_k - x) / var_k with responsibilities r = softmax(log joint).
    log_joint, mean, var = mix._at(x, alpha, sigma)  # noqa: SLF001
    r = torch.softmax(log_joint, dim=1).unsqueeze(-1)
    return (r * (mean - x.unsqueeze(1)) / var).sum(1)


def _coefficients(sde: SDE, t: TimeLike, x: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t), float64, (batch,), at x's batch of times t (checked here)."""
    tt = sde.schedule_time(t, x.device)
    return sde.marginal(batch_time(tt, x, tt.dtype))


def _check_sde_data(sde: SDE, data, cls: type) -> None:
    # The times a score function is called with are checked in _coefficients.
    check_instance("sde", sde, SDE)
    check_instance("data", data, cls)


def exact_score(sde: SDE, data: GaussianMixture) -> Callable[[Tensor, TimeLike], Tensor]:
    """The exact score grad_x log p_t(x) of ``data`` diffused by ``sde``; t scalar or (batch,).

    Examples
    --------
    One Gaussian N(m, s^2) stays Gaussian, N(alpha_t m, alpha_t^2 s^2 + sigma_t^2), so its score
    is linear in x:

    >>> import torch
    >>> import scoresde as sd
    >>> sde, t = sd.VPSDE(), torch.tensor([0.3], dtype=torch.float64)
    >>> score = sd.exact_score(sde, sd.GaussianMixture([[1.0]], stds=0.5))
    >>> alpha, sigma = sde.marginal(t)
    >>> x = torch.tensor([[0.2]], dtype=torch.float64)
    >>> torch.allclose(score(x, t), -(x - alpha) / (alpha**2 * 0.25 + sigma**2))
    True
    """
    _check_sde_data(sde, data, GaussianMixture)

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        xf = data._check_x(x)  # noqa: SLF001
        alpha, sigma = _coefficients(sde, t, x)
        return _score(data, xf, alpha, sigma).reshape(x.shape)

    return score_fn


def exact_log_prob(sde: SDE, data: GaussianMixture) -> Callable[[Tensor, TimeLike], Tensor]:
    """The exact log p_t(x), (batch,), of ``data`` diffused by ``sde``; t scalar or (batch,)."""
    _check_sde_data(sde, data, GaussianMixture)

    def log_prob_fn(x: Tensor, t: TimeLike) -> Tensor:
        xf = data._check_x(x)  # noqa: SLF001
        alpha, sigma = _coefficients(sde, t, x)
        return _log_prob(data, xf, alpha, sigma)

    return log_prob_fn


def exact_velocity(sde: SDE, data: GaussianMixture) -> Callable[[Tensor, TimeLike], Tensor]:
    """The exact PF-ODE velocity u(x, t) = f x - g^2/2 grad log p_t(x) of ``data``, computed as
    E[alpha'_t x0 + sigma'_t eps | x_t = x] (Lipman et al. 2023, Eq. 8; Liu et al. 2023, Eq. 2):
    with v_k = alpha^2 s_k^2 + sigma^2, e_k = (x - alpha m_k)/v_k, responsibilities r_k,
    E[x0|x] = sum r_k (m_k + alpha s_k^2 e_k), sigma E[eps|x] = sigma^2 sum r_k e_k,
    alpha' = f alpha, sigma sigma' = g^2/2 + f sigma^2 (tested against ``exact_score``)."""
    _check_sde_data(sde, data, GaussianMixture)

    def velocity_fn(x: Tensor, t: TimeLike) -> Tensor:
        xf = data._check_x(x)  # noqa: SLF001
        tt = batch_time(sde.schedule_time(t, x.device), x, torch.float64)
        c = sde.coeffs(tt)
        log_joint, mean, var = data._at(xf, c.alpha, c.sigma)  # noqa: SLF001
        means, stds, _ = data._params(x.device, x.dtype)  # noqa: SLF001
        r = torch.softmax(log_joint, dim=1).unsqueeze(-1)
        e = (xf.unsqueeze(1) - mean) / var
        x0_hat = (r * (means + c.alpha.to(x.dtype).reshape(-1, 1, 1) * stds**2 * e)).sum(1)
        w_x0 = (c.f * c.alpha).to(x.dtype).unsqueeze(-1)
        w_eps = (0.5 * c.g2 + c.f * c.sigma**2).to(x.dtype).unsqueeze(-1)
        return (w_x0 * x0_hat + w_eps * (r * e).sum(1)).reshape(x.shape)

    return velocity_fn


def gaussian_flow_map(sde: SDE, mean, std) -> Callable[[Tensor, TimeLike, TimeLike], Tensor]:
    """Exact probability-flow map x_t -> x_s for data N(mean, diag(std^2)).

    The marginal at t is N(alpha_t m, v_t) with v_t = alpha_t^2 std^2 + sigma_t^2, elementwise. The
    PF-ODE dx/dt = f x - g^2/2 score is linear in x with solution
    x_s = alpha_s m + sqrt(v_s / v_t) (x_t - alpha_t m)  (Song et al. 2021, Eq. 13, Gaussian data).
    """
    check_instance("sde", sde, SDE)
    mean = torch.as_tensor(mean)
    std = torch.as_tensor(std)
    if not bool(torch.isfinite(mean).all()):
        raise ValueError("mean must be finite")
    if not bool((torch.isfinite(std) & (std > 0)).all()):
        raise ValueError("std must be finite and positive")

    def flow(x: Tensor, t: TimeLike, s: TimeLike) -> Tensor:
        m = mean.to(device=x.device, dtype=torch.float64).reshape(-1)
        sd = std.to(device=x.device, dtype=torch.float64).reshape(-1)
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        out = []
        for tau in (t, s):
            a, sig = _coefficients(sde, tau, xf)
            out.append((a.unsqueeze(-1), (a.unsqueeze(-1) * sd) ** 2 + sig.unsqueeze(-1) ** 2))
        (a_t, v_t), (a_s, v_s) = out
        xs = a_s * m + torch.sqrt(v_s / v_t) * (xf - a_t * m)
        return xs.to(x.dtype).reshape(x.shape)

    return flow


# ----------------------------------------------------------------------------------------------
# Conditional oracles: class-conditional mixtures and the conditional p(x_missing | x_known).


class ClassConditionalMixture:
    """p(x, y) = pi_y p(x | y) with each class conditional p(x | y) a ``GaussianMixture``.

    The unconditional p(x) = sum_y pi_y p(x | y) is one mixture of all the classes' components
    (``self.mixture``, weights pi_y w_{y,k}); under a linear SDE every class conditional and the
    unconditional stay mixtures, so p_t(x | y), p_t(x) and p_t(y | x) are exact at every t
    (``exact_class_score``, ``exact_score(sde, data.mixture)``, ``exact_classifier``).

    Parameters
    ----------
    mixtures
        One ``GaussianMixture`` per class, all of the same dimension.
    class_weights
        ``(num_classes,)`` prior pi_y, non-negative with a positive sum; default uniform.
    """

    def __init__(self, mixtures, class_weights=None):
        mixtures = list(mixtures)
        if not mixtures or not all(isinstance(m, GaussianMixture) for m in mixtures):
            raise ValueError("mixtures must be a non-empty sequence of GaussianMixture")
        d = mixtures[0].dim
        if any(m.dim != d for m in mixtures):
            raise ValueError(f"every class mixture must have dimension {d}")
        dtype, device = mixtures[0].means.dtype, mixtures[0].means.device
        c = len(mixtures)
        if class_weights is None:
            class_weights = torch.full((c,), 1.0 / c, dtype=dtype, device=device)
        pi = torch.as_tensor(class_weights, dtype=dtype, device=device)
        if pi.shape != (c,):
            raise ValueError(f"class_weights must have shape ({c},), got {tuple(pi.shape)}")
        if not (torch.all(pi >= 0) and torch.isfinite(pi.sum()) and pi.sum() > 0):
            raise ValueError("class_weights must be non-negative with a finite positive sum")
        self.class_weights = pi / pi.sum()
        self.mixtures = [m.to(device=device, dtype=dtype) for m in mixtures]
        pairs = zip(self.class_weights, self.mixtures, strict=True)
        self.mixture = GaussianMixture(
            torch.cat([m.means for m in self.mixtures]),
            torch.cat([m.stds for m in self.mixtures]),
            torch.cat([p * m.weights for p, m in pairs]),
        )
        #: (K_total,) class of each component of ``self.mixture``.
        self.component_class = torch.cat(
            [torch.full((m.means.shape[0],), y, device=device) for y, m in enumerate(mixtures)]
        )

    @property
    def num_classes(self) -> int:
        return len(self.mixtures)

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def conditional(self, y: int) -> GaussianMixture:
        """p(x | y) for one class y."""
        check_label_values(y, self.num_classes)
        return self.mixtures[y]

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(x, y): n exact draws of the joint, x (n, d) and labels y (n,) long."""
        n = check_int("n", n, 1)
        check_generator("generator", generator)
        x, k = _sample_components(self.mixture, n, generator)
        return x, self.component_class[k]

    def log_prob_class(self, x: Tensor, y) -> Tensor:
        """(batch,) log p(y | x) at t = 0 (see ``exact_classifier`` for t > 0)."""
        one = torch.ones(1, dtype=x.dtype, device=x.device)
        return _log_prob_class(self, self.mixture._check_x(x), one, 0 * one, y)  # noqa: SLF001


def _sample_components(
    mix: GaussianMixture, n: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    # The same draws as GaussianMixture.sample, also returning the component of each sample.
    dev = generator.device if generator is not None else mix.means.device
    k = torch.multinomial(mix.weights.to(dev), n, replacement=True, generator=generator)
    z = torch.randn(n, mix.dim, generator=generator, device=dev, dtype=mix.means.dtype)
    k = k.to(mix.means.device)
    return mix.means[k] + mix.stds[k] * z.to(mix.means.device), k


def _class_mask(data: ClassConditionalMixture, y, x: Tensor) -> Tensor:
    """(batch or 1, K_total) True where a component belongs to the sample's class."""
    cls = data.component_class.to(x.device)
    if isinstance(y, Tensor):
        if y.dim() == 1 and y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels but x has batch size {x.shape[0]}")
        return cls == y.to(x.device).reshape(-1, 1)
    return (cls == y).unsqueeze(0)


def _log_prob_class(data, x: Tensor, alpha: Tensor, sigma: Tensor, y) -> Tensor:
    # log p_t(y | x) = logsumexp over y's components - logsumexp over all (Bayes' rule).
    log_joint, _, _ = data.mixture._at(x, alpha, sigma)  # noqa: SLF001
    in_class = torch.where(_class_mask(data, y, x), log_joint, -math.inf)
    return torch.logsumexp(in_class, 1) - torch.logsumexp(log_joint, 1)


def exact_class_score(
    sde: SDE, data: ClassConditionalMixture, y
) -> Callable[[Tensor, TimeLike], Tensor]:
    """The exact conditional score grad_x log p_t(x | y) of ``data`` diffused by ``sde``.

    p_t(x | y) is class y's mixture diffused, so its score is the mixture score restricted to
    y's components (responsibilities renormalised within the class).

    Parameters
    ----------
    y
        A class (int) or ``(batch,)`` labels, checked once, here.
    """
    _check_sde_data(sde, data, ClassConditionalMixture)
    check_label_values(y, data.num_classes)

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        xf = data.mixture._check_x(x)  # noqa: SLF001
        alpha, sigma = _coefficients(sde, t, x)
        log_joint, mean, var = data.mixture._at(xf, alpha, sigma)  # noqa: SLF001
        log_joint = torch.where(_class_mask(data, y, xf), log_joint, -math.inf)
        r = torch.softmax(log_joint, dim=1).unsqueeze(-1)
        return (r * (mean - xf.unsqueeze(1)) / var).sum(1).reshape(x.shape)

    return score_fn


def exact_classifier(
    sde: SDE, data: ClassConditionalMixture, y
) -> Callable[[Tensor, TimeLike], Tensor]:
    """The exact noisy classifier (x, t) -> log p_t(y | x), (batch,), of ``data`` under ``sde``.

    log p_t(y | x) = log pi_y + log p_t(x | y) - log p_t(x) (Bayes' rule), a softmax over classes
    of log p_t(x | y) + log pi_y. It is differentiable in x, so ``classifier_guidance`` with it at
    scale 1 gives exactly ``exact_class_score`` (Song et al. 2021, Eq. 49: grad log p_t(x | y) =
    grad log p_t(x) + grad log p_t(y | x)). y : a class (int) or (batch,) labels, checked here.
    """
    _check_sde_data(sde, data, ClassConditionalMixture)
    check_label_values(y, data.num_classes)

    def log_prob_y(x: Tensor, t: TimeLike) -> Tensor:
        xf = data.mixture._check_x(x)  # noqa: SLF001
        alpha, sigma = _coefficients(sde, t, x)
        return _log_prob_class(data, xf, alpha, sigma, y)

    return log_prob_y


class MixtureConditional:
    """The exact conditional p(x_missing | x_known) of a diagonal Gaussian mixture, per row.

    With diagonal components the known and missing coordinates are independent within a
    component, so p(x_M' | x_M) = sum_k r_k N(x_M'; m_kM', diag(s_kM'^2)) with
    r_k ∝ w_k N(x_M; m_kM, diag(s_kM^2)) — Bayes' rule on the component (Bishop 2006, Sec. 9.2):
    the components are reweighted by their marginal likelihood of the known coordinates and keep
    their means and stds on the missing ones. Built by ``GaussianMixture.condition``.

    Attributes: known (B, d), mask (B, d) bool (True = known), log_weights (B, K) log r_k.
    """

    def __init__(self, mix: GaussianMixture, known: Tensor, mask: Tensor):
        self.mixture = mix
        self.known = known
        self.mask = mask
        means, stds, log_w = mix._params(known.device, known.dtype)  # noqa: SLF001
        z = (known.unsqueeze(1) - means) / stds  # (B, K, d)
        log_n = -0.5 * z**2 - torch.log(stds) - 0.5 * math.log(2 * math.pi)
        log_lik = (log_n * mask.unsqueeze(1)).sum(-1)  # known coordinates only
        self.log_weights = torch.log_softmax(log_w + log_lik, dim=1)
        #: (B,) log p(x_known) under the mixture's marginal of the known coordinates.
        self.log_evidence = torch.logsumexp(log_w + log_lik, dim=1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """(B, d): one exact draw per row; the known coordinates equal ``known`` exactly."""
        means, stds, _ = self.mixture._params(self.known.device, self.known.dtype)  # noqa: SLF001
        dev = generator.device if generator is not None else self.known.device
        k = torch.multinomial(self.log_weights.exp().to(dev), 1, generator=generator)[:, 0]
        z = torch.randn(self.known.shape, generator=generator, device=dev, dtype=self.known.dtype)
        k, z = k.to(self.known.device), z.to(self.known.device)
        return torch.where(self.mask, self.known, means[k] + stds[k] * z)

    def log_prob(self, x: Tensor) -> Tensor:
        """(B,) log p(x_missing | x_known) at x's missing coordinates (its known ones ignored)."""
        means, stds, _ = self.mixture._params(x.device, x.dtype)  # noqa: SLF001
        x = x.reshape(self.known.shape)
        z = (x.unsqueeze(1) - means) / stds
        log_n = -0.5 * z**2 - torch.log(stds) - 0.5 * math.log(2 * math.pi)
        log_n = (log_n * ~self.mask.unsqueeze(1)).sum(-1)
        return torch.logsumexp(self.log_weights + log_n, dim=1)
