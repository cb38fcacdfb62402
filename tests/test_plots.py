"""``Collection.plot`` (rasteret.plots, issue 21 item 6): footprints coloured by date
with a colorbar, valid coverage shaded when the collection records it, an area of
interest; headless, no pyplot state, PNG output; bad input refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import shapely

# matplotlib is the plot extra (the torch extra brings it too): the core run on 3.11
# may not have it.
matplotlib = pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

import rasteret  # noqa: E402
from rasteret.collection import Collection  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from rasteret.plots import COVERAGE_ACCESSOR, geometry_path, valid_coverage  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

SCENES = 4


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Four 1280 m scenes, each shifted 320 m east of the previous, 5 days apart."""
    root = tmp_path_factory.mktemp("plots")
    scenes = write_scenes(root / "data", count=SCENES, size=128, tile=128, bands=("B02",),
                          label=False, shift=32)
    rows = [{"id": s.id, "datetime": s.datetime, "B02": str(s.files["B02"])} for s in scenes]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="plots",
                                     href_columns=["B02"], workspace_dir=root / "ws",
                                     progress=False)


def named(figure: Figure, label: str):
    """The collections of the figure's map axes labelled ``label``."""
    return [c for c in figure.axes[0].collections if c.get_label() == label]


def legend_texts(figure: Figure) -> list[str]:
    legend = figure.axes[0].get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def test_footprints_are_coloured_by_date_with_a_colorbar(collection, tmp_path):
    figure = collection.plot()
    assert isinstance(figure, Figure)
    (footprints,) = named(figure, "footprints")
    assert len(footprints.get_paths()) == SCENES
    # Edges take the date's colour: four dates, four colours, earliest to latest.
    edges = footprints.get_edgecolor()
    assert len({tuple(np.round(c, 3)) for c in edges}) == SCENES
    # The colorbar is a second axes labelled with dates.
    assert len(figure.axes) == 2
    assert figure.axes[1].get_ylabel() == "scene date"
    ticks = [t.get_text() for t in figure.axes[1].get_yticklabels()]
    assert ticks[0] == "2024-05-01" and ticks[-1] == "2024-05-16"
    # Drawn in the scenes' own CRS (UTM 33N): footprints in metres.
    minx, miny, maxx, maxy = footprints.get_datalim(figure.axes[0].transData).extents
    assert minx == pytest.approx(500_000, abs=1) and maxx == pytest.approx(502_240, abs=1)
    assert legend_texts(figure) == [f"scene footprints ({SCENES})", "valid data"]
    path = tmp_path / "collection.png"
    figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_area_of_interest_and_target_crs(collection):
    lon_lat = shapely.box(15.0005, 37.035, 15.004, 37.037)
    figure = collection.plot(geometries=lon_lat, target_crs=4326, title="AOI")
    (area,) = named(figure, "area of interest")
    assert len(area.get_paths()) == 1
    assert figure.axes[0].get_title() == "AOI"
    assert figure.axes[0].get_xlabel() == "longitude (°)"
    assert legend_texts(figure) == [f"scene footprints ({SCENES})", "valid data",
                                    "area of interest"]
    # A box in the scenes' CRS (UTM) given with its geometry_crs, drawn in UTM.
    figure = collection.plot(geometries=(500_100, 4_099_700, 500_400, 4_099_900),
                             geometry_crs=32633)
    vertices = named(figure, "area of interest")[0].get_paths()[0].vertices
    assert vertices[:, 0].min() == pytest.approx(500_100)


