"""TrainConfig: the Trainer's hyper-parameters, each checked where it is set, and
``train_config_from``, the config a checkpoint was trained with."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .compile import check_compile
from .flow_matching import COUPLINGS
from .losses import LOSSES, TIME_SAMPLING, WEIGHTINGS
from .validation import check_choice, check_config_int, check_config_real


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults follow Song et al. 2021's small-model settings)."""

    batch_size: int = 128  # per rank
    lr: float = 2e-4
    warmup: int = 500  # linear learning-rate warm-up steps
    decay_steps: int = 0  # cosine decay from lr (after warm-up) to 0 at this step; 0: constant
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    ema_decay: float = 0.999  # with warm-up min(decay, (1 + k) / (10 + k))
    loss: str = "dsm"  # "dsm" (dsm_loss) or "fm" (flow_matching_loss)
    weighting: str = "sigma2"  # dsm only
    coupling: str = "independent"  # fm only: "independent", "ot" or "pairs" (Trainer(noise=...))
    time_sampling: str = "uniform"
    eps: float = 1e-5
    p_uncond: float = 0.0  # probability of replacing a label by the null label (CFG training)
    seed: int = 0
    bf16: bool = False  # bfloat16 autocast of the forward pass (CUDA only)
    # torch.compile the model's forward (and so its backward): False, True ("default") or a mode
    # in scoresde.compile.COMPILE_MODES; the CUDA-graph modes need a CUDA device.
    compile: bool | str = False
    cuda_graph: bool = False  # forward + backward replayed as CUDA graphs (CUDA only; see Trainer)
    log_every: int = 100
    ckpt_every: int = 0  # 0: only when asked
    sample_every: int = 0  # 0: never

    def __post_init__(self):
        for name, minimum in (
            ("batch_size", 1),
            ("warmup", 0),
            ("decay_steps", 0),
            ("seed", 0),
            ("log_every", 1),
            ("ckpt_every", 0),
            ("sample_every", 0),
        ):
            check_config_int(name, getattr(self, name), minimum)
        check_config_real("lr", self.lr, 0, math.inf, "(0, inf)")
        check_config_real("grad_clip", self.grad_clip, 0, math.inf, "[0, inf) (0 disables)", True)
        check_config_real("ema_decay", self.ema_decay, 0, 1, "[0, 1)", True)
        check_config_real("eps", self.eps, 0, 1, "(0, 1)")
        check_config_real("p_uncond", self.p_uncond, 0, 1, "[0, 1)", True)
        check_choice("loss", self.loss, LOSSES)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        check_choice("coupling", self.coupling, COUPLINGS)
        if self.coupling != "independent" and self.loss != "fm":
            raise ValueError(f'coupling {self.coupling!r} needs loss="fm", got {self.loss!r}')
        check_choice("time_sampling", self.time_sampling, TIME_SAMPLING)
        for name in ("bf16", "cuda_graph"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_compile(self.compile)
        if self.cuda_graph and self.compile == "max-autotune-no-cudagraphs":
            raise ValueError(
                "cuda_graph=True graphs through torch.compile; compile mode "
                "'max-autotune-no-cudagraphs' turns that off: choose one"
            )
        if self.decay_steps and not self.decay_steps > self.warmup:
            raise ValueError(
                f"decay_steps must exceed warmup ({self.warmup}) or be 0, got {self.decay_steps}"
            )

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based): linear warm-up, then constant or a cosine
        decay to 0 at ``decay_steps`` (Loshchilov & Hutter 2017, without restarts)."""
        lr = self.lr * min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else self.lr
        if self.decay_steps:
            progress = min(1.0, max(0.0, (step - self.warmup) / (self.decay_steps - self.warmup)))
            lr *= 0.5 * (1 + math.cos(math.pi * progress))
        return lr


def train_config_from(meta: dict) -> TrainConfig:
    """The ``TrainConfig`` a checkpoint was trained with (its JSON ``meta["train"]``), to resume
    a run in Python with the same settings; keys this version does not know are ignored."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in meta["train"].items() if k in names})
