"""`LandscapeProbe`: loss, lines, planes and interpolations of any transformers model.

The restore guarantee lives here and in `engine.editing`: every method that moves weights does so
inside `editing(...)`, whose `finally` copies the saved originals back bit for bit, and all checks
on user input run before any weight is touched.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from .checkpoint import GridCheckpoint, tensor_fingerprint
from .directions.base import Direction, check_tensors
from .directions.interpolation import interpolation_target, set_on_path
from .directions.low_rank import LowRankDirection, LowRankDirectionConfig, low_rank_directions
from .directions.random import RandomDirectionConfig, random_directions
from .engine import (
    MAX_ABS_COORDINATE,
    StackedPoints,
    check_grid_size,
    compiled_forward,
    compiling,
    distributed_state,
    editing,
    eval_mode,
    evaluate,
    grid_axis,
    low_rank_editing,
    points_per_forward,
    run_grid,
)
from .errors import ConfigError, DirectionError, ModelError, redact
from .objectives.base import Evaluation, Objective, TokenView, require
from .sharpness import (
    EigenResult,
    SharpnessConfig,
    SharpnessResult,
    TraceResult,
    hessian_eigenvalues,
    hessian_trace,
)
from .sharpness import sharpness as sharpness_measure
from .surface import Surface
from .tokens import TokenLossMap, check_alphas

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES: dict[str | None, torch.dtype | None] = {
    None: None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class LandscapeProbe:
    """Measure the loss landscape of a model around its own weights.

    Args:
        model: any transformers `PreTrainedModel` (for `CausalLMObjective`, one with an LM head).
        objective: what a point's loss is, e.g. a `CausalLMObjective`.
        progress: show a tqdm progress bar on grids.
        provenance: where the model came from (`name_or_path`, `revision`, `commit_sha`); filled in by
            `from_pretrained`, recorded in every surface.
        points_per_forward: grid points evaluated in one forward pass with full-rank directions (`vmap` over
            stacked perturbed weights; values equal the one-point path to float rounding). `"auto"` picks
            from free GPU memory for small evaluations (under `engine.AUTO_STACK_MAX_FLOP` with `cuda_graphs`),
            and 1 otherwise: on the CPU, where a forward is compute-bound anyway, and for larger evaluations on a
            GPU, where replaying the recorded one-point evaluation is faster. If the model cannot run under
            `vmap`, `"auto"` evaluates one point per forward instead (with a warning).
        distributed: shard grid points over the processes of `accelerate launch` / `torchrun` (each process
            holds the model on its own device, `model.to(PartialState().device)`); every process gets the whole
            surface. `None` detects it from the launcher's environment.
        compile: run grids through `torch.compile(model.forward, mode="reduce-overhead")` (CUDA graphs: no
            launch overhead per kernel; worth it for small models on a GPU), one point per forward; with an
            explicit `points_per_forward` above 1, the vmapped forward over the stacked points is compiled
            instead. The causal-LM loss is compiled too. Values agree with eager ones to float rounding.
        cuda_graphs: on a GPU, record the one-point evaluation as a CUDA graph at a grid's first point and replay
            it at the others (the host launches one graph instead of every kernel: small models run at the GPU's
            speed, not the host's). Used where it can be recorded (`hf_landscape.graphs`: one device, an
            evaluation that does not sync with the host, under `graphs.GRAPHS_MAX_FLOP`); elsewhere, and with
            `False`, every point is evaluated eagerly. The values are the same either way, bit for bit. A replay
            runs the recorded kernels only: Python in the forward (forward hooks that collect activations, say)
            runs while recording, not at every point; pass `False` where that matters.
        autocast: `"bfloat16"` or `"float16"` to evaluate every point under `torch.autocast` (mixed precision:
            matrix products in that dtype, the weights and the loss's reduction kept in theirs); `None`
            (default) evaluates in the model's own dtype. Recorded in every surface's metadata.

    Example:
    ```python
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from hf_landscape import CausalLMObjective, LandscapeProbe
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    >>> objective = CausalLMObjective({"input_ids": [[1, 2, 3, 4, 5], [6, 7, 8]]})
    >>> probe = LandscapeProbe(model, objective, progress=False)
    >>> line = probe.line(steps=5, span=(-1, 1), seed=0)
    >>> line.values.shape, line.centre == probe.loss()
    ((5,), True)

    ```
    """

    def __init__(
        self,
        model: Any,
        objective: Objective,
        *,
        progress: bool = True,
        provenance: Mapping[str, Any] | None = None,
        points_per_forward: int | str = "auto",
        distributed: bool | None = None,
        compile: bool = False,
        autocast: str | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        if not _is_supported_model(model):
            raise ModelError(
                f"`model` must be a transformers `PreTrainedModel` or a peft `PeftModel`, got {type(model).__name__}; "
                "load it with `AutoModelForCausalLM.from_pretrained(...)` or use `LandscapeProbe.from_pretrained(name)`."
            )
        if not isinstance(objective, Objective):
            raise ConfigError(
                f"`objective` must be an hf_landscape `Objective` (e.g. `CausalLMObjective(texts, tokenizer)`), "
                f"got {type(objective).__name__}."
            )
        check_materialized(model, "model")
        if not (autocast is None or isinstance(autocast, str)) or autocast not in AUTOCAST_DTYPES:
            raise ConfigError(
                f"`autocast` must be one of {list(AUTOCAST_DTYPES)}, got {autocast!r}; e.g. autocast='bfloat16'."
            )
        _check_autocast(model, autocast)
        objective.bind(model)
        self.model = model
        self.objective = objective
        self.progress = progress
        self.points_per_forward = points_per_forward
        if not isinstance(compile, bool):
            raise ConfigError(f"`compile` must be True or False, got {compile!r}.")
        self.compile = compile
        if not isinstance(cuda_graphs, bool):
            raise ConfigError(f"`cuda_graphs` must be True or False, got {cuda_graphs!r}.")
        self.cuda_graphs = cuda_graphs
        self.autocast = autocast
        autocast_dtype = AUTOCAST_DTYPES[autocast]
        if autocast_dtype is not None:
            objective.expect_dtype(autocast_dtype)  # e.g. the fused loss's set-up for bf16 logits starts now
        self._compiled: Any = None
        if distributed not in (None, True, False):
            raise ConfigError(f"`distributed` must be None (auto), True or False, got {distributed!r}.")
        self._shard = distributed_state() if distributed is not False else None
        if distributed is True and self._shard is None:
            raise ConfigError(
                "`distributed=True` but this process was not started by `accelerate launch` or `torchrun` with "
                "several processes; launch it that way, or leave `distributed` unset."
            )
        self.provenance = dict(provenance or {})
        self.provenance.setdefault("name_or_path", getattr(model, "name_or_path", "") or None)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        objective: Objective,
        revision: str | None = None,
        model_class: Any = None,
        dtype: Any = None,
        device: Any = None,
        trust_remote_code: bool = False,
        token: str | bool | None = None,
        progress: bool = True,
        **model_kwargs: Any,
    ) -> LandscapeProbe:
        """Load a model by Hub name or local path (safetensors only) and wrap it.

        The resolved commit sha is recorded in every surface the probe makes.
        """
        import transformers

        from .hub import load_model

        if model_class is None:
            auto = objective.auto_model_class if isinstance(objective, Objective) else "AutoModelForCausalLM"
            model_class = getattr(transformers, auto)
        model, provenance = load_model(
            name_or_path,
            model_class=model_class,
            revision=revision,
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
            token=token,
            **model_kwargs,
        )
        return cls(model, objective, progress=progress, provenance=provenance)

    # --- single evaluations ----------------------------------------------------------------------

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        """`torch.autocast` to `self.autocast` on the model's device type, or nothing."""
        if self.autocast is None:
            return contextlib.nullcontext()
        device_type = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device_type, dtype=AUTOCAST_DTYPES[self.autocast])

    def loss(self) -> float:
        """The objective at the model's own weights."""
        with self._precision():
            return evaluate(self.model, self.objective).loss

    def evaluate(
        self,
        point: Sequence[float] | None = None,
        directions: Sequence[Direction | LowRankDirection] | None = None,
        *,
        details: bool = True,
    ) -> Evaluation:
        """The objective at θ₀ + Σ pointᵢ·directionsᵢ (θ₀ itself when `point` is None), with per-sequence and
        per-token losses when `details` is True. The weights are restored afterwards."""
        with self._precision():
            return self._evaluate(point, directions, details)

    def _evaluate(
        self,
        point: Sequence[float] | None,
        directions: Sequence[Direction | LowRankDirection] | None,
        details: bool,
    ) -> Evaluation:
        if point is None:
            return evaluate(self.model, self.objective, details=details)
        if directions is None or len(directions) != len(point):
            raise ConfigError(
                f"`point` {tuple(point)!r} needs one direction per coordinate; pass `directions=` of that length."
            )
        try:
            coords = tuple(float(c) for c in point)
        except (TypeError, ValueError):
            raise ConfigError(f"`point` must be a list of numbers, got {point!r}.") from None
        if not all(math.isfinite(c) and abs(c) <= MAX_ABS_COORDINATE for c in coords):
            raise ConfigError(
                f"`point` {coords!r} must be finite and within ±{MAX_ABS_COORDINATE:g} (coordinates are in units of "
                "the directions); e.g. point=(0.5,)."
            )
        if all(isinstance(d, LowRankDirection) for d in directions):
            with low_rank_editing(self.model, list(directions)) as low_rank:
                low_rank.set_linear(coords)
                with torch.inference_mode():
                    return self.objective.evaluate(self.model, details=details)
        params, tensors = self._prepare(list(directions))
        with editing(self.model, params) as editor:
            editor.set_linear(coords, tensors)
            with torch.inference_mode():
                return self.objective.evaluate(self.model, details=details)

    def token_curvature(
        self,
        direction: Any = None,
        *,
        h: float = 0.1,
        seed: int = 0,
        top: int = 20,
        **direction_options: Any,
    ) -> list[dict[str, Any]]:
        """Which tokens make the landscape sharp along a direction: per-token loss, slope and curvature
        from central differences at θ₀ − h·d, θ₀, θ₀ + h·d, the `top` tokens by curvature first.

        Args:
            direction: a direction (default: the seed's first random axis, drawn with `direction_options`).
            h: the finite-difference step, in units of the direction.
            top: how many tokens to return.

        Returns:
            Rows with `example`, `position` (index of the predicted token in its sequence), `token_id`, `token`
            (decoded when the objective has a tokenizer), `loss`, `slope` = dL/dα and `curvature` = d²L/dα².
        """
        if isinstance(h, bool) or not (isinstance(h, (int, float)) and h > 0):
            raise ConfigError(f"`h` must be a positive number, got {h!r}.")
        token_map = self.token_loss_map([-h, h], direction, seed=seed, **direction_options)
        rows: list[dict[str, Any]] = []
        for i, (lm, l0, lp) in enumerate(token_map.losses):
            for j in np.flatnonzero(np.isfinite(l0)):
                rows.append(
                    {
                        "example": i,
                        "position": int(j) + 1,
                        "token_id": token_map.token_ids[i][j],
                        "token": token_map.tokens[i][j] if token_map.tokens is not None else None,
                        "loss": float(l0[j]),
                        "slope": float((lp[j] - lm[j]) / (2 * h)),
                        "curvature": float((lp[j] - 2 * l0[j] + lm[j]) / h**2),
                    }
                )
        rows.sort(key=lambda r: -r["curvature"])
        return rows[:top]

    def token_loss_map(
        self,
        alphas: Sequence[float] = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0),
        direction: Any = None,
        *,
        seed: int = 0,
        **direction_options: Any,
    ) -> TokenLossMap:
        """The loss of every predicted token at points θ₀ + α·d of a line: which tokens' loss rises most as the
        weights move (`.top()`), drawn per example as a heatmap (`.plot(example)`).

        Args:
            alphas: the points (0 is added when missing).
            direction: a direction (default: the seed's first random axis, drawn with `direction_options`, the
                same as `line(seed=seed)`'s).
            seed: the draw of the default direction.

        Example:
        ```python
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from hf_landscape import CausalLMObjective, LandscapeProbe
        >>> _ = torch.manual_seed(0)
        >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
        >>> probe = LandscapeProbe(model, CausalLMObjective({"input_ids": [[1, 2, 3, 4], [5, 6, 7]]}), progress=False)
        >>> token_map = probe.token_loss_map(alphas=[-1, 1])
        >>> token_map.alphas.tolist(), [x.shape for x in token_map.losses]
        ([-1.0, 0.0, 1.0], [(3, 3), (3, 2)])

        ```
        """
        values = check_alphas(alphas)
        require(self.objective, TokenView, "A token loss map")
        if direction is None:
            direction = self.directions(seed, axes=1, **direction_options)[0]
        elif direction_options:
            raise ConfigError(f"Pass either `direction` or direction options {sorted(direction_options)}, not both.")
        dirs = [direction if isinstance(direction, (Direction, LowRankDirection)) else Direction(dict(direction))]
        per_point = []
        for a in values:
            evaluation = self.evaluate((float(a),), dirs, details=True) if a != 0.0 else self.evaluate(details=True)
            if evaluation.token_losses is None:
                raise ConfigError(
                    f"{type(self.objective).__name__} gives no per-token losses; use a causal-LM objective."
                )
            per_point.append(evaluation.token_losses)
        view = cast(TokenView, self.objective)  # checked above
        examples = view.active_examples
        token_ids = [[int(t) for t in ids[1 : 1 + len(per_point[0][i])]] for i, (ids, _) in enumerate(examples)]
        tokenizer = view.tokenizer
        tokens = [[tokenizer.decode([t]) for t in ids] for ids in token_ids] if tokenizer is not None else None
        losses = [np.stack([point[i] for point in per_point]) for i in range(len(per_point[0]))]
        return TokenLossMap(values, losses, token_ids, tokens)

    def directional_derivatives(self, surface: Surface, *, stride: int = 1) -> Surface:
        """Add the gradient projected on the plane's directions at its grid points, dL/dα = ∇L·δ and
        dL/dβ = ∇L·η, as `surface.metrics["dL/dalpha"]` and `["dL/dbeta"]` (NaN between strided points);
        contour plots then draw −∇ as arrows. One forward and backward per point, weights restored after.

        Args:
            surface: a plane made by this probe, with its full-rank `directions` at hand.
            stride: compute every `stride`-th point along each axis.
        """
        from .objectives.loss import loss_terms, require_differentiable

        dirs = surface.directions
        if surface.y is None or not dirs or len(dirs) != 2 or not all(isinstance(d, Direction) for d in dirs):
            raise ConfigError(
                "`surface` must be a plane made here with two full-rank directions (`surface.directions`)."
            )
        if not isinstance(stride, int) or stride < 1:
            raise ConfigError(f"`stride` must be a positive integer, got {stride!r}.")
        require_differentiable(self.objective, "`directional_derivatives`")
        params, tensors = self._prepare(list(dirs))
        shape = surface.values.shape
        da, db = np.full(shape, np.nan), np.full(shape, np.nan)
        flags = {n: p.requires_grad for n, p in params.items()}
        with editing(self.model, params) as editor:
            try:
                for p in params.values():
                    p.requires_grad_(True)
                for j in range(0, shape[0], stride):
                    for i in range(0, shape[1], stride):
                        editor.set_linear((float(surface.x[i]), float(surface.y[j])), tensors)
                        grads = [torch.zeros_like(p) for p in params.values()]
                        for term in loss_terms(self.model, self.objective):
                            for g, gi in zip(
                                grads, torch.autograd.grad(term, list(params.values()), allow_unused=True)
                            ):
                                if gi is not None:
                                    g += gi
                        da[j, i] = sum(float((g.double() * d.double()).sum()) for g, d in zip(grads, tensors[0]))
                        db[j, i] = sum(float((g.double() * d.double()).sum()) for g, d in zip(grads, tensors[1]))
            finally:
                for n, p in params.items():
                    p.requires_grad_(flags[n])
        surface.metrics["dL/dalpha"], surface.metrics["dL/dbeta"] = da, db
        return surface

    # --- directions ------------------------------------------------------------------------------

    def directions(
        self,
        seed: int = 0,
        *,
        axes: int = 2,
        kind: str = "random",
        config: RandomDirectionConfig | LowRankDirectionConfig | None = None,
        **config_kwargs: Any,
    ) -> list[Any]:
        """Draw `axes` directions of `kind`:

        - `"random"`: full-rank normalized Gaussian directions (options: `RandomDirectionConfig`).
        - `"lora"`: low-rank D = B·A directions, never built at full size (options: `LowRankDirectionConfig`:
          `rank`, `target_modules`, `normalization`).
        - `"adapter"`: for a peft `PeftModel`, Gaussian directions over the LoRA adapter weights only,
          filter-normalized to them (options: `adapter_name`, default the active adapter, and `normalization`).
        """
        if kind == "random":
            cfg = _config(RandomDirectionConfig, config, config_kwargs)
            return random_directions(self.model, seed, config=cfg, axes=axes)
        if kind in ("lora", "low_rank"):
            cfg = _config(LowRankDirectionConfig, config, config_kwargs)
            return low_rank_directions(self.model, seed, config=cfg, axes=axes)
        if kind == "adapter":
            adapter = config_kwargs.pop("adapter_name", None)
            pattern = _adapter_pattern(self.model, adapter)
            cfg = _config(RandomDirectionConfig, config, {"include": [pattern], "include_1d": True, **config_kwargs})
            dirs = random_directions(self.model, seed, config=cfg, axes=axes)
            for d in dirs:
                d.config.update(kind="adapter", adapter_name=adapter or _active_adapter(self.model))
            return dirs
        raise ConfigError(
            f"`directions` must be 'random', 'lora' or 'adapter' (or a list of directions), got {kind!r}."
        )

    def _directions_for(self, spec: Any, seed: int, axes: int, config: Any, kwargs: dict[str, Any]) -> list[Any]:
        if spec is None or isinstance(spec, str):
            return self.directions(seed, axes=axes, kind=spec or "random", config=config, **kwargs)
        spec = list(spec)
        if len(spec) != axes:
            raise ConfigError(f"`directions` must hold {axes} direction(s) here, got {len(spec)}.")
        names = ["direction"] if axes == 1 else [f"directions[{k}]" for k in range(axes)]
        return [_as_direction(d, name) for d, name in zip(spec, names)]

    def _prepare(self, directions: list[Any]) -> tuple[dict[str, torch.nn.Parameter], list[list[torch.Tensor]]]:
        """Check user or drawn directions against the model; return the parameters they touch and
        per-axis tensor lists on the parameters' devices and dtypes (zeros where an axis skips a name)."""
        all_params = dict(self.model.named_parameters())
        directions = [_as_direction(d, f"directions[{k}]") for k, d in enumerate(directions)]
        for k, d in enumerate(directions):
            d.check_fits(all_params, argument=f"directions[{k}]")
        names = [n for n in all_params if any(n in d.tensors for d in directions)]
        if not names:
            raise DirectionError("`directions` are empty; they must name at least one parameter.")
        params = {n: all_params[n] for n in names}
        tensors = [
            [
                d.tensors[n].to(params[n].device, params[n].dtype) if n in d.tensors else torch.zeros_like(params[n])
                for n in names
            ]
            for d in directions
        ]
        return params, tensors

    # --- grids -----------------------------------------------------------------------------------

    def line(
        self,
        steps: int = 51,
        span: Sequence[float] = (-1.0, 1.0),
        seed: int | Sequence[int] = 0,
        *,
        direction: Direction | LowRankDirection | Mapping[str, torch.Tensor] | str | None = None,
        config: RandomDirectionConfig | LowRankDirectionConfig | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        **config_kwargs: Any,
    ) -> Surface:
        """Loss along θ₀ + α·δ for `steps` values of α over `span`.

        Args:
            steps: number of points (>= 2).
            span: (low, high) of α.
            seed: draw of the random direction δ (the first axis of `plane` with the same seed); a list of seeds
                gives the mean over draws in `values`, their standard deviation in `spread`.
            direction: `"random"` (default), `"lora"`, `"adapter"` (see `directions`), or a direction to use
                (a `Direction`, `LowRankDirection` or name -> tensor dict).
            config, config_kwargs: the direction kind's config or its fields (`normalization="filter"`, `rank=8`, ...).
            checkpoint_dir: save finished points here (every `checkpoint_every` points and when stopped early);
                calling again with the same configuration and folder resumes, computing only missing points.
        """
        if isinstance(seed, (list, tuple)):
            return self._over_seeds(
                "line",
                seed,
                steps=steps,
                span=span,
                direction=direction,
                config=config,
                checkpoint_dir=checkpoint_dir,
                checkpoint_every=checkpoint_every,
                **config_kwargs,
            )
        x = grid_axis(steps, span, "steps/span")
        spec = direction if direction is None or isinstance(direction, str) else [direction]
        seed = cast(int, seed)  # a list of seeds returned above
        dirs = self._directions_for(spec, seed, 1, config, config_kwargs)
        checkpoint = self._checkpoint(checkpoint_dir, checkpoint_every, "line", [x], dirs)
        values, metrics, wall = self._grid([(a,) for a in x], dirs, desc="line", checkpoint=checkpoint)
        meta = self._metadata("line", dirs, seed, {"steps": [steps], "span": [list(map(float, span))]}, wall)
        return self._kept(Surface(x, values, metrics=metrics, metadata=meta, directions=dirs), checkpoint)

    def plane(
        self,
        steps: int | Sequence[int] = (25, 25),
        span: Sequence[Any] = ((-1.0, 1.0), (-1.0, 1.0)),
        seed: int | Sequence[int] = 0,
        *,
        directions: Sequence[Direction | LowRankDirection | Mapping[str, torch.Tensor]] | str | None = None,
        config: RandomDirectionConfig | LowRankDirectionConfig | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        **config_kwargs: Any,
    ) -> Surface:
        """Loss over θ₀ + α·δ + β·η on a grid; `values[j, i]` is at (x[i], y[j]).

        Args:
            steps: points per axis, an int for both or `(nx, ny)`.
            span: `((x_low, x_high), (y_low, y_high))`, or one `(low, high)` for both.
            seed: draw of the two random directions; a list of seeds gives the mean over draws in `values`,
                their standard deviation in `spread` and each draw's values in `samples`.
            directions: `"random"` (default), `"lora"` (low-rank, for large models) or `"adapter"` (a PeftModel's
                LoRA weights only), see `directions`; or two directions to use.
            config, config_kwargs: the direction kind's config or its fields (`normalization`, `orthogonalize`,
                `rank`, `target_modules`, `adapter_name`, ...).
            checkpoint_dir: save finished points here (every `checkpoint_every` points and when stopped early);
                calling again with the same configuration and folder resumes, computing only missing points.
        """
        if isinstance(seed, (list, tuple)):
            return self._over_seeds(
                "plane",
                seed,
                steps=steps,
                span=span,
                directions=directions,
                config=config,
                checkpoint_dir=checkpoint_dir,
                checkpoint_every=checkpoint_every,
                **config_kwargs,
            )
        nx, ny = _plane_steps(steps)
        span_x, span_y = _plane_span(span)
        x = grid_axis(nx, span_x, "steps/span (x)")
        y = grid_axis(ny, span_y, "steps/span (y)")
        check_grid_size(nx * ny, "steps")
        seed = cast(int, seed)  # a list of seeds returned above
        dirs = self._directions_for(directions, seed, 2, config, config_kwargs)
        checkpoint = self._checkpoint(checkpoint_dir, checkpoint_every, "plane", [x, y], dirs)
        values, metrics, wall = self._grid([(a, b) for b in y for a in x], dirs, desc="plane", checkpoint=checkpoint)
        shape = (len(y), len(x))
        grid = {"steps": [nx, ny], "span": [list(map(float, span_x)), list(map(float, span_y))]}
        meta = self._metadata("plane", dirs, seed, grid, wall)
        surface = Surface(
            x,
            values.reshape(shape),
            y=y,
            metrics={k: v.reshape(shape) for k, v in metrics.items()},
            metadata=meta,
            directions=dirs,
        )
        return self._kept(surface, checkpoint)

    def interpolate(
        self,
        other_model: Any,
        steps: int | None = None,
        span: Sequence[float] | None = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
    ) -> Surface:
        """Loss along θ(α) = (1 − α)·θ + α·θ_other (every floating-point parameter, biases included), or along a
        path through several checkpoints.

        Exact at the ends: α = 0 evaluates this model's weights and α = 1 `other_model`'s. With a list of models
        [m₁, ..., m_K] the path θ₀ → θ₁ → ... → θ_K (θ₀ this model's weights) has its knots at α = 0, 1, ..., K,
        one straight segment between consecutive knots, each knot exact; points before 0 or after K extrapolate
        the first or last segment. Every knot's weights are held on the model's device (K copies).

        Args:
            other_model: a `PreTrainedModel` of the same architecture, or a list of them (the path's knots).
            steps: points; default 20 per unit of α plus one (41 for one model), so every knot is a grid point.
            span: (low, high) of α; default (−0.5, K + 0.5).
            checkpoint_dir, checkpoint_every: save finished points and resume, as for `plane`.

        Example:
        ```python
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from hf_landscape import CausalLMObjective, LandscapeProbe
        >>> def tiny(seed):
        ...     _ = torch.manual_seed(seed)
        ...     return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
        >>> probe = LandscapeProbe(tiny(0), CausalLMObjective({"input_ids": [[1, 2, 3, 4]]}), progress=False)
        >>> path = probe.interpolate([tiny(1), tiny(2)], steps=9, span=(-1, 3))
        >>> path.x.tolist(), path.metadata["path"]["knots"]
        ([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], [0, 1, 2])

        ```
        """
        from transformers import PreTrainedModel

        others = list(other_model) if isinstance(other_model, (list, tuple)) else [other_model]
        if not others:
            raise ModelError("`other_model` is an empty list; pass a model or a list of models to interpolate to.")
        for i, other in enumerate(others):
            where = "other_model" if len(others) == 1 else f"other_model[{i}]"
            if not isinstance(other, PreTrainedModel):
                raise ModelError(f"`{where}` must be a transformers `PreTrainedModel`, got {type(other).__name__}.")
            check_materialized(other, where)
        segments = len(others)
        if span is None:
            span = (-0.5, segments + 0.5)
        if steps is None:
            steps = int(round(20 * (float(span[1]) - float(span[0])))) + 1 if _is_pair_of_numbers(span) else 41
        x = grid_axis(steps, span, "steps/span")
        # Snap grid points within rounding of a knot to it, so each checkpoint on the grid is evaluated exactly.
        scale = 1e-12 * max(1.0, float(np.max(np.abs(x))))
        for knot in range(segments + 1):
            x[np.abs(x - knot) < scale] = float(knot)
        targets = [interpolation_target(self.model, other) for other in others]
        params = {n: p for n, p in self.model.named_parameters() if n in targets[0]}
        target_lists = [[t[n] for n in params] for t in targets]
        fingerprinted = (
            targets[0] if segments == 1 else {f"{k}:{n}": v for k, t in enumerate(targets) for n, v in t.items()}
        )
        checkpoint = self._checkpoint(checkpoint_dir, checkpoint_every, "interpolation", [x], [], other=fingerprinted)
        with editing(self.model, params) as editor, self._precision():
            knots = [editor.originals, *target_lists]
            values, metrics, wall = run_grid(
                self.model,
                self.objective,
                [(a,) for a in x],
                lambda point: set_on_path(editor.params, knots, point[0]),
                progress=self.progress,
                desc="interpolate",
                checkpoint=checkpoint,
                shard=self._shard,
                graphs=self._graphs(),
            )
        described = [
            {"name_or_path": getattr(other, "name_or_path", "") or None, "class": type(other).__name__}
            for other in others
        ]
        meta = self._metadata("interpolation", [], None, {"steps": [steps], "span": [list(map(float, span))]}, wall)
        meta["other_model"] = described[-1]
        first = {"name_or_path": self.provenance.get("name_or_path"), "class": type(self.model).__name__}
        meta["path"] = {"knots": list(range(segments + 1)), "models": [first, *described]}
        return self._kept(Surface(x, values, metrics=metrics, metadata=meta), checkpoint)

    def _over_seeds(self, kind: str, seeds: Sequence[int], **kwargs: Any) -> Surface:
        """One surface per direction seed, combined: `values` is the mean, `spread` the standard deviation
        (ddof=1) and `samples` the per-seed values, so a plot can show whether a feature is one draw's."""
        seeds = seed_list(seeds)
        steps, span = kwargs["steps"], kwargs["span"]
        if kind == "line":
            per_seed = grid_axis(steps, span, "steps/span").size
        else:
            nx, ny = _plane_steps(steps)
            span_x, span_y = _plane_span(span)
            per_seed = grid_axis(nx, span_x, "steps/span (x)").size * grid_axis(ny, span_y, "steps/span (y)").size
        check_grid_size(per_seed * len(seeds), "steps x seeds")
        folder = kwargs.pop("checkpoint_dir")
        surfaces = []
        for seed in seeds:
            sub = None if folder is None else os.path.join(folder, f"seed-{seed}")
            method = self.line if kind == "line" else self.plane
            surfaces.append(method(seed=seed, checkpoint_dir=sub, **kwargs))
        samples = np.stack([s.values for s in surfaces])
        first = surfaces[0]
        meta = dict(first.metadata)
        meta.update(
            seed=None,
            seeds=seeds,
            directions=[d for s in surfaces for d in s.metadata["directions"]],
            wall_time_s=round(sum(s.metadata["wall_time_s"] for s in surfaces), 3),
        )
        metrics = {k: np.mean(np.stack([s.metrics[k] for s in surfaces]), axis=0) for k in first.metrics}
        combined = Surface(
            first.x,
            samples.mean(axis=0),
            y=first.y,
            metrics=metrics,
            metadata=meta,
            spread=samples.std(axis=0, ddof=1),
            samples=samples,
            directions=[d for s in surfaces for d in (s.directions or [])],
        )
        combined._partials = [p for s in surfaces for p in s._partials]
        return combined

    def _kept(self, surface: Surface, checkpoint: GridCheckpoint | None) -> Surface:
        """`surface`, remembering the partial grid(s) it was computed into (every process's, when sharded), which
        `Surface.save_pretrained` removes once it has saved the surface into their folder."""
        if checkpoint is None:
            return surface
        if self._shard is None:
            surface._partials = [checkpoint]
        else:
            n = self._shard.num_processes
            base = checkpoint.folder.parent
            surface._partials = [
                GridCheckpoint(base / f".rank{i}-of-{n}", checkpoint.key, every=checkpoint.every) for i in range(n)
            ]
        return surface

    def _checkpoint(
        self,
        folder: str | os.PathLike | None,
        every: int,
        kind: str,
        axes: list[np.ndarray],
        dirs: list[Any],
        other: dict[str, torch.Tensor] | None = None,
    ) -> GridCheckpoint | None:
        """A `GridCheckpoint` keyed by everything that decides the values, or None without a folder."""
        if folder is None:
            return None
        if not isinstance(folder, (str, os.PathLike)) or not str(folder):
            raise ConfigError(f"`checkpoint_dir` must be a folder path, got {folder!r}.")
        if self._shard is not None:  # one partial grid per process
            folder = os.path.join(folder, f".rank{self._shard.process_index}-of-{self._shard.num_processes}")
        key = {
            "kind": kind,
            "axes": [a.tolist() for a in axes],
            "model": tensor_fingerprint(dict(self.model.named_parameters())),
            "objective": self.objective.describe(),
            "autocast": self.autocast,
            "directions": [_direction_fingerprint(d) for d in dirs],
            "other_model": tensor_fingerprint(other) if other is not None else None,
        }
        return GridCheckpoint(folder, key, every=every)

    def trajectory_plane(
        self,
        run_dir: str | os.PathLike,
        steps: int | Sequence[int] = (25, 25),
        span: Sequence[Any] | None = None,
        *,
        snapshots: Sequence[int] | None = None,
        center: bool = False,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        include_1d: bool = False,
        margin: float = 0.25,
        **plane_kwargs: Any,
    ) -> Surface:
        """Loss over the plane of the top two PCA directions of a training run around this model's weights
        (normally the run's final weights), with the optimization path on it (Li et al. 2018, §7).

        Args:
            run_dir: the folder a `LandscapeCallback` wrote.
            steps: grid points per axis, as for `plane`.
            span: as for `plane`; by default the path and the centre, widened by `margin` on each side.
            snapshots: which saved steps to use (default all).
            center, include, exclude, include_1d: see `trajectory_directions`.
            plane_kwargs: passed on to `plane` (`checkpoint_dir`, `checkpoint_every`).

        `surface.metadata["trajectory"]` holds the snapshots' `steps`, their `coordinates` in the plane, their true
        `losses` (each snapshot's own weights, not their projection onto the plane), the
        `explained_variance_ratio` and the run's logged `train_losses`.
        """
        from .directions.trajectory import path_losses, trajectory_directions, trajectory_span

        dirs, info = trajectory_directions(
            run_dir,
            self.model,
            n_components=2,
            steps=snapshots,
            include=include,
            exclude=exclude,
            include_1d=include_1d,
            center=center,
            progress=self.progress,
        )
        if span is None:
            span = trajectory_span(info["coordinates"], margin=margin)
        surface = self.plane(steps=steps, span=span, directions=dirs, **plane_kwargs)
        with self._precision():
            info["losses"] = path_losses(
                self.model, self.objective, run_dir, steps=info["steps"], progress=self.progress
            )
        surface.metadata["trajectory"] = info
        return surface

    # --- curvature and sharpness (hf_landscape.sharpness) ----------------------------------------

    def hessian_eigenvalues(self, k: int = 3, *, tol: float = 1e-3, max_iter: int = 100, **kwargs: Any) -> EigenResult:
        """The `k` largest algebraic eigenvalues of the Hessian at the model's weights, by thick-restart Lanczos.

        Other options (`basis_size`, `offload`, `include`, `exclude`, `include_1d`, `seed`, `return_eigenvectors`,
        `per_layer` for each layer's diagonal block too): see `hf_landscape.sharpness.hessian_eigenvalues`.
        """
        kwargs.setdefault("progress", self.progress)
        return hessian_eigenvalues(self.model, self.objective, k=k, tol=tol, max_iter=max_iter, **kwargs)

    def hessian_trace(
        self, samples: int = 100, *, seed: int = 0, per_layer: bool = False, **kwargs: Any
    ) -> TraceResult:
        """Hutchinson's estimate of tr(H) with its standard error (and per layer); see
        `hf_landscape.sharpness.hessian_trace` for `include`, `exclude`, `include_1d`."""
        kwargs.setdefault("progress", self.progress)
        return hessian_trace(self.model, self.objective, samples=samples, seed=seed, per_layer=per_layer, **kwargs)

    def sharpness(
        self, rho: float = 0.05, kind: str = "adaptive", *, config: SharpnessConfig | None = None, **config_kwargs: Any
    ) -> SharpnessResult:
        """ρ-sharpness at the model's weights: `kind` is `"worst"` (SAM), `"adaptive"` (ASAM), `"average"` or
        `"adaptive_average"`; other options (`steps`, `samples`, `eta`, `include`, ...) as in `SharpnessConfig`.
        The weights are restored bit for bit afterwards."""
        if config is None:
            config = SharpnessConfig(rho=rho, kind=kind, **config_kwargs)
        elif config_kwargs:
            raise ConfigError(f"Pass either `config` or sharpness options {sorted(config_kwargs)}, not both.")
        return sharpness_measure(self.model, self.objective, config, progress=self.progress)

    def _grid(
        self, points: list[tuple[float, ...]], dirs: list[Any], desc: str, checkpoint: GridCheckpoint | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        if self._compiles_stacked():  # the stacked forward is compiled instead (`StackedPoints(compile=True)`)
            with compiling(), self._precision():
                return self._grid_inner(points, dirs, desc, checkpoint)
        if self.compile and self._compiled is None:
            self._compiled = torch.compile(self.model.forward, mode="reduce-overhead", dynamic=False)
        with compiled_forward(self.model, self._compiled if self.compile else None), self._precision():
            return self._grid_inner(points, dirs, desc, checkpoint)

    def _graphs(self) -> bool:
        """Record the one-point evaluation as a CUDA graph (`cuda_graphs`): not under `compile=True`, whose
        compiled forward records its own (mode="reduce-overhead")."""
        return self.cuda_graphs and not self.compile

    def _compiles_stacked(self) -> bool:
        """`compile=True` with an explicit number of points per forward above 1: the vmapped forward over the
        stacked points is compiled (no CUDA graphs). With `"auto"` compile keeps one point per forward."""
        k = self.points_per_forward
        return self.compile and isinstance(k, int) and not isinstance(k, bool) and k > 1

    def _grid_inner(
        self, points: list[tuple[float, ...]], dirs: list[Any], desc: str, checkpoint: GridCheckpoint | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        low_rank = [isinstance(d, LowRankDirection) for d in dirs]
        if all(low_rank):
            with low_rank_editing(self.model, dirs) as hooks:
                return run_grid(
                    self.model,
                    self.objective,
                    points,
                    hooks.set_linear,
                    progress=self.progress,
                    desc=desc,
                    checkpoint=checkpoint,
                    shard=self._shard,
                )
        if any(low_rank):
            raise ConfigError("`directions` mixes low-rank and full-rank directions; use one kind for every axis.")
        params, tensors = self._prepare(dirs)
        k = (
            1
            if self.compile and not self._compiles_stacked()
            else points_per_forward(
                self.model, params, self.objective, self.points_per_forward, len(points), graphs=self._graphs()
            )
        )
        logger.info("%s: %d point(s) per forward (points_per_forward=%r)", desc, k, self.points_per_forward)
        if k > 1:
            try:
                with eval_mode(self.model):
                    stacked = StackedPoints(self.model, params, tensors, compile=self.compile)
                    return run_grid(
                        self.model,
                        self.objective,
                        points,
                        None,
                        progress=self.progress,
                        desc=desc,
                        checkpoint=checkpoint,
                        stacked=stacked,
                        chunk=k,
                        shard=self._shard,
                    )
            except (torch.OutOfMemoryError, KeyboardInterrupt):
                raise
            except Exception as err:
                if self.points_per_forward != "auto":  # asked for explicitly: say so
                    raise
                # "auto" chose stacking for speed; a model whose forward cannot run under vmap (it reads values
                # back to the host, say) is evaluated one point at a time instead, with the same values. With a
                # checkpoint, points a failed chunk did not reach are the only ones computed again.
                logger.warning(
                    "%s: several points per forward failed for %s (%s: %s); evaluating one point per forward",
                    desc,
                    type(self.model).__name__,
                    type(err).__name__,
                    redact(str(err).splitlines()[0] if str(err) else ""),
                )
        with editing(self.model, params) as editor:
            return run_grid(
                self.model,
                self.objective,
                points,
                lambda point: editor.set_linear(point, tensors),
                progress=self.progress,
                desc=desc,
                checkpoint=checkpoint,
                shard=self._shard,
                graphs=self._graphs(),
            )

    def _metadata(
        self, kind: str, dirs: list[Direction], seed: int | None, grid: dict[str, Any], wall: float
    ) -> dict[str, Any]:
        model = self.model
        first = next(model.parameters())
        return {
            "kind": kind,
            "model": {
                **self.provenance,
                "class": type(model).__name__,
                "num_parameters": sum(p.numel() for p in model.parameters()),
                "dtype": str(first.dtype).replace("torch.", ""),
                "device": str(first.device),
            },
            "objective": self.objective.describe(),
            "autocast": self.autocast,
            "directions": [d.config for d in dirs],
            # user-given directions were not drawn from `seed`
            "seed": seed if dirs and all("seed" in d.config for d in dirs) else None,
            "grid": grid,
            "wall_time_s": round(wall, 3),
            "processes": self._shard.num_processes if self._shard is not None else 1,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": library_versions(),
        }


def _direction_fingerprint(direction: Any) -> str:
    if isinstance(direction, LowRankDirection):
        flat = {f"{n}.{i}": t for n, pair in direction.factors.items() for i, t in enumerate(pair)}
        return tensor_fingerprint(flat)
    return tensor_fingerprint(direction.tensors)


def seed_list(seeds: Sequence[Any]) -> list[int]:
    """`seeds` as a list of two or more distinct integers (several direction draws), or a `ConfigError`."""
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or not all(isinstance(v, int) for v in seeds):
        raise ConfigError(f"`seed` as a list needs two or more distinct integers, got {seeds!r}.")
    return seeds


def _plane_steps(steps: Any) -> tuple[int, int]:
    if isinstance(steps, int) and not isinstance(steps, bool):
        return steps, steps
    if isinstance(steps, Sequence) and len(steps) == 2:
        return steps[0], steps[1]  # each is validated by grid_axis
    raise ConfigError(f"`steps` must be an integer or a pair (nx, ny), got {steps!r}; e.g. steps=(25, 25).")


def _plane_span(span: Any) -> tuple[Any, Any]:
    if _is_pair_of_numbers(span):
        return span, span
    if isinstance(span, Sequence) and len(span) == 2:
        return span[0], span[1]  # each is validated by grid_axis
    raise ConfigError(f"`span` must be (low, high) or ((x_low, x_high), (y_low, y_high)), got {span!r}.")


def _is_pair_of_numbers(value: Any) -> bool:
    return (
        isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float, np.number)) for v in value)
    )


