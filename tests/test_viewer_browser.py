"""The viewer in a real browser: Debian's chromium, headless, driven by Playwright, with the network off.

Each page must render (plotly's SVG and the 3-D WebGL canvas exist), log no console error, request nothing but its
own file, show a point's loss on hover, answer its switches, and make a screenshot that is not blank. The tests skip,
saying why, where Playwright or chromium is missing (`pip install 'hf_landscape[viewer]'`, `apt-get install -y
chromium`); set HF_LANDSCAPE_CHROMIUM to use another chromium executable.

The `.glb` export is loaded by three.js's own `GLTFLoader` in the same browser, from the npm package `three` in the
folder HF_LANDSCAPE_THREE_JS names (`npm install three` puts it in `node_modules/three`; `.ci/run` does); the test
skips, saying so, without it.
"""

from __future__ import annotations

import io
import os
import shutil
import time

import numpy as np
import pytest

from hf_landscape import CompareReport, Surface

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--enable-unsafe-swiftshader",  # WebGL (the 3-D view) on the CPU, with no GPU
]
VIEWPORT = {"width": 1400, "height": 900}
# The text of every hover label, one line per line of the label (plotly draws them as SVG <tspan class="line">).
HOVER_TEXT = """Array.from(document.querySelectorAll('#landscape .hovertext')).map(label => {
    const lines = Array.from(label.querySelectorAll('text.nums tspan.line')).map(t => t.textContent);
    const name = label.querySelector('text.name');  // the trace's name box beside the label
    return (lines.length ? lines.join('\\n') : label.textContent) + (name ? '\\n' + name.textContent : '');
}).join('\\n')"""


def chromium_executable() -> str | None:
    path = os.environ.get("HF_LANDSCAPE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.access(path, os.X_OK) else None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install 'hf_landscape[viewer]'"
    )
    executable = chromium_executable()
    if executable is None and os.environ.get("HF_LANDSCAPE_CHROMIUM"):
        pytest.skip(f"HF_LANDSCAPE_CHROMIUM={os.environ['HF_LANDSCAPE_CHROMIUM']!r} is not an executable")
    if executable is None:
        pytest.skip(
            "chromium is not installed (apt-get install -y chromium), so the viewer cannot be tested in a browser"
        )
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        yield instance
        instance.close()


