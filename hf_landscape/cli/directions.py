"""`--directions random|lora|adapter` and their options: from the command line to the probe's direction request, and
from a surface's recorded directions back to options (the card's Reproduce command).

Each kind reads some of the options (`KIND_OPTIONS`); one given to a kind that does not read it is refused, never
ignored. Any other registered direction kind (`register_direction_kind`) is accepted by name with the options given.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

# option dest -> (option, the kinds that read it)
OPTIONS = {
    "normalization": "--normalization",
    "include_1d": "--include-1d",
    "include": "--include",
    "exclude": "--exclude",
    "orthogonalize": "--orthogonalize",
    "rank": "--rank",
    "target_modules": "--target-modules",
    "adapter_name": "--adapter-name",
}
KIND_OPTIONS = {
    "random": ("normalization", "include_1d", "include", "exclude", "orthogonalize"),
    "lora": ("rank", "target_modules", "normalization"),
    "adapter": ("normalization", "exclude", "orthogonalize", "adapter_name"),
}
# the kind a direction records -> the name `--directions` takes
RECORDED_KINDS = {"random": "random", "low_rank": "lora", "lora": "lora", "adapter": "adapter"}


def add_direction_arguments(parser: argparse.ArgumentParser, *, plane: bool = False) -> None:
    group = parser.add_argument_group("directions")
    group.add_argument(
        "--directions",
        default="random",
        metavar="KIND",
        help="random (filter-normalized Gaussian, default), lora (low-rank D = B·A, for large models), adapter (a "
        "PEFT adapter's LoRA weights; MODEL is the adapter), or a registered kind",
    )
    group.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="draw of the directions; several (0 1 2) give mean and spread"
    )
    group.add_argument("--normalization", default=None, help="filter (default), layer, model or none")
    group.add_argument("--include-1d", action="store_true", default=None, help="random: perturb biases and norms too")
    group.add_argument("--include", nargs="+", default=None, help="random: regexes of parameter names to perturb")
    group.add_argument("--exclude", nargs="+", default=None, help="random, adapter: regexes of names to leave alone")
    if plane:
        group.add_argument(
            "--orthogonalize", action="store_true", default=None, help="random, adapter: second direction orthogonal"
        )
    group.add_argument("--rank", type=int, default=None, help="lora: the rank r of each D = B·A (default 8)")
    group.add_argument(
        "--target-modules", nargs="+", default=None, help="lora: module names or suffixes (default: every linear layer)"
    )
    group.add_argument("--adapter-name", default=None, help="adapter: which adapter (default: the active one)")


def direction_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(kind, options) of the probe's direction request, checked: the kind is registered and every option given is
    one it reads; the options make the kind's config (whose own checks name the option)."""
    from ..directions.low_rank import LowRankDirectionConfig
    from ..directions.random import RandomDirectionConfig
    from ..directions.registry import direction_kind

    kind = args.directions
    direction_kind(kind)  # a ConfigError naming the registered kinds, with "did you mean"
    kind = RECORDED_KINDS.get(kind, kind)
    given: dict[str, Any] = {dest: getattr(args, dest) for dest in OPTIONS if getattr(args, dest, None) is not None}
    reads = KIND_OPTIONS.get(kind)
    if reads is not None:
        for dest in given:
            if dest not in reads:
                readers = [k for k, options in KIND_OPTIONS.items() if dest in options]
                raise ConfigError(
                    f"`{OPTIONS[dest]}` does not apply to `--directions {kind}`; it is read by "
                    f"{', '.join(f'`--directions {r}`' for r in readers)}."
                )
    try:
        if kind == "random":
            RandomDirectionConfig(**given)
        elif kind == "lora":
            LowRankDirectionConfig(**given)
        elif kind == "adapter":
            RandomDirectionConfig(**{k: v for k, v in given.items() if k != "adapter_name"})
    except ConfigError as err:
        raise ConfigError(f"{err} (`--directions {kind}`)") from None
    return kind, given


def seeds(args: argparse.Namespace) -> int | list[int]:
    """`--seed`: one seed, or the list of several (a surface with spread)."""
    values = list(args.seed)
    if len(set(values)) != len(values):
        raise ConfigError(f"`--seed` repeats a seed: {values}; every draw must be different.")
    return values[0] if len(values) == 1 else values


def describe(kind: str, options: Mapping[str, Any]) -> str:
    """One line for the plan: the kind and its options."""
    return kind + "".join(f" {OPTIONS.get(k, k)}={v}" for k, v in sorted(options.items()))


def reproduce_directions(configs: Sequence[Mapping[str, Any]]) -> tuple[list[str] | None, list[str]]:
    """The options that draw the recorded directions again, or None (with a note) for directions the command line
    cannot draw (given by the user, a training path's PCA, an unknown kind)."""
    if not configs or not all(isinstance(c, Mapping) for c in configs):
        return [], []
    first = configs[0]
    recorded = first.get("kind")
    kind = RECORDED_KINDS.get(str(recorded))
    if kind is None or "seed" not in first:
        what = f"{recorded} directions" if recorded else "directions given by the user"
        return None, [f"{what} are not drawn by the command line; the surface was made with the Python API"]
    out = [] if kind == "random" else ["--directions", kind]
    normalization = first.get("normalization", "filter")
    if normalization != "filter":
        out += ["--normalization", str(normalization)]
    if kind == "random":
        if first.get("include_1d"):
            out.append("--include-1d")
        if first.get("include"):
            out += ["--include", *map(str, first["include"])]
    if kind in ("random", "adapter"):
        if first.get("exclude"):
            out += ["--exclude", *map(str, first["exclude"])]
        if first.get("orthogonalize"):
            out.append("--orthogonalize")
    if kind == "lora":
        out += ["--rank", str(first.get("rank", 8))]
        if first.get("target_modules"):
            out += ["--target-modules", *map(str, first["target_modules"])]
    if kind == "adapter" and first.get("adapter_name"):
        out += ["--adapter-name", str(first["adapter_name"])]
    return out, []
