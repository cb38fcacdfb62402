"""Valid-data coverage recorded at build time (item geometry, sparse tiles, the
smallest overview) and label histograms: bounds that hold, and what they cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely
from shapely.geometry import shape

import rasteret
from rasteret.coverage import CoverageGrid, chip_fractions
from rasteret.errors import ConfigurationError
from rasteret.io.backend import default_backend
from rasteret.labelstats import label_histograms
from rasteret.schema import COVERAGE_COLUMN
from testbed.wedges import write_wedge_scenes

BANDS = ["B04", "label"]


@pytest.fixture(scope="module")
def wedges(tmp_path_factory):
    return write_wedge_scenes(tmp_path_factory.mktemp("wedges"))


def build(scenes, workspace, name, *, href=None, geometry=True, **options):
    rows = []
    for scene in scenes:
        row = {"id": scene.id, "datetime": scene.datetime}
        if geometry:
            row["geometry"] = shapely.to_wkb(shape(scene.geometry))
        for band, path in scene.files.items():
            row[band] = href(scene, path) if href else str(path)
        rows.append(row)
    return rasteret.build_from_table(
        pa.Table.from_pylist(rows), name=name, href_columns=BANDS, workspace_dir=workspace,
        geometry_column="geometry" if geometry else None, progress=False, **options)


def grids(collection):
    return [CoverageGrid.from_record(r) for r in collection.column(COVERAGE_COLUMN).to_pylist()]


def true_cells(valid, grid, res=10.0):
    """The true valid fraction of each cell of ``grid`` (cells of whole pixels)."""
    size = round(grid.cell_x / res)
    rows, columns = grid.shape
    padded = np.zeros((rows * size, columns * size), bool)
    padded[:valid.shape[0], :valid.shape[1]] = valid
    return padded.reshape(rows, size, columns, size).mean(axis=(1, 3))


def served(scenes, nginx_server, folder):
    return nginx_server.serve_scenes(scenes, folder)


def test_geometry_and_sparse_tiles_bound_valid_data_from_below(wedges, tmp_path):
    collection = build(wedges, tmp_path, "geometry")
    for scene, grid in zip(wedges, grids(collection)):
        truth = true_cells(scene.valid, grid)
        if scene.kind != "margin":  # never more than there is, where the sources see
            assert np.all(grid.valid <= truth + 1e-6), scene.kind
        if scene.kind == "orbit":
            assert grid.sources == ("geometry", "sparse")
            # Tight: cells off the diagonal are exact, cut ones lose a pixel or two.
            assert np.abs(grid.valid - truth).mean() < 0.02
        if scene.kind == "full":
            assert grid.valid.min() > 0.99  # the raster's own edges are not shrunk
        if scene.kind == "margin":
            # Neither the geometry nor the tile table sees a margin inside the raster.
            assert grid.sources == ("geometry",) and grid.fraction > 0.99


def test_sparse_tiles_alone_are_empty_cells(wedges, tmp_path):
    orbit = [s for s in wedges if s.kind == "orbit"]
    collection = build(orbit, tmp_path, "sparse", geometry=False)
    grid = grids(collection)[0]
    assert grid.sources == ("sparse",)
    counts = np.asarray(collection.band_record(0, "B04")["levels"][0]["byte_counts"])
    sparse = (counts == 0).reshape(4, 4)
    assert sparse.sum() >= 3
    per_tile = grid.valid.reshape(4, 4, 4, 4).max(axis=(1, 3))
    np.testing.assert_array_equal(per_tile == 0, sparse)


def test_overview_sees_margins_at_one_request_per_asset(wedges, tmp_path, nginx_server):
    href = served(wedges, nginx_server, "coverage-overview")
    nginx_server.clear_log()
    build(wedges, tmp_path, "plain", href=href)
    headers = nginx_server.count("/coverage-overview/")
    nginx_server.clear_log()
    collection = build(wedges, tmp_path, "overview", href=href, valid_coverage="overview")
    with_overviews = nginx_server.count("/coverage-overview/")
    # One more request per asset with a nodata value (B04); labels have none to find.
    assert with_overviews - headers == len(wedges)
    for scene, grid in zip(wedges, grids(collection)):
        truth = true_cells(scene.valid, grid)
        assert "overview" in grid.sources
        assert np.all(grid.valid <= truth + 1e-6), scene.kind
        if scene.kind == "margin":
            # The margin is seen (to within one overview pixel, 40 m, grown on purpose).
            assert abs(grid.fraction - scene.valid.mean()) < 0.03


def test_chip_bounds_hold_for_boxes_off_the_cell_grid(wedges, tmp_path):
    collection = build(wedges[:1], tmp_path, "chips")
    grid, scene = grids(collection)[0], wedges[0]
    rng = np.random.default_rng(1)
    cols, rows = rng.integers(0, 900, 200), rng.integers(0, 900, 200)
    sizes = rng.integers(20, 300, 200)
    x0, y0 = scene.transform[2], scene.transform[5]
    xmin, ymax = x0 + cols * 10.0, y0 - rows * 10.0
    xmax, ymin = xmin + sizes * 10.0, ymax - sizes * 10.0
    lower = chip_fractions(grid, xmin, ymin, xmax, ymax)
    upper = chip_fractions(grid, xmin, ymin, xmax, ymax, bound="upper")
    for i in range(200):
        window = scene.valid[rows[i]:rows[i] + sizes[i], cols[i]:cols[i] + sizes[i]]
        padded = window.sum() / float(sizes[i] ** 2)  # beyond the image: no data
        assert lower[i] - 1e-9 <= padded <= upper[i] + 0.02, i


def test_no_coverage_and_unknown_options(wedges, tmp_path):
    collection = build(wedges[:1], tmp_path, "none", valid_coverage=None)
    assert COVERAGE_COLUMN not in collection.column_names
    assert len(rasteret.load("none", workspace_dir=tmp_path)) == 1
    with pytest.raises(ConfigurationError, match="valid_coverage"):
        build(wedges[:1], tmp_path, "bad", valid_coverage="pixels")


def test_label_histograms_are_scanned_once(wedges, tmp_path, nginx_server):
    href = served(wedges, nginx_server, "coverage-labels")
    collection = build(wedges, tmp_path, "labels", href=href, valid_coverage=None)
    views = collection.band_views("label")
    backend = default_backend()
    nginx_server.clear_log()
    cache = tmp_path / "histograms"
    histograms = label_histograms(views, backend=backend, cache_dir=cache)
    scanned = nginx_server.count("/coverage-labels/")
    assert 0 < scanned <= 16 * len(wedges)  # at most one request per 256-px tile
    for scene, histogram in zip(wedges, histograms):
        assert set(histogram.classes.tolist()) == {0.0, 1.0, 2.0}
        truth = true_cells(scene.labels == 1, histogram.grid)
        np.testing.assert_allclose(histogram.class_grid(1).valid, truth, atol=1e-6)
    nginx_server.clear_log()
    again = label_histograms(views, backend=backend, cache_dir=cache)
    assert nginx_server.count("/coverage-labels/") == 0
    assert all(a is b for a, b in zip(again, histograms))
    assert (cache / "label-histograms.parquet").exists()


def earth_search_item(scene):
    """The recorded Earth Search Sentinel-2 item, re-pointed at ``scene``: its own
    geometry outlines the data (the wedge), as real items at orbit edges do."""
    import copy
    import json

    fixture = Path(__file__).parent / "data" / "stac" / "earth-search__sentinel-2-l2a.json"
    item = copy.deepcopy(json.loads(fixture.read_text()))
    red = item["assets"]["red"]
    red.update({"href": str(scene.files["B04"]), "proj:transform": list(scene.transform)})
    item.update({"id": scene.id, "geometry": scene.geometry, "assets": {"red": red},
                 "links": [],
                 "bbox": list(shapely.bounds(shape(scene.geometry)))})
    item["properties"].update({"datetime": scene.datetime.isoformat(),
                               "proj:epsg": scene.epsg})
    return item


def test_stac_items_geometry_gives_the_coverage(wedges, tmp_path):
    from testbed.stac import write_static_catalog

    items = [earth_search_item(s) for s in wedges]
    catalog = write_static_catalog(tmp_path / "catalog", {"sentinel-2-l2a": items})
    bbox = shapely.bounds(shapely.union_all([shape(i["geometry"]) for i in items]))
    collection = rasteret.build_from_stac(
        name="stac", stac_api=str(catalog), collection=None, bbox=tuple(bbox),
        date_range=("2024-05-01", "2024-07-01"), band_map={"B04": "red"},
        workspace_dir=tmp_path / "ws", progress=False, valid_coverage="overview")
    by_id = {s.id: s for s in wedges}
    for scene_id, grid in zip(collection.column("id").to_pylist(), grids(collection)):
        scene = by_id[scene_id]
        truth = true_cells(scene.valid, grid)
        assert grid.sources[:1] == ("geometry",) and "overview" in grid.sources
        assert np.all(grid.valid <= truth + 1e-6), scene.kind
        assert abs(grid.fraction - scene.valid.mean()) < 0.03, scene.kind


def test_cli_build_takes_valid_coverage(wedges, tmp_path):
    import os
    import subprocess
    import sys

    from testbed import HANG_GUARD
    from testbed.stac import write_static_catalog

    items = [earth_search_item(s) for s in wedges]
    catalog = write_static_catalog(tmp_path / "catalog", {"sentinel-2-l2a": items})
    bbox = shapely.bounds(shapely.union_all([shape(i["geometry"]) for i in items]))
    for choice, expected in (("overview", True), ("none", False)):
        out = subprocess.run(
            [sys.executable, "-m", "rasteret.cli", "build", "--stac-api", str(catalog),
             "--name", choice, "--bbox", ",".join(map(str, bbox)),
             "--dates", "2024-05-01/2024-07-01", "--valid-coverage", choice, "--json"],
            capture_output=True, text=True, timeout=HANG_GUARD,
            env={**os.environ, "RASTERET_WORKSPACE": str(tmp_path / "ws")})
        assert out.returncode == 0, out.stderr
        built = rasteret.load(choice, workspace_dir=tmp_path / "ws")
        assert (COVERAGE_COLUMN in built.column_names) is expected
        if expected:
            assert all("overview" in grid.sources for grid in grids(built))
