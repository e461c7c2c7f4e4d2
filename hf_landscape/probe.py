"""`LandscapeProbe`: loss, lines, planes and interpolations of any transformers model, as one facade.

Each public method states a request and hands it on: grid specs to `grid`, direction kinds to the registry
(`directions.registry`), execution (path, fallback, compile, autocast, checkpoints, sharding) to the engine's
`GridRunner`, curvature to `curvature/`, token maps to `tokens`, provenance to `provenance`. The restore guarantee
lives in the engine: every method that moves weights does so inside `engine.editing` (or a low-rank editor), whose
`finally` copies the saved originals back bit for bit, and all checks on user input run before any weight is touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch

from .analysis.tokens import TokenLossMap, check_alphas, token_curvature, token_loss_map
from .curvature import (
    PAC_BAYES_KINDS,
    CriticalSharpnessResult,
    EigenResult,
    PacBayesConfig,
    PacBayesResult,
    SharpnessConfig,
    SharpnessResult,
    SpectrumResult,
    TraceResult,
    critical_sharpness,
    directional_derivatives,
    hessian_eigenvalues,
    hessian_spectrum,
    hessian_trace,
    pac_bayes_sharpness,
)
from .curvature import sharpness as sharpness_measure
from .directions.base import Direction, LowRankDirection
from .directions.interpolation import path_knots
from .directions.low_rank import LowRankDirectionConfig
from .directions.prepare import given_directions
from .directions.random import RandomDirectionConfig
from .directions.registry import default_span, draw_directions
from .engine.modes import check_autocast
from .engine.runner import ExecutionConfig, GridRunner
from .errors import ConfigError
from .grid import (
    check_grid_size,
    check_point,
    grid_axis,
    interpolation_axis,
    plane_axes,
    points_per_draw,
    seed_list,
)
from .hub.models import check_materialized, check_model, check_path_models
from .objectives.base import Evaluation, Objective, TokenView, check_objective, require
from .provenance import path_metadata, surface_metadata
from .slices.methods import SliceMethods
from .slices.search import AutoSpan, auto_span_config, shared_span, with_auto_span
from .surface import Surface, combine_draws, grid_surface

DirectionArg = Direction | LowRankDirection | Mapping[str, torch.Tensor]


def _execution(name: str) -> Any:
    """A probe attribute that is the field `name` of its runner's `ExecutionConfig`."""
    return property(
        lambda self: getattr(self.runner.config, name),
        lambda self, value: setattr(self.runner.config, name, value),
        doc=f"`probe.runner.config.{name}` (see `engine.ExecutionConfig`).",
    )


