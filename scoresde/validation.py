"""Argument checks shared by every public entry point.

Each check names the argument and the allowed values, and raises ``TypeError`` for a value of the
wrong kind (a string where a shape is meant, a float where an integer is meant, a bool where a
number is meant) and ``ValueError`` for a value of the right kind outside its range (NaN, inf, a
negative step count, a time outside [0, T]). Nothing is silently coerced: ``2.7`` is not an
integer and ``"no"`` is not a bool. Where a number is meant, Python numbers, numpy scalars and
0-d tensors are accepted.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


def _scalar(value: Any) -> Any:
    """A 0-d tensor or numpy scalar as the Python number it holds; anything else unchanged."""
    if isinstance(value, Tensor) and value.dim() == 0 and value.dtype != torch.bool:
        return value.item()
    if hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy scalars (np.float64, np.int32, ...)
    return value


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy bool


def check_int(name: str, value: Any, min: int | None = None, max: int | None = None) -> int:
    """``value`` as an int in [min, max]; bools and floats (even 2.0) are TypeErrors."""
    v = _scalar(value)
    if _is_bool(v) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(v)
    if (min is not None and v < min) or (max is not None and v > max):
        lo = "-inf" if min is None else min
        hi = "inf" if max is None else max
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v}")
    return v


def check_real(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a float in the interval [lo, hi] (ends open with ``lo_open``/``hi_open``).

    NaN is always rejected and +-inf unless ``finite=False``; bools, strings and complex numbers
    are TypeErrors.
    """
    v = _scalar(value)
    if _is_bool(v) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(v)
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if math.isnan(v) or (finite and math.isinf(v)) or below or above:
        left = "(-inf" if lo is None else f"{'(' if lo_open else '['}{lo}"
        right = "inf)" if hi is None else f"{hi}{')' if hi_open else ']'}"
        interval = f"{left}, {right}"
        kind = "a finite number" if finite else "a number"
        raise ValueError(f"{name} must be {kind} in {interval}, got {value!r}")
    return v


def check_positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0."""
    return check_real(name, value, 0.0, lo_open=True)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (or numpy bool); ``"no"``, 0 and 1 are TypeErrors."""
    if not _is_bool(value):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it equals one of ``choices`` *and has its type*: ``True`` is not the order 1,
    ``2.0`` not the order 2 (numpy and 0-d tensor integers are accepted as ints)."""
    v = _scalar(value) if not isinstance(value, str) else value
    for c in choices:
        if type(v) is type(c) and v == c:
            return c
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_shape(name: str, value: Any, min_dims: int = 1) -> tuple[int, ...]:
    """A tuple of positive ints from a tuple, list or ``torch.Size`` (a string is a TypeError,
    ``(5, 2.7)`` too: no element is truncated)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | torch.Size):
        raise TypeError(f"{name} must be a tuple of positive integers, got {value!r}")
    dims = []
    for d in value:
        v = _scalar(d)
        if _is_bool(v) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be a tuple of positive integers, got {value!r}")
        dims.append(int(v))
    if len(dims) < min_dims or min(dims, default=1) < 1:
        raise ValueError(
            f"{name} must have >= {min_dims} dimension(s), each >= 1, got {tuple(dims)}"
        )
    return tuple(dims)


def check_callable(name: str, value: Any) -> Callable:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_instance(name: str, value: Any, cls: type | tuple[type, ...]) -> Any:
    if not isinstance(value, cls):
        want = cls.__name__ if isinstance(cls, type) else " or ".join(c.__name__ for c in cls)
        raise TypeError(f"{name} must be a {want}, got {type(value).__name__}")
    return value


def check_generator(name: str, value: Any) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


def check_device(name: str, value: Any) -> torch.device | None:
    """None or a ``torch.device`` (strings such as "cpu" or "cuda:0" are parsed)."""
    if value is None or isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a torch.device, a string or None, got {value!r}")
    try:
        dev = torch.device(value)
    except RuntimeError as err:
        raise ValueError(f"{name} must name a torch device (e.g. 'cpu', 'cuda:0'): {err}") from None
    available: dict[str, Callable[[], bool]] = {
        "cuda": torch.cuda.is_available,
        "mps": torch.backends.mps.is_available,
    }
    if dev.type in available and not available[dev.type]():
        raise ValueError(f"{name} {value!r} is not available on this machine")
    return dev


