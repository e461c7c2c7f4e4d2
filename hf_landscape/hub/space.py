"""A static Space whose page is the viewer of some surfaces: one URL a paper can link.

`publish_space(space_id, landscape)` builds the viewer page (`viewer.surface_html` for one surface,
`viewer.compare_html` for several), then in ONE commit puts it into the Space as `index.html` with a README whose
YAML says `sdk: static` (the Hub serves `index.html` as the Space's page, with nothing to build or run), links the
models and dataset repos it shows, and gives the commands that reproduce each surface. The page holds plotly.js and
the data inline, so the Space serves one file and loads nothing.

A Space that exists already must be a static one: its `index.html` is replaced and its README kept (a user's edits
stay). Everything that can be refused is refused before anything is sent: an id that does not name a Space (not
`user/name`, or `datasets/...` / a model or dataset URL), surfaces of different kinds, a surface with no values; an
existing Space of another SDK is refused before anything is committed. What does not live here: the page
(`viewer/`), finding surfaces by name (`hub.sources`).
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import io
from ..errors import ConfigError, LandscapeError, hidden_token, raise_detached
from .card import TAGS, _hub_model_id, reproduce_command
from .mixin import _hub_error, check_repo_id

if TYPE_CHECKING:
    from ..comparison import CompareReport
    from ..surface import Surface

logger = logging.getLogger(__name__)

SPACE_PAGE = "index.html"
SPACE_SDK = "static"
TITLE_CHARACTERS = 30  # the Space's title in its YAML is kept short; the page and README carry the whole title
# `datasets/user/name`, `models/...`, or a Hub URL of any repo: what is not a bare Space id.
_PREFIXED = re.compile(r"^(?:https?://[^/]+/)?(spaces|datasets|models)?/?([^/]+/[^/]+?)/?$")


def check_space_id(space_id: Any, argument: str = "space_id") -> str:
    """`space_id` as `user/name`, or a `ConfigError` naming `argument` when it does not name a Space.

    `spaces/user/name` and `https://huggingface.co/spaces/user/name` name the Space `user/name`; `datasets/user/name`,
    a dataset's or a model's URL, or anything that is not a repo id are refused.

    Example:
    ```python
    >>> from hf_landscape.hub.space import check_space_id
    >>> check_space_id("me/landscapes"), check_space_id("https://huggingface.co/spaces/me/landscapes")
    ('me/landscapes', 'me/landscapes')

    ```
    """
    text = space_id.strip() if isinstance(space_id, str) else space_id
    if isinstance(text, str):
        match = _PREFIXED.match(text)
        url = text.startswith(("http://", "https://"))
        if match and (match.group(1) in ("datasets", "models") or (url and match.group(1) is None)):
            kind = {"datasets": "a dataset repo"}.get(match.group(1) or "", "a model repo")
            raise ConfigError(
                f"`{argument}` {space_id!r} names {kind}, not a Space; pass the Space's id, `user/name` (e.g. "
                f"{match.group(2)!r}: a Space may share the name of a dataset or model repo)."
            )
        if match and match.group(1) == "spaces":
            text = match.group(2)
    return check_repo_id(text, argument)


def publish_space(
    space_id: str,
    landscape: Surface | CompareReport | Mapping[str, Surface],
    *,
    token: str | None = None,
    private: bool | None = None,
    title: str | None = None,
    log_scale: bool = False,
    sources: Sequence[tuple[str, str]] = (),
    commit_message: str | None = None,
) -> str:
    """Publish the viewer of `landscape` as the static Space `space_id` (created if needed), in one commit; return the
    Space's URL.

    Args:
        space_id: `user/name` of the Space.
        landscape: a surface (its page), a `CompareReport` or `{label: surface}` (the comparison page).
        token: a write token (else the logged-in one); never recorded or logged.
        private: visibility of a new Space.
        title: the page's title (default: from the model names).
        log_scale: open the page on log10 of the values.
        sources: (repo id, repo type) of the Hub repos the surfaces were read from; the README links them, and its
            YAML lists the dataset repos (`datasets:`) beside the models (`models:`).
        commit_message: the commit message.

    Raises:
        ConfigError: `space_id` does not name a Space, the surfaces are of different kinds, or the Space exists with
            another SDK than static; nothing is committed.
        SurfaceError: a surface with no finite value; nothing is sent.
        HubError: the Hub refused or failed; nothing was committed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    space_id = check_space_id(space_id)
    report, page = _page(landscape, title=title, log_scale=log_scale)  # every refusal of the surfaces, before the Hub
    surfaces: dict[str, Surface] = report.surfaces if report is not None else {"": landscape}  # type: ignore[dict-item]
    api = HfApi(token=token)
    with hidden_token(token), tempfile.TemporaryDirectory(prefix="hf_landscape_space_") as staging:
        root = Path(staging)
        io.write_text(root / SPACE_PAGE, page)
        try:
            info = _space_info(api, space_id)
            if info is not None and info.sdk != SPACE_SDK:
                raise ConfigError(
                    f"`space_id` {space_id!r} is a Space of the {info.sdk!r} SDK, not a static one; its app would "
                    "not serve the page. Choose a new Space id (it is created static) or a static Space. Nothing was "
                    "pushed."
                )
            if info is None:
                api.create_repo(space_id, repo_type="space", space_sdk=SPACE_SDK, private=private, exist_ok=True)
            if info is None or "README.md" not in {s.rfilename for s in info.siblings or []}:
                io.write_text(root / "README.md", space_card(_page_title(page), surfaces, sources))
            operations = [
                CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in sorted(root.iterdir())
            ]
            api.create_commit(
                space_id,
                operations,
                repo_type="space",
                commit_message=commit_message or f"Publish the loss landscape viewer ({len(surfaces)} surface(s))",
            )
        except LandscapeError:
            raise
        except Exception as err:  # every client error becomes a HubError whose text cannot hold the token
            raise_detached(_hub_error(err, space_id))
    from huggingface_hub import constants

    url = f"{constants.ENDPOINT.rstrip('/')}/spaces/{space_id}"
    logger.info("published the viewer of %d surface(s) to %s", len(surfaces), url)
    return url


