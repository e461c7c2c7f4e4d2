"""Checkpoints of partial grids, so that finished points are never lost.

While a grid runs, the values computed so far are written next to the output every N points, when the run
stops early (exception, Ctrl-C) and when the grid is complete: arrays to `.hf_landscape_partial.safetensors`,
then `.hf_landscape_partial.json` (the commit marker, with the arrays' SHA-256), each atomically
(`io.write_bytes`); the saves when the run stops and when the grid is complete are durable too (`fsync`), the
periodic ones are not (an `fsync` costs milliseconds; a killed process loses nothing saved either way). A run with the same configuration in the same folder resumes from there and computes only
the missing points (none, for a complete grid); a run with a different configuration is refused rather than
merged. The files are removed only once the finished surface has been saved, durably, into the same folder
(`Surface.save_pretrained`), so a failed or killed final save never loses a point. While a grid runs, the
folder is locked (`io.folder_lock`): a second run there is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import ConfigError, SurfaceError

logger = logging.getLogger(__name__)

ARRAYS_NAME = ".hf_landscape_partial.safetensors"
META_NAME = ".hf_landscape_partial.json"


def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A cheap fingerprint of named tensors: names, shapes, dtypes, float64 sums and sums of squares."""

    def chunks() -> Iterator[bytes]:
        for name in sorted(tensors):
            t = tensors[name].detach()
            yield f"{name}|{tuple(t.shape)}|{t.dtype}|".encode()
            if t.numel():
                t64 = t.to(torch.float64)
                yield np.array([float(t64.sum()), float((t64 * t64).sum())]).tobytes()

    return io.sha256_of(chunks())[:32]


