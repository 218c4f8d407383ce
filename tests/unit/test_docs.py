"""The user docs: the generated reference is current and complete, no page carries an issue
number or a status note, and every link between the docs resolves (files and #anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import docs_reference

ROOT = docs_reference.ROOT
USER_DOCS = sorted(
    [ROOT / "README.md"]
    + [p for p in (ROOT / "docs").rglob("*.md") if "decisions" not in p.relative_to(ROOT).parts]
)
ALL_DOCS = sorted(
    {*USER_DOCS, *(ROOT / "docs" / "decisions").glob("*.md"), ROOT / "deploy" / "README.md",
     ROOT / "bench" / "README.md"}
)


def test_the_committed_reference_is_the_generated_one() -> None:
    for path, text in docs_reference.generated().items():
        assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make docs`"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} differs from the code: run `make docs`")


def test_every_command_option_and_config_key_is_documented() -> None:
    assert docs_reference.undocumented() == []


def test_the_reference_names_every_command_and_key() -> None:
    cli = docs_reference.CLI_MD.read_text(encoding="utf-8")
    for root_name, root in docs_reference._roots():
        for name, _command in docs_reference._commands(root_name, root):
            assert f"`{name}`" in cli
    config = docs_reference.CONFIG_MD.read_text(encoding="utf-8")
    for cfg in docs_reference._config_files():
        for keys in cfg.known.values():
            for key in keys - cfg.subtables:
                assert f"| `{key}` |" in config


def test_a_template_comment_continues_on_its_column() -> None:
    keys = docs_reference.template_keys(
        '[a]\nx = 1   # one\n        # two\n# y = "#"  # three\n#          # four\nz = 2\n'
        "# [[t.f]]\n# p = true\n")
    assert [(k.table, k.key, k.default, k.text, k.commented) for k in keys] == [
        ("a", "x", "1", ["one", "two"], False),
        ("a", "y", '"#"', ["three", "four"], True),
        ("a", "z", "2", [], False),
        ("f", "p", "true", [], True),
    ]


# -- no issue numbers, no status notes --------------------------------------------------------

_NOTES = [
    re.compile(r"\bissues? ?#?\d+", re.IGNORECASE),
    re.compile(r"\*\*status\b", re.IGNORECASE),
    re.compile(r"^status:", re.IGNORECASE | re.MULTILINE),
    re.compile(r"\bnot built yet\b", re.IGNORECASE),
    re.compile(r"\(not built\)", re.IGNORECASE),
    re.compile(r"^#+ .*not built", re.IGNORECASE | re.MULTILINE),
]


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_carry_no_issue_numbers_or_status_notes(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [m.group(0) for pattern in _NOTES for m in pattern.finditer(text)]
    assert found == [], f"{page.relative_to(ROOT)}: {found}"


def test_the_note_patterns_catch_what_they_are_for() -> None:
    for text in ["(issue 19)", "Issue 20, the pipeline", "**Status: part of", "## Not built yet",
                 "holepunching (not built)"]:
        assert any(p.search(text) for p in _NOTES), text
    for text in ["a tissue 3 times", "the status of a device", "`cairn edge status`"]:
        assert not any(p.search(text) for p in _NOTES), text


# -- links ------------------------------------------------------------------------------------

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            name, n = base, 1
            while name in found:
                name, n = f"{base}-{n}", n + 1
            found.add(name)
    return found


def links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return [m.group(1) for m in _LINK.finditer(text)]


@pytest.mark.parametrize("page", ALL_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_between_the_docs_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert broken == [], f"{page.relative_to(ROOT)}: {broken}"


def test_slugs_follow_github() -> None:
    assert slug(" `cairn gateway run`") == "cairn-gateway-run"
    assert slug(" Shelly Gen2 (Plus, Pro, Gen3)") == "shelly-gen2-plus-pro-gen3"
    assert slug(" SenML (RFC 8428)") == "senml-rfc-8428"


# -- the checks bite ----------------------------------------------------------------------------


def test_an_option_without_help_and_an_unlisted_key_are_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    from cairn_gateway import config as gateway_config
    from cairn_gateway.cli import gateway

    command = gateway.commands["init"]
    bare = click.Option(["--colour"])
    monkeypatch.setattr(command, "params", [*command.params, bare])
    known = {k: set(v) for k, v in gateway_config._KEYS.items()}
    known["store"].add("budget_mb")
    monkeypatch.setattr(gateway_config, "_KEYS", known)
    holes = docs_reference.undocumented()
    assert "option --colour of `cairn gateway init` has no help text" in holes
    assert ("gateway.toml `[store]` `budget_mb` is not in the TEMPLATE that `init` writes"
            in holes)
    assert any("`budget_mb` has no row in the configuration reference" in h for h in holes)
    assert "--colour" in docs_reference.cli_reference()


def test_a_doc_row_names_its_keys_and_keeps_its_links(tmp_path: Path) -> None:
    page = tmp_path / "part.md"
    page.write_text("# x\n\n## Configuration reference\n\n| key | default | meaning |\n"
                    "|---|---|---|\n| `top` | `1` | see [a](#b) and [c](c.md) |\n"
                    "| `[mqtt] username`, `password` | | both \\| either |\n"
                    "| `[[topic.field]] path` | | a path |\n\n## Next\n\n| `[x] y` | | no |\n")
    rows = docs_reference.doc_rows(page)
    assert rows == {
        ("", "top"): ("`1`", "see [a](../part.md#b) and [c](../c.md)"),
        ("mqtt", "username"): ("", "both \\| either"),
        ("mqtt", "password"): ("", "both \\| either"),
        ("field", "path"): ("", "a path"),
    }


def test_the_walk_reads_console_blocks_and_remembers_words(tmp_path: Path) -> None:
    from tests.integration.demo.test_docs_walk import match, steps

    page = tmp_path / "p.md"
    page.write_text("```sh\n$ not run\n```\n\n```console\n$ cairn gateway init gw\n"
                    "gateway key (put it here): <KEY>\n$ cairn edge init e \\\n"
                    "    --gateway <KEY>\n$ run &\n{\"ready\": true, ...}\n```\n")
    found = steps(page)
    assert [(s.command, s.expected, s.background) for s in found] == [
        ("cairn gateway init gw", ["gateway key (put it here): <KEY>"], False),
        ("cairn edge init e  --gateway <KEY>", [], False),
        ("run &", ['{"ready": true, ...}'], True),
    ]
    words: dict[str, str] = {}
    assert match(found[0].expected, "wrote gw\ngateway key (put it here): ab12\n", words) == []
    assert words == {"KEY": "ab12"}
    assert match(['{"ready": true, ...}'], '{"ready": false}', words) == ['{"ready": true, ...}']
