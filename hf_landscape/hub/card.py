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
            endpoint=hub_endpoint(),
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


def hub_endpoint() -> str:
    """The Hub the card's links point at: `HF_ENDPOINT` when set (a mirror or a private Hub), else huggingface.co."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def _model_cell(model: Any) -> str:
    """A model as the card names it: a Hub repo id linked to its page (at its commit), else its name in code."""
    if not isinstance(model, dict):
        return "—"
    name = model.get("name_or_path")
    sha = model.get("commit_sha")
    text = f"`{_escaped(name)}`" + (f" @ `{_escaped(str(sha)[:12])}`" if sha else "")
    repo = _hub_id(name) if (sha or not model.get("local")) and name and "/" in str(name) else None
    if repo is None:
        return text + (" (a local folder)" if model.get("local") else "")
    tree = f"/tree/{sha}" if sha else ""
    return f"[{text}]({hub_endpoint()}/{repo}{tree})"


def _objective_cell(objective: dict[str, Any]) -> str:
    kind = objective.get("type")
    config = objective.get("config") or {}
    if kind == "GlueObjective":
        return f"GLUE `{_escaped(config.get('task'))}` (`GlueObjective`)"
    if kind == "TextClassificationObjective":
        labels = objective.get("label_names") or []
        names = f", labels {_escaped(', '.join(labels))}" if labels else ""
        columns = " + ".join(config.get("text_columns") or [])
        return f"text classification `{_escaped(config.get('task_name'))}` ({_escaped(columns)}{names})"
    return f"`{_escaped(kind)}`" if kind else "—"


def _dataset_cell(objective: dict[str, Any]) -> str:
    source = objective.get("source") or {}
    if not isinstance(source, dict):
        return "—"
    repo = _hub_id(source.get("hub_id"))
    if repo:
        parts = [p for p in (source.get("config_name"), source.get("split")) if p]
        return f"[`{repo}`]({hub_endpoint()}/datasets/{repo})" + (f" ({_escaped(', '.join(parts))})" if parts else "")
    files = source.get("files") or []
    name = source.get("file") or (files[0].get("path") if files and isinstance(files[0], dict) else None)
    if name:
        digest = source.get("sha256") or (files[0].get("sha256") if files and isinstance(files[0], dict) else None)
        return f"`{_escaped(name)}`" + (f" (SHA-256 `{_escaped(str(digest)[:12])}`)" if digest else "")
    kind = source.get("type")
    return "given in memory" if kind else "—"


def _loss_cell(objective: dict[str, Any]) -> str:
    """What the loss is, in words, with how much data it averages over."""
    kind = objective.get("type")
    tokens, examples = objective.get("num_tokens"), objective.get("num_examples")
    if kind == "CausalLMObjective":
        return f"mean next-token cross-entropy (nats) over {_escaped(_fmt(tokens))} predicted tokens"
    if objective.get("loss") == "cross_entropy":
        return f"mean cross-entropy of the label (nats) over {_escaped(_fmt(examples))} examples"
    if objective.get("loss") == "mse":
        return f"mean squared error of the score over {_escaped(_fmt(examples))} examples"
    return _escaped(objective.get("loss")) if objective.get("loss") else "the objective's own (see `surface.json`)"


def _directions_cell(meta: dict[str, Any]) -> str:
    dirs = [d for d in meta.get("directions") or [] if isinstance(d, dict)]
    if meta.get("kind") == "interpolation":
        return "none: the straight line (or path) between checkpoints"
    if not dirs:
        return "—"
    first = dirs[0]
    kind = first.get("kind")
    norm = f"{_escaped(first.get('normalization', 'filter'))}-normalized"
    if kind == "random":
        text = f"{norm} Gaussian (`random`, Li et al. 2018)" + (
            ", orthogonalized" if first.get("orthogonalize") else ""
        )
    elif kind in ("low_rank", "lora"):
        targets = first.get("target_modules")
        where = f" on {_escaped(', '.join(targets))}" if targets else " on every linear layer but the LM head"
        text = f"rank-{_escaped(first.get('rank'))} LoRA-subspace D = B·A (`lora`){where}, {norm}"
    elif kind == "adapter":
        text = f"the LoRA weights of adapter `{_escaped(first.get('adapter_name'))}` (`adapter`), {norm}"
    elif kind == "trajectory":
        text = "the top PCA directions of a training path"
    else:
        text = f"`{_escaped(kind)}`" if kind else "given by the user"
    seeds = meta.get("seeds")
    if seeds:
        return text + f"; mean over seeds {_escaped(', '.join(map(str, seeds)))} (their spread is saved)"
    return text + (f"; seed {_escaped(meta.get('seed'))}" if meta.get("seed") is not None else "")


def surface_section(folder: str, surface: Surface, plots: Sequence[str] | None = None) -> str:
    """The card section of one surface: its plots, a table of what it is (model and, for an interpolation, the other
    end; objective, dataset and loss; directions; grid) and its numbers, and how to reproduce it.

    `plots` are the plot files in the surface's folder (`plot_<kind>.<format>`); the card shows the curve, or the
    contour and 3-D plots, in the first format the Hub shows inline, and links the others. By default: the PNGs.
    """
    import numpy as np

    meta = surface.metadata
    objective = meta.get("objective") or {}
    objective = objective if isinstance(objective, dict) else {}
    grid = meta.get("grid", {})
    prefix = f"{folder}/" if folder else ""
    shown = ["curve"] if surface.ndim == 1 else ["contour", "surface"]
    images = _plot_links(prefix, shown, [f"plot_{k}.png" for k in shown] if plots is None else list(plots))
    finite = surface.values[np.isfinite(surface.values)]
    # Every value taken from the surface is escaped (`_escaped`): it can hold no marker, fence or cell separator.
    rows = [("kind", _escaped(surface.kind)), ("model", _model_cell(meta.get("model", {})))]
    if surface.kind == "interpolation":
        models = ((meta.get("path") or {}).get("models") or [])[1:] or [meta.get("other_model")]
        rows.append(("to" if len(models) == 1 else "through", " → ".join(_model_cell(m) for m in models)))
    rows += [
        ("objective", _objective_cell(objective)),
        ("dataset", _dataset_cell(objective)),
        ("loss", _loss_cell(objective)),
        ("directions", _directions_cell(meta)),
        ("centre loss", _fmt(surface.centre)),
        ("lowest / highest loss", f"{_fmt(float(finite.min()))} / {_fmt(float(finite.max()))}" if finite.size else "—"),
    ]
    for name in sorted(surface.metrics):
        index = surface.centre_index
        value = _fmt(float(surface.metrics[name][index]) if index else float("nan"))
        rows.append((f"{_escaped(name)} at centre", value))
    dirs = meta.get("directions") or []
    first = dirs[0] if dirs and isinstance(dirs[0], dict) else {}
    resumed = (meta.get("resumed") or {}).get("points") if isinstance(meta.get("resumed"), dict) else None
    compute = meta.get("compute_time_s", meta.get("wall_time_s"))
    rows += [
        ("span", _escaped(" × ".join("[{}, {}]".format(*_pair(p)) for p in grid.get("span", [])))),
        ("steps", _escaped(" × ".join(str(n) for n in grid.get("steps", [])))),
        ("normalization", _escaped(_fmt(first.get("normalization"))) if first else "— (interpolation)"),
        ("seed", _escaped(_fmt(meta.get("seed")))),
        (
            "evaluation data",
            f"{_escaped(_fmt(objective.get('num_tokens', objective.get('num_examples'))))} "
            f"{'tokens' if 'num_tokens' in objective else 'examples'} (fingerprint "
            f"`{_escaped(objective.get('fingerprint'))}`)",
        ),
        (
            "compute time",
            f"{_escaped(_fmt(compute))} s"
            + (f" over several runs (resumed with {_escaped(resumed)} points saved)" if resumed else ""),
        ),
    ]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    title = folder or _escaped(surface.kind)
    command, notes = reproduce_command(surface), reproduce_notes(surface)
    if command is None:
        how = "Made with the Python API" + (f": {_escaped('; '.join(notes))}." if notes else ".")
    else:
        # exact when shown; holds no `<`, so no marker
        how = f"Reproduce:\n\n<pre><code>{html.escape(command, quote=True)}</code></pre>"
        if notes:
            how += "\n\n" + "\n".join(f"- {_escaped(n)}" for n in notes)
    return f"<!-- surface:{folder} -->\n### {title}\n\n{images}\n\n{table}\n\n{how}\n<!-- /surface:{folder} -->"


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


# Options of a recorded command that act on the author's own output, left out of the command a reader runs.
_OWN_OPTIONS = {"--push-to-hub": 1, "--path-in-repo": 1, "--private": 0, "--overwrite": 0}


def recorded_command(command: str) -> str:
    """A command the CLI recorded, as a reader may run it: without the author's push options, and with any local
    absolute path named by its folder or file name (a Hub cache folder by its repo id)."""
    import shlex

    from ..provenance import public_name

    try:
        argv = shlex.split(command)
    except ValueError:
        return command
    kept: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        option = arg.split("=", 1)[0]
        if option in _OWN_OPTIONS:
            skip = _OWN_OPTIONS[option] if "=" not in arg else 0
            continue
        kept.append(arg)
    public = []
    for arg in kept:
        option, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        public.append(f"{option}{eq}{public_name(value)}" if value.startswith("/") else arg)
    return command if public == argv else shlex.join(public)


def reproduce_command(surface: Surface) -> str | None:
    """The command that makes the surface again: the one the command line recorded (`recorded_command`), or else the
    one written from its metadata (`cli.reproduce`: the subcommand of its kind, every model of an interpolation, its
    objective, its directions as drawn, its grid); None when the command line cannot make it."""
    meta = surface.metadata
    if meta.get("command"):
        return recorded_command(str(meta["command"]))
    from ..cli.reproduce import reproduce_command as written

    return written(meta)[0]


def reproduce_notes(surface: Surface) -> list[str]:
    """What the command cannot say (placeholders for data given in memory, metrics given as functions, ...)."""
    if surface.metadata.get("command"):
        return []
    from ..cli.reproduce import reproduce_command as written

    return written(surface.metadata)[1]
