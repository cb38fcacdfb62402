"""The package surface: `import rasteret` stays light (no torch, torchgeo, lightning
or GDAL), and the public names are documented."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

import rasteret
from testbed import HANG_GUARD


def test_import_rasteret_does_not_import_torch_or_gdal():
    code = ("import sys, rasteret; heavy = [m for m in ('torch', 'torchgeo', 'lightning', "
            "'rasterio') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=HANG_GUARD)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_public_names_have_docstrings():
    for name in rasteret.__all__:
        item = getattr(rasteret, name)
        assert (item.__doc__ or "").strip(), f"rasteret.{name} has no docstring"


def test_malloc_is_tuned_for_large_buffers_unless_told_not_to(tmp_path):
    """The first read keeps large freed buffers in glibc's heap (fewer page faults);
    RASTERET_MALLOC_TUNING=0 or the user's own MALLOC_* settings leave malloc alone."""
    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("glibc's mallopt is not available")
    path = tmp_path / "tiny.tif"
    pytest.importorskip("tifffile").imwrite(path, np.arange(64, dtype="uint16").reshape(8, 8))
    code = ("import rasteret, rasteret.io.runtime as r, sys; rasteret.open_cog(sys.argv[1])"
            ".read(); print(r._malloc_tuned)")
    for extra, expected in [({}, "True"), ({"RASTERET_MALLOC_TUNING": "0"}, "False"),
                            ({"MALLOC_ARENA_MAX": "2"}, "False")]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES",
                                                           "RASTERET_MALLOC_TUNING")}
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                             text=True, timeout=HANG_GUARD, env={**env, **extra})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected, extra


def test_wheel_ships_the_package_without_the_test_bed(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), root], capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    import zipfile

    (wheel,) = tmp_path.glob("rasteret-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rasteret/__init__.py" in names
    # Its data: the types (PEP 561) and the dataset catalog the registry loads.
    assert {"rasteret/py.typed", "rasteret/data/datasets.toml"} <= set(names)
    assert not [n for n in names if n.startswith(("testbed/", "rasteret/testing/"))]
