"""The API reference's checks (docs/hooks.py, run by the strict docs build of `make test`)
catch what they are for: a role naming no object, a public name without a docstring."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

griffe = pytest.importorskip("griffe")

ROOT = Path(__file__).parents[1]


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()

PACKAGE = {
    "__init__.py": '''"""A package."""
from rasteret.things import Thing

__all__ = ["Thing", "things"]
''',
    "things.py": '''"""Things."""
from torch.utils.data import DataLoader


class Thing:
    """A thing."""

    def run(self):
        """Run."""

    def stop(self):
        pass
''',
    "torch/__init__.py": '"""Torch."""\n',
    "torch/loader.py": '"""Loaders."""\n',
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """PACKAGE as the package ``rasteret`` in a folder, read statically."""
    folder = tmp_path_factory.mktemp("reference")
    for name, code in PACKAGE.items():
        path = folder / "rasteret" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    return griffe.load("rasteret", search_paths=[str(folder)], try_relative_path=False)


@pytest.mark.parametrize(("role", "expected"), [
    # In scope (imported or defined in the module), in full, shortened by ~.
    (":class:`Thing`", '<autoref identifier="rasteret.things.Thing" optional>'
                       "<code>Thing</code></autoref>"),
    (":meth:`~rasteret.things.Thing.run`", '<autoref identifier="rasteret.things.Thing.run" '
                                            "optional><code>run</code></autoref>"),
    # Outside rasteret: builtins, the standard library, a dependency's full path.
    (":class:`FileNotFoundError`", "`FileNotFoundError`"),
    (":mod:`os`", "`os`"),
    (":class:`DataLoader`", "`DataLoader`"),
])
def test_roles_naming_objects_become_cross_references_or_code(package, role, expected):
    text, broken = hooks.roles_to_refs(package["things"], f"See {role}.")
    assert (text, broken) == (f"See {expected}.", [])


@pytest.mark.parametrize("role", [
    ":class:`Thin`", ":meth:`Thing.walk`", ":func:`rasteret.things.gone`",
    ":class:`rasteret.torch.Missing`", ":py:class:`Thing`",
])
def test_roles_naming_nothing_are_reported(package, role):
    assert hooks.roles_to_refs(package["things"], f"See {role}.")[1] == [role]


def test_a_dotted_name_is_not_looked_up_in_the_packages_around(package):
    # torch.utils inside rasteret.torch is torch's, not rasteret.torch's.
    text, broken = hooks.roles_to_refs(package["torch.loader"], ":class:`torch.utils.Dataset`")
    assert (text, broken) == ("`torch.utils.Dataset`", [])


def test_public_names_and_the_undocumented_ones(package):
    names = dict(hooks.public_names(package))
    assert list(names) == ["rasteret.Thing", "rasteret.things", "rasteret.things.Thing"]
    found = [name for path, obj in names.items() for name in hooks.undocumented(path, obj)]
    assert found == ["rasteret.Thing.stop", "rasteret.things.Thing.stop"]


def test_every_public_name_of_rasteret_has_a_docstring():
    package = griffe.load("rasteret", search_paths=[str(ROOT)])
    found = [name for root in hooks.PUBLIC
             for path, obj in hooks.public_names(hooks._get(package, root))
             for name in hooks.undocumented(path, obj)]
    assert found == []
