"""The docs walk: the README's and the tutorial's commands, run as written, on a fresh directory.

A fenced block marked ``console`` is run; ``sh`` blocks are not. In a console block a line
``$ command`` is run with bash (a trailing backslash continues it), and the lines under it, up to
the next ``$``, are what it prints: each one must match a line of its output (``...`` matches
anything, ``<NAME>`` matches one word and remembers it: a later command's ``<NAME>`` is replaced
by that word, as a reader pastes it). Every command must exit 0. A command ending in ``&`` runs
in the background until the walk ends; the walk waits (with a deadline) for its lines to appear
before the next command. A ``curl`` (read-only) is asked again until its lines appear, as a
reader would while the gateway collects.

The default ports the docs show (1883, 8080, 7420, ...) are replaced by free ones, in the
commands and in every config file the commands write. Everything runs in a temporary directory
(`.venv` is linked there, so `.venv/bin/cairn` works as in the README), and every process the
walk started is stopped at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cairn.brokers.mosquitto import free_port
from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[3]
WALKED = [ROOT / "README.md", ROOT / "docs" / "tutorial.md"]

# Ports the docs show, each replaced by a free one.
DOC_PORTS = (1883, 8080, 7420, 7422, 7423, 49800, 49737)
COMMAND_TIMEOUT = 120.0
WAIT = 60.0


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    line: int = 0

    @property
    def background(self) -> bool:
        return self.command.rstrip().endswith("&")


def steps(page: Path) -> list[Step]:
    """The commands of a page's ``console`` blocks, with the lines each is shown to print."""
    found: list[Step] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    in_block = False
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("```"):
            in_block = line.strip() == "```console"
            continue
        if not in_block:
            continue
        if line.startswith("$ "):
            command, start = line[2:], i
            while command.endswith("\\") and i < len(lines):
                command = command[:-1] + " " + lines[i].strip()
                i += 1
            found.append(Step(command, line=start))
        elif line.strip() and found:
            found[-1].expected.append(line.strip())
    return found


def pattern(expected: str) -> re.Pattern[str]:
    parts = re.split(r"(\.\.\.|<[A-Z_]+>)", expected)
    out = []
    for part in parts:
        if part == "...":
            out.append(".*")
        elif re.fullmatch(r"<[A-Z_]+>", part):
            out.append(f"(?P<{part[1:-1]}>\\S+?)")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def match(expected: list[str], output: str, found: dict[str, str]) -> list[str]:
    """The expected lines no output line matches; the words of those that match go in found."""
    lines = [line.strip() for line in output.splitlines()]
    unmatched = []
    for want in expected:
        regex = pattern(want)
        for line in lines:
            m = regex.fullmatch(line)
            if m:
                found.update(m.groupdict())
                break
        else:
            unmatched.append(want)
    return unmatched


def free_ports(n: int) -> list[int]:
    """``n`` different free ports outside the ephemeral range (:func:`free_port`): a port the
    kernel picked with ``bind(..., 0)`` was taken, minutes later when the walk reached the
    command that listens on it, by another test's outgoing connection."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class Walk:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = dict(zip(DOC_PORTS, free_ports(len(DOC_PORTS)), strict=True))
        self.words: dict[str, str] = {}
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
        self.env.pop("CAIRN_SCORECARD", None)

    def ported(self, text: str) -> str:
        return re.sub(r"\b(\d{4,5})\b",
                      lambda m: str(self.ports.get(int(m.group(1)), m.group(1))), text)

    def rewrite_configs(self) -> None:
        for path in self.workdir.rglob("*.toml"):
            if ".venv" in path.parts:
                continue
            text = path.read_text(encoding="utf-8")
            new = self.ported(text)
            if new != text:
                path.write_text(new, encoding="utf-8")

    def command(self, step: Step) -> str:
        text = step.command.rstrip().removesuffix("&").rstrip()
        for name in re.findall(r"<([A-Z_]+)>", text):
            assert name in self.words, f"line {step.line}: <{name}> was printed by no command"
            text = text.replace(f"<{name}>", self.words[name])
        return self.ported(text)

    def run(self, step: Step) -> None:
        command = self.command(step)
        expected = [self.ported(e) for e in step.expected]
        if step.background:
            self.start(step, command, expected)
            return
        deadline = time.monotonic() + WAIT
        while True:
            done = subprocess.run(["bash", "-c", command], cwd=self.workdir, env=self.env,
                                  capture_output=True, timeout=COMMAND_TIMEOUT, check=False)
            output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
            unmatched = match(expected, output, self.words)
            if done.returncode == 0 and not unmatched:
                break
            if not command.startswith("curl") or time.monotonic() > deadline:
                pytest.fail(f"line {step.line}: `{command}` exited {done.returncode}; "
                            f"not printed: {unmatched}\n--- output:\n{output[-3000:]}")
            time.sleep(0.5)  # asking again: the gateway collects in rounds
        self.rewrite_configs()

    def start(self, step: Step, command: str, expected: list[str]) -> None:
        log = self.workdir / f"background-{len(self.background)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.workdir,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.background.append((proc, log))
        deadline = time.monotonic() + WAIT
        while True:
            output = log.read_text(encoding="utf-8", errors="replace")
            unmatched = match(expected, output, self.words)
            if not unmatched:
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"line {step.line}: `{command} &` (exit {proc.poll()}) did not "
                            f"print {unmatched}\n--- output:\n{output[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc, _log in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _log in reversed(self.background):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    w = Walk(tmp_path)
    try:
        yield w
    finally:
        w.stop()


def test_the_pages_have_console_blocks() -> None:
    for page in WALKED:
        assert steps(page), f"{page.name} has no ```console block to walk"


@pytest.mark.parametrize("page", WALKED, ids=lambda p: p.name)
def test_walk(page: Path, walk: Walk) -> None:
    needed = {"mosquitto": "apt-get install mosquitto",
              "mosquitto_pub": "apt-get install mosquitto-clients", "curl": "apt-get install curl"}
    text = page.read_text(encoding="utf-8")
    for tool, how in needed.items():
        if re.search(rf"^\$ .*\b{tool}\b", text, re.MULTILINE) and shutil.which(tool) is None \
                and not Path(f"/usr/sbin/{tool}").exists():
            missing(tool, how)
    if Path("/usr/sbin/mosquitto").exists():
        walk.env["PATH"] += ":/usr/sbin"
    for step in steps(page):
        walk.run(step)