class Page:
    """One viewer page opened offline, recording console errors, page errors, dialogs and every request."""

    def __init__(self, browser, path) -> None:
        self.context = browser.new_context(offline=True, viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("#landscape .main-svg")
        self.page.wait_for_function("document.getElementById('landscape')._fullLayout !== undefined")

    def close(self) -> None:
        self.context.close()

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def point(self, x: float, y: float, axis: str = "") -> tuple[float, float]:
        """Page pixel of data point (x, y) on the cartesian subplot `xaxis{axis}` / `yaxis{axis}`."""
        return tuple(
            self.page.evaluate(
                """([x, y, n]) => {
                    const gd = document.getElementById('landscape');
                    const xa = gd._fullLayout['xaxis' + n], ya = gd._fullLayout['yaxis' + n];
                    const box = gd.getBoundingClientRect();
                    return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)];
                }""",
                [x, y, axis],
            )
        )

    def hover_text(self, x: float, y: float, *, axis: str = "", wait: str = "") -> str:
        px, py = self.point(x, y, axis)
        self.page.mouse.move(px - 5, py - 5)
        self.page.mouse.move(px, py)
        return self.wait_hover(wait)

    def wait_hover(self, contains: str = "", timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.page.evaluate(HOVER_TEXT)
            if text and contains in text:
                return text
            time.sleep(0.1)
        return text

    def screenshot_pixels(self) -> np.ndarray:
        from PIL import Image

        image = Image.open(io.BytesIO(self.page.screenshot(full_page=True))).convert("RGB")
        return np.asarray(image, dtype=np.float64)

    def data(self, expression: str):
        return self.page.evaluate(
            f"(() => {{ const gd = document.getElementById('landscape'); return {expression}; }})()"
        )


@pytest.fixture
def open_page(browser):
    opened: list[Page] = []

    def open_(path) -> Page:
        page = Page(browser, path)
        opened.append(page)
        return page

    yield open_
    for page in opened:
        page.close()


def plane() -> Surface:
    x, y = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7)
    xx, yy = np.meshgrid(x, y)
    values = 2.5 + xx**2 + 2 * yy**2 + 0.2 * xx * yy
    samples = np.stack([values - 0.1, values + 0.1])
    metadata = {
        "kind": "plane",
        "model": {"name_or_path": "org/tiny", "commit_sha": "ab" * 20},
        "seeds": [0, 1],
        "trajectory": {"coordinates": [[0.75, 0.5], [0.25, 0.25], [0.0, 0.0]], "steps": [0, 5, 10]},
    }
    return Surface(
        x,
        values,
        y=y,
        metrics={"matthews_correlation": 0.6 - 0.1 * xx**2},
        metadata=metadata,
        spread=samples.std(0, ddof=1),
        samples=samples,
    )


def assert_rendered(page: Page) -> None:
    assert page.errors == []
    assert page.dialogs == []
    assert all(url.startswith("file://") for url in page.requests), page.requests
    assert page.count("#landscape .main-svg") >= 1


def assert_not_blank(page: Page) -> None:
    pixels = page.screenshot_pixels()
    assert pixels.shape[0] > 500 and pixels.shape[1] == VIEWPORT["width"]
    assert pixels.std() > 20  # a blank or one-colour page has a standard deviation near 0
    colours = np.unique(pixels.reshape(-1, 3)[::97].astype(np.uint8), axis=0)
    assert len(colours) > 200  # a colour scale, text and lines, not a few flat areas


def test_plane_renders_offline_with_3d_and_contours(open_page, tmp_path):
    page = open_page(plane().to_html(tmp_path / "viewer.html"))
    assert_rendered(page)
    assert page.count("#landscape .gl-container canvas") >= 1  # the WebGL 3-D scene
    assert page.count("#landscape .contourlayer path") > 10  # the contour map's SVG
    assert page.data("gd._fullData.filter(t => t.type === 'surface' && t.visible === true).length") == 3  # +-std
    assert_not_blank(page)


def test_plane_hover_on_the_contours_shows_the_point(open_page, tmp_path):
    s = plane()
    page = open_page(s.to_html(tmp_path / "viewer.html"))
    text = page.hover_text(0.5, -1 / 3, wait="loss =")
    j, i = 2, 6  # y[2] = -1/3, x[6] = 0.5
    assert "α = 0.5" in text and "β = -0.3333" in text
    assert f"loss = {s.values[j, i]:.6g}" in text
    assert f"matthews_correlation = {s.metrics['matthews_correlation'][j, i]:.6g}" in text
    assert f"loss std over seeds = {s.spread[j, i]:.4g}" in text


def test_plane_hover_in_the_3d_view_shows_a_loss(open_page, tmp_path):
    page = open_page(plane().to_html(tmp_path / "viewer.html"))
    x, y = page.data(
        "(() => { const d = gd._fullLayout.scene.domain, s = gd._fullLayout._size, b = gd.getBoundingClientRect();"
        " return [b.left + s.l + s.w * (d.x[0] + d.x[1]) / 2, b.top + s.t + s.h * (1 - (d.y[0] + d.y[1]) / 2)]; })()"
    )
    for dx, dy in ((0, 0), (0, 30), (-30, 20), (30, 40), (0, 60)):
        page.page.mouse.move(x + dx, y + dy)
        text = page.wait_hover("loss =", timeout=1.5)
        if "loss =" in text:
            break
    assert "loss =" in text and "α =" in text and "β =" in text


def test_plane_switches_quantity_and_log_scale(open_page, tmp_path):
    s = plane()
    page = open_page(s.to_html(tmp_path / "viewer.html"))
    page.page.locator(".updatemenu-header-group").first.click()
    page.page.locator(".updatemenu-dropdown-button", has_text="matthews_correlation").click()
    page.page.wait_for_function(
        "document.getElementById('landscape')._fullData.filter(t => t.type === 'contour' && t.visible === true)"
        ".map(t => t.name).join() === 'matthews_correlation'"
    )
    assert page.data("Array.from(gd.querySelectorAll('.colorbar')).map(c => c.textContent).join()").count(
        "matthews_correlation"
    )
    page.page.locator(".updatemenu-button", has_text="log10 scale").click()
    page.page.wait_for_function(
        "document.getElementById('landscape')._fullLayout.coloraxis2.colorbar.title.text === 'log10 matthews_correlation'"
    )
    z = page.data("gd.data.filter(t => t.type === 'contour' && t.visible === true)[0].z")
    np.testing.assert_allclose(np.array(z, dtype=float), np.log10(s.metrics["matthews_correlation"]), rtol=1e-6)
    assert page.errors == []


def test_line_renders_and_hover_shows_the_loss(open_page, tmp_path):
    x = np.linspace(-1, 1, 21)
    s = Surface(x, 3.0 + x**2, metrics={"accuracy": 0.9 - x**2 / 10}, metadata={"kind": "line"})
    page = open_page(s.to_html(tmp_path / "line.html"))
    assert_rendered(page)
    assert page.count("#landscape .scatterlayer .trace") >= 2
    text = page.hover_text(0.5, 3.25, wait="loss =")
    assert "α = 0.5" in text and "loss = 3.25" in text and "accuracy = 0.875" in text
    assert_not_blank(page)


def test_comparison_renders_on_shared_colour_limits(open_page, tmp_path):
    flat, sharp = plane(), plane()
    sharp.values = 2.5 + 4 * (sharp.values - 2.5)
    report = CompareReport({"plain": sharp, "sam": flat})
    page = open_page(report.to_html(tmp_path / "compare.html"))
    assert_rendered(page)
    assert page.count("#landscape .gl-container canvas") >= 1
    lo, hi = report.colour_limits()
    assert page.data("[gd._fullLayout.coloraxis.cmin, gd._fullLayout.coloraxis.cmax]") == pytest.approx([lo, hi])
    assert page.page.locator("table.flatness th[scope=col]").all_inner_texts() == ["plain", "sam"]
    text = page.hover_text(-0.5, -1 / 3, axis="2", wait="loss =")  # "sam", at x[2], y[2]
    assert "sam" in text and f"loss = {flat.values[2, 2]:.6g}" in text
    assert_not_blank(page)


def test_injected_text_is_shown_not_run(open_page, tmp_path):
    s = plane()
    s.metadata["model"] = {"name_or_path": "<img src=x onerror=alert(1)>"}
    s.metadata["command"] = "hf-landscape plane x </script><script>alert(2)</script>"
    page = open_page(s.to_html(tmp_path / "viewer.html"))
    assert_rendered(page)  # no dialog opened, no request for "x"
    assert page.page.title() == "Loss landscape of <img src=x onerror=alert(1)>"
    assert "</script><script>alert(2)</script>" in page.page.locator("pre code").first.inner_text()


# --- what the Hub serves: the pushed viewer.html and a Space's index.html ----------------------------------------


def test_the_pages_a_push_and_a_space_publish_render_offline(open_page, tmp_path):
    from hub_server import running_hub

    from hf_landscape.hub.space import publish_space

    with running_hub() as hub:
        plane().push_to_hub("me/landscapes", token=hub.token, path_in_repo="plane", formats=())
        publish_space("me/landscapes", {"plain": plane(), "sam": plane()}, token=hub.token)
        pushed = hub.files("me/landscapes", repo_type="dataset")["plane/viewer.html"]
        space = hub.files("me/landscapes", repo_type="space")["index.html"]
    for name, page_bytes in (("viewer.html", pushed), ("index.html", space)):
        (tmp_path / name).write_bytes(page_bytes)
        page = open_page(tmp_path / name)
        assert_rendered(page)
        assert page.count("#landscape .gl-container canvas") >= 1 and page.count("#landscape .contourlayer path") > 10
        assert "loss =" in page.hover_text(0.5, -1 / 3, wait="loss =")
        assert_not_blank(page)


def test_a_plane_pushed_from_the_cli_is_a_dataset_a_space_and_a_page_that_render(
    open_page, tmp_path, monkeypatch, capsys
):
    """The user's path end to end: `hf-landscape plane ... --push-to-hub`, then `hf-landscape space` of that dataset
    repo; `datasets.load_dataset` reads the table and both pages the Hub serves render offline."""
    import datasets
    from hub_server import running_hub
    from testing_utils import TEXTS, build_gpt2, train_tokenizer

    from hf_landscape.cli.main import main as cli_main
    from hf_landscape.export import surface_columns

    tokenizer = train_tokenizer()
    build_gpt2(len(tokenizer)).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "text.txt").write_text(" ".join(TEXTS))
    out = tmp_path / "out"
    plane_argv = ["plane", tmp_path / "model", "--text-file", tmp_path / "text.txt", "--max-length", 16]
    plane_argv += ["--max-examples", 2, "--steps", 3, 3, "--out", out, "--no-progress"]
    plane_argv += ["--push-to-hub", "me/landscapes", "--path-in-repo", "gpt2"]
    with running_hub() as hub:
        monkeypatch.setenv("HF_TOKEN", hub.token)
        assert cli_main([str(a) for a in plane_argv]) == 0
        assert cli_main(["space", "me/landscapes-space", "me/landscapes"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == f"{hub.endpoint}/spaces/me/landscapes-space"
        pushed = hub.files("me/landscapes", repo_type="dataset")["gpt2/viewer.html"]
        space = hub.files("me/landscapes-space", repo_type="space")["index.html"]
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", tmp_path / "modules")
        table = datasets.load_dataset("me/landscapes", "gpt2", split="train", cache_dir=str(tmp_path / "ds"))
    surface = Surface.from_pretrained(out)
    assert table.column_names == list(surface_columns(surface)) and table.num_rows == 9
    np.testing.assert_array_equal(np.asarray(table["loss"]), surface_columns(surface)["loss"])
    assert pushed == (out / "viewer.html").read_bytes()
    for name, page_bytes in (("pushed.html", pushed), ("space.html", space)):
        (tmp_path / name).write_bytes(page_bytes)
        page = open_page(tmp_path / name)
        assert_rendered(page)
        assert page.count("#landscape .gl-container canvas") >= 1 and page.count("#landscape .contourlayer path") > 10
        assert "loss =" in page.hover_text(0.0, 0.0, wait="loss =")
        assert_not_blank(page)


# --- the .glb export in three.js (what Gradio's Model3D and three.js apps load it with) ----------------------------

THREE_PAGE = """<!DOCTYPE html><html><head><script type="importmap">
{"imports": {"three": "/three/build/three.module.js"}}</script></head><body><script type="module">
import { GLTFLoader } from '/three/examples/jsm/loaders/GLTFLoader.js';
const buffer = await (await fetch('/surface.glb')).arrayBuffer();
new GLTFLoader().parse(buffer, '', (gltf) => {
    const meshes = [];
    gltf.scene.traverse((o) => { if (o.isMesh) meshes.push(o); });
    window.loaded = meshes.map((m) => ({
        attributes: Object.keys(m.geometry.attributes).sort(),
        position: Array.from(m.geometry.attributes.position.array),
        loss: Array.from(m.geometry.attributes._loss.array),
        triangles: m.geometry.index.count / 3,
        doubleSided: m.material.side === 2,
        vertexColors: m.material.vertexColors,
    }));
}, (error) => { window.loaded = String(error); });
</script></body></html>"""


def three_js_folder():
    folder = os.environ.get("HF_LANDSCAPE_THREE_JS")
    if not folder or not os.path.isfile(os.path.join(folder, "examples", "jsm", "loaders", "GLTFLoader.js")):
        pytest.skip("three.js is not here: `npm install three`, then HF_LANDSCAPE_THREE_JS=node_modules/three")
    return folder


def test_glb_loads_in_three_js_with_every_point_and_its_loss(browser, tmp_path):
    from pathlib import Path

    pytest.importorskip("trimesh", reason="the .glb export needs trimesh: pip install 'hf_landscape[export]'")
    three = Path(three_js_folder())
    s = plane()
    files = {"/index.html": THREE_PAGE.encode(), "/surface.glb": s.export(tmp_path / "surface.glb").read_bytes()}
    context = browser.new_context()
    requests: list[str] = []

    def serve(route) -> None:  # one made-up origin served from these files; anything else is refused
        url = route.request.url
        requests.append(url)
        path = url.removeprefix("http://three.test")
        local = three / path.removeprefix("/three/") if path.startswith("/three/") else None
        if path in files:
            route.fulfill(body=files[path], content_type="text/html" if path.endswith(".html") else "model/gltf-binary")
        elif local is not None and local.is_file() and local.resolve().is_relative_to(three.resolve()):
            route.fulfill(body=local.read_bytes(), content_type="text/javascript")
        else:
            route.abort()

    try:
        context.route("**/*", serve)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto("http://three.test/index.html")
        page.wait_for_function("window.loaded !== undefined")
        loaded = page.evaluate("window.loaded")
    finally:
        context.close()
    assert errors == [] and all(url.startswith("http://three.test/") for url in requests)
    (mesh,) = loaded  # one mesh, not an error text
    assert mesh["attributes"] == ["_loss", "_matthews_correlation", "_spread", "color", "position"]
    position = np.asarray(mesh["position"]).reshape(-1, 3)
    xx, yy = np.meshgrid(s.x, s.y)
    assert len(position) == s.values.size == 63
    np.testing.assert_allclose(position[:, 0], xx.ravel(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(position[:, 2], -yy.ravel(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(mesh["loss"], dtype=np.float32), s.values.ravel().astype(np.float32))
    assert mesh["triangles"] == 2 * 8 * 6 and mesh["doubleSided"] and mesh["vertexColors"]
