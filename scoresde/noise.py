"""Noise sources: where a stochastic solver's Gaussian draws come from.

The protocol (cf. k-diffusion's ``noise_sampler(sigma, sigma_next)``): a source is called as
``noise(t0, t1)`` for one step over the time interval between t0 and t1 and returns a standard
normal tensor shaped like the samples, the normalised Brownian increment
    z = (W(t1) - W(t0)) / sqrt|t1 - t0|,
which a step scales by its own noise coefficient (g(t0) sqrt(h) for Euler–Maruyama).
``noise.normal()`` is a draw that belongs to no interval: x_T, Langevin (MCMC) corrector steps,
Restart's forward jumps.

* ``GaussianNoise`` (``sample(noise="gaussian")``, the default): every call is a fresh draw from
  ``generator`` (or one generator per sample, ``seeds``); the interval is ignored. Changing
  ``steps`` changes every draw, so a sample moves as the grid is refined.
* ``BrownianTreeNoise`` (``noise="brownian"``): increments of one Brownian path W on [0, T],
  a ``torchsde.BrownianInterval`` with ``halfway_tree=True`` (the dyadic tree of torchsde's
  ``BrownianTree``: the path depends on its entropy only, not on where or in which order it is
  queried). Every grid then samples the same path, so a stochastic solver converges pathwise
  (strongly) as ``steps`` grows, and a sample stays put when the step count changes
  (k-diffusion's ``BrownianTreeNoiseSampler``, Karras et al. 2022 via Crowson).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from .sde import randn
from .validation import check_generator, check_int

__all__ = ["NOISES", "BrownianTreeNoise", "GaussianNoise", "Noise"]

#: Names accepted by ``sample(noise=...)``.
NOISES: tuple[str, ...] = ("gaussian", "brownian")
#: Time resolution of the Brownian tree, in decimal digits: query times are rounded to
#: 10^-BROWNIAN_DIGITS, the grid on which torchsde's dyadic tree (``halfway_tree``) rounds its
#: nodes. An unrounded query time never meets a node and the search recursed without end; 9 digits
#: resolve the steps of fine quadratic grids near eps (2.4e-7 at 2048 VP steps), where
#: torchsde's default of 6 merges them.
BROWNIAN_DIGITS = 9


class Noise(Protocol):
    """What a solver calls for its Gaussian draws (``Context.noise``)."""

    @property
    def generator(self) -> torch.Generator | None:
        """The generator of the whole batch's draws (None: the global RNG, or ``seeds``)."""
        ...

    @property
    def generators(self) -> list[torch.Generator] | None:
        """One generator per sample (``sample(seeds=...)``), else None."""
        ...

    def normal(self) -> Tensor:
        """A standard normal draw of the samples' shape that belongs to no time interval."""
        ...

    def __call__(self, t0: Tensor, t1: Tensor) -> Tensor:
        """(W(t1) - W(t0)) / sqrt|t1 - t0| for one step: standard normal, samples' shape."""
        ...


