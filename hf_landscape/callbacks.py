"""Trainer callbacks: `LandscapeCallback` streams parameter snapshots of a `transformers.Trainer` run to disk, for
trajectory plots; `CurvatureCallback` measures curvature on a held batch every N steps and logs it.

A run folder holds one safetensors file per snapshot, `step_{step:08d}.safetensors` (name -> tensor, on the
CPU), and `trajectory.json`, the index: which steps were saved, in which file, at which epoch, and the
training losses the Trainer logged. Snapshots are taken every `every_n_steps` optimizer steps, at the last
step, at train end if that step was not saved yet, and (by default) before the first step. One snapshot is
in memory at a time; files and the index are written atomically and durably (`io.write_bytes`), so a crash
never leaves a half-written file and no write follows a link planted in the folder.

`CurvatureCallback` hands its numbers to the Trainer's `log`, so they reach every `report_to` backend (TensorBoard,
Weights & Biases, ...) and `state.log_history`, under `curvature/<measure>`.

What does not live here: the PCA of the snapshots and the path's losses (`directions/trajectory.py`), the measures
themselves (`curvature/`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from . import io
from .config import check_patterns
from .errors import ConfigError

logger = logging.getLogger(__name__)

INDEX_NAME = "trajectory.json"
FORMAT = "hf_landscape.trajectory"
FORMAT_VERSION = 1


def snapshot_name(step: int) -> str:
    """The file name of the snapshot taken after optimizer step `step`."""
    return f"step_{step:08d}.safetensors"


class LandscapeCallback(TrainerCallback):
    """Save the model's parameters every `every_n_steps` optimizer steps, for `trajectory_directions`.

    Args:
        save_dir: the run folder (created if needed).
        every_n_steps: snapshot period in optimizer steps (`state.global_step`).
        save_initial: also save the weights before the first step (step 0 of a fresh run); Li et al. (2018)
            start the path at the initialization.
        include, exclude: regular expressions on parameter names; by default every floating-point parameter
            (tied weights once). Selection for the PCA happens later, so saving everything is the safe choice.
        include_1d: save biases and norm weights too.
        dtype: store snapshots in this dtype (e.g. `torch.float32` for a bf16 run, for exact differences);
            by default each parameter's own dtype.
        overwrite: a fresh run (global step 0) into a folder that already holds a trajectory replaces it; by
            default that is refused. A run resumed from a checkpoint keeps the snapshots up to its step.

    Example:
    ```python
    >>> import tempfile
    >>> from hf_landscape.callbacks import LandscapeCallback
    >>> callback = LandscapeCallback(tempfile.mkdtemp(), every_n_steps=10)
    >>> # trainer = Trainer(model, args, train_dataset=..., callbacks=[callback]); trainer.train()
    >>> callback.every_n_steps
    10

    ```
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        every_n_steps: int = 100,
        *,
        save_initial: bool = True,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        include_1d: bool = True,
        dtype: torch.dtype | None = None,
        overwrite: bool = False,
    ) -> None:
        if not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise ConfigError(f"`every_n_steps` must be an integer >= 1, got {every_n_steps!r}.")
        for name, value in (("save_initial", save_initial), ("include_1d", include_1d), ("overwrite", overwrite)):
            if not isinstance(value, bool):
                raise ConfigError(f"`{name}` must be True or False, got {value!r}.")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ConfigError(f"`dtype` must be a floating-point torch dtype (e.g. torch.float32), got {dtype!r}.")
        self.save_dir = Path(save_dir)
        if self.save_dir.exists() and not self.save_dir.is_dir():
            raise ConfigError(f"`save_dir` {str(self.save_dir)!r} is a file; pass a folder path.")
        self.every_n_steps = every_n_steps
        self.save_initial = save_initial
        inc = check_patterns("include", include)
        exc = check_patterns("exclude", exclude)
        self.include = list(inc) if inc is not None else None
        self.exclude = list(exc) if exc is not None else None
        self.include_1d = include_1d
        self.dtype = dtype
        self.overwrite = overwrite
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.train_losses: dict[int, float] = {}
        self._model_info: dict[str, Any] = {}

    # --- Trainer events -----------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._start(state.global_step)
        if self.save_initial and state.global_step == 0 and model is not None:
            self._save(model, state)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        step = state.global_step
        # The last step is saved here, before a `load_best_model_at_end` could swap the weights.
        if step % self.every_n_steps == 0 or (state.max_steps and step >= state.max_steps):
            self._save(model, state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        loss = logs.get("loss")
        if isinstance(loss, (int, float)):
            self.train_losses[state.global_step] = float(loss)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if model is not None and state.global_step not in self.snapshots:
            self._save(model, state)
        self._write_index()

    # --- files --------------------------------------------------------------------------------------

    def _start(self, global_step: int) -> None:
        """Create the folder; on resume keep the snapshots up to `global_step`; refuse to mix two runs."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        index = self.save_dir / INDEX_NAME
        self.snapshots, self.train_losses = {}, {}
        if not index.is_file():
            return
        if global_step == 0:
            if not self.overwrite:
                raise ConfigError(
                    f"`save_dir` {str(self.save_dir)!r} already holds a trajectory; choose another folder or pass "
                    "`overwrite=True` to `LandscapeCallback`."
                )
            for entry in self._read_index(index)["snapshots"]:
                io.remove(self.save_dir / entry["file"])  # each checked to lie inside the folder
            io.remove(index)
            return
        old = self._read_index(index)  # resumed from a checkpoint: keep what came before this step
        self._model_info = dict(old.get("model") or {})
        self.snapshots = {e["step"]: e for e in old["snapshots"] if e["step"] <= global_step}
        losses = old.get("train_losses") or []
        self.train_losses = {
            int(e["step"]): float(e["loss"])
            for e in losses
            if isinstance(e, dict) and isinstance(e.get("step"), int) and e["step"] <= global_step
        }

    def _read_index(self, index: Path) -> dict[str, Any]:
        from .directions.trajectory import checked_index

        return checked_index(self.save_dir, _read_json(index), ConfigError)

    def _selected(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        inc = [re.compile(p) for p in self.include] if self.include else None
        exc = [re.compile(p) for p in self.exclude or []]
        out = []
        for name, p in model.named_parameters():
            if not p.is_floating_point() or (p.dim() < 2 and not self.include_1d):
                continue
            if inc is not None and not any(r.search(name) for r in inc):
                continue
            if any(r.search(name) for r in exc):
                continue
            out.append((name, p))
        if not out:
            raise ConfigError(
                f"`LandscapeCallback` selects no parameter (include={self.include}, exclude={self.exclude}, "
                f"include_1d={self.include_1d}); loosen the selection."
            )
        return out

    def _save(self, model: torch.nn.Module, state: Any) -> None:
        step = int(state.global_step)
        params = self._selected(model)
        if any(p.numel() == 0 for _, p in params):
            logger.warning("some parameters are empty (sharded by ZeRO-3/FSDP?); their snapshots hold nothing.")
        # One snapshot in memory at a time, on the CPU; `clone` so that a CPU model's later steps cannot alias it.
        tensors = {n: p.detach().to("cpu", self.dtype or p.dtype, copy=True).contiguous() for n, p in params}
        path = self.save_dir / snapshot_name(step)
        io.write_safetensors(path, tensors, {"format": f"{FORMAT}.snapshot", "step": str(step)})
        self._model_info = {
            "class": type(model).__name__,
            "name_or_path": getattr(model, "name_or_path", "") or None,
            "parameters": [[n, list(t.shape)] for n, t in tensors.items()],  # in model order
            "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", ""),
        }
        del tensors
        epoch = getattr(state, "epoch", None)
        self.snapshots[step] = {"step": step, "file": path.name, "epoch": float(epoch) if epoch is not None else None}
        logger.info("saved trajectory snapshot at step %d to %s", step, path)
        self._write_index()

    def _write_index(self) -> None:
        if not self.snapshots:
            return
        snapshots = []
        for step in sorted(self.snapshots):
            entry = dict(self.snapshots[step])
            entry["loss"] = self.train_losses.get(step)  # the loss the Trainer logged at that step, if it did
            snapshots.append(entry)
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "every_n_steps": self.every_n_steps,
            "selection": {"include": self.include, "exclude": self.exclude, "include_1d": self.include_1d},
            "model": self._model_info,
            "snapshots": snapshots,
            "train_losses": [{"step": s, "loss": v} for s, v in sorted(self.train_losses.items())],
        }
        io.write_json(self.save_dir / INDEX_NAME, record)


#: what `CurvatureCallback` can measure, each with the defaults that keep it cheap (a few passes over the held batch)
CURVATURE_MEASURES: dict[str, dict[str, Any]] = {
    "critical_sharpness": {"rtol": 1e-2},
    "top_eigenvalue": {"tol": 1e-2, "max_iter": 20},
    "trace": {"samples": 12, "method": "hutch++"},
}


class CurvatureCallback(TrainerCallback):
    """Every `every_n_steps` optimizer steps, measure the curvature of the loss on a held batch and log it.

    Measures (`measures`): `"critical_sharpness"` (λc = 2/ηc along the gradient, one gradient and a few forwards;
    Kalra et al. 2026), `"top_eigenvalue"` (the Hessian's largest eigenvalue, Lanczos) and `"trace"` (Hutch++). Each
    is logged as `curvature/<measure>` through the Trainer's `log` (every `report_to` backend and
    `state.log_history`) once the callback is attached with `attach(trainer)`; without a trainer the numbers go to
    `state.log_history` and `history` only. The model comes back exactly as it was (weights, `.grad`, train mode,
    `requires_grad`), so training goes on as if nothing had been measured. It runs on the main process, on the
    model as it stands there (not for sharded training).

    Args:
        objective: the held batch: an hf_landscape `Objective` (e.g. `CausalLMObjective(held_texts, tokenizer)`), or
            a mapping with `input_ids` (and optionally `labels`, `attention_mask`) for a causal LM.
        every_n_steps: the period, in optimizer steps (`state.global_step`).
        measures: which of `CURVATURE_MEASURES`.
        options: measure -> keyword arguments for it (`{"trace": {"samples": 30}}`), over `CURVATURE_MEASURES`'
            defaults.
        at_start: also measure before the first step (step 0).

    Example:
    ```python
    >>> from hf_landscape.callbacks import CurvatureCallback
    >>> callback = CurvatureCallback({"input_ids": [[1, 2, 3, 4]]}, every_n_steps=50, measures=["critical_sharpness"])
    >>> # trainer = Trainer(model, args, train_dataset=...); callback.attach(trainer); trainer.train()
    >>> callback.every_n_steps, callback.measures
    (50, ['critical_sharpness'])

    ```
    """

    def __init__(
        self,
        objective: Any,
        every_n_steps: int = 100,
        *,
        measures: list[str] | tuple[str, ...] = ("critical_sharpness", "top_eigenvalue", "trace"),
        options: dict[str, dict[str, Any]] | None = None,
        at_start: bool = False,
    ) -> None:
        from .objectives import CausalLMObjective, Objective

        if isinstance(objective, Mapping):
            objective = CausalLMObjective(dict(objective))
        if not isinstance(objective, Objective):
            raise ConfigError(
                f"`objective` must be an hf_landscape `Objective` or a mapping with `input_ids` (the held batch), got "
                f"{type(objective).__name__}."
            )
        if not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise ConfigError(f"`every_n_steps` must be an integer >= 1, got {every_n_steps!r}.")
        measures = [measures] if isinstance(measures, str) else list(measures)
        unknown = [m for m in measures if m not in CURVATURE_MEASURES]
        if not measures or unknown:
            raise ConfigError(f"`measures` must be a non-empty list of {sorted(CURVATURE_MEASURES)}, got {measures!r}.")
        options = dict(options or {})
        if any(m not in measures or not isinstance(v, Mapping) for m, v in options.items()):
            raise ConfigError(f"`options` must map measures of {measures} to dicts of their options, got {options!r}.")
        if not isinstance(at_start, bool):
            raise ConfigError(f"`at_start` must be True or False, got {at_start!r}.")
        self.objective = objective
        self.every_n_steps = every_n_steps
        self.measures = measures
        self.options = {m: {**CURVATURE_MEASURES[m], **options.get(m, {})} for m in measures}
        self.at_start = at_start
        #: step -> the numbers logged at that step
        self.history: dict[int, dict[str, float]] = {}
        self._trainer: Any = None

    def attach(self, trainer: Any) -> CurvatureCallback:
        """Add this callback to `trainer` (once) and log through it; returns the callback."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self._trainer = trainer
        return self

    def measure(self, model: Any) -> dict[str, float]:
        """The chosen measures at the model's weights, as `{"curvature/<measure>": value}`."""
        from .probe import LandscapeProbe

        probe = LandscapeProbe(model, self.objective, progress=False)
        out: dict[str, float] = {}
        for name in self.measures:
            options = self.options[name]
            if name == "critical_sharpness":
                value = probe.critical_sharpness(**options).sharpness
            elif name == "top_eigenvalue":
                value = float(probe.hessian_eigenvalues(k=1, **options).eigenvalues[0])
            else:
                value = probe.hessian_trace(**options).trace
            out[f"curvature/{name}"] = float(value)
        return out

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self._trainer is None and state.is_world_process_zero:
            logger.warning(
                "CurvatureCallback is not attached to the Trainer: its numbers reach `state.log_history` but no "
                "`report_to` logger; use `callback.attach(trainer)`."
            )
        if self.at_start and state.global_step == 0:
            self._log(model, state)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.every_n_steps == 0:
            self._log(model, state)

    def _log(self, model: Any, state: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        metrics = self.measure(model)
        self.history[int(state.global_step)] = metrics
        logger.info("curvature at step %d: %s", state.global_step, metrics)
        if self._trainer is not None:
            # `Trainer.log` clears `control.should_log`; keep the Trainer's own logging of this step.
            control = self._trainer.control
            should_log = control.should_log
            self._trainer.log(dict(metrics))
            self._trainer.control.should_log = should_log or self._trainer.control.should_log
        else:
            state.log_history.append({**metrics, "step": state.global_step})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{str(path)!r} is not a readable trajectory index ({err}).") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not an hf_landscape trajectory index (no format {FORMAT!r}).")
    return data
