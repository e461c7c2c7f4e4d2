"""Surfaces in the formats other tools open: a registry of file writers keyed by suffix, and the long table.

`export_surface(surface, path)` (or `surface.export(path)`) picks the writer from the suffix of `path`:

| suffix     | what                                                        | opens in                                   |
|------------|-------------------------------------------------------------|--------------------------------------------|
| `.parquet` | the long table: one row per grid point                      | pandas, `datasets`, DuckDB, the Hub        |
| `.csv`     | the same table as text                                      | any spreadsheet or script                  |
| `.glb`     | a triangle mesh, the loss as height and colour (planes)     | Gradio `Model3D`, three.js, Blender        |
| `.vtp`     | VTK XML PolyData, as Li et al.'s `h52vtp.py` writes         | ParaView, VTK                              |
| `.h5`      | Li et al.'s surface file (`xcoordinates`, `train_loss`, ...)| their `plot_2D.py`, `plot_1D.py`, `h52vtp` |

The long table has the columns `alpha` (and `beta` for planes), `loss`, one column per metric, `loss_spread` and
`loss_seed_<seed>` for surfaces made over several direction seeds; `surface_columns` gives it as numpy columns and
`surface_table` as a `pyarrow.Table` carrying the surface's provenance in its schema metadata (what the Parquet
writer writes, and what a Hub dataset push reuses).

A new format registers itself with `register_export_format(suffix, writer, description=...)`; nothing central
grows an `elif`. Every writer writes a temporary file beside the target, renamed into place when complete, so a
failed export leaves no half-written file. What does not live here: the HTML viewer (`viewer/`), matplotlib
figures (`plotting/`) and reading Li et al.'s files (`li2018.py`).
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import logging
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import io
from .errors import SurfaceError

if TYPE_CHECKING:
    import pyarrow

    from .surface import Surface

logger = logging.getLogger(__name__)

Writer = Callable[["Surface", Path], None]

TABLE_METADATA_KEY = b"hf_landscape"  # schema metadata of `surface_table`: kind, shape and provenance as JSON


@dataclass(frozen=True)
class ExportFormat:
    """One registered export format.

    Args:
        suffix: the file suffix, lower case with its dot (`".glb"`).
        writer: `writer(surface, path)` writes the whole file at `path` (a temporary name beside the target).
        description: what the file is and what opens it, shown in error messages.
        requires: an optional package the writer imports (`"trimesh"`), checked before anything is written.
        extra: the `hf_landscape` extra that installs `requires`.
        planes_only: the format holds planes only (a line is refused with a clear error).
    """

    suffix: str
    writer: Writer
    description: str
    requires: str | None = None
    extra: str | None = None
    planes_only: bool = False


EXPORT_FORMATS: dict[str, ExportFormat] = {}


def register_export_format(
    suffix: str,
    writer: Writer,
    *,
    description: str,
    requires: str | None = None,
    extra: str | None = None,
    planes_only: bool = False,
) -> None:
    """Register (or replace) the writer for files ending in `suffix` (e.g. `".ply"`).

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.export import EXPORT_FORMATS, register_export_format
    >>> def write_txt(surface, path):
    ...     path.write_text(" ".join(f"{v:g}" for v in surface.values))
    >>> register_export_format(".txt", write_txt, description="values as text")
    >>> path = Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0])).export("/tmp/export_example.txt")
    >>> path.read_text()
    '2 1 2'
    >>> del EXPORT_FORMATS[".txt"]

    ```
    """
    if not isinstance(suffix, str) or not re.fullmatch(r"\.[a-z0-9][a-z0-9.]*", suffix):
        raise SurfaceError(f"`suffix` must be a lower-case file suffix with its dot, e.g. '.ply'; got {suffix!r}.")
    EXPORT_FORMATS[suffix] = ExportFormat(suffix, writer, description, requires, extra, planes_only)


def export_surface(surface: Surface, path: str | os.PathLike) -> Path:
    """Write `surface` to `path` in the format its suffix names; return the path.

    Everything is checked before anything is written: the suffix, that the surface has values, that the format
    holds this kind of surface, and that the optional package the format needs is installed. The parent folder is
    created if needed; an existing file at `path` is replaced (atomically).

    Raises:
        SurfaceError: unknown suffix (the message lists the known ones), a surface with no finite loss value, a
            line for a planes-only format, a missing optional package, or `path` is a folder.
    """
    target = Path(path)
    fmt = export_format(target)
    check_has_values(surface)
    if fmt.planes_only and surface.ndim != 2:
        raise SurfaceError(
            f"{fmt.suffix} ({fmt.description}) holds planes only, and this surface is a {surface.kind}; export a "
            "line as .csv, .parquet, .vtp or .h5."
        )
    if fmt.requires is not None and importlib.util.find_spec(fmt.requires) is None:
        raise SurfaceError(
            f"Writing {fmt.suffix} needs the `{fmt.requires}` package; install it with "
            f"`pip install 'hf_landscape[{fmt.extra or fmt.requires}]'`."
        )
    if target.is_dir():
        raise SurfaceError(f"`path` {str(target)!r} is a folder; pass a file path ending in {fmt.suffix}.")
    write_atomically(target, lambda tmp: fmt.writer(surface, tmp))
    logger.info("exported %s surface to %s", surface.kind, target)
    return target


def export_format(path: str | os.PathLike) -> ExportFormat:
    """The registered format that the suffix of `path` names (case-insensitive).

    Raises:
        SurfaceError: no format has that suffix; the message lists the known ones.
    """
    target = Path(path)
    fmt = EXPORT_FORMATS.get(target.suffix.lower())
    if fmt is None:
        known = ", ".join(f"{f.suffix} ({f.description})" for f in sorted(EXPORT_FORMATS.values(), key=_by_suffix))
        raise SurfaceError(
            f"`path` {str(target)!r} has suffix {target.suffix or '(none)'!r}, which names no export format; "
            f"use one of: {known}."
        )
    return fmt


def _by_suffix(fmt: ExportFormat) -> str:
    return fmt.suffix


def check_has_values(surface: Surface) -> None:
    """Refuse a surface with no values: one whose loss is NaN or infinite at every grid point (or whose grid is
    empty). There is nothing to draw or export; a surface with some non-finite points is fine (far-out points can
    diverge), and each format keeps them as it can."""
    if not np.isfinite(surface.values).any():
        raise SurfaceError(
            f"The surface has no values: its loss is NaN or infinite at every one of its {surface.values.size} grid "
            "points, so there is nothing to export or draw; evaluate the grid again (a smaller span keeps the loss "
            "finite)."
        )


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` for a temporary created exclusively beside `path`, then rename it to `path`
    (`hf_landscape.io.write_with`); on any error the temporary is removed and `path` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_with(path, write)


