"""The read core (issue 20, items 1 and 2): every read path fills its pixels through one
plan and one block function, so they are equal by construction; tested so.

The world: two scenes of one footprint (shifted) and two bands, where scene A stores
nodata 0 with scale 0.0001 and scene B stores nodata 65535 with valid zeros, scale
0.0002 and offset -0.1; a third scene replaced after the build fails every read. A
hypothesis property draws windows, bands, target CRS and resolution, ``apply_scale``,
clipping, resampling and ``on_error``, and checks that the eager read, the lazy read
(computed) and the TorchGeo sample on the same grid are equal. A regression test pins
the nodata bug of the eager path (every scene masked with the first scene's nodata).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings

import numpy as np
import pyarrow as pa
import pytest
import shapely

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("torch")
pytest.importorskip("dask")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pyproj import CRS, Transformer  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ObjectChangedError  # noqa: E402

EPSG = 32633
LEFT, TOP = 500_000.0, 4_100_000.0
SIZE, TILE, RES = 96, 32, 10.0
#: Scene B sits this many pixels east and south of scene A.
SHIFT = (16, 8)
BANDS = ("B04", "B08")
START = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)


def _write(path, data, left, top, nodata, scale, offset):
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 1,
               "dtype": data.dtype, "crs": f"EPSG:{EPSG}", "nodata": nodata,
               "transform": from_origin(left, top, RES, RES), "tiled": True,
               "blockxsize": TILE, "blockysize": TILE, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.scales, dst.offsets = (scale,), (offset,)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Collections ``clean`` (scenes A, B) and ``broken`` (A, C, B: C replaced after
    its build, so reading it fails with ObjectChangedError)."""
    root = tmp_path_factory.mktemp("pixels")
    rng = np.random.default_rng(20)
    rows = []
    specs = [("A", 0, (0, 0), 0.0001, 0.0), ("C", 3, (0, 0), 0.0001, 0.0),
             ("B", 6, SHIFT, 0.0002, -0.1)]
    for name, day, (east, south), scale, offset in specs:
        row = {"id": name, "datetime": START + dt.timedelta(days=day)}
        for number, band in enumerate(BANDS):
            data = rng.integers(1, 5000, (SIZE, SIZE), dtype=np.uint16)
            if name == "B":
                data[40:50, 20:40] = 0        # valid zeros: B's nodata is 65535
                data[60:70, 10 + number:30] = 65535
                nodata = 65535
            else:
                data[10:30, 50 + number:80] = 0
                nodata = 0
            row[band] = _write(root / f"{name}_{band}.tif", data, LEFT + east * RES,
                               TOP - south * RES, nodata, scale, offset)
        rows.append(row)
    build = {}
    for kind, ids in (("clean", "AB"), ("broken", "ACB")):
        table = pa.Table.from_pylist([r for r in rows if r["id"] in ids])
        build[kind] = rasteret.build_from_table(
            table, name=f"pixels-{kind}", href_columns=list(BANDS),
            workspace_dir=tmp_path_factory.mktemp(kind), progress=False)
    for band in BANDS:  # replaced after the build: a different object
        path = rows[1][band]
        with open(path, "ab") as handle:
            handle.write(b"\0" * 1024)
    return build


def _dataset_sample(collection, grid_bounds, crs, res, bands, **options):
    dataset = collection.to_torchgeo_dataset(list(bands), time_series=True,
                                             target_crs=crs, resolution=res, **options)
    minx, miny, maxx, maxy = grid_bounds
    sample = dataset[slice(minx, maxx), slice(miny, maxy)]
    return sample["image"].numpy(), dataset


#: Target CRS (None: the scenes' own) and resolutions whose grids are exact in binary.
TARGETS = [(None, 10.0), (None, 20.0), (None, 7.5), (32632, 10.0), (32632, 15.0),
           (3857, 12.5)]


