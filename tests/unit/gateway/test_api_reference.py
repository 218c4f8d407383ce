"""The API's reference: every response in /openapi.json is typed, and the table in
docs/gateway.md lists every route and every parameter the spec has (a route or parameter added
without its line fails here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cairn_gateway.api import make_app
from cairn_gateway.store import Store

DOC = Path(__file__).resolve().parents[3] / "docs" / "gateway.md"


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = Store(tmp_path_factory.mktemp("ref") / "gw.db")
    try:
        return make_app(store).openapi()
    finally:
        store.close()


def untyped(node: Any, components: dict[str, Any], where: str,
            seen: set[str] | None = None) -> list[str]:
    """Places under a schema that say nothing of their type: ``{}``, an object of any keys,
    an array of anything. Follows ``$ref`` into the components (once each)."""
    seen = set() if seen is None else seen
    if not isinstance(node, dict) or not node:
        return [where]
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name in seen:
            return []
        seen.add(name)
        return untyped(components[name], components, name, seen)
    out: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(node.get(key, [])):
            out += untyped(sub, components, f"{where}.{key}[{i}]", seen)
    if any(k in node for k in ("anyOf", "oneOf", "allOf")):
        return out
    kind = node.get("type")
    if kind is None:
        return [where]
    if kind == "array":
        return untyped(node.get("items"), components, f"{where}[]", seen)
    if kind == "object":
        props = node.get("properties")
        if not props or node.get("additionalProperties") not in (None, False):
            return [where]
        for name, sub in props.items():
            out += untyped(sub, components, f"{where}.{name}", seen)
    return out


def test_every_response_is_typed(spec: dict[str, Any]) -> None:
    components = spec.get("components", {}).get("schemas", {})
    bad = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            for status, response in op["responses"].items():
                if not status.startswith("2"):
                    continue
                content = response.get("content")
                assert content, f"{method.upper()} {path} {status}: no content type"
                for media, body in content.items():
                    if media == "text/plain":  # /metrics: the Prometheus text format
                        assert body["schema"] == {"type": "string"}, path
                        continue
                    bad += [f"{method.upper()} {path} {status}: {w}"
                            for w in untyped(body.get("schema"), components, "response")]
    assert not bad, "untyped responses:\n" + "\n".join(bad)


def test_the_walk_catches_an_untyped_answer() -> None:
    loose = {"type": "array", "items": {"type": "object", "additionalProperties": True}}
    assert untyped(loose, {}, "r") == ["r[]"]
    assert untyped({}, {}, "r") == ["r"]
    assert untyped({"$ref": "#/components/schemas/A"},
                   {"A": {"type": "object", "properties": {"x": {}}}}, "r") == ["A.x"]


def reference_rows() -> dict[str, str]:
    """The API table of docs/gateway.md: each route named in its first column -> its row."""
    text = DOC.read_text()
    section = text[text.index("## The HTTP API"):text.index("### Who may use the API")]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for method, path in re.findall(r"(GET|POST|DELETE|PUT|PATCH)? ?(/[\w/{}.]+)", first):
            for m in ([method] if method else ["GET"]):
                rows[f"{m} {path}"] = line
    return rows


def test_every_route_and_parameter_is_in_the_reference(spec: dict[str, Any]) -> None:
    rows = reference_rows()
    missing = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            key = f"{method.upper()} {path}"
            if key not in rows:
                missing.append(key)
                continue
            for param in op.get("parameters", []):
                if param["in"] == "query" and f"`{param['name']}`" not in rows[key]:
                    missing.append(f"{key} parameter {param['name']}")
    for key in ("GET /openapi.json", "GET /docs", "GET /redoc"):
        if key not in rows:
            missing.append(key)
    assert not missing, "not in docs/gateway.md's API table: " + ", ".join(missing)
