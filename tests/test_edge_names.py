"""Consistent names at the edges: ``workspace_dir`` everywhere, ``retries`` (ours)
beside ``retry_config`` (obstore's), and what the guides import is at the top level."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import rasteret
from rasteret.io.backend import RetryPolicy
from rasteret.io.fetch import PROCESS_STATS
from testbed import HANG_GUARD

ROOT = Path(__file__).parents[1]
PUBLIC_WITH_A_WORKSPACE = [rasteret.load, rasteret.list_collections,
                           rasteret.delete_collection, rasteret.build,
                           rasteret.build_from_stac, rasteret.build_from_table]


def test_every_public_function_names_the_workspace_workspace_dir():
    for function in PUBLIC_WITH_A_WORKSPACE:
        names = set(inspect.signature(function).parameters)
        assert "workspace_dir" in names, function.__name__
        assert not {"workspace", "workspace_path", "folder"} & names, function.__name__
        assert inspect.signature(function).parameters["workspace_dir"].kind \
            is inspect.Parameter.KEYWORD_ONLY, function.__name__


def test_list_collections_takes_workspace_dir(tmp_path):
    assert rasteret.list_collections(workspace_dir=tmp_path) == []


def test_cli_takes_workspace_dir(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    env.pop("RASTERET_WORKSPACE", None)
    for args in (["--workspace-dir", str(tmp_path), "collections", "list"],
                 ["collections", "list", "--workspace-dir", str(tmp_path)],
                 ["collections", "list", "--workspace", str(tmp_path)]):
        out = subprocess.run([sys.executable, "-m", "rasteret.cli", *args], capture_output=True,
                             text=True, timeout=HANG_GUARD, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("no collections yet"), args


def test_our_retry_policy_is_retries_and_obstores_is_retry_config():
    policy = RetryPolicy(attempts=2)
    backend = rasteret.create_backend(retries=policy, retry_config={"max_retries": 1})
    assert backend.retries is policy
    assert backend.retry_config == {"max_retries": 1}
    assert not hasattr(backend, "retry_policy")
    assert rasteret.create_backend().retries == RetryPolicy()


def test_guides_import_from_the_top_level():
    assert rasteret.RetryPolicy is RetryPolicy
    assert rasteret.process_stats() is PROCESS_STATS
    assert {"RetryPolicy", "process_stats", "FetchStats", "PlanetaryComputerSas"} <= set(
        rasteret.__all__)
    # Deep imports in the guides are only the torch layer and the errors module.
    deep = re.compile(r"from rasteret\.(?!torch\b|errors\b)[\w.]+ import|import rasteret\.(?!torch"
                      r"\b|errors\b)")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not deep.findall(path.read_text()), path.name
