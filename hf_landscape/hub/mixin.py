"""`save_pretrained` / `from_pretrained` / `push_to_hub`, written once for every artifact kept as a folder of files.

In the manner of `huggingface_hub.ModelHubMixin`: a class (`Surface`, `CompareReport`, `DirectionSet`) implements
two hooks, `_save_pretrained(folder, *, overwrite, **options)` (write the files into an existing folder) and
`_from_pretrained(source)` (read them back through a `FileSource`), and names the files a folder must hold
(`_hub_files`). The mixin gives all three the same methods with the same keyword arguments:

* `save_pretrained(save_directory, *, overwrite=False, **options)`: checks and creates the folder, then the hook.
* `from_pretrained(repo_id_or_path, *, revision, subfolder, token, cache_dir, repo_type)`: a local folder, or else a
  Hub repo whose files are downloaded (safetensors and JSON only; the token is never logged or put in an error). With
  `repo_type=None` the dataset repo of that id is read if it holds the files, else the model repo.
* `push_to_hub(repo_id, *, repo_type, path_in_repo, token, private, revision, commit_message, create_pr, **options)`:
  `save_pretrained(staging, **options)` into a temporary folder, the card merged into the repo's own, then ONE
  `create_commit` of exactly the files written and the card. The `options` are the user's `save_pretrained` options
  (plot formats, log scale, ...), so the push holds what a local save with the same options holds; a class's
  `_push_defaults` fill in what the user did not give (a surface's push carries its PNG plots and its viewer page).
  A dataset repo (the default for a new repo) gets a dataset card whose `configs:` point the Hub's Dataset Viewer and
  `datasets.load_dataset` at one Parquet table per surface, `data/<subset>.parquet`, committed with it (`hub.tables`,
  `hub.dataset_card`); a model repo gets the model card (`hub.card`).

Every Hub failure raises a `HubError` (`HubSurfaceError`, `HubDirectionError` for a failed download, which are also
the artifact's own error), with the token redacted; a refused or failed push leaves no half-made commit and local
files untouched. What does not live here: the cards' content (`hub.card`, `hub.dataset_card`), the tables
(`hub.tables`), Spaces (`hub.space`), loading models (`hub.models`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .. import io
from ..errors import ConfigError, HubError, LandscapeError, SurfaceError, hidden_token, raise_detached

logger = logging.getLogger(__name__)

# The repo types a landscape is pushed to and read from, in the order `repo_type=None` tries them (a Space is published
# with `hub.space.publish_space`).
REPO_TYPES = ("dataset", "model")


class FileSource:
    """Where an artifact's files are read from: a local folder, or a folder of a Hub repo (downloaded on demand).

    Args:
        label: the `repo_id_or_path` as the user gave it (for messages).
        folder: the local folder, or None for the Hub.
        repo_id, subfolder, revision, token, cache_dir: the Hub location (`hf_hub_download`'s arguments).
        repo_type: "dataset" or "model"; None tries both (`REPO_TYPES` order) and keeps the first that holds the files.
        noun: what the artifact is called in messages ("surface").
        error: the error a failed download raises (a `HubError` subclass).
    """

    def __init__(
        self,
        label: str,
        *,
        folder: Path | None = None,
        repo_id: str | None = None,
        subfolder: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        repo_type: str | None = None,
        noun: str = "artifact",
        error: type[LandscapeError] = HubError,
    ) -> None:
        self.label = label
        self.folder = folder
        self.repo_id = repo_id
        self.subfolder = subfolder or None
        self.revision = revision
        self.token = token
        self.cache_dir = cache_dir
        self.repo_type = repo_type
        self.noun = noun
        self.error = error

    @property
    def on_hub(self) -> bool:
        return self.folder is None

    def sub(self, name: str, *, noun: str | None = None) -> FileSource:
        """The source of the folder `name` inside this one (holding a `noun`, by default this one's)."""
        noun = noun or self.noun
        if self.folder is not None:
            return FileSource(f"{self.label}/{name}", folder=self.folder / name, noun=noun, error=self.error)
        return FileSource(
            self.label,
            repo_id=self.repo_id,
            subfolder="/".join(filter(None, [self.subfolder, name])),
            revision=self.revision,
            token=self.token,
            cache_dir=self.cache_dir,
            repo_type=self.repo_type,
            noun=noun,
            error=self.error,
        )

    def path(self, name: str) -> Path:
        """The local path of the file `name` (downloaded first from the Hub)."""
        if self.folder is not None:
            return self.folder / name
        return Path(self.download([name])[0])

    def download(self, names: list[str]) -> list[str]:
        """Download the files `names` of this folder of the repo; a failure is this source's `HubError`.

        With no `repo_type`, the dataset repo of the id is tried first, then the model repo; the first that holds every
        file is kept for the files read after these."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        missed: list[tuple[str, Exception]] = []  # (repo type, why) of each repo type that does not hold the files
        with hidden_token(self.token):
            for repo_type in [self.repo_type] if self.repo_type else list(REPO_TYPES):
                try:
                    paths = [
                        hf_hub_download(
                            str(self.repo_id),
                            name,
                            subfolder=self.subfolder,
                            repo_type=repo_type,
                            revision=self.revision,
                            token=self.token,
                            cache_dir=None if self.cache_dir is None else str(self.cache_dir),
                        )
                        for name in names
                    ]
                except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as err:
                    missed.append((repo_type, err))  # LocalEntryNotFoundError too: offline and not in the cache
                    continue
                except (HfHubHTTPError, ValueError, OSError) as err:
                    raise_detached(
                        self.error(
                            f"Could not load {self.noun} {self.repo_id!r} from the Hub: {type(err).__name__}: {err}"
                        )
                    )
                self.repo_type = repo_type
                return paths
            raise_detached(self._not_found(missed, names))

    def _not_found(self, missed: list[tuple[str, Exception]], names: list[str]) -> LandscapeError:
        """The error for files that no tried repo type holds: the most telling reason first (a repo that exists but
        lacks them, a revision it lacks, offline with an empty cache, no such repo)."""
        from huggingface_hub import constants
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        repo_id, noun = str(self.repo_id), self.noun
        where = f" (in {self.subfolder!r})" if self.subfolder else ""
        for repo_type, err in missed:
            if not isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError)):
                return self.error(f"Hub {repo_type} repo {repo_id!r} holds no {noun}{where} ({', '.join(names)}).")
        for repo_type, err in missed:
            if isinstance(err, RevisionNotFoundError):
                return self.error(
                    f"Hub {repo_type} repo {repo_id!r} has no revision {self.revision!r}; check `revision`."
                )
        if any(isinstance(err, LocalEntryNotFoundError) for _, err in missed):
            offline = " (HF_HUB_OFFLINE=1 is set)" if constants.HF_HUB_OFFLINE else ""
            return self.error(
                f"`repo_id_or_path` {repo_id!r} is not a local folder, and as a Hub repo it could not be "
                f"reached{offline} and is not in the local cache; check the path or repo id, and the "
                "connection (unset HF_HUB_OFFLINE to download)."
            )
        kinds = " or ".join(t for t, _ in missed)
        return self.error(
            f"`repo_id_or_path` {repo_id!r} is neither a local folder nor a Hub repo ({kinds}) you can read; check the "
            "name, or pass `token=` for a private repo."
        )


class HubMixin:
    """`save_pretrained`, `from_pretrained` and `push_to_hub` from two hooks (see the module docstring).

    A subclass sets `_hub_files` (the files `from_pretrained` needs in a folder), `_hub_noun`, `_hub_error` (the
    error of a folder that holds no such artifact) and `_hub_failure` (the `HubError` subclass of a failed download),
    and implements `_save_pretrained` and `_from_pretrained`.
    """

    _hub_files: ClassVar[tuple[str, ...]] = ()
    _hub_noun: ClassVar[str] = "artifact"
    _hub_error: ClassVar[type[LandscapeError]] = SurfaceError
    _hub_failure: ClassVar[type[LandscapeError]] = HubError
    _push_defaults: ClassVar[Mapping[str, Any]] = {}

    # --- the hooks ---------------------------------------------------------------------------------------------

    def _save_pretrained(self, folder: Path, *, overwrite: bool, **options: Any) -> None:
        raise NotImplementedError

    @classmethod
    def _from_pretrained(cls, source: FileSource) -> Any:
        raise NotImplementedError

    def _card(self, folder: str, written: list[str]) -> dict[str, Any]:
        """What the model card shows of this artifact pushed into `folder` (`written`: the files there):
        `surfaces` (folder -> surface), `plots` (folder -> plot files) and `sections` (folder -> other sections)."""
        return {}

    # --- the methods -------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *, overwrite: bool = False, **options: Any) -> None:
        """Write this artifact's files into `save_directory` (created if needed), each atomically and durably.

        Args:
            save_directory: the folder.
            overwrite: replace a *different* artifact already in the folder (saving the same one again is allowed).
            options: what else to write (a surface's plots: `formats=("png",)`, `log_scale=True`, ...).
        """
        if not isinstance(save_directory, (str, os.PathLike)) or not str(save_directory):
            raise self._hub_error(f"`save_directory` must be a folder path, got {save_directory!r}.")
        self._save_pretrained(Path(save_directory), overwrite=overwrite, **options)

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        subfolder: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        repo_type: str | None = None,
    ) -> Any:
        """Load from a local folder or a Hub repo id (safetensors and JSON only; nothing is ever unpickled).

        Args:
            repo_id_or_path: a folder written by `save_pretrained`, or `user/name` of a Hub repo.
            revision: branch, tag or commit of the Hub repo.
            subfolder: the folder inside `repo_id_or_path` (e.g. the `path_in_repo` of a push).
            token: for a private repo; never recorded or logged.
            cache_dir: where downloads are cached (default: the Hugging Face cache).
            repo_type: `"dataset"` or `"model"`; None (default) reads the dataset repo of that id if it holds the
                files, else the model repo.

        Raises:
            ConfigError: `repo_type` is not "dataset", "model" or None.
            The class's error (`SurfaceError`, `DirectionError`) when the folder or repo holds no such artifact; a
            `HubError` subclass when the Hub could not be read.
        """
        check_repo_type(repo_type)
        if not isinstance(repo_id_or_path, (str, os.PathLike)) or not str(repo_id_or_path):
            raise cls._hub_error(
                f"`repo_id_or_path` must be a {cls._hub_noun} folder or a Hub repo id (e.g. 'user/landscape'), got "
                f"{repo_id_or_path!r}."
            )
        folder = Path(repo_id_or_path)
        if subfolder:
            folder = folder / subfolder
        if folder.is_dir():
            missing = [name for name in cls._hub_files if not (folder / name).is_file()]
            if missing:
                needed = " and ".join(cls._hub_files) + (" are" if len(cls._hub_files) > 1 else " is")
                raise cls._hub_error(f"`repo_id_or_path` {str(folder)!r} holds no {cls._hub_noun} ({needed} needed).")
            return cls._from_pretrained(FileSource(str(repo_id_or_path), folder=folder, noun=cls._hub_noun))
        source = FileSource(
            str(repo_id_or_path),
            repo_id=str(repo_id_or_path),
            subfolder=subfolder,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            repo_type=repo_type,
            noun=cls._hub_noun,
            error=cls._hub_failure,
        )
        source.download(list(cls._hub_files))  # every needed file, before any is read
        return cls._from_pretrained(source)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        repo_type: str | None = None,
        path_in_repo: str = "",
        token: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        **options: Any,
    ) -> str:
        """Push this artifact (what `save_pretrained(..., **options)` writes) and its card to a Hub repo, in one
        commit; return the commit URL.

        Args:
            repo_id: `user/name`, created if needed.
            repo_type: `"dataset"`: a dataset repo whose card points the Hub's Dataset Viewer and
                `datasets.load_dataset` at one Parquet table per surface (`data/<subset>.parquet`, committed too);
                `"model"`: a model repo with a model card (e.g. the repo of the model the landscape is of). None
                (default): the dataset repo `repo_id` if it exists, else the model repo `repo_id` if that exists,
                else a new dataset repo.
            path_in_repo: the folder for this artifact (the repo root by default); the card lists every folder.
            token: a write token (else the logged-in one); never recorded or logged.
            private: visibility of a new repo.
            revision: branch to commit to.
            commit_message: the commit message.
            create_pr: open a pull request instead.
            options: `save_pretrained` options, e.g. `formats=("pdf",), log_scale=True` for a surface's plots.

        Raises:
            ConfigError: a bad `repo_id`, `repo_type` or `path_in_repo`, raised before anything is sent.
            SurfaceError: a surface with no finite value (there is nothing to show), before anything is sent.
            HubError: the push failed; nothing was committed and local files are untouched.
        """
        return push_artifacts(
            {path_in_repo: self},
            repo_id,
            repo_type=repo_type,
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
            **options,
        )


def push_artifacts(
    artifacts: Mapping[str, HubMixin],
    repo_id: str,
    *,
    repo_type: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    **options: Any,
) -> str:
    """Push artifacts, each to its own folder (`""` for the repo root), in one commit; return the commit URL.

    Each is staged with `save_pretrained(folder, overwrite=True, **options)` (its class's `_push_defaults` filling in
    options not given), the card is rendered from what was staged and merged into the repo's own, and the staged files
    are committed at once: the push holds exactly what a local save with the same options holds, and the card. In a
    dataset repo the card comes with the tables its `configs:` name: `data/<subset>.parquet` per surface (`hub.tables`).
    `repo_type` None picks the existing dataset repo `repo_id`, else the existing model repo, else a new dataset repo.

    Raises:
        ConfigError: nothing to push, a bad `repo_id`, `repo_type` or folder, two folders of one subset name, or a
            subset of the repo's card that reads other files; all before anything is committed.
        SurfaceError: a surface with no finite value, before anything is sent.
        HubError: the Hub refused or failed; nothing was committed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from .card import render_card
    from .dataset_card import render_dataset_card
    from .tables import subset_names, write_tables

    if not artifacts:
        raise ConfigError("`surfaces` is empty; pass at least one surface to push.")
    check_repo_id(repo_id, "repo_id")
    check_repo_type(repo_type)
    folders = {clean_folder(name): artifact for name, artifact in artifacts.items()}
    api = HfApi(token=token)
    with hidden_token(token), tempfile.TemporaryDirectory(prefix="hf_landscape_push_") as staging:
        root = Path(staging)
        card: dict[str, dict[str, Any]] = {"surfaces": {}, "plots": {}, "sections": {}}
        for folder, artifact in folders.items():
            target = root / folder if folder else root
            artifact.save_pretrained(target, overwrite=True, **{**artifact._push_defaults, **options})
            written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
            for key, part in artifact._card(folder, written).items():
                card[key].update(part)
        subsets = subset_names(card["surfaces"])  # checked before the Hub is asked anything
        first_folder, first = next(iter(folders.items()))
        load = (type(first).__name__, first_folder)
        try:
            kind = _push_repo_type(api, repo_id, repo_type)
            url = api.create_repo(repo_id, repo_type=kind, private=private, exist_ok=True).repo_id
            existing = _existing_card(api, repo_id, revision, kind)
            if kind == "dataset":
                write_tables(root, card["surfaces"], subsets)
                viewers = {f: f"{f}/viewer.html" if f else "viewer.html" for f in card["surfaces"]}
                files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
                text = render_dataset_card(
                    repo_id,
                    card["surfaces"],
                    existing,
                    subsets=subsets,
                    plots=card["plots"],
                    sections=card["sections"],
                    viewers={f: v for f, v in viewers.items() if v in files},
                    load=load,
                )
            else:
                text = render_card(
                    repo_id, card["surfaces"], existing, plots=card["plots"], sections=card["sections"], load=load
                )
            io.write_text(root / "README.md", text)
            operations = [
                CommitOperationAdd(path_in_repo=p.relative_to(root).as_posix(), path_or_fileobj=str(p))
                for p in sorted(root.rglob("*"))
                if p.is_file()
            ]
            message = commit_message or f"Add loss landscape ({', '.join(f or '/' for f in folders)})"
            info = api.create_commit(
                url, operations, repo_type=kind, commit_message=message, revision=revision, create_pr=create_pr
            )
        except LandscapeError:  # the card's own refusal (a subset of the repo that reads other files)
            raise
        except Exception as err:  # every client error becomes a HubError whose text cannot hold the token
            raise_detached(_hub_error(err, repo_id))
    logger.info("pushed %d artifact(s) to the %s repo %s", len(folders), kind, repo_id)
    return str(info.commit_url)


def push_surfaces(
    surfaces: Mapping[str, Any],
    repo_id: str,
    *,
    repo_type: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    formats: tuple[str, ...] = ("png",),
    **options: Any,
) -> str:
    """Push surfaces, each to its own folder (`""` for the repo root), with their plots in `formats`, in one commit;
    return the commit URL (`push_artifacts`; `options` are further save options such as `log_scale=True`).

    Raises:
        HubError: the Hub refused or failed; the message says what to do. Nothing is half-committed.
    """
    return push_artifacts(
        surfaces,
        repo_id,
        repo_type=repo_type,
        token=token,
        private=private,
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
        formats=formats,
        **options,
    )


def check_repo_type(repo_type: Any, argument: str = "repo_type") -> str | None:
    """`repo_type` if it is "dataset", "model" or None, else a `ConfigError` naming `argument`."""
    if repo_type is None or repo_type in REPO_TYPES:
        return repo_type
    hint = " (a Space is published with `hf_landscape.hub.publish_space` or `hf-landscape space`)"
    raise ConfigError(
        f"`{argument}` must be 'dataset' or 'model' (or None: the existing repo's type, a dataset for a new repo), "
        f"got {repo_type!r}{hint if repo_type == 'space' else ''}."
    )


def _push_repo_type(api: Any, repo_id: str, repo_type: str | None) -> str:
    """The repo type a push goes to: `repo_type`, or for None the existing dataset repo, else the existing model repo,
    else "dataset" (a new dataset repo)."""
    if repo_type is not None:
        return repo_type
    for candidate in REPO_TYPES:
        if api.repo_exists(repo_id, repo_type=candidate):
            return candidate
    return REPO_TYPES[0]


def check_repo_id(repo_id: Any, argument: str) -> str:
    """`repo_id` if it is a valid Hub repo id (`user/name`), else a `ConfigError` naming `argument`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        if not isinstance(repo_id, str):  # `validate_repo_id` lets None through
            raise TypeError(f"a repo id is a string, not {type(repo_id).__name__}")
        validate_repo_id(repo_id)
    except (HFValidationError, TypeError) as err:
        raise ConfigError(f"`{argument}` {repo_id!r} is not a valid Hub repo id ({err}); use `user/name`.") from None
    return repo_id


def clean_folder(name: str, argument: str = "path_in_repo") -> str:
    """`name` as a folder of a repo (no leading or trailing '/'), or a `ConfigError` naming `argument`."""
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


def _existing_card(api: Any, repo_id: str, revision: str | None, repo_type: str) -> str | None:
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "README.md", revision=revision, repo_type=repo_type)
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    return Path(path).read_text(encoding="utf-8")
