"""The band view: one typed object per (scene, band), the only reader of band structs;
analysis above the collection with typed Collection methods (issue 12, items 1-2)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from pyproj import CRS, Transformer

import rasteret
from rasteret.band import BandView, band_views, most_common_crs, native_resolution
from rasteret.collection import Collection
from rasteret.errors import ConfigurationError
from rasteret.options import ReadOptions
from testbed.scenes import write_scenes

PACKAGE = Path(rasteret.__file__).parent


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("band-view")
    utm33 = write_scenes(root / "z33", count=3, size=300, tile=128, shift=100,
                         bands=("B04", "B08"), label=False, nodata=0)
    utm32 = write_scenes(root / "z32", count=1, size=300, tile=128, epsg=32632,
                         origin=(1_034_000.0, 4_117_000.0), bands=("B04", "B08"),
                         label=False, start=utm33[-1].datetime.replace(day=28))
    utm32[0].id = "S2X_SYN_Z32"
    return utm33 + utm32


@pytest.fixture(scope="module")
def collection(scenes, tmp_path_factory) -> Collection:
    rows = [{"id": s.id, "datetime": s.datetime, "B04": str(s.files["B04"]),
             "B08": str(s.files["B08"])} for s in scenes]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="views",
                                     href_columns=["B04", "B08"],
                                     workspace_dir=tmp_path_factory.mktemp("ws"),
                                     progress=False)


def test_view_holds_what_the_file_says(collection, scenes):
    views = collection.band_views("B04")
    assert [v.scene_id for v in views] == [s.id for s in scenes]
    for row, (view, scene) in enumerate(zip(views, scenes)):
        assert isinstance(view, BandView) and view.row == row and view.band == "B04"
        with rasterio.open(scene.files["B04"]) as src:
            assert view.href == str(scene.files["B04"])
            assert view.crs.equals(CRS.from_user_input(src.crs.to_wkt()))
            assert tuple(view.transform)[:6] == tuple(src.transform)[:6]
            assert (view.width, view.height) == (src.width, src.height)
            assert (view.tile_width, view.tile_height) == src.block_shapes[0][::-1]
            assert view.nodata == src.nodata
            assert view.bounds == pytest.approx(tuple(src.bounds))
            assert view.size == scene.files["B04"].stat().st_size
        assert (view.scale, view.offset) == (1.0, 0.0)
        assert view.band_index == 1


def test_views_of_chosen_rows_across_chunks_match_whole_column(collection):
    # A table in several chunks, rows asked out of order: each view still describes
    # its own row (and the lazily read header is that row's).
    chunked = Collection(pa.concat_tables([collection.table.slice(0, 1),
                                           collection.table.slice(1, 2),
                                           collection.table.slice(3)]))
    assert chunked.table["B04"].num_chunks == 3
    picked = chunked.band_views("B04", [3, 0, 2])
    whole = collection.band_views("B04")
    assert [v.row for v in picked] == [3, 0, 2]
    for view in picked:
        reference = whole[view.row]
        assert (view.scene_id, view.href, view.transform, view.epsg) == (
            reference.scene_id, reference.href, reference.transform, reference.epsg)
        assert view.record() == collection.band_record(view.row, "B04")
        assert view.header().levels[0].offsets.tolist() == \
            reference.header().levels[0].offsets.tolist()


def test_a_band_not_indexed_has_no_view(collection):
    column = collection.table["B04"].combine_chunks()
    holed = pa.StructArray.from_arrays(
        [column.field(i) for i in range(column.type.num_fields)],
        fields=list(column.type), mask=pa.array([False, True, False, False]))
    views = band_views(holed, band="B04", ids=["a", "b", "c", "d"])
    assert views[1] is None and views[0].scene_id == "a" and views[2].row == 2
    broken = Collection(collection.table.set_column(
        collection.table.schema.get_field_index("B04"), "B04", holed))
    with pytest.raises(ConfigurationError, match="not indexed"):
        broken.band_view(1, "B04")
    assert broken.band_record(1, "B04") is None


def test_footprint_and_resolution_in_another_crs(collection):
    views = collection.band_views("B04")
    utm32 = views[-1]
    utm33 = CRS.from_epsg(32633)
    assert most_common_crs(views).equals(utm33)
    assert utm32.resolution() == (10.0, 10.0)
    xres, yres = utm32.resolution(utm33)
    t = utm32.transform
    to_33 = Transformer.from_crs(32632, 32633, always_xy=True)
    (x0, x1), (y0, y1) = to_33.transform([t.c, t.c + 10.0], [t.f, t.f - 10.0])
    assert (xres, yres) == pytest.approx((abs(x1 - x0), abs(y1 - y0)))
    # Natively in the CRS: the first native scene's own pixel size.
    assert native_resolution(views, utm33) == (10.0, 10.0)
    assert native_resolution([utm32], utm33) == (xres, yres)
    degrees = utm32.footprint(CRS.from_epsg(4326))
    minx, miny, maxx, maxy = degrees.bounds
    assert 14 < minx < maxx < 16 and 36 < miny < maxy < 38
    # The stored scene footprint (from a table without geometries) is the view's.
    import shapely

    stored = shapely.from_wkb(collection.table["geometry"][len(views) - 1].as_py())
    assert stored.bounds == pytest.approx(degrees.bounds)


def test_view_cog_reads_the_pixels_and_carries_the_version(collection, scenes):
    view = collection.band_view(0, "B04")
    cog = view.cog(rasteret.create_backend())
    assert cog.etag == view.etag and cog.size == view.size
    with rasterio.open(scenes[0].files["B04"]) as src:
        np.testing.assert_array_equal(cog.read((10, 20, 50, 40))[0],
                                      src.read(1, window=((20, 60), (10, 60))))
    col, row = view.pixel_of(*(view.transform @ (12.5, 7.5)))
    assert (col, row) == (12, 7)


def test_unknown_or_missing_band_is_a_configuration_error(collection):
    with pytest.raises(ConfigurationError, match="available bands"):
        collection.band_views("B99")


def test_no_band_struct_read_outside_schema_and_the_view():
    """Only schema.py and band.py know the band struct's field names."""
    # (A torch sample's "transform" and obstore's object metadata are not band structs.)
    pattern = re.compile(
        r'record\["|\.get\("(etag|epsg|transform|levels|stac|band_index)"\)'
        r'|(?<!sample)\["(levels|transform|epsg|band_index|chunk_width|chunk_height)"\]'
        r"|record_to_header|band_scale_offset\(|band_nodata\("
    )
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() in ("schema.py", "band.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []


def test_analysis_sits_above_the_collection_and_takes_a_collection():
    import rasteret.analysis as analysis

    assert not (PACKAGE / "read" / "analysis.py").exists()
    assert analysis.Collection is Collection
    for name in ("get_numpy", "get_xarray", "get_gdf", "sample_points", "read_areas"):
        assert getattr(analysis, name).__annotations__["collection"] == "Collection", name


@pytest.mark.parametrize("method", ["get_numpy", "get_xarray", "get_gdf", "sample_points",
                                    "to_torchgeo_dataset"])
def test_collection_methods_have_explicit_keyword_signatures(method):
    parameters = inspect.signature(getattr(Collection, method)).parameters.values()
    assert not [p for p in parameters if p.kind is p.VAR_KEYWORD]
    options = [p for p in parameters if p.default is not p.empty]
    assert options and all(p.kind is p.KEYWORD_ONLY for p in options)
    annotation = inspect.signature(getattr(Collection, method)).return_annotation
    assert annotation not in ("Any", inspect.Signature.empty)


def test_collection_methods_delegate_to_analysis(collection, scenes):
    bounds = collection.band_view(0, "B04").footprint(CRS.from_epsg(4326)).bounds
    inner = (bounds[0] + 0.001, bounds[1] + 0.001, bounds[0] + 0.003, bounds[1] + 0.003)
    from rasteret.analysis import get_numpy

    np.testing.assert_array_equal(collection.get_numpy(inner, ["B04"], validate=False),
                                  get_numpy(collection, inner, ["B04"],
                                            ReadOptions(validate=False)))
