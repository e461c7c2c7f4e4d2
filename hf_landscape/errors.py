"""The `LandscapeError` hierarchy, and the redaction of secrets from every text that leaves the library.

Every error raised on bad user input is a `LandscapeError` and also the matching built-in
exception, so `except ValueError` keeps working (as in `peft.utils.error`). Messages name the
argument, the bad value and the fix.

A `LandscapeError`'s message never holds a Hub token: tokens from the environment (`HF_TOKEN`,
`HUGGING_FACE_HUB_TOKEN`), from the token file `huggingface_hub` reads, from a `token=` argument of the
call in progress (`hidden_token`), and anything shaped like a token (`hf_...`) or an `Authorization:
Bearer ...` value are replaced by `***` when the error is made (`redact`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator
from typing import Any, NoReturn

# A user access token is "hf_" and 34 letters and digits; 20 or more cover older and organization tokens, and no
# word of this library ("hf_landscape", "hf_hub_download") has that many letters after "hf_".
_TOKEN_SHAPED = re.compile(r"\bhf_[A-Za-z0-9]{20,}")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[^\s'\",;)\]}]+")
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# `token=` arguments of the calls in progress (a context variable: each thread and task sees its own).
_HIDDEN: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("hf_landscape_hidden", default=())
MASK = "***"


def _known_secrets() -> list[str]:
    secrets = [os.environ.get(name) for name in _TOKEN_ENV]
    try:
        from huggingface_hub import get_token

        secrets.append(get_token())  # the environment, then the token file (`HF_TOKEN_PATH`)
    except Exception:  # an unreadable token file must not turn one error into another
        pass
    secrets += list(_HIDDEN.get())
    # Longest first, so that a secret containing another is masked whole; very short values are not secrets.
    return sorted({s for s in secrets if isinstance(s, str) and len(s.strip()) >= 4}, key=len, reverse=True)


def redact(text: Any) -> str:
    """`text` (made a string) with every Hub token and bearer credential replaced by `***`.

    Example:
    ```python
    >>> from hf_landscape.errors import redact
    >>> redact("401 for Authorization: Bearer hf_abcdefghijklmnopqrstuvwxyz0123")
    '401 for Authorization: Bearer ***'

    ```
    """
    text = str(text)
    for secret in _known_secrets():
        text = text.replace(secret.strip(), MASK)
    text = _BEARER.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return _TOKEN_SHAPED.sub(MASK, text)


@contextlib.contextmanager
def hidden_token(token: Any) -> Iterator[None]:
    """Within the block, `redact` (and so every `LandscapeError` made there) masks `token` too (a `token=` argument
    that is not shaped like a Hub token and lives in no environment variable or file)."""
    if not isinstance(token, str) or not token:
        yield
        return
    reset = _HIDDEN.set((*_HIDDEN.get(), token))
    try:
        yield
    finally:
        _HIDDEN.reset(reset)


def raise_detached(error: BaseException) -> NoReturn:
    """Raise `error` (made in an `except` block from a library's error) without that error as its context: a Hub
    client's exception can carry the request, token and all, and `raise ... from None` only hides it from the
    printed traceback, keeping it in `__context__`."""
    try:
        raise error
    finally:
        error.__context__ = None


class LandscapeError(Exception):
    """Base class of every error hf_landscape raises on purpose. Its message is redacted (`redact`) when it is made."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*[redact(a) if isinstance(a, str) else a for a in args])


class ConfigError(LandscapeError, ValueError):
    """An option has a value that is not allowed (unknown normalization, `steps` < 2, ...)."""


class ModelError(LandscapeError, TypeError):
    """The model cannot be probed as asked (not a `PreTrainedModel`, no LM head, ...)."""


class ObjectiveError(LandscapeError, ValueError):
    """The evaluation data cannot give a loss (empty text, every token masked, ...)."""


class DirectionError(LandscapeError, ValueError):
    """Directions do not fit the model (names or shapes differ, nothing selected, ...)."""


class SurfaceError(LandscapeError, ValueError):
    """A surface cannot be saved or loaded (corrupted file, folder holds another surface, ...)."""


class HubError(LandscapeError, RuntimeError):
    """A Hub operation failed (push refused, repo not found, download failed, ...). Local files are never touched.

    Every failure to reach, read or write the Hub is a `HubError`; a failed download is also the error of what was
    being loaded (`HubModelError` is a `ModelError`, `HubSurfaceError` a `SurfaceError`, `HubDirectionError` a
    `DirectionError`, `HubObjectiveError` an `ObjectiveError`), so `except HubError` catches every Hub failure and
    `except SurfaceError` every failed load of a surface, wherever it came from.
    """


class HubModelError(HubError, ModelError):
    """A model could not be fetched from the Hub (no such repo or revision, offline, refused)."""


class HubSurfaceError(HubError, SurfaceError):
    """A surface or comparison could not be loaded from the Hub (no such repo or file, offline, refused)."""


class HubDirectionError(HubError, DirectionError):
    """A saved direction set could not be loaded from the Hub (no such repo or file, offline, refused)."""


class HubObjectiveError(HubError, ObjectiveError):
    """Evaluation data could not be loaded from the Hub by name (offline, no such dataset or split, refused)."""


class DependencyError(LandscapeError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra that installs it."""