def _window(target, res, col, row, width, height):
    """A window of ``width`` x ``height`` pixels of the grid ``target`` at ``res``
    holding the pixel at the centre of the two scenes' overlap (at its column ``col
    % width`` and row ``row % height``), so that both scenes cover part of it or all."""
    crs = CRS.from_epsg(target or EPSG)
    origin = (LEFT, TOP) if target is None else (0.0, 0.0)
    centre = (LEFT + (SHIFT[0] + SIZE) * RES / 2, TOP - (SHIFT[1] + SIZE) * RES / 2)
    if target is not None:
        centre = Transformer.from_crs(EPSG, target, always_xy=True).transform(*centre)
    c0 = math.floor((centre[0] - origin[0]) / res) - col % width
    r0 = math.floor((origin[1] - centre[1]) / res) - row % height
    left, top = origin[0] + c0 * res, origin[1] - r0 * res
    return crs, (left, top - height * res, left + width * res, top)


def _diamond(bounds):
    """A polygon whose bounds are ``bounds`` (so the grid is the window's) and which
    leaves the corners out (so clipping changes pixels)."""
    minx, miny, maxx, maxy = bounds
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    return shapely.Polygon([(minx, cy), (cx, maxy), (maxx, cy), (cx, miny)])


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(target=st.sampled_from(TARGETS),
       col=st.integers(0, 39), row=st.integers(0, 39),
       width=st.integers(1, 40), height=st.integers(1, 40),
       bands=st.sampled_from([("B04",), ("B08",), ("B04", "B08"), ("B08", "B04")]),
       apply_scale=st.booleans(), clip=st.booleans(),
       resampling=st.sampled_from(["nearest", "bilinear"]),
       on_error=st.sampled_from(["raise", "skip"]),
       chunk=st.integers(3, 24))
def test_eager_lazy_and_dataset_are_equal(world, target, col, row, width, height, bands,
                                          apply_scale, clip, resampling, on_error, chunk):
    crs, bounds = _window(target[0], target[1], col, row, width, height)
    res = target[1]
    geometry = _diamond(bounds) if clip else shapely.box(*bounds)
    # Under "skip" the eager read and the dataset read the collection with a broken
    # scene and leave it out; a lazy read refuses "skip" and reads the clean one.
    collection = world["broken"] if on_error == "skip" else world["clean"]
    options = dict(target_crs=crs, resolution=res, resampling=resampling)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = collection.get_numpy(geometry, list(bands), geometry_crs=crs,
                                     apply_scale=apply_scale, on_error=on_error,
                                     progress=False, **options)
        sample, dataset = _dataset_sample(collection, bounds, crs, res, bands,
                                          apply_scale=apply_scale, on_error=on_error,
                                          resampling=resampling)
    lazy = world["clean"].get_xarray(geometry, list(bands), geometry_crs=crs,
                                     apply_scale=apply_scale,
                                     chunks={"time": 1, "y": chunk, "x": chunk}, **options)
    computed = np.stack([lazy[b].values for b in bands], axis=1)

    assert eager.shape == (2, len(bands), height, width)
    np.testing.assert_array_equal(computed, eager)
    assert computed.dtype == eager.dtype
    assert sample.shape == eager.shape
    if on_error == "skip":
        assert dataset.errors == 1
    if not clip:
        np.testing.assert_array_equal(sample, eager)
        return
    # The dataset does not clip: equal inside the polygon, and outside it the eager
    # read holds each scene's own nodata (NaN once scaled).
    xs = bounds[0] + (np.arange(width) + 0.5) * res
    ys = bounds[3] - (np.arange(height) + 0.5) * res
    inside = shapely.contains_xy(geometry, *np.meshgrid(xs, ys))
    np.testing.assert_array_equal(sample[..., inside], eager[..., inside])
    outside = eager[..., ~inside]
    if apply_scale:
        assert np.isnan(outside).all()
    else:
        assert (outside[0] == 0).all() and (outside[1] == 65535).all()


