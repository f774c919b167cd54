"""Safe checkpoints: tensors in safetensors, configuration in JSON, written atomically.

A checkpoint is ``NAME.safetensors`` plus a human-readable ``NAME.json``. The JSON is also stored in
the safetensors header's metadata, which is the source of truth on load (a crash between the two
renames cannot pair new weights with an old config); a sidecar that disagrees is an error. Loading
never unpickles: safetensors holds only tensors, JSON only data, and the network is rebuilt from a
fixed table of known classes (``nets.NETWORKS``) with its recorded constructor arguments.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

FORMAT = "scoresde-checkpoint"
VERSION = 1


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``path``.safetensors and ``path``.json atomically; returns the safetensors path."""
    base = Path(path).with_suffix("")
    meta = {"format": FORMAT, "version": VERSION, **meta}
    text = json.dumps(meta, indent=2, sort_keys=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    weights = base.with_suffix(".safetensors")
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"scoresde": text}))
    _atomic_write(base.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
    return weights


def load_checkpoint(
    path: str | Path, device=None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint written by ``save_checkpoint``; validates the format."""
    base = Path(path).with_suffix("")
    weights = base.with_suffix(".safetensors")
    if not weights.exists():
        raise FileNotFoundError(f"no checkpoint at {weights}")
    with safe_open(str(weights), framework="pt") as f:
        header = (f.metadata() or {}).get("scoresde")
    if header is None:
        raise ValueError(f"{weights} is not a scoresde checkpoint (no 'scoresde' metadata)")
    meta = json.loads(header)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{weights}: unsupported checkpoint format {meta.get('format')!r} "
            f"version {meta.get('version')!r}"
        )
    sidecar = base.with_suffix(".json")
    if sidecar.exists() and json.loads(sidecar.read_text()) != meta:
        raise ValueError(f"{sidecar} disagrees with the config stored in {weights}")
    tensors = load_file(str(weights), device=str(device) if device is not None else "cpu")
    return tensors, meta


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict that names missing, unexpected and mis-shaped entries."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad:
        raise ValueError(
            f"{what} does not match the network: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shape {[(k, tuple(state[k].shape)) for k in bad[:5]]}"
        )
    module.load_state_dict(state, strict=True)
