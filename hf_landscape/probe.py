"""`LandscapeProbe`: loss, lines, planes and interpolations of any transformers model.

The restore guarantee lives here and in `engine.editing`: every method that moves weights does so
inside `editing(...)`, whose `finally` copies the saved originals back bit for bit, and all checks
on user input run before any weight is touched.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .directions.base import Direction
from .directions.interpolation import interpolation_target
from .directions.random import RandomDirectionConfig, random_directions
from .engine import editing, evaluate, grid_axis, run_grid
from .errors import ConfigError, DirectionError, ModelError
from .objectives.base import Evaluation, Objective
from .surface import Surface

logger = logging.getLogger(__name__)


class LandscapeProbe:
    """Measure the loss landscape of a model around its own weights.

    Args:
        model: any transformers `PreTrainedModel` (for `CausalLMObjective`, one with an LM head).
        objective: what a point's loss is, e.g. a `CausalLMObjective`.
        progress: show a tqdm progress bar on grids.
        provenance: where the model came from (`name_or_path`, `revision`, `commit_sha`); filled in by
            `from_pretrained`, recorded in every surface.

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
    ) -> None:
        from transformers import PreTrainedModel

        if not isinstance(model, PreTrainedModel):
            raise ModelError(
                f"`model` must be a transformers `PreTrainedModel`, got {type(model).__name__}; load it with "
                "`AutoModelForCausalLM.from_pretrained(...)` or use `LandscapeProbe.from_pretrained(name)`."
            )
        if not isinstance(objective, Objective):
            raise ConfigError(
                f"`objective` must be an hf_landscape `Objective` (e.g. `CausalLMObjective(texts, tokenizer)`), "
                f"got {type(objective).__name__}."
            )
        objective.bind(model)
        self.model = model
        self.objective = objective
        self.progress = progress
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
            model_class = getattr(transformers, getattr(objective, "auto_model_class", "AutoModelForCausalLM"))
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

    def loss(self) -> float:
        """The objective at the model's own weights."""
        return evaluate(self.model, self.objective).loss

    def evaluate(
        self,
        point: Sequence[float] | None = None,
        directions: Sequence[Direction] | None = None,
        *,
        details: bool = True,
    ) -> Evaluation:
        """The objective at θ₀ + Σ pointᵢ·directionsᵢ (θ₀ itself when `point` is None), with per-sequence and
        per-token losses when `details` is True. The weights are restored afterwards."""
        if point is None:
            return evaluate(self.model, self.objective, details=details)
        if directions is None or len(directions) != len(point):
            raise ConfigError(
                f"`point` {tuple(point)!r} needs one direction per coordinate; pass `directions=` of that length."
            )
        params, tensors = self._prepare(list(directions))
        with editing(self.model, params) as editor:
            editor.set_linear(tuple(float(c) for c in point), tensors)
            with torch.inference_mode():
                return self.objective.evaluate(self.model, details=details)

    # --- directions ------------------------------------------------------------------------------

    def directions(
        self,
        seed: int = 0,
        *,
        axes: int = 2,
        config: RandomDirectionConfig | None = None,
        **config_kwargs: Any,
    ) -> list[Direction]:
        """Draw normalized Gaussian directions (see `RandomDirectionConfig` for the options)."""
        return random_directions(self.model, seed, config=_direction_config(config, config_kwargs), axes=axes)

    def _prepare(self, directions: list[Direction]) -> tuple[dict[str, torch.nn.Parameter], list[list[torch.Tensor]]]:
        """Check user or drawn directions against the model; return the parameters they touch and
        per-axis tensor lists on the parameters' devices and dtypes (zeros where an axis skips a name)."""
        all_params = dict(self.model.named_parameters())
        directions = [d if isinstance(d, Direction) else Direction(dict(d), {"kind": "custom"}) for d in directions]
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
        seed: int = 0,
        *,
        direction: Direction | Mapping[str, torch.Tensor] | None = None,
        config: RandomDirectionConfig | None = None,
        **config_kwargs: Any,
    ) -> Surface:
        """Loss along θ₀ + α·δ for `steps` values of α over `span`.

        Args:
            steps: number of points (>= 2).
            span: (low, high) of α.
            seed: draw of the random direction δ (the first axis of `plane` with the same seed).
            direction: use this direction instead of a random one (a `Direction` or name -> tensor dict).
            config, config_kwargs: `RandomDirectionConfig` or its fields (`normalization="filter"`, ...).
        """
        x = grid_axis(steps, span, "steps/span")
        if direction is not None:
            dirs = [direction if isinstance(direction, Direction) else Direction(dict(direction), {"kind": "custom"})]
        else:
            dirs = random_directions(self.model, seed, config=_direction_config(config, config_kwargs), axes=1)
        values, metrics, wall = self._grid([(a,) for a in x], dirs, desc="line")
        meta = self._metadata("line", dirs, seed, {"steps": [steps], "span": [list(map(float, span))]}, wall)
        return Surface(x, values, metrics=metrics, metadata=meta, directions=dirs)

    def plane(
        self,
        steps: int | Sequence[int] = (25, 25),
        span: Sequence[Any] = ((-1.0, 1.0), (-1.0, 1.0)),
        seed: int = 0,
        *,
        directions: Sequence[Direction | Mapping[str, torch.Tensor]] | str | None = None,
        config: RandomDirectionConfig | None = None,
        **config_kwargs: Any,
    ) -> Surface:
        """Loss over θ₀ + α·δ + β·η on a grid; `values[j, i]` is at (x[i], y[j]).

        Args:
            steps: points per axis, an int for both or `(nx, ny)`.
            span: `((x_low, x_high), (y_low, y_high))`, or one `(low, high)` for both.
            seed: draw of the two random directions.
            directions: two directions to use instead of random ones.
            config, config_kwargs: `RandomDirectionConfig` or its fields (`normalization`, `orthogonalize`, ...).
        """
        if isinstance(directions, str):
            raise ConfigError(
                f"`directions={directions!r}` is not available in this version; pass None for random directions "
                "or a list of two `Direction`s."
            )
        nx, ny = (steps, steps) if isinstance(steps, int) else tuple(steps)
        span_x, span_y = (span, span) if _is_pair_of_numbers(span) else tuple(span)
        x = grid_axis(nx, span_x, "steps/span (x)")
        y = grid_axis(ny, span_y, "steps/span (y)")
        if directions is not None:
            if len(directions) != 2:
                raise ConfigError(f"`directions` must hold two directions for a plane, got {len(directions)}.")
            dirs = [d if isinstance(d, Direction) else Direction(dict(d), {"kind": "custom"}) for d in directions]
        else:
            dirs = random_directions(self.model, seed, config=_direction_config(config, config_kwargs), axes=2)
        values, metrics, wall = self._grid([(a, b) for b in y for a in x], dirs, desc="plane")
        shape = (len(y), len(x))
        grid = {"steps": [nx, ny], "span": [list(map(float, span_x)), list(map(float, span_y))]}
        meta = self._metadata("plane", dirs, seed, grid, wall)
        return Surface(
            x,
            values.reshape(shape),
            y=y,
            metrics={k: v.reshape(shape) for k, v in metrics.items()},
            metadata=meta,
            directions=dirs,
        )

    def interpolate(self, other_model: Any, steps: int = 41, span: Sequence[float] = (-0.5, 1.5)) -> Surface:
        """Loss along θ(α) = (1 − α)·θ + α·θ_other (every floating-point parameter, biases included).

        Exact at the ends: α = 0 evaluates this model's weights and α = 1 `other_model`'s.
        """
        from transformers import PreTrainedModel

        if not isinstance(other_model, PreTrainedModel):
            raise ModelError(
                f"`other_model` must be a transformers `PreTrainedModel`, got {type(other_model).__name__}."
            )
        x = grid_axis(steps, span, "steps/span")
        targets = interpolation_target(self.model, other_model)
        params = {n: p for n, p in self.model.named_parameters() if n in targets}
        target_list = [targets[n] for n in params]
        with editing(self.model, params) as editor:
            values, metrics, wall = run_grid(
                self.model,
                self.objective,
                [(a,) for a in x],
                lambda point: editor.set_lerp(point[0], target_list),
                progress=self.progress,
                desc="interpolate",
            )
        other = {"name_or_path": getattr(other_model, "name_or_path", "") or None, "class": type(other_model).__name__}
        meta = self._metadata("interpolation", [], None, {"steps": [steps], "span": [list(map(float, span))]}, wall)
        meta["other_model"] = other
        return Surface(x, values, metrics=metrics, metadata=meta)

    def _grid(
        self, points: list[tuple[float, ...]], dirs: list[Direction], desc: str
    ) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        params, tensors = self._prepare(dirs)
        with editing(self.model, params) as editor:
            return run_grid(
                self.model,
                self.objective,
                points,
                lambda point: editor.set_linear(point, tensors),
                progress=self.progress,
                desc=desc,
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
            "directions": [d.config for d in dirs],
            "seed": seed,
            "grid": grid,
            "wall_time_s": round(wall, 3),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": library_versions(),
        }


def _is_pair_of_numbers(value: Any) -> bool:
    return (
        isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float, np.number)) for v in value)
    )


def _direction_config(config: RandomDirectionConfig | None, kwargs: dict[str, Any]) -> RandomDirectionConfig:
    if config is not None and kwargs:
        raise ConfigError(f"Pass either `config` or direction options {sorted(kwargs)}, not both.")
    if config is not None:
        return config
    import dataclasses

    known = {f.name for f in dataclasses.fields(RandomDirectionConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"Unknown direction option(s) {unknown}; the options are {sorted(known)}.")
    return RandomDirectionConfig(**kwargs)


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