class GaussianNoise:
    """Independent standard normal draws shaped like the samples (the default source).

    With ``seeds`` each sample has its own generator, so a sample's noise (and result) does not
    depend on the batch it is drawn in (cf. EDM's ``StackedRandomGenerator``). Otherwise one
    ``generator`` (or the global RNG) draws the whole batch. The interval of ``noise(t0, t1)`` is
    ignored: each call is the next draw.
    """

    def __init__(
        self,
        shape: Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ):
        self.shape = tuple(shape)
        self.device = device
        self.dtype = dtype
        self.generator = check_generator("generator", generator)
        self.generators: list[torch.Generator] | None = None
        if seeds is not None:
            if generator is not None:
                raise ValueError("give either generator or seeds (one int per sample), not both")
            if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence | Tensor):
                raise TypeError(f"seeds must be a sequence of integers, got {seeds!r}")
            if len(seeds) != self.shape[0]:
                raise ValueError(
                    f"seeds must have one entry per sample ({self.shape[0]}), got {len(seeds)}"
                )
            # torch.Generator.manual_seed takes any 64-bit pattern; negative seeds are refused so
            # that one seed names one stream.
            seeds = [check_int(f"seeds[{i}]", s, 0, 2**64 - 1) for i, s in enumerate(seeds)]
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def normal(self) -> Tensor:
        """A standard normal draw of the samples' shape."""
        if self.generators is not None:
            return torch.stack(
                [
                    torch.randn(self.shape[1:], generator=g, device=self.device, dtype=self.dtype)
                    for g in self.generators
                ]
            )
        return randn(self.shape, self.generator, self.device, self.dtype)

    def __call__(self, t0: Tensor | None = None, t1: Tensor | None = None) -> Tensor:
        """The next draw; the interval is accepted for the protocol and ignored."""
        return self.normal()

    def entropy(self) -> list[int]:
        """Integer seeds drawn from the generator(s): one, or one per sample with ``seeds``."""
        gens = self.generators if self.generators is not None else [self.generator]
        return [
            int(torch.randint(2**62, (1,), generator=g, device=g.device if g else None))
            for g in gens
        ]


class BrownianTreeNoise:
    """Increments of one Brownian path W on [0, T] (``noise="brownian"``).

    ``noise(t0, t1) = (W(t1) - W(t0)) / sqrt|t1 - t0|`` for any 0 <= t0, t1 <= T, from a
    ``torchsde.BrownianInterval(halfway_tree=True)`` whose entropy is drawn from ``base``'s
    generator(s) after x_T (when ``sample`` draws it), so the same seed gives the same x_T and the
    same path for every ``steps``, grid and solver; times are resolved to 10^-BROWNIAN_DIGITS.
    With per-sample ``seeds`` each sample gets its own tree, seeded from its own generator: a
    sample's path does not depend on its batch (one tree query per sample and step, so this is
    slower for large batches). ``normal()`` (x_T, correctors, Restart's jumps) is ``base``'s
    independent draw.

    torchsde's tree lives on the host and takes Python times, so each call copies its two times to
    the host: one device sync per stochastic step, which the default source does not need.
    """

    def __init__(self, base: GaussianNoise, T: float):
        import torchsde

        self.base = base
        self.shape, self.device, self.dtype = base.shape, base.device, base.dtype
        self.per_sample = base.generators is not None
        size = self.shape[1:] if self.per_sample else self.shape
        self.trees = [
            torchsde.BrownianInterval(
                t0=0.0,
                t1=float(T),
                size=size,
                # at least float32: the tree's bridge arithmetic in half precision would be coarse
                dtype=torch.promote_types(self.dtype, torch.float32),
                device=self.device,
                entropy=seed,
                tol=10.0**-BROWNIAN_DIGITS,
                halfway_tree=True,
            )
            for seed in base.entropy()  # one tree, or one per sample
        ]

    @property
    def generator(self) -> torch.Generator | None:
        return self.base.generator

    @property
    def generators(self) -> list[torch.Generator] | None:
        return self.base.generators

    def normal(self) -> Tensor:
        return self.base.normal()

    def __call__(self, t0: Tensor, t1: Tensor) -> Tensor:
        a, b = round(float(t0), BROWNIAN_DIGITS), round(float(t1), BROWNIAN_DIGITS)
        if a == b:
            raise ValueError(
                f"noise='brownian' resolves times to 1e-{BROWNIAN_DIGITS}; the step from "
                f"t = {float(t0):.12g} to {float(t1):.12g} is shorter (use fewer steps)"
            )
        lo, hi = min(a, b), max(a, b)
        dws = [tree(lo, hi) for tree in self.trees]
        dw = torch.stack(dws) if self.per_sample else dws[0]
        return (dw * ((1.0 if b > a else -1.0) / math.sqrt(hi - lo))).to(self.dtype)
