"""The API reference's checks and index, run by ``mkdocs build`` (see mkdocs.yml).

- ``SphinxRoles``, a griffe extension: the docstrings name objects with Sphinx roles
  (``:class:`Collection```, ``:func:`~rasteret.load```). Each becomes a cross-reference
  to the object it names, and a role that names nothing fails the build.
- The hooks: every public name (the ``__all__`` of rasteret and rasteret.torch, and of
  the modules they export) and every public method of its classes has a docstring, and
  the reference's index lists every public name as a cross-reference, so a name the
  reference does not render fails the build too.

`make docs` and `make test` build with ``--strict``: a warning fails the build.
"""

from __future__ import annotations

import builtins
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import griffe

log = logging.getLogger("mkdocs.plugins.rasteret")

ROOT = Path(__file__).parents[1]
# The modules whose __all__ is the public API (the modules they export follow).
PUBLIC = ("rasteret", "rasteret.torch")
INDEX = "reference/index.md"
MARKER = "<!-- public names -->"
ROLE = re.compile(r"(?<![\w:]):(?:attr|class|data|exc|func|meth|mod|obj):`(~?)([\w.]+)`")
# Any other role (``:py:class:``, ``:envvar:``...) is reported.
LEFT_OVER = re.compile(r"(?<![\w:]):[\w:]+:`[^`]*`")


def _target(obj: griffe.Object, name: str) -> str | None:
    """The path of the object ``name`` names in ``obj``'s docstring, "" for a name outside
    rasteret (builtins, the standard library, dependencies), None for no object."""
    head, _, rest = name.partition(".")
    if head != "rasteret":
        found = _in_scope(obj, head, packages=not rest)
        if found is None:
            # A dependency's full path, a builtin, or the standard library.
            known = rest or hasattr(builtins, head) or head in sys.stdlib_module_names
            return "" if known else None
        head = found
    path = f"{head}.{rest}" if rest else head
    if path != "rasteret" and not path.startswith("rasteret."):
        return ""
    try:
        _get(obj.package, path)
    except (KeyError, griffe.AliasResolutionError):
        return None
    return path


def _in_scope(obj: griffe.Object, name: str, *, packages: bool) -> str | None:
    """The path ``name`` stands for where ``obj`` is: a member of it, of its class or of
    its module (defined or imported there), else, with ``packages``, of the packages
    around the module (``TileAlignedSampler`` in ``rasteret.torch.dataset``); None if
    none. Dotted names do not look in the packages: ``torch.utils`` in rasteret.torch
    is torch's."""
    scope = obj
    while True:
        member = scope.members.get(name)
        if member is not None:
            return member.target_path if member.is_alias else member.path
        if scope.parent is None or (scope.is_module and not packages):
            return None
        scope = scope.parent


def _get(package: griffe.Module, path: str) -> griffe.Object:
    """The object at ``path`` (``rasteret.x.y``) in the package."""
    rest = path.removeprefix("rasteret").lstrip(".")
    return package[rest] if rest else package


def roles_to_refs(obj: griffe.Object, text: str) -> tuple[str, list[str]]:
    """``text`` with its Sphinx roles as cross-references (optional ones: an object the
    reference does not render shows as code), and the roles that name nothing."""
    broken: list[str] = []

    def replace(match: re.Match[str]) -> str:
        short, name = match.groups()
        title = name.rpartition(".")[2] if short else name
        path = _target(obj, name)
        if path is None:
            broken.append(match.group())
        if not path:
            return f"`{title}`"
        return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'

    text = ROLE.sub(replace, text)
    broken += LEFT_OVER.findall(text)
    return text, broken


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(griffe.Extension):
    """Turns the Sphinx roles of every docstring into cross-references."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.docstring is None:
                continue
            obj.docstring.value, broken = roles_to_refs(obj, obj.docstring.value)
            for role in broken:
                log.warning(f"{obj.path}: {role} names no object")


def public_names(module: griffe.Module) -> Iterator[tuple[str, griffe.Object]]:
    """The public path and object of every name ``module`` exports (its ``__all__``, or
    its public definitions), the names of the modules among them following each."""
    names = module.exports
    if names is None:
        names = [name for name, member in module.members.items()
                 if not name.startswith("_") and not member.is_alias]
    for name in map(str, names):
        path = f"{module.path}.{name}"
        member = module.members.get(name)
        if member is None:
            log.warning(f"{path} is in __all__ but not imported or defined statically")
            continue
        obj = member.final_target if member.is_alias else member
        yield path, obj
        if obj.is_module:
            yield from public_names(obj)


def undocumented(path: str, obj: griffe.Object) -> Iterator[str]:
    """``path`` if its object has no docstring, and its class's public methods and
    properties that have none."""
    if not _documented(obj):
        yield path
    if obj.is_class:
        for name, member in obj.members.items():
            if (not name.startswith("_") and not member.is_alias and not _documented(member)
                    and (member.is_function or "property" in member.labels)):
                yield f"{path}.{name}"


def _documented(obj: griffe.Object) -> bool:
    return obj.docstring is not None and bool(obj.docstring.value.strip())


def _summary(obj: griffe.Object) -> str:
    first = obj.docstring.value.split("\n\n")[0] if obj.docstring else ""
    return roles_to_refs(obj, " ".join(first.split()))[0].replace("|", "\\|")


def index() -> str:
    """Every public name as a cross-reference with its summary, one table per module,
    after warning about the ones without a docstring."""
    package = griffe.load("rasteret", search_paths=[str(ROOT)])
    tables: dict[str, list[str]] = {}
    for root in PUBLIC:
        for path, obj in public_names(_get(package, root)):
            for name in undocumented(path, obj):
                log.warning(f"{name} is public but has no docstring")
            module = path.rpartition(".")[0]
            tables.setdefault(module, ["| name | summary |", "| --- | --- |"]).append(
                f"| [`{path}`][{path}] | {_summary(obj)} |")
    return "\n\n".join(f"### `{module}`\n\n" + "\n".join(rows)
                       for module, rows in tables.items())


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri == INDEX:
        if MARKER not in markdown:
            log.warning(f"{INDEX} lost its marker {MARKER}")
        return markdown.replace(MARKER, index())
    return markdown
