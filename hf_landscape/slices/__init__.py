"""The slices researchers ask for beyond random planes, built on the engine and restored like everything else.

- `search`: how far along a direction until the loss rises (or a metric falls) by a target (`find_edge`), and the
  automatic span of a line or plane (`AutoSpan`, `span="auto"`).
- `curves`: mode-connecting curves between two models (Garipov et al. 2018): a quadratic Bézier curve or a
  polygonal chain whose bend is trained (`probe.connect`).
- `planes`: the plane through three models (or two models and a curve's bend), in true distances
  (`probe.plane_through`).
- `basin`: basin sizes, the radius where the loss rises (or a metric falls) by a target, along random directions
  ("most-case") and along the worst-case direction (Chen et al. 2025; `probe.basin`).
- `methods`: the probe's methods `connect`, `plane_through` and `basin` (mixed into `LandscapeProbe`).
- `weights`: which weights a curve or plane moves (every floating-point parameter, or a PeftModel's adapter only).

The worst-case direction itself is a direction kind, `"adversarial"` (`directions/adversarial.py`).
"""

from .basin import BasinResult
from .curves import CurveConfig
from .search import DEFAULT_RISE, AutoSpan, Edge, auto_spans, find_edge

__all__ = ["DEFAULT_RISE", "AutoSpan", "BasinResult", "CurveConfig", "Edge", "auto_spans", "find_edge"]
