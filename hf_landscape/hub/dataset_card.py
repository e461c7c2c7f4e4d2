"""The dataset card of a dataset repo of landscapes: YAML the Hub reads, a table of subsets, one section per surface.

The YAML front matter holds `configs:` (one subset per surface, each reading its Parquet table: `hub.tables`), which
the Hub's Dataset Viewer and `datasets.load_dataset(repo_id, name)` follow, the tags `loss-landscape`,
`hf-landscape` and the surfaces' kinds, and a `pretty_name`. The body has a snippet loading the first subset with
`datasets` and the artifact with hf_landscape, a table of every subset (the surface, its model and revision linked to
the Hub, the Parquet file, the viewer page), and each surface's section (`hub.card.surface_section`: plots, numbers,
the command that reproduces it).

Pushing again merges into the card already there, as `hub.card` does for a model card: the YAML keeps every other
field and subset (a subset of the same name that reads other files refuses the push: `hub.tables.merge_configs`), the
table keeps the rows of other subsets, and the surfaces' block keeps the sections of other folders; text outside the
blocks (a user's own) is kept as it is. What does not live here: the model card (`hub.card`), staging and committing
(`hub.mixin`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from .card import BLOCK_END, BLOCK_START, SECTION, TAGS, _escaped, _hub_model_id, _split_block, surface_section
from .tables import merge_configs, table_path

if TYPE_CHECKING:
    from ..surface import Surface

DATASET_CARD_TEMPLATE = "templates/landscape_dataset_card.md"
SUBSETS_START, SUBSETS_END = "<!-- hf_landscape:subsets -->", "<!-- /hf_landscape:subsets -->"
SUBSETS_HEADER = "| subset | surface | model | table | viewer |\n|---|---|---|---|---|"
# A row of the subsets' table: its first cell is the subset name in backticks (a name holds no backtick or '|').
ROW = re.compile(r"^\| `([^`|]+)` \|.*$", re.M)


def render_dataset_card(
    repo_id: str,
    surfaces: Mapping[str, Surface],
    existing: str | None = None,
    *,
    subsets: Mapping[str, str],
    plots: Mapping[str, Sequence[str]] | None = None,
    sections: Mapping[str, str] | None = None,
    viewers: Mapping[str, str] | None = None,
    load: tuple[str, str] | None = None,
) -> str:
    """The README.md of the dataset repo `repo_id` after pushing `surfaces` (folder -> surface), merged into `existing`.

    Args:
        repo_id: the repo.
        surfaces: folder in the repo -> surface.
        existing: the card already in the repo, if any (its text, YAML and other subsets are kept).
        subsets: folder -> subset name (`hub.tables.subset_names`).
        plots: folder -> the plot files pushed there (each surface's section shows them).
        sections: folder -> a section of another artifact (a direction set).
        viewers: folder -> the path in the repo of the surface's `viewer.html`, where one was pushed.
        load: (class, folder) of the snippet that loads what was pushed; by default the first surface.

    Raises:
        ConfigError: the card has a subset of a pushed name that reads other files.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    blocks = {folder: surface_section(folder, s, (plots or {}).get(folder)) for folder, s in surfaces.items()}
    blocks.update(sections or {})
    rows = {subsets[f]: subset_row(subsets[f], f, s, (viewers or {}).get(f)) for f, s in surfaces.items()}
    kinds = {s.kind for s in surfaces.values()}
    names = [subsets[f] for f in surfaces]
    if existing is None:
        models = sorted({m for s in surfaces.values() if (m := _hub_model_id(s))})
        title = f"Loss landscape of {models[0]}" if len(models) == 1 else "Loss landscapes"
        data = DatasetCardData(
            pretty_name=title, tags=TAGS + sorted(kinds), configs=merge_configs(None, names, repo_id) or None
        )
        template = files("hf_landscape.hub").joinpath(DATASET_CARD_TEMPLATE).read_text(encoding="utf-8")
        cls, folder = load if load is not None else ("Surface", next(iter(surfaces), ""))
        card = DatasetCard.from_template(
            data,
            template_str=template,
            repo_id=repo_id,
            title=_escaped(title),
            first_subset=names[0] if names else None,
            load_class=cls,
            load_name={"Surface": "surface", "CompareReport": "report", "DirectionSet": "directions"}.get(
                cls, "loaded"
            ),
            first_folder=folder or None,
            subsets=_subsets_block_body(rows),
            sections="\n".join(blocks[f] for f in sorted(blocks)),
        )
        return str(card)
    card = DatasetCard(existing)
    meta: Any = card.data
    configs = merge_configs(getattr(meta, "configs", None), names, repo_id)  # refuses before anything is changed
    if configs:
        meta.configs = configs
    meta.tags = sorted(set(getattr(meta, "tags", None) or []) | set(TAGS) | kinds)
    head, block, tail = _split_block(card.text)
    kept = {m.group(1): m.group(0) for m in SECTION.finditer(block)}
    kept.update(blocks)
    text = head + BLOCK_START + "\n" + "\n".join(kept[f] for f in sorted(kept)) + "\n" + BLOCK_END + "\n" + tail
    card.text = _merge_subsets(text, rows)
    return str(card)


def subset_row(subset: str, folder: str, surface: Surface, viewer: str | None) -> str:
    """The subsets' table row of one surface: its name, folder and grid, its model and revision (linked to the Hub when
    the model came from it), its Parquet table and its viewer page."""
    from ..viewer import hub_url

    recorded = surface.metadata.get("model")
    model: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    shape = " × ".join(str(n) for n in reversed(surface.values.shape))
    what = f"{_escaped(folder or '/')}: {_escaped(surface.kind)}, {shape}"
    name, sha = model.get("name_or_path"), model.get("commit_sha")
    label = _escaped(name) if name else "—"
    if sha:
        label += f" @ `{_escaped(str(sha)[:12])}`"
    url = hub_url(name, sha) if _hub_model_id(surface) else None
    if url:
        label = f"[{label}]({url})"
    table = table_path(subset)
    page = f"[{viewer.rsplit('/', 1)[-1]}]({viewer})" if viewer else "—"
    return f"| `{subset}` | {what} | {label} | [{table}]({table}) | {page} |"


def _subsets_block_body(rows: Mapping[str, str]) -> str:
    return SUBSETS_HEADER + "".join(f"\n{rows[name]}" for name in sorted(rows))


def _merge_subsets(text: str, rows: Mapping[str, str]) -> str:
    """`text` with the subsets' table holding `rows` in place of the rows of the same subsets. The table is what lies
    between the last start marker line that has an end marker line after it and that end marker; a card without such
    a pair (none yet, or damaged markers) keeps its text whole and gets a new table just before the surfaces' block."""
    lines = text.splitlines(keepends=True)
    start, end = _marked(lines, SUBSETS_START, SUBSETS_END)
    if start is not None and end is not None:
        kept = {m.group(1): m.group(0) for m in ROW.finditer("".join(lines[start + 1 : end]))}
        kept.update(rows)
        return "".join(lines[: start + 1]) + _subsets_block_body(kept) + "\n" + "".join(lines[end:])
    block = SUBSETS_START + "\n" + _subsets_block_body(rows) + "\n" + SUBSETS_END + "\n\n"
    at, _ = _marked(lines, BLOCK_START, BLOCK_END)  # the surfaces' block, which `render_dataset_card` made sure of
    at = len(lines) if at is None else at
    return "".join(lines[:at]) + block + "".join(lines[at:])


def _marked(lines: list[str], start: str, end: str) -> tuple[int | None, int | None]:
    """(start line, end line) of the last start marker line with an end marker line after it, or (None, None)."""
    for i in reversed([i for i, line in enumerate(lines) if line.strip() == start]):
        ends = [j for j in range(i + 1, len(lines)) if lines[j].strip() == end]
        if ends:
            return i, ends[0]
    return None, None
