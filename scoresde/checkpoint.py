"""Safe checkpoints: one self-contained safetensors file, checksummed, committed by one rename.

A checkpoint is the single file ``NAME.safetensors``. Its header metadata holds the configuration
as JSON (key ``"scoresde"``), including ``"sha256"``: a SHA-256 over the rest of that JSON and
every tensor's name, dtype, shape and bytes, verified on every load. A save writes a temporary
file beside the checkpoint, fsyncs it, renames it over the checkpoint (the one commit point) and
fsyncs the directory, so a crash or a full disk at any instant leaves either the old or the new
checkpoint, never a mixture; temporary files a crash left behind are removed by the next save.
One process writes a given checkpoint (rank 0 under DDP). Loading never unpickles: safetensors
holds only tensors, the header only JSON, and the network is rebuilt from a fixed table of known
classes (``nets.NETWORKS``) with its recorded constructor arguments.

The checksum detects corruption and hand edits; it is not a signature (whoever rewrites the file
can recompute it), so consistency checks against the tensors (``Trainer.load``) stay in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from .model import ScoreModel
from .nets import NETWORKS
from .sde_names import sde_from_config

FORMAT = "scoresde-checkpoint"
VERSION = 2  # 1: config also in a NAME.json sidecar, no checksum
META_KEY = "scoresde"


def checkpoint_file(path: str | Path) -> Path:
    """``NAME.safetensors`` for ``NAME`` or ``NAME.safetensors``."""
    return Path(path).with_suffix(".safetensors")


def content_hash(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the config (sorted JSON, less its ``sha256``) and each tensor's name,
    dtype, shape and bytes in name order; every part is length-prefixed, so different contents
    never feed the hash the same bytes."""
    h = hashlib.sha256()

    def part(data) -> None:
        h.update(len(memoryview(data).cast("B")).to_bytes(8, "little"))
        h.update(data)

    part(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        part(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        part(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``path``.safetensors atomically and durably; returns its path.

    ``meta`` must be JSON data (non-finite floats are refused); it is stored in the header with
    ``format``, ``version`` and ``sha256`` (keys this module owns).
    """
    file = checkpoint_file(path)
    meta = {**meta, "format": FORMAT, "version": VERSION}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta["sha256"] = content_hash(meta, tensors)
    # One metadata entry: safetensors writes several in a random order, and equal checkpoints
    # should be equal files.
    metadata = {META_KEY: json.dumps(meta, sort_keys=True, allow_nan=False)}
    _atomic_write(file, save_bytes(tensors, metadata=metadata))
    return file


def _atomic_write(file: Path, data: bytes) -> None:
    """Temporary file, fsync, rename over ``file`` (the commit), fsync of the directory."""
    file.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{file.name}."
    for orphan in file.parent.iterdir():  # left by a save that was killed
        if orphan.name.startswith(prefix) and orphan.name.endswith(".tmp"):
            orphan.unlink(missing_ok=True)
    tmp = file.with_name(f"{prefix}{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 lets the umask decide, as for any file (mkstemp would give 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)  # the bytes reach the disk before a name points at them
        finally:
            os.close(fd)
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(file.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read(file: Path, verify: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Parse, and with ``verify`` check the checksum of, a checkpoint file's bytes."""
    if not file.exists():
        raise FileNotFoundError(f"no checkpoint at {file}")
    data = file.read_bytes()
    try:
        n = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
        tensors = load_bytes(data)
        meta_text = metadata.get(META_KEY)
        meta = json.loads(meta_text) if meta_text is not None else None
    except (SafetensorError, ValueError, AttributeError) as err:
        raise ValueError(
            f"{file} is not a readable safetensors file (truncated or corrupt?): {err}"
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"{file} is not a scoresde checkpoint (no 'scoresde' config in its header)"
        )
    if meta.get("format") != FORMAT or meta.get("version") not in (1, VERSION):
        raise ValueError(
            f"{file}: unsupported checkpoint format {meta.get('format')!r} "
            f"version {meta.get('version')!r} (this scoresde reads {FORMAT!r} version {VERSION})"
        )
    if verify and meta["version"] == 1:
        raise ValueError(
            f"{file} was written by an older scoresde (checkpoint format version 1, no checksum); "
            f"if you trust it, convert it once with scoresde.checkpoint.upgrade_checkpoint"
            f"({str(file)!r})"
        )
    if verify:
        stored, actual = meta.pop("sha256", None), content_hash(meta, tensors)
        if stored != actual:
            raise ValueError(
                f"{file}: checksum mismatch (stored sha256 {stored!r}, contents hash to "
                f"{actual!r}): the file is corrupt or was edited; use another copy or retrain"
            )
    return tensors, meta


def load_checkpoint(
    path: str | Path, device=None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint written by ``save_checkpoint``, its checksum verified.

    Every failure is a ValueError naming the file (FileNotFoundError when there is none).
    """
    tensors, meta = _read(checkpoint_file(path), verify=True)
    if device is not None:
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def upgrade_checkpoint(path: str | Path) -> Path:
    """Rewrite a version-1 checkpoint (no checksum) in the current format, trusting its contents;
    its ``NAME.json`` sidecar is no longer read and may be deleted."""
    file = checkpoint_file(path)
    tensors, meta = _read(file, verify=False)
    return save_checkpoint(file, tensors, meta)


def load_state_strict(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, what: str
) -> None:
    """``module.load_state_dict`` from the entries ``prefix + name`` of ``tensors``; an error
    (starting with ``what``) names the missing, unexpected and mis-shaped entries by their key in
    ``tensors``."""
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(prefix + k for k in set(own) - set(state))
    unexpected = sorted(prefix + k for k in set(state) - set(own))
    shared = sorted(set(own) & set(state))
    bad = [(prefix + k, tuple(state[k].shape)) for k in shared if own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        raise ValueError(
            f"{what} do not match the network: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shape {bad[:5]}"
        )
    module.load_state_dict(state, strict=True)


def adam_state(
    file: Path, tensors: dict[str, torch.Tensor], params: list[torch.nn.Parameter], step: int
) -> dict[int, dict[str, torch.Tensor]]:
    """Adam's state stored as ``optim.{i}.{name}`` in a checkpoint, checked against ``params``:
    after ``step`` > 0 steps every trained parameter has Adam's three entries, and each
    counts ``step`` steps (so an edited ``step`` cannot resume elsewhere)."""
    trained = {i: p for i, p in enumerate(params) if p.requires_grad and step}
    names = ("exp_avg", "exp_avg_sq", "step")
    want = {f"optim.{i}.{n}" for i in trained for n in names}
    have = {k for k in tensors if k.startswith("optim.")}
    if want != have:
        raise ValueError(
            f"{file}: optimiser state does not match the network after {step} steps: "
            f"missing {sorted(want - have)[:5]}, unexpected {sorted(have - want)[:5]}"
        )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for i, p in trained.items():
        entry = {n: tensors[f"optim.{i}.{n}"] for n in names}
        for n in ("exp_avg", "exp_avg_sq"):
            if entry[n].shape != p.shape:
                raise ValueError(
                    f"{file}: optim.{i}.{n} has shape {tuple(entry[n].shape)}, "
                    f"its parameter {tuple(p.shape)}"
                )
        if entry["step"].numel() != 1 or float(entry["step"]) != step:
            raise ValueError(
                f"{file}: the config says step {step} but the optimiser state optim.{i}.step "
                f"counts {entry['step'].tolist()} steps"
            )
        state[i] = entry
    return state


def event_shape(meta: dict) -> tuple[int, ...]:
    """The shape of one sample of a checkpoint's model, from its JSON config (``load_model``)."""
    cfg = meta["net"]["config"]
    if meta["net"]["class"] in ("UNet", "DiT"):
        return (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    return (cfg["dim"],)


def load_model(path: str | Path, ema: bool = True, device=None) -> tuple[ScoreModel, dict]:
    """Rebuild the ScoreModel of a checkpoint (EMA weights by default) and return it with its meta.

    The network class must be one of ``scoresde.nets.NETWORKS``; nothing is unpickled.
    """
    file = checkpoint_file(path)
    tensors, meta = load_checkpoint(file, device)
    try:
        cls_name = meta["net"]["class"]
        if cls_name not in NETWORKS:
            raise ValueError(f"unknown network class {cls_name!r}; known: {sorted(NETWORKS)}")
        net = NETWORKS[cls_name](**meta["net"]["config"])
        model = ScoreModel(net, sde_from_config(meta["sde"]), meta["parameterization"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{file}: cannot rebuild the model from its config: {err!r}") from None
    prefix = "ema." if ema else "model."
    load_state_strict(model, tensors, prefix, f"{file}: the {prefix[:-1]} weights")
    return model.to(device) if device is not None else model, meta
