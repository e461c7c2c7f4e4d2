"""`LandscapeProbe`'s slices beyond random planes, each stating the request and handing it on: `connect`
(`curves.py`), `plane_through` (`planes.py`) and `basin` (`basin.py`). The automatic span lives with the grids in
`probe.py` (`span="auto"`, `search.py`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..directions.low_rank import LowRankDirectionConfig
    from ..directions.random import RandomDirectionConfig
    from ..surface import Surface
    from .basin import BasinResult
    from .search import AutoSpan


class SliceMethods:
    """Mixed into `LandscapeProbe` (which gives `model`, `objective`, `runner`, `provenance`)."""

    def find_span(
        self,
        axes: int = 2,
        seed: int = 0,
        *,
        span: str | AutoSpan = "auto",
        rise: float | None = None,
        directions: Any = None,
        config: RandomDirectionConfig | LowRankDirectionConfig | None = None,
        **config_kwargs: Any,
    ) -> dict[str, Any]:
        """The span `span="auto"` gives a line (`axes=1`) or plane (`axes=2`), without the grid: per axis, the radius
        along +d and −d where the loss first rises by `rise` (bracketed, then narrowed; `slices.search`), and the
        symmetric span over the wider side. Returns the record a surface keeps in `metadata["auto_span"]`: the
        settings, `centre_loss`, `span` (per axis), per axis the edges and every point evaluated, and `evaluations`.

        Raises:
            ConfigError: `rise` is not a finite number > 0, or along some side the loss never rose by `rise` up to
                `max_radius` (the message gives the largest radius tried). The weights are restored either way.
        """
        from ..errors import ConfigError
        from .search import auto_span_config

        auto = auto_span_config(span, rise)
        if auto is None:
            raise ConfigError(f"`span` must be 'auto' or an AutoSpan here, got {span!r}.")
        dirs = self._directions_for(  # type: ignore[attr-defined]
            directions, seed, axes, config, config_kwargs
        )
        return self._search_span(dirs, auto)

    def _search_span(self, dirs: list[Any], auto: AutoSpan) -> dict[str, Any]:
        from .search import auto_spans

        with self.runner.point_session(dirs) as at:  # type: ignore[attr-defined]
            return auto_spans(lambda coords: at(coords).loss, len(dirs), auto)

    def connect(
        self,
        other: Any,
        kind: str = "bezier",
        *,
        steps: int = 21,
        train_steps: int = 100,
        lr: float = 0.01,
        seed: int = 0,
        objective: Any = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
    ) -> Surface:
        """A mode-connecting curve from this model (t = 0) to `other` (t = 1) whose bend is trained to keep the loss
        low along it (Garipov et al. 2018; `slices/curves.py`), evaluated at `steps` points of t in [0, 1].

        Args:
            other: a model of the same architecture (for a `PeftModel`, one with the same base: only the adapter
                weights bend).
            kind: `"bezier"` (quadratic Bézier) or `"polychain"` (two segments through the bend).
            steps: points of t evaluated; the ends are each model's own weights, so their losses are exact.
            train_steps, lr, seed: Adam steps on the bend (t ~ U[0, 1] each, drawn from `seed`) and its rate.
            objective: the training objective (default: the probe's); the curve is evaluated on the probe's.
            checkpoint_dir, checkpoint_every: save finished points of the evaluation and resume, as for `plane`.

        Returns:
            A line `Surface` over t; `metadata["curve"]` holds `barrier` and the straight path's `linear_barrier`
            (both as `interpolation_barrier` defines it, on the same points), `linear_values` and the training
            losses; `directions[0]` is the bend (a `Direction`: `save_pretrained`, `from_pretrained`).

        Raises:
            DirectionError: `other` has other parameter names or shapes (or another base model), before any work.
        """
        from .curves import CurveConfig, connect_models

        config = CurveConfig(kind=kind, train_steps=train_steps, lr=lr, seed=seed)
        return connect_models(
            self,  # type: ignore[arg-type]
            other,
            config,
            steps=steps,
            objective=objective,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
        )

    def plane_through(
        self,
        model_b: Any,
        model_c: Any,
        steps: int | Sequence[int] = 25,
        margin: float = 0.2,
        *,
        names: Sequence[str] = ("a", "b", "c"),
        curve: Surface | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
    ) -> Surface:
        """The loss on the plane through this model (θ_a), `model_b` and `model_c`, in true distances
        (`slices/planes.py`): a point (x, y) is θ_a + x·u + y·v with the Gram-Schmidt basis u, v (`directions`).

        Args:
            model_b, model_c: models of the same architecture, not on one line with this one.
            steps: points per axis, an int or `(nx, ny)`.
            margin: the grid reaches this share of the models' extent beyond them on every side.
            names: the three models' names on the plots and in `metadata["points"]`.
            curve: a `probe.connect(model_b)` surface, drawn on the plane (projected; `metadata["curve_on_plane"]`).
            checkpoint_dir, checkpoint_every: save finished points and resume, as for `plane`.

        Returns:
            A plane `Surface`; `metadata["points"]` maps each name to its (x, y), `metadata["point_losses"]` to the
            loss at that point, evaluated with the model's own weights (equal to its own loss).

        Raises:
            DirectionError: the models differ in names or shapes, or are collinear, before any work.
        """
        from .planes import plane_through_models

        if isinstance(steps, Sequence):
            steps = tuple(steps)
        return plane_through_models(
            self,  # type: ignore[arg-type]
            model_b,
            model_c,
            steps=steps,
            margin=margin,
            names=tuple(names),  # type: ignore[arg-type]
            curve=curve,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
        )

    def basin(
        self,
        metric: str = "loss",
        drop: float = 1.0,
        *,
        seeds: Sequence[int] = (0, 1, 2, 3, 4),
        directions: str = "random",
        normalization: str = "filter",
        adversarial: bool = True,
        rounds: int = 2,
        max_radius: float = 100.0,
        confidence: float = 0.95,
        **adversarial_options: Any,
    ) -> BasinResult:
        """Basin sizes (Chen et al. 2025; `slices/basin.py`): the radius at which the loss rises by `drop` (or the
        metric `metric` falls by `drop`) along a random direction per seed ("most-case": mean and t-interval) and
        along the worst-case direction ("worst-case"), in units of the weights' norms (`normalization`).

        Args:
            metric: `"loss"` or the name of one of the objective's metrics (e.g. `"accuracy"`).
            drop: the worsening at the basin's edge.
            seeds: the random directions' draws.
            directions: their kind: `"random"` (full rank), `"lora"` (low rank, for large models) or `"adapter"`
                (a PeftModel's adapter weights; the worst case is then taken among them too).
            adversarial: also the worst-case radius (needs a differentiable objective); `rounds` searches, each
                with the direction found at the radius before; `adversarial_options` go to
                `AdversarialDirectionConfig` (`steps`, `step_size`, `include`, ...).
            max_radius: the largest radius tried.

        Raises:
            ConfigError: a bad argument (before any work), or no edge up to `max_radius` (with the largest tried).
        """
        from .basin import basin_sizes

        return basin_sizes(
            self,  # type: ignore[arg-type]
            metric=metric,
            drop=drop,
            seeds=list(seeds),
            directions=directions,
            normalization=normalization,
            adversarial=adversarial,
            rounds=rounds,
            max_radius=max_radius,
            confidence=confidence,
            adversarial_options=adversarial_options,
        )
