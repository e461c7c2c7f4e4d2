"""CUDA graphs for the one-point grid loop: the objective's loss recorded once, replayed at every point.

A small model's eager forward on a GPU is bound by the host: an eager evaluation of GPT-2 small (124M
parameters, 16 × 128 tokens, bf16, H100, 2026-11-22) takes 5.8 ms, the replay of its recording 3.2 ms (`benchmarks/
plane_setup.py --points-per-forward 1`). A CUDA graph records the kernel launches once and replays them with
one call. The grid loop writes every point's weights in place (`engine.WeightEditor`), into
the same memory the graph reads, and the evaluation batches are fixed tensors, so one recording serves the
whole grid: at each point the weights are set, the graph is replayed and its loss copied out.

A recording is only attempted where one CUDA device holds every parameter and buffer. An evaluation that
syncs with the host while it is recorded (it reads a value back to decide what to do, which a replay would
not redo) makes the recording fail; the loop then evaluates eagerly and logs why. The values are the same
either way.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import redact
from ..objectives.base import LossTensor, supports
from .policy import POLICY, evaluation_flop

logger = logging.getLogger(__name__)


class GraphedLoss:
    """`objective.loss_tensor(model)` as a CUDA graph: calling it replays the recording at the model's current
    weights and returns the loss as a fresh float64 tensor on the device (not yet read by the host).

    Build it with `capture_loss`, which returns `None` instead of raising where a graph cannot be recorded.

    Args:
        model: the model, evaluated as it stands at every call (in eval and inference mode, as the grid loop
            runs it).
        objective: an objective with `loss_tensor(model)`, e.g. `CausalLMObjective`.

    Example:
    ```python
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from hf_landscape import CausalLMObjective
    >>> from hf_landscape.engine.graphs import capture_loss
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)).eval()
    >>> objective = CausalLMObjective({"input_ids": [[1, 2, 3, 4, 5]]})
    >>> objective.bind(model)
    >>> with torch.inference_mode():
    ...     graphed = capture_loss(model, objective)  # on the CPU there is nothing to record
    >>> graphed is None
    True

    ```
    """

    def __init__(self, model: torch.nn.Module, objective: Any) -> None:
        device = _single_cuda_device(model)
        if device is None:
            raise ValueError("every parameter and buffer must be on one CUDA device")
        self.device = device
        # The recording runs on a stream of its own (one per device, reused: cuBLAS keeps a workspace per
        # stream), so a failed recording leaves nothing behind on the streams the grid uses.
        self.stream = _side_stream(device)
        self.stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(self.stream):
            objective.loss_tensor(model)  # lazy initializations (cuBLAS handles, workspaces) happen here
        torch.cuda.current_stream(device).wait_stream(self.stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
            self.output: torch.Tensor = objective.loss_tensor(model)

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self.output.clone()  # the next replay overwrites `output`

    def close(self) -> None:
        """Free the recording and the memory it holds (its own pool, the size of one evaluation's activations),
        once the replays already queued have run."""
        torch.cuda.current_stream(self.device).synchronize()
        self.graph.reset()


def capture_loss(model: torch.nn.Module, objective: Any) -> GraphedLoss | None:
    """A `GraphedLoss` for `model` and `objective`, or `None` (logged) where one cannot be recorded: not on a
    single CUDA device, an objective without `loss_tensor`, a model in training mode, or an evaluation that
    syncs with the host."""
    if not supports(objective, LossTensor):
        return None
    if _single_cuda_device(model) is None:
        return None
    if model.training:  # dropout draws new numbers at every eager call; the grid loop evaluates in eval mode
        logger.info("evaluating without CUDA graphs: %s is in training mode", type(model).__name__)
        return None
    if evaluation_flop(model, objective) >= POLICY.graphs_max_flop:
        return None  # the GPU's time per evaluation hides the launches already: a recording would only cost
    try:
        return GraphedLoss(model, objective)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the recording (out of memory too): evaluate eagerly
        if isinstance(err, torch.OutOfMemoryError):
            torch.cuda.empty_cache()  # the recording's pool is gone with it
        logger.warning(
            "evaluating without CUDA graphs: recording %s's evaluation failed (%s: %s)",
            type(model).__name__,
            type(err).__name__,
            redact(str(err).splitlines()[0] if str(err) else ""),
        )
        logger.debug("where the recording failed", exc_info=True)
        return None


_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    stream = _STREAMS.get(device)
    if stream is None:
        stream = _STREAMS[device] = torch.cuda.Stream(device)
    return stream


def _single_device(model: torch.nn.Module) -> torch.device | None:
    """The one device holding every parameter and buffer of `model`, or None when there are several."""
    devices = {t.device for t in model.parameters()} | {t.device for t in model.buffers()}
    return next(iter(devices)) if len(devices) == 1 else None


def _single_cuda_device(model: torch.nn.Module) -> torch.device | None:
    """The CUDA device holding every parameter and buffer of `model`, or None."""
    device = _single_device(model)
    return device if device is not None and device.type == "cuda" else None
