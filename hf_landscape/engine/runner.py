"""`GridRunner`: how a probe's grids run. It owns every execution decision, so the probe states requests only.

For a line or plane (`run`) it chooses the path: low-rank directions as a forward path (`low_rank`); several points
per forward (`stacked`, as many as `POLICY.points_per_forward` allows), falling back to one point per forward under
`"auto"` when the model cannot run under `vmap`; or one point per forward, recorded as a CUDA graph where it can be
(`graphs`). It runs the grid compiled (`modes.compiled_forward`) and under autocast (`modes.precision`) as the
`ExecutionConfig` says, builds the checkpoint of a grid from everything that decides its values (`checkpoint`),
and shards the points over the processes of `accelerate launch` / `torchrun` (`distributed`). Interpolations
(`run_interpolation`) and single points (`evaluate_at`) run through it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..directions.base import LowRankDirection
from ..directions.interpolation import set_on_path
from ..directions.prepare import prepare
from ..errors import ConfigError, redact
from ..grid import grid_points
from ..objectives.base import Evaluation, Objective, StackedEvaluation, evaluate, supports
from .checkpoint import GridCheckpoint, tensor_fingerprint
from .distributed import distributed_state
from .editors import WeightEditor, editing, eval_mode
from .loop import run_grid
from .low_rank import low_rank_editing
from .modes import AUTOCAST_DTYPES, compiled_forward, compiling, precision
from .policy import POLICY, BatchingPolicy
from .stacked import StackedPoints

logger = logging.getLogger(__name__)

Grid = tuple[np.ndarray, dict[str, np.ndarray], float]


@dataclass
class GridResult:
    """What a grid run gives: one value per point (float64; NaN/inf kept), metrics (name -> one value per point), the
    wall seconds, and the partial grids it was checkpointed into (`Surface.save_pretrained` removes them once the
    surface is saved into their folder); for a grid resumed from a partial one, the points it held (`resumed`) and
    the compute seconds of every run so far (`compute`; the wall seconds otherwise)."""

    values: np.ndarray
    metrics: dict[str, np.ndarray]
    wall: float
    partials: list[GridCheckpoint]
    resumed: int = 0
    compute: float | None = None

    @classmethod
    def of(cls, values: np.ndarray, metrics: dict[str, np.ndarray], wall: float, partials: list[GridCheckpoint],
           checkpoint: GridCheckpoint | None) -> GridResult:  # fmt: skip
        """The result, with what `checkpoint` found of earlier runs."""
        if checkpoint is None:
            return cls(values, metrics, wall, partials)
        compute = round(wall + checkpoint.previous_compute_s, 3)
        return cls(values, metrics, wall, partials, checkpoint.resumed_points, compute)


@dataclass
class ExecutionConfig:
    """How the grids of a probe run (`LandscapeProbe(..., points_per_forward=..., compile=..., ...)`): what changes is
    the speed, never a value beyond float rounding where stated.

    Args:
        points_per_forward (`int` or `"auto"`, defaults to `"auto"`): grid points evaluated in one forward pass with
            full-rank directions (`vmap` over stacked perturbed weights; values equal the one-point path to float
            rounding). `"auto"` picks from free GPU memory for small evaluations (under
            `POLICY.auto_stack_max_flop` with `cuda_graphs`), and 1 otherwise: on the CPU, where a forward is
            compute-bound anyway, and for larger evaluations on a GPU, where replaying the recorded one-point
            evaluation is faster. If the model cannot run under `vmap`, `"auto"` evaluates one point per forward
            instead (with a warning). Checked when a grid runs.
        compile (`bool`, defaults to False): run grids through `torch.compile(model.forward,
            mode="reduce-overhead")` (CUDA graphs: no launch overhead per kernel; worth it for small models on a
            GPU), one point per forward; with an explicit `points_per_forward` above 1, the vmapped forward over the
            stacked points is compiled instead. The causal-LM loss is compiled too. Values agree with eager ones to
            float rounding.
        cuda_graphs (`bool`, defaults to True): on a GPU, record the one-point evaluation as a CUDA graph at a grid's
            first point and replay it at the others (the host launches one graph instead of every kernel: small
            models run at the GPU's speed, not the host's). Used where it can be recorded (`engine.graphs`: one
            device, an evaluation that does not sync with the host, under `POLICY.graphs_max_flop`); elsewhere, and
            with `False`, every point is evaluated eagerly. The values are the same either way, bit for bit. A
            replay runs the recorded kernels only: Python in the forward (forward hooks that collect activations,
            say) runs while recording, not at every point; pass `False` where that matters.
        autocast (`str`, *optional*): `"bfloat16"` or `"float16"` to evaluate every point under `torch.autocast`
            (mixed precision: matrix products in that dtype, the weights and the loss's reduction kept in theirs);
            `None` (default) evaluates in the model's own dtype. Recorded in every surface's metadata.
        distributed (`bool`, *optional*): shard grid points over the processes of `accelerate launch` / `torchrun`
            (each process holds the model on its own device, `model.to(PartialState().device)`); every process gets
            the whole surface. `None` detects it from the launcher's environment.
        progress (`bool`, defaults to True): a tqdm progress bar on grids.
    """

    points_per_forward: int | str = field(default="auto", metadata={"help": "points per forward, or 'auto'"})
    compile: bool = field(default=False, metadata={"help": "run grids through torch.compile"})
    cuda_graphs: bool = field(default=True, metadata={"help": "record the one-point evaluation on a GPU"})
    autocast: str | None = field(default=None, metadata={"help": "bfloat16, float16 or None"})
    distributed: bool | None = field(default=None, metadata={"help": "shard points over processes; None: detect"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})

    def __post_init__(self) -> None:
        if not (self.autocast is None or isinstance(self.autocast, str)) or self.autocast not in AUTOCAST_DTYPES:
            raise ConfigError(
                f"`autocast` must be one of {list(AUTOCAST_DTYPES)}, got {self.autocast!r}; e.g. autocast='bfloat16'."
            )
        if not isinstance(self.compile, bool):
            raise ConfigError(f"`compile` must be True or False, got {self.compile!r}.")
        if not isinstance(self.cuda_graphs, bool):
            raise ConfigError(f"`cuda_graphs` must be True or False, got {self.cuda_graphs!r}.")
        if self.distributed not in (None, True, False):
            raise ConfigError(f"`distributed` must be None (auto), True or False, got {self.distributed!r}.")

    @property
    def graphs(self) -> bool:
        """Record the one-point evaluation as a CUDA graph: not under `compile=True`, whose compiled forward records
        its own (mode="reduce-overhead")."""
        return self.cuda_graphs and not self.compile

    @property
    def compiles_stacked(self) -> bool:
        """`compile=True` with an explicit number of points per forward above 1: the vmapped forward over the
        stacked points is compiled (no CUDA graphs). With `"auto"` compile keeps one point per forward."""
        k = self.points_per_forward
        return self.compile and isinstance(k, int) and not isinstance(k, bool) and k > 1


class GridRunner:
    """Runs the grids of one model and objective as an `ExecutionConfig` says (see the module docstring).

    Args:
        model: the model (bound to `objective` already).
        objective: the objective.
        config: how grids run.
        policy: the thresholds of the automatic choices (`POLICY` by default).

    Raises:
        ConfigError: `distributed=True` outside a launcher with several processes.
    """

    def __init__(
        self, model: Any, objective: Objective, config: ExecutionConfig, *, policy: BatchingPolicy = POLICY
    ) -> None:
        self.model = model
        self.objective = objective
        self.config = config
        self.policy = policy
        autocast_dtype = AUTOCAST_DTYPES[config.autocast]
        if autocast_dtype is not None:
            objective.expect_dtype(autocast_dtype)  # e.g. the fused loss's set-up for bf16 logits starts now
        self.shard = distributed_state() if config.distributed is not False else None
        if config.distributed is True and self.shard is None:
            raise ConfigError(
                "`distributed=True` but this process was not started by `accelerate launch` or `torchrun` with "
                "several processes; launch it that way, or leave `distributed` unset."
            )
        self._compiled: Any = None
        check_eager(objective, config)

    @property
    def num_processes(self) -> int:
        return self.shard.num_processes if self.shard is not None else 1

    def precision(self) -> contextlib.AbstractContextManager[Any]:
        """`torch.autocast` to the configured dtype on the model's device type, or nothing."""
        return precision(self.model, self.config.autocast)

    # --- single points ---------------------------------------------------------------------------------------

    def loss(self) -> float:
        """The objective at the model's own weights."""
        with self.precision():
            return evaluate(self.model, self.objective).loss

    def evaluate_at(
        self, coords: tuple[float, ...] | None, directions: Sequence[Any] | None, *, details: bool
    ) -> Evaluation:
        """The objective at θ₀ + Σ coordsᵢ·directionsᵢ (θ₀ itself when `coords` is None); weights restored after."""
        if coords is None:
            with self.precision():
                return evaluate(self.model, self.objective, details=details)
        with self.point_session(directions or []) as at:
            return at(coords, details=details)

    @contextlib.contextmanager
    def point_session(self, directions: Sequence[Any]) -> Iterator[Callable[..., Evaluation]]:
        """Yield `at(coords, details=False)`, the objective at θ₀ + Σ coordsᵢ·directionsᵢ, for evaluating many single
        points one after another (a search along a direction): the originals are saved once, each point is set from
        them, and the weights and flags come back when the block ends, however it ends."""
        dirs = list(directions)
        with self.precision():
            if dirs and all(isinstance(d, LowRankDirection) for d in dirs):
                with low_rank_editing(self.model, dirs) as low_rank:
                    self._learn_groups(low_rank)

                    def at_low_rank(coords: Sequence[float], *, details: bool = False) -> Evaluation:
                        low_rank.set_linear(tuple(coords))
                        with torch.inference_mode():
                            return self.objective.evaluate(self.model, details=details)

                    yield at_low_rank
                return
            params, tensors = prepare(self.model, dirs)
            with editing(self.model, params) as editor:

                def at(coords: Sequence[float], *, details: bool = False) -> Evaluation:
                    editor.set_linear(tuple(coords), tensors)
                    with torch.inference_mode():
                        return self.objective.evaluate(self.model, details=details)

                yield at

    def _learn_groups(self, editor: Any) -> None:
        """The low-rank editor's groups, learned from one forward of the objective before any point is evaluated."""
        with torch.inference_mode():
            editor.learn(lambda: self.objective.evaluate(self.model))

    # --- checkpoints -----------------------------------------------------------------------------------------

    def checkpoint(
        self,
        folder: str | os.PathLike | None,
        every: int,
        kind: str,
        axes: list[np.ndarray],
        directions: Sequence[Any],
        other: dict[str, torch.Tensor] | None = None,
    ) -> GridCheckpoint | None:
        """A `GridCheckpoint` keyed by everything that decides the values, or None without a folder."""
        if folder is None:
            return None
        if not isinstance(folder, (str, os.PathLike)) or not str(folder):
            raise ConfigError(f"`checkpoint_dir` must be a folder path, got {folder!r}.")
        if self.shard is not None:  # one partial grid per process
            folder = os.path.join(folder, f".rank{self.shard.process_index}-of-{self.shard.num_processes}")
        key = {
            "kind": kind,
            "axes": [a.tolist() for a in axes],
            "model": tensor_fingerprint(dict(self.model.named_parameters())),
            "objective": self.objective.describe(),
            "autocast": self.config.autocast,
            "directions": [direction_fingerprint(d) for d in directions],
            "other_model": tensor_fingerprint(other) if other is not None else None,
        }
        return GridCheckpoint(folder, key, every=every)

    def partials(self, checkpoint: GridCheckpoint | None) -> list[GridCheckpoint]:
        """The partial grids a surface computed with `checkpoint` lives in (every process's, when sharded), which
        `Surface.save_pretrained` removes once it has saved the surface into their folder."""
        if checkpoint is None:
            return []
        if self.shard is None:
            return [checkpoint]
        n = self.shard.num_processes
        base = checkpoint.folder.parent
        return [GridCheckpoint(base / f".rank{i}-of-{n}", checkpoint.key, every=checkpoint.every) for i in range(n)]

    # --- grids -----------------------------------------------------------------------------------------------

    def run(
        self,
        kind: str,
        axes: list[np.ndarray],
        directions: list[Any],
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
    ) -> GridResult:
        """Evaluate the objective at θ₀ + α·d₀ (a line, `axes=[x]`) or θ₀ + α·d₀ + β·d₁ (a plane, `axes=[x, y]`) at
        every point of the grid (`grid.grid_points` order), checkpointed into `checkpoint_dir` if given."""
        check_eager(self.objective, self.config)
        checkpoint = self.checkpoint(checkpoint_dir, checkpoint_every, kind, axes, directions)
        points = grid_points(axes)
        if self.config.compiles_stacked:  # the stacked forward is compiled instead (`StackedPoints(compile=True)`)
            with compiling(), self.precision():
                values, metrics, wall = self._run(points, directions, kind, checkpoint)
        else:
            if self.config.compile and self._compiled is None:
                self._compiled = torch.compile(self.model.forward, mode="reduce-overhead", dynamic=False)
            with compiled_forward(self.model, self._compiled if self.config.compile else None), self.precision():
                values, metrics, wall = self._run(points, directions, kind, checkpoint)
        return GridResult.of(values, metrics, wall, self.partials(checkpoint), checkpoint)

    def _run(
        self, points: list[tuple[float, ...]], dirs: list[Any], desc: str, checkpoint: GridCheckpoint | None
    ) -> Grid:
        low_rank = [isinstance(d, LowRankDirection) for d in dirs]
        if all(low_rank):
            with low_rank_editing(self.model, dirs) as hooks:
                self._learn_groups(hooks)
                return self._grid(points, hooks.set_linear, desc, checkpoint, graphs=False)
        if any(low_rank):
            raise ConfigError("`directions` mixes low-rank and full-rank directions; use one kind for every axis.")
        params, tensors = prepare(self.model, dirs)
        k = self._points_per_forward(params, len(points), desc)
        if k > 1:
            try:
                with eval_mode(self.model):
                    stacked = StackedPoints(self.model, params, tensors, compile=self.config.compile)
                    return self._grid(points, None, desc, checkpoint, stacked=stacked, chunk=k)
            except (torch.OutOfMemoryError, KeyboardInterrupt):
                raise
            except Exception as err:
                if self.config.points_per_forward != "auto":  # asked for explicitly: say so
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
            return self._grid(
                points, lambda point: editor.set_linear(point, tensors), desc, checkpoint, graphs=self.config.graphs
            )

    def _points_per_forward(self, params: dict[str, torch.nn.Parameter], n: int, desc: str) -> int:
        requested = self.config.points_per_forward
        if self.config.compile and not self.config.compiles_stacked:
            k = 1
        else:
            k = self.policy.points_per_forward(
                self.model, params, self.objective, requested, n, graphs=self.config.graphs
            )
        logger.info("%s: %d point(s) per forward (points_per_forward=%r)", desc, k, requested)
        if requested == "auto" and not supports(self.objective, StackedEvaluation):
            logger.info(
                "%s: %s evaluates one point per forward: it has no `evaluate_points` / `loss_points` "
                "(objectives.base.StackedEvaluation)",
                desc,
                type(self.objective).__name__,
            )
        return k

    def run_interpolation(
        self,
        x: np.ndarray,
        params: dict[str, torch.nn.Parameter],
        targets: list[list[torch.Tensor]],
        *,
        fingerprint: dict[str, torch.Tensor],
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
    ) -> GridResult:
        """Evaluate the objective at the points `x` of the path θ₀ → targets[0] → targets[1] → ... (knots at α = 0, 1,
        ...), `params` the parameters each target gives (in their order), checkpointed (keyed by the tensors
        `fingerprint`) into `checkpoint_dir` if given; weights restored after."""

        def place(editor: WeightEditor, point: tuple[float, ...]) -> None:
            set_on_path(editor.params, [editor.originals, *targets], point[0])

        return self.run_placed(
            "interpolation",
            [x],
            params,
            place,
            fingerprint=fingerprint,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            desc="interpolate",
        )

    def run_placed(
        self,
        kind: str,
        axes: list[np.ndarray],
        params: dict[str, torch.nn.Parameter],
        place: Callable[[WeightEditor, tuple[float, ...]], None],
        *,
        fingerprint: dict[str, torch.Tensor],
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        desc: str | None = None,
    ) -> GridResult:
        """Evaluate the objective at every point of the grid `axes` (`grid.grid_points` order), the weights `params` put
        there by `place(editor, point)` from the editor's saved originals (a path through checkpoints, a curve, the
        plane through three models); checkpointed, keyed by the tensors `fingerprint`, into `checkpoint_dir` if given;
        weights and flags restored after."""
        checkpoint = self.checkpoint(checkpoint_dir, checkpoint_every, kind, axes, [], fingerprint)
        with editing(self.model, params) as editor, self.precision():
            values, metrics, wall = self._grid(
                grid_points(axes),
                lambda point: place(editor, point),
                desc or kind,
                checkpoint,
                graphs=self.config.graphs,
            )
        return GridResult.of(values, metrics, wall, self.partials(checkpoint), checkpoint)

    def _grid(
        self,
        points: list[tuple[float, ...]],
        set_point: Callable[[tuple[float, ...]], None] | None,
        desc: str,
        checkpoint: GridCheckpoint | None,
        *,
        graphs: bool = False,
        stacked: StackedPoints | None = None,
        chunk: int = 1,
    ) -> Grid:
        return run_grid(
            self.model,
            self.objective,
            points,
            set_point,
            progress=self.config.progress,
            desc=desc,
            checkpoint=checkpoint,
            stacked=stacked,
            chunk=chunk,
            shard=self.shard,
            graphs=graphs,
        )


def check_eager(objective: Objective, config: ExecutionConfig) -> None:
    """Refuse `compile=True` for an objective that must run eagerly (`Objective.eager_only`: generation)."""
    if config.compile and objective.eager_only:
        raise ConfigError(
            f"`compile=True` cannot run {type(objective).__name__}: its evaluation reads every step's tokens back to "
            "the host, so a compiled forward would be rebuilt at every step; pass `compile=False`."
        )


def direction_fingerprint(direction: Any) -> str:
    """A fingerprint of a direction's tensors (a low-rank direction's factors), for checkpoint keys."""
    if isinstance(direction, LowRankDirection):
        flat = {f"{n}.{i}": t for n, pair in direction.factors.items() for i, t in enumerate(pair)}
        return tensor_fingerprint(flat)
    return tensor_fingerprint(direction.tensors)