def test_each_scene_is_masked_with_its_own_nodata(world):
    """Scene A stores nodata 0, scene B nodata 65535 and valid zeros: scaled, B's zeros
    are values (0 x 0.0002 - 0.1) and B's 65535 is NaN, in every read path."""
    collection = world["clean"]
    # Pixels of B's valid-zero block and of its nodata block, in A's pixel grid.
    zeros = (SHIFT[1] + 45, SHIFT[0] + 30)
    holes = (SHIFT[1] + 65, SHIFT[0] + 25)
    box = (LEFT, TOP - (SHIFT[1] + SIZE) * RES, LEFT + (SHIFT[0] + SIZE) * RES, TOP)
    eager = collection.get_numpy(box, ["B04"], geometry_crs=EPSG, apply_scale=True,
                                 progress=False)
    lazy = collection.get_xarray(box, ["B04"], geometry_crs=EPSG, apply_scale=True,
                                 chunks={"time": 2, "y": 50, "x": 50})["B04"].values
    sample, _ = _dataset_sample(collection, box, CRS.from_epsg(EPSG), RES, ["B04"],
                                apply_scale=True)
    stored = collection.get_numpy(box, ["B04"], geometry_crs=EPSG, progress=False)
    for name, scaled in (("eager", eager[:, 0]), ("lazy", lazy), ("dataset", sample[:, 0])):
        b = scaled[1]
        assert b[zeros] == np.float32(-0.1), name
        assert np.isnan(b[holes]), name
        a = scaled[0]
        assert np.isnan(a[15, 60]), name            # A's own nodata hole
        assert np.isnan(a[-1, -1]), name            # outside A: A's fill
        np.testing.assert_array_equal(np.isnan(b), stored[1, 0] == 65535)
    assert stored[1, 0][zeros] == 0 and stored[1, 0][holes] == 65535
    masked = collection.get_xarray(box, ["B04"], geometry_crs=EPSG, masked=True)["B04"]
    assert masked.values[1][zeros] == 0 and np.isnan(masked.values[1][holes])
    # The scenes disagree on nodata: no single CF fill value describes the variable.
    assert "nodata" not in collection.get_xarray(box, ["B04"], geometry_crs=EPSG)["B04"].attrs


def test_a_broken_scene_raises_on_every_path(world):
    collection = world["broken"]
    box = (LEFT, TOP - SIZE * RES, LEFT + SIZE * RES, TOP)
    with pytest.raises(ObjectChangedError):
        collection.get_numpy(box, ["B04"], geometry_crs=EPSG, progress=False)
    with pytest.raises(ObjectChangedError):
        _dataset_sample(collection, box, CRS.from_epsg(EPSG), RES, ["B04"])


@pytest.mark.parametrize("apply_scale", [False, True])
def test_the_mosaic_takes_each_pixel_from_the_latest_scene_valid_there(world, apply_scale):
    collection = world["clean"]
    box = (LEFT, TOP - (SHIFT[1] + SIZE) * RES, LEFT + (SHIFT[0] + SIZE) * RES, TOP)
    older, newer = collection.get_numpy(box, list(BANDS), geometry_crs=EPSG,
                                        apply_scale=apply_scale, progress=False)
    if apply_scale:
        valid_older, valid_newer = ~np.isnan(older), ~np.isnan(newer)
    else:
        valid_older, valid_newer = older != 0, newer != 65535
    # The latest scene where it is valid, else the older one where that is; where
    # neither is, the first scene read (the latest) keeps its own fill.
    expected = np.where(valid_newer | ~valid_older, newer, older)
    dataset = collection.to_torchgeo_dataset(list(BANDS), target_crs=EPSG, resolution=RES,
                                             apply_scale=apply_scale)
    mosaic = dataset[slice(box[0], box[2]), slice(box[1], box[3])]["image"].numpy()
    np.testing.assert_array_equal(mosaic, expected)


# -- one vocabulary (issue 20, item 3): the options every path now shares -------------------
def _pixel_points(collection, pixels):
    """Points at the centres of ``pixels`` (row, col) of scene A's grid."""
    import pandas as pd

    return pd.DataFrame({"x": [LEFT + (c + 0.5) * RES for _, c in pixels],
                         "y": [TOP - (r + 0.5) * RES for r, _ in pixels]})


