"""Exports by suffix (.parquet, .csv, .glb, .vtp, .h5) read back with the tools users open them in, Li et al.'s .h5
files brought over, and bad input refused with nothing written."""

from __future__ import annotations

import base64
import json
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from hf_landscape import Surface, SurfaceError
from hf_landscape.export import EXPORT_FORMATS, surface_columns, surface_table

X = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
Y = np.array([-0.4, 0.0, 0.4])  # fewer rows than columns, so a transposed layout cannot pass


def plane(**overrides) -> Surface:
    """A 3 × 5 plane with a metric, NaN and +inf points, and a spread over two seeds."""
    xx, yy = np.meshgrid(X, Y)
    values = 1.0 + xx**2 + 3.0 * yy**2 + 0.25 * xx * yy
    values[0, 0], values[2, 4] = np.nan, np.inf
    samples = np.stack([values - 0.125, values + 0.125])
    kwargs = dict(
        y=Y,
        metrics={"accuracy": 0.9 - 0.1 * xx**2 + 0.01 * yy},
        metadata={"kind": "plane", "model": {"name_or_path": "org/tiny"}, "seeds": [3, 7]},
        spread=np.full(values.shape, 0.125),
        samples=samples,
    )
    kwargs.update(overrides)
    return Surface(X, values, **kwargs)


def line() -> Surface:
    values = 2.0 + X**2
    values[0] = np.nan
    return Surface(X, values, metrics={"accuracy": 1.0 - X**2}, metadata={"kind": "line"})


def assert_same(actual, expected) -> None:
    """Equal, NaN where NaN, ±inf where ±inf."""
    np.testing.assert_array_equal(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64))


# --- the long table: .parquet and .csv --------------------------------------------------------------


def test_columns_of_a_plane_run_over_the_grid_beta_slowest():
    columns = surface_columns(plane())
    assert list(columns) == ["alpha", "beta", "loss", "accuracy", "loss_spread", "loss_seed_3", "loss_seed_7"]
    assert columns["alpha"].tolist() == X.tolist() * 3
    assert columns["beta"].tolist() == [-0.4] * 5 + [0.0] * 5 + [0.4] * 5


def test_a_metric_named_like_a_column_is_prefixed():
    s = Surface(X, X**2, metrics={"loss": X, "alpha": -X})
    assert list(surface_columns(s)) == ["alpha", "loss", "metric.alpha", "metric.loss"]


def test_parquet_round_trip(tmp_path):
    import pandas as pd

    s = plane()
    path = s.export(tmp_path / "surface.parquet")
    frame = pd.read_parquet(path)
    assert len(frame) == 15
    assert_same(frame["alpha"], np.tile(X, 3))
    assert_same(frame["beta"], np.repeat(Y, 5))
    assert_same(frame["loss"].to_numpy().reshape(3, 5), s.values)
    assert_same(frame["accuracy"].to_numpy().reshape(3, 5), s.metrics["accuracy"])
    assert_same(frame["loss_spread"], np.full(15, 0.125))
    assert_same(frame["loss_seed_7"].to_numpy().reshape(3, 5), s.samples[1])


def test_parquet_carries_the_provenance(tmp_path):
    import pyarrow.parquet as pq

    path = plane().export(tmp_path / "surface.parquet")
    record = json.loads(pq.read_schema(path).metadata[b"hf_landscape"])
    assert record["kind"] == "plane" and record["shape"] == [3, 5]
    assert record["metadata"]["model"] == {"name_or_path": "org/tiny"}


def test_surface_table_is_what_parquet_holds(tmp_path):
    import pyarrow.parquet as pq

    s = plane()
    read, table = pq.read_table(s.export(tmp_path / "s.parquet")), surface_table(s)
    assert read.schema.equals(table.schema, check_metadata=True)
    for name in table.column_names:
        assert_same(read[name].to_numpy(), table[name].to_numpy())


def test_csv_round_trip_is_exact(tmp_path):
    import pandas as pd

    s = plane(metrics={"accuracy": np.full((3, 5), 1 / 3)})
    frame = pd.read_csv(s.export(tmp_path / "surface.csv"))
    assert list(frame.columns) == ["alpha", "beta", "loss", "accuracy", "loss_spread", "loss_seed_3", "loss_seed_7"]
    assert_same(frame["loss"].to_numpy().reshape(3, 5), s.values)  # NaN and inf read back as such
    assert frame["accuracy"][0] == 1 / 3  # shortest exact repr: no digits lost


def test_csv_of_a_line(tmp_path):
    import pandas as pd

    frame = pd.read_csv(line().export(tmp_path / "line.csv"))
    assert list(frame.columns) == ["alpha", "loss", "accuracy"]
    assert_same(frame["loss"], line().values)


