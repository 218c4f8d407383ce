"""Run Cairn's real entry points (`cairn`, `cairn-edge`) as subprocesses and check how they
fail: one line on stderr starting ``Error:``, no traceback, the exit code of the failure's kind
(2: what the user gave is wrong; 1: something failed at run time)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ran", "entry_point", "run_entry"]

ROOT = Path(__file__).resolve().parents[2]


def entry_point(name: str) -> list[str]:
    """The argv of the installed console script ``name`` (beside this Python), as a user runs
    it; the module's ``main`` through this Python when the script is not installed."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    module = {"cairn": "cairn.cli", "cairn-edge": "cairn_edge.cli"}[name]
    return [sys.executable, "-c", f"import {module} as m; m.main()"]


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    stdout: str
    stderr: str

    def fails(self, code: int, *needles: str) -> str:
        """Assert the run failed with ``code`` and one ``Error:`` line naming each needle (the
        last line of stderr; log lines may come before it); that line."""
        lines = [x for x in self.stderr.splitlines() if x.strip()]
        assert self.code == code, (self.code, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        assert lines and lines[-1].startswith("Error: "), self.stderr
        last = lines[-1]
        assert len(last) > len("Error: ") + 10, last  # never an empty reason
        for needle in needles:
            assert needle in last, (needle, last)
        return last


def run_entry(name: str, *args: str, cwd: Path, timeout: float = 60.0) -> Ran:
    """Run entry point ``name`` with ``args`` to its end (killed after ``timeout`` s)."""
    done = subprocess.run([*entry_point(name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return Ran(done.returncode, done.stdout, done.stderr)
