"""The labelling round trip: chips out to Label Studio (PNG chips, tasks with brush
pre-annotations) and labelled masks back in as a collection aligned with the chips."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import rasteret
from rasteret.errors import ConfigurationError
from rasteret.labelstudio import (
    brush_results,
    decode_brush_rle,
    decode_brush_values,
    encode_brush_rle,
)

CLASSES = ["background", "water", "forest", "field"]


# -- the brush RLE codec (no torch) ---------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 64), (130, 257)])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
def test_brush_rle_round_trips(shape, density):
    mask = np.random.default_rng(1).random(shape) < density
    assert np.array_equal(decode_brush_rle(encode_brush_rle(mask), *shape), mask)


def test_brush_rle_long_runs_split_at_the_16_bit_limit():
    mask = np.ones((300, 300), bool)  # 360,000 equal values: six chunks
    assert decode_brush_rle(encode_brush_rle(mask), 300, 300).all()


def test_brush_rle_has_label_studios_bit_layout():
    # Header: 32-bit value count, word size - 1 (5 bits), four run-field sizes - 1;
    # then repeat chunks: flag 1, size index 00 (3 bits), run - 1, one 8-bit word.
    header = f"{8:032b}" + "00111" + "0010" + "0011" + "0111" + "1111"
    chunks = "1" + "00" + "011" + "11111111" + "1" + "00" + "011" + "00000000"
    bits = header + chunks
    bits += "0" * (-len(bits) % 8)
    expected = [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]
    assert encode_brush_rle(np.array([[True, False]])) == expected
    # A literal chunk (flag 0) of four words, as other writers may emit.
    literal = f"{4:032b}" + "00111" + "0010" + "0011" + "0111" + "1111" + "0" + "00" + "011"
    literal += "".join(f"{v:08b}" for v in (0, 255, 7, 255))
    literal += "0" * (-len(literal) % 8)
    code = [int(literal[i:i + 8], 2) for i in range(0, len(literal), 8)]
    assert decode_brush_values(code).tolist() == [0, 255, 7, 255]


def test_brush_rle_rejects_bad_codes():
    with pytest.raises(ConfigurationError, match="7-byte header"):
        decode_brush_rle([1, 2], 1, 1)
    code = encode_brush_rle(np.ones((4, 4), bool))
    with pytest.raises(ConfigurationError, match="not 5x5"):
        decode_brush_rle(code, 5, 5)
    with pytest.raises(ConfigurationError, match="truncated"):
        decode_brush_values(code[:8])


@pytest.mark.parametrize(("given", "classes"), [
    (["background", "water"], ["background", "water"]),
    (["1=water", "3=field", "-1=nodata"], {1: "water", 3: "field", -1: "nodata"}),
    (["a=b"], ["a=b"]),  # not VALUE=NAME: a name
])
def test_cli_label_classes_are_names_or_pairs(given, classes):
    from rasteret.cli import _label_classes

    assert _label_classes(given) == classes
    assert _label_classes(None) is None


def test_cli_label_classes_mixed_is_a_usage_error_before_any_work(tmp_path, capsys):
    from rasteret.cli import main as cli_main

    status = cli_main(["chips", "export", "no-such-collection", "--bands", "B04", "--out",
                       str(tmp_path / "x"), "--workspace-dir", str(tmp_path),
                       "--label-classes", "water", "3=field"])
    assert status == 2 and "not both" in capsys.readouterr().err


# -- the round trip on the demo scenes (torch) ----------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pytest.importorskip("torchgeo")
    from testbed.demo_env import BANDS, LABEL
    from testbed.scenes import write_scenes

    root = tmp_path_factory.mktemp("labels")
    # The demo's scenes (seed 7, 10 days apart, overlapping), smaller.
    scenes = write_scenes(root / "data", count=2, size=256, tile=128, shift=64,
                          days_between=10, seed=7)
    rows = [{"id": s.id, "datetime": s.datetime, **{b: str(p) for b, p in s.files.items()}}
            for s in scenes]
    collection = rasteret.build_from_table(pa.Table.from_pylist(rows), name="demo-s2",
                                           href_columns=[*BANDS, LABEL],
                                           workspace_dir=root / "ws", progress=False)
    out = root / "export"
    manifest = collection.export_chips(["B04", "B03", "B02"], out, chip_size=128,
                                       mask_bands=[LABEL], label_classes=CLASSES)
    return collection, out, manifest, root


def labelled_export(tasks, rng):
    """What Label Studio's JSON export holds after labelling: known masks on three
    chips (one more annotation cancelled, one chip left unlabelled)."""
    known, exported = {}, []
    for number, task in enumerate(tasks):
        chip_id = task["data"]["chip_id"]
        entry = {"id": number + 1, "data": task["data"], "annotations": [],
                 "predictions": task.get("predictions", [])}
        if number < 3:
            # Blocks of classes, and a stroke of "water" painted over them last.
            mask = np.kron(rng.integers(0, 4, (4, 4)), np.ones((32, 32), int))
            mask[60:70, :] = 1
            known[chip_id] = mask
            names = dict(enumerate(CLASSES))
            results = brush_results(np.where(mask == 1, 0, mask), names, from_name="label")
            results += brush_results((mask == 1).astype(int), {1: "water"}, from_name="label")
            if number == 0:
                entry["annotations"].append({"id": 90, "was_cancelled": True, "result": []})
            entry["annotations"].append({"id": 100 + number, "was_cancelled": False,
                                         "result": results})
        exported.append(entry)
    return known, exported


def test_export_writes_a_label_studio_project(world):
    import pyarrow.parquet as pq
    import rasterio

    collection, out, manifest, _ = world
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    table = pq.read_table(manifest)
    assert len(tasks) == table.num_rows == 8  # 4 grid chips in each of the 2 scenes
    config = (out / "label_studio_config.xml").read_text()
    assert '<BrushLabels name="label" toName="image">' in config
    assert all(f'<Label value="{name}"/>' in config for name in CLASSES)
    dataset = collection.to_torchgeo_dataset(["B04"], mask_bands=["label"])
    for task, row in zip(tasks, table.to_pylist()):
        chip_id = row["chip_id"]
        assert task["data"] == {"image": f"/data/local-files/?d=export/chips/{chip_id}.png",
                                "chip_id": chip_id}
        assert (out / "chips" / f"{chip_id}.png").read_bytes()[:4] == b"\x89PNG"
        with rasterio.open(out / row["path"]) as src:
            bounds = src.bounds
        truth = dataset[bounds.left:bounds.right, bounds.bottom:bounds.top,
                        row["datetime"].replace(tzinfo=None):
                        row["datetime"].replace(tzinfo=None)]["mask"].numpy()
        # The pre-annotations paint exactly the mask band's classes.
        painted = np.zeros(truth.shape, int)
        (prediction,) = task["predictions"]
        for result in prediction["result"]:
            assert result["from_name"] == "label" and result["to_name"] == "image"
            value = CLASSES.index(result["value"]["brushlabels"][0])
            painted[decode_brush_rle(result["value"]["rle"], *truth.shape)] = value
        np.testing.assert_array_equal(painted, truth)


def test_default_classes_and_image_url(world, tmp_path):
    collection, *_ = world
    collection.export_chips(["B04"], tmp_path / "x", chip_size=128, mask_bands=["label"],
                            image_url="https://host/x/", quicklook=False)
    tasks = json.loads((tmp_path / "x" / "label_studio_tasks.json").read_text())
    assert tasks[0]["data"]["image"].startswith("https://host/x/chips/chip_000000.png")
    names = {r["value"]["brushlabels"][0] for t in tasks for r in t["predictions"][0]["result"]}
    assert names <= {"1", "2", "3"} and names  # 0 is background: not pre-annotated
    config = (tmp_path / "x" / "label_studio_config.xml").read_text()
    assert '<Label value="3"/>' in config and '<Label value="0"/>' not in config
    # Without mask bands: tasks without predictions, one "label" brush.
    collection.export_chips(["B04"], tmp_path / "y", chip_size=128, label_classes=CLASSES)
    tasks = json.loads((tmp_path / "y" / "label_studio_tasks.json").read_text())
    assert "predictions" not in tasks[0]
    assert 'name="label"' in (tmp_path / "y" / "label_studio_config.xml").read_text()
    with pytest.raises(ConfigurationError, match="names must be unique"):
        collection.export_chips(["B04"], tmp_path / "z", label_classes={1: "a", 2: "a"})


def test_round_trip_from_label_studio_json(world):
    import pyarrow.parquet as pq
    import rasterio
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import IntersectionDataset, stack_samples
    from torchgeo.samplers import RandomPatchSampler

    collection, out, manifest, root = world
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    known, exported = labelled_export(tasks, np.random.default_rng(5))
    export_json = root / "project-1-at-2026.json"
    export_json.write_text(json.dumps(exported))

    masks = rasteret.labels.import_masks(out, export_json, name="demo-labels",
                                         workspace_dir=root / "ws", progress=False)
    assert sorted(masks.table["id"].to_pylist()) == sorted(known)
    assert masks.bands == ["label"]
    rows = {r["chip_id"]: r for r in pq.read_table(manifest).to_pylist()}
    for chip_id, mask in known.items():
        with rasterio.open(out / "masks" / f"{chip_id}.tif") as got, \
                rasterio.open(out / rows[chip_id]["path"]) as chip:
            assert got.count == 1 and got.dtypes[0] == "uint8"
            np.testing.assert_array_equal(got.read(1), mask)
            assert got.crs == chip.crs and got.shape == chip.shape
            assert got.transform.almost_equals(chip.transform, precision=1e-9)

    # A TorchGeo mask dataset: images & labels give matching image and mask.
    images = collection.to_torchgeo_dataset(["B04", "B03", "B02"], dtype=torch.float32)
    labels = masks.to_torchgeo_dataset(["label"], is_image=False)
    both = images & labels
    assert isinstance(both, IntersectionDataset)
    for chip_id, mask in known.items():
        row = rows[chip_id]
        when = row["datetime"].replace(tzinfo=None)
        sample = both[row["minx"]:row["maxx"], row["miny"]:row["maxy"], when:when]
        np.testing.assert_array_equal(sample["mask"].numpy(), mask)
        with rasterio.open(out / row["path"]) as chip:
            np.testing.assert_array_equal(sample["image"].numpy(), chip.read())

    # A few training steps on the pair.
    sampler = RandomPatchSampler(both, size=64, length=8, generator=0)
    loader = DataLoader(both, sampler=sampler, batch_size=4, collate_fn=stack_samples)
    model = torch.nn.Conv2d(3, 4, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    losses = []
    for batch in loader:
        assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].shape == (4, 64, 64)
        loss = torch.nn.functional.cross_entropy(model(batch["image"] * 1e-4),
                                                 batch["mask"].long())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_import_from_a_folder_of_masks(world, tmp_path):
    import imagecodecs
    import rasterio

    from rasteret.labels import ChipExport
    from rasteret.tiff.writer import encode_geotiff

    collection, out, manifest, root = world
    export = ChipExport(manifest)
    folder = tmp_path / "drawn"
    folder.mkdir()
    first = np.arange(128 * 128, dtype=np.uint8).reshape(128, 128) % 4
    second = np.flipud(first).copy()
    (folder / "chip_000000.png").write_bytes(imagecodecs.png_encode(first))
    transform = export.transform("chip_000001")
    crs = collection.to_torchgeo_dataset(["B04"]).crs
    (folder / "chip_000001.tif").write_bytes(encode_geotiff(second[None], transform, crs))
    masks = rasteret.labels.import_masks(out, folder, name="drawn", out_dir=tmp_path / "m",
                                         workspace_dir=tmp_path / "ws", progress=False)
    assert len(masks) == 2 and masks.bands == ["label"]
    for chip_id, mask in (("chip_000000", first), ("chip_000001", second)):
        with rasterio.open(tmp_path / "m" / f"{chip_id}.tif") as src:
            np.testing.assert_array_equal(src.read(1), mask)
            assert src.transform.almost_equals(rasterio.Affine(*export.transform(chip_id)))

    # A non-empty out_dir is replaced only on request.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        rasteret.labels.import_masks(out, folder, name="drawn", out_dir=tmp_path / "m",
                                     workspace_dir=tmp_path / "ws", force=True)

    # A GeoTIFF on another grid, a mask of the wrong size, an unknown chip; each failed
    # import leaves the masks of the last good one.
    def fails(match):
        with pytest.raises(ConfigurationError, match=match):
            rasteret.labels.import_masks(out, folder, name="bad", out_dir=tmp_path / "m",
                                         overwrite=True, workspace_dir=tmp_path / "ws")
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
            "chip_000000.tif", "chip_000001.tif"]

    shifted = (transform[0], 0.0, transform[2] + 10, 0.0, transform[4], transform[5])
    (folder / "chip_000001.tif").write_bytes(encode_geotiff(second[None], shifted, crs))
    fails("not on chip chip_000001's grid")
    (folder / "chip_000001.tif").unlink()
    (folder / "chip_000000.png").write_bytes(imagecodecs.png_encode(first[:64]))
    fails("chip chip_000000 is 128x128")
    (folder / "chip_000000.png").unlink()
    (folder / "chip_999999.png").write_bytes(imagecodecs.png_encode(first))
    fails("no chip 'chip_999999'")


def test_import_rejects_unknown_labels_and_empty_exports(world, tmp_path):
    _, out, _, _ = world
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    result = brush_results(np.ones((128, 128), int), {1: "lava"}, from_name="label")
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"data": tasks[0]["data"],
                                 "annotations": [{"result": result}]}]))
    with pytest.raises(ConfigurationError, match="label 'lava' of 'label' is not one"):
        rasteret.labels.import_masks(out, path, name="bad", out_dir=tmp_path / "m",
                                     workspace_dir=tmp_path / "ws")
    path.write_text(json.dumps([{"data": tasks[0]["data"], "annotations": []}]))
    with pytest.raises(ConfigurationError, match="no labelled chip"):
        rasteret.labels.import_masks(out, path, name="bad", out_dir=tmp_path / "m",
                                     workspace_dir=tmp_path / "ws")
    with pytest.raises(ConfigurationError, match="no chip export"):
        rasteret.labels.import_masks(tmp_path, path, name="bad")


def test_cli_chips_export_takes_mask_bands_and_label_classes(world, tmp_path, capsys):
    from rasteret.cli import main as cli_main

    collection, _, _, root = world
    export = ["chips", "export", collection.name, "--bands", "B04", "--size", "128",
              "--workspace-dir", str(root / "ws"), "--mask-bands", "label", "--json"]
    # Names by class value, as export_chips(label_classes=[...]).
    assert cli_main([*export, "--out", str(tmp_path / "names"), "--label-classes",
                     *CLASSES]) == 0
    assert json.loads(capsys.readouterr().out)["chips"] == 8
    tasks = json.loads((tmp_path / "names" / "label_studio_tasks.json").read_text())
    painted = {r["value"]["brushlabels"][0] for t in tasks for r in t["predictions"][0]["result"]}
    assert painted and painted <= set(CLASSES)
    config = (tmp_path / "names" / "label_studio_config.xml").read_text()
    assert all(f'<Label value="{name}"/>' in config for name in CLASSES)
    # VALUE=NAME pairs: only the classes named are pre-annotated.
    assert cli_main([*export, "--out", str(tmp_path / "pairs"), "--label-classes",
                     "1=water", "3=field"]) == 0
    capsys.readouterr()
    tasks = json.loads((tmp_path / "pairs" / "label_studio_tasks.json").read_text())
    painted = {r["value"]["brushlabels"][0] for t in tasks for r in t["predictions"][0]["result"]}
    assert painted == {"water", "field"}
    config = (tmp_path / "pairs" / "label_studio_config.xml").read_text()
    assert '<Label value="water"/>' in config and '<Label value="forest"/>' not in config
    # Without them: no pre-annotations, one "label" brush.
    plain = [a for a in export if a not in ("--mask-bands", "label")]
    assert cli_main([*plain, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    tasks = json.loads((tmp_path / "plain" / "label_studio_tasks.json").read_text())
    assert "predictions" not in tasks[0]
    # Names and pairs mixed: a usage mistake, exit 2, nothing written.
    assert cli_main([*export, "--out", str(tmp_path / "mixed"), "--label-classes",
                     "water", "3=field"]) == 2
    assert "VALUE=NAME pairs" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()