# --- meshes: .glb and .vtp ----------------------------------------------------------------------------


def load_glb(path):
    trimesh = pytest.importorskip("trimesh")
    scene = trimesh.load(path, process=False)
    (mesh,) = scene.geometry.values()
    return mesh


def test_glb_has_one_vertex_per_point_at_alpha_height_minus_beta(tmp_path):
    s = plane()
    mesh = load_glb(s.export(tmp_path / "surface.glb"))
    assert len(mesh.vertices) == 15
    xx, yy = np.meshgrid(X, Y)
    np.testing.assert_allclose(mesh.vertices[:, 0], xx.ravel(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(mesh.vertices[:, 2], -yy.ravel(), rtol=0, atol=1e-7)
    info = mesh.metadata["hf_landscape"]
    finite = np.isfinite(s.values.ravel())
    height = s.values.ravel()[finite]
    np.testing.assert_allclose(mesh.vertices[finite, 1] / info["scale"] + info["offset"], height, rtol=1e-6)


def test_glb_carries_exact_values_as_vertex_attributes(tmp_path):
    s = plane()
    mesh = load_glb(s.export(tmp_path / "surface.glb"))
    assert mesh.metadata["hf_landscape"]["attributes"] == {
        "_LOSS": "loss",
        "_ACCURACY": "accuracy",
        "_SPREAD": "loss_spread",
    }
    assert_same(mesh.vertex_attributes["_LOSS"].ravel(), s.values.ravel().astype(np.float32))
    assert_same(mesh.vertex_attributes["_ACCURACY"].ravel(), s.metrics["accuracy"].ravel().astype(np.float32))


def test_glb_leaves_out_cells_touching_non_finite_points(tmp_path):
    mesh = load_glb(plane().export(tmp_path / "surface.glb"))
    # 4 × 2 cells, two triangles each; the NaN corner and the inf corner each touch one cell
    assert len(mesh.faces) == 2 * (8 - 2)
    assert np.all(mesh.face_normals[:, 1] > 0)  # wound so that the surface faces up (+y in glTF)


def test_glb_is_double_sided_and_coloured(tmp_path):
    pytest.importorskip("trimesh")
    tree = _glb_json(plane().export(tmp_path / "surface.glb"))
    assert tree["materials"] == [
        {
            "name": "landscape",
            "doubleSided": True,
            "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0, "roughnessFactor": 1},
        }
    ]
    (primitive,) = tree["meshes"][0]["primitives"]
    assert primitive["material"] == 0 and "COLOR_0" in primitive["attributes"]


def _glb_json(path) -> dict:
    """The JSON chunk of a .glb file (glTF 2.0 binary container: 12-byte header, then chunks)."""
    data = open(path, "rb").read()
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_length, chunk_type = struct.unpack("<I4s", data[12:20])
    assert chunk_type == b"JSON"
    return json.loads(data[20 : 20 + chunk_length])


def vtp(path) -> tuple[ET.Element, dict[str, np.ndarray]]:
    """Parse a .vtp written by `write_vtp`: the Piece element and every DataArray, decoded (base64 binary, a UInt64
    byte count before the data, as VTK reads `format="binary"` with `header_type="UInt64"`)."""
    root = ET.parse(path).getroot()
    assert root.attrib == {"type": "PolyData", "version": "1.0", "byte_order": "LittleEndian", "header_type": "UInt64"}
    piece = root.find("PolyData/Piece")
    arrays = {}
    for section in piece:
        for array in section.findall("DataArray"):
            payload = array.text.strip()
            (size,) = struct.unpack("<Q", base64.b64decode(payload[:12]))
            raw = base64.b64decode(payload[12:])
            assert len(raw) == size
            dtype = {"Float64": "<f8", "Int64": "<i8"}[array.get("type")]
            values = np.frombuffer(raw, dtype=dtype)
            components = int(array.get("NumberOfComponents"))
            arrays[f"{section.tag}/{array.get('Name')}"] = values.reshape(-1, components) if components > 1 else values
    return piece, arrays


def test_vtp_round_trip_of_a_plane(tmp_path):
    s = plane()
    piece, arrays = vtp(s.export(tmp_path / "surface.vtp"))
    assert piece.get("NumberOfPoints") == "15" and piece.get("NumberOfPolys") == "6"
    xx, yy = np.meshgrid(X, Y)
    assert_same(arrays["Points/Points"][:, 0], xx.ravel())
    assert_same(arrays["Points/Points"][:, 1], yy.ravel())
    assert_same(arrays["PointData/loss"], s.values.ravel())  # NaN and inf kept exactly
    assert_same(arrays["PointData/accuracy"], s.metrics["accuracy"].ravel())
    assert_same(arrays["PointData/loss_spread"], s.spread.ravel())
    # Li et al.'s quads: (i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1); the first cell touches the NaN corner
    assert arrays["Polys/connectivity"][:4].tolist() == [1, 2, 7, 6]
    assert arrays["Polys/offsets"].tolist() == [4, 8, 12, 16, 20, 24]


def test_vtp_points_of_non_finite_values_sit_at_the_top(tmp_path):
    s = plane()
    _, arrays = vtp(s.export(tmp_path / "surface.vtp"))
    z = arrays["Points/Points"][:, 2]
    top = np.nanmax(np.where(np.isfinite(s.values), s.values, np.nan))
    assert z[0] == top and z[14] == top and np.isfinite(z).all()


def test_vtp_of_a_line_is_a_polyline_over_its_finite_points(tmp_path):
    piece, arrays = vtp(line().export(tmp_path / "line.vtp"))
    assert piece.get("NumberOfPoints") == "5" and piece.get("NumberOfLines") == "1"
    assert arrays["Lines/connectivity"].tolist() == [1, 2, 3, 4]
    assert arrays["Lines/offsets"].tolist() == [4]


def test_vtp_reads_in_vtk(tmp_path):
    vtk = pytest.importorskip("vtk", reason="VTK (the library ParaView reads with) is not installed")
    s = plane()
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(s.export(tmp_path / "surface.vtp")))
    reader.Update()
    out = reader.GetOutput()
    assert (out.GetNumberOfPoints(), out.GetNumberOfPolys()) == (15, 6)
    loss = out.GetPointData().GetArray("loss")
    assert_same([loss.GetValue(i) for i in range(15)], s.values.ravel())
    assert out.GetPoint(7) == (0.0, 0.0, s.values[1, 2])


# --- Li et al.'s .h5 ---------------------------------------------------------------------------------


def write_li_style_h5(path, x, y, losses_by_point, accuracies_by_point, *, uncomputed=()):
    """An .h5 laid out as Li et al.'s plot_surface.py writes one: datasets created at shape (len(x), len(y)), filled
    through `.ravel()[ind]` with `ind` enumerating `np.meshgrid(x, y)` (β slowest), -1 where not computed yet."""
    import h5py

    xm, ym = np.meshgrid(x, y)
    coords = np.c_[xm.ravel(), ym.ravel()]
    losses = -np.ones((len(x), len(y)))
    accuracies = -np.ones((len(x), len(y)))
    for ind, (a, b) in enumerate(coords):
        if ind in uncomputed:
            continue
        losses.ravel()[ind] = losses_by_point(a, b)
        accuracies.ravel()[ind] = accuracies_by_point(a, b)
    with h5py.File(path, "w") as f:
        f["dir_file"] = "resnet56.t7_weights_xignore=biasbn_xnorm=filter.h5"
        f["xcoordinates"] = x
        f["ycoordinates"] = y
        f["train_loss"] = losses
        f["train_acc"] = accuracies


def test_li2018_h5_of_a_plane_is_read_in_our_layout(tmp_path):
    pytest.importorskip("h5py")
    x, y = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    path = tmp_path / "surface.h5"
    write_li_style_h5(path, x, y, lambda a, b: 1 + a**2 + 10 * b**2, lambda a, b: 90 - a - b)
    s = Surface.from_li2018_h5(path)
    assert s.kind == "plane" and s.values.shape == (3, 5)
    assert_same(s.x, x)
    assert_same(s.y, y)
    xx, yy = np.meshgrid(x, y)
    np.testing.assert_allclose(s.values, 1 + xx**2 + 10 * yy**2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.metrics["train_acc"], 90 - xx - yy, rtol=0, atol=1e-12)
    assert s.centre == 1.0
    source = s.metadata["source"]
    assert source["format"] == "li2018_h5" and source["loss"] == "train_loss" and len(source["sha256"]) == 64
    assert source["dir_file"] == "resnet56.t7_weights_xignore=biasbn_xnorm=filter.h5"


def test_li2018_points_not_computed_become_nan(tmp_path, caplog):
    pytest.importorskip("h5py")
    x = y = np.linspace(-1, 1, 3)
    path = tmp_path / "partial.h5"
    write_li_style_h5(path, x, y, lambda a, b: 2 + a + b, lambda a, b: 50.0, uncomputed={7, 8})
    s = Surface.from_li2018_h5(path)
    assert np.isnan(s.values.ravel()[[7, 8]]).all() and np.isfinite(s.values.ravel()[:7]).all()
    assert np.isnan(s.metrics["train_acc"].ravel()[[7, 8]]).all()
    assert "2 of 9 points of 'train_loss' were not computed" in caplog.text


def test_li2018_line_and_another_loss(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "line.h5"
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = np.linspace(-1, 1, 5)
        f["train_loss"] = np.arange(5.0)
        f["test_loss"] = np.arange(5.0) * 2
    s = Surface.from_li2018_h5(path, loss="test_loss")
    assert s.kind == "line" and s.values.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert s.metrics["train_loss"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_h5_export_round_trip(tmp_path):
    pytest.importorskip("h5py")
    s = plane()
    back = Surface.from_li2018_h5(s.export(tmp_path / "surface.h5"))
    assert_same(back.x, s.x)
    assert_same(back.y, s.y)
    assert_same(back.values, s.values)
    assert_same(back.metrics["accuracy"], s.metrics["accuracy"])
    assert_same(back.spread, s.spread)
    assert back.metadata["model"] == {"name_or_path": "org/tiny"} and back.metadata["source"]["format"] == "li2018_h5"


def test_h5_export_uses_their_declared_shape(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = plane().export(tmp_path / "surface.h5")
    with h5py.File(path, "r") as f:
        assert f["train_loss"].shape == (5, 3)  # (len(x), len(y)), as plot_surface.py creates it
        assert f["xcoordinates"][()].tolist() == X.tolist()


def test_li2018_missing_loss_lists_what_the_file_has(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = np.linspace(-1, 1, 3)
        f["test_loss"] = np.ones(3)
    with pytest.raises(SurfaceError, match=r"`loss` 'train_loss' is not a dataset .* it has \['test_loss'\]"):
        Surface.from_li2018_h5(path)


def test_li2018_file_without_coordinates_or_not_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["train_loss"] = np.ones(3)
    with pytest.raises(SurfaceError, match="has no `xcoordinates` dataset"):
        Surface.from_li2018_h5(path)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(SurfaceError, match="cannot be read as HDF5"):
        Surface.from_li2018_h5(tmp_path / "text.h5")
    with pytest.raises(SurfaceError, match="is not a file"):
        Surface.from_li2018_h5(tmp_path / "missing.h5")


# --- bad input: a clear error, nothing written ----------------------------------------------------------


def test_unknown_suffix_lists_the_known_ones_and_writes_nothing(tmp_path):
    with pytest.raises(SurfaceError) as err:
        plane().export(tmp_path / "surface.obj")
    message = str(err.value)
    assert "suffix '.obj', which names no export format" in message
    for suffix in (".csv", ".glb", ".h5", ".parquet", ".vtp"):
        assert suffix in message
    assert list(tmp_path.iterdir()) == []


def test_no_suffix_is_refused(tmp_path):
    with pytest.raises(SurfaceError, match=r"has suffix '\(none\)'"):
        plane().export(tmp_path / "surface")


@pytest.mark.parametrize("suffix", sorted(EXPORT_FORMATS))
def test_a_surface_with_no_finite_value_is_refused_for_every_format(tmp_path, suffix):
    s = Surface(X, np.full(5, np.nan), metadata={"kind": "line"})
    with pytest.raises(SurfaceError, match="has no values: its loss is NaN or infinite at every one of its 5"):
        s.export(tmp_path / f"empty{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_glb_of_a_line_is_refused(tmp_path):
    with pytest.raises(SurfaceError, match=r"\.glb .* holds planes only, and this surface is a line"):
        line().export(tmp_path / "line.glb")
    assert list(tmp_path.iterdir()) == []


def test_missing_optional_package_is_named_with_its_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trimesh" else real(name, *a))
    with pytest.raises(SurfaceError, match=r"needs the `trimesh` package; .*pip install 'hf_landscape\[export\]'"):
        plane().export(tmp_path / "surface.glb")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_as_path_is_refused(tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(SurfaceError, match="is a folder"):
        plane().export(tmp_path / "out.csv")


def test_a_failing_writer_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import hf_landscape.export as export

    target = tmp_path / "surface.csv"
    target.write_text("old")

    def broken(surface, path):
        path.write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setitem(export.EXPORT_FORMATS, ".csv", export.ExportFormat(".csv", broken, "broken"))
    with pytest.raises(RuntimeError, match="disk full"):
        plane().export(target)
    assert [p.name for p in tmp_path.iterdir()] == ["surface.csv"] and target.read_text() == "old"


def test_export_creates_the_parent_folder_and_replaces_a_file(tmp_path):
    target = tmp_path / "a" / "b" / "surface.csv"
    plane().export(target)
    first = target.read_text()
    line().export(target)
    assert target.read_text() != first and target.read_text().startswith("alpha,loss,accuracy")
