"""Checkpoints of partial grids, so that finished points are never lost.

While a grid runs, the values computed so far are written next to the output every N points and when
the run stops early (exception, Ctrl-C), atomically: arrays to `.hf_landscape_partial.safetensors`,
then `.hf_landscape_partial.json` (the commit marker), each through a temporary file and `os.replace`.
A run with the same configuration in the same folder resumes from there and computes only the missing
points; a run with a different configuration is refused rather than merged. The files are removed
once the grid is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import SurfaceError

logger = logging.getLogger(__name__)

ARRAYS_NAME = ".hf_landscape_partial.safetensors"
META_NAME = ".hf_landscape_partial.json"


def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A cheap fingerprint of named tensors: names, shapes, dtypes, float64 sums and sums of squares."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.numel():
            t64 = t.to(torch.float64)
            h.update(np.array([float(t64.sum()), float((t64 * t64).sum())]).tobytes())
    return h.hexdigest()[:32]


class GridCheckpoint:
    """Saves and reloads the points of a grid computed so far.

    Args:
        folder: where the partial files live (the output folder of the surface).
        key: everything that decides the values (model, objective, directions, coordinates); a saved
            checkpoint with another key is refused.
        every: save after this many new points (and always when the run stops early).
    """

    def __init__(self, folder: str | os.PathLike, key: dict[str, Any], *, every: int = 10) -> None:
        if not isinstance(every, int) or every < 1:
            from .errors import ConfigError

            raise ConfigError(f"`checkpoint_every` must be a positive integer, got {every!r}.")
        self.folder = Path(folder)
        self.key = json.loads(json.dumps(key, sort_keys=True, default=str))
        self.every = every
        self.resumed_points = 0

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.folder / ARRAYS_NAME, self.folder / META_NAME

    def load(self, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(values, done mask, metrics) from a saved checkpoint with this key, or fresh arrays."""
        values, done = np.full(n, np.nan), np.zeros(n, dtype=bool)
        metrics: dict[str, np.ndarray] = {}
        arrays_path, meta_path = self.paths
        if not meta_path.is_file():
            return values, done, metrics
        try:
            saved = json.loads(meta_path.read_text())
            arrays = {k: v.numpy() for k, v in load_file(str(arrays_path)).items()}
        except Exception as err:  # a damaged checkpoint must not be merged into a new run
            raise SurfaceError(
                f"The partial grid in {str(self.folder)!r} cannot be read ({type(err).__name__}: {err}); delete "
                f"{META_NAME} and {ARRAYS_NAME} there to start over."
            ) from None
        if saved.get("key") != self.key:
            changed = sorted(
                k for k in set(self.key) | set(saved.get("key", {})) if self.key.get(k) != saved["key"].get(k)
            )
            raise SurfaceError(
                f"{str(self.folder)!r} holds a partial grid of a different configuration (differs in {changed}); "
                f"use another output folder, or delete {META_NAME} and {ARRAYS_NAME} there to discard it."
            )
        if saved.get("arrays_sha256") != _sha256(arrays_path):
            raise SurfaceError(
                f"The partial grid in {str(self.folder)!r} is corrupted; delete {ARRAYS_NAME} and {META_NAME}."
            )
        done = arrays["done"].astype(bool)
        values = arrays["values"].astype(np.float64)
        metrics = {k[len("metrics.") :]: v.astype(np.float64) for k, v in arrays.items() if k.startswith("metrics.")}
        self.resumed_points = int(done.sum())
        logger.warning(
            "resuming a partial grid from %s: %d of %d points already done", self.folder, self.resumed_points, n
        )
        return values, done, metrics

    def save(self, values: np.ndarray, done: np.ndarray, metrics: dict[str, np.ndarray]) -> None:
        arrays_path, meta_path = self.paths
        tmp_arrays = arrays_path.with_name(arrays_path.name + f".tmp-{os.getpid()}")
        tmp_meta = meta_path.with_name(meta_path.name + f".tmp-{os.getpid()}")
        tensors = {"values": torch.from_numpy(values.copy()), "done": torch.from_numpy(done.astype(np.uint8))}
        tensors.update({f"metrics.{k}": torch.from_numpy(v.copy()) for k, v in metrics.items()})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp_arrays))
            record = {
                "key": self.key,
                "done": int(done.sum()),
                "points": len(done),
                "arrays_sha256": _sha256(tmp_arrays),
            }
            tmp_meta.write_text(json.dumps(record, sort_keys=True, indent=2))
            os.replace(tmp_arrays, arrays_path)
            os.replace(tmp_meta, meta_path)
        except OSError as err:
            raise SurfaceError(
                f"Cannot write the partial grid to {str(self.folder)!r} ({err.strerror or err}); free disk space or "
                "make the folder writable. Points saved earlier there are intact."
            ) from None
        finally:
            for tmp in (tmp_arrays, tmp_meta):
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass

    def clear(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
