"""Landscapes named the way a user names them on the command line: local folders, Li et al.'s `.h5` files, Hub repos.

`load_landscape(names)` reads each name and returns what the viewer shows (`viewer`): one surface, a saved
comparison, or a comparison of every surface found, labelled by where each came from. A name is

- a local surface folder (`surface.json`), a saved comparison (`report.json`), or a folder whose subfolders hold
  surfaces (what `hf-landscape push` takes);
- one of Li et al.'s `.h5` surface files (`Surface.from_li2018_h5`, with `loss` as the loss);
- a Hub repo id, `user/name`, of a dataset or model repo (the dataset repo of that id first, as `from_pretrained`
  reads), optionally followed by a folder of the repo, `user/name/cola`: the surface or comparison at that folder,
  else every surface under it.

Only safetensors and JSON are read from the Hub. What does not live here: the pages (`viewer/`), publishing them
(`hub.space`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, SurfaceError
from .mixin import REPO_TYPES

if TYPE_CHECKING:
    from ..surface import Surface

SURFACE_FILE, REPORT_FILE = "surface.json", "report.json"
H5_SUFFIXES = (".h5", ".hdf5")


@dataclass
class Landscape:
    """What some names hold: `view` is one surface or a comparison (the page to show); `repos` are the (repo id, repo
    type) of the Hub repos read."""

    view: Any
    repos: list[tuple[str, str]] = field(default_factory=list)


def load_landscape(
    names: Sequence[str], *, loss: str = "train_loss", token: str | None = None, argument: str = "OUT"
) -> Landscape:
    """One surface, a saved comparison, or a comparison of every surface the `names` hold (see the module docstring).

    Raises:
        ConfigError: no name, or surfaces of different kinds (several surfaces make one comparison).
        SurfaceError: a name that is neither a local surface, comparison or `.h5` file nor a Hub repo holding one.
        HubError: the Hub could not be read.
    """
    from ..comparison import CompareReport
    from ..viewer import check_same_kind

    if isinstance(names, (str, Path)) or not names:
        raise ConfigError(f"`{argument}` must name at least one surface folder, .h5 file or Hub repo, got {names!r}.")
    found: list[tuple[str, Any]] = []  # (label, surface or report) per name
    repos: list[tuple[str, str]] = []
    for name, label in zip(names, distinct_labels([str(n) for n in names])):
        item, repo = _load_one(str(name), loss=loss, token=token, argument=argument)
        found.append((label, item))
        if repo is not None:
            repos.append(repo)
    if len(found) == 1 and not isinstance(found[0][1], dict):
        return Landscape(found[0][1], repos)
    surfaces: dict[str, Surface] = {}
    for label, item in found:
        inner = item.surfaces if isinstance(item, CompareReport) else item if isinstance(item, dict) else {"": item}
        for sub, surface in inner.items():
            surfaces["-".join(filter(None, [label if len(found) > 1 or not sub else "", sub]))] = surface
    surfaces = dict(zip(distinct_labels(list(surfaces)), surfaces.values()))
    if len(surfaces) == 1:
        return Landscape(next(iter(surfaces.values())), repos)
    check_same_kind(surfaces)  # before the report mixes anything
    return Landscape(CompareReport(surfaces), repos)


def _load_one(name: str, *, loss: str, token: str | None, argument: str) -> tuple[Any, tuple[str, str] | None]:
    """A surface, a comparison, or {folder label: surface} for one name; and the (repo id, type) it was read from."""
    from ..comparison import CompareReport
    from ..surface import Surface

    path = Path(name)
    if path.is_file() and path.suffix.lower() in H5_SUFFIXES:
        return Surface.from_li2018_h5(path, loss=loss), None
    if path.is_dir():
        if (path / REPORT_FILE).is_file():
            return CompareReport.from_pretrained(path), None
        if (path / SURFACE_FILE).is_file():
            return Surface.from_pretrained(path), None
        inner = sorted(p.parent for p in path.glob(f"*/{SURFACE_FILE}"))
        if not inner:
            raise SurfaceError(
                f"`{argument}` {name!r} holds no surface: no {SURFACE_FILE} or {REPORT_FILE} in it or its subfolders."
            )
        return {p.name: Surface.from_pretrained(p) for p in inner}, None
    if path.exists():
        raise SurfaceError(f"`{argument}` {name!r} is a file but not one of Li et al.'s .h5 surface files.")
    return _load_from_hub(name, token=token, argument=argument)


def _load_from_hub(name: str, *, token: str | None, argument: str) -> tuple[Any, tuple[str, str] | None]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    from ..comparison import CompareReport
    from ..errors import HubSurfaceError, hidden_token, raise_detached
    from ..surface import Surface

    parts = name.strip("/").split("/")
    repo_id, folder = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise SurfaceError(
            f"`{argument}` {name!r} is neither a local surface folder or .h5 file nor a Hub repo id (`user/name`, "
            "optionally followed by a folder of the repo)."
        ) from None
    api = HfApi(token=token)
    files, kind = None, None
    with hidden_token(token):
        for kind in REPO_TYPES:
            try:
                files = api.list_repo_files(repo_id, repo_type=kind)
                break
            except RepositoryNotFoundError:
                continue
            except HfHubHTTPError as err:
                raise_detached(
                    HubSurfaceError(
                        f"Could not list the files of the Hub repo {repo_id!r}: {type(err).__name__}: {err}"
                    )
                )
            except Exception:  # offline or unreachable (the HTTP client's own errors): the folder, from the cache
                return Surface.from_pretrained(repo_id, subfolder=folder or None, token=token), None
    if files is None or kind is None:
        raise SurfaceError(
            f"`{argument}` {name!r} is not a local path, and the Hub has no dataset or model repo {repo_id!r} you can "
            "read; check the name, or set HF_TOKEN for a private repo."
        )
    prefix = f"{folder}/" if folder else ""
    options: dict[str, Any] = {"subfolder": folder or None, "token": token, "repo_type": kind}
    if f"{prefix}{REPORT_FILE}" in files:
        return CompareReport.from_pretrained(repo_id, **options), (repo_id, kind)
    if f"{prefix}{SURFACE_FILE}" in files:
        return Surface.from_pretrained(repo_id, **options), (repo_id, kind)
    inner = sorted(f[len(prefix) : -len(SURFACE_FILE) - 1] for f in files if f.startswith(prefix))
    inner = [sub for sub in inner if f"{prefix}{sub}/{SURFACE_FILE}" in files]
    if not inner:
        raise SurfaceError(f"The Hub {kind} repo {repo_id!r} holds no surface under {folder or 'its root'!r}.")
    surfaces = {
        sub.replace("/", "-"): Surface.from_pretrained(repo_id, **{**options, "subfolder": prefix + sub})
        for sub in inner
    }
    return surfaces, (repo_id, kind)


def distinct_labels(names: list[str]) -> list[str]:
    """A distinct label per name, from its folder or file name (or repo id), in the characters a comparison label may
    hold: `runs/plain` → `plain`; two `out` folders → `out`, `out-2`; `resnet56.h5` → `resnet56`.

    Example:
    ```python
    >>> from hf_landscape.hub.sources import distinct_labels
    >>> distinct_labels(["runs/out", "other/out/", "resnet56.h5"])
    ['out', 'out-2', 'resnet56']

    ```
    """
    out: list[str] = []
    for name in names:
        path = Path(name.rstrip("/"))
        base = (path.stem if path.suffix.lower() in H5_SUFFIXES else path.name) or "surface"
        label = re.sub(r"[^A-Za-z0-9._+-]+", "_", base).lstrip("._+-") or "surface"
        candidate, k = label, 2
        while candidate in out:
            candidate, k = f"{label}-{k}", k + 1
        out.append(candidate)
    return out