def _page(landscape: Any, *, title: str | None, log_scale: bool) -> tuple[CompareReport | None, str]:
    """The comparison report (None for one surface) and the viewer page of `landscape`."""
    from ..comparison import CompareReport
    from ..surface import Surface
    from ..viewer import check_same_kind, compare_html, surface_html

    if isinstance(landscape, Surface):
        return None, surface_html(landscape, title=title, log_scale=log_scale)
    if isinstance(landscape, Mapping) and landscape and all(isinstance(s, Surface) for s in landscape.values()):
        check_same_kind(landscape)
        landscape = CompareReport(dict(landscape))
    if not isinstance(landscape, CompareReport):
        raise ConfigError(
            f"`landscape` must be a Surface, a CompareReport or a non-empty dict of surfaces, got "
            f"{type(landscape).__name__}."
        )
    return landscape, compare_html(landscape, title=title, log_scale=log_scale)


def _page_title(page: str) -> str:
    import html

    match = re.search(r"<title>(.*?)</title>", page, re.S)
    return html.unescape(match.group(1)) if match else "Loss landscape"


def _space_info(api: Any, space_id: str) -> Any:
    """The Space's info, or None when there is no Space of that id."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return api.space_info(space_id, files_metadata=False)
    except RepositoryNotFoundError:
        return None


def space_card(title: str, surfaces: Mapping[str, Surface], sources: Sequence[tuple[str, str]] = ()) -> str:
    """The Space's README: YAML for a static Space (title, `sdk: static`, `app_file: index.html`, tags, the models and
    dataset repos shown) and a body that links them and gives the command that reproduces each surface."""
    import html

    from huggingface_hub import SpaceCard, SpaceCardData

    models = sorted({m for s in surfaces.values() if (m := _hub_model_id(s))})
    datasets = sorted({repo for repo, kind in sources if kind == "dataset"})
    short = title if len(title) <= TITLE_CHARACTERS else title[: TITLE_CHARACTERS - 1].rstrip() + "…"
    data = SpaceCardData(
        title=short,
        sdk=SPACE_SDK,
        app_file=SPACE_PAGE,
        tags=list(TAGS),
        models=models or None,
        datasets=datasets or None,
        emoji="⛰️",
        colorFrom="indigo",
        colorTo="green",
        pinned=False,
    )
    lines = [
        f"# {html.escape(title)}",
        "",
        "The interactive loss landscape: drag the 3-D surface to rotate it, hover a point for α, β, the loss and every "
        "metric recorded, and switch between the loss, each metric and a log10 scale. The page is one file, "
        f"`{SPACE_PAGE}`, made with hf_landscape; it loads nothing from anywhere.",
    ]
    links = [f"- [{repo}]({_repo_url(repo, kind)}) ({kind} repo)" for repo, kind in sorted(set(sources))]
    for name, sha, url in sorted({link for s in surfaces.values() if (link := _model_link(s)) is not None}):
        links.append(f"- model [{name}]({url}) at revision `{sha[:12]}`")
    if links:
        lines += ["", "## Sources", "", *links]
    lines += ["", "## Reproduce"]
    for label, surface in surfaces.items():
        line = reproduce_command(surface)
        command = (
            f"<pre><code>{html.escape(line)}</code></pre>"
            if line is not None
            else "The command line cannot make this surface; its metadata (`surface.json`) holds every setting."
        )
        lines += ["", f"{html.escape(label)}:", "", command] if label else ["", command]
    card = SpaceCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines).strip() + "\n")
    return str(card)


def _model_link(surface: Surface) -> tuple[str, str, str] | None:
    """(name, revision, URL) of the surface's model when it came from the Hub at a known revision."""
    from ..viewer import hub_url

    if not _hub_model_id(surface):
        return None
    model = surface.metadata["model"]
    url = hub_url(model["name_or_path"], model["commit_sha"])
    return (str(model["name_or_path"]), str(model["commit_sha"]), url) if url else None


def _repo_url(repo_id: str, repo_type: str) -> str:
    from huggingface_hub import constants

    prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
    return f"{constants.ENDPOINT.rstrip('/')}/{prefix}{repo_id}"