def test_points_and_rows_apply_scale_as_the_area_read(world):
    collection = world["clean"]
    box = (LEFT, TOP - (SHIFT[1] + SIZE) * RES, LEFT + (SHIFT[0] + SIZE) * RES, TOP)
    area = collection.get_numpy(box, ["B04"], geometry_crs=EPSG, apply_scale=True,
                                progress=False)[:, 0]
    # B's valid zero, B's nodata, A's nodata hole, and an ordinary pixel.
    pixels = [(SHIFT[1] + 45, SHIFT[0] + 30), (SHIFT[1] + 65, SHIFT[0] + 25), (15, 60), (5, 5)]
    values = collection.sample_points(_pixel_points(collection, pixels), ["B04"],
                                      geometry_crs=EPSG, xy_columns=("x", "y"),
                                      apply_scale=True, progress=False)
    assert values["B04"].dtype == np.float32
    for (_, row) in values.iterrows():
        t = 0 if row["id"] == "A" else 1
        expected = area[t][pixels[int(row["point_index"])]]
        assert (np.isnan(expected) and np.isnan(row["B04"])) or row["B04"] == expected
    rows = collection.get_gdf(box, ["B04"], geometry_crs=EPSG, apply_scale=True,
                              progress=False)
    for t in range(2):
        np.testing.assert_array_equal(rows["B04"][t], area[t])
    masked = collection.get_numpy(box, ["B04"], geometry_crs=EPSG, masked=True, progress=False)
    stored = collection.get_numpy(box, ["B04"], geometry_crs=EPSG, progress=False)
    assert masked.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(masked), np.isnan(area[:, None]))
    np.testing.assert_array_equal(masked[~np.isnan(masked)], stored[~np.isnan(masked)])


def test_points_skip_a_scene_that_fails_to_read(world):
    collection = world["broken"]
    points = _pixel_points(collection, [(5, 5), (50, 50)])
    options = {"geometry_crs": EPSG, "xy_columns": ("x", "y"), "progress": False}
    with pytest.raises(ObjectChangedError):
        collection.sample_points(points, ["B04"], **options)
    with pytest.warns(UserWarning, match=r"skipped 1 scene.*'C'"):
        values = collection.sample_points(points, ["B04"], on_error="skip", **options)
    # A covers both points, B (shifted) only the second.
    assert values["id"].tolist() == ["A", "A", "B"]


def test_the_dataset_takes_a_date_range_and_one_options_value(world):
    collection = world["clean"]
    day_a = (START.date().isoformat(), START.date().isoformat())
    dataset = collection.to_torchgeo_dataset(list(BANDS), date_range=day_a)
    assert len(dataset) == 1 and dataset.collection.column("id").to_pylist() == ["A"]
    with pytest.raises(rasteret.errors.ConfigurationError, match="no scene within"):
        collection.to_torchgeo_dataset(list(BANDS), date_range=("2020-01-01", "2020-01-02"))
    shared = rasteret.ReadOptions(apply_scale=True, resolution=RES, target_crs=EPSG)
    from_value = collection.to_torchgeo_dataset(list(BANDS), options=shared)
    from_keywords = collection.to_torchgeo_dataset(list(BANDS), apply_scale=True,
                                                   resolution=RES, target_crs=EPSG)
    assert from_value.res == from_keywords.res == (RES, RES)
    box = (LEFT, TOP - SIZE * RES, LEFT + SIZE * RES, TOP)
    query = (slice(box[0], box[2]), slice(box[1], box[3]))
    np.testing.assert_array_equal(from_value[query]["image"].numpy(),
                                  from_keywords[query]["image"].numpy())
    eager = collection.get_numpy(box, list(BANDS), geometry_crs=EPSG, options=shared,
                                 progress=False)
    assert eager.dtype == np.float32
