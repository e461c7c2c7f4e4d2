"""The spectral density of the Hessian (or Gauss-Newton matrix, or empirical Fisher), by stochastic Lanczos
quadrature (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019): `hessian_spectrum`, `SpectrumResult`.

For a unit probe vector v, m steps of Lanczos from v give a tridiagonal T whose eigenvalues θⱼ (the Ritz nodes) and
squared first eigenvector components τⱼ (the weights, summing to 1) are an m-point Gauss quadrature of the spectral
measure μ_v = Σᵢ (uᵢᵀv)² δ_{λᵢ}: Σⱼ τⱼ f(θⱼ) = vᵀf(H)v exactly for every polynomial f of degree < 2m. With v
Rademacher/√n, E[μ_v] is the spectral density (1/n) Σᵢ δ_{λᵢ}, so the average over probes of the quadratures,
each node widened into a Gaussian of width σ, estimates it; its first moment is the trace divided by n (the trace
it implies is Hutchinson's estimate with the same probes, with a Student-t interval over them).

Full reorthogonalization keeps the nodes free of the "ghost" copies that loss of orthogonality makes, at the cost
of holding `steps` vectors; `reorthogonalize=False` holds three, as at LLM scale (Papyan 2019 and Granziol et al.
ran SLQ without it: ghosts duplicate nodes and split their weights, which leaves the density nearly unchanged).

What does not live here: the products (`operators`), the figure (`plotting.spectrum`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import io
from ..config import result_fields
from ..errors import ConfigError, HubSurfaceError, SurfaceError
from ..hub.mixin import FileSource, HubMixin
from ..stats import DEFAULT_CONFIDENCE, check_confidence, mean_interval
from . import rowspace
from .hvp import FlatParameters, check_int, check_positive, rademacher, select
from .operators import check_centre, check_operator, operator_for

logger = logging.getLogger(__name__)

SPECTRUM_NAME = "spectrum.json"
FORMAT = "hf_landscape.spectrum"
# The kernel width, as a fraction of the nodes' range, when none is given; the grid reaches `TAILS` widths beyond the
# extreme nodes (the Gaussians' mass outside it is below 1e-6) and has at least `POINTS_PER_WIDTH` points per width.
RELATIVE_WIDTH = 0.01
TAILS = 5.0
POINTS_PER_WIDTH = 5
MIN_GRID, MAX_GRID = 1001, 200_001


@dataclass
class SpectrumResult(HubMixin):
    """A spectral density by stochastic Lanczos quadrature.

    Args:
        nodes: `(probes, steps)` Ritz values of each probe's Lanczos run (NaN past a run that ended early because
            its Krylov space was exhausted: then its quadrature is exact with fewer nodes).
        weights: `(probes, steps)` their Gauss quadrature weights (each row sums to 1; 0 where nodes are NaN).
        quadratic_forms: vᵀHv of each unit probe (= Σⱼ τⱼθⱼ).
        num_parameters: n, the dimension.
        sigma: the width of the Gaussian each node is widened into for `density`.
        grid, density: the density on a grid (it integrates to 1 over the grid, to 1e-6).
        operator, hvp: the matrix and how its products were made.
        reorthogonalize: whether Lanczos reorthogonalized fully.
        seed: the probes' draw.
        confidence: the level of `trace_interval`.

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape.curvature import hessian_spectrum
    >>> model = torch.nn.Linear(4, 1, bias=False)
    >>> scales = torch.tensor([1.0, 2.0, 3.0, 10.0])
    >>> spectrum = hessian_spectrum(model, lambda m: 0.5 * (scales * m.weight[0] ** 2).sum(), steps=4, probes=2,
    ...                             progress=False)
    >>> sorted(round(x, 6) for x in spectrum.nodes[0].tolist()), round(spectrum.trace, 6)
    ([1.0, 2.0, 3.0, 10.0], 16.0)

    ```
    """

    nodes: np.ndarray
    weights: np.ndarray
    quadratic_forms: np.ndarray
    num_parameters: int
    sigma: float
    grid: np.ndarray = field(repr=False)
    density: np.ndarray = field(repr=False)
    operator: str = "hessian"
    hvp: str = "exact"
    reorthogonalize: bool = True
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE

    _hub_files: ClassVar[tuple[str, ...]] = (SPECTRUM_NAME,)
    _hub_noun: ClassVar[str] = "spectrum"
    _hub_error: ClassVar[type] = SurfaceError
    _hub_failure: ClassVar[type] = HubSurfaceError

    @property
    def probes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def steps(self) -> int:
        return int(self.nodes.shape[1])

    @property
    def trace(self) -> float:
        """The trace the quadrature implies, n · mean(vᵀHv) (Hutchinson's estimate with these probes)."""
        return float(self.num_parameters * self.quadratic_forms.mean())

    @property
    def trace_stderr(self) -> float:
        """Its standard error over the probes (NaN for one probe)."""
        if self.probes < 2:
            return math.nan
        return float(self.num_parameters * self.quadratic_forms.std(ddof=1) / math.sqrt(self.probes))

    @property
    def trace_interval(self) -> tuple[float, float]:
        """The `confidence` Student-t interval of the trace over the probes ((NaN, NaN) for one probe)."""
        return mean_interval(self.trace, self.trace_stderr, self.probes, self.confidence)

    def moment(self, power: int) -> float:
        """The quadrature's estimate of tr(Hᵖ)/n: the mean over probes of Σⱼ τⱼθⱼᵖ (exact for each probe, vᵀHᵖv,
        while `power` < 2·steps)."""
        nodes = np.nan_to_num(self.nodes)
        return float(np.mean(np.sum(self.weights * nodes**power, axis=1)))

    def density_at(self, x: Any, sigma: float | None = None) -> np.ndarray:
        """The density at the points `x`: each node a Gaussian of width `sigma` (default `self.sigma`) and mass
        (its weight / probes)."""
        return _density(
            np.asarray(x, dtype=np.float64), self.nodes, self.weights, self.sigma if sigma is None else sigma
        )

    def plot(self, *, title: str | None = None) -> Any:
        """The density on a symmetric-log eigenvalue axis (linear within ±`sigma`) and a log density axis, with the
        nodes marked below; returns the `Figure`."""
        from ..plotting.spectrum import plot_spectrum

        if title is None:
            low, high = self.trace_interval
            interval = "" if math.isnan(low) else f" ({self.confidence:.0%} interval [{low:.4g}, {high:.4g}])"
            title = (
                f"{self.operator} spectral density: n = {self.num_parameters:,}, {self.probes} probe(s) x "
                f"{self.steps} Lanczos steps, trace {self.trace:.4g}{interval}"
            )
        return plot_spectrum(self.grid, self.density, self.nodes, self.weights, sigma=self.sigma, title=title)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the grid and density, which `from_dict` recomputes from the nodes; JSON-able."""
        return {
            "format": FORMAT,
            "nodes": [[None if math.isnan(x) else float(x) for x in row] for row in self.nodes],
            "weights": self.weights.tolist(),
            "quadratic_forms": self.quadratic_forms.tolist(),
            "num_parameters": self.num_parameters,
            "sigma": self.sigma,
            "operator": self.operator,
            "hvp": self.hvp,
            "reorthogonalize": self.reorthogonalize,
            "seed": self.seed,
            "confidence": self.confidence,
            "trace": self.trace,
            "trace_interval": list(self.trace_interval),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpectrumResult:
        """The result `to_dict` describes (its grid and density recomputed)."""
        names = ("nodes", "weights", "quadratic_forms", "num_parameters", "sigma", "operator", "hvp")
        fields = result_fields(cls, data, (*names, "reorthogonalize", "seed", "confidence"))
        nodes = np.array([[math.nan if x is None else x for x in row] for row in fields["nodes"]], dtype=np.float64)
        weights = np.asarray(fields["weights"], dtype=np.float64)
        grid = density_grid(nodes, fields["sigma"])
        fields.update(nodes=nodes, weights=weights, grid=grid, density=_density(grid, nodes, weights, fields["sigma"]))
        fields["quadratic_forms"] = np.asarray(fields["quadratic_forms"], dtype=np.float64)
        return cls(**fields)

    # --- save / load (hub.HubMixin) ---------------------------------------------------------------------------

    def _save_pretrained(self, folder: Path, *, overwrite: bool, **options: Any) -> None:
        if options:
            raise ConfigError(f"A spectrum's `save_pretrained` takes no options, got {sorted(options)}.")
        io.check_output_folder(folder, argument="save_directory", names=(SPECTRUM_NAME,))
        text = json.dumps(self.to_dict(), sort_keys=True, indent=2, allow_nan=True) + "\n"
        io.make_output_folder(folder, argument="save_directory")
        with io.folder_lock(folder, argument="save_directory"):
            existing = folder / SPECTRUM_NAME
            if existing.is_file() and not overwrite and existing.read_text() != text:
                raise SurfaceError(
                    f"`save_directory` {str(folder)!r} already holds a different spectrum; choose another folder or "
                    "pass `overwrite=True`."
                )
            io.write_text(existing, text)

    @classmethod
    def _from_pretrained(cls, source: FileSource) -> SpectrumResult:
        path = source.path(SPECTRUM_NAME)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SurfaceError(f"{str(path)!r} is not a readable spectrum ({err}).") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SurfaceError(f"{str(path)!r} is not a spectrum written by hf_landscape (no format {FORMAT!r}).")
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError, ValueError) as err:
            raise SurfaceError(f"{str(path)!r} is not a complete spectrum ({err}).") from None


def density_grid(nodes: np.ndarray, sigma: float) -> np.ndarray:
    """An even grid from `TAILS` widths below the lowest node to as far above the highest, `POINTS_PER_WIDTH` points
    per width (between `MIN_GRID` and `MAX_GRID` points)."""
    finite = nodes[np.isfinite(nodes)]
    low, high = float(finite.min()) - TAILS * sigma, float(finite.max()) + TAILS * sigma
    points = int(np.clip(math.ceil((high - low) / sigma * POINTS_PER_WIDTH) + 1, MIN_GRID, MAX_GRID))
    return np.linspace(low, high, points)


def _density(x: np.ndarray, nodes: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    keep = np.isfinite(nodes) & (weights > 0)
    centres, mass = nodes[keep], weights[keep] / nodes.shape[0]
    out = np.zeros_like(x, dtype=np.float64)
    for start in range(0, len(centres), 256):
        c, w = centres[start : start + 256], mass[start : start + 256]
        out += (w[None, :] * np.exp(-0.5 * ((x.reshape(-1, 1) - c[None, :]) / sigma) ** 2)).sum(axis=1)
    return out / (sigma * math.sqrt(2.0 * math.pi))


def default_sigma(nodes: np.ndarray) -> float:
    """`RELATIVE_WIDTH` of the nodes' range (of their largest magnitude when they coincide; 1 when all are 0)."""
    finite = nodes[np.isfinite(nodes)]
    scale = float(finite.max() - finite.min()) or float(np.abs(finite).max()) or 1.0
    return RELATIVE_WIDTH * scale


def hessian_spectrum(
    model: torch.nn.Module,
    objective: Any,
    *,
    steps: int = 100,
    probes: int = 1,
    seed: int = 0,
    sigma: float | None = None,
    reorthogonalize: bool = True,
    offload: bool = False,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    include_1d: bool = True,
    operator: str = "hessian",
    hvp: str = "exact",
    fd_step: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    progress: bool = True,
) -> SpectrumResult:
    """The spectral density of the Hessian (or `operator`) at the model's weights, by stochastic Lanczos quadrature.

    Args:
        model: the model; its weights are not changed. Evaluated in eval mode.
        objective: a `CausalLMObjective`, `GlueObjective`, or callable `loss_fn(model) -> scalar tensor`.
        steps: Lanczos steps per probe (nodes of each quadrature; at most the dimension). Each is one product.
        probes: Rademacher probe vectors (one Lanczos run each); the density is their average.
        seed: the draw of the probes.
        sigma: the width of the Gaussian each node is widened into (default `RELATIVE_WIDTH` of the nodes' range).
        reorthogonalize: full reorthogonalization (holds `steps` vectors); False keeps three.
        offload: hold the Lanczos vectors on the CPU.
        include, exclude, include_1d: which parameters, as for `hessian_eigenvalues`.
        operator, hvp, fd_step: the matrix and its products, as for `hessian_eigenvalues`.
        confidence: the level of `trace_interval`.
        progress: tqdm progress bar over the products.
    """
    check_operator(objective, operator, hvp, "`hessian_spectrum`")
    check_int("steps", steps, 1)
    check_int("probes", probes, 1)
    confidence = check_confidence(confidence)
    if sigma is not None:
        sigma = check_positive("sigma", sigma)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    for name, flag in (("reorthogonalize", reorthogonalize), ("offload", offload)):
        if not isinstance(flag, bool):
            raise ConfigError(f"`{name}` must be True or False, got {flag!r}.")
    flat = FlatParameters(select(model, include, exclude, include_1d))
    n = flat.size
    if steps > n:
        raise ConfigError(
            f"`steps` ({steps}) is larger than the number of selected parameters ({n}); Lanczos has at most {n} "
            f"steps: pass `steps` <= {n}."
        )
    device = torch.device("cpu") if offload else flat.device
    generator = torch.Generator().manual_seed(seed)
    nodes, weights = np.full((probes, steps), np.nan), np.zeros((probes, steps))
    forms = np.empty(probes)
    check_centre(model, objective)
    bar = tqdm(total=probes * steps, desc="lanczos quadrature", unit="hvp", disable=not progress, leave=False)
    try:
        with operator_for(model, objective, flat, operator=operator, hvp=hvp, fd_step=fd_step) as op:
            for p in range(probes):
                z = rademacher(n, generator, device, flat.dtype)
                alpha, beta = lanczos_tridiagonal(
                    lambda v: op(v).to(device), z / math.sqrt(n), steps, reorthogonalize, bar
                )
                theta, tau = gauss_quadrature(alpha, beta)
                nodes[p, : len(theta)], weights[p, : len(theta)] = theta, tau
                forms[p] = alpha[0]
                bar.update(steps - len(alpha))
    finally:
        bar.close()
    sigma = default_sigma(nodes) if sigma is None else sigma
    grid = density_grid(nodes, sigma)
    result = SpectrumResult(
        nodes=nodes,
        weights=weights,
        quadratic_forms=forms,
        num_parameters=n,
        sigma=sigma,
        grid=grid,
        density=_density(grid, nodes, weights, sigma),
        operator=operator,
        hvp=hvp,
        reorthogonalize=reorthogonalize,
        seed=seed,
        confidence=confidence,
    )
    logger.info("lanczos quadrature: %d probe(s) x %d steps, trace %.6g", probes, steps, result.trace)
    return result


def lanczos_tridiagonal(
    matvec: Any, v: torch.Tensor, steps: int, reorthogonalize: bool, bar: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """`steps` steps of Lanczos from the unit vector `v`: the diagonal α (steps,) and off-diagonal β (steps − 1,) of
    T. Stops early when the Krylov space is exhausted (β ≈ 0), returning the shorter T."""
    alpha: list[float] = []
    beta: list[float] = []
    basis = torch.empty(steps, v.numel(), dtype=v.dtype, device=v.device) if reorthogonalize else None
    previous = None
    for j in range(steps):
        if basis is not None:
            basis[j] = v
        w = matvec(v).to(v.dtype)
        if bar is not None:
            bar.update(1)
        a = float(torch.dot(v, w))
        alpha.append(a)
        w.sub_(v, alpha=a)
        if previous is not None:
            w.sub_(previous, alpha=beta[-1])
        if basis is not None:
            for _ in range(2):  # full reorthogonalization, twice ("twice is enough")
                rowspace.remove(w, basis[: j + 1])
        b = float(torch.linalg.vector_norm(w))
        scale = max(abs(x) for x in alpha) + (max(beta) if beta else 0.0)
        if j == steps - 1 or b <= 1e-10 * max(scale, 1e-300):
            break
        beta.append(b)
        previous = v
        v = w.div_(b)
    return np.array(alpha), np.array(beta)


def gauss_quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (eigenvalues of T, ascending) and weights (squared first components of its eigenvectors)."""
    t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    theta, s = np.linalg.eigh(t)
    return theta, s[0, :] ** 2