class GridCheckpoint:
    """Saves and reloads the points of a grid computed so far.

    Args:
        folder: where the partial files live (the output folder of the surface).
        key: everything that decides the values (model, objective, directions, coordinates); a saved
            checkpoint with another key is refused. Must be finite JSON (no NaN or inf).
        every: save after this many new points (and always when the run stops early or the grid is complete).
    """

    def __init__(self, folder: str | os.PathLike, key: dict[str, Any], *, every: int = 10) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"`checkpoint_every` must be a positive integer, got {every!r}.")
        self.folder = Path(folder)
        try:
            self.key = json.loads(json.dumps(key, sort_keys=True, default=str, allow_nan=False))
        except ValueError:
            raise ConfigError(
                "The grid's configuration holds NaN or inf (a coordinate or a fingerprint), so it cannot be resumed; "
                "use finite spans and weights."
            ) from None
        self.every = every
        #: points the run found saved by an earlier run (0 for a fresh grid), and the compute seconds those runs spent
        self.resumed_points = 0
        self.previous_compute_s = 0.0

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.folder / ARRAYS_NAME, self.folder / META_NAME

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Create the folder if needed, check it can be written, and hold its lock for the block."""
        io.check_output_folder(self.folder, argument="checkpoint_dir", names=(ARRAYS_NAME, META_NAME))
        io.make_output_folder(self.folder, argument="checkpoint_dir")
        with io.folder_lock(self.folder, argument="checkpoint_dir"):
            yield

    def _damaged(self, why: str) -> SurfaceError:
        return SurfaceError(
            f"The partial grid in {str(self.folder)!r} is damaged ({why}); delete {META_NAME} and {ARRAYS_NAME} "
            "there to start over."
        )

    def _read(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The saved record and arrays, checked to be what `save` writes; None when there is no partial grid."""
        arrays_path, meta_path = self.paths
        if not os.path.lexists(meta_path):
            return None
        if meta_path.is_symlink() or arrays_path.is_symlink():
            raise self._damaged(f"{META_NAME} or {ARRAYS_NAME} is a link, not a file hf_landscape wrote")
        try:
            record = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise self._damaged(f"{META_NAME} cannot be read: {type(err).__name__}: {err}") from None
        if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
            raise self._damaged(f"{META_NAME} has no configuration `key`")
        for name in ("done", "points"):
            if not isinstance(record.get(name), int) or isinstance(record.get(name), bool):
                raise self._damaged(f"{META_NAME} has no point count `{name}`")
        if not arrays_path.is_file():
            raise self._damaged(f"{ARRAYS_NAME} is missing")
        if record.get("arrays_sha256") != io.sha256_file(arrays_path):
            raise self._damaged(f"{ARRAYS_NAME} does not match the hash in {META_NAME}")
        try:
            from safetensors.torch import load_file

            arrays = {k: v.numpy() for k, v in load_file(str(arrays_path)).items()}
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise self._damaged(f"{ARRAYS_NAME} cannot be read: {type(err).__name__}: {err}") from None
        return record, arrays

    def load(self, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(values, done mask, metrics) from a saved checkpoint with this key, or fresh arrays."""
        values, done = np.full(n, np.nan), np.zeros(n, dtype=bool)
        metrics: dict[str, np.ndarray] = {}
        saved = self._read()
        if saved is None:
            return values, done, metrics
        record, arrays = saved
        if record["key"] != self.key:
            changed = sorted(k for k in set(self.key) | set(record["key"]) if self.key.get(k) != record["key"].get(k))
            raise SurfaceError(
                f"{str(self.folder)!r} holds a partial grid of a different configuration (differs in {changed}); "
                f"use another output folder, or delete {META_NAME} and {ARRAYS_NAME} there to discard it."
            )
        for name in ("values", "done"):
            if name not in arrays:
                raise self._damaged(f"{ARRAYS_NAME} has no `{name}` array")
        for name, array in arrays.items():
            if array.shape != (n,):
                raise self._damaged(
                    f"its `{name}` array holds {array.size} points in shape {array.shape}, but this grid has {n} points"
                )
        done = arrays["done"].astype(bool)
        if record["points"] != n or record["done"] != int(done.sum()):
            raise self._damaged(
                f"{META_NAME} counts {record['done']} of {record['points']} points, its arrays {int(done.sum())} of {n}"
            )
        values = arrays["values"].astype(np.float64)
        metrics = {k[len("metrics.") :]: v.astype(np.float64) for k, v in arrays.items() if k.startswith("metrics.")}
        self.resumed_points = int(done.sum())
        compute = record.get("compute_s", 0.0)
        self.previous_compute_s = float(compute) if isinstance(compute, (int, float)) and compute >= 0 else 0.0
        logger.warning(
            "resuming a partial grid from %s: %d of %d points already done", self.folder, self.resumed_points, n
        )
        return values, done, metrics

    def save(
        self,
        values: np.ndarray,
        done: np.ndarray,
        metrics: dict[str, np.ndarray],
        *,
        durable: bool = True,
        elapsed: float = 0.0,
    ) -> None:
        """Write the points so far (arrays, then the record that commits them), atomically; `durable=False` skips
        the `fsync`s (the periodic saves of a running grid: a killed process still loses nothing saved). The record
        keeps the compute seconds of every run so far (`elapsed`: this run's), so a resumed grid's total adds up."""
        arrays_path, meta_path = self.paths
        tensors = {"values": torch.from_numpy(values.copy()), "done": torch.from_numpy(done.astype(np.uint8))}
        tensors.update({f"metrics.{k}": torch.from_numpy(v.copy()) for k, v in metrics.items()})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            digest = io.write_safetensors(arrays_path, tensors, durable=durable)
            record = {
                "key": self.key,
                "done": int(done.sum()),
                "points": len(done),
                "arrays_sha256": digest,
                "compute_s": round(self.previous_compute_s + elapsed, 3),
            }
            io.write_json(meta_path, record, durable=durable)
        except OSError as err:
            raise SurfaceError(
                f"Cannot write the partial grid to {str(self.folder)!r} ({err.strerror or err}); free disk space or "
                "make the folder writable. Points saved earlier there are intact."
            ) from None

    def holds_this_grid(self) -> bool:
        """Whether the folder holds this grid's partial files (same key), which a saved surface makes redundant."""
        try:
            saved = self._read()
        except SurfaceError:
            return False
        return saved is not None and saved[0]["key"] == self.key

    def clear(self) -> None:
        """Remove the partial files (the record first, so that a crash in between leaves no half-partial)."""
        arrays_path, meta_path = self.paths
        io.remove(meta_path)
        io.remove(arrays_path)
        io.fsync_folder(self.folder)


def saved_points(folder: str | os.PathLike) -> int:
    """How many points the partial grids in `folder` and its direct subfolders (one per seed or process) hold: what
    running the same command again would not compute. Unreadable partial files count as none."""
    root = Path(folder)
    records = [root / META_NAME, *sorted(root.glob(f"*/{META_NAME}"))] if root.is_dir() else []
    total = 0
    for path in records:
        try:
            done = json.loads(path.read_text()).get("done")
        except (OSError, ValueError, AttributeError):
            continue
        total += done if isinstance(done, int) and not isinstance(done, bool) else 0
    return total
