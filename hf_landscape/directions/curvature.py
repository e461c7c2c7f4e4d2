"""The direction kinds `"hessian"` and `"ggn"`: the top eigenvectors of the Hessian (or of the generalized
Gauss-Newton matrix) at the model's weights, so that `probe.plane(directions="hessian")` shows the sharpest slice of
the landscape beside the random one (as Landscaper and loss-landscape-3d draw it).

The eigenvectors come from `curvature.hessian_eigenvalues` (thick-restart Lanczos) over the parameters a random
direction would move by default (matrices only: `include_1d=False`), so the two planes perturb the same weights. Each
direction records its eigenvalue λ (of the unit eigenvector), its residual, the operator and how it was scaled.

Normalization, `CurvatureDirectionConfig.normalization`:

- `"model"` (default): the unit eigenvector y times ‖θ‖, the norm of the selected weights, as a random direction
  with `normalization="model"`. It is still an eigenvector, so along it L(θ + αd) = L(θ) + α·gᵀd + ½α²·λ‖θ‖² + O(α³):
  the curvature per unit of α is λ‖θ‖², recorded as `curvature_along`.
- `"filter"` / `"layer"`: each output unit (each tensor) rescaled to the norm of the same unit of the weights, as Li
  et al.'s random directions, so spans compare with a filter-normalized random plane; the result is no longer an
  eigenvector (the rescaling changes its direction), only a direction built from one.
- `"none"`: the unit eigenvector itself (α in units of parameter-space distance).

An eigenvector's sign is arbitrary; each is turned so that its entry of largest magnitude is positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import BaseConfig, check_choice, check_patterns
from ..curvature.eigen import hessian_eigenvalues
from ..curvature.operators import HVP_MODES, check_fd_step
from ..errors import ConfigError, DirectionError
from .base import Direction
from .random import NORMALIZATIONS, _normalized, unit_dim
from .registry import kind_config, register_direction_kind


@dataclass
class CurvatureDirectionConfig(BaseConfig):
    """How the `"hessian"` / `"ggn"` directions are found and scaled.

    Args:
        normalization (`str`, defaults to `"model"`): `"model"`, `"filter"`, `"layer"` or `"none"` (see the module
            docstring: only `"model"` and `"none"` keep an eigenvector's direction).
        include_1d (`bool`, defaults to `False`): include biases and norm weights (as random directions do not).
        include, exclude (`list[str]`, *optional*): regular expressions on parameter names.
        hvp (`str`, defaults to `"exact"`): `"exact"` or `"finite_difference"` products.
        fd_step (`float`, *optional*): the relative finite-difference step.
        tol (`float`, defaults to 1e-3): Lanczos' relative residual tolerance.
        max_iter (`int`, defaults to 100): products Lanczos may use.
    """

    normalization: str = field(default="model", metadata={"help": "model, filter, layer or none"})
    include_1d: bool = field(default=False, metadata={"help": "include biases and norm weights"})
    include: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to include"})
    exclude: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to leave out"})
    hvp: str = field(default="exact", metadata={"help": "exact or finite_difference"})
    fd_step: float | None = field(default=None, metadata={"help": "relative finite-difference step"})
    tol: float = field(default=1e-3, metadata={"help": "Lanczos relative residual tolerance"})
    max_iter: int = field(default=100, metadata={"help": "products Lanczos may use"})

    def __post_init__(self) -> None:
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        check_choice("hvp", self.hvp, HVP_MODES)
        self.fd_step = check_fd_step(self.fd_step)
        if not isinstance(self.include_1d, bool):
            raise ConfigError(f"`include_1d` must be True or False, got {self.include_1d!r}.")
        inc, exc = check_patterns("include", self.include), check_patterns("exclude", self.exclude)
        self.include = list(inc) if inc is not None else None
        self.exclude = list(exc) if exc is not None else None
        ok = isinstance(self.tol, (int, float)) and not isinstance(self.tol, bool) and math.isfinite(self.tol)
        if not ok or self.tol <= 0:
            raise ConfigError(f"`tol` must be a finite number > 0, got {self.tol!r}.")
        if not isinstance(self.max_iter, int) or isinstance(self.max_iter, bool) or self.max_iter < 2:
            raise ConfigError(f"`max_iter` must be an integer >= 2, got {self.max_iter!r}.")


def curvature_directions(
    model: torch.nn.Module,
    objective: Any,
    seed: int,
    *,
    axes: int,
    operator: str,
    config: CurvatureDirectionConfig,
    progress: bool = False,
) -> list[Direction]:
    """The top `axes` eigenvectors of `operator` at the model's weights, scaled as `config.normalization` says."""
    result = hessian_eigenvalues(
        model,
        objective,
        k=axes,
        tol=config.tol,
        max_iter=max(config.max_iter, axes),
        include=config.include,
        exclude=config.exclude,
        include_1d=config.include_1d,
        seed=seed,
        return_eigenvectors=True,
        operator=operator,
        hvp=config.hvp,
        fd_step=config.fd_step,
        progress=progress,
    )
    if result.eigenvectors is None:  # asked for with return_eigenvectors=True above
        raise DirectionError("The eigenvalue search returned no eigenvectors to draw curvature directions from.")
    params = dict(model.named_parameters())
    theta_norm = math.sqrt(sum(float(params[n].detach().double().pow(2).sum()) for n in result.eigenvectors[0].keys()))
    out = []
    for i, vector in enumerate(result.eigenvectors):
        tensors = _signed(dict(vector.tensors))
        tensors, scale = _scaled(model, params, tensors, config.normalization, theta_norm)
        eigenvalue = float(result.eigenvalues[i])
        record = {
            "kind": operator,
            "seed": seed,
            "index": i,
            "eigenvalue": eigenvalue,
            "residual": float(result.residuals[i]),
            "converged": result.converged,
            "operator": operator,
            "normalization": config.normalization,
            "scale": scale,
            "curvature_along": eigenvalue * scale**2 if scale is not None else None,
            **{k: v for k, v in config.to_dict().items() if k != "normalization"},
        }
        out.append(Direction(tensors, record))
    return out


def _signed(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vector turned so that its entry of largest magnitude is positive (the first such entry, in name order)."""
    best, sign = -1.0, 1.0
    for t in tensors.values():
        flat = t.reshape(-1)
        i = int(flat.abs().argmax())
        if float(flat[i].abs()) > best:
            best, sign = float(flat[i].abs()), 1.0 if float(flat[i]) >= 0 else -1.0
    return {n: t * sign for n, t in tensors.items()} if sign < 0 else tensors


def _scaled(
    model: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    tensors: dict[str, torch.Tensor],
    normalization: str,
    theta_norm: float,
) -> tuple[dict[str, torch.Tensor], float | None]:
    """(the scaled tensors, the factor applied to the unit eigenvector, None when not one factor)."""
    if normalization == "none":
        return tensors, 1.0
    if normalization == "model":
        return {n: t * theta_norm for n, t in tensors.items()}, theta_norm
    out = {}
    for name, t in tensors.items():
        w = params[name]
        (d,) = _normalized(w, [t.detach().to(w.device, torch.float32).clone()], unit_dim(model, name), normalization)
        out[name] = d
    return out, None


def _kind(operator: str) -> Any:
    def draw(
        model: torch.nn.Module,
        seed: int,
        *,
        axes: int,
        objective: Any,
        progress: bool = False,
        config: CurvatureDirectionConfig | None = None,
        **options: Any,
    ) -> list[Direction]:
        chosen = kind_config(CurvatureDirectionConfig, config, options)
        return curvature_directions(
            model, objective, seed, axes=axes, operator=operator, config=chosen, progress=progress
        )

    draw.__name__ = f"{operator}_kind"
    draw.__doc__ = (
        f"The kind {operator!r}: the top eigenvectors of the {operator} at the weights (options: "
        "`CurvatureDirectionConfig`'s fields)."
    )
    return draw


hessian_kind = register_direction_kind("hessian", needs_objective=True)(_kind("hessian"))
ggn_kind = register_direction_kind("ggn", needs_objective=True)(_kind("ggn"))
