"""The tables of a dataset repo: one Parquet table per pushed surface, and the `configs:` entries that name them.

A surface pushed into the folder `plane` of a dataset repo is the subset (config) `plane` of the dataset: its long
table (`export.surface_table`: one row per grid point, `alpha`, `beta`, `loss`, each metric, the seeds' spread) is
committed as `data/plane.parquet`, and the card's YAML gets

```yaml
configs:
- config_name: plane
  data_files:
  - split: train
    path: data/plane.parquet
```

which the Hub's Dataset Viewer shows and `datasets.load_dataset(repo_id, "plane")` reads. A folder `cola/plain` is the
subset `cola--plain` (a subset name holds no '/'); a surface at the repo root is the subset `default`, which
`load_dataset(repo_id)` reads without a name. Entries already in the card are kept, the pushed subsets' replaced; a
subset of the same name that reads other files (the user's own data) is never replaced: the push is refused.
What does not live here: the card's text (`hub.dataset_card`), staging and committing (`hub.mixin`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..surface import Surface

TABLES_FOLDER = "data"
ROOT_SUBSET = "default"  # the subset `datasets.load_dataset(repo_id)` reads when no name is given
SPLIT = "train"  # one split per subset, the name `datasets` gives a dataset of a single table


def subset_name(folder: str) -> str:
    """The subset (config) name of the surface in `folder` of the repo: the folder with '/' written '--', `default` for
    the repo root.

    Example:
    ```python
    >>> from hf_landscape.hub.tables import subset_name
    >>> subset_name("plane"), subset_name("cola/plain"), subset_name("")
    ('plane', 'cola--plain', 'default')

    ```
    """
    return folder.replace("/", "--") if folder else ROOT_SUBSET


def table_path(subset: str) -> str:
    """The path in the repo of the subset's Parquet table."""
    return f"{TABLES_FOLDER}/{subset}.parquet"


def subset_names(surfaces: Mapping[str, Any]) -> dict[str, str]:
    """Folder -> subset name of every surface pushed, or a `ConfigError` when two folders give one name."""
    names: dict[str, str] = {}
    for folder in surfaces:
        name = subset_name(folder)
        clash = next((f for f, n in names.items() if n == name), None)
        if clash is not None:
            raise ConfigError(
                f"The folders {clash!r} and {folder!r} would both be the dataset subset {name!r} ('/' is written "
                "'--' in a subset name); rename one of them (`path_in_repo`, or the label of a comparison)."
            )
        names[folder] = name
    return names


def config_entry(subset: str) -> dict[str, Any]:
    """The `configs:` entry of one subset: its table as the `train` split."""
    return {"config_name": subset, "data_files": [{"split": SPLIT, "path": table_path(subset)}]}


def write_tables(root: Path, surfaces: Mapping[str, Surface], subsets: Mapping[str, str]) -> list[str]:
    """Write each surface's long table to `root/data/<subset>.parquet` (atomically, through `export`); return the
    paths written, relative to `root`."""
    from ..export import export_surface

    written = []
    for folder, surface in surfaces.items():
        path = table_path(subsets[folder])
        export_surface(surface, root / path)
        written.append(path)
    return written


def merge_configs(existing: Any, subsets: list[str], repo_id: str) -> list[dict[str, Any]]:
    """The card's `configs:` after pushing `subsets`: the entries already there, in their order, with each pushed
    subset's entry put in place of its old one or appended.

    Raises:
        ConfigError: the card has an entry of a pushed subset's name that reads other files (nothing is pushed).
    """
    entries = [dict(e) for e in existing] if isinstance(existing, list) else []
    by_name = {e.get("config_name"): k for k, e in enumerate(entries) if isinstance(e, dict)}
    for subset in subsets:
        entry = config_entry(subset)
        if subset in by_name:
            old = entries[by_name[subset]]
            if _files(old) != _files(entry):
                raise ConfigError(
                    f"The card of {repo_id!r} already has a subset {subset!r} that reads {_files(old) or 'other files'}"
                    f", not {table_path(subset)!r}; push the surface into another folder (`path_in_repo`, "
                    "`--path-in-repo`) or another repo. Nothing was pushed."
                )
            entries[by_name[subset]] = entry
        else:
            entries.append(entry)
    return entries


def _files(entry: Mapping[str, Any]) -> list[str]:
    """The data files an entry of `configs:` reads, as sorted paths (any of the forms the Hub accepts)."""
    files = entry.get("data_files")
    items = files if isinstance(files, list) else [files]
    out: list[str] = []
    for item in items:
        paths = item.get("path") if isinstance(item, dict) else item
        out += [str(p) for p in (paths if isinstance(paths, list) else [paths]) if p is not None]
    return sorted(out)