# --- the long table ------------------------------------------------------------------------------

RESERVED_COLUMNS = ("alpha", "beta", "loss", "loss_spread")


def surface_columns(surface: Surface) -> dict[str, np.ndarray]:
    """The surface as a long table, one row per grid point, as numpy columns in order.

    Rows run over `surface.values` in C order (for a plane: β slowest, α fastest). Columns: `alpha`, `beta` (planes),
    `loss`, each metric under its own name (sorted; `metric.<name>` where a name would clash with another column),
    `loss_spread` (surfaces over several seeds) and `loss_seed_<seed>` for each seed's own loss.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.export import surface_columns
    >>> x, y = np.array([-1.0, 1.0]), np.array([0.0, 2.0])
    >>> columns = surface_columns(Surface(x, np.array([[1.0, 2.0], [3.0, 4.0]]), y=y))
    >>> {name: column.tolist() for name, column in columns.items()}
    {'alpha': [-1.0, 1.0, -1.0, 1.0], 'beta': [0.0, 0.0, 2.0, 2.0], 'loss': [1.0, 2.0, 3.0, 4.0]}

    ```
    """
    columns: dict[str, np.ndarray] = {}
    if surface.y is None:
        columns["alpha"] = surface.x.copy()
    else:
        xx, yy = np.meshgrid(surface.x, surface.y)
        columns["alpha"], columns["beta"] = xx.ravel(), yy.ravel()
    columns["loss"] = surface.values.ravel().copy()
    seeds = seed_labels(surface)
    taken = set(RESERVED_COLUMNS) | {f"loss_seed_{s}" for s in seeds}
    for name in sorted(surface.metrics):
        columns[f"metric.{name}" if name in taken else name] = surface.metrics[name].ravel().copy()
    if surface.spread is not None:
        columns["loss_spread"] = surface.spread.ravel().copy()
    if surface.samples is not None:
        for seed, sample in zip(seeds, surface.samples):
            columns[f"loss_seed_{seed}"] = sample.ravel().copy()
    return columns


