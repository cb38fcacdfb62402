"""get_numpy / get_xarray / get_gdf / sample_points against rasterio on the same files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely

rasterio = pytest.importorskip("rasterio")
from rasterio.warp import Resampling, reproject  # noqa: E402
from rasterio.windows import from_bounds  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError, NoCoverageError  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

BANDS = ["B04", "B08"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    # Three scenes in UTM 33N (shifted 200 px east each, 7 days apart) + one in 32N.
    utm33 = write_scenes(root / "z33", count=3, size=600, tile=256, shift=200, seed=5,
                         bands=("B04", "B08"), label=False, days_between=7)
    utm32 = write_scenes(root / "z32", count=1, size=600, tile=256, seed=9, epsg=32632,
                         origin=(1_034_000.0, 4_117_000.0), bands=("B04", "B08"), label=False,
                         start=utm33[-1].datetime.replace(day=28))
    utm32[0].id = "S2X_SYN_Z32"
    return utm33, utm32


def build(scenes, workspace, name):
    rows = [{"id": s.id, "datetime": s.datetime, "B04": str(s.files["B04"]),
             "B08": str(s.files["B08"]), "eo:cloud_cover": s.cloud_cover} for s in scenes]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name=name,
                                     href_columns=BANDS, workspace_dir=workspace,
                                     progress=False)


@pytest.fixture(scope="module")
def utm(scenes, tmp_path_factory):
    return build(scenes[0], tmp_path_factory.mktemp("ws"), "utm33")


@pytest.fixture(scope="module")
def mixed(scenes, tmp_path_factory):
    return build(scenes[0] + scenes[1], tmp_path_factory.mktemp("ws2"), "mixed")


def rio_window(path, bounds):
    with rasterio.open(path) as src:
        return src.read(1, window=from_bounds(*bounds, transform=src.transform), boundless=True,
                        fill_value=src.nodata or 0)


def test_native_grid_equals_rasterio_across_tiles_and_scenes(utm, scenes):
    # Crosses tile edges and the east edge of the first scene; scenes partly outside.
    bounds = (500_000 + 180 * 10, 4_100_000 - 520 * 10, 500_000 + 760 * 10, 4_100_000 - 230 * 10)
    data = utm.get_numpy(bounds, ["B08", "B04"], geometry_crs=32633)
    assert data.shape == (3, 2, 290, 580)
    for t, scene in enumerate(scenes[0]):  # time ascending
        for b, band in enumerate(["B08", "B04"]):  # requested band order
            np.testing.assert_array_equal(data[t, b], rio_window(scene.files[band], bounds))


def test_degrees_polygon_masks_outside_pixels(utm, scenes):
    from pyproj import Transformer

    to_deg = Transformer.from_crs(32633, 4326, always_xy=True)
    ring = [to_deg.transform(x, y) for x, y in
            [(502_000, 4_097_000), (505_000, 4_097_000), (503_500, 4_095_000)]]
    triangle = shapely.Polygon(ring)
    data = utm.get_numpy(triangle, ["B04"])
    xr = utm.get_xarray(triangle, ["B04"])
    assert data.shape[0] == 3 and data.shape[1] == 1
    assert (data[0, 0] == 0).any() and (data[0, 0] != 0).any()  # outside pixels are nodata
    np.testing.assert_array_equal(xr["B04"].values, data[:, 0])


def test_several_geometries_give_one_array_each(utm):
    boxes = [shapely.box(500_500, 4_098_000, 501_500, 4_099_000),
             shapely.box(503_000, 4_096_000, 503_640, 4_096_640)]
    arrays = utm.get_numpy(boxes, BANDS, geometry_crs=32633)
    assert isinstance(arrays, list) and [a.shape[2:] for a in arrays] == [(100, 100), (64, 64)]


def test_multi_crs_is_reprojected_to_the_most_common_crs(mixed, scenes):
    # An area the 32N scene also covers: it is warped onto the 33N grid.
    z32 = scenes[1][0]
    from pyproj import Transformer

    left, bottom, right, top = z32.bounds
    to33 = Transformer.from_crs(32632, 32633, always_xy=True)
    xs, ys = to33.transform([left, right], [bottom, top])
    bounds33 = (max(xs[0], 500_000), max(ys[0], 4_094_000), min(xs[1], 507_990),
                min(ys[1], 4_100_000))
    for resampling in ("nearest", "bilinear"):
        data = mixed.get_numpy(bounds33, ["B04"], geometry_crs=32633, resampling=resampling)
        result = data[-1, 0]  # the 32N scene is the latest
        with rasterio.open(z32.files["B04"]) as src:
            grid = mixed.get_xarray(bounds33, ["B04"], geometry_crs=32633)
            transform = rasterio.Affine(10, 0, float(grid.x[0]) - 5, 0, -10,
                                        float(grid.y[0]) + 5)
            expected = np.zeros_like(result)
            reproject(rasterio.band(src, 1), expected, dst_transform=transform,
                      dst_crs="EPSG:32633", resampling=getattr(Resampling, resampling),
                      src_nodata=0, dst_nodata=0)
        valid = (expected != 0) & (result != 0)
        assert valid.mean() > 0.5
        diff = np.abs(result[valid].astype(int) - expected[valid].astype(int))
        if resampling == "nearest":
            # GDAL's approximate transformer (0.125 px) can pick the neighbouring pixel.
            assert (diff == 0).mean() > 0.97
        else:
            assert np.percentile(diff, 99) <= 30 and diff.mean() < 5


def test_xarray_output_fields(utm):
    bounds = (501_000, 4_096_000, 502_280, 4_097_280)
    ds = utm.get_xarray(bounds, BANDS, geometry_crs=32633)
    assert set(ds.data_vars) >= set(BANDS)
    assert ds["B04"].dims == ("time", "y", "x") and ds.sizes["x"] == 128
    assert float(ds.x[0]) == 501_005.0 and float(ds.y[0]) == 4_097_275.0  # pixel centres
    assert ds["B04"].attrs["grid_mapping"] == "spatial_ref"
    assert "PROJCRS" in ds["spatial_ref"].attrs["crs_wkt"]
    assert ds["spatial_ref"].attrs["GeoTransform"].split()[:2] == ["501000.0", "10.0"]
    assert ds["B04"].attrs["nodata"] == 0
    assert list(ds.time.values) == sorted(ds.time.values)
    masked = utm.get_xarray((499_000, 4_096_000, 500_640, 4_097_280), ["B04"],
                            geometry_crs=32633, masked=True)
    assert masked["B04"].dtype == np.float32 and np.isnan(masked["B04"].values).any()
    rioxarray = pytest.importorskip("rioxarray")
    assert rioxarray is not None and ds.rio.crs.to_epsg() == 32633


def test_gdf_rows_per_scene_and_geometry(utm):
    gpd = pytest.importorskip("geopandas")
    frame = gpd.GeoDataFrame(
        {"field": ["a", "b"]},
        geometry=[shapely.box(500_500, 4_098_000, 501_500, 4_099_000),
                  shapely.box(504_000, 4_096_000, 504_500, 4_096_500)],
        crs="EPSG:32633",
    )
    out = utm.get_gdf(frame, ["B04"])
    assert set(out["field"]) == {"a", "b"}
    assert len(out) == 1 + 3  # box a lies in the first scene only, box b in all three
    assert out.iloc[0]["B04"].shape == (100, 100) and len(out.iloc[0]["transform"]) == 6


def test_points_equal_rasterio_sample(utm, scenes):
    gpd = pytest.importorskip("geopandas")
    xy = [(500_123.0, 4_099_877.0), (503_456.0, 4_096_543.0), (506_001.0, 4_095_500.0)]
    points = gpd.GeoDataFrame({"site": ["p1", "p2", "p3"]},
                              geometry=[shapely.Point(*p) for p in xy], crs="EPSG:32633")
    values = utm.sample_points(points, BANDS)
    for _, row in values.iterrows():
        scene = next(s for s in scenes[0] if s.id == row["id"])
        with rasterio.open(scene.files["B08"]) as src:
            expected = next(src.sample([xy[row["point_index"]]]))[0]
        assert row["B08"] == expected
    assert set(values["site"]) == {"p1", "p2", "p3"}
    latest = utm.sample_points(points, ["B04"], match="latest")
    assert len(latest) == 3


def test_errors_say_what_to_do(utm):
    with pytest.raises(ConfigurationError, match="available bands"):
        utm.get_numpy((15.0, 36.0, 15.1, 36.1), ["B99"])
    with pytest.raises(NoCoverageError, match="covers"):
        utm.get_numpy((-120.0, 35.0, -119.9, 35.1), ["B04"])
    with pytest.raises(ConfigurationError, match="look projected"):
        utm.get_numpy((500_000, 4_090_000, 501_000, 4_091_000), ["B04"])
    empty = utm.subset(ids=["nothing"])
    with pytest.raises(NoCoverageError, match="empty"):
        empty.get_numpy((15.0, 36.0, 15.1, 36.1), ["B04"])


def test_apply_scale(utm, scenes, tmp_path):
    bounds = (501_000, 4_096_000, 501_640, 4_096_640)
    raw = utm.get_numpy(bounds, ["B04"], geometry_crs=32633)
    scaled = utm.get_numpy(bounds, ["B04"], geometry_crs=32633, apply_scale=True)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[raw != 0], raw[raw != 0].astype(np.float32))


def test_on_error_skip_leaves_out_a_broken_scene(scenes, tmp_path):
    import shutil

    import pytest as _pytest

    from rasteret.errors import RasteretError

    copies = []
    for scene in scenes[0]:
        folder = tmp_path / scene.id
        folder.mkdir()
        for path in scene.files.values():
            shutil.copy(path, folder / path.name)
        copies.append({"id": scene.id, "datetime": scene.datetime,
                       "B04": str(folder / "B04.tif"), "B08": str(folder / "B08.tif")})
    collection = rasteret.build_from_table(pa.Table.from_pylist(copies), name="broken",
                                           href_columns=BANDS, workspace_dir=tmp_path / "ws",
                                           progress=False)
    (tmp_path / scenes[0][1].id / "B04.tif").unlink()  # the object disappears
    bounds = (504_000, 4_096_000, 505_280, 4_097_280)  # covered by all three scenes
    with _pytest.raises(RasteretError):
        collection.get_numpy(bounds, ["B04"], geometry_crs=32633)
    with _pytest.warns(UserWarning, match=scenes[0][1].id):
        data = collection.get_numpy(bounds, ["B04"], geometry_crs=32633, on_error="skip")
    assert data.shape[0] == 2


def test_projected_coordinates_hint_names_the_collections_own_crs(scenes, tmp_path):
    # A collection in UTM 32N only: the hint must name 32632, not a fixed example.
    z32 = build(scenes[1], tmp_path, "z32")
    bounds = (1_034_500.0, 4_112_000.0, 1_035_000.0, 4_112_500.0)
    with pytest.raises(ConfigurationError, match=r"geometry_crs=32632 \(the collection's CRS\)"):
        z32.get_numpy(bounds, BANDS)