def check_float_dtype(name: str, value: Any) -> torch.dtype | None:
    """None or a real floating ``torch.dtype`` (integer dtypes would truncate every step)."""
    if value is None:
        return None
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {value!r}")
    if not value.is_floating_point:
        raise ValueError(f"{name} must be a floating dtype (e.g. torch.float32), got {value}")
    return value


def check_tensor(
    name: str, value: Any, *, min_dim: int = 0, floating: bool = True, finite: bool = False
) -> Tensor:
    """A tensor with at least ``min_dim`` dims, a real floating dtype (``floating``) and, with
    ``finite``, no NaN/inf (one host sync: for entry points, never inside a loop)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (e.g. float32), got {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(
            f"{name} must have >= {min_dim} dimensions, got shape {tuple(value.shape)}"
        )
    if finite and value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return value


def check_times(name: str, t: Any, T: float) -> Any:
    """Raise unless ``t`` is a time in [0, T]: a number, or a 0-d or (batch,) real tensor.

    Numbers (Python or numpy) are checked exactly: NaN and times outside [0, T] are errors, not
    extrapolations of the schedule. Tensors are checked for kind and shape only, never for
    their values: ``sde.marginal``, ``sde.transition`` and the exact scores are called inside
    solver loops, where reading a tensor's values on the host would synchronise an accelerator
    once per step, and a check made on CPU but skipped on GPU would make the same call behave
    differently per device. Tensor times come from the front doors (``sample``'s grid,
    ``log_likelihood``'s eps, the losses' time draws), which check their range once.
    """
    if isinstance(t, Tensor):
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name} must be a real number or tensor, got a {t.dtype} tensor")
        if t.dim() > 1:
            raise ValueError(f"{name} must be a scalar or a (batch,) tensor, got {tuple(t.shape)}")
        return t
    v = _scalar(t)
    if _is_bool(v) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number or a tensor, got {t!r}")
    if v < 0 or not v <= T:  # NaN fails the second test
        raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got {t!r}")
    return t


def batch_time(t: Any, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``t`` (a number, a 0-d or a (batch,) tensor) as the (batch,) tensor a score function or a
    network is called with: on x's device, in ``dtype`` (default: x's). A number goes straight to
    ``dtype`` (``torch.as_tensor`` would round it through float32 first). Shape only, no sync."""
    dtype = x.dtype if dtype is None else dtype
    if isinstance(t, Tensor):
        t = t.to(device=x.device, dtype=dtype)
    else:
        t = torch.tensor(float(t), device=x.device, dtype=dtype)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


# -- configuration fields (networks, ``TrainConfig``) ------------------------------------------
# Every bad value is a ValueError here, whatever its kind: these fields come from config files
# and command-line flags, where "2.5 is not an int" and "-1 is too small" are the same mistake.


def check_label_values(y, num_classes: int) -> None:
    """Raise ValueError unless every label is an integer in [0, num_classes)."""
    if isinstance(y, Tensor):
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got a {y.dtype} tensor")
        if y.dim() > 1:
            raise ValueError(f"labels must be an int or a (batch,) tensor, got {tuple(y.shape)}")
        # One host sync, when the score function is built, never per step.
        bad = (y < 0) | (y >= num_classes)
        if y.numel() and bool(bad.any()):
            raise ValueError(
                f"labels must be in [0, {num_classes}); got {y[bad].unique().tolist()}"
            )
    elif isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < num_classes:
        raise ValueError(f"label must be an integer in [0, {num_classes}), got {y!r}")


def check_config_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is a Python int >= ``minimum`` (bools rejected), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_config_real(
    name: str, value, low: float, high: float, allowed: str, low_closed: bool = False
) -> None:
    """``value`` must be a real number (not a bool) with low < value < high (low <= with
    ``low_closed``); ``allowed`` spells the range for the error message."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and (low <= value if low_closed else low < value) and value < high):
        raise ValueError(f"{name} must be a number in {allowed}, got {value!r}")


def check_config_even(name: str, value: Any) -> int:
    """``value`` if it is an even int >= 2, else ValueError."""
    if check_config_int(name, value, 2) % 2:
        raise ValueError(f"{name} must be even, got {value!r}")
    return value


def check_config_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared with ==), else ValueError."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
