"""The locked dependencies: pyproject.toml -> uv.lock -> requirements*.txt -> the environment.

`make venv` installs requirements-dev.txt (uv.lock exported with hashes: runtime + [dev])
and then the project, editable, without dependencies; the image installs requirements.txt
(the runtime part). These tests check each link of that chain, offline: that the
environment running them (under `make test`, `.venv`) holds exactly the locked versions,
that the exported files say what uv.lock says, and that the lock satisfies pyproject.toml.
`uv lock --check` (run by `make venv`) is the full check of the last link; `make lock`
refreshes all three files.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = canonicalize_name("gcpcall-operator")
# Not in the lock, on purpose: the project itself (installed editable by `make venv`,
# checked on its own below) and what `python -m venv` seeds, at the version the Python in
# use bundles (pip; setuptools too on 3.11), which no project code uses. uv is not here:
# it lives in its own venv under .bin/, so in .venv it would be an extra.
SEEDED = frozenset({canonicalize_name("pip"), canonicalize_name("setuptools")})
REFRESH = ("`rm .venv/.installed; make venv` reinstalls the lock "
           "(`make lock` first if pyproject.toml changed)")


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    applies: bool  # its environment marker holds for the running Python and platform
    hashes: frozenset[str]


def read_pins(path: Path) -> list[Pin]:
    """The pins of a `uv export --hashes` requirements file (`name==version ; marker`)."""
    pins = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, *hashes = line.split("--hash=")
        req = Requirement(spec.strip())
        (pinned,) = req.specifier
        assert pinned.operator == "==", f"{path.name}: {req.name} is not pinned with =="
        assert hashes, f"{path.name}: {req.name} has no --hash"
        pins.append(Pin(
            name=canonicalize_name(req.name),
            version=Version(pinned.version),
            applies=req.marker is None or req.marker.evaluate(),
            hashes=frozenset(h.strip() for h in hashes),
        ))
    return pins


RUNTIME = read_pins(ROOT / "requirements.txt")
DEV = read_pins(ROOT / "requirements-dev.txt")
LOCK: dict[str, Any] = tomllib.loads((ROOT / "uv.lock").read_text())
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_holds_exactly_the_lock() -> None:
    expected = {pin.name: pin.version for pin in DEV if pin.applies}
    installed: dict[NormalizedName, list[Version]] = {}
    for dist in metadata.distributions():
        installed.setdefault(canonicalize_name(dist.name), []).append(Version(dist.version))
    problems = []
    for name in sorted(expected.keys() | installed.keys()):
        have, want = installed.get(name, []), expected.get(name)
        if name == PROJECT or (name in SEEDED and want is None):
            continue
        if want is None:
            problems.append(f"{name} {', '.join(map(str, have))} is installed but not locked")
        elif not have:
            problems.append(f"{name} {want} is locked but not installed")
        elif have != [want]:
            problems.append(f"{name} is locked at {want} but installed at "
                            f"{', '.join(map(str, have))}")
    assert not problems, (
        f"this environment is not requirements-dev.txt; {REFRESH}:\n  " + "\n  ".join(problems))


def test_the_project_is_installed_editable_from_this_checkout() -> None:
    dist = metadata.distribution(PROJECT)
    assert dist.version == PYPROJECT["project"]["version"], REFRESH
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    assert direct_url.get("dir_info", {}).get("editable"), f"{PROJECT} is not editable; {REFRESH}"
    source = Path(unquote(urlparse(direct_url["url"]).path)).resolve()
    assert source == ROOT, f"{PROJECT} is installed from {source}, not this checkout; {REFRESH}"


def lock_packages() -> dict[tuple[NormalizedName, Version], dict[str, Any]]:
    return {(canonicalize_name(p["name"]), Version(p["version"])): p for p in LOCK["package"]}


def closure(roots: list[dict[str, Any]]) -> set[tuple[NormalizedName, Version]]:
    """Every (name, version) of uv.lock reachable from these dependency entries, extras
    followed, markers ignored: what `uv export` writes (with the markers) for them."""
    packages, seen = lock_packages(), set()
    todo = list(roots)
    while todo:
        dep = todo.pop()
        name = canonicalize_name(dep["name"])
        for key, package in packages.items():
            if key[0] != name or ("version" in dep and key[1] != Version(dep["version"])):
                continue
            for extra in dep.get("extra", []):
                todo.extend(package.get("optional-dependencies", {}).get(extra, []))
            if key not in seen:
                seen.add(key)
                todo.extend(package.get("dependencies", []))
    return seen


def pinned(keys: set[tuple[NormalizedName, Version]]) -> str:
    return ", ".join(sorted(f"{name}=={version}" for name, version in keys)) or "-"


def test_exported_requirements_are_uv_lock() -> None:
    packages = lock_packages()
    project = packages.pop((PROJECT, Version(PYPROJECT["project"]["version"])))
    runtime = closure(project.get("dependencies", []))
    dev = closure(project.get("dependencies", []) + project["optional-dependencies"]["dev"])
    for path, pins, want in (("requirements.txt", RUNTIME, runtime),
                             ("requirements-dev.txt", DEV, dev)):
        have = {(pin.name, pin.version) for pin in pins}
        assert have == want, (
            f"{path} is not uv.lock's export; run `make lock`: only in {path}: "
            f"{pinned(have - want)}, only in uv.lock: {pinned(want - have)}")
        for pin in pins:
            package = packages[(pin.name, pin.version)]
            files = [package.get("sdist", {}), *package.get("wheels", [])]
            assert pin.hashes == {f["hash"] for f in files if "hash" in f}, (
                f"{path}: {pin.name} {pin.version} has other hashes than uv.lock; run `make lock`")


def test_the_lock_satisfies_pyproject() -> None:
    project = PYPROJECT["project"]
    for path, pins, reqs in (
        ("requirements.txt", RUNTIME, project["dependencies"]),
        ("requirements-dev.txt", DEV, project["dependencies"]
         + project["optional-dependencies"]["dev"]),
    ):
        for req in map(Requirement, reqs):
            versions = [pin.version for pin in pins if pin.name == canonicalize_name(req.name)]
            assert versions, f"{req.name} is in pyproject.toml, not in {path}; run `make lock`"
            for version in versions:
                assert req.specifier.contains(version, prereleases=True), (
                    f"{path} has {req.name} {version}, pyproject.toml wants {req}; "
                    "run `make lock`")


def test_uv_is_pinned_to_one_version() -> None:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert match, "the Makefile pins no UV_VERSION"
    assert PYPROJECT["tool"]["uv"]["required-version"] == f"=={match[1]}", (
        "pyproject.toml's [tool.uv] required-version is not the Makefile's UV_VERSION")
