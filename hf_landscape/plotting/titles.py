"""What a figure says about its surface: the title (model, kind, objective, directions and seeds, the centre's
loss; wrapped to the axes' width) and the axis labels (`describe_surface`)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..surface import Surface


TITLE_SIZE = 10


LABEL_SIZE = 8


def _model_name(surface: Surface) -> str | None:
    name = (surface.metadata.get("model") or {}).get("name_or_path")
    return Path(str(name)).name if name else None


def _objective_text(surface: Surface) -> str | None:
    objective = surface.metadata.get("objective") or {}
    kind = objective.get("type")
    config = objective.get("config") or {}
    if kind == "CausalLMObjective":
        tokens = objective.get("num_tokens")
        return "causal-LM loss" + (f" on {tokens:,} tokens" if isinstance(tokens, int) else "")
    if kind in ("GlueObjective", "TextClassificationObjective"):
        task = str(config.get("task", "GLUE")).upper() if kind == "GlueObjective" else str(config.get("task_name"))
        examples = objective.get("num_examples")
        loss = "MSE" if objective.get("loss") == "mse" else "cross-entropy"
        return f"{task} {loss}" + (f" on {examples:,} examples" if isinstance(examples, int) else "")
    return str(kind) if kind else None


def _directions_text(surface: Surface) -> str | None:
    configs = [c for c in surface.metadata.get("directions") or [] if isinstance(c, dict)]
    if not configs:
        return None
    first = configs[0]
    kind = first.get("kind")
    if kind == "random":
        text = f"{first.get('normalization', 'filter')}-normalized random directions"
        if first.get("orthogonalize"):
            text += ", orthogonalized"
    elif kind == "low_rank":
        text = f"rank-{first.get('rank')} LoRA-subspace directions"
    elif kind == "adapter":
        text = f"adapter directions ({first.get('adapter_name')})"
    elif kind == "trajectory":
        text = "PCA directions of the training path"
    else:
        text = "given directions"
    seeds = surface.metadata.get("seeds")
    if seeds:
        text += f", mean over seeds {_seed_list(seeds)}"
    elif surface.metadata.get("seed") is not None:
        text += f", seed {surface.metadata['seed']}"
    return text


def _seed_list(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def _kind_text(surface: Surface) -> str:
    if surface.metadata.get("trajectory"):
        return "training path on its PCA plane"
    if surface.kind != "interpolation":
        return surface.kind
    path = surface.metadata.get("path") or {}
    knots = path.get("knots") or [0, 1]
    if len(knots) > 2:
        return f"path through {len(knots)} checkpoints"
    other = (surface.metadata.get("other_model") or {}).get("name_or_path")
    return f"interpolation to {Path(str(other)).name}" if other else "interpolation"


def model_and_kind(surface: Surface) -> str:
    model = _model_name(surface)
    return f"{model} · {_kind_text(surface)}" if model else _kind_text(surface)


def describe_surface(surface: Surface, metric: str | None = None) -> tuple[str, str]:
    """The two lines of a surface's default title: (model, kind and the centre's value; the setup: objective,
    directions and seeds).

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.plotting import describe_surface
    >>> s = Surface(np.linspace(-1, 1, 3), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line",
    ...     "model": {"name_or_path": "org/tiny"}, "seed": 0,
    ...     "directions": [{"kind": "random", "normalization": "filter"}]})
    >>> describe_surface(s)
    ('tiny · line · centre loss 1', 'filter-normalized random directions, seed 0')

    ```
    """
    headline = model_and_kind(surface)
    index = surface.centre_index
    if index is not None:
        value = surface.values[index] if metric is None else surface.metrics[metric][index]
        headline += f" · centre {metric or 'loss'} {float(value):.4g}"
    setup = " · ".join(p for p in (_objective_text(surface), _directions_text(surface)) if p)
    return headline, setup


def _wrapped_title(lines: Sequence[str], width_inches: float, fontsize: float = TITLE_SIZE) -> str:
    """Lines wrapped to fit `width_inches` of text at `fontsize` points (an average glyph is ~0.55 em wide), broken
    between " · "-separated parts where possible, inside a part only where it is longer than a line."""
    chars = max(24, int(width_inches * 72 / (fontsize * 0.55)))
    out: list[str] = []
    for line in lines:
        current = ""
        for part in (p for p in line.split(" · ") if p):
            if current and len(current) + 3 + len(part) <= chars:
                current += " · " + part
                continue
            if current:
                out.append(current)
            pieces = textwrap.wrap(part, chars, break_on_hyphens=False) or [part]
            out.extend(pieces[:-1])
            current = pieces[-1]
        if current:
            out.append(current)
    return "\n".join(out)


def _axes_width(ax: Any) -> float:
    """The width in inches of the axes' grid cell (colour bars and layout not yet taken out)."""
    spec = ax.get_subplotspec()
    columns = spec.get_gridspec().ncols if spec is not None else 1
    span = (spec.colspan.stop - spec.colspan.start) if spec is not None else 1
    return float(ax.figure.get_figwidth() * 0.85 * span / columns)


def set_title(ax: Any, surface: Surface, title: str | None, metric: str | None, extra: str | None = None) -> None:
    if title is not None:
        ax.set_title(title, fontsize=TITLE_SIZE)
        return
    headline, setup = describe_surface(surface, metric)
    ax.set_title(_wrapped_title([headline, setup, extra or ""], _axes_width(ax)), fontsize=TITLE_SIZE)


def axis_labels(surface: Surface) -> tuple[str, str]:
    ratios = (surface.metadata.get("trajectory") or {}).get("explained_variance_ratio")
    if ratios and len(ratios) >= 2:  # a trajectory plane: the axes are the path's principal components
        return tuple(f"PCA component {k + 1} ({float(r):.1%} of the path's variance)" for k, r in enumerate(ratios[:2]))  # type: ignore[return-value]
    if surface.kind == "interpolation":
        knots = (surface.metadata.get("path") or {}).get("knots") or [0, 1]
        if len(knots) > 2:
            return f"α  (checkpoints θ0 … θ{knots[-1]} at α = 0 … {knots[-1]})", ""
        return "α  (0 = model, 1 = other model)", ""
    return "α  (direction 1)", "β  (direction 2)"