class LandscapeProbe(SliceMethods):
    """Measure the loss landscape of a model around its own weights.

    Args:
        model: any transformers `PreTrainedModel` (for `CausalLMObjective`, one with an LM head).
        objective: what a point's loss is, e.g. a `CausalLMObjective`.
        progress: show a tqdm progress bar on grids.
        provenance: where the model came from (`name_or_path`, `revision`, `commit_sha`); filled in by
            `from_pretrained`, recorded in every surface.
        points_per_forward, distributed, compile, cuda_graphs, autocast: how the grids run (several points per
            forward, sharding over processes, `torch.compile`, CUDA graphs, mixed precision), each described in
            `hf_landscape.engine.ExecutionConfig`; `probe.runner` runs them. None changes a value beyond float
            rounding (CUDA graphs and sharding: bit for bit).

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
        check_model(model)
        check_objective(objective)
        check_materialized(model, "model")
        check_autocast(model, autocast)
        execution = ExecutionConfig(points_per_forward, compile, cuda_graphs, autocast, distributed, progress)
        objective.bind(model)
        self.model = model
        self.objective = objective
        #: how the grids run (path, fallback, compile, autocast, checkpoints, sharding): the engine's `GridRunner`
        self.runner = GridRunner(model, objective, execution)
        self.provenance = dict(provenance or {})
        self.provenance.setdefault("name_or_path", getattr(model, "name_or_path", "") or None)

    # The execution options, read and written through the runner's `ExecutionConfig`.
    progress = _execution("progress")
    points_per_forward = _execution("points_per_forward")
    compile = _execution("compile")
    cuda_graphs = _execution("cuda_graphs")
    autocast = _execution("autocast")

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

        auto = objective.auto_model_class if isinstance(objective, Objective) else "AutoModelForCausalLM"
        load = {"revision": revision, "dtype": dtype, "device": device, "trust_remote_code": trust_remote_code}
        model_class = getattr(transformers, auto) if model_class is None else model_class
        model, provenance = load_model(name_or_path, model_class=model_class, token=token, **load, **model_kwargs)
        return cls(model, objective, progress=progress, provenance=provenance)

    # --- single evaluations ----------------------------------------------------------------------

    def loss(self) -> float:
        """The objective at the model's own weights."""
        return self.runner.loss()

    def evaluate(
        self,
        point: Sequence[float] | None = None,
        directions: Sequence[Direction | LowRankDirection] | None = None,
        *,
        details: bool = True,
    ) -> Evaluation:
        """The objective at θ₀ + Σ pointᵢ·directionsᵢ (θ₀ itself when `point` is None), with per-sequence and
        per-token losses when `details` is True. The weights are restored afterwards."""
        coords = None if point is None else check_point(point, directions)
        return self.runner.evaluate_at(coords, directions, details=details)

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
        return token_curvature(self.token_loss_map([-h, h], direction, seed=seed, **direction_options), h, top)

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
        at = lambda a: self.runner.evaluate_at((a,) if a != 0.0 else None, dirs, details=True)  # noqa: E731
        return token_loss_map(cast(TokenView, self.objective), values, at)

    def directional_derivatives(self, surface: Surface, *, stride: int = 1) -> Surface:
        """Add dL/dα = ∇L·δ and dL/dβ = ∇L·η at the grid points of `surface` (a plane made here, with its full-rank
        `directions`; every `stride`-th point per axis, NaN between) as `surface.metrics["dL/dalpha"]` and
        `["dL/dbeta"]`, drawn as −∇ arrows on contours (`curvature.directional_derivatives`)."""
        return directional_derivatives(self.model, self.objective, surface, stride=stride)

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
        """Draw `axes` directions of a registered `kind` (`direction_kinds()`): `"random"` (full-rank normalized
        Gaussian; options: `RandomDirectionConfig`), `"lora"` (low-rank D = B·A, never built at full size; options:
        `LowRankDirectionConfig`), `"adapter"` (a peft `PeftModel`'s LoRA weights only; options: `adapter_name`,
        default the active adapter, and `normalization`), `"hessian"` / `"ggn"` (the top eigenvectors of the Hessian or
        Gauss-Newton matrix, eigenvalues recorded in each direction's config; options: `CurvatureDirectionConfig`),
        `"adversarial"` (the worst-case direction at a radius, normalized like a random one; options:
        `AdversarialDirectionConfig`), or a kind added with `register_direction_kind`."""
        options = config_kwargs if config is None else {"config": config, **config_kwargs}
        context = {"objective": self.objective, "progress": self.progress}
        return draw_directions(kind, self.model, seed, axes=axes, **context, **options)

    def _directions_for(self, spec: Any, seed: int, axes: int, config: Any, kwargs: dict[str, Any]) -> list[Any]:
        """The directions of a grid: drawn by kind name (default "random"), or the user's own, one per axis."""
        if spec is None or isinstance(spec, str):
            return self.directions(seed, axes=axes, kind=spec or "random", config=config, **kwargs)
        return given_directions(spec, axes)

    # --- grids -----------------------------------------------------------------------------------

    def line(
        self,
        steps: int = 51,
        span: Sequence[float] | str | AutoSpan | None = None,
        seed: int | Sequence[int] = 0,
        *,
        direction: DirectionArg | str | None = None,
        rise: float | None = None,
        config: RandomDirectionConfig | LowRankDirectionConfig | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        **config_kwargs: Any,
    ) -> Surface:
        """Loss along θ₀ + α·δ for `steps` values of α over `span`.

        Args:
            steps: number of points (>= 2).
            span: (low, high) of α; by default the direction kind's (`directions.registry.default_span`): (-1, 1)
                for random directions (Li et al. 2018), narrower for LoRA-subspace ones, whose rank-r directions
                change a layer's output far more at the same norm. `"auto"` (or an `AutoSpan`): where the loss rises
                by `rise` (`find_span`; the search is kept in `metadata["auto_span"]`).
            seed: draw of the random direction δ (the first axis of `plane` with the same seed); a list of seeds
                gives the mean over draws in `values`, their standard deviation in `spread`.
            direction: `"random"` (default), `"lora"`, `"adapter"`, `"adversarial"` (see `directions`), or a direction
                to use (a `Direction`, `LowRankDirection` or name -> tensor dict).
            rise: with `span="auto"`, the loss rise at the span's edges (default 1.0, `AutoSpan`).
            config, config_kwargs: the direction kind's config or its fields (`normalization="filter"`, `rank=8`, ...).
            checkpoint_dir: save finished points here (every `checkpoint_every` points and when stopped early);
                calling again with the same configuration and folder resumes, computing only missing points.
        """
        check_spelling("line", "direction", config_kwargs)
        span = span_for(direction, span)
        grid = {"steps": steps, "span": span, "checkpoint_dir": checkpoint_dir, "checkpoint_every": checkpoint_every}
        auto = auto_span_config(span, rise)
        if isinstance(seed, (list, tuple)):
            return self._over_seeds("line", seed, auto, direction, config, config_kwargs, grid)
        grid_axis(steps, (-1.0, 1.0) if auto else cast(Sequence[float], span), "steps/span")  # checked before any work
        spec = direction if direction is None or isinstance(direction, str) else [direction]
        dirs = self._directions_for(spec, cast(int, seed), 1, config, config_kwargs)
        found = self._search_span(dirs, auto) if auto else None
        span = found["span"][0] if found else cast(Sequence[float], span)
        x = grid_axis(steps, span, "steps/span")
        record = {"steps": [steps], "span": [list(map(float, span))]}
        surface = self._grid("line", [x], dirs, cast(int, seed), record, checkpoint_dir, checkpoint_every)
        return with_auto_span(surface, found)

    def plane(
        self,
        steps: int | Sequence[int] = (25, 25),
        span: Sequence[Any] | str | AutoSpan | None = None,
        seed: int | Sequence[int] = 0,
        *,
        directions: Sequence[DirectionArg] | str | None = None,
        rise: float | None = None,
        config: RandomDirectionConfig | LowRankDirectionConfig | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        **config_kwargs: Any,
    ) -> Surface:
        """Loss over θ₀ + α·δ + β·η on a grid; `values[j, i]` is at (x[i], y[j]).

        Args:
            steps: points per axis, an int for both or `(nx, ny)`.
            span: `((x_low, x_high), (y_low, y_high))`, or one `(low, high)` for both; by default the direction
                kind's, as for `line`; or `"auto"` per axis, as for `line`.
            seed: draw of the two random directions; a list of seeds gives the mean over draws in `values`,
                their standard deviation in `spread` and each draw's values in `samples` (with `span="auto"`, one
                span for every draw: the widest).
            directions: `"random"` (default), `"lora"` (low-rank, for large models), `"adapter"` (a PeftModel's
                LoRA weights only) or `"adversarial"` (worst-case), see `directions`; or two directions to use.
            rise: with `span="auto"`, the loss rise at the span's edges (default 1.0, `AutoSpan`).
            config, config_kwargs: the direction kind's config or its fields (`normalization`, `orthogonalize`,
                `rank`, `target_modules`, `adapter_name`, ...).
            checkpoint_dir: save finished points here (every `checkpoint_every` points and when stopped early);
                calling again with the same configuration and folder resumes, computing only missing points.
        """
        check_spelling("plane", "directions", config_kwargs)
        span = span_for(directions, span)
        grid = {"steps": steps, "span": span, "checkpoint_dir": checkpoint_dir, "checkpoint_every": checkpoint_every}
        auto = auto_span_config(span, rise)
        if isinstance(seed, (list, tuple)):
            return self._over_seeds("plane", seed, auto, directions, config, config_kwargs, grid)
        plane_axes(steps, (-1.0, 1.0) if auto else span)  # checked before any work
        dirs = self._directions_for(directions, cast(int, seed), 2, config, config_kwargs)
        found = self._search_span(dirs, auto) if auto else None
        x, y, record = plane_axes(steps, found["span"] if found else span)
        surface = self._grid("plane", [x, y], dirs, cast(int, seed), record, checkpoint_dir, checkpoint_every)
        return with_auto_span(surface, found)

    def _grid(self, kind: str, axes: list[Any], dirs: list[Any], seed: int, record: dict, *checkpoint: Any) -> Surface:
        """Evaluate a line (one axis) or plane (x, y; `values[j, i]` at (x[i], y[j])) along `dirs` (the runner's
        work, checkpointed into `checkpoint` = (folder, every)) and wrap the values with their provenance."""
        run = self.runner.run(kind, axes, dirs, checkpoint_dir=checkpoint[0], checkpoint_every=checkpoint[1])
        meta = surface_metadata(
            kind, self.runner, self.provenance, directions=dirs, seed=seed, grid=record, wall=run.wall,
            compute=run.compute, resumed=run.resumed,
        )  # fmt: skip
        return grid_surface(axes, run.values, run.metrics, meta, directions=dirs, partials=run.partials)

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
        others = list(other_model) if isinstance(other_model, (list, tuple)) else [other_model]
        check_path_models(others)
        x, steps, span = interpolation_axis(steps, span, len(others))
        params, knots, fingerprint = path_knots(self.model, others)
        run = self.runner.run_interpolation(
            x, params, knots, fingerprint=fingerprint, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every
        )
        record = {"steps": [steps], "span": [list(map(float, span))]}
        meta = surface_metadata(
            "interpolation", self.runner, self.provenance, directions=[], seed=None, grid=record, wall=run.wall,
            compute=run.compute, resumed=run.resumed,
        )  # fmt: skip
        meta.update(path_metadata(self.provenance, self.model, others))
        return grid_surface([x], run.values, run.metrics, meta, partials=run.partials)

    def _over_seeds(
        self, kind: str, seeds: Sequence[int], auto: AutoSpan | None, spec: Any, config: Any, options: dict, grid: dict
    ) -> Surface:
        """One surface per direction seed, combined: `values` is the mean, `spread` the standard deviation
        (ddof=1) and `samples` the per-seed values, so a plot can show whether a feature is one draw's. With an
        automatic span, every draw's span is searched first and all share the widest."""
        seeds, line = seed_list(seeds), kind == "line"
        points = points_per_draw(kind, grid["steps"], (-1.0, 1.0) if auto else grid["span"])
        check_grid_size(points * len(seeds), "steps x seeds")
        folder, found = grid.pop("checkpoint_dir"), None
        if auto is not None:
            given = [spec] if line and not (spec is None or isinstance(spec, str)) else spec
            found = shared_span([self.find_span(1 if line else 2, s, span=auto, directions=given, config=config,
                                                **options) for s in seeds])  # fmt: skip
            grid["span"] = found["span"][0] if line else found["span"]
        method, spelling = (self.line, "direction") if line else (self.plane, "directions")
        surfaces = [
            method(  # type: ignore[operator]
                seed=seed,
                checkpoint_dir=None if folder is None else os.path.join(folder, f"seed-{seed}"),
                config=config,
                **{spelling: spec},
                **grid,
                **options,
            )  # fmt: skip
            for seed in seeds
        ]
        return with_auto_span(combine_draws(surfaces, seeds), found)

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

        model, progress = self.model, self.progress
        dirs, info = trajectory_directions(
            run_dir, model, n_components=2, steps=snapshots, include=include, exclude=exclude,
            include_1d=include_1d, center=center, progress=progress,
        )  # fmt: skip
        span = trajectory_span(info["coordinates"], margin=margin) if span is None else span
        surface = self.plane(steps=steps, span=span, directions=dirs, **plane_kwargs)
        with self.runner.precision():
            info["losses"] = path_losses(model, self.objective, run_dir, steps=info["steps"], progress=progress)
        surface.metadata["trajectory"] = info
        return surface

    # --- curvature and sharpness (hf_landscape.curvature) ----------------------------------------

    def hessian_eigenvalues(self, k: int = 3, *, tol: float = 1e-3, max_iter: int = 100, **kwargs: Any) -> EigenResult:
        """The `k` largest algebraic eigenvalues of the Hessian at the model's weights, by thick-restart Lanczos.

        `operator="ggn"` / `"fisher"` for the Gauss-Newton matrix or the empirical Fisher, `hvp="finite_difference"`
        for products without a double-backward graph, `per_block=True` / `per_layer=True` for each role's or layer's
        block; other options (`basis_size`, `offload`, `include`, `exclude`, `include_1d`, `seed`,
        `return_eigenvectors`, `fd_step`): see `hf_landscape.curvature.hessian_eigenvalues`.
        """
        kwargs.setdefault("progress", self.progress)
        return hessian_eigenvalues(self.model, self.objective, k=k, tol=tol, max_iter=max_iter, **kwargs)

    def hessian_trace(
        self, samples: int = 100, *, seed: int = 0, per_layer: bool = False, method: str = "hutchinson", **kwargs: Any
    ) -> TraceResult:
        """An estimate of tr(H) from `samples` Hessian-vector products, `method="hutchinson"` or `"hutch++"` (lower
        variance for the same products when a few eigenvalues dominate), with its standard error and interval (and
        per layer or, with `per_block=True`, per role); `operator`, `hvp`, `include`, ...: see
        `hf_landscape.curvature.hessian_trace`."""
        kwargs.setdefault("progress", self.progress)
        options = {"samples": samples, "seed": seed, "per_layer": per_layer, "method": method, **kwargs}
        return hessian_trace(self.model, self.objective, **options)

    def hessian_spectrum(self, steps: int = 100, *, probes: int = 1, seed: int = 0, **kwargs: Any) -> SpectrumResult:
        """The spectral density of the Hessian (or `operator="ggn"` / `"fisher"`) by stochastic Lanczos quadrature:
        `steps` Lanczos steps from each of `probes` random vectors. The result holds the density on a grid, the Ritz
        nodes and weights and the trace they imply (with an interval over the probes), plots on a symmetric-log axis
        and saves with `save_pretrained`; options (`sigma`, `reorthogonalize`, `hvp`, ...): see
        `hf_landscape.curvature.hessian_spectrum`."""
        kwargs.setdefault("progress", self.progress)
        return hessian_spectrum(self.model, self.objective, steps=steps, probes=probes, seed=seed, **kwargs)

    def sharpness(
        self,
        rho: float | None = None,
        kind: str = "adaptive",
        *,
        config: SharpnessConfig | PacBayesConfig | None = None,
        **config_kwargs: Any,
    ) -> SharpnessResult | PacBayesResult:
        """Sharpness at the model's weights. ρ-sharpness (`rho`, default 0.05): `kind` is `"worst"` (SAM),
        `"adaptive"` (ASAM), `"average"` or `"adaptive_average"`, other options (`steps`, `samples`, `eta`, `include`,
        ...) as in `SharpnessConfig`. PAC-Bayes sharpness (Jiang et al. 2020): `kind="pac_bayes"` or
        `"pac_bayes_magnitude"` with `target=` (the rise of the expected loss allowed), options as in
        `PacBayesConfig`; the result's `sigma`, `flatness` (1/σ²) and `interval`. The weights are restored bit for bit
        afterwards."""
        if kind in PAC_BAYES_KINDS or isinstance(config, PacBayesConfig):
            if rho is not None:
                raise ConfigError(f"`rho` is not an option of {kind!r} sharpness; pass `target=` (the rise allowed).")
            if config is not None and not isinstance(config, PacBayesConfig):
                raise ConfigError(
                    f"`config` of {kind!r} sharpness must be a `PacBayesConfig`, got {type(config).__name__}."
                )
            options = {"kind": kind, **config_kwargs} if config is None else config_kwargs
            return pac_bayes_sharpness(self.model, self.objective, config, progress=self.progress, **options)
        rho = 0.05 if rho is None else rho
        options = {"rho": rho, "kind": kind, **config_kwargs} if config is None else config_kwargs
        return sharpness_measure(self.model, self.objective, config, progress=self.progress, **options)

    def critical_sharpness(self, direction: Any = None, **kwargs: Any) -> CriticalSharpnessResult:
        """λc = 2/ηc, ηc the smallest step along the gradient (or `direction`) at which the loss stops decreasing
        (Kalra et al. 2026), from one gradient and a few forwards; to second order the Rayleigh quotient gᵀHg/‖g‖².
        Options (`rtol`, `per_block`, `include`, ...): see `hf_landscape.curvature.critical_sharpness`."""
        kwargs.setdefault("progress", self.progress)
        return critical_sharpness(self.model, self.objective, direction=direction, **kwargs)


def check_spelling(method: str, spelling: str, options: Mapping[str, Any]) -> None:
    """Refuse the other method's spelling of the directions argument (`line(direction=)`, `plane(directions=)`)."""
    other = "directions" if spelling == "direction" else "direction"
    if other in options:
        raise ConfigError(
            f"`{method}` takes `{spelling}=`, not `{other}=` (did you mean `{spelling}={options[other]!r}`?); "
            f"`line` takes one `direction`, `plane` two `directions`."
        )


def span_for(directions: Any, span: Any) -> Any:
    """`span`, or by default the span of the direction kind asked for (the kind of given low-rank directions is
    `"lora"`'s, of other given directions `"random"`'s)."""
    if span is not None:
        return span
    kind = directions if isinstance(directions, str) else "random"
    given = directions if isinstance(directions, (list, tuple)) else [directions]
    if any(isinstance(d, LowRankDirection) for d in given):
        kind = "lora"
    return default_span(kind)


__all__ = ["LandscapeProbe", "check_materialized"]
