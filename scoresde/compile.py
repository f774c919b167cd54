"""Opt-in speed for the score network: ``torch.compile`` and CUDA-graph capture of its calls.

Both wrap a callable ``fn(x, t, ...)`` without owning its weights: the module keeps its own
``state_dict`` (no ``_orig_mod.`` prefix reaches a checkpoint) and its parameters stay shared, so
training, EMA and saving see the same tensors with or without the wrapper. The sampling loops and
the training step are already free of host syncs; what is left to save on a GPU is the launch
cost of the network's many small kernels (``docs/benchmarks.md``, "GPU").

- ``compile_fn(fn, mode)``: ``torch.compile`` (TorchInductor; Ansel et al. 2024, "PyTorch 2").
  Fuses elementwise work into fewer kernels; it works on CPU too (C++/OpenMP kernels, needs a
  C++ compiler). Results agree with eager to float rounding, not bit for bit: fusion changes the
  order of floating-point operations.
- ``CUDAGraphScore(fn)``: the network call captured once per input shape as a CUDA graph and
  replayed at every later call (one launch instead of hundreds). The same kernels run on the
  same memory, so replays equal eager calls bit for bit where the kernels are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

#: ``torch.compile`` modes accepted by ``sample(compile=...)``, ``TrainConfig(compile=...)`` and
#: the CLI's ``--compile`` (``True`` means ``"default"``). "reduce-overhead" adds CUDA graphs and
#: needs a CUDA device; "max-autotune" also benchmarks kernel choices while compiling.
COMPILE_MODES: tuple[str, ...] = (
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
)
#: Modes that capture CUDA graphs (refused off CUDA rather than silently run without them).
GRAPH_MODES: tuple[str, ...] = ("reduce-overhead", "max-autotune")


def check_compile(compile: bool | str) -> str | None:
    """The ``torch.compile`` mode of a ``compile=`` option: None (off) for False, "default" for
    True, a name in ``COMPILE_MODES`` as given; anything else is a ValueError listing them."""
    if compile is False:
        return None
    if compile is True:
        return "default"
    if isinstance(compile, str) and compile in COMPILE_MODES:
        return compile
    raise ValueError(f"compile must be True, False or a mode in {COMPILE_MODES}, got {compile!r}")


def check_cuda_graph(cuda_graph: bool, device: torch.device | str | None, what: str) -> bool:
    """``cuda_graph`` as a bool; True on a non-CUDA device is a ValueError (no silent fallback)."""
    if not isinstance(cuda_graph, bool):
        raise ValueError(f"cuda_graph must be True or False, got {cuda_graph!r}")
    if cuda_graph and torch.device(device or "cpu").type != "cuda":
        raise ValueError(
            f"cuda_graph=True captures {what} as a CUDA graph and needs a CUDA device, got "
            f"device {str(device or 'cpu')!r}; leave cuda_graph off there (compile= works on CPU)"
        )
    return cuda_graph


def compile_fn(fn: Callable[..., Any], mode: str, device: torch.device | str | None) -> Any:
    """``torch.compile(fn, mode=mode)``, checked: ``mode`` in ``COMPILE_MODES``, the CUDA-graph
    modes on a CUDA ``device`` only, and torch.compile supported by this Python and torch (else a
    RuntimeError saying so). ``fn`` (a module or any callable) is wrapped, not changed."""
    mode = check_compile(mode) or "default"
    dev = torch.device(device or "cpu")
    if mode in GRAPH_MODES and dev.type != "cuda":
        raise ValueError(
            f"compile mode {mode!r} captures CUDA graphs and needs a CUDA device, got device "
            f"{str(dev)!r}; use 'default' or 'max-autotune-no-cudagraphs' there"
        )
    from torch import _dynamo

    if not _dynamo.is_dynamo_supported():
        raise RuntimeError(
            f"torch.compile is not supported by this Python/torch (torch {torch.__version__}); "
            "run without compile"
        )
    return torch.compile(fn, mode=mode)


class CUDAGraphScore:
    """``fn(x, t)`` replayed from a CUDA graph captured once per (shape, dtype, grad mode).

    The first call with a new key warms ``fn`` up on a side stream (three calls, as the CUDA-graph
    notes of the PyTorch docs ask, so that lazy initialisation is not captured), captures one call
    on static input buffers, and every call copies x and t into those buffers, replays the graph
    and returns a copy of the static output (solvers keep earlier outputs, e.g. multistep
    history, which the next replay would overwrite). ``fn`` must not sync with the host or draw
    random numbers; NFE is counted by the caller (``CountingScore``), so warm-up calls are not.
    The graph reads the weights' memory as it was at capture: updates in place (an optimiser
    step, ``load_state_dict``) are seen, but parameters replaced by new tensors (``.to()`` to
    another device or dtype, reassigning them) are not: make a new ``CUDAGraphScore`` then.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]] = {}

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if not x.is_cuda:
            raise ValueError(f"CUDAGraphScore needs CUDA tensors, got x on {x.device}")
        if x.requires_grad and torch.is_grad_enabled():
            # The replay reads a copy of x: its output would carry no gradient back to x.
            raise ValueError(
                "CUDAGraphScore cannot be differentiated through (x requires grad); call it "
                "under torch.no_grad() or leave cuda_graph off"
            )
        key = (tuple(x.shape), x.dtype, tuple(t.shape), t.dtype, x.device, torch.is_grad_enabled())
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, t)
        graph, static_x, static_t, static_out = self.graphs[key]
        static_x.copy_(x)
        static_t.copy_(t)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: Tensor, t: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]:
        static_x, static_t = x.clone(), t.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.fn(static_x, static_t)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(x.device), torch.cuda.graph(graph):
            static_out = self.fn(static_x, static_t)
        return graph, static_x, static_t, static_out