def _config(cls: Any, config: Any, kwargs: dict[str, Any]) -> Any:
    """`config` if given (it must be a `cls`), else `cls(**kwargs)` with unknown options rejected."""
    import dataclasses

    if config is not None:
        if not isinstance(config, cls):
            raise ConfigError(f"`config` must be a {cls.__name__} for these directions, got {type(config).__name__}.")
        if kwargs:
            raise ConfigError(f"Pass either `config` or direction options {sorted(kwargs)}, not both.")
        return config
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"Unknown direction option(s) {unknown}; the options of {cls.__name__} are {sorted(known)}.")
    return cls(**kwargs)


def _is_supported_model(model: Any) -> bool:
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return True
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _active_adapter(model: Any) -> str | None:
    active = getattr(model, "active_adapter", None)
    return active if isinstance(active, str) else (list(active)[0] if active else None)


def _adapter_pattern(model: Any, adapter_name: str | None) -> str:
    """A regex selecting the LoRA weights of one adapter of a PeftModel."""
    import re

    if not hasattr(model, "peft_config"):
        raise ConfigError(
            "`directions='adapter'` needs a peft `PeftModel` (with LoRA adapters); wrap the model with "
            "`peft.get_peft_model` or load one with `PeftModel.from_pretrained`."
        )
    names = sorted(model.peft_config)
    adapter = adapter_name or _active_adapter(model)
    if adapter is None or adapter not in names:
        raise ConfigError(f"`adapter_name` {adapter_name!r} is not an adapter of this model; it has {names}.")
    active = getattr(model, "active_adapters", None) or [_active_adapter(model)]
    if adapter not in active:
        raise ConfigError(
            f"`adapter_name` {adapter!r} is not active (active: {list(active)}), so perturbing it cannot change the "
            f"loss; call `model.set_adapter({adapter!r})` first."
        )
    return rf"\.lora_(A|B|embedding_A|embedding_B)\.{re.escape(adapter)}(\.weight)?$"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a surface depends on, for provenance."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hf_landscape", "torch", "transformers", "huggingface_hub", "safetensors", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def check_materialized(model: Any, argument: str) -> None:
    """Refuse a model with weights on the meta device (shapes without values, e.g. built under
    `init_empty_weights`), which no loss can be computed on. Weights that accelerate offloaded (`device_map` with
    CPU or disk offload) are meta too, but its hooks load them at each forward: those are allowed here."""
    hooked = [name for name, module in model.named_modules() if hasattr(module, "_hf_hook")]

    def offloaded(name: str) -> bool:
        return any(h == "" or name.startswith(f"{h}.") for h in hooked)

    tensors = [*model.named_parameters(), *model.named_buffers()]
    meta = [n for n, t in tensors if t.device.type == "meta" and not offloaded(n)]
    if meta:
        raise ModelError(
            f"`{argument}` has {len(meta)} weight(s) on the meta device (shapes without values), e.g. {meta[0]!r}; "
            "load its weights (e.g. `from_pretrained(...)`, not a model built under `init_empty_weights`)."
        )


