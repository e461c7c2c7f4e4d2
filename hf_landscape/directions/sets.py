"""`DirectionSet`: the directions of a line or plane kept together, saved as a folder, loaded from a folder or the Hub.

On disk a set is two files: `directions.safetensors` (every tensor, keyed `<axis>/<parameter name>`, and for a
low-rank direction `<axis>/<parameter name>/B` and `.../A`) and `directions.json` (sorted JSON: each axis's kind and
config, the set's metadata and the SHA-256 of the tensors file, so a corrupted or mismatched file is caught on load).
It has the same `save_pretrained` / `from_pretrained(repo_id_or_path)` / `push_to_hub` as a `Surface`
(`hub.mixin.HubMixin`). One `Direction` alone still saves to a single safetensors file (`Direction.save_pretrained`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..errors import DirectionError, HubDirectionError
from ..hub.mixin import FileSource, HubMixin
from .base import Direction
from .low_rank import LowRankDirection

TENSORS_NAME = "directions.safetensors"
INDEX_NAME = "directions.json"
FORMAT = "hf_landscape.directions"
FORMAT_VERSION = 1


class DirectionSet(HubMixin):
    """Directions along the axes of a line or plane, saved and loaded together (also from and to the Hub).

    A sequence of its directions: `probe.plane(directions=the_set)` uses them as they are.

    Args:
        directions: `Direction`s, or `LowRankDirection`s, one per axis.
        metadata: what else to keep with them (the model they were drawn for, ...), saved as JSON.

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape import Direction, DirectionSet
    >>> pair = DirectionSet([Direction({"w": torch.ones(2, 2)}, {"kind": "custom"}), Direction({"w": -torch.ones(2, 2)})])
    >>> pair.save_pretrained("/tmp/direction_set_example", overwrite=True)
    >>> again = DirectionSet.from_pretrained("/tmp/direction_set_example")
    >>> len(again), again[0].config["kind"], torch.equal(again[1]["w"], -torch.ones(2, 2))
    (2, 'custom', True)

    ```
    """

    _hub_files = (INDEX_NAME, TENSORS_NAME)
    _hub_noun = "direction set"
    _hub_error = DirectionError
    _hub_failure = HubDirectionError

    def __init__(
        self, directions: Sequence[Direction | LowRankDirection], metadata: Mapping[str, Any] | None = None
    ) -> None:
        directions = list(directions)
        if not directions:
            raise DirectionError("`directions` is empty; a direction set holds at least one direction.")
        for k, d in enumerate(directions):
            if not isinstance(d, (Direction, LowRankDirection)):
                raise DirectionError(
                    f"`directions[{k}]` must be a `Direction` or `LowRankDirection`, got {type(d).__name__}."
                )
        if metadata is not None and not isinstance(metadata, Mapping):
            raise DirectionError(f"`metadata` must be a dict, got {type(metadata).__name__}.")
        self.directions = directions
        self.metadata = dict(metadata or {})

    def __len__(self) -> int:
        return len(self.directions)

    def __getitem__(self, index: int) -> Direction | LowRankDirection:
        return self.directions[index]

    def __iter__(self) -> Iterator[Direction | LowRankDirection]:
        return iter(self.directions)

    def __repr__(self) -> str:
        kinds = [d.config.get("kind", "custom") for d in self.directions]
        return f"DirectionSet(axes={len(self)}, kinds={kinds})"

    # --- save / load -------------------------------------------------------------------------------------------

    def _tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for axis, d in enumerate(self.directions):
            if isinstance(d, LowRankDirection):
                for name, (b, a) in d.factors.items():
                    out[f"{axis}/{name}/B"] = b.detach().contiguous().cpu()
                    out[f"{axis}/{name}/A"] = a.detach().contiguous().cpu()
            else:
                out.update({f"{axis}/{name}": t.detach().contiguous().cpu() for name, t in d.tensors.items()})
        return out

    def _record(self, digest: str) -> dict[str, Any]:
        axes = [
            {
                "type": "low_rank" if isinstance(d, LowRankDirection) else "full",
                "names": list(d.factors if isinstance(d, LowRankDirection) else d.tensors),
                "config": io.jsonable(d.config),
            }
            for d in self.directions
        ]
        meta = io.jsonable(self.metadata)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "axes": axes, "metadata": meta, "sha256": digest}

    def save_pretrained(self, save_directory: str | os.PathLike, *, overwrite: bool = False, **options: Any) -> None:
        """Write `directions.safetensors` and `directions.json` into `save_directory`, atomically and durably.

        Raises:
            DirectionError: the folder holds a different direction set and `overwrite` is False.
        """
        super().save_pretrained(save_directory, overwrite=overwrite, **options)

    def _save_pretrained(self, folder: Path, *, overwrite: bool, **options: Any) -> None:
        if options:
            raise DirectionError(f"A direction set takes no save options, got {sorted(options)}.")
        io.check_output_folder(folder, argument="save_directory", names=(TENSORS_NAME, INDEX_NAME))
        io.make_output_folder(folder, argument="save_directory")
        tensors = self._tensors()
        with io.folder_lock(folder, argument="save_directory"):
            if (folder / INDEX_NAME).is_file() and not overwrite and not self._same_as(folder, tensors):
                raise DirectionError(
                    f"`save_directory` {str(folder)!r} already holds a different direction set; choose another "
                    "folder or pass `overwrite=True`."
                )
            digest = io.write_safetensors(folder / TENSORS_NAME, tensors, metadata={"format": FORMAT})
            io.write_json(folder / INDEX_NAME, self._record(digest))

    def _same_as(self, folder: Path, tensors: dict[str, torch.Tensor]) -> bool:
        """Whether `folder` holds this set already (saving it again is always allowed)."""
        try:
            old = DirectionSet._from_pretrained(FileSource(str(folder), folder=folder))
        except DirectionError:
            return False
        saved = old._tensors()
        return (
            old._record("") == self._record("")
            and saved.keys() == tensors.keys()
            and all(torch.equal(saved[k], tensors[k]) for k in tensors)
        )

    @classmethod
    def _from_pretrained(cls, source: FileSource) -> DirectionSet:
        from safetensors.torch import load_file

        index_path, tensors_path = source.path(INDEX_NAME), source.path(TENSORS_NAME)
        try:
            record = json.loads(index_path.read_text())
        except (OSError, ValueError) as err:
            raise DirectionError(f"{str(index_path)!r} is not valid direction-set JSON ({err}).") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("format_version") != 1:
            raise DirectionError(
                f"{str(index_path)!r} is not an hf_landscape direction set of format {FORMAT_VERSION}."
            )
        if io.sha256_file(tensors_path) != record.get("sha256"):
            raise DirectionError(
                f"{str(tensors_path)!r} does not match the hash recorded in {INDEX_NAME}: the file is corrupted or "
                "from another set; save or download it again."
            )
        try:
            tensors = load_file(str(tensors_path))
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise DirectionError(f"{str(tensors_path)!r} cannot be read as safetensors ({err}).") from None
        directions: list[Direction | LowRankDirection] = []
        try:
            for axis, entry in enumerate(record["axes"]):
                names, config = list(entry["names"]), dict(entry["config"])
                if entry["type"] == "low_rank":
                    factors = {n: (tensors[f"{axis}/{n}/B"], tensors[f"{axis}/{n}/A"]) for n in names}
                    directions.append(LowRankDirection(factors, config))
                else:
                    directions.append(Direction({n: tensors[f"{axis}/{n}"] for n in names}, config))
        except (KeyError, TypeError, ValueError) as err:
            raise DirectionError(
                f"{str(index_path)!r} does not match {TENSORS_NAME} ({type(err).__name__}: {err}); save the set again."
            ) from None
        return cls(directions, record.get("metadata") or {})

    def _card(self, folder: str, written: list[str]) -> dict[str, Any]:
        rows = "\n".join(
            f"| {axis} | {d.config.get('kind', 'custom')} | {d.config.get('seed', '—')} | "
            f"{d.config.get('normalization', '—')} | {len(d)} |"
            for axis, d in enumerate(self.directions)
        )
        title = folder or "directions"
        text = (
            f"<!-- surface:{folder} -->\n### {title}\n\nA set of {len(self)} direction(s), "
            f"`DirectionSet.from_pretrained`.\n\n| axis | kind | seed | normalization | tensors |\n|---|---|---|---|---|\n"
            f"{rows}\n<!-- /surface:{folder} -->"
        )
        return {"sections": {folder: text}}
