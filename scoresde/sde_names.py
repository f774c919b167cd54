"""The SDEs by short name (the command line's ``--sde``, ``compare``'s problems) and from the
JSON config a checkpoint saved (``sde.config()``): one table for both, read-only.

It lives apart from ``sde.py`` because it names the Gaussian paths of ``paths.py`` too, which
build on ``sde.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .paths import RectifiedFlow
from .sde import SDE, VESDE, VPSDE, SubVPSDE
from .validation import check_choice

#: The SDEs by short name; read-only (no global mutable registry).
SDE_CLASSES: Mapping[str, type[SDE]] = MappingProxyType(
    {cls.name: cls for cls in (VPSDE, SubVPSDE, VESDE, RectifiedFlow)}
)


def sde_from_name(name: str) -> SDE:
    """The SDE called ``name`` in ``SDE_CLASSES`` ("vp", "subvp", "ve", "rf"), default settings."""
    return SDE_CLASSES[check_choice("sde", name, tuple(SDE_CLASSES))]()


def sde_from_config(config: dict) -> SDE:
    """Rebuild an SDE from ``sde.config()`` (used by checkpoints); unknown types are errors."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (sde.config()), got {type(config).__name__}")
    cfg = dict(config)
    kind = cfg.pop("type", None)
    cls = {c.__name__: c for c in SDE_CLASSES.values()}.get(kind)
    if cls is RectifiedFlow:
        return RectifiedFlow(cfg.get("T", 1.0 - 1e-3))
    if cls is VESDE:
        return VESDE(cfg["sigma_min"], cfg["sigma_max"], cfg.get("T", 1.0))
    if cls is not None and issubclass(cls, (VPSDE, SubVPSDE)):
        schedule = cfg.pop("schedule", "linear")
        if schedule == "linear":
            return cls(cfg["beta_min"], cfg["beta_max"], "linear", cfg.get("T"))
        return cls(schedule=schedule, **cfg)  # T and the schedule's own options
    names = ", ".join(c.__name__ for c in SDE_CLASSES.values())
    raise ValueError(f"unknown SDE type {kind!r} in config; expected one of {names}")
