"""Trainer: Adam with warm-up, gradient clipping, EMA, safe checkpoints, exact resume, DDP.

Every random draw of step k (the batch's times and noise, condition dropout, dropout in the net)
comes from generators seeded by (seed, rank, k), and the data order of epoch e from (seed, e). The
state of training is therefore the weights, the EMA, the optimiser and the step number, which is
what a checkpoint holds; resuming from it continues bit-for-bit as if never stopped.
Under ``torchrun`` (torch.distributed initialised) the model is wrapped in DDP, each rank takes
every world-th example of the epoch's permutation, and rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import copy
import csv
import gc
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import (  # event_shape, load_model: importable from here as before
    adam_state,
    checkpoint_file,
    event_shape,  # noqa: F401
    load_checkpoint,
    load_model,  # noqa: F401
    load_state_strict,
    save_checkpoint,
)
from .compile import GRAPH_MODES, check_compile, check_cuda_graph, compile_fn
from .flow_matching import flow_matching_loss
from .losses import TRAIN_EPS, dsm_loss, sample_times
from .model import ScoreModel
from .nets.classifier import NoisyClassifier
from .sde import SDE, batch_coeff
from .solvers.base import NonFiniteError
from .train_config import TrainConfig, train_config_from  # noqa: F401 (importable from here)
from .validation import (
    check_config_int,
    check_generator,
    check_instance,
    check_int,
    check_label_values,
    check_positive,
    check_real,
    check_tensor,
)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed from torchrun's environment (nccl on GPU, gloo on CPU).

    Returns (rank, world_size); (0, 1) when not launched by torchrun.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


class Trainer:
    """Train a ``ScoreModel`` with denoising score matching or flow matching (``config.loss``) on
    an in-memory data set.

    Parameters
    ----------
    model
        The ScoreModel (its ``net`` must expose ``config`` so checkpoints can rebuild it).
    data
        ``(N, *event)`` training data.
    config
        A ``TrainConfig``.
    labels
        Optional ``(N,)`` class labels for conditional nets.
    noise
        ``(N, *event)`` noise coupled to each example (reflow: ``reflow_pairs``), used as the
        flow-matching pairs; needs ``loss="fm", coupling="pairs"``, and only then allowed.
    out_dir
        Where checkpoints, ``loss.csv`` and sample figures go.
    sample_fn
        Optional ``sample_fn(ema_model, step) -> Tensor`` drawn every ``sample_every``.
    """

    def __init__(
        self,
        model: ScoreModel,
        data: Tensor,
        config: TrainConfig | None = None,
        labels: Tensor | None = None,
        out_dir: str | Path | None = None,
        device: torch.device | str | None = None,
        sample_fn=None,
        noise: Tensor | None = None,
    ):
        self.config = config or TrainConfig()
        if (noise is not None) != (self.config.coupling == "pairs"):
            raise ValueError(
                'noise= (reflow pairs) and coupling="pairs" go together: got noise '
                f"{'given' if noise is not None else 'None'} and coupling {self.config.coupling!r}"
            )
        if noise is not None and noise.shape != data.shape:
            raise ValueError(
                f"noise must have the data's shape {tuple(data.shape)}, got {tuple(noise.shape)}"
            )
        self.device = torch.device(device) if device is not None else data.device
        # Whoever initialised torch.distributed destroys it: close() does when this Trainer did.
        was_initialised = dist.is_available() and dist.is_initialized()
        self.rank, self.world = init_distributed()
        self._owns_process_group = (
            not was_initialised and dist.is_available() and dist.is_initialized()
        )
        if labels is not None and labels.shape != (data.shape[0],):
            raise ValueError(
                f"labels must have shape ({data.shape[0]},), got {tuple(labels.shape)}"
            )
        if not torch.isfinite(data).all():
            bad = torch.nonzero(~torch.isfinite(data.reshape(data.shape[0], -1)).all(1))[0, 0]
            raise ValueError(f"data must be finite: example {int(bad)} holds NaN or inf")
        if not self.config.eps < model.sde.T:
            raise ValueError(
                f"eps must be below the SDE's T = {model.sde.T}, got {self.config.eps}"
            )
        self.data = data
        self.noise = noise.to(data.device) if noise is not None else None
        self.labels = labels.to(data.device) if labels is not None else None
        self._perm: tuple[int, Tensor | None] = (-1, None)  # (epoch, this rank's shuffle)
        self.model = model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.step = 0
        # First step whose loss or gradient norm was not finite (-1: none), kept on the device so
        # that checking costs no synchronisation per step; read where the loss is read anyway.
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.sample_fn = sample_fn
        self.num_classes = getattr(model.net, "config", {}).get("num_classes")
        if self.config.p_uncond > 0 and not self.num_classes:
            raise ValueError("p_uncond > 0 needs a class-conditional net (config['num_classes'])")
        n_rank = len(range(self.rank, data.shape[0], self.world))
        self.steps_per_epoch = n_rank // self.config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"batch_size {self.config.batch_size} exceeds the {n_rank} examples per rank"
            )
        self.ddp = None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._forward = self._compiled_forward()

    def _compiled_forward(self) -> nn.Module | None:
        """The model's forward as ``config.compile`` / ``config.cuda_graph`` ask, or None (eager).

        ``cuda_graph`` compiles with a CUDA-graph mode ("reduce-overhead", or "max-autotune" if
        that is the compile mode): torch.compile's CUDA-graph trees then replay the forward and
        the backward as graphs; clipping, Adam and the EMA stay eager (fused multi-tensor
        kernels, a few launches). The wrapper owns no weights: ``state_dict``, the EMA, the
        optimiser and checkpoints see ``self.model`` exactly as without it.
        """
        cfg = self.config
        mode = check_compile(cfg.compile)
        if check_cuda_graph(cfg.cuda_graph, self.device, "the training step"):
            mode = "max-autotune" if mode == "max-autotune" else "reduce-overhead"
        self._graphed = mode in GRAPH_MODES
        if mode is None:
            return None
        return compile_fn(self.ddp if self.ddp is not None else self.model, mode, self.device)

    # -- one step -----------------------------------------------------------------------------
    def _batch_indices(self, step: int) -> Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        perm_epoch, perm = self._perm
        if perm is None or perm_epoch != epoch:
            # One shuffle per epoch, moved to the data's device once: indexing GPU data with CPU
            # indices would copy (and synchronise) every step.
            g = torch.Generator().manual_seed(_seed(self.config.seed, epoch, 0xDA7A))
            perm = torch.randperm(self.data.shape[0], generator=g)[self.rank :: self.world]
            perm = perm.to(self.data.device)
            self._perm = (epoch, perm)
        b = self.config.batch_size
        return perm[i * b : (i + 1) * b]

    def loss_at(self, step: int) -> Tensor:
        """The loss of step ``step`` on this rank (deterministic given the weights)."""
        cfg = self.config
        idx = self._batch_indices(step)
        x0 = self.data[idx].to(self.device)
        g = torch.Generator(device=self.device).manual_seed(_seed(cfg.seed, self.rank, step))
        y = None
        if self.labels is not None:
            y = self.labels[idx].to(self.device)
            if cfg.p_uncond > 0:
                # __init__ refused p_uncond > 0 for a net without classes
                assert self.num_classes is not None
                drop = torch.rand(y.shape, generator=g, device=self.device) < cfg.p_uncond
                y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        net = self.ddp if self.ddp is not None else self.model
        if self._forward is not None:  # torch.compile's wrapper: called as the module it wraps
            net = cast(ScoreModel, self._forward)
        autocast = torch.autocast("cuda", torch.bfloat16, enabled=cfg.bf16 and x0.is_cuda)
        with autocast:
            if cfg.loss == "fm":
                return flow_matching_loss(
                    self.model.sde,
                    net,
                    x0,
                    coupling=cfg.coupling,
                    eps=cfg.eps,
                    time_sampling=cfg.time_sampling,
                    y=y,
                    noise=self.noise[idx].to(self.device) if self.noise is not None else None,
                    generator=g,
                )
            return dsm_loss(
                self.model.sde,
                net,
                x0,
                weighting=cfg.weighting,
                eps=cfg.eps,
                time_sampling=cfg.time_sampling,
                y=y,
                generator=g,
            )

    def train_step(self) -> Tensor:
        if self.world > 1 and self.ddp is None:
            raise RuntimeError("this Trainer was closed: its gradients are no longer all-reduced")
        cfg = self.config
        if self._graphed:
            # A new iteration for CUDA-graph trees: the last step's graph outputs may be reused.
            torch.compiler.cudagraph_mark_step_begin()
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(self.step)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(_seed(cfg.seed, self.rank, self.step, 0xD409))  # dropout
            # Gradients dropped before the forward: with CUDA graphs, no output of the last
            # step's backward graph is alive when the graphs replay again.
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_at(self.step)
            loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(norm)) & (self._first_bad < 0)
        self._first_bad = torch.where(bad, self.step, self._first_bad)
        self.optimizer.step()
        decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            # One fused kernel per group of tensors, not one launch per parameter.
            torch._foreach_lerp_(
                list(self.ema.parameters()), list(self.model.parameters()), 1 - decay
            )
            for e, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
                e.copy_(b)
        self.step += 1
        return loss.detach()

    def check_finite(self) -> None:
        """Raise ``NonFiniteError`` if a loss or gradient was NaN or inf since this Trainer began:
        the weights are then garbage and are never saved (the last checkpoint stays as it was)."""
        bad = int(self._first_bad)
        if bad >= 0:
            raise NonFiniteError(
                f"training diverged: the loss or gradient norm of step {bad} was NaN or inf "
                f"(lr {self.config.lr_at(bad):.3g}); nothing after it is saved, the last "
                f"checkpoint is kept. Lower the learning rate or check the data."
            )

    def train(self, steps: int, progress: bool = True) -> list[float]:
        """Run ``steps`` optimisation steps; returns the logged (rank-averaged) losses.

        Raises ``NonFiniteError`` at the first log, checkpoint or sample point (and at the end)
        after a non-finite loss or gradient.
        """
        check_config_int("steps", steps, 0)
        cfg = self.config
        if self.step == 0 and self.rank == 0 and self.out_dir is not None:
            (self.out_dir / "loss.csv").unlink(missing_ok=True)  # a fresh run, not a resume
        logged: list[float] = []
        running = torch.zeros((), device=self.device)
        count = 0
        bar = tqdm(total=steps, disable=not progress or self.rank != 0, desc="train")
        for k in range(steps):
            running += self.train_step()
            count += 1
            bar.update(1)
            # Reading the loss syncs with the device: only every log_every steps and at the end.
            if self.step % cfg.log_every == 0 or k == steps - 1:
                mean = running / count
                if self.world > 1:
                    dist.all_reduce(mean)
                    mean /= self.world
                self.check_finite()
                value = float(mean)
                logged.append(value)
                bar.set_postfix(loss=f"{value:.4f}")  # tqdm shows the rate itself
                self._log(value)
                running.zero_()
                count = 0
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                self.save()
            if (
                cfg.sample_every
                and self.sample_fn is not None
                and self.step % cfg.sample_every == 0
            ):
                self._samples()
        bar.close()
        self.check_finite()
        return logged

    def _log(self, loss: float) -> None:
        if self.rank != 0 or self.out_dir is None:
            return
        path = self.out_dir / "loss.csv"
        new = not path.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "loss", "lr"])
            w.writerow([self.step, f"{loss:.6g}", f"{self.optimizer.param_groups[0]['lr']:.6g}"])

    def _samples(self) -> None:
        if self.rank != 0 or self.out_dir is None:
            return
        from .plots import save_samples

        self.check_finite()
        x = self.sample_fn(self.ema, self.step)
        save_samples(x, self.out_dir / f"samples_{self.step:07d}.png", title=f"step {self.step}")

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt = self.optimizer.state_dict()
        for i, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"optim.{i}.{k}"] = torch.as_tensor(v)
        net = self.model.net
        meta = {
            "step": self.step,
            "net": {"class": type(net).__name__, "config": net.config},
            "sde": self.model.sde.config(),
            "parameterization": self.model.parameterization,
            "train": asdict(self.config),
            "world_size": self.world,
        }
        return tensors, meta

    def save(self, path: str | Path | None = None) -> Path | None:
        """Checkpoint to ``path`` (default ``out_dir/checkpoint``); rank 0 only.

        Raises ``NonFiniteError`` instead of saving weights that went through a non-finite step.
        """
        self.check_finite()
        if self.rank != 0:
            return None
        if path is None:
            if self.out_dir is None:
                raise ValueError("no path given and the trainer has no out_dir")
            path = self.out_dir / "checkpoint"
        tensors, meta = self.state()
        return save_checkpoint(path, tensors, meta)

    def load(self, path: str | Path) -> None:
        """Restore weights, EMA, optimiser and step from a checkpoint of the same model.

        Every inconsistency is a ValueError naming the file and the entry: another network, SDE,
        parameterisation, loss or coupling, missing, renamed or mis-shaped tensors, or a ``step``
        that disagrees with the optimiser's own step count.
        """
        file = checkpoint_file(path)
        tensors, meta = load_checkpoint(file, self.device)
        net = self.model.net
        for key, ours in (
            ("net", {"class": type(net).__name__, "config": net.config}),
            ("sde", self.model.sde.config()),
            ("parameterization", self.model.parameterization),
        ):
            if meta.get(key) != ours:
                raise ValueError(
                    f"{file}: the checkpoint's {key} {meta.get(key)!r} differs from this "
                    f"trainer's {ours!r}"
                )
        # The objective: resuming DSM as flow matching (or another coupling) is another run.
        # Checkpoints from before flow matching have no "loss"/"coupling": they trained DSM.
        train = meta.get("train")
        if not isinstance(train, dict):
            train = {}
        for key, default in (("loss", "dsm"), ("coupling", "independent")):
            theirs, ours = train.get(key, default), getattr(self.config, key)
            if theirs != ours:
                raise ValueError(
                    f"{file}: the checkpoint was trained with {key} {theirs!r}, this trainer's "
                    f"config has {ours!r}"
                )
        step = meta.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"{file}: step must be an integer >= 0, got {step!r}")
        load_state_strict(self.model, tensors, "model.", f"{file}: the model weights")
        load_state_strict(self.ema, tensors, "ema.", f"{file}: the EMA weights")
        adam = adam_state(file, tensors, list(self.model.parameters()), step)
        self.optimizer.load_state_dict({**self.optimizer.state_dict(), "state": adam})
        self.step = step

    def close(self) -> None:
        """Release the DDP wrapper, and the process group if this Trainer initialised it.

        Garbage in reference cycles (DDP's among it) that is only freed at interpreter shutdown,
        after gloo's threads have gone, can abort the process there ("terminate called without an
        active exception": about 1 run in 15 of two gloo ranks on torch 2.13, none in 90 runs
        after collecting it here, while the process group is alive).
        """
        self.ddp = None
        if self.world > 1:
            self._forward = None  # it wrapped the DDP module
        gc.collect()
        if self._owns_process_group:
            dist.destroy_process_group()
            self._owns_process_group = False

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def train_classifier(
    sde: SDE,
    classifier: NoisyClassifier,
    data: Tensor,
    labels: Tensor,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    eps: float = TRAIN_EPS,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[float]:
    """Train ``classifier`` by cross-entropy on perturbed data; returns the per-step losses.

    Each step draws a batch (x_0, y), t ~ U(eps, T) and x_t = alpha_t x_0 + sigma_t z from the
    same SDE the score model uses, and minimises -log p_phi(y | x_t, t) with Adam (Dhariwal &
    Nichol 2021, Sec. 4: a classifier on noisy images). Runs on ``data``'s device.
    """
    check_instance("sde", sde, SDE)
    check_tensor("data", data, min_dim=2)
    check_tensor("labels", labels, floating=False)
    check_int("steps", steps, 1)  # floats are TypeErrors here, as in the guidance API
    check_int("batch_size", batch_size, 1)
    check_positive("lr", lr)
    check_real("eps", eps, 0.0, sde.T, lo_open=True, hi_open=True)
    check_generator("generator", generator)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"labels must have shape ({data.shape[0]},), got {tuple(labels.shape)}")
    check_label_values(labels, classifier.num_classes)
    dev = data.device
    g_dev = generator.device if generator is not None else dev
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    losses = []
    for _ in tqdm(range(steps), disable=not progress, desc="classifier", leave=False):
        idx = torch.randint(data.shape[0], (batch_size,), generator=generator, device=g_dev)
        x0, y = data[idx.to(dev)], labels[idx.to(dev)].to(dev)
        t = sample_times(batch_size, sde.T, eps, generator=generator, device=dev)
        z = torch.randn(x0.shape, generator=generator, device=g_dev, dtype=x0.dtype).to(dev)
        alpha, sigma = torch.exp(sde.log_alpha(t)), torch.exp(sde.log_sigma(t))
        x_t = batch_coeff(alpha, x0) * x0 + batch_coeff(sigma, x0) * z
        loss = nn.functional.cross_entropy(classifier(x_t, t.to(x0.dtype)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    classifier.eval()
    return [float(v) for v in torch.stack(losses)]
