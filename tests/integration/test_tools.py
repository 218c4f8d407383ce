"""The outside tools that `make test` installs are there and run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def test_mosquitto_is_installed_and_is_version_2(mosquitto_path: Path) -> None:
    # `-h` prints the version and the usage, and starts no broker.
    done = subprocess.run(
        [mosquitto_path, "-h"], capture_output=True, text=True, timeout=30, check=False
    )
    found = re.search(r"mosquitto version (\d+)\.(\d+)", done.stdout + done.stderr)
    assert found is not None, done.stdout + done.stderr
    assert int(found.group(1)) >= 2
