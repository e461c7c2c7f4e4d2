"""Optional packages. A feature that needs one imports it through `require`, so that a missing package is a
`DependencyError` naming the extra that installs it, raised before any work.

| package    | extra              | needed for                                                                  |
|------------|--------------------|-----------------------------------------------------------------------------|
| `datasets` | `data` (or `glue`) | objectives' data from files, columns or the Hub (classification, GLUE,      |
|            |                    | multiple choice, generation) and the CLI's `--dataset`                      |

The `data` extra also installs `evaluate` and scikit-learn, for the objectives' task metrics (`hf_landscape.metrics`).
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import DependencyError

EXTRAS = {"datasets": "data"}  # the extra of pyproject.toml that installs each optional package


def require(module: str, what: str) -> Any:
    """Import `module` (an optional package of `EXTRAS`) for `what`, or raise `DependencyError` naming its extra.

    ```python
    >>> require("math", "Arithmetic").sqrt(4.0)
    2.0

    ```
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        hint = f"`pip install 'hf_landscape[{extra}]'`" if extra else f"`pip install {top}`"
        raise DependencyError(
            f"{what} needs the `{top}` package, which is not installed; install it with {hint}."
        ) from None


__all__ = ["EXTRAS", "require"]
