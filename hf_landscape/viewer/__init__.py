"""The landscape viewer: one self-contained HTML page per surface or comparison, built with plotly.

The page carries plotly.js inline, so it opens offline from a disk, an e-mail attachment or a static Space, and a
Content-Security-Policy that lets it load nothing from anywhere. What it shows:

- a plane: a rotatable 3-D surface and a contour map side by side, the centre (the model itself) marked, hover
  giving α, β, the loss and every metric at that point; a menu to show the loss or any metric, a linear / log10
  switch, the training path when the surface has one (`metadata["trajectory"]`), and for a surface made over
  several direction seeds the ± 1 std layers around the mean and the spread itself as a quantity;
- a line or interpolation: the curve with its spread band, each seed's own curve (off until clicked in the
  legend), the centre and the checkpoints of an interpolation path (`metadata["path"]`) marked;
- a comparison (`CompareReport`): every model side by side on shared colour limits, with the flatness table;
- the provenance: model and revision (linked to the Hub), objective and token fingerprint, directions,
  normalization, seeds, grid, precision, library versions, the command that reproduces the surface, and the
  whole metadata as JSON.

Every piece of text that comes from a surface (model names, commands, metric names) is escaped for HTML, and
plotly's JSON is escaped for the script it sits in, so a name cannot inject markup or script.

`surface_figure` / `compare_figure` return the plotly `Figure` (for notebooks, W&B, Dash; `figures`, `compare`,
built from `traces`); `surface_html` / `compare_html` the page; `write_surface_html` / `write_compare_html`
(`Surface.to_html`, `CompareReport.to_html`) write it (`page`). What does not live here: matplotlib figures
(`plotting/`) and file exports (`export.py`).
"""

from .compare import compare_figure
from .figures import surface_figure
from .page import (
    VIEWER_NAME,
    check_html_path,
    compare_html,
    hub_url,
    surface_html,
    write_compare_html,
    write_surface_html,
)
from .traces import check_same_kind

__all__ = [
    "VIEWER_NAME",
    "check_html_path",
    "check_same_kind",
    "compare_figure",
    "compare_html",
    "hub_url",
    "surface_figure",
    "surface_html",
    "write_compare_html",
    "write_surface_html",
]
