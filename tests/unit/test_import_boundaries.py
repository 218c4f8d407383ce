"""Which package may import which (issue 18 item 5), read from the source with `ast`.

- the core (`cairn.*`) imports no app: the `cairn` command finds the apps' command groups
  through the `cairn.commands` entry points, never by importing them;
- an app imports no other app (edge, gateway and simulator know each other only through what
  the core defines: the DHT record, the logs, MQTT), except the demo, which drives them all;
- the simulator takes from the core only `cairn.brokers` and what it needs: it talks to the
  rest only through MQTT.

Imports are parsed, not run, so an import inside a function (a lazy one) counts too.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = "cairn"
DRIVER = "cairn_demo"  # the one app allowed to import the others
SIM = "cairn_sim"
SIM_MAY_USE = "cairn.brokers"


def package_dirs() -> dict[str, Path]:
    """Top-level import package -> its folder, as pyproject.toml installs them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def module_index(packages: Mapping[str, Path]) -> dict[str, Path]:
    """Dotted module name -> its file, for every module of ``packages``."""
    index = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            index[".".join(parts)] = path
    return index


def imports(module: str, path: Path, index: Mapping[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, module) for every module ``module`` imports, relative imports resolved; for
    ``from package import name`` also ``package.name`` when that is a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                if f"{target}.{alias.name}" in index:
                    yield node.lineno, f"{target}.{alias.name}"


def _top(module: str) -> str:
    return module.split(".")[0]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def core_closure(start: str, index: Mapping[str, Path]) -> set[str]:
    """``start``'s modules and every core module they import, transitively."""
    todo = [m for m in index if _within(m, start)]
    seen = set(todo)
    while todo:
        module = todo.pop()
        for _, target in imports(module, index[module], index):
            if _top(target) == CORE and target in index and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def violations(packages: Mapping[str, Path], root: Path = ROOT) -> list[str]:
    """Every import that crosses a boundary, as ``module (file:line) imports target: why``."""
    index = module_index(packages)
    apps = set(packages) - {CORE}
    sim_allowed = core_closure(SIM_MAY_USE, index) | {CORE}
    found = []
    for module, path in sorted(index.items()):
        here = _top(module)
        for line, target in imports(module, path, index):
            there = _top(target)
            why = None
            if here == CORE and there in apps:
                why = "the core imports no app (apps plug in through entry points)"
            elif here in apps and there in apps and there != here and here != DRIVER:
                why = f"an app imports no other app (only {DRIVER} drives the others)"
            elif here == SIM and there == CORE and target not in sim_allowed:
                why = (f"the simulator takes from the core only {SIM_MAY_USE} (and what it "
                       "needs): it talks to the rest through MQTT")
            if why is not None:
                found.append(f"{module} ({path.relative_to(root)}:{line}) imports {target}: {why}")
    return found


def test_every_package_keeps_to_its_boundaries() -> None:
    packages = package_dirs()
    assert {CORE, DRIVER, SIM, "cairn_edge", "cairn_gateway"} <= set(packages), packages
    index = module_index(packages)
    for name in packages:  # the walk really found each package's modules
        assert sum(_top(m) == name for m in index) >= 5, name
    found = violations(packages)
    assert not found, "imports across a boundary:\n" + "\n".join(found)


def test_the_cairn_command_finds_the_apps_through_entry_points() -> None:
    """The core's `cairn` command reaches each app's command group by an entry point (so the
    core imports none of them): every app with a command group is listed there."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project["entry-points"]["cairn.commands"]
    apps = {_top(target.split(":")[0]) for target in groups.values()} - {CORE}
    assert apps == set(package_dirs()) - {CORE}, groups
    cli = (ROOT / "core" / "cairn" / "cli.py").read_text()
    assert 'entry_points(group=COMMAND_GROUP)' in cli


def _tree(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {name: root / name for name in ("cairn", "cairn_edge", "cairn_sim", "cairn_demo")}


def test_a_crossing_import_is_named_with_its_module_and_line(tmp_path: Path) -> None:
    packages = _tree(tmp_path, {
        "cairn/__init__.py": "",
        "cairn/errors.py": "",
        "cairn/log.py": "def f():\n    import cairn_edge.agent\n",  # a lazy import counts
        "cairn/brokers/__init__.py": "from cairn.brokers.url import parse\n",
        "cairn/brokers/url.py": "from cairn import errors\n",
        "cairn_edge/__init__.py": "",
        "cairn_edge/agent.py": "from cairn_sim import fleet\n",
        "cairn_sim/__init__.py": "",
        "cairn_sim/fleet.py": "from ..cairn_sim import mqtt\n",
        "cairn_sim/mqtt.py": "from cairn.brokers import parse\nfrom cairn.errors import E\n"
                             "from cairn import log\n",
        "cairn_demo/__init__.py": "import cairn_edge.agent, cairn_sim.fleet\n",
    })
    found = violations(packages, tmp_path)
    assert [f.split(": ")[0] for f in found] == [
        "cairn.log (cairn/log.py:2) imports cairn_edge.agent",
        "cairn_edge.agent (cairn_edge/agent.py:1) imports cairn_sim",
        "cairn_edge.agent (cairn_edge/agent.py:1) imports cairn_sim.fleet",
        "cairn_sim.mqtt (cairn_sim/mqtt.py:3) imports cairn.log",
    ], found