def _check_autocast(model: Any, autocast: str | None) -> None:
    """Autocast to one half-precision dtype cannot run weights stored in the other (a half-precision op meets
    weights it cannot cast): refuse before any evaluation."""
    dtype = AUTOCAST_DTYPES.get(autocast)
    if dtype is None:
        return
    halves = {p.dtype for p in model.parameters() if p.dtype in (torch.float16, torch.bfloat16)} - {dtype}
    if halves:
        other = str(next(iter(halves))).replace("torch.", "")
        raise ConfigError(
            f"`autocast` {autocast!r} cannot evaluate a model whose weights are {other}; pass autocast={other!r} or "
            f"None, or load the model in float32."
        )


def _as_direction(value: Any, argument: str) -> Direction | LowRankDirection:
    """A user's direction as a `Direction` (or `LowRankDirection`), or a `DirectionError` naming `argument`."""
    if isinstance(value, (Direction, LowRankDirection)):
        return value
    if not isinstance(value, Mapping):
        raise DirectionError(
            f"`{argument}` must be a `Direction`, a `LowRankDirection` or a dict {{parameter name: tensor}}, got "
            f"{value!r:.60} ({type(value).__name__}); e.g. `probe.directions(seed)[0]`."
        )
    check_tensors(value, argument)
    return Direction(dict(value), {"kind": "custom"})
