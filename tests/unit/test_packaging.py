"""How Cairn is packaged: the edge extra stays lean, every package is typed, public names sorted."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import cairn

DIST = "cairn"
IMPORT_PACKAGES = [
    "cairn", "cairn.brokers", "cairn.dht", "cairn.fleet", "cairn.replication", "cairn.testing",
    "cairn.udx",
    "cairn_demo", "cairn_edge", "cairn_gateway", "cairn_sim",
]


def _requirements(dist: str, extras: frozenset[str]) -> list[Requirement]:
    """The requirements `dist` declares for an install with `extras`, markers evaluated."""
    found: list[Requirement] = []
    for line in importlib.metadata.requires(dist) or []:
        req = Requirement(line)
        applies = req.marker is None or any(
            req.marker.evaluate({"extra": extra}) for extra in extras | {""}
        )
        if applies:
            found.append(req)
    return found


def _extra_only(extra: str) -> set[str]:
    """Names of the packages `cairn[extra]` adds on top of a plain `cairn` install."""
    base = {str(canonicalize_name(r.name)) for r in _requirements(DIST, frozenset())}
    with_extra = {str(canonicalize_name(r.name)) for r in _requirements(DIST, frozenset({extra}))}
    return with_extra - base


def _closure(dist: str, extras: frozenset[str]) -> set[str]:
    """Every distribution an install of `dist[extras]` pulls in, following installed metadata."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(dist, extras)]
    while todo:
        name, want = todo.pop()
        for req in _requirements(name, want):
            key = canonicalize_name(req.name)
            if key == canonicalize_name(DIST):
                todo.append((DIST, frozenset(req.extras)))  # a self-reference such as cairn[edge]
            elif key not in seen:
                seen.add(key)
                todo.append((key, frozenset(req.extras)))
    return seen


def test_the_edge_extra_never_pulls_in_gateway_packages() -> None:
    # what only the gateway needs (a package both extras declare, prometheus-client, is shared)
    gateway = _extra_only("gateway") - _extra_only("edge")
    assert gateway, "the gateway extra declares no packages: this test would check nothing"
    assert canonicalize_name("fastapi") in gateway
    edge_install = _closure(DIST, frozenset({"edge"}))
    assert canonicalize_name("paho-mqtt") in edge_install  # the edge extra is really read
    leaked = sorted(gateway & edge_install)
    assert not leaked, f"`pip install cairn[edge]` would install gateway packages: {leaked}"


def test_the_dev_extra_installs_every_other_extra() -> None:
    dev = _closure(DIST, frozenset({"dev"}))
    for extra in ("edge", "gateway", "sim", "embedded-broker"):
        assert _extra_only(extra) <= dev, extra


@pytest.mark.parametrize("package",
                         ["cairn", "cairn_demo", "cairn_edge", "cairn_gateway", "cairn_sim"])
def test_each_import_package_is_marked_typed(package: str) -> None:
    assert (importlib.resources.files(package) / "py.typed").is_file()


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("package", IMPORT_PACKAGES)
def test_public_names_are_sorted_and_exist(package: str) -> None:
    module = _module(package)
    names: list[str] = module.__all__
    assert names == sorted(names, key=isort_key), f"{package}.__all__ is not sorted"
    assert len(set(names)) == len(names), f"{package}.__all__ lists a name twice"
    for name in names:
        assert hasattr(module, name), f"{package}.__all__ lists {name!r}, which it does not define"


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff (RUF022) keeps: CONSTANTS, then Classes, then functions and the rest."""
    if name.isupper() or (name.upper() == name and "_" in name):
        return (0, name)
    return (1 if name[:1].isupper() else 2, name)


def test_cairn_all_is_sorted() -> None:
    assert cairn.__all__ == sorted(cairn.__all__, key=isort_key)


def test_cairn_public_surface_is_pinned() -> None:
    """Adding or removing a public name is a decision: change this list on purpose."""
    assert cairn.__all__ == [
        "Applied", "CairnError", "DecodeError", "ForkError", "Frame", "KeyPair", "LocalError",
        "Log", "NotAvailableError", "ReadOnlyError", "RemoteError", "Sample", "StorageError",
        "VerificationError", "VerifyReport", "__version__", "derive_stream_key_pair", "frame_at",
        "key_pair", "random_key_pair", "seek_time",
    ]


def test_version_matches_the_installed_distribution() -> None:
    assert cairn.__version__ == importlib.metadata.version(DIST)


def test_every_subpackage_ships_in_the_wheel() -> None:
    """A package folder missing from [tool.setuptools] packages would be left out of a wheel."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        base = root / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([name, *rel.parts]))
    assert found <= listed, f"not listed in pyproject packages: {sorted(found - listed)}"


def test_the_gateway_imports_no_edge_or_sim_module() -> None:
    """What edges and gateways agree on lives in `cairn.fleet`; a gateway module that reached
    into `cairn_edge` (or the simulator) would tie the gateway to their insides. (The demo, its
    own package `cairn_demo`, runs them together; tests/unit/test_import_boundaries.py holds
    every package to its boundaries.)"""
    import ast

    root = Path(__file__).resolve().parents[2] / "gateway" / "cairn_gateway"
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names
                      if n.split(".")[0] in ("cairn_edge", "cairn_sim")]
    assert not found, found
    assert list(root.rglob("*.py")), root