def test_valid_coverage_is_shaded_when_the_collection_records_it(collection, monkeypatch):
    from rasteret.schema import COVERAGE_COLUMN

    # Built today, a collection records each scene's coverage: whole scenes here.
    recorded = valid_coverage(collection)
    assert recorded is not None and len(recorded) == SCENES
    footprints = shapely.from_wkb(collection.column("geometry").to_numpy(zero_copy_only=False))
    for outline, footprint in zip(recorded, footprints):
        assert outline.symmetric_difference(footprint).area < 1e-3 * footprint.area
    (shaded,) = named(collection.plot(), "valid data")
    assert len(shaded.get_paths()) == SCENES
    older = Collection(collection.table.drop_columns([COVERAGE_COLUMN]), name="older")
    assert valid_coverage(older) is None  # nothing recorded: no shading
    assert named(older.plot(), "valid data") == []
    # A collection that records the valid data of each scene (the hook's contract).
    degrees = shapely.from_wkb(collection.column("geometry").to_numpy(zero_copy_only=False))
    halves = [shapely.box(*g.bounds[:2], (g.bounds[0] + g.bounds[2]) / 2, g.bounds[3])
              for g in degrees]
    halves[1] = None  # a scene without a record
    monkeypatch.setattr(Collection, COVERAGE_ACCESSOR, lambda self: halves, raising=False)
    figure = collection.plot()
    (shaded,) = named(figure, "valid data")
    assert len(shaded.get_paths()) == SCENES - 1
    assert "valid data" in legend_texts(figure)
    assert named(collection.plot(coverage=False), "valid data") == []


def test_polygons_keep_their_holes():
    ring = shapely.box(0, 0, 10, 10).difference(shapely.box(4, 4, 6, 6))
    path = geometry_path(shapely.MultiPolygon([ring, shapely.box(20, 0, 21, 1)]))
    assert (path.codes == path.MOVETO).sum() == 3  # outer, hole, island
    # Rendered, the hole stays empty.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from rasteret.plots import draw_polygons

    figure = Figure(figsize=(1, 1), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, 10), axes.set_ylim(0, 10), axes.set_axis_off()
    draw_polygons(axes, [ring], label="ring", facecolors="k", edgecolors="none")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    assert pixels[50, 50, :3].tolist() == [255, 255, 255]
    assert pixels[10, 10, :3].tolist() == [0, 0, 0]


@pytest.mark.parametrize("bad", [
    {"target_crs": "EPSG:0"}, {"geometry_crs": "not a crs", "geometries": (0, 0, 1, 1)},
    {"geometries": object()}, {"geometries": shapely.Polygon()},
])
def test_bad_input_is_a_configuration_error(collection, bad):
    with pytest.raises(ConfigurationError):
        collection.plot(**bad)


def test_an_empty_collection_is_a_configuration_error(collection):
    with pytest.raises(ConfigurationError, match="empty"):
        collection.take_rows([]).plot()


def test_headless_and_no_pyplot_state(tmp_path):
    """Under MPLBACKEND=Agg, with no display, the plot neither imports pyplot nor leaves a
    figure open; ``import rasteret`` does not import matplotlib."""
    code = (
        "import sys, rasteret\n"
        "assert 'matplotlib' not in sys.modules\n"
        "from rasteret.plots import new_figure\n"
        "figure, axes = new_figure()\n"
        "figure.savefig(sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    png = tmp_path / "empty.png"
    env = {"MPLBACKEND": "Agg", "PATH": "", "PYTHONPATH": ":".join(sys.path)}
    subprocess.run([sys.executable, "-c", code, str(png)], check=True, env=env, timeout=120)
    assert png.stat().st_size > 0


def test_one_date_labels_each_day_once(collection):
    figure = collection.take_rows([0]).plot()
    ticks = [t.get_text() for t in figure.axes[1].get_yticklabels()]
    assert "2024-05-01" in ticks and len(ticks) == len(set(ticks))
    assert len(named(figure, "footprints")[0].get_paths()) == 1


def test_without_matplotlib_the_error_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None  # as if not installed\n"
        "import rasteret\n"
        "try:\n"
        "    import rasteret.plots\n"
        "except ImportError as error:\n"
        "    assert \"rasteret[plot]\" in str(error), error\n"
        "else:\n"
        "    raise SystemExit('imported without matplotlib')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={"PYTHONPATH": ":".join(sys.path), "PATH": ""})
