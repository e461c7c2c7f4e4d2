"""The registry of direction kinds: `probe.plane(directions="name")` draws the directions of any registered kind.

A kind is a function `fn(model, seed, *, axes, **options) -> list[Direction]` (or `LowRankDirection`s), registered
under a name with the `register_direction_kind(name)` decorator, in the manner of peft's `register_peft_method` and
`PEFT_TYPE_TO_CONFIG_MAPPING`: each built-in kind registers itself in its own module (`random` in `random.py`,
`lora` / `low_rank` in `low_rank.py`, `adapter` in `adapter.py`), and a user's kind registers the same way and is
found exactly like them. Nothing central grows an `elif`.

Example:
```python
>>> import torch
>>> from hf_landscape import Direction, register_direction_kind
>>> @register_direction_kind("ones_example")
... def ones(model, seed, *, axes, scale=1.0):
...     return [Direction({"weight": scale * torch.ones(2, 3)}) for _ in range(axes)]
>>> from hf_landscape.directions import draw_directions
>>> [d["weight"].sum().item() for d in draw_directions("ones_example", torch.nn.Linear(3, 2), 0, axes=2, scale=0.5)]
[3.0, 3.0]

```
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ConfigError, DirectionError
from .base import Direction, LowRankDirection

DirectionKind = Callable[..., list[Any]]
F = TypeVar("F", bound=DirectionKind)

#: name -> the function that draws directions of that kind
DIRECTION_KINDS: dict[str, DirectionKind] = {}
#: name -> the span a grid along that kind's directions covers when none is given
DEFAULT_SPANS: dict[str, tuple[float, float]] = {}
#: the default span of a kind that names none: Li et al.'s (2018) [-1, 1], in units of the weights' own norms
DEFAULT_SPAN = (-1.0, 1.0)
#: the kinds that draw from the loss too (curvature directions): they are given `objective=` and `progress=`
KINDS_NEEDING_OBJECTIVE: set[str] = set()

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register_direction_kind(
    name: str, *, default_span: tuple[float, float] = DEFAULT_SPAN, needs_objective: bool = False
) -> Callable[[F], F]:
    """Register `fn(model, seed, *, axes, **options) -> list[Direction]` as the direction kind `name` (a decorator).

    `fn` draws `axes` directions for `model` from `seed`; `options` are what the user passes beside `directions=`
    (`probe.plane(directions="name", rank=4)`), and `config=` when the user passes one. It returns `Direction`s
    (or `LowRankDirection`s), one per axis. `default_span` is the (low, high) a line or plane along these directions
    covers when the caller gives no span. A kind registered with `needs_objective=True` (directions found from the
    loss, such as `"hessian"`) is also given `objective=` (the probe's) and `progress=`.

    Raises:
        ConfigError: `name` is not lower-case letters, digits and '_', or is taken.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"A direction kind's name must be lower-case letters, digits and '_' (starting with a letter), got "
            f"{name!r}; e.g. 'sparse_random'."
        )
    if name in DIRECTION_KINDS:
        raise ConfigError(f"The direction kind {name!r} is registered already; choose another name.")

    def register(fn: F) -> F:
        if not callable(fn):
            raise ConfigError(f"`register_direction_kind({name!r})` decorates a function, got {fn!r}.")
        DIRECTION_KINDS[name] = fn
        DEFAULT_SPANS[name] = (float(default_span[0]), float(default_span[1]))
        if needs_objective:
            KINDS_NEEDING_OBJECTIVE.add(name)
        return fn

    return register


def direction_kinds() -> list[str]:
    """The names of every registered direction kind, sorted."""
    return sorted(DIRECTION_KINDS)


def default_span(name: Any) -> tuple[float, float]:
    """The span a grid along the kind `name`'s directions covers by default (`DEFAULT_SPAN` for an unknown name, whose
    drawing then says what is wrong)."""
    return DEFAULT_SPANS.get(name, DEFAULT_SPAN) if isinstance(name, str) else DEFAULT_SPAN


def direction_kind(name: Any) -> DirectionKind:
    """The function registered as `name`, or a `ConfigError` listing the registered kinds (and the closest one)."""
    if isinstance(name, str) and name in DIRECTION_KINDS:
        return DIRECTION_KINDS[name]
    close = difflib.get_close_matches(name, DIRECTION_KINDS, n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"`directions` must be a registered direction kind {direction_kinds()} or a list of directions, got "
        f"{name!r}{hint}; register your own with `hf_landscape.register_direction_kind`."
    )


def draw_directions(
    name: str, model: Any, seed: int, *, axes: int, objective: Any = None, progress: bool = False, **options: Any
) -> list[Any]:
    """Draw `axes` directions of the kind `name` for `model` from `seed` (a kind that needs the loss is given
    `objective` and `progress`; other kinds ignore them).

    Each comes back recording its `kind` and `seed` (added to its config where the kind did not record them).

    Raises:
        ConfigError: no kind of that name, or no `objective` for a kind that needs one.
        DirectionError: the kind did not return `axes` directions.
    """
    kind = direction_kind(name)
    if name in KINDS_NEEDING_OBJECTIVE:
        if objective is None:
            raise ConfigError(
                f"The direction kind {name!r} is found from the loss: pass `objective=` (a probe passes its own)."
            )
        options = {"objective": objective, "progress": progress, **options}
    drawn = kind(model, seed, axes=axes, **options)
    if not isinstance(drawn, (list, tuple)) or len(drawn) != axes:
        raise DirectionError(
            f"The direction kind {name!r} returned {type(drawn).__name__} {drawn!r:.60}; it must return a list of "
            f"{axes} direction(s), one per axis."
        )
    out = []
    for k, d in enumerate(drawn):
        if not isinstance(d, (Direction, LowRankDirection)):
            raise DirectionError(
                f"The direction kind {name!r} returned {type(d).__name__} for axis {k}; it must return `Direction`s "
                "or `LowRankDirection`s."
            )
        if "kind" in d.config and "seed" in d.config:
            out.append(d)
        else:  # a new direction sharing the tensors, so the kind's own objects are not changed
            out.append(dataclasses.replace(d, config={"kind": name, "seed": seed, **d.config}))
    return out


def kind_config(cls: Any, config: Any, options: dict[str, Any]) -> Any:
    """`config` if given (it must be a `cls`), else `cls(**options)` with unknown options rejected: how a kind turns
    its options into its config dataclass."""
    if config is not None:
        if not isinstance(config, cls):
            raise ConfigError(f"`config` must be a {cls.__name__} for these directions, got {type(config).__name__}.")
        if options:
            raise ConfigError(f"Pass either `config` or direction options {sorted(options)}, not both.")
        return config
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"Unknown direction option(s) {unknown}; the options of {cls.__name__} are {sorted(known)}.")
    return cls(**options)
