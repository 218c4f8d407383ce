"""Every exception class Cairn defines sits in the ``cairn.errors`` tree, under exactly one
whose-fault base (issue 18).

The test imports every module of the four packages (``cairn``, ``cairn_edge``, ``cairn_gateway``,
``cairn_sim``; a module whose optional dependency is not installed is skipped) and checks each
``Exception`` subclass that module defines: it descends from :class:`CairnError` through exactly
one of :class:`LocalError`, :class:`RemoteError`, :class:`StorageError`, :class:`UsageError`,
:class:`ServiceError`. A class may keep a builtin second base (``ValueError``) for callers that
catch the builtin.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

from cairn.errors import CairnError, LocalError, RemoteError, ServiceError, StorageError, UsageError

PACKAGES = ("cairn", "cairn_demo", "cairn_edge", "cairn_gateway", "cairn_sim")
BASES = (LocalError, RemoteError, StorageError, UsageError, ServiceError)

# Classes outside the tree on purpose, by qualified name, with the reason.
ALLOWED: dict[str, str] = {
    "cairn.dht.api.DHTError": (
        "the common base of UnreachableError (ServiceError) and NotStoredError (RemoteError), "
        "so `except DHTError` catches both; never raised itself"
    ),
}


def _modules() -> list[ModuleType]:
    found: list[ModuleType] = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            try:
                found.append(importlib.import_module(info.name))
            except ModuleNotFoundError as exc:  # an optional dependency (an extra) is missing
                if exc.name is None or exc.name.split(".")[0] in PACKAGES:
                    raise
    return found


@functools.cache
def _defined_exceptions() -> dict[str, type[BaseException]]:
    classes: dict[str, type[BaseException]] = {}
    for module in _modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj in (CairnError, *BASES):  # the tree's root and its whose-fault bases
                continue
            if issubclass(obj, Exception) and obj.__module__ == module.__name__:
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return classes


def test_the_walk_finds_the_apps_errors() -> None:
    names = set(_defined_exceptions())
    # a walk that imported nothing would pass the test below vacuously
    for expected in (
        "cairn.settings.ConfigError",
        "cairn_gateway.store.common.StoreError",
        "cairn_gateway.store.postgres.StoreConflict",
        "cairn_edge.adapters.common.Rejected",
        "cairn_sim.scenario.ScenarioError",
    ):
        assert expected in names


@pytest.mark.parametrize("name", sorted(_defined_exceptions()))
def test_every_error_has_one_whose_fault_base(name: str) -> None:
    cls = _defined_exceptions()[name]
    assert issubclass(cls, CairnError), f"{name} is not a CairnError"
    if name in ALLOWED:  # a common base: each class under it has exactly one
        assert cls.__subclasses__(), f"{name} is allowed as a common base but has no subclass"
        return
    under = [base.__name__ for base in BASES if issubclass(cls, base)]
    assert len(under) == 1, f"{name} is under {under or 'no whose-fault base'}"


def test_allowed_names_real_classes() -> None:
    names = set(_defined_exceptions())
    assert set(ALLOWED) <= names
