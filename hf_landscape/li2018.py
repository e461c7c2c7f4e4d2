"""Li et al.'s (2018) `.h5` surface files (github.com/tomgoldstein/loss-landscape), read and written.

Their `plot_surface.py` writes one HDF5 file per surface: `xcoordinates` (and `ycoordinates` for a plane), one
dataset per quantity (`train_loss`, `train_acc`, and `test_loss`, `test_acc` when computed; accuracy in percent),
and `dir_file`, the path of the file holding the directions. A quantity is created at shape
`(len(xcoordinates), len(ycoordinates))`, but filled point by point in the order of
`np.meshgrid(xcoordinates, ycoordinates).ravel()`, β slowest: its flat data is in `(len(y), len(x))` order, which is
how `values` of a `Surface` is laid out, whatever the declared shape (the two agree on their square grids).
Points not computed yet hold -1.

`read_li2018_h5` reads such a file as the arrays and metadata of a `Surface` (`Surface.from_li2018_h5` makes it);
`write_li2018_h5` (the `.h5` export) writes a surface in the same layout, so their plotting scripts open ours. Only numeric datasets and
JSON attributes are read; nothing is unpickled. h5py is an optional dependency (`pip install 'hf_landscape[export]'`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import io
from .errors import SurfaceError

if TYPE_CHECKING:
    from .surface import Surface

logger = logging.getLogger(__name__)

COORDINATES = ("xcoordinates", "ycoordinates")
UNCOMPUTED = -1.0  # their fill value for points not computed yet
METADATA_ATTR = "hf_landscape"  # a surface written here carries its provenance as JSON in this root attribute
SPREAD = "loss_spread"  # the spread over direction seeds of a surface written here


def read_li2018_h5(path: str | os.PathLike, *, loss: str = "train_loss") -> dict[str, Any]:
    """The `Surface` arguments (`x`, `values`, `y`, `metrics`, `metadata`, `spread`) of one of Li et al.'s `.h5`
    surface files: `Surface(**read_li2018_h5(path))`, as `Surface.from_li2018_h5(path)` does.

    Args:
        path: the `.h5` file.
        loss: the dataset that becomes `values` (`"train_loss"` by default; `"test_loss"` for their test split).
            Every other dataset of the grid's size becomes a metric under its own name (`train_acc`, ...), except
            `loss_spread` (written by `write_li2018_h5`), which becomes `spread`.

    Points not computed yet (-1 in a `*_loss`, `*_acc` or `*_err` dataset) become NaN, with a warning. The surface's
    metadata records the source file (name, SHA-256, `dir_file`) under `"source"`; a file written by
    `write_li2018_h5` gets its full provenance back.

    Raises:
        SurfaceError: the file is missing or not HDF5, has no `xcoordinates`, no dataset `loss` (the message lists
            those it has), or a dataset whose size does not match the grid.
    """
    try:
        import h5py
    except ImportError:
        raise SurfaceError(
            "Reading Li et al.'s .h5 files needs the `h5py` package; install it with "
            "`pip install 'hf_landscape[export]'`."
        ) from None
    file = Path(path)
    if not file.is_file():
        raise SurfaceError(f"`path` {str(file)!r} is not a file; pass the .h5 file that plot_surface.py wrote.")
    try:
        handle = h5py.File(file, "r")
    except OSError as err:
        raise SurfaceError(f"`path` {str(file)!r} cannot be read as HDF5 ({err}).") from None
    with handle as f:
        if "xcoordinates" not in f:
            raise SurfaceError(f"{str(file)!r} has no `xcoordinates` dataset, so it is not a loss-landscape surface.")
        x = _numeric(f, "xcoordinates", file).ravel()
        y = _numeric(f, "ycoordinates", file).ravel() if "ycoordinates" in f else None
        shape = (len(x),) if y is None else (len(y), len(x))
        size = int(np.prod(shape))
        names = sorted(k for k in f if k not in COORDINATES and isinstance(f[k], h5py.Dataset))
        quantities = [k for k in names if f[k].dtype.kind in "fiu" and f[k].size == size]
        if loss not in quantities:
            raise SurfaceError(
                f"`loss` {loss!r} is not a dataset of {size} numbers in {str(file)!r}; it has "
                f"{quantities or 'none'} (pass one of them as `loss=`)."
            )
        arrays = {k: _grid(f, k, shape) for k in quantities}
        dir_file = _text(f["dir_file"][()]) if "dir_file" in f else None
        stored = f.attrs.get(METADATA_ATTR)
    for name, array in arrays.items():
        if name.endswith(("_loss", "_acc", "_err")):
            missing = array == UNCOMPUTED
            if missing.any():
                logger.warning(
                    "%s: %d of %d points of %r were not computed (-1); they are NaN",
                    file.name,
                    missing.sum(),
                    size,
                    name,
                )
                array[missing] = np.nan
    metadata: dict[str, Any] = {}
    if stored is not None:
        try:
            metadata = json.loads(_text(stored))
        except ValueError:
            metadata = {}
    metadata = metadata if isinstance(metadata, dict) else {}
    metadata.setdefault("kind", "line" if y is None else "plane")
    metadata.setdefault("model", {"name_or_path": None})
    metadata["source"] = {
        "format": "li2018_h5",
        "file": file.name,
        "sha256": io.sha256_file(file),
        "loss": loss,
        "dir_file": dir_file,
    }
    values = arrays.pop(loss)
    spread = arrays.pop(SPREAD, None)
    return {"x": x, "values": values, "y": y, "metrics": arrays, "metadata": metadata, "spread": spread}


def write_li2018_h5(surface: Surface, path: str | os.PathLike) -> None:
    """Write `surface` as Li et al.'s scripts expect: `xcoordinates`, `ycoordinates` (planes), the loss as
    `train_loss` (their default `--surf_name`), each metric under its own name and the spread as `loss_spread`,
    each in their layout; the surface's provenance as JSON in the root attribute `hf_landscape`."""
    import h5py

    shape = (len(surface.x),) if surface.y is None else (len(surface.x), len(surface.y))  # their declared shape
    datasets = {"train_loss": surface.values}
    reserved = {"train_loss", SPREAD, *COORDINATES}
    for name in sorted(surface.metrics):
        datasets[name if name not in reserved else f"metric.{name}"] = surface.metrics[name]
    if surface.spread is not None:
        datasets[SPREAD] = surface.spread
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = surface.x
        if surface.y is not None:
            f["ycoordinates"] = surface.y
        for name, values in datasets.items():
            f[name] = np.ascontiguousarray(values).reshape(shape)  # the same flat order, their declared shape
        f.attrs[METADATA_ATTR] = json.dumps(io.jsonable(surface.metadata), sort_keys=True, allow_nan=True)


def _numeric(f: Any, name: str, file: Path) -> np.ndarray:
    data = f[name]
    if data.dtype.kind not in "fiu":
        raise SurfaceError(f"`{name}` in {str(file)!r} is not numeric (dtype {data.dtype}).")
    return np.asarray(data[()], dtype=np.float64)


def _grid(f: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    # Flat data in meshgrid order (β slowest), whatever the declared shape: see the module docstring.
    return np.array(f[name][()], dtype=np.float64).reshape(-1).reshape(shape)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
