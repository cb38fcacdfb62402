"""The guides' Python examples are valid code that names only real API."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

import rasteret

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _imports_the_torch_layer(code: str) -> bool:
    """Whether the example imports ``rasteret.torch`` (which imports torch, torchgeo and
    lightning: the ``torch`` extra)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False  # the test reports it
    return any(isinstance(node, ast.ImportFrom)
               and (node.module or "").split(".")[:2] == ["rasteret", "torch"]
               for node in ast.walk(tree))


def blocks():
    for path in DOCS:
        for number, code in enumerate(BLOCK.findall(path.read_text())):
            code = textwrap.dedent(code)
            marks = [pytest.mark.torch] if _imports_the_torch_layer(code) else []
            yield pytest.param(code, id=f"{path.name}-{number}", marks=marks)


@pytest.mark.parametrize("code", list(blocks()))
def test_example_parses_and_uses_existing_rasteret_names(code):
    tree = ast.parse(code)
    if _imports_the_torch_layer(code):
        # The core install (e.g. Python 3.11, no torch extra) skips these examples.
        pytest.importorskip("torchgeo")
        pytest.importorskip("lightning")
    for node in ast.walk(tree):
        # rasteret.<name> must exist on the package.
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "rasteret"):
            assert hasattr(rasteret, node.attr), f"rasteret.{node.attr} does not exist"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rasteret"):
            module = __import__(node.module, fromlist=[a.name for a in node.names])
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name} is missing"


def _example():
    import importlib.util

    path = ROOT / "examples" / "landsat_ndvi_requester_pays.py"
    spec = importlib.util.spec_from_file_location("landsat_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_landsat_example_parses_its_arguments():
    args = _example().parse_args(["--bbox", "1,2,3,4", "--dates", "2023-01-01/2023-02-01"])
    assert args.bbox == "1,2,3,4" and args.max_cloud == 20.0


@pytest.mark.network
def test_landsat_example_against_the_real_bucket(tmp_path, monkeypatch):
    monkeypatch.setenv("RASTERET_WORKSPACE", str(tmp_path))
    _example().main(["--dates", "2023-07-01/2023-07-20"])
