"""The test environments install from committed locks (``locks/py3XX-ARCH.txt``, made
by ``make lock``): every package, transitive ones included, pinned with its hashes.
A lock that no longer satisfies pyproject.toml (a dependency added, a range changed
without relocking) fails here, and so does a venv that holds anything else than its
lock."""

from __future__ import annotations

import os
import platform
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "locks"
ARCHES = ("x86_64", "aarch64")
#: The extras each test environment installs (see the Makefile's install_locked).
EXTRAS = {"py312": ("torch", "dev", "aws"), "py311": ("dev", "aws")}
#: This checkout's own packages, installed editable beside the lock.
OWN = {"rasteret", "rasteret-testbed"}


@dataclass(frozen=True)
class Pin:
    """One package of a lock: its exact version, the marker that selects it (or None)
    and the hashes pip checks it against."""

    name: str
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]


def read_lock(path: Path) -> list[Pin]:
    """The pins of a lock written by ``uv pip compile --generate-hashes``."""
    pins: list[Pin] = []
    entry: list[str] = []
    for line in [*path.read_text().splitlines(), ""]:
        stripped = line.strip()
        if line.startswith("--hash=") or (line.startswith(" ") and "--hash=" in line):
            entry.append(stripped.removesuffix("\\").strip())
            continue
        if entry:
            pins.append(_pin(entry))
            entry = []
        if stripped and not stripped.startswith("#"):
            entry = [stripped.removesuffix("\\").strip()]
    return pins


def _pin(entry: list[str]) -> Pin:
    head, _, marker = entry[0].partition(";")
    name, sep, version = head.strip().partition("==")
    assert sep, f"not an exact pin: {entry[0]!r}"
    hashes = tuple(h.removeprefix("--hash=") for h in entry[1:])
    return Pin(canonicalize_name(name), Version(version),
               Marker(marker.strip()) if marker.strip() else None, hashes)


def environment(python: str, arch: str) -> dict[str, str]:
    """The marker environment of a lock: CPython ``python`` (``"3.12"``) on Linux."""
    return {"python_version": python, "python_full_version": f"{python}.0",
            "platform_machine": arch, "sys_platform": "linux", "platform_system": "Linux",
            "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "extra": ""}


def selected(pins: list[Pin], env: dict[str, str]) -> dict[str, Version]:
    """The versions a lock installs in ``env`` (pins whose marker holds there)."""
    return {p.name: p.version for p in pins if p.marker is None or p.marker.evaluate(env)}


def wanted(extras: tuple[str, ...], extra_files: tuple[Path, ...]) -> list[Requirement]:
    """pyproject.toml's dependencies, those of ``extras``, and the requirement files
    compiled into a lock beside them (torch pins, tools)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    for path in extra_files:
        lines += [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def unmet(versions: dict[str, Version], requirements: list[Requirement],
          env: dict[str, str]) -> list[str]:
    """The requirements (those whose marker holds in ``env``) that the locked
    ``versions`` do not satisfy, each with what is wrong."""
    problems = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        name = canonicalize_name(requirement.name)
        if name not in versions:
            problems.append(f"{requirement}: not locked")
        elif not requirement.specifier.contains(versions[name], prereleases=True):
            problems.append(f"{requirement}: locked {versions[name]}")
    return problems


LOCK_CASES = [(python, arch) for python in EXTRAS for arch in ARCHES]


@pytest.mark.parametrize(("python", "arch"), LOCK_CASES)
def test_each_lock_satisfies_pyproject(python, arch):
    lock = LOCKS / f"{python}-{arch}.txt"
    env = environment(f"{python[2]}.{python[3:]}", arch)
    files = (LOCKS / "tools.in",)
    if python == "py312":
        files += (LOCKS / f"torch-{arch}.in",)
    problems = unmet(selected(read_lock(lock), env), wanted(EXTRAS[python], files), env)
    assert not problems, f"{lock.name} no longer fits pyproject.toml: {problems}; run `make lock`"


def test_a_dependency_added_or_a_range_moved_without_relocking_is_caught():
    env = environment("3.12", "x86_64")
    versions = selected(read_lock(LOCKS / "py312-x86_64.txt"), env)
    requirements = wanted(EXTRAS["py312"], ())
    assert unmet(versions, requirements, env) == []
    numpy = versions["numpy"]
    changed = [*requirements, Requirement("a-package-nobody-locked>=1"),
               Requirement(f"numpy>{numpy}"), Requirement("torch<1; python_version < '3'")]
    assert unmet(versions, changed, env) == [
        "a-package-nobody-locked>=1: not locked", f"numpy>{numpy}: locked {numpy}"]


@pytest.mark.parametrize(("python", "arch"), LOCK_CASES)
def test_every_locked_package_is_exact_and_hashed(python, arch):
    pins = read_lock(LOCKS / f"{python}-{arch}.txt")
    assert len(pins) > 50  # transitive dependencies included
    assert not [p.name for p in pins if not p.hashes]
    assert len({p.name for p in pins if p.marker is None}) == len(
        [p for p in pins if p.marker is None])  # one unconditional pin per package


def test_lock_reader_keeps_markers_and_hashes(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# This file was autogenerated by uv\n"
        "numpy==2.0.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "    # via rasteret (pyproject.toml)\n"
        "nvidia-nccl==2.1 ; platform_machine == 'x86_64' \\\n    --hash=sha256:cc\n")
    numpy, nccl = read_lock(lock)
    assert (numpy.name, str(numpy.version), numpy.hashes) == ("numpy", "2.0.0",
                                                               ("sha256:aa", "sha256:bb"))
    assert nccl.marker is not None and nccl.hashes == ("sha256:cc",)
    assert selected([numpy, nccl], environment("3.12", "aarch64")) == {
        "numpy": Version("2.0.0")}


def _running_lock() -> Path:
    python = "py312" if sys.version_info >= (3, 12) else "py311"
    return LOCKS / f"{python}-{platform.machine()}.txt"


@pytest.mark.skipif(bool(os.environ.get("RASTERET_UNLOCKED")),
                    reason="`make test-latest` runs the newest versions, not the lock")
def test_this_environment_holds_exactly_the_locked_versions():
    lock = _running_lock()
    if not lock.exists():
        pytest.fail(f"no lock for this interpreter and machine: {lock.name}")
    env = environment(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine())
    expected = {name: str(v) for name, v in selected(read_lock(lock), env).items()}
    installed = {canonicalize_name(d.metadata["Name"]): str(Version(d.version))
                 for d in metadata.distributions()}
    for name in OWN:
        installed.pop(name, None)
    extra = sorted(set(installed) - set(expected))
    missing = sorted(set(expected) - set(installed))
    differ = sorted(f"{n} {installed[n]} (locked {expected[n]})"
                    for n in set(installed) & set(expected) if installed[n] != expected[n])
    assert not (extra or missing or differ), (
        f"{sys.prefix} is not {lock.name}: not locked {extra}, missing {missing}, "
        f"other versions {differ}; `make venv` reinstalls it from the lock")