def seed_labels(surface: Surface) -> list[str]:
    """Labels of the draws in `surface.samples`: the recorded seeds, or 0, 1, ... when they were not recorded."""
    if surface.samples is None:
        return []
    seeds = surface.metadata.get("seeds")
    if isinstance(seeds, list) and len(seeds) == len(surface.samples):
        return [str(s) for s in seeds]
    return [str(k) for k in range(len(surface.samples))]


def surface_table(surface: Surface) -> pyarrow.Table:
    """The long table (`surface_columns`) as a `pyarrow.Table` of float64 columns; its schema metadata holds the
    surface's kind, grid shape and provenance as JSON under `b"hf_landscape"`.

    Example:
    ```python
    >>> import json
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.export import surface_table
    >>> table = surface_table(Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0])))
    >>> table.column_names, table.num_rows
    (['alpha', 'loss'], 3)
    >>> json.loads(table.schema.metadata[b"hf_landscape"])["shape"]
    [3]

    ```
    """
    import pyarrow as pa

    columns = surface_columns(surface)
    record = {
        "format": "hf_landscape.surface_table",
        "kind": surface.kind,
        "shape": list(surface.values.shape),
        "metadata": io.jsonable(surface.metadata),
    }
    schema = pa.schema(
        [pa.field(name, pa.float64()) for name in columns],
        metadata={TABLE_METADATA_KEY: json.dumps(record, sort_keys=True, allow_nan=True).encode()},
    )
    return pa.Table.from_arrays([pa.array(c, type=pa.float64()) for c in columns.values()], schema=schema)


def write_parquet(surface: Surface, path: Path) -> None:
    """The long table as Parquet (float64 columns; NaN and infinities kept as such)."""
    import pyarrow.parquet as pq

    pq.write_table(surface_table(surface), str(path))


def write_csv(surface: Surface, path: Path) -> None:
    """The long table as CSV: a header row, then one row per point; numbers in Python's shortest exact form
    (`repr`), non-finite values as `nan`, `inf`, `-inf` (which pandas and numpy read back)."""
    columns = surface_columns(surface)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(columns)
        for row in zip(*columns.values()):
            out.writerow([repr(float(v)) for v in row])


# --- meshes --------------------------------------------------------------------------------------

GLB_HEIGHT = 0.5  # the loss range spans this fraction of the wider coordinate span: a mesh as wide as it is tall


def grid_cells(nx: int, ny: int) -> np.ndarray:
    """The cells of an `ny` × `nx` grid of vertices (vertex `j * nx + i` at (x[i], y[j])), one row per cell: the
    corners (i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1), counter-clockwise in the (α, β) plane."""
    j, i = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    a = (j * nx + i).ravel()
    return np.stack([a, a + 1, a + nx + 1, a + nx], axis=1).astype(np.int64)


