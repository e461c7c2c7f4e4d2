"""Publishing surfaces to the Hub: one commit with the arrays, the metadata, the plots and a model card.

The card is rendered from `model_cards/landscape_card.md` with `huggingface_hub.ModelCard`. Every
surface gets its own section between markers, so pushing again replaces that section and keeps the
rest of an existing card (a user's own text, other surfaces) as it was. Nothing is pushed until the
whole folder is staged locally; the push is a single `create_commit`, so a refused or failed push
leaves no half-made commit. The token is never written to metadata, logs or error messages.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, HubError

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
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not surfaces:
        raise ConfigError("`surfaces` is empty; pass at least one surface to push.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"`repo_id` {repo_id!r} is not a valid Hub repo id ({err}); use `user/name`.") from None
    folders = {_clean_folder(name): surface for name, surface in surfaces.items()}
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf_landscape_push_") as staging:
        root = Path(staging)
        for folder, surface in folders.items():
            target = root / folder if folder else root
            surface.save_pretrained(target, overwrite=True)
            surface.save_plots(target, formats=formats)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            existing = _existing_card(api, repo_id, revision)
            card = render_card(repo_id, folders, existing)
            (root / "README.md").write_text(card, encoding="utf-8")
            operations = [
                CommitOperationAdd(path_in_repo=p.relative_to(root).as_posix(), path_or_fileobj=str(p))
                for p in sorted(root.rglob("*"))
                if p.is_file()
            ]
            message = commit_message or f"Add loss landscape ({', '.join(f or '/' for f in folders)})"
            info = api.create_commit(url, operations, commit_message=message, revision=revision, create_pr=create_pr)
        except Exception as err:  # every client error becomes a HubError whose text cannot hold the token
            raise _hub_error(err, repo_id, token) from None
    logger.info("pushed %d surface(s) to %s", len(folders), repo_id)
    return str(info.commit_url)


def _clean_folder(name: str) -> str:
    folder = str(name).strip("/")
    if folder and (".." in folder.split("/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", folder)):
        raise ConfigError(f"Folder name {name!r} must use letters, digits, '.', '_', '-' and '/', with no '..'.")
    return folder


def _hub_error(err: Exception, repo_id: str, token: str | None) -> HubError:
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    text = f"{type(err).__name__}: {err}"
    if token:
        text = text.replace(token, "***")
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
    text = card.text
    if BLOCK_START not in text or BLOCK_END not in text:
        text = text.rstrip() + f"\n\n## Loss landscapes (hf_landscape)\n\n{BLOCK_START}\n{BLOCK_END}\n"
    head, rest = text.split(BLOCK_START, 1)
    block, tail = rest.split(BLOCK_END, 1)
    kept = {m.group(1): m.group(0) for m in re.finditer(r"<!-- surface:(\S*) -->.*?<!-- /surface:\1 -->", block, re.S)}
    kept.update(sections)
    block = "\n" + "\n".join(kept[f] for f in sorted(kept)) + "\n"
    card.text = head + BLOCK_START + block + BLOCK_END + tail
    return str(card)


def _hub_model_id(surface: Surface) -> str | None:
    model = surface.metadata.get("model", {})
    return model.get("name_or_path") if model.get("commit_sha") else None


def _hub_dataset_id(surface: Surface) -> str | None:
    source = surface.metadata.get("objective", {}).get("source", {}) or {}
    return source.get("hub_id")


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
    rows = [
        ("kind", surface.kind),
        (
            "model",
            f"`{model.get('name_or_path')}`" + (f" @ `{model['commit_sha'][:12]}`" if model.get("commit_sha") else ""),
        ),
        ("centre loss", _fmt(surface.centre)),
        ("lowest / highest loss", f"{_fmt(float(finite.min()))} / {_fmt(float(finite.max()))}" if finite.size else "—"),
    ]
    for name in sorted(surface.metrics):
        index = surface.centre_index
        rows.append((f"{name} at centre", _fmt(float(surface.metrics[name][index]) if index else float("nan"))))
    rows += [
        ("span", " × ".join(f"[{lo:g}, {hi:g}]" for lo, hi in grid.get("span", []))),
        ("steps", " × ".join(str(n) for n in grid.get("steps", []))),
        ("normalization", _fmt(dirs[0].get("normalization")) if dirs else "— (interpolation)"),
        ("seed", _fmt(meta.get("seed"))),
        ("evaluation tokens", f"{_fmt(objective.get('num_tokens'))} (fingerprint `{objective.get('fingerprint')}`)"),
        ("wall time", f"{_fmt(meta.get('wall_time_s'))} s"),
    ]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    title = folder or surface.kind
    return (
        f"<!-- surface:{folder} -->\n### {title}\n\n{images}\n\n{table}\n\n"
        f"Reproduce:\n\n```bash\n{reproduce_command(surface)}\n```\n<!-- /surface:{folder} -->"
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
        parts.append("--span=" + ",".join(f"{lo:g}:{hi:g}" for lo, hi in grid["span"]))
    if dirs:
        parts += ["--seed", str(meta.get("seed")), "--normalization", str(dirs[0].get("normalization"))]
        if dirs[0].get("include_1d"):
            parts.append("--include-1d")
    parts += ["--out", "out/"]
    return " ".join(parts)
