"""Fuzz every wire decoder (or those named): ``make fuzz``, or ``python fuzz/run.py --help``.

Each harness runs in a process of its own (``atheris.Fuzz`` never returns), on its seed corpus
in fuzz/corpus/<name>/ (written anew from the project's encoders; libFuzzer adds the inputs it
finds interesting), for ``--runs`` inputs. One line per harness: runs, findings, slowest input.
Findings (an undocumented exception, an input over 100 ms, a crash of the process) are written
to fuzz/findings/<name>/; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python fuzz/run.py` puts fuzz/ first, not the repository

HERE = ROOT / "fuzz"
CORPUS = HERE / "corpus"
FINDINGS = HERE / "findings"
STATS_EVERY = 1000


def _names() -> list[str]:
    from fuzz.harnesses import HARNESSES

    return list(HARNESSES)


def write_corpus(name: str) -> Path:
    """fuzz/corpus/<name>/seed-NNN from the encoders (other files there are libFuzzer's)."""
    from fuzz.corpus import seeds

    directory = CORPUS / name
    directory.mkdir(parents=True, exist_ok=True)
    for k, data in enumerate(seeds(name)):
        (directory / f"seed-{k:03d}").write_bytes(data)
    return directory


# -- the child: one harness, one engine -----------------------------------------------------


def child(name: str, runs: int, seed: int, engine: str, stats_path: Path, max_len: int) -> None:
    """Fuzz one harness and keep ``stats_path`` up to date (JSON: runs, findings, slowest)."""
    if engine == "atheris":
        import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

        with atheris.instrument_imports(include=["cairn", "cairn_edge", "cairn_gateway", "fuzz"]):
            from fuzz import harnesses, mutate
            from fuzz.corpus import seeds
    else:
        from fuzz import harnesses, mutate
        from fuzz.corpus import seeds

    harness = harnesses.HARNESSES[name]
    report = mutate.Report(name)
    for data in seeds(name):  # warm up (imports, the seeded world) so timings are the inputs'
        harness.run(data)

    def save(data: bytes, finding: harnesses.Finding) -> None:
        path = mutate.save_finding(FINDINGS, name, data, finding)
        print(f"finding in {name}: {finding} -> {path}", file=sys.stderr, flush=True)

    def flush() -> None:
        stats_path.write_text(json.dumps({
            "runs": report.runs, "findings": report.findings, "distinct": len(report.unique),
            "slowest_ms": report.slowest * 1000}))

    if engine == "python":
        report = mutate.fuzz(harness, seeds(name), runs, seed, save)
        flush()
        return

    def one_input(data: bytes) -> None:
        try:
            mutate.record(report, data, harness.check(data), None, save)
        except harnesses.Finding as exc:
            mutate.record(report, data, None, exc, save)
            flush()
        if report.runs % STATS_EVERY == 0 or report.runs >= runs:
            flush()

    for data in seeds(name):  # the seeds first, as the python engine does
        one_input(data)
    corpus = write_corpus(name)
    flush()
    FINDINGS.mkdir(parents=True, exist_ok=True)
    atheris.Setup([sys.argv[0], f"-runs={max(0, runs - report.runs)}", f"-seed={seed + 1}",
                   f"-max_len={max_len}", "-timeout=10", "-rss_limit_mb=2048",
                   f"-artifact_prefix={FINDINGS}/{name}-crash-", "-print_final_stats=1",
                   str(corpus)], one_input)
    atheris.Fuzz()


# -- the parent: every harness, a summary ---------------------------------------------------


def run_one(name: str, runs: int, seed: int, engine: str, max_len: int) -> tuple[str, bool]:
    """Fuzz ``name`` in a child process; (summary line, whether it found something)."""
    with tempfile.TemporaryDirectory(prefix=f"cairn-fuzz-{name}-") as tmp:
        stats_path, log_path = Path(tmp) / "stats.json", Path(tmp) / "log"
        start = time.monotonic()
        with log_path.open("wb") as log:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", name,
                 "--runs", str(runs), "--seed", str(seed), "--engine", engine,
                 "--stats", str(stats_path), "--max-len", str(max_len)],
                stdout=log, stderr=subprocess.STDOUT, check=False, cwd=ROOT)
        seconds = time.monotonic() - start
        output = log_path.read_text(errors="replace")
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    done = re.findall(r"Done (\d+) runs in", output)
    total = int(stats.get("runs", 0))
    if done:  # libFuzzer's count of its own runs, plus the seeds run before it started
        total = max(total, int(done[-1]) + len(_seeds_of(name)))
    findings = int(stats.get("findings", 0))
    crashed = proc.returncode != 0
    if crashed or findings:
        FINDINGS.mkdir(parents=True, exist_ok=True)
        (FINDINGS / f"{name}.log").write_text(output)
    line = (f"{name:<20} runs {total:>10,}  findings {findings + crashed:>3}"
            f" ({stats.get('distinct', 0)} distinct)  slowest {stats.get('slowest_ms', 0):7.2f} ms"
            f"  [{seconds:,.0f} s]")
    if crashed:
        line += f"  PROCESS FAILED (exit {proc.returncode}): fuzz/findings/{name}.log"
    elif total < runs:
        line += f"  STOPPED EARLY ({total} of {runs}): fuzz/findings/{name}.log"
        FINDINGS.mkdir(parents=True, exist_ok=True)
        (FINDINGS / f"{name}.log").write_text(output)
    return line, crashed or findings > 0 or total < runs


def _seeds_of(name: str) -> list[bytes]:
    from fuzz.corpus import seeds

    return seeds(name)


def main(argv: list[str] | None = None) -> int:
    has_atheris = importlib.util.find_spec("atheris") is not None
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("harness", nargs="*", help="harnesses to run (default: all; --list names them)")
    p.add_argument("--runs", type=int, default=1_000_000, help="inputs per harness (1,000,000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--engine", choices=("atheris", "python"),
                   default="atheris" if has_atheris else "python",
                   help="atheris (coverage-guided, the default when installed) or python "
                        "(seeded mutation of the corpus, no coverage)")
    p.add_argument("--jobs", type=int, default=1, help="harnesses fuzzed at once (1)")
    p.add_argument("--max-len", type=int, default=4096, help="longest input in bytes (4096)")
    p.add_argument("--list", action="store_true", help="list the harnesses and exit")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        child(args.child, args.runs, args.seed, args.engine, args.stats, args.max_len)
        return 0
    names = _names()
    if args.list:
        from fuzz.harnesses import HARNESSES

        for name in names:
            print(f"{name:<20} {HARNESSES[name].what.splitlines()[0]}")
        return 0
    unknown = [n for n in args.harness if n not in names]
    if unknown:
        p.error(f"unknown harness(es) {', '.join(unknown)}; --list names them")
    chosen = args.harness or names
    if args.engine == "atheris" and not has_atheris:
        p.error("atheris is not installed (pip install atheris): use --engine python")
    for name in chosen:
        write_corpus(name)
    print(f"fuzzing {len(chosen)} harness(es), {args.runs:,} runs each, engine {args.engine}, "
          f"seed {args.seed}", flush=True)
    bad = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, n, args.runs, args.seed, args.engine, args.max_len)
                   for n in chosen]
        for future in futures:
            line, found = future.result()
            bad |= found
            print(line, flush=True)
    print("findings: see fuzz/findings/" if bad else "no findings", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
