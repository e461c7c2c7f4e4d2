"""The model card of a pushed repo: one section per pushed surface, merged into the card already there.

The card is rendered from `templates/landscape_card.md` (shipped inside the package) with `huggingface_hub.ModelCard`.
Every surface gets its own section between markers (each on a line of its own), so pushing again replaces that
section and keeps the rest of an existing card (a user's own text, other surfaces) as it was. Text taken from a
surface (its recorded command, model name, ...) is HTML-escaped, so it can hold no marker, code fence or table
separator; a card whose markers are damaged (reversed, one missing) is kept whole as foreign text and a fresh block
is appended. What does not live here: staging and committing the files (`hub.mixin`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..surface import Surface

CARD_TEMPLATE = "templates/landscape_card.md"
BLOCK_START, BLOCK_END = "<!-- hf_landscape:surfaces -->", "<!-- /hf_landscape:surfaces -->"
TAGS = ["loss-landscape", "hf-landscape"]
# Plot formats the Hub shows inline in a card; others (pdf) are linked.
INLINE_FORMATS = ("png", "svg")


def render_card(
    repo_id: str,
    surfaces: Mapping[str, Surface],
    existing: str | None = None,
    *,
    plots: Mapping[str, Sequence[str]] | None = None,
    sections: Mapping[str, str] | None = None,
    load: tuple[str, str] | None = None,
) -> str:
    """The README.md for `repo_id` after pushing `surfaces` (folder -> surface), merged into `existing`.

    Args:
        repo_id: the repo.
        surfaces: folder in the repo -> surface: each gets its section (`surface_section`).
        existing: the card already in the repo, if any: its text and metadata are kept, its sections of the same
            folders replaced.
        plots: folder -> the plot files pushed there (the card shows those); by default the PNG plots of a push.
        sections: folder -> a section of another artifact (a direction set), between the same markers.
        load: (class, folder) of the snippet that loads what was pushed; by default the first surface.
    """
    from huggingface_hub import ModelCard, ModelCardData

    blocks = {folder: surface_section(folder, s, (plots or {}).get(folder)) for folder, s in surfaces.items()}
    blocks.update(sections or {})
    base_models = sorted({m for s in surfaces.values() if (m := _hub_model_id(s))})
    datasets = sorted({d for s in surfaces.values() if (d := _hub_dataset_id(s))})
    kinds = {s.kind for s in surfaces.values()}
    if existing is None:
        data = ModelCardData(
            library_name="hf_landscape",
            base_model=base_models[0] if len(base_models) == 1 else (base_models or None),
            tags=TAGS + sorted(kinds),
            datasets=datasets or None,
        )
        template = files("hf_landscape.hub").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")
        cls, folder = load if load is not None else ("Surface", next(iter(surfaces), ""))
        card = ModelCard.from_template(
            data,
            template_str=template,
            repo_id=repo_id,
            base_model=base_models[0] if len(base_models) == 1 else None,
            load_class=cls,
            load_name={"Surface": "surface", "CompareReport": "report", "DirectionSet": "directions"}.get(
                cls, "loaded"
            ),
            first_folder=folder or None,
            sections="\n".join(blocks[f] for f in sorted(blocks)),
        )
        return str(card)
    card = ModelCard(existing)
    meta: Any = card.data
    meta.library_name = meta.library_name or "hf_landscape"
    meta.tags = sorted(set(meta.tags or []) | set(TAGS) | kinds)
    if base_models:
        old = meta.base_model if isinstance(meta.base_model, list) else [meta.base_model] if meta.base_model else []
        merged = sorted(set(old) | set(base_models))
        meta.base_model = merged[0] if len(merged) == 1 else merged
    if datasets:
        old_ds = meta.datasets if isinstance(meta.datasets, list) else [meta.datasets] if meta.datasets else []
        meta.datasets = sorted(set(old_ds) | set(datasets))
    head, block, tail = _split_block(card.text)
    kept = {m.group(1): m.group(0) for m in SECTION.finditer(block)}
    kept.update(blocks)
    card.text = head + BLOCK_START + "\n" + "\n".join(kept[f] for f in sorted(kept)) + "\n" + BLOCK_END + "\n" + tail
    return str(card)


# A surface's section: its markers each on a line of their own (the text between them is escaped, so it holds none).
SECTION = re.compile(r"^<!-- surface:(\S*) -->\n.*?^<!-- /surface:\1 -->$", re.S | re.M)


def _split_block(text: str) -> tuple[str, str, str]:
    """(head, block, tail) of a card: the block is what lies between the last start marker line and the first end
    marker line after it. A card without such a pair (no block yet, or damaged markers: reversed, one missing) is
    kept whole as head, foreign text never parsed, and gets a new empty block at its end."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == BLOCK_START]
    if starts:
        first = starts[-1]
        ends = [j for j in range(first + 1, len(lines)) if lines[j].strip() == BLOCK_END]
        if ends:
            return "".join(lines[:first]), "".join(lines[first + 1 : ends[0]]), "".join(lines[ends[0] + 1 :])
    return text.rstrip() + "\n\n## Loss landscapes (hf_landscape)\n\n", "", ""


def _escaped(value: Any) -> str:
    """Text from a surface made safe for one line of the card: HTML-escaped (no `<`, so no marker or tag), table
    pipes and backticks as entities, line breaks as spaces. The Hub shows it exactly as it was."""
    text = html.escape(str(value), quote=True).replace("|", "&#124;").replace("`", "&#96;")
    return re.sub(r"[\r\n]+", " ", text)


