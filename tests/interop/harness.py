"""Run the JS oracles: a snippet of node with the npm packages in tests/interop, JSON in and out.

`run_node(script, input_json)` runs `node -e <prelude + script>` with tests/interop as the working
directory (so `require('hypercore')` finds tests/interop/node_modules), writes `input_json` as
JSON to the script's stdin, and returns the JSON the script printed on stdout (the whole of stdout,
or failing that its last non-empty line, so a library's stray log line does not get in the way).

The prelude gives every script one object, `cairn`:

    cairn.input()     -> Promise of the parsed stdin JSON
    cairn.output(v)   writes JSON.stringify(v) and a newline to stdout
    cairn.run(fn)     await fn(input), output its result (undefined as null) and exit 0;
                      on an error, print its stack to stderr and exit 1

so most scripts are one call:

    run_node("cairn.run(async ({ a, b }) => a + b)", {"a": 1, "b": 2})  # -> 3

Binary values cross as hex strings (`b4a.toString(buf, 'hex')` on the JS side, `bytes.fromhex`
here). A script that fails, times out or prints no JSON raises `NodeScriptError`, whose message
carries the exit code, the stderr and the start of the stdout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

__all__ = ["INTEROP_DIR", "NodeScriptError", "find_node", "run_node"]

INTEROP_DIR = Path(__file__).resolve().parent
"""tests/interop: package.json, package-lock.json and node_modules of the JS oracles."""

_PRELUDE = r"""
'use strict'
const cairn = {
  input () {
    return new Promise((resolve, reject) => {
      const chunks = []
      process.stdin.on('data', (chunk) => chunks.push(chunk))
      process.stdin.on('error', reject)
      process.stdin.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
        } catch (err) {
          reject(err)
        }
      })
    })
  },
  output (value) {
    process.stdout.write(JSON.stringify(value === undefined ? null : value) + '\n')
  },
  run (fn) {
    cairn.input().then(fn).then(
      (value) => {
        process.stdout.write(JSON.stringify(value === undefined ? null : value) + '\n', () => {
          process.exit(0)
        })
      },
      (err) => {
        process.stderr.write(String((err && err.stack) || err) + '\n', () => {
          process.exit(1)
        })
      }
    )
  }
}
"""

_SHOWN = 4000  # characters of stderr / stdout quoted in an error


class NodeScriptError(RuntimeError):
    """A node script failed: it exited non-zero, timed out, or printed no JSON."""

    def __init__(
        self, problem: str, *, returncode: int | None, stdout: str, stderr: str, script: str
    ) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.script = script
        super().__init__(
            f"{problem}\n"
            f"--- script (first lines) ---\n{_head(script, 600)}\n"
            f"--- stderr ---\n{_tail(stderr, _SHOWN) or '(empty)'}\n"
            f"--- stdout ---\n{_head(stdout, _SHOWN) or '(empty)'}"
        )


def _head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"({len(text) - limit} chars before) ..." + text[-limit:]


def find_node() -> str | None:
    """The path of the `node` executable on PATH, or None."""
    return shutil.which("node")


def _parse_output(stdout: str) -> object:
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        pass
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the script printed nothing on stdout")
    return json.loads(lines[-1])


def run_node(
    script: str, input_json: object = None, timeout: float = 60, *, node: str | None = None
) -> object:
    """Run `script` under node in tests/interop with `input_json` on stdin; return its JSON output.

    `node` is the executable to use (default: `node` on PATH). Raises `FileNotFoundError` when
    there is no node, and `NodeScriptError` when the script fails, times out or prints no JSON.
    """
    executable = node or find_node()
    if executable is None:
        raise FileNotFoundError("node is not on PATH: install Node.js 20 (or run `make test`)")
    stdin = json.dumps(input_json).encode()
    try:
        done = subprocess.run(
            [executable, "-e", _PRELUDE + script],
            input=stdin,
            capture_output=True,
            cwd=INTEROP_DIR,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NodeScriptError(
            f"node script did not finish within {timeout} s",
            returncode=None,
            stdout=_text(exc.stdout),
            stderr=_text(exc.stderr),
            script=script,
        ) from None
    stdout, stderr = _text(done.stdout), _text(done.stderr)
    if done.returncode != 0:
        raise NodeScriptError(
            f"node script exited with code {done.returncode}",
            returncode=done.returncode,
            stdout=stdout,
            stderr=stderr,
            script=script,
        )
    try:
        return _parse_output(stdout)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise NodeScriptError(
            f"node script printed no JSON on stdout ({exc})",
            returncode=done.returncode,
            stdout=stdout,
            stderr=stderr,
            script=script,
        ) from None


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")
