"""Low-rank directions applied as a forward path, W untouched: `LowRankEditor` and `low_rank_editing`.

y = W·x + Σᵢ cᵢ·(Bᵢ Aᵢ)·x is added to every targeted module's output, as a LoRA adapter would (Hu et al. 2021), so
a model of billions of parameters is probed without a copy of any weight. What does not live here: drawing the
directions (`directions.low_rank`), the grid loop (`loop`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch

from ..objectives.base import eval_mode
from .policy import POLICY


class _Learned(Exception):
    """Raised out of `LowRankEditor.learn`'s forward once the groups are known: the rest of it is not needed."""


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
      of a pass over each output, so each call takes it only where the fused product moves `POLICY.merge_min_ratio`
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
        # during the first forward: (slot, whether its input is the very tensor the previous call saw)
        self._trace: list[tuple[int, bool]] | None = []
        self._traced_input: Any = None  # the previous call's input, while the first forward runs
        self._stop_when_learned = False  # `learn` is running: stop its forward once the groups are known
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
        x·L reads x. True where the fused product moves over `POLICY.merge_min_ratio` times the merged bytes."""
        tokens = x.numel() // x.shape[-1]
        rows, cols = weight.shape  # (out, in), or (in, out) for Conv1D: the product is the same
        fused = tokens * (2 * slot["right"].shape[1] + slot["left"].shape[0])
        return fused > POLICY.merge_min_ratio * 2 * rows * cols

    def _learn(self, index: int, x: Any) -> None:
        """Record the first forward's calls; once every module has run once, group consecutive modules that
        saw the same input tensor and the same input width."""
        trace = self._trace
        if trace is None:
            return
        if any(i == index for i, _ in trace):  # a module called twice per forward: do not guess
            self._trace = self._traced_input = None
            return
        # Compared while both are alive: the id of a freed input can be reused by the next one.
        trace.append((index, bool(trace) and self._traced_input is x))
        self._traced_input = x
        if len(trace) < len(self.slots):
            return
        self._trace = self._traced_input = None
        runs: list[list[int]] = []
        for k, (i, same) in enumerate(trace):
            width = self.slots[i]["left"].shape[0]
            if k and same and width == self.slots[runs[-1][0]]["left"].shape[0]:
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
        if self._stop_when_learned:
            raise _Learned

    def learn(self, forward: Callable[[], Any]) -> None:
        """Learn which modules read the same input from `forward()` (one evaluation, stopped as soon as every module
        has run once) before any point is evaluated, so that every point runs the same arithmetic. Without it the
        first point evaluated computes each module's x·L alone and the later ones a group's shared product: values
        that differ in the last bits, so a grid resumed from a checkpoint or a single point would not give the bits
        of an uninterrupted grid. A forward in which the modules do not each run once forms no group."""
        if self._trace is None:
            return
        self.set_linear([1.0] * self._axes)
        self._stop_when_learned = True
        try:
            forward()
        except _Learned:
            pass
        finally:
            self._stop_when_learned = False
            self._trace = self._traced_input = None
            self.set_linear([0.0] * self._axes)

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
        self._shared = self._traced_input = None
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
