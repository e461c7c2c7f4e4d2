"""The plane through three models θ_a (the probed one), θ_b and θ_c, in true distances (Garipov et al. 2018, fig. 1).

The basis is Gram-Schmidt's: u = (θ_b − θ_a)/‖θ_b − θ_a‖, v the unit part of θ_c − θ_a orthogonal to u, so the
models sit at a = (0, 0), b = (‖θ_b − θ_a‖, 0) and c = (⟨θ_c − θ_a, u⟩, ‖θ_c − θ_a − ⟨θ_c − θ_a, u⟩u‖), and a point
(x, y) is θ_a + x·u + y·v (norms over every moving weight: `weights.moving_weights`, a PeftModel's adapter only).
The grid covers the three models with a margin; each model's own point is also evaluated with that model's weights
copied in exactly (`metadata["point_losses"]`), so it equals the model's own loss bit for bit. A trained curve
(`probe.connect` between two of the three) is projected onto the plane and drawn on the plots.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..directions.base import Direction
from ..errors import ConfigError, DirectionError
from ..grid import check_grid_size, grid_axis
from ..provenance import surface_metadata
from ..surface import Surface, grid_surface
from .weights import moving_weights

if TYPE_CHECKING:
    from ..probe import LandscapeProbe

#: θ_c counts as on the line through θ_a and θ_b when its distance from it is below this share of ‖θ_c − θ_a‖
COLLINEAR_RTOL = 1e-4


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return math.fsum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))


def plane_basis(
    start: list[torch.Tensor], b: list[torch.Tensor], c: list[torch.Tensor], names: tuple[str, str, str]
) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, tuple[float, float]]]:
    """The orthonormal basis (u, v) of the plane through `start`, `b` and `c` (float32 or wider tensors) and each
    model's coordinates, keyed by `names`.

    Raises:
        DirectionError: b equals start, or c lies on the line through them (within `COLLINEAR_RTOL`).
    """
    db = [y - x.to(y.dtype) for x, y in zip(start, b)]
    dc = [y - x.to(y.dtype) for x, y in zip(start, c)]
    length = math.sqrt(_dot(db, db))
    if length == 0.0:
        raise DirectionError(f"`{names[1]}` has the probed model's weights; the three models span no plane.")
    u = [t / length for t in db]
    along = _dot(dc, u)
    w = [t - along * e for t, e in zip(dc, u)]
    height = math.sqrt(_dot(w, w))
    reach = math.sqrt(_dot(dc, dc))
    if height <= COLLINEAR_RTOL * reach:
        raise DirectionError(
            f"The three models are collinear: `{names[2]}` lies {height:.3g} from the line through the other two "
            f"({height / reach if reach else 0.0:.2g} of its distance {reach:.3g}); they span no plane. Use "
            "`probe.interpolate([model_b, model_c])` for a path through them, or a third model off that line."
        )
    v = [t / height for t in w]
    return u, v, {names[0]: (0.0, 0.0), names[1]: (length, 0.0), names[2]: (along, height)}


def plane_axes_around(
    points: dict[str, tuple[float, float]], steps: Any, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Grid axes covering `points` with `margin` (a share of the larger of the two extents) on every side."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise ConfigError(f"`margin` must be a finite number >= 0, got {margin!r}; e.g. margin=0.2.")
    nx, ny = (steps, steps) if isinstance(steps, int) else tuple(steps)
    xs, ys = [p[0] for p in points.values()], [p[1] for p in points.values()]
    pad = margin * max(max(xs) - min(xs), max(ys) - min(ys))
    x = grid_axis(nx, (min(xs) - pad, max(xs) + pad), "steps/margin (x)")
    y = grid_axis(ny, (min(ys) - pad, max(ys) + pad), "steps/margin (y)")
    return x, y


def plane_through_models(
    probe: LandscapeProbe,
    model_b: Any,
    model_c: Any,
    *,
    steps: Any,
    margin: float,
    names: tuple[str, str, str],
    curve: Surface | None,
    checkpoint_dir: Any,
    checkpoint_every: int,
) -> Surface:
    """`probe.plane_through`: the basis, the grid around the three models, the grid's losses and each model's own."""
    from ..hub.models import check_materialized

    if not isinstance(steps, int) and not (isinstance(steps, (list, tuple)) and len(steps) == 2):
        raise ConfigError(f"`steps` must be an int or (nx, ny), got {steps!r}.")
    if len(set(names)) != 3 or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"`names` must be three different non-empty strings, got {names!r}.")
    if curve is not None and "curve" not in curve.metadata:
        raise ConfigError("`curve` must be a surface from `probe.connect`, with its bend in `curve.directions`.")
    for argument, other in (("model_b", model_b), ("model_c", model_c)):
        if not isinstance(other, torch.nn.Module):
            raise DirectionError(f"`{argument}` must be a torch model of the probed model's architecture.")
        check_materialized(other, argument)
    model = probe.model
    params, (b, c) = moving_weights(model, [model_b, model_c], "`plane_through`")
    start = [p.detach() for p in params.values()]
    u, v, points = plane_basis(start, b, c, names)
    x, y = plane_axes_around(points, steps, margin)
    check_grid_size(len(x) * len(y), "steps")
    began = time.perf_counter()
    dtypes = [p.dtype for p in params.values()]
    tensors = [[t.to(d) for t, d in zip(u, dtypes)], [t.to(d) for t, d in zip(v, dtypes)]]
    exact = {
        points[names[1]]: [t.to(d) for t, d in zip(b, dtypes)],
        points[names[2]]: [t.to(d) for t, d in zip(c, dtypes)],
    }

    def place(editor: Any, point: tuple[float, ...]) -> None:
        if point in exact:
            with torch.no_grad():
                torch._foreach_copy_(editor.params, exact[point])
        else:
            editor.set_linear(point, tensors)

    runner = probe.runner
    names_list = list(params)
    keyed = {f"u:{n}": t for n, t in zip(names_list, u)} | {f"v:{n}": t for n, t in zip(names_list, v)}
    run = runner.run_placed(
        "plane_through", [x, y], params, place, fingerprint=keyed, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, desc="plane through three models",
    )  # fmt: skip
    at = list(points.values())
    own = runner.run_placed(
        "plane_through", [np.arange(3.0)], params, lambda editor, point: place(editor, at[int(point[0])]),
        fingerprint=keyed, desc="the three models",
    )  # fmt: skip
    basis = [
        Direction({n: t.detach().clone() for n, t in zip(names_list, axis)}, {"kind": "plane_through", "axis": k})
        for k, axis in enumerate((u, v))
    ]
    record = {"steps": [len(x), len(y)], "span": [[float(x[0]), float(x[-1])], [float(y[0]), float(y[-1])]]}
    meta = surface_metadata(
        "plane_through", runner, probe.provenance, directions=basis, seed=None, grid=record,
        wall=time.perf_counter() - began,
    )  # fmt: skip
    meta["points"] = {n: [float(p[0]), float(p[1])] for n, p in points.items()}
    meta["point_losses"] = {n: float(value) for n, value in zip(points, np.asarray(own.values).ravel())}
    meta["margin"] = float(margin)
    if curve is not None:
        meta["curve_on_plane"] = project_curve(curve, start, u, v, points[names[1]], list(params))
    return grid_surface([x, y], run.values, run.metrics, meta, directions=basis, partials=run.partials)


def project_curve(
    curve: Surface,
    start: list[torch.Tensor],
    u: list[torch.Tensor],
    v: list[torch.Tensor],
    end: tuple[float, float],
    names: list[str],
) -> dict[str, Any]:
    """The coordinates on the plane of a curve from θ_a to the model at `end` (`probe.connect(model_b)`): its bend
    projected, P(θ(t)) = c_bend(t)·P(θ_bend) + c_end(t)·end (θ_a is the origin), at the curve's own points of t, and
    how far the bend lies off the plane."""
    from .curves import coefficients

    bend = curve.directions[0] if curve.directions else None
    if not isinstance(bend, Direction) or sorted(bend.keys()) != sorted(names):
        raise ConfigError(
            "`curve` must be `probe.connect(model_b)` of this probed model, with its bend in `curve.directions`."
        )
    offset = [bend[n].to(u[0].device, u[0].dtype) - s.to(u[0].dtype) for n, s in zip(names, start)]
    px, py = _dot(offset, u), _dot(offset, v)
    off = math.sqrt(max(_dot(offset, offset) - px * px - py * py, 0.0))
    kind = curve.metadata["curve"]["kind"]
    coords = []
    for t in np.asarray(curve.x, dtype=float):
        _, cb, cc = coefficients(kind, float(t))
        coords.append([cb * px + cc * end[0], cb * py + cc * end[1]])
    return {"kind": kind, "t": np.asarray(curve.x, dtype=float).tolist(), "coordinates": coords, "bend_off_plane": off}
