"""The HTML viewer as built: the figure's traces and switches, the page's provenance, escaping and links, and bad
input. What a browser makes of the page is in test_viewer_browser.py."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from hf_landscape import CompareReport, ConfigError, Surface, SurfaceError
from hf_landscape.viewer import compare_figure, compare_html, hub_url, surface_figure, surface_html

X = np.linspace(-1.0, 1.0, 5)
Y = np.linspace(-1.0, 1.0, 3)
SHA = "0123456789abcdef0123456789abcdef01234567"


def metadata(**overrides) -> dict:
    meta = {
        "kind": "plane",
        "model": {"name_or_path": "org/tiny", "revision": "main", "commit_sha": SHA, "class": "GPT2LMHeadModel"},
        "objective": {"type": "CausalLMObjective", "fingerprint": "325b10cfa522dbbc", "num_tokens": 150},
        "directions": [
            {"kind": "random", "seed": 0, "axis": 0, "normalization": "filter", "include_1d": False},
            {"kind": "random", "seed": 0, "axis": 1, "normalization": "filter", "include_1d": False},
        ],
        "seed": 0,
        "grid": {"steps": [5, 3], "span": [[-1.0, 1.0], [-1.0, 1.0]]},
        "versions": {"hf_landscape": "0.1.0", "torch": "2.13.0"},
        "command": "hf-landscape plane org/tiny --text-file t.txt --out out",
    }
    meta.update(overrides)
    return meta


def plane(scale: float = 1.0, **overrides) -> Surface:
    xx, yy = np.meshgrid(X, Y)
    values = 2.0 + scale * (xx**2 + 2 * yy**2)
    kwargs = dict(y=Y, metrics={"accuracy": 1.0 - 0.25 * xx**2}, metadata=metadata())
    kwargs.update(overrides)
    return Surface(X, values, **kwargs)


def seeded_plane() -> Surface:
    base = plane()
    samples = np.stack([base.values - 0.5, base.values + 0.5])
    return plane(samples=samples, spread=samples.std(0, ddof=1), metadata=metadata(seed=None, seeds=[0, 1]))


def line(kind: str = "line", **overrides) -> Surface:
    values = 2.0 + X**2
    kwargs = dict(metrics={"accuracy": 1 - X**2}, metadata={"kind": kind, "model": {"name_or_path": "org/tiny"}})
    kwargs.update(overrides)
    return Surface(X, values, **kwargs)


def traces(fig, kind: str) -> list:
    return [t for t in fig.data if t.type == kind]


def menu(fig, name: str) -> dict:
    (found,) = [m for m in fig.layout.updatemenus if m.name == name]
    return found


# --- the figure of a plane ---------------------------------------------------------------------------


def test_plane_has_a_surface_and_a_contour_per_quantity_loss_shown_first():
    fig = surface_figure(plane())
    surfaces, contours = traces(fig, "surface"), traces(fig, "contour")
    assert [t.visible for t in surfaces] == [True, False] and [t.visible for t in contours] == [True, False]
    np.testing.assert_array_equal(np.array(contours[0].z, dtype=float), plane().values)
    np.testing.assert_array_equal(np.array(contours[1].z, dtype=float), plane().metrics["accuracy"])


def test_quantity_menu_switches_between_loss_and_each_metric():
    fig = surface_figure(plane())
    buttons = menu(fig, "quantity").buttons
    assert [b.label for b in buttons] == ["loss", "accuracy"]
    contour_index = [i for i, t in enumerate(fig.data) if t.type == "contour"]
    visible = buttons[1].args[0]["visible"]
    assert [visible[i] for i in contour_index] == [False, True]
    assert visible[-1] is True  # the centre marker on the contour map stays


def test_log_switch_replaces_every_value_by_its_log10():
    s = plane(metrics={"accuracy": np.full((3, 5), -1.0)})  # nothing to take the log of: blank under log10
    fig = surface_figure(s)
    linear, log = menu(fig, "scale").buttons
    data, _, indices = log.args
    contour = indices.index(next(i for i, t in enumerate(fig.data) if t.type == "contour"))
    np.testing.assert_allclose(np.array(data["z"][contour], dtype=float), np.log10(s.values), rtol=1e-6)
    accuracy = [i for i, t in enumerate(fig.data) if t.type == "contour"][1]
    assert data["z"][indices.index(accuracy)] == [[None] * 5] * 3
    assert linear.args[0]["z"][contour] == s.values.tolist()
    assert log.args[1]["coloraxis.colorbar.title.text"] == "log10 loss"


def test_log_scale_opens_on_log10():
    fig = surface_figure(plane(), log_scale=True)
    np.testing.assert_allclose(np.array(traces(fig, "contour")[0].z, dtype=float), np.log10(plane().values), rtol=1e-6)
    assert menu(fig, "scale").active == 1


def test_hover_shows_alpha_beta_loss_and_every_metric():
    fig = surface_figure(plane())
    contour = traces(fig, "contour")[0]
    assert contour.hovertemplate == (
        "α = %{x:.4~g}<br>β = %{y:.4~g}<br>loss = %{customdata[0]}<br>accuracy = %{customdata[1]}<extra></extra>"
    )
    assert list(contour.customdata[1][2]) == ["2", "1"]  # the centre
    assert list(contour.customdata[0][0]) == ["5", "0.75"]


def test_non_finite_values_are_gaps_and_read_as_such_on_hover():
    s = plane()
    s.values[0, 0], s.values[0, 1] = np.nan, np.inf
    contour = traces(surface_figure(s), "contour")[0]
    assert contour.z[0][0] is None and contour.z[0][1] is None
    assert contour.customdata[0][0][0] == "NaN" and contour.customdata[0][1][0] == "∞"


def test_centre_is_marked_in_3d_and_on_the_contours():
    fig = surface_figure(plane())
    (centre_3d, _) = [t for t in fig.data if t.type == "scatter3d"]
    assert (centre_3d.x, centre_3d.y, centre_3d.z) == ((0.0,), (0.0,), (2.0,))
    (centre,) = [t for t in fig.data if t.type == "scatter" and t.name == "centre: the model (θ₀)"]
    assert (centre.x, centre.y) == ((0.0,), (0.0,)) and "loss = 2" in centre.hovertemplate


def test_trajectory_is_drawn_on_the_contours_with_steps_and_losses():
    trajectory = {"coordinates": [[0.8, 0.6], [0.3, 0.1], [0.0, 0.0]], "steps": [0, 50, 100], "losses": [4, 3, 2]}
    fig = surface_figure(plane(metadata=metadata(trajectory=trajectory)))
    (path,) = [t for t in fig.data if t.name == "training path (snapshots)"]
    assert path.x == (0.8, 0.3, 0.0) and path.y == (0.6, 0.1, 0.0)
    assert path.text == ("step 0", "", "step 100")
    assert "step 50" in path.hovertext[1] and "loss of this snapshot = 3" in path.hovertext[1]


def test_seed_spread_is_a_second_layer_and_a_quantity():
    s = seeded_plane()
    fig = surface_figure(s)
    layers = [t for t in fig.data if t.type == "surface" and t.legendgroup == "spread"]
    assert len(layers) == 2 and all(t.opacity < 0.5 for t in layers)
    np.testing.assert_allclose(np.array(layers[0].z, dtype=float), s.values + s.spread, rtol=1e-6)
    np.testing.assert_allclose(np.array(layers[1].z, dtype=float), s.values - s.spread, rtol=1e-6)
    labels = [b.label for b in menu(fig, "quantity").buttons]
    assert labels == ["loss", "accuracy", "loss spread (std over 2 seeds)"]
    assert "loss std over seeds = %{customdata[2]}" in traces(fig, "contour")[0].hovertemplate


# --- lines and interpolations ------------------------------------------------------------------------


def test_line_curve_band_seeds_and_centre():
    samples = np.stack([line().values - 0.25, line().values + 0.25])
    s = line(spread=samples.std(0, ddof=1), samples=samples, metadata={"kind": "line", "seeds": [4, 9]})
    fig = surface_figure(s)
    (curve,) = [t for t in fig.data if t.name == "loss"]
    assert curve.y == tuple(s.values.tolist()) and "loss = %{customdata[0]}" in curve.hovertemplate
    (band,) = [t for t in fig.data if t.fill == "tonexty"]
    np.testing.assert_allclose(band.y, s.values - s.spread, rtol=1e-6)
    seeds = [t for t in fig.data if t.name in ("seed 4", "seed 9")]
    assert [t.visible for t in seeds] == ["legendonly", "legendonly"]
    (centre,) = [t for t in fig.data if t.name == "centre: the model (θ₀)" and t.visible is not False]
    assert (centre.x, centre.y) == ((0.0,), (2.0,))


def test_line_log_switch_is_a_log_axis_and_the_quantity_menu_names_the_axis():
    fig = surface_figure(line())
    assert [b.args[0] for b in menu(fig, "scale").buttons] == [{"yaxis.type": "linear"}, {"yaxis.type": "log"}]
    assert menu(fig, "quantity").buttons[1].args[1] == {"yaxis.title.text": "accuracy"}


def test_interpolation_path_marks_each_checkpoint_with_its_model():
    x = np.linspace(-0.5, 2.5, 7)
    path = {
        "knots": [0, 1, 2],
        "models": [{"name_or_path": "a/m0"}, {"name_or_path": "a/m1"}, {"name_or_path": "a/m2"}],
    }
    s = Surface(x, 1 + np.sin(x) ** 2, metadata={"kind": "interpolation", "path": path})
    fig = surface_figure(s)
    (knots,) = [t for t in fig.data if t.name == "checkpoints on the path"]
    assert knots.x == (1.0, 2.0) and knots.text == ("θ1", "θ2")
    assert "a/m2" in knots.hovertext[1]
    assert [shape.x0 for shape in fig.layout.shapes] == [1.0, 2.0]


# --- comparisons ---------------------------------------------------------------------------------------


def test_comparison_shares_colour_limits_per_quantity_and_scale():
    report = CompareReport({"plain": plane(4.0), "sam": plane(1.0)})
    fig = compare_figure(report)
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == report.colour_limits()
    assert (fig.layout.coloraxis2.cmin, fig.layout.coloraxis2.cmax) == report.colour_limits(metric="accuracy")
    assert {t.coloraxis for t in traces(fig, "contour")} == {"coloraxis", "coloraxis2"}
    _, log = menu(fig, "scale").buttons
    lo, hi = report.colour_limits(log_scale=True)
    assert (log.args[1]["coloraxis.cmin"], log.args[1]["coloraxis.cmax"]) == (lo, hi)


def test_comparison_3d_views_share_their_heights():
    report = CompareReport({"plain": plane(4.0), "sam": plane(1.0)})
    fig = compare_figure(report)
    anchors = [t for t in fig.data if t.type == "scatter3d" and t.hoverinfo == "skip" and t.visible]
    assert [t.z for t in anchors] == [report.colour_limits()] * 2
    assert [t.scene for t in anchors] == ["scene", "scene2"]


def test_comparison_page_has_the_flatness_table_beside_the_figure():
    report = CompareReport({"plain": plane(4.0), "sam": plane(1.0)})
    page = compare_html(report)
    table = page[page.index("<table class='flatness'>") : page.index("</table>")]
    assert "<th scope='col'>plain</th><th scope='col'>sam</th>" in table
    rows = report.table()
    expected = [f"{row['curvature_mean']:.4g}" for row in rows]
    assert re.search(rf"mean curvature</th><td>{expected[0]}</td><td>{expected[1]}</td>", table)
    assert page.index("class='card side'") < page.index('id="landscape"')  # sized after the table's column exists


def test_comparison_of_lines_draws_every_model_on_one_axes():
    report = CompareReport({"a": line(), "b": line(metrics={"accuracy": np.zeros(5)})})
    fig = compare_figure(report)
    assert [t.name for t in fig.data if t.name and t.name.endswith(": loss")] == ["a: loss", "b: loss"]


def test_comparison_refuses_mixed_kinds(tmp_path):
    report = CompareReport({"a": line(), "b": line("interpolation")})
    with pytest.raises(ConfigError, match=r"mixes kinds \('a' is a line, 'b' is an interpolation\)"):
        report.to_html(tmp_path / "compare.html")
    assert list(tmp_path.iterdir()) == []


def test_comparison_without_a_centre_has_a_note_instead_of_a_table():
    x = np.linspace(0.5, 1.5, 3)
    s = Surface(x, np.add.outer(x, x), y=x)
    page = compare_html(CompareReport({"a": s, "b": s}))
    assert "No flatness table: The surface&#x27;s grid does not pass through the origin" in page


# --- the page --------------------------------------------------------------------------------------------


def test_page_is_self_contained():
    page = surface_html(plane())
    assert page.startswith("<!DOCTYPE html>")
    assert len(re.findall(r"<script[^>]*\ssrc=", page)) == 0  # plotly.js inline, nothing loaded from anywhere
    assert "Plotly.newPlot" in page and len(page) > 1_000_000
    assert "default-src 'none'" in page


def test_provenance_is_on_the_page():
    page = surface_html(plane())
    for text in (
        "GPT2LMHeadModel",
        SHA,
        "CausalLMObjective",
        "325b10cfa522dbbc",
        "<dt>Normalization</dt><dd>filter</dd>",
        "<dt>Seeds</dt><dd><code>0</code></dd>",
        "5 × 3 points, α ∈ [-1, 1], β ∈ [-1, 1]",
        "torch <code>2.13.0</code>",
        "<pre><code>hf-landscape plane org/tiny --text-file t.txt --out out</code></pre>",
    ):
        assert text in page, text


def test_all_metadata_is_on_the_page_as_json():
    page = surface_html(plane())
    start = page.index("<summary>all metadata (JSON)</summary><pre><code>") + len(
        "<summary>all metadata (JSON)</summary><pre><code>"
    )
    text = page[start : page.index("</code></pre>", start)]
    import html

    assert json.loads(html.unescape(text)) == plane().metadata


def test_model_links_to_its_revision_on_the_hub(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert f'href="https://huggingface.co/org/tiny/tree/{SHA}"' in surface_html(plane())


def test_hub_link_follows_hf_endpoint(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert hub_url("org/tiny", "refs/pr/1") == "http://127.0.0.1:9/org/tiny/tree/refs%2Fpr%2F1"
    monkeypatch.setenv("HF_ENDPOINT", "javascript:alert(1)")
    assert hub_url("org/tiny") == "https://huggingface.co/org/tiny"


def test_a_local_model_is_not_linked():
    s = plane(metadata=metadata(model={"name_or_path": "runs/ckpt", "local_path": "/data/runs/ckpt"}))
    page = surface_html(s)
    assert "<code>runs/ckpt</code>" in page and "huggingface.co/runs" not in page


@pytest.mark.parametrize("name", ["../x", "a b", "org/name/extra", "", None])
def test_hub_url_refuses_what_is_not_a_repo_id(name):
    assert hub_url(name) is None


def test_user_text_cannot_inject_markup_or_script():
    evil_model = '<img src=x onerror="alert(1)">'
    evil_command = "hf-landscape plane m --out x </script><script>alert(2)</script>"
    evil_metric = "acc<b>%{x}</b>"
    s = plane(
        metrics={evil_metric: np.zeros((3, 5))},
        metadata=metadata(model={"name_or_path": evil_model}, command=evil_command),
    )
    page = surface_html(s)
    assert "<img src=x" not in page and "<script>alert(2)" not in page and "<b>%{x}" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page  # shown, as text
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page
    fig = surface_figure(s)
    assert "acc&lt;b&gt;&#37;{x}&lt;/b&gt; = %{customdata[1]}" in traces(fig, "contour")[0].hovertemplate


def test_surface_without_a_recorded_command_shows_the_one_written_from_its_metadata():
    page = surface_html(plane(metadata=metadata(command=None)))
    assert "hf-landscape plane org/tiny --revision " + SHA in page  # the card's command, from the metadata
    own = plane(metadata=metadata(command=None, objective={"type": "MyObjective", "fingerprint": "f"}))
    assert "no command line makes it (the surface was made from Python)" in surface_html(own)


def test_li2018_import_shows_its_source():
    s = plane(metadata={"kind": "plane", "source": {"format": "li2018_h5", "file": "resnet.h5", "sha256": "ab"}})
    assert "file <code>resnet.h5</code>" in surface_html(s)


# --- writing, and bad input ------------------------------------------------------------------------------


def test_to_html_writes_the_page_and_returns_its_path(tmp_path):
    path = plane().to_html(tmp_path / "sub" / "viewer.html")
    assert path == tmp_path / "sub" / "viewer.html"
    assert path.read_text(encoding="utf-8") == surface_html(plane())
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["viewer.html"]


def test_to_html_refuses_another_suffix_or_a_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"must end in \.html"):
        plane().to_html(tmp_path / "viewer.png")
    (tmp_path / "v.html").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        plane().to_html(tmp_path / "v.html")


def test_a_surface_with_no_values_is_refused_and_nothing_written(tmp_path):
    s = Surface(X, np.full((3, 5), np.nan), y=Y)
    with pytest.raises(SurfaceError, match="has no values"):
        s.to_html(tmp_path / "viewer.html")
    with pytest.raises(SurfaceError, match="has no values"):
        CompareReport({"a": plane(), "b": s}).to_html(tmp_path / "compare.html")
    assert list(tmp_path.iterdir()) == []


def test_a_probe_surface_gets_its_page(gpt2_model, tokenizer, texts, tmp_path):
    from hf_landscape import CausalLMObjective, LandscapeProbe

    probe = LandscapeProbe(gpt2_model(), CausalLMObjective(texts, tokenizer, max_length=16), progress=False)
    s = probe.plane(steps=3, seed=[0, 1])
    page = s.to_html(tmp_path / "viewer.html").read_text(encoding="utf-8")
    assert f"centre loss {s.centre:.6g}" in page
    assert s.metadata["objective"]["fingerprint"] in page
    assert "<dt>Seeds</dt><dd><code>[0, 1]</code></dd>" in page
    assert math.isfinite(s.centre)


def test_a_surface_of_one_axis_is_refused_as_a_plane_and_one_without_draws_has_no_spread():
    from hf_landscape.viewer.traces import plane_axes, surface_array

    line = Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line"})
    with pytest.raises(SurfaceError, match="A line surface has one axis; only planes"):
        plane_axes(line)
    with pytest.raises(SurfaceError, match="holds no seed spread"):
        surface_array(line, "loss_spread")
