"""The `LandscapeError` hierarchy.

Every error raised on bad user input is a `LandscapeError` and also the matching built-in
exception, so `except ValueError` keeps working (as in `peft.utils.error`). Messages name the
argument, the bad value and the fix.
"""


class LandscapeError(Exception):
    """Base class of every error hf_landscape raises on purpose."""


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
    """A Hub operation failed (push refused, repo not found, ...). Local files are never touched."""
