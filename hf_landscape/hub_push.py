"""Publishing surfaces to the Hub: one commit with the arrays, the metadata, the plots and a model card.

The card is rendered from `model_cards/landscape_card.md` with `huggingface_hub.ModelCard`. Every
surface gets its own section between markers (each on a line of its own), so pushing again replaces that
section and keeps the rest of an existing card (a user's own text, other surfaces) as it was. Text taken
from a surface (its recorded command, model name, ...) is HTML-escaped, so it can hold no marker, code fence
or table separator; a card whose markers are damaged (reversed, one missing) is kept whole as foreign text
and a fresh block is appended. Nothing is pushed until the whole folder is staged locally; the push is a
single `create_commit`, so a refused or failed push leaves no half-made commit. The token is never written
to metadata, logs or error messages (`errors.hidden_token`).
"""

from __future__ import annotations

import html
import logging
import re
import tempfile
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import io
from .errors import ConfigError, HubError, hidden_token, raise_detached

if TYPE_CHECKING:
    from .surface import Surface

logger = logging.getLogger(__name__)

CARD_TEMPLATE = "landscape_card.md"
BLOCK_START, BLOCK_END = "<!-- hf_landscape:surfaces -->", "<!-- /hf_landscape:surfaces -->"
TAGS = ["loss-landscape", "hf-landscape"]


def push_surfaces(
    surfaces: Mapping[str, Surface],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    formats: tuple[str, ...] = ("png",),
) -> str:
    """Push surfaces, each to its own folder (`""` for the repo root), in one commit; return the commit URL.

    Args:
        surfaces: folder in the repo -> surface.
        repo_id: `user/name`; created if it does not exist.
        token: a write token (else the logged-in one); never logged or recorded.
        private: visibility when the repo is created.
        revision: branch to commit to.
        commit_message: defaults to a summary of what is pushed.
        create_pr: open a pull request instead of committing to the branch.
        formats: plot formats to include.

    Raises:
        HubError: the Hub refused or failed; the message says what to do. Nothing is half-committed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    if not surfaces:
        raise ConfigError("`surfaces` is empty; pass at least one surface to push.")
    check_repo_id(repo_id, "repo_id")
    folders = {clean_folder(name): surface for name, surface in surfaces.items()}
    api = HfApi(token=token)
    with hidden_token(token), tempfile.TemporaryDirectory(prefix="hf_landscape_push_") as staging:
        root = Path(staging)
        for folder, surface in folders.items():
            target = root / folder if folder else root
            surface.save_pretrained(target, overwrite=True)
            surface.save_plots(target, formats=formats)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            existing = _existing_card(api, repo_id, revision)
            card = render_card(repo_id, folders, existing)
            io.write_text(root / "README.md", card)
            operations = [
                CommitOperationAdd(path_in_repo=p.relative_to(root).as_posix(), path_or_fileobj=str(p))
                for p in sorted(root.rglob("*"))
                if p.is_file()
            ]
            message = commit_message or f"Add loss landscape ({', '.join(f or '/' for f in folders)})"
            info = api.create_commit(url, operations, commit_message=message, revision=revision, create_pr=create_pr)
        except Exception as err:  # every client error becomes a HubError whose text cannot hold the token
            raise_detached(_hub_error(err, repo_id))
    logger.info("pushed %d surface(s) to %s", len(folders), repo_id)
    return str(info.commit_url)


def check_repo_id(repo_id: Any, argument: str) -> str:
    """`repo_id` if it is a valid Hub repo id (`user/name`), else a `ConfigError` naming `argument`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except (HFValidationError, TypeError) as err:
        raise ConfigError(f"`{argument}` {repo_id!r} is not a valid Hub repo id ({err}); use `user/name`.") from None
    return str(repo_id)


def clean_folder(name: str, argument: str = "path_in_repo") -> str:
    folder = str(name).strip("/")
    if folder and (".." in folder.split("/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", folder)):
        raise ConfigError(
            f"`{argument}` {name!r} must use letters, digits, '.', '_', '-' and '/', with no '..'; e.g. 'plane'."
        )
    return folder


def _hub_error(err: Exception, repo_id: str) -> HubError:
    """The `HubError` for a failed push; made inside `hidden_token`, so its text holds no token (`errors.redact`)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    text = f"{type(err).__name__}: {err}"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        hint = "the token is missing, invalid or has no write access to this repo; pass `token=` with a write token"
    elif isinstance(err, RepositoryNotFoundError):
        hint = "the repo does not exist or you cannot see it; check `repo_id` and the token"
    elif isinstance(err, HfHubHTTPError):
        hint = "the Hub failed; nothing was committed, your local files are intact, try again later"
    else:
        hint = "nothing was committed and your local files are intact"
    return HubError(f"Push to {repo_id!r} failed ({hint}). {text}")


def _existing_card(api: Any, repo_id: str, revision: str | None) -> str | None:
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "README.md", revision=revision)
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    return Path(path).read_text(encoding="utf-8")


def render_card(repo_id: str, surfaces: Mapping[str, Surface], existing: str | None = None) -> str:
    """The README.md for `repo_id` after pushing `surfaces` (folder -> surface), merged into `existing`."""
    from huggingface_hub import ModelCard, ModelCardData

    sections = {folder: surface_section(folder, s) for folder, s in surfaces.items()}
    base_models = sorted({m for s in surfaces.values() if (m := _hub_model_id(s))})
    datasets = sorted({d for s in surfaces.values() if (d := _hub_dataset_id(s))})
    if existing is None:
        data = ModelCardData(
            library_name="hf_landscape",
            base_model=base_models[0] if len(base_models) == 1 else (base_models or None),
            tags=TAGS + sorted({s.kind for s in surfaces.values()}),
            datasets=datasets or None,
        )
        template = files("hf_landscape.model_cards").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")
        card = ModelCard.from_template(
            data,
            template_str=template,
            repo_id=repo_id,
            base_model=base_models[0] if len(base_models) == 1 else None,
            first_folder=next(iter(surfaces)) or None,
            sections="\n".join(sections[f] for f in sorted(sections)),
        )
        return str(card)
    card = ModelCard(existing)
    meta: Any = card.data
    meta.library_name = meta.library_name or "hf_landscape"
    meta.tags = sorted(set(meta.tags or []) | set(TAGS) | {s.kind for s in surfaces.values()})
    if base_models:
        old = meta.base_model if isinstance(meta.base_model, list) else [meta.base_model] if meta.base_model else []
        merged = sorted(set(old) | set(base_models))
        meta.base_model = merged[0] if len(merged) == 1 else merged
    if datasets:
        old_ds = meta.datasets if isinstance(meta.datasets, list) else [meta.datasets] if meta.datasets else []
        meta.datasets = sorted(set(old_ds) | set(datasets))
    head, block, tail = _split_block(card.text)
    kept = {m.group(1): m.group(0) for m in SECTION.finditer(block)}
    kept.update(sections)
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


def surface_section(folder: str, surface: Surface) -> str:
    """The card section of one surface: plots, a table of its numbers and how to reproduce it."""
    import numpy as np

    meta = surface.metadata
    model = meta.get("model", {})
    objective = meta.get("objective", {})
    grid = meta.get("grid", {})
    dirs = meta.get("directions", [])
    prefix = f"{folder}/" if folder else ""
    plots = ["curve"] if surface.ndim == 1 else ["contour", "surface"]
    images = " ".join(f"![{k}]({prefix}plot_{k}.png)" for k in plots)
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