def plane_faces(nx: int, ny: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Two triangles per grid cell (`grid_cells`), wound counter-clockwise seen from above in glTF's y-up frame
    (α → x, β → −z, height → y), so their normals point up; cells with a corner outside `keep` (a flat boolean
    mask over the vertices) are left out."""
    cells = grid_cells(nx, ny)
    if keep is not None:
        cells = cells[keep[cells].all(axis=1)]
    return np.concatenate([cells[:, [0, 1, 3]], cells[:, [1, 2, 3]]])


def write_glb(surface: Surface, path: Path) -> None:
    """A binary glTF mesh of the plane: one vertex per grid point at (α, height, −β) in glTF's y-up frame, two
    triangles per grid cell, coloured by the loss (viridis), double-sided.

    The height is `(loss - offset) * scale`, scaled so the loss range spans `GLB_HEIGHT` of the wider coordinate
    span; `offset` and `scale` are in the mesh's `extras["hf_landscape"]`, with the surface's kind and model. The
    exact losses, every metric and the spread ride along as float32 vertex attributes `_LOSS`, `_<METRIC>` and
    `_SPREAD` (glTF's application-specific attributes). Grid points whose loss is not finite sit at the top of the
    range, grey, and the cells that touch them are left out.
    """
    import trimesh
    from matplotlib import colormaps
    from trimesh.exchange.gltf import export_glb

    if surface.y is None:  # `export_surface` refuses lines first; a direct call gets the same answer
        raise SurfaceError(f"A .glb mesh holds planes only, and this surface is a {surface.kind}.")
    x, y, z = surface.x, surface.y, surface.values
    finite = np.isfinite(z)
    lo, hi = float(z[finite].min()), float(z[finite].max())
    widest = max(float(np.ptp(x)), float(np.ptp(y))) or 1.0
    scale = GLB_HEIGHT * widest / (hi - lo) if hi > lo else 1.0
    height = (np.where(finite, z, hi) - lo) * scale
    xx, yy = np.meshgrid(x, y)
    vertices = np.stack([xx.ravel(), height.ravel(), -yy.ravel()], axis=1)
    shade = np.where(finite, (z - lo) / (hi - lo) if hi > lo else 0.5, 0.0).ravel()
    colours = (colormaps["viridis"](shade) * 255).round().astype(np.uint8)
    colours[~finite.ravel()] = (160, 160, 160, 255)
    attributes: dict[str, Any] = {"_LOSS": z.ravel().astype(np.float32)}
    names = {"_LOSS": "loss"}  # attribute -> the quantity it holds
    for name in sorted(surface.metrics):
        key = _attribute_name(name, attributes)
        attributes[key], names[key] = surface.metrics[name].ravel().astype(np.float32), name
    if surface.spread is not None:
        key = _attribute_name("spread", attributes)
        attributes[key], names[key] = surface.spread.ravel().astype(np.float32), "loss_spread"
    model = (surface.metadata.get("model") or {}).get("name_or_path")
    extras = {
        "hf_landscape": {
            "kind": surface.kind,
            "model": model,
            "grid": [len(x), len(y)],
            "axes": {"x": "alpha", "-z": "beta", "y": "(loss - offset) * scale"},
            "offset": lo,
            "scale": scale,
            "attributes": names,
        }
    }
    mesh = trimesh.Trimesh(
        vertices=vertices,
        faces=plane_faces(len(x), len(y), keep=finite.ravel()),
        vertex_colors=colours,
        vertex_attributes=attributes,
        metadata=extras,
        process=False,  # keep every vertex, in grid order
    )

    def double_sided(tree: dict[str, Any]) -> None:
        tree.setdefault("materials", []).append(
            {
                "name": "landscape",
                "doubleSided": True,
                "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0, "roughnessFactor": 1},
            }
        )
        for m in tree["meshes"]:
            for primitive in m["primitives"]:
                primitive["material"] = len(tree["materials"]) - 1

    path.write_bytes(export_glb(trimesh.Scene(mesh), tree_postprocessor=double_sided))


def _attribute_name(name: str, taken: dict[str, Any]) -> str:
    base = "_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    return out


def write_vtp(surface: Surface, path: Path) -> None:
    """VTK XML PolyData for ParaView, laid out as Li et al.'s `h52vtp.py` lays out theirs: points (α, β, loss) in
    grid order, one quad per grid cell (`Polys`) for a plane, one polyline (`Lines`) for a line, and the loss as
    point data. Every array of the surface rides along as point data (`loss`, each metric, `loss_spread`), with
    `loss` the active scalars.

    Arrays are written in VTK's inline base64 binary form (float64, little-endian, a UInt64 byte count before each
    array), which keeps every value exactly, NaN and infinities included; points whose loss is not finite sit at the
    top of the finite range, and the cells that touch them are left out.
    """
    z = surface.values
    finite = np.isfinite(z)
    top = float(z[finite].max())
    xx, yy = (surface.x, np.zeros_like(surface.x)) if surface.y is None else np.meshgrid(surface.x, surface.y)
    points = np.stack([np.ravel(xx), np.ravel(yy), np.where(finite, z, top).ravel()], axis=1)
    keep = finite.ravel()
    if surface.y is None:
        cells, kind = _polylines(keep), "Lines"
    else:
        quads = grid_cells(len(surface.x), len(surface.y))
        cells, kind = list(quads[keep[quads].all(axis=1)]), "Polys"
    arrays = {"loss": z.ravel()}
    for name in sorted(surface.metrics):
        arrays[name if name not in RESERVED_COLUMNS else f"metric.{name}"] = surface.metrics[name].ravel()
    if surface.spread is not None:
        arrays["loss_spread"] = surface.spread.ravel()
    counts = {k: 0 for k in ("Verts", "Lines", "Strips", "Polys")}
    counts[kind] = len(cells)
    connectivity = np.concatenate(cells) if cells else np.zeros(0, dtype=np.int64)
    offsets = np.cumsum([len(c) for c in cells]).astype(np.int64)
    lines = [
        '<?xml version="1.0"?>',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
        "  <PolyData>",
        f'    <Piece NumberOfPoints="{len(points)}" ' + " ".join(f'NumberOf{k}="{v}"' for k, v in counts.items()) + ">",
        '      <PointData Scalars="loss">',
        *(_vtk_array(name, values) for name, values in arrays.items()),
        "      </PointData>",
        "      <Points>",
        _vtk_array("Points", points, components=3),
        "      </Points>",
        f"      <{kind}>",
        _vtk_array("connectivity", connectivity),
        _vtk_array("offsets", offsets),
        f"      </{kind}>",
        "    </Piece>",
        "  </PolyData>",
        "</VTKFile>",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _polylines(keep: np.ndarray) -> list[np.ndarray]:
    """Runs of two or more consecutive finite points of a line, each one polyline cell."""
    cells, start = [], None
    for k, ok in enumerate([*keep.tolist(), False]):
        if ok and start is None:
            start = k
        elif not ok and start is not None:
            if k - start >= 2:
                cells.append(np.arange(start, k, dtype=np.int64))
            start = None
    return cells


def _vtk_array(name: str, values: np.ndarray, components: int = 1) -> str:
    from xml.sax.saxutils import quoteattr

    if values.dtype.kind == "f":
        data, kind = np.ascontiguousarray(values, dtype="<f8"), "Float64"
    else:
        data, kind = np.ascontiguousarray(values, dtype="<i8"), "Int64"
    raw = data.tobytes()
    encoded = base64.b64encode(struct.pack("<Q", len(raw))).decode() + base64.b64encode(raw).decode()
    finite = data[np.isfinite(data)] if kind == "Float64" else data
    ranges = f' RangeMin="{finite.min()!r}" RangeMax="{finite.max()!r}"' if finite.size and components == 1 else ""
    return (
        f'        <DataArray type="{kind}" Name={quoteattr(name)} NumberOfComponents="{components}" '
        f'format="binary"{ranges}>{encoded}</DataArray>'
    )


def _write_h5(surface: Surface, path: Path) -> None:
    from .li2018 import write_li2018_h5

    write_li2018_h5(surface, path)


register_export_format(
    ".parquet", write_parquet, description="long table, one row per point: pandas, datasets, the Hub's viewer"
)
register_export_format(".csv", write_csv, description="long table as text")
register_export_format(
    ".glb",
    write_glb,
    description="binary glTF mesh: Gradio Model3D, three.js, Blender",
    requires="trimesh",
    extra="export",
    planes_only=True,
)
register_export_format(".vtp", write_vtp, description="VTK XML PolyData: ParaView")
register_export_format(".h5", _write_h5, description="Li et al. (2018) surface file", requires="h5py", extra="export")

__all__ = [
    "EXPORT_FORMATS",
    "ExportFormat",
    "check_has_values",
    "export_format",
    "export_surface",
    "register_export_format",
    "surface_columns",
    "surface_table",
]
