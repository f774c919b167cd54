"""Data for the subcommands: loading a data set by name or path, and the per-coordinate
standardisation ``scoresde train --standardize`` stores in a checkpoint."""

from __future__ import annotations

from pathlib import Path


def data_help() -> str:
    """The data a ``--data`` flag accepts, in words."""
    from ..data import TABULAR_DATASETS, TOY_DATASETS

    return (
        f"a toy set ({', '.join(TOY_DATASETS)}), a table ({', '.join(TABULAR_DATASETS)}), "
        "'digits', a .npy/.npz file or an image folder"
    )


def load_data(name: str, n: int, seed: int, key: str | None = None, label_key: str | None = None):
    """(data, labels or None) for a toy set or table name, 'digits', a .npy/.npz path or an image
    folder; ``key`` / ``label_key`` name the arrays of a .npz file."""
    import numpy as np
    import torch

    from .. import data

    if (key or label_key) and Path(name).suffix != ".npz":
        raise ValueError(f"--data-key and --label-key name arrays of a .npz file, not of {name!r}")
    generated = {**data.TOY_DATASETS, **data.TABULAR_DATASETS}
    if name in generated:
        return generated[name](n, generator=torch.Generator().manual_seed(seed)), None
    if name == "digits":
        return data.digits(return_labels=True)
    path = Path(name)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"no data file {path}")
        with np.load(path, allow_pickle=False) as z:
            names = list(z.keys())
            labels = z[label_key] if label_key in names else None
        if label_key is not None and labels is None:
            raise ValueError(f"--label-key: {path} has no array {label_key!r}; it holds {names}")
        rest = [k for k in names if k != label_key]
        if key is None and len(rest) != 1:
            raise ValueError(f"{path} holds arrays {names}; choose the data with --data-key")
        x = data.load_array(path, key=key or rest[0])
        return x, None if labels is None else _labels(labels, len(x), label_key)
    if path.suffix == ".npy":
        return data.load_array(path), None
    if path.is_dir():
        return data.load_image_folder(path), None
    raise ValueError(f"unknown data {name!r}; valid: {data_help()}")


def _labels(arr, n: int, key: str | None):
    """Integer class labels 0..K-1 of shape (n,) from a .npz array."""
    import numpy as np
    import torch

    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise ValueError(
            f"--label-key {key!r}: labels must be {n} non-negative integers (one per item), got "
            f"an array of shape {arr.shape} and dtype {arr.dtype}"
        )
    return torch.from_numpy(arr.astype(np.int64))


def standardize(x):
    """(mean, std) per coordinate for vectors (N, d), one scalar pair for images."""
    dims = 0 if x.dim() == 2 else tuple(range(x.dim()))
    mean, std = x.double().mean(dims), x.double().std(dims)
    if bool((std == 0).any()):
        raise ValueError("--standardize: a coordinate of the data is constant (std 0)")
    return {"mean": mean.reshape(-1).tolist(), "std": std.reshape(-1).tolist()}


def transform(meta: dict, x, inverse: bool = False):
    """Apply (or undo) the standardisation a checkpoint was trained with (none: x as is)."""
    import torch

    st = meta.get("standardize")
    if not st:
        return x
    shape = (1, -1) if x.dim() == 2 else (1,) * x.dim()
    mean = torch.tensor(st["mean"], dtype=x.dtype, device=x.device).reshape(shape)
    std = torch.tensor(st["std"], dtype=x.dtype, device=x.device).reshape(shape)
    return x * std + mean if inverse else (x - mean) / std
