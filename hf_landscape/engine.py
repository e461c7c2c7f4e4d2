"""The grid loop: set a point's weights in place, evaluate, store; restore the weights at the end.

No model is ever copied. Selected parameters are saved once; every point is then set *from the
saved original* with fused `torch._foreach_*` ops (θ = θ₀ + α·δ + β·η, or lerp(θ₀, θ₁, α) for
interpolation), never accumulated from the previous point, so a point's value does not depend on
the path through the grid. The original weights are copied back, bit for bit, when the loop ends,
raises, or is interrupted (`finally`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from .attention import stacked_attention
from .checkpoint import GridCheckpoint
from .errors import redact
from .graphs import capture_loss, evaluation_flop
from .objectives.base import (
    COMPILING,
    Evaluation,
    LossTensor,
    Objective,
    StackedEvaluation,
    eval_mode,
    evaluate,
    supports,
)

logger = logging.getLogger(__name__)


# Keep a second copy of the selected weights ("row base", below) only when it is this small.
ROW_CACHE_MAX_BYTES = 2 * 2**30


class WeightEditor:
    """Sets the selected parameters of a model to points of a grid, and back.

    A point is always computed the same way, from the saved original: θ = (θ₀ + c₁·d₁ + ... + cₙ·dₙ) + c₀·d₀,
    the later axes first. On a plane walked row by row the bracket (the "row base") is the same for a whole
    row, so when the weights are small enough (`ROW_CACHE_MAX_BYTES`) it is kept and each point costs one
    fused pass, `torch.add(base, d₀, alpha=c₀, out=θ)`, instead of a copy and two adds; the arithmetic, and so
    every bit of the result, is the same either way.

    Args:
        params: name -> parameter of the model; each is saved (cloned) once on construction.
    """

    def __init__(self, params: dict[str, torch.nn.Parameter]) -> None:
        self.names = list(params)
        self.params = [p.data for p in params.values()]
        self.originals = [p.detach().clone() for p in self.params]
        nbytes = sum(p.numel() * p.element_size() for p in self.params)
        self._row: list[torch.Tensor] | None = None
        self._row_key: tuple[float, ...] | None = None
        self._row_allowed = nbytes <= ROW_CACHE_MAX_BYTES

    @torch.no_grad()
    def set_linear(self, coords: Sequence[float], directions: Sequence[list[torch.Tensor]]) -> None:
        """θ = (θ₀ + Σ_{i≥1} cᵢ·dᵢ) + c₀·d₀, recomputed from θ₀ (see the class docstring)."""
        c0, rest = float(coords[0]), tuple(float(c) for c in coords[1:])
        if not any(rest):  # the bracket is θ₀ itself
            base = self.originals
        elif self._row_allowed:
            if self._row_key != rest or self._row is None:
                if self._row is None:
                    self._row = [o.clone() for o in self.originals]
                else:
                    torch._foreach_copy_(self._row, self.originals)
                for c, d in zip(rest, directions[1:]):
                    if c != 0.0:
                        torch._foreach_add_(self._row, d, alpha=c)
                self._row_key = rest
            base = self._row
        else:
            torch._foreach_copy_(self.params, self.originals)
            for c, d in zip(rest, directions[1:]):
                if c != 0.0:
                    torch._foreach_add_(self.params, d, alpha=c)
            if c0 != 0.0:
                torch._foreach_add_(self.params, directions[0], alpha=c0)
            return
        if c0 == 0.0:
            torch._foreach_copy_(self.params, base)
        else:
            for param, b, d0 in zip(self.params, base, directions[0]):
                torch.add(b, d0, alpha=c0, out=param)

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_(self.params, self.originals)


# torch.compile mode of the stacked forward (`StackedPoints(compile=True)`). "reduce-overhead" (CUDA graphs)
# measured the same within the machine's noise (H100, 2026-11-22, `gpu_speed.py --compiled-modes default,reduce-overhead`: (a)
# bf16 1730 vs 1684 points/s, (b) 175 vs 187) and copies the stacked weights into its static inputs per call.
STACKED_COMPILE_MODE = "default"

# Forwards (points, or chunks of stacked points) whose losses the grid loop reads in one host sync on a GPU (`run_grid`).
DEFERRED_POINTS = 32

# Merging W + ΔW costs more than its bytes say (a K = 2r product writing a weight-sized output runs below the
# copy bandwidth): on an H100 (2026-11-22, `benchmarks/llm_scale.py --lora-paths merged,fused`, 32 x 1024 tokens) merging
# won where the fused product moved 3.5-20x its bytes (TinyLlama-1.1B, 8192 tokens per forward: grid ×1.069
# against ×1.121 fused) and lost where it moved 1.1-3x (Llama-3-8B, 4096 tokens: ×1.113 against ×1.073).
MERGE_MIN_RATIO = 3.0


class LowRankEditor:
    """Applies low-rank directions as a forward path: y = W·x + Σᵢ cᵢ·(Bᵢ Aᵢ)·x, W untouched.

    Each targeted module gets Σᵢ cᵢ·(x Lᵢ) Rᵢ added to its output, where (L, R) = (Aᵀ, Bᵀ) for `nn.Linear`
    and (B, A) for GPT-2's transposed Conv1D, as a LoRA adapter would (Hu et al. 2021). The axes are fused
    into one rank-(r·axes) product, [L₁ L₂] then [c₁R₁; c₂R₂], in the module's own dtype and on its own
    device, so models loaded in bf16 or with `device_map` stay exactly as they are. Setting a point only
    rescales the small right factors.

    Two ways to add it, with the same value:

    * fused (a module of exactly `torch.nn.Linear` or transformers' `Conv1D`, with no forward of its own
      on the instance and no accelerate hook): the module's `forward` is replaced, on the instance, for the
      duration, by one that writes the low-rank term first, C = (x L) R (+ bias), and then runs the base
      product into it, `C.addmm_(x, Wᵀ)`: the GEMM reads C in its epilogue while it is compute-bound, so
      the output is written once more instead of read and written once more. The instance attribute is
      deleted again on exit.
    * merged (the same modules as fused, where it pays): the replaced forward writes W + (L R)ᵀ (the
      explicitly merged weight, rounded once to W's dtype) into a scratch buffer the size of the largest
      targeted weight, shared by all modules, and runs the module's product with it. W is never written;
      memory grows by one weight, not by the model. Its cost is passes over each weight per forward instead
      of a pass over each output, so each call takes it only where the fused product moves `MERGE_MIN_RATIO`
      times the bytes (many tokens per forward, `_merging_pays`) and the fused product elsewhere. Falls back
      to fused when autograd records the forward (the scratch is reused). `LowRankEditor.merged_linear =
      False` turns it off; `benchmarks/llm_scale.py --lora-paths merged,fused,hook` compares them.
    * hook (any other module): a forward hook adds (x L) R to the output in place, `output.addmm_(xL, R)`.

    At the centre (every coordinate zero) every path runs the module's own forward untouched, so the value is the
    plain forward's, bit for bit. Modules that read the same input (q/k/v, gate/up) share one product: the
    first forward records which modules see the same tensor, later ones compute x·[L_q L_k L_v] once and
    slice it (checked by identity at every call, so a wrong guess only costs time, never correctness).
    """

    # Benchmarks set this to False to time the forward-hook path on every module.
    fused_linear: bool = True
    # Replaced forwards multiply by the merged weight W + ΔW (in a shared scratch buffer) where that pays.
    merged_linear: bool = True

    def __init__(self, model: torch.nn.Module, directions: Sequence[Any]) -> None:
        self.handles: list[Any] = []
        self.patched: list[tuple[torch.nn.Module, Callable[..., Any]]] = []
        self.slots: list[dict[str, Any]] = []
        self._trace: list[tuple[int, int]] | None = []  # (slot, id of its input) during the first forward
        self._shared: tuple[Any, torch.Tensor] | None = None  # (input, x·[L...]) of the current group
        self._axes = 0
        # per device and dtype: (flat buffer of the right factors, the unscaled factors, block lengths, slots, opmath)
        self._flat: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.dtype]] = []
        # merged path: per (device, dtype), one buffer the size of the largest replaced weight
        self._scratch: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._scratch_numel: dict[tuple[torch.device, torch.dtype], int] = {}  # the largest targeted weight
        # A compiled model (probe's `compile=True`, `Module.compile`) keeps the hook path everywhere.
        fuse = self.fused_linear and not (
            "forward" in model.__dict__
            or any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())
        )
        try:
            names = list(dict.fromkeys(n for d in directions for n in d.factors))
            for name in names:
                module = model.get_submodule(name.rpartition(".")[0])
                transposed = self._is_conv1d(module)
                lefts, rights = [], []
                for d in directions:
                    if name in d.factors:
                        b, a = d.factors[name]
                        left, right = (b, a) if transposed else (a.T, b.T)
                    else:  # this axis leaves the weight alone: a zero block keeps shapes fixed
                        ref = next(iter(x.factors[name] for x in directions if name in x.factors))
                        left, right = (
                            (torch.zeros_like(ref[0]), torch.zeros_like(ref[1]))
                            if transposed
                            else (
                                torch.zeros_like(ref[1].T),
                                torch.zeros_like(ref[0].T),
                            )
                        )
                    lefts.append(left)
                    rights.append(right)
                slot: dict[str, Any] = {
                    "left": torch.cat(lefts, dim=1).contiguous(),
                    "rights": rights,
                    "right": None,
                    "index": len(self.slots),
                }
                self.slots.append(slot)
                if fuse and self._fusable(module):
                    if self.merged_linear:  # the scratch itself is allocated at the first merge (`_merged_buffer`)
                        w = cast(torch.Tensor, module.weight)
                        key = (w.device, w.dtype)
                        self._scratch_numel[key] = max(self._scratch_numel.get(key, 0), w.numel())
                    forward = self._fused_forward(module, slot, transposed)
                    module.forward = forward  # type: ignore[method-assign]
                    self.patched.append((module, forward))
                else:
                    self.handles.append(module.register_forward_hook(self._hook(slot)))
            # Every slot's right factor [c₁R₁; c₂R₂] is a view of one flat buffer (per device and dtype), rewritten
            # at every point by a handful of launches for all modules at once: buffer = factors · (each block's
            # cᵢ, expanded), computed in float32 (float64 for float64) and rounded once, the bits of `cᵢ * Rᵢ`.
            # Normal tensors, so the grid loop may rewrite them inside inference mode.
            self._axes = len(directions)
            by_kind: dict[tuple[torch.device, torch.dtype], list[dict[str, Any]]] = {}
            for slot in self.slots:
                by_kind.setdefault((slot["rights"][0].device, slot["rights"][0].dtype), []).append(slot)
            with torch.inference_mode(False):
                for (device, dtype), slots in by_kind.items():
                    pieces = [r.to(dtype).reshape(-1) for slot in slots for r in slot["rights"]]
                    factors = torch.cat(pieces)
                    buffer = torch.empty_like(factors)
                    offset = 0
                    for slot in slots:
                        rows, cols = sum(r.shape[0] for r in slot["rights"]), slot["rights"][0].shape[1]
                        slot["buffer"] = buffer[offset : offset + rows * cols].view(rows, cols)
                        offset += rows * cols
                    lengths = torch.tensor([p.numel() for p in pieces], device=device)
                    opmath = torch.float64 if dtype == torch.float64 else torch.float32
                    self._flat.append((buffer, factors, lengths, len(slots), opmath))
        except BaseException:
            self.remove()
            raise

    @staticmethod
    def _is_conv1d(module: torch.nn.Module) -> bool:
        return type(module).__name__ == "Conv1D" and hasattr(module, "nf")

    @staticmethod
    def _fusable(module: torch.nn.Module) -> bool:
        """Exactly `nn.Linear` or transformers' `Conv1D` (no subclass), plain parameters, no instance forward
        and no accelerate hook: the modules whose forward the fused path may stand in for."""
        cls = type(module)
        if not (
            cls is torch.nn.Linear or (cls.__name__ == "Conv1D" and cls.__module__ == "transformers.pytorch_utils")
        ):
            return False
        if "forward" in module.__dict__ or hasattr(module, "_hf_hook") or hasattr(module, "_old_forward"):
            return False
        bias = getattr(module, "bias", None)
        return type(module.weight) is torch.nn.Parameter and (bias is None or type(bias) is torch.nn.Parameter)

    def _low(self, slot: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        """x·L of this slot as a (tokens × rank) matrix, sliced from the group's shared product when it can."""
        if self._trace is not None:
            self._learn(slot["index"], x)
        left = slot["left"]
        group = slot.get("group")
        if group is not None:
            if slot is group["first"]:
                x2 = (
                    x.to(device=left.device, dtype=left.dtype)
                    if x.device != left.device or x.dtype != left.dtype
                    else x
                )
                self._shared = (x, x2.reshape(-1, left.shape[0]) @ group["left"])
            shared = self._shared
            if shared is not None and shared[0] is x:
                return shared[1][:, slot["cols"]]
        if x.device != left.device or x.dtype != left.dtype:
            x = x.to(device=left.device, dtype=left.dtype)
        return x.reshape(-1, left.shape[0]) @ left

    def _add(self, slot: dict[str, Any], x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """output + (x L) R: in place when the output allows it."""
        right = slot["right"]
        xl = self._low(slot, x)
        if output.device == right.device and output.dtype == right.dtype and output.is_contiguous():
            output.view(-1, right.shape[1]).addmm_(xl, right)
            return output
        return output + (xl @ right).view(output.shape).to(device=output.device, dtype=output.dtype)

    def _hook(self, slot: dict[str, Any]) -> Callable[..., Any]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            if slot["right"] is None:  # the centre: nothing to add
                return None
            return self._add(slot, args[0], output)

        return hook

    def _fused_forward(self, module: torch.nn.Module, slot: dict[str, Any], transposed: bool) -> Callable[..., Any]:
        own = module.forward  # the class's forward, bound (the instance had none of its own)

        def forward(*args: Any, **kwargs: Any) -> Any:
            right = slot["right"]
            if right is None:  # the centre, or the editor is gone: the module's own forward, untouched
                return own(*args, **kwargs)
            if kwargs or len(args) != 1:
                x = args[0] if args else next(iter(kwargs.values()))
                return self._add(slot, x, own(*args, **kwargs))
            x = args[0]
            weight = cast(torch.Tensor, module.weight)
            bias = cast("torch.Tensor | None", module.bias)
            if (
                not isinstance(x, torch.Tensor)
                or x.dtype != right.dtype
                or weight.dtype != right.dtype
                or (bias is not None and bias.dtype != right.dtype)
                or x.device != right.device
                or x.dim() == 0
                or torch.is_autocast_enabled(x.device.type)
            ):
                return self._add(slot, x, own(x))
            if (
                self._scratch_numel
                and self._merging_pays(x, weight, slot)
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            ):
                # W + ΔW into the shared scratch: ΔW = L R for Conv1D (in × out), (L R)ᵀ = Rᵀ Lᵀ for Linear.
                merged = self._merged_buffer(weight)
                if transposed:
                    torch.addmm(weight, slot["left"], right, out=merged)
                    x2 = x.reshape(-1, x.shape[-1])
                    y = torch.mm(x2, merged) if bias is None else torch.addmm(bias, x2, merged)
                    return y.view(*x.shape[:-1], merged.shape[1])
                torch.addmm(weight, right.t(), slot["left"].t(), out=merged)
                return torch.nn.functional.linear(x, merged, bias)
            xl = self._low(slot, x)
            out = torch.mm(xl, right) if bias is None else torch.addmm(bias, xl, right)
            out.addmm_(x.reshape(-1, x.shape[-1]), weight if transposed else weight.t())
            return out.view(*x.shape[:-1], right.shape[1])

        return forward

    def _merged_buffer(self, weight: torch.Tensor) -> torch.Tensor:
        """A view of the shared scratch shaped like `weight`; the scratch (the size of the largest targeted
        weight) is allocated at the first merge, so a model where merging never pays never holds it."""
        key = (weight.device, weight.dtype)
        scratch = self._scratch.get(key)
        if scratch is None:
            scratch = self._scratch[key] = torch.empty(
                self._scratch_numel[key], device=weight.device, dtype=weight.dtype
            )
        return scratch[: weight.numel()].view(weight.shape)

    @staticmethod
    def _merging_pays(x: torch.Tensor, weight: torch.Tensor, slot: dict[str, Any]) -> bool:
        """Merged: one pass over W and one over W + ΔW; fused: one over C, one more in the GEMM's epilogue, and
        x·L reads x. True where the fused product moves over `MERGE_MIN_RATIO` times the merged bytes."""
        tokens = x.numel() // x.shape[-1]
        rows, cols = weight.shape  # (out, in), or (in, out) for Conv1D: the product is the same
        fused = tokens * (2 * slot["right"].shape[1] + slot["left"].shape[0])
        return fused > MERGE_MIN_RATIO * 2 * rows * cols

    def _learn(self, index: int, x: Any) -> None:
        """Record the first forward's calls; once every module has run once, group consecutive modules that
        saw the same input tensor and the same input width."""
        trace = self._trace
        if trace is None:
            return
        if any(i == index for i, _ in trace):  # a module called twice per forward: do not guess
            self._trace = None
            return
        trace.append((index, id(x)))
        if len(trace) < len(self.slots):
            return
        self._trace = None
        runs: list[list[int]] = []
        for k, (i, ident) in enumerate(trace):
            width = self.slots[i]["left"].shape[0]
            if k and ident == trace[k - 1][1] and width == self.slots[runs[-1][0]]["left"].shape[0]:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            if len(run) < 2:
                continue
            lefts = [self.slots[i]["left"] for i in run]
            group = {"first": self.slots[run[0]], "left": torch.cat(lefts, dim=1).contiguous()}
            start = 0
            for i, left in zip(run, lefts):
                self.slots[i]["group"] = group
                self.slots[i]["cols"] = slice(start, start + left.shape[1])
                start += left.shape[1]

    def set_linear(self, coords: Sequence[float]) -> None:
        """Every right factor becomes [c₁R₁; c₂R₂] (the same bits as `torch.cat([c₁ * R₁, c₂ * R₂])`); all
        coordinates zero is the centre, where every module runs its own forward."""
        coords = [float(c) for c in coords]
        if len(coords) != self._axes:
            raise ValueError(f"{self._axes} coordinate(s) expected, got {len(coords)}.")
        if all(c == 0.0 for c in coords):
            for slot in self.slots:
                slot["right"] = None
            return
        with torch.no_grad():
            for buffer, factors, lengths, count, opmath in self._flat:
                coef = torch.tensor(coords, dtype=opmath, device=buffer.device).repeat(count)
                torch.mul(factors, torch.repeat_interleave(coef, lengths, output_size=factors.numel()), out=buffer)
        for slot in self.slots:
            slot["right"] = slot["buffer"]

    def remove(self) -> None:
        """Remove every hook and delete every replaced `forward`, leaving the modules as they were found."""
        for slot in self.slots:
            slot["right"] = None  # a replaced forward that somebody else kept now runs the module's own
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for module, forward in self.patched:
            if module.__dict__.get("forward") is forward:
                del module.forward
        self.patched.clear()
        self._shared = None
        self._scratch.clear()
        self._scratch_numel.clear()


@contextlib.contextmanager
def low_rank_editing(model: torch.nn.Module, directions: Sequence[Any]) -> Iterator[LowRankEditor]:
    """Yield a `LowRankEditor`; on exit, however it comes, remove every hook and replaced `forward` and
    restore every module's train/eval flag."""
    with eval_mode(model):
        editor = LowRankEditor(model, directions)
        try:
            yield editor
        finally:
            editor.remove()


@contextlib.contextmanager
def compiled_forward(model: torch.nn.Module, compiled: Callable[..., Any] | None) -> Iterator[None]:
    """Run `model.forward` as `compiled` (e.g. `torch.compile(..., mode="reduce-overhead")`, CUDA graphs)
    inside the block, and put the model's own forward back on exit. Graphs read the parameters in place,
    so the engine's in-place weight updates reach them."""
    if compiled is None:
        yield
        return
    own = "forward" in model.__dict__
    original = model.__dict__.get("forward")
    model.forward = compiled  # type: ignore[method-assign]
    try:
        with compiling():  # objectives compile their loss as well (`CausalLMObjective`)
            yield
    finally:
        if own:
            model.forward = original  # type: ignore[method-assign,assignment]
        else:
            del model.forward


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Tell objectives that the grid runs compiled, so they compile their loss too (`objectives.base.COMPILING`)."""
    token = COMPILING.set(True)
    try:
        yield
    finally:
        COMPILING.reset(token)


@contextlib.contextmanager
def editing(model: torch.nn.Module, params: dict[str, torch.nn.Parameter]) -> Iterator[WeightEditor]:
    """Yield a `WeightEditor` for `params`; on exit, however it comes, restore the weights and every module's
    train/eval flag."""
    with eval_mode(model):
        editor = WeightEditor(params)
        try:
            yield editor
        finally:
            editor.restore()


class StackedPoints:
    """Evaluates k grid points in one forward: k perturbed copies of the selected weights, stacked on a new
    leading axis, run through `torch.func.vmap` over `torch.func.functional_call`. Matrix products become
    batched ones (one launch for k points instead of k), which is what small models on a GPU need; SDPA
    attention runs as one call over all k points (`attention.stacked_attention`). The model's own weights are
    never written on this path.

    Args:
        model: the model.
        params: name -> parameter of the weights the directions perturb.
        directions: per axis, the direction tensors in the order of `params`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        params: dict[str, torch.nn.Parameter],
        directions: Sequence[list[torch.Tensor]],
        compile: bool = False,
    ) -> None:
        from torch.func import functional_call, vmap

        self.model = model
        self.names = list(params)
        self.originals = [p.detach() for p in params.values()]
        self.directions = directions
        self.one_call_attention = True  # False after it failed once for this model (see `evaluate`)

        def run(stacked: dict[str, torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor:
            one = lambda weights: functional_call(model, weights, (), inputs).logits  # noqa: E731
            return vmap(one, randomness="error")(stacked)

        # compile: one graph for the k points' forward (elementwise ops fused, no per-op dispatch through vmap);
        # recompiled per batch shape and chunk size.
        self._run = torch.compile(run, mode=STACKED_COMPILE_MODE, dynamic=False) if compile else run

    def stacked(self, coords: Sequence[tuple[float, ...]]) -> dict[str, torch.Tensor]:
        """(θ₀ + Σ_{i≥1} cᵢ·dᵢ) + c₀·d₀ for every point, shape (k, *weight.shape).

        Each point's slice is computed with the one-point path's arithmetic (`WeightEditor.set_linear`): θ₀
        copied, then `add(d, alpha=c)` per axis, the later axes first, zero coordinates skipped, so a point's
        weights are bit for bit the ones the one-point path sets (a float32 coefficient and one rounding per
        axis for bf16 weights on a GPU). Multi-tensor (`_foreach`) kernels keep it to a few launches per point.
        """
        out = {name: w.new_empty((len(coords), *w.shape)) for name, w in zip(self.names, self.originals)}
        order = [*range(1, len(self.directions)), 0]  # the later axes first, as `WeightEditor` does
        for j, point in enumerate(coords):
            views = [out[name][j] for name in self.names]
            torch._foreach_copy_(views, self.originals)
            for axis in order:
                c = float(point[axis])
                if c != 0.0:
                    torch._foreach_add_(views, self.directions[axis], alpha=c)
        return out

    def evaluate(self, objective: Objective, coords: Sequence[tuple[float, ...]]) -> list[Evaluation]:
        """The evaluations at `coords`, read by the host (one sync)."""
        return self._points(objective.evaluate_points, coords)  # type: ignore[attr-defined]

    def loss_tensor(self, objective: Objective, coords: Sequence[tuple[float, ...]]) -> torch.Tensor:
        """The losses at `coords` as a float64 tensor on the device, not yet read by the host (`run_grid` reads
        many chunks in one sync, so the host builds the next chunk while the GPU computes this one)."""
        return self._points(objective.loss_points, coords)  # type: ignore[attr-defined]

    def _points(self, evaluate_points: Callable[..., Any], coords: Sequence[tuple[float, ...]]) -> Any:
        stacked = self.stacked(coords)
        model = self.model

        def forward(inputs: dict[str, Any]) -> torch.Tensor:
            return self._run(stacked, inputs)

        # SDPA has no vmap batching rule (vmap would loop over the k points): run it as one call on k·B sequences.
        if self.one_call_attention:
            try:
                with stacked_attention(model):
                    return evaluate_points(model, forward, len(coords))
            except (torch.OutOfMemoryError, KeyboardInterrupt):
                raise
            except Exception as err:  # an architecture that reads its attention setting its own way
                logger.warning(
                    "one-call SDPA over stacked points failed for %s (%s: %s); using vmap's own loop instead",
                    type(model).__name__,
                    type(err).__name__,
                    redact(err),
                )
                self.one_call_attention = False
        return evaluate_points(model, forward, len(coords))


# One evaluation longer than this keeps the GPU busy on its own (launch overhead is amortized): no stacking.
# Measured on an H100 (2026-11-22, benchmarks/gpu_speed.py): GPT-2 small (124M, 16 x 128 tokens) takes 8.7 ms in bf16 and
# 17 ms in fp32 per evaluation, and stacking 8-16 points per forward still gains (0.92-1.02x the floor in bf16
# against 1.29x one point per forward; 1.09-1.15x in fp32 against 1.14x); a 1.1B model takes over 200 ms.
AUTO_BATCH_MAX_SECONDS = 0.025
# Share of the free GPU memory the stacked points may take, at twice their measured cost.
AUTO_BATCH_MEMORY_SHARE = 0.4
# At most this many points per forward: past it the per-forward overhead is already amortized and only memory
# grows (`benchmarks/gpu_speed.py`, workload (a), 4.2M parameters, H100, 2026-11-22: 64 per forward gave 935 points/s in fp32
# and 1415 in bf16; 182 and 166 gave 847 and 1450, holding 16 GB).
AUTO_BATCH_MAX_POINTS = 64


# With CUDA graphs, "auto" stacks points only for evaluations below this many FLOPs (2 · parameters · tokens),
# whose kernels are too small to fill the GPU. Measured on an H100 (2026-11-22, `benchmarks/gpu_speed.py`, 441-point planes,
# set-up included, four runs): GPT-2 small, 16 x 128 tokens (0.51 TFLOP): the replayed one-point evaluation
# 170-209 points/s in bf16 against 151-197 stacked, 59-62 against 57-62 in fp32; workload (a), 4.2M parameters
# (0.017 TFLOP): 1093-1405 against 1094-1807 stacked in bf16, 674-800 against 767-1015 in fp32.
AUTO_STACK_MAX_FLOP = 1e11


def available_memory(device: torch.device) -> int:
    """Bytes PyTorch can still allocate on `device`: the device's free memory plus the blocks its caching
    allocator holds but does not use (which `mem_get_info` counts as taken: after an earlier large grid the
    cache can hold most of the GPU)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def points_per_forward(
    model: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    objective: Objective,
    requested: int | str,
    n: int,
    graphs: bool = False,
) -> int:
    """How many points to evaluate per forward: `requested`, or for `"auto"` 1 on the CPU, for weights over
    `ROW_CACHE_MAX_BYTES`, with `graphs` (the one-point evaluation replayed as a CUDA graph) when one evaluation
    is at least `AUTO_STACK_MAX_FLOP`, or when one evaluation already takes over `AUTO_BATCH_MAX_SECONDS` (the
    GPU is busy with one point), else as many as `AUTO_BATCH_MEMORY_SHARE` of the free GPU memory holds at twice
    the measured cost of one point (weights plus activations of one evaluation), at most `AUTO_BATCH_MAX_POINTS`."""
    from .errors import ConfigError

    if requested == "auto":
        device = next(iter(params.values())).device
        if device.type != "cuda" or not supports(objective, StackedEvaluation):
            return 1
        weights = sum(p.numel() * p.element_size() for p in params.values())
        if weights > ROW_CACHE_MAX_BYTES:  # a model this large keeps the GPU busy with one point
            return 1
        if graphs and evaluation_flop(model, objective) >= AUTO_STACK_MAX_FLOP:
            return 1  # kernels large enough to fill the GPU: replaying the recorded evaluation is faster
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        seconds = float("inf")
        for _ in range(2):  # the first call pays warm-up costs; the faster of two is the steady state
            start = time.perf_counter()
            evaluate(model, objective)
            torch.cuda.synchronize(device)
            seconds = min(seconds, time.perf_counter() - start)
        if seconds > AUTO_BATCH_MAX_SECONDS:  # the GPU is already busy with one point: stacking only costs memory
            return 1
        activations = torch.cuda.max_memory_allocated(device) - before
        free = available_memory(device)
        share = int(AUTO_BATCH_MEMORY_SHARE * free // max(2 * (weights + activations), 1))
        return max(1, min(AUTO_BATCH_MAX_POINTS, n, share))
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise ConfigError(f"`points_per_forward` must be a positive integer or 'auto', got {requested!r}.")
    if requested > 1 and not supports(objective, StackedEvaluation):
        raise ConfigError(
            f"{type(objective).__name__} cannot evaluate several points per forward (it has no `evaluate_points` and "
            "`loss_points`); use points_per_forward=1."
        )
    return min(requested, n)


def run_grid(
    model: torch.nn.Module,
    objective: Objective,
    points: Sequence[tuple[float, ...]],
    set_point: Callable[[tuple[float, ...]], None] | None,
    *,
    progress: bool = True,
    desc: str = "landscape",
    checkpoint: GridCheckpoint | None = None,
    stacked: StackedPoints | None = None,
    chunk: int = 1,
    shard: Any = None,
    graphs: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """Evaluate `objective` at every point; `set_point` puts the weights there (from the original), or
    `stacked` evaluates `chunk` points per forward without touching the weights.

    With `graphs` (one point per forward, loss only, on a GPU), the evaluation is recorded as a CUDA graph at
    the first point and replayed at the others (`graphs.capture_loss`; `set_point` must write the weights in
    place); where it cannot be recorded, every point is evaluated eagerly.

    With a `checkpoint`, its folder is locked for the run, points already saved by an earlier run of the same
    configuration are loaded instead of computed, and progress is saved every `checkpoint.every` points, when the
    loop stops early and when the grid is complete. The partial files stay until the surface is saved into that
    folder (`Surface.save_pretrained`), so no finished point is lost, and running the grid again evaluates
    nothing.

    With `shard` (an `accelerate.PartialState` of several processes, see `distributed_state`), process i
    evaluates the points i, i + world, ... and the values are gathered so that every process returns the
    whole grid (checkpoints are then kept per process).

    Returns:
        values (float64, one per point; NaN/inf kept), metrics (name -> one value per point), wall seconds.
    """
    with checkpoint.locked() if checkpoint is not None else contextlib.nullcontext():
        return _run_points(
            model,
            objective,
            points,
            set_point,
            progress=progress,
            desc=desc,
            checkpoint=checkpoint,
            stacked=stacked,
            chunk=chunk,
            shard=shard,
            graphs=graphs,
        )


def _run_points(
    model: torch.nn.Module,
    objective: Objective,
    points: Sequence[tuple[float, ...]],
    set_point: Callable[[tuple[float, ...]], None] | None,
    *,
    progress: bool,
    desc: str,
    checkpoint: GridCheckpoint | None,
    stacked: StackedPoints | None,
    chunk: int,
    shard: Any,
    graphs: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    n = len(points)
    if checkpoint is not None:
        values, done, metrics = checkpoint.load(n)
    else:
        values, done, metrics = np.full(n, np.nan, dtype=np.float64), np.zeros(n, dtype=bool), {}
    todo = [k for k in range(n) if not done[k]]
    if shard is not None:
        todo = todo[shard.process_index :: shard.num_processes]
    step = chunk if stacked is not None else 1
    if step > 1 and todo:
        # Chunks of (nearly) equal size, so that one shape serves every forward (cuDNN builds an attention plan per
        # shape, torch.compile a graph): 441 points at up to 64 per forward run as 7 x 63, not 6 x 64 + 57.
        chunks = -(-len(todo) // step)
        step = -(-len(todo) // chunks)
    # Loss only (no metrics), on a GPU: each point's (or chunk's) loss stays on the device and the host reads
    # `DEFERRED_POINTS` forwards' losses in one sync, so it queues the next point's weight update (or the next
    # chunk's stacked weights) and forward while the GPU still computes (stream-ordered after the forward that
    # reads them).
    deferred = _defers_reads(model, objective) and (stacked is None or supports(objective, StackedEvaluation))
    pending: list[tuple[list[int], torch.Tensor]] = []  # grid indices, their losses (on the device)
    graphed: Any = None  # the recorded evaluation (`graphs`), made at the first point
    record = graphs and deferred
    start = time.perf_counter()
    bar = tqdm(total=n, initial=n - len(todo), desc=desc, unit="pt", disable=not progress, leave=False)
    unsaved = 0
    synced = True  # whether the last save of the checkpoint (if any) was durable

    def flush() -> int:
        if not pending:
            return 0
        read = torch.cat([t.reshape(-1).to(pending[0][1].device) for _, t in pending]).tolist()
        keys = [k for ks, _ in pending for k in ks]
        for k, value in zip(keys, read):
            values[k] = value
            done[k] = True
        pending.clear()
        bar.update(len(keys))
        return len(keys)

    def queued() -> int:
        return sum(len(ks) for ks, _ in pending)

    try:
        for first in range(0, len(todo), step):
            ks = todo[first : first + step]
            with torch.inference_mode():
                if stacked is not None and deferred:
                    pending.append((ks, stacked.loss_tensor(objective, [points[k] for k in ks])))
                    if len(pending) >= DEFERRED_POINTS:
                        unsaved += flush()
                    results = []
                elif stacked is not None:
                    results = stacked.evaluate(objective, [points[k] for k in ks])
                else:
                    set_point(points[ks[0]])  # type: ignore[misc]
                    if record:
                        graphed, record = capture_loss(model, objective), False
                    if deferred:
                        loss = graphed() if graphed is not None else objective.loss_tensor(model)  # type: ignore[attr-defined]
                        pending.append((ks, loss))
                        if len(pending) >= DEFERRED_POINTS:
                            unsaved += flush()
                        results = []
                    else:
                        results = [objective.evaluate(model)]
            for k, result in zip(ks, results):
                values[k] = result.loss
                for name, value in result.metrics.items():
                    metrics.setdefault(name, np.full(n, np.nan, dtype=np.float64))[k] = value
                done[k] = True
            if results:
                bar.update(len(ks))
                unsaved += len(ks)
            if checkpoint is not None and unsaved + queued() >= checkpoint.every:
                unsaved += flush()
                checkpoint.save(values, done, metrics, durable=False)
                unsaved, synced = 0, False
        unsaved += flush()
    except BaseException:
        try:
            unsaved += flush()  # the points already queued were computed at their own weights: keep them
        except Exception as err:  # e.g. the device itself failed: those points are lost, the rest is kept
            logger.error("could not read the last %d queued points while stopping: %s", len(pending), redact(err))
        if checkpoint is not None and (unsaved or not synced):
            try:
                checkpoint.save(values, done, metrics)
            except Exception as err:  # keep the original error; the earlier checkpoint is intact
                logger.error("could not save the partial grid while stopping: %s", redact(err))
        raise
    finally:
        bar.close()
        if graphed is not None:
            graphed.close()
    if checkpoint is not None and (unsaved or not synced):
        checkpoint.save(values, done, metrics)  # the whole grid, durably: kept until the surface is saved there
    if shard is not None:
        values, metrics = _gather(shard, values, done, metrics)
    wall = time.perf_counter() - start
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        logger.warning("%d of %d points gave a non-finite loss (kept as NaN/inf in the surface).", bad, n)
    logger.info("evaluated %d points in %.1f s (%.3f s/point)", len(todo), wall, wall / max(len(todo), 1))
    return values, metrics, wall


def _defers_reads(model: torch.nn.Module, objective: Objective) -> bool:
    """Deferred loss reads pay on a GPU (the host runs ahead); on the CPU every op already waits."""
    first = next(model.parameters(), None)
    return supports(objective, LossTensor) and first is not None and first.device.type == "cuda"


def distributed_state() -> Any:
    """The `accelerate.PartialState` when this process was started by `accelerate launch` or `torchrun`
    with more than one process, else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU-only machines, NCCL on GPUs
    return state if state.num_processes > 1 else None


def _gather(
    state: Any, values: np.ndarray, done: np.ndarray, metrics: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Merge the points every process computed, with plain tensor all-gathers (no Python objects are serialized)."""
    import json

    import torch.distributed as dist

    device = state.device
    # Metric names can differ only if a process got no point; agree on the union through padded bytes.
    raw = json.dumps(sorted(metrics)).encode()
    size = torch.tensor([len(raw)], device=device)
    sizes = [torch.zeros_like(size) for _ in range(state.num_processes)]
    dist.all_gather(sizes, size)
    width = int(max(int(t) for t in sizes))
    buf = torch.zeros(width, dtype=torch.uint8, device=device)
    buf[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8, device=device)
    bufs = [torch.zeros_like(buf) for _ in range(state.num_processes)]
    dist.all_gather(bufs, buf)
    names = sorted({n for b, k in zip(bufs, sizes) for n in json.loads(bytes(b[: int(k)].tolist()).decode())})
    n = len(values)
    local = np.stack([values, done.astype(np.float64)] + [metrics.get(m, np.full(n, np.nan)) for m in names])
    mine = torch.from_numpy(local).to(device)
    parts = [torch.empty_like(mine) for _ in range(state.num_processes)]
    dist.all_gather(parts, mine)
    merged_values = values.copy()
    merged = {m: np.full(n, np.nan) for m in names}
    for part in (p.cpu().numpy() for p in parts):
        mask = part[1] == 1.0
        merged_values[mask] = part[0][mask]
        for i, m in enumerate(names):
            merged[m][mask] = part[2 + i][mask]
    return merged_values, merged


# Coordinates are in units of the directions, which are normalized to the weights' own norms: at |α| of a million
# the weights are a million times their size and every loss has overflowed; far larger spans only make NaN.
MAX_ABS_COORDINATE = 1e6
# Grids above this many points are refused before anything is allocated (an 8-byte value, a coordinate tuple and a
# forward pass each): a million points is already days of evaluation for a 100M-parameter model on one GPU.
MAX_GRID_POINTS = 10**6
MAX_POINTS_ENV = "HF_LANDSCAPE_MAX_POINTS"


def max_grid_points() -> int:
    """The largest grid allowed: `MAX_GRID_POINTS`, or the environment variable `HF_LANDSCAPE_MAX_POINTS`."""
    from .errors import ConfigError

    text = os.environ.get(MAX_POINTS_ENV)
    if text is None:
        return MAX_GRID_POINTS
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"The environment variable {MAX_POINTS_ENV} must be a positive integer, got {text!r}.")
    return limit


def check_grid_size(points: int, argument: str) -> None:
    """Refuse a grid of more than `max_grid_points()` points, before anything of it is allocated."""
    from .errors import ConfigError

    limit = max_grid_points()
    if points > limit:
        raise ConfigError(
            f"`{argument}` asks for {points:,} points, more than the limit of {limit:,} (about {points * 200 / 2**30:.3g} "
            f"GiB of grid bookkeeping and {points:,} forward passes); use fewer steps, or raise the limit with the "
            f"environment variable {MAX_POINTS_ENV}={points}."
        )


def grid_axis(steps: int, span: Sequence[float], argument: str) -> np.ndarray:
    """`steps` evenly spaced coordinates over `span`; validates both (before allocating anything)."""
    from .errors import ConfigError

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ConfigError(f"`{argument}` steps must be an integer >= 2, got {steps!r}.")
    check_grid_size(steps, argument)
    try:
        lo, hi = (float(v) for v in span)
    except (TypeError, ValueError):
        raise ConfigError(f"`{argument}` span must be a pair (low, high), got {span!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ConfigError(f"`{argument}` span must be finite with low < high, got {span!r}; e.g. (-1.0, 1.0).")
    if max(abs(lo), abs(hi)) > MAX_ABS_COORDINATE:
        raise ConfigError(
            f"`{argument}` span {(lo, hi)!r} reaches beyond ±{MAX_ABS_COORDINATE:g}: coordinates are in units of the "
            "directions (normalized to the weights' own size), so every point there overflows to NaN or inf; use "
            "a span such as (-1.0, 1.0)."
        )
    axis = np.linspace(lo, hi, steps)
    # Snap values within rounding of 0 to exactly 0, so a grid through the centre evaluates θ₀ itself.
    axis[np.abs(axis) < 1e-12 * max(abs(lo), abs(hi))] = 0.0
    return axis