def _hub_id(value: Any) -> str | None:
    """`value` if it is a valid Hub repo id (it goes into the card's YAML and a link), else None."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(value, str) or not value:
        return None
    try:
        validate_repo_id(value)
    except HFValidationError:
        return None
    return value


def _hub_model_id(surface: Surface) -> str | None:
    model = surface.metadata.get("model") or {}
    return _hub_id(model.get("name_or_path")) if isinstance(model, dict) and model.get("commit_sha") else None


def _hub_dataset_id(surface: Surface) -> str | None:
    objective = surface.metadata.get("objective") or {}
    source = (objective.get("source") if isinstance(objective, dict) else None) or {}
    return _hub_id(source.get("hub_id")) if isinstance(source, dict) else None


def _pair(span: Any) -> tuple[str, str]:
    """A (low, high) of the recorded grid as two short numbers (`:g`); anything else as it is."""
    try:
        lo, hi = span
        return f"{float(lo):g}", f"{float(hi):g}"
    except (TypeError, ValueError):
        return str(span), ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)


def surface_section(folder: str, surface: Surface, plots: Sequence[str] | None = None) -> str:
    """The card section of one surface: its plots, a table of its numbers and how to reproduce it.

    `plots` are the plot files in the surface's folder (`plot_<kind>.<format>`); the card shows the curve, or the
    contour and 3-D plots, in the first format the Hub shows inline, and links the others. By default: the PNGs.
    """
    import numpy as np

    meta = surface.metadata
    model = meta.get("model", {})
    objective = meta.get("objective", {})
    grid = meta.get("grid", {})
    dirs = meta.get("directions", [])
    prefix = f"{folder}/" if folder else ""
    shown = ["curve"] if surface.ndim == 1 else ["contour", "surface"]
    images = _plot_links(prefix, shown, [f"plot_{k}.png" for k in shown] if plots is None else list(plots))
    finite = surface.values[np.isfinite(surface.values)]
    # Every value taken from the surface is escaped (`_escaped`): it can hold no marker, fence or cell separator.
    rows = [
        ("kind", _escaped(surface.kind)),
        (
            "model",
            f"`{_escaped(model.get('name_or_path'))}`"
            + (f" @ `{_escaped(str(model['commit_sha'])[:12])}`" if model.get("commit_sha") else ""),
        ),
        ("centre loss", _fmt(surface.centre)),
        ("lowest / highest loss", f"{_fmt(float(finite.min()))} / {_fmt(float(finite.max()))}" if finite.size else "—"),
    ]
    for name in sorted(surface.metrics):
        index = surface.centre_index
        value = _fmt(float(surface.metrics[name][index]) if index else float("nan"))
        rows.append((f"{_escaped(name)} at centre", value))
    rows += [
        ("span", _escaped(" × ".join("[{}, {}]".format(*_pair(p)) for p in grid.get("span", [])))),
        ("steps", _escaped(" × ".join(str(n) for n in grid.get("steps", [])))),
        ("normalization", _escaped(_fmt(dirs[0].get("normalization"))) if dirs else "— (interpolation)"),
        ("seed", _escaped(_fmt(meta.get("seed")))),
        (
            "evaluation tokens",
            f"{_escaped(_fmt(objective.get('num_tokens')))} (fingerprint `{_escaped(objective.get('fingerprint'))}`)",
        ),
        ("wall time", f"{_escaped(_fmt(meta.get('wall_time_s')))} s"),
    ]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    title = folder or _escaped(surface.kind)
    command = html.escape(reproduce_command(surface), quote=True)  # exact when shown; holds no `<`, so no marker
    return (
        f"<!-- surface:{folder} -->\n### {title}\n\n{images}\n\n{table}\n\n"
        f"Reproduce:\n\n<pre><code>{command}</code></pre>\n<!-- /surface:{folder} -->"
    )


def _plot_links(prefix: str, kinds: Sequence[str], names: Sequence[str]) -> str:
    """Markdown for the plots of `kinds` among `names`: an image in the first inline format written, else a link."""
    links = []
    for kind in kinds:
        written = {name.rsplit(".", 1)[-1]: name for name in names if name.rsplit(".", 1)[0] == f"plot_{kind}"}
        inline = [fmt for fmt in INLINE_FORMATS if fmt in written]
        if inline:
            links.append(f"![{kind}]({prefix}{written[inline[0]]})")
        links += [f"[{kind} ({fmt})]({prefix}{name})" for fmt, name in sorted(written.items()) if fmt not in inline]
    return " ".join(links)


def reproduce_command(surface: Surface) -> str:
    """The command that made the surface (recorded by the CLI), or the equivalent one built from its metadata."""
    meta = surface.metadata
    if meta.get("command"):
        return str(meta["command"])
    model = meta.get("model", {})
    grid = meta.get("grid", {})
    dirs = meta.get("directions", [])
    objective = meta.get("objective", {}).get("config", {})
    parts = ["hf-landscape", "line" if surface.kind == "line" else surface.kind, str(model.get("name_or_path"))]
    if model.get("commit_sha"):
        parts += ["--revision", model["commit_sha"]]
    parts += ["--text-file", "YOUR_TEXT.txt"]
    if objective.get("max_length"):
        parts += ["--max-length", str(objective["max_length"])]
    steps = grid.get("steps", [])
    if steps:
        parts += ["--steps", *[str(s) for s in steps]]
    if grid.get("span"):
        parts.append("--span=" + ",".join("{}:{}".format(*_pair(p)) for p in grid["span"]))
    if dirs:
        parts += ["--seed", str(meta.get("seed")), "--normalization", str(dirs[0].get("normalization"))]
        if dirs[0].get("include_1d"):
            parts.append("--include-1d")
    parts += ["--out", "out/"]
    return " ".join(parts)
