"""The types: `make test` runs mypy (strict, pyproject's [tool.mypy]) over rasteret/
before pytest; here, the annotations users see say what the functions accept."""

from __future__ import annotations

import re
import tomllib
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

mypy_api = pytest.importorskip("mypy.api", reason="mypy is in the dev extra")


def _mypy(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[str, int]:
    # Run from the checkout so that its rasteret/ and pyproject.toml are the ones checked.
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MYPYPATH", str(ROOT))
    stdout, stderr, status = mypy_api.run(list(args))
    return stdout + stderr, status


def test_packages_silenced_for_mypy_ship_no_types_of_their_own():
    """A package listed under ignore_missing_imports that starts shipping types
    (py.typed) should be checked: the list shrinks as the ecosystem grows types."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    silenced = [m for o in config["overrides"] if o.get("ignore_missing_imports")
                for m in o["module"]]
    for module in silenced:
        top = module.split(".")[0]
        spec = find_spec(top)
        if spec is None or spec.origin is None:
            continue  # not installed here: nothing to check
        assert not (Path(spec.origin).parent / "py.typed").exists(), (
            f"{top} ships types now: remove it from ignore_missing_imports")


def test_users_code_is_checked_against_the_option_types(monkeypatch, tmp_path):
    """obstore's config TypedDicts and the Literal options reach user code: typos in
    option names and values are type errors, the documented spellings are not."""
    snippet = tmp_path / "user_code.py"
    snippet.write_text(
        "import datetime\n"
        "import rasteret\n"
        "from rasteret.io.backend import provider_kind\n"
        "from rasteret.read.cog import read_header\n"
        "from rasteret.read.warp import GridSpec, read_into_grid\n"
        "ok = rasteret.create_backend(\n"
        "    client_options={'allow_http': True},\n"
        "    retry_config={'max_retries': 0, 'retry_timeout': datetime.timedelta(seconds=2)},\n"
        "    default_s3_config={'endpoint': 'http://127.0.0.1:9', 'aws_access_key_id': 'AKID',\n"
        "                       'skip_signature': True, 'region': 'us-west-2'},\n"
        ")\n"
        "rasteret.CloudConfig(provider='aws', s3_config={'endpoint_url': 'http://x'})\n"
        "bad_client = rasteret.create_backend(client_options={'allow_htp': True})\n"  # line 13
        "bad_retry = rasteret.create_backend(retry_config={'retry_timeout': 2.0})\n"  # line 14
        "bad_s3 = rasteret.create_backend(default_s3_config={'skip_signatur': True})\n"  # 15
        "bad_provider = rasteret.CloudConfig(provider='awss')\n"  # line 16
        "async def header() -> None:\n"
        "    _, info = await read_header('s3://b/k.tif', backend=ok)\n"
        "    reveal_type(info)\n"  # line 19
        "reveal_type(provider_kind(None))\n"  # line 20
        "async def grid(cog: rasteret.CogFile, g: GridSpec) -> None:\n"
        "    await read_into_grid(cog, g, resampling='cubic')\n"  # line 22
    )
    output, status = _mypy(monkeypatch, "--strict", "--follow-imports=silent", str(snippet))
    assert status == 1, output
    errors = {int(m.group(1)): m.group(2) for m in
              re.finditer(r"user_code\.py:(\d+): (?:error|note): (.*)", output)}
    assert set(errors) == {13, 14, 15, 16, 19, 20, 22}, output
    assert '"ClientConfig | None"' in errors[13]
    assert '"RetryConfig | None"' in errors[14]
    assert '"S3Options | None"' in errors[15]
    assert "awss" in errors[16]
    assert "ObjectInfo" in errors[19]  # it was declared `int | None`
    assert "Literal['s3']" in errors[20] and "Literal['azure']" in errors[20]
    assert "'cubic'" in errors[22] and "Literal['nearest', 'bilinear']" in errors[22]
