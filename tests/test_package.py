"""The package surface: `import rasteret` stays light (no torch, torchgeo, lightning
or GDAL), and the public names are documented."""

from __future__ import annotations

import subprocess
import sys

import rasteret


def test_import_rasteret_does_not_import_torch_or_gdal():
    code = ("import sys, rasteret; heavy = [m for m in ('torch', 'torchgeo', 'lightning', "
            "'rasterio') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_public_names_have_docstrings():
    for name in rasteret.__all__:
        item = getattr(rasteret, name)
        assert (item.__doc__ or "").strip(), f"rasteret.{name} has no docstring"
