"""The JS oracles are installed at the versions Cairn is tested against, and the harness works."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import NodeScriptError, run_node

_VERSIONS = """
cairn.run(async ({ names }) => {
  const fs = require('fs')
  const path = require('path')
  const out = {}
  for (const name of names) {
    const exported = require(name)
    const pkg = JSON.parse(fs.readFileSync(path.join('node_modules', name, 'package.json'), 'utf8'))
    out[name] = { version: pkg.version, type: typeof exported }
  }
  return out
})
"""


def test_node_starts_and_is_recent(node_path: Path, interop_dir: Path) -> None:
    result = run_node(
        "cairn.run(async () => ({ version: process.versions.node, cwd: process.cwd() }))",
        node=str(node_path),
    )
    assert isinstance(result, dict)
    assert int(result["version"].split(".")[0]) >= 20
    assert Path(result["cwd"]).resolve() == interop_dir.resolve()


def test_oracle_packages_load_at_the_pinned_versions(node_path: Path, interop_dir: Path) -> None:
    names = ["hypercore", "hyperdht", "dht-rpc", "@hyperswarm/secret-stream"]
    result = run_node(_VERSIONS, {"names": names}, node=str(node_path))
    assert isinstance(result, dict)
    assert result["hypercore"]["version"] == "11.37.1"
    assert result["hyperdht"]["version"].split(".")[0] == "6"
    assert result["dht-rpc"]["version"].split(".")[0] == "6"
    assert result["@hyperswarm/secret-stream"]["version"].split(".")[0] == "6"
    assert result["hypercore"]["type"] == "function"  # the Hypercore class
    assert result["hyperdht"]["type"] == "function"
    assert result["dht-rpc"]["type"] == "function"
    assert result["@hyperswarm/secret-stream"]["type"] == "function"


def test_json_round_trip(node_path: Path, interop_dir: Path) -> None:
    value = {
        "text": "µ-sensor °C ✓",
        "ints": [0, -1, 2**53 - 1],
        "float": 21.5,
        "nested": {"none": None, "bools": [True, False]},
        "hex": bytes(range(8)).hex(),
    }
    assert run_node("cairn.run(async (input) => input)", value, node=str(node_path)) == value


def test_raw_script_reads_stdin_and_writes_stdout(node_path: Path, interop_dir: Path) -> None:
    script = "cairn.input().then((x) => { console.log('a log line'); cairn.output(x * 2) })"
    assert run_node(script, 21, node=str(node_path)) == 42


def test_a_throwing_script_reports_its_stderr(node_path: Path, interop_dir: Path) -> None:
    with pytest.raises(NodeScriptError, match="exited with code 1") as info:
        run_node("cairn.run(async () => { throw new Error('oracle broke') })", node=str(node_path))
    assert "oracle broke" in info.value.stderr
    assert "oracle broke" in str(info.value)
    assert info.value.returncode == 1


def test_a_script_without_json_output_is_an_error(node_path: Path, interop_dir: Path) -> None:
    with pytest.raises(NodeScriptError, match="no JSON"):
        run_node("process.stdout.write('not json')", node=str(node_path))


def test_a_hanging_script_times_out(node_path: Path, interop_dir: Path) -> None:
    with pytest.raises(NodeScriptError, match=r"did not finish within 0\.5 s"):
        run_node("setInterval(() => {}, 1000)", timeout=0.5, node=str(node_path))
