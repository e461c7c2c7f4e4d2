"""`BaseConfig`: the one way every config dataclass is validated, serialized and read back.

Configs save as sorted JSON. Reading one back warns about (and drops) keys this version does not
know, so files from newer versions still load, and raises on keys it needs but does not find.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, TypeVar

from .errors import ConfigError

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="BaseConfig")


@dataclasses.dataclass
class BaseConfig:
    """Mixin for config dataclasses: `to_dict`, `to_json_string` and `from_dict`."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"`{cls.__name__}.from_dict` needs a dict, got {type(data).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            logger.warning("%s: ignoring unknown keys %s (written by a newer version?)", cls.__name__, unknown)
        missing = sorted(names - set(data))
        if missing:
            raise ConfigError(
                f"`{cls.__name__}` data is missing keys {missing}; the file is incomplete or was not written "
                "by hf_landscape. Re-create it with `save_pretrained`."
            )
        return cls(**{k: data[k] for k in names})


def result_fields(cls: type, data: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The entries `names` of `data` (a result's `to_dict`) for `cls.from_dict`; derived entries such as intervals are
    left out, and a missing one is a `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"`{cls.__name__}.from_dict` needs a dict (from `to_dict`), got {type(data).__name__}.")
    missing = [name for name in names if name not in data]
    if missing:
        raise ConfigError(f"`{cls.__name__}` data is missing keys {missing}; pass what `to_dict` returned.")
    return {name: data[name] for name in names}


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise a `ConfigError` naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def check_patterns(name: str, value: Any) -> tuple[str, ...] | None:
    """Validate an optional list of regular expressions and return it as a tuple."""
    import re

    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    try:
        patterns = tuple(value)
    except TypeError:
        raise ConfigError(f"`{name}` must be a list of regular expressions, got {value!r}.") from None
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(f"`{name}` must hold strings (regular expressions), got {pattern!r}.")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"`{name}` holds an invalid regular expression {pattern!r}: {err}.") from None
    return patterns
