"""Run one contender on one input: wall time, output size, the child's peak RSS, phase times."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .contenders import PURE_PYTHON_ENV, Contender
from .inputs import CACHE_DIR, BenchInput

# "vmcore-save: time: bitmaps 0.17 s, pages 5.71 s, sync 0.03 s, commit 0.01 s, total 0:00:06 (6.18 s)"
_SUMMARY_TIME = re.compile(r"^vmcore-save: time: (.*)$", re.MULTILINE)
PYCACHE_DIR = CACHE_DIR / "pycache"
GNU_TIME = "/usr/bin/time"  # Debian package "time"
_PHASE = re.compile(r"^(\w[\w ]*?) ([0-9.]+) s$")
# "total 0:00:06 (6.18 s)": the whole save as vmcore-save timed it (wall time less start-up and exit)
_TOTAL = re.compile(r"^total .*\(([0-9.]+) s\)$")
REPO = Path(__file__).resolve().parent.parent  # vmcore-save runs from here: this tree's collector


@dataclass
class Run:
    seconds: float
    output_bytes: int
    max_rss_bytes: int
    phases: dict[str, float]  # vmcore-save's summary: bitmaps, pages, sync, commit, total


@dataclass
class Measurement:
    """Every timed run of one contender on one input, or why there is none."""

    bench_input: BenchInput
    contender: Contender
    runs: list[Run] = field(default_factory=list)
    failure: str | None = None   # the contender failed on this input (a finding, not a bug here)
    skipped: str | None = None   # not run on this input, and why

    @property
    def median_seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def throughput_mb_s(self) -> float:
        """MB/s (10^6 bytes) of vmcore file read, from the median wall time."""
        return self.bench_input.file_bytes / self.median_seconds / 1e6

    @property
    def output_bytes(self) -> int:
        return int(statistics.median(run.output_bytes for run in self.runs))

    @property
    def max_rss_bytes(self) -> int:
        return max(run.max_rss_bytes for run in self.runs)

    def median_phase(self, name: str) -> float | None:
        values = [run.phases[name] for run in self.runs if name in run.phases]
        return statistics.median(values) if values else None


class ContenderFailed(Exception):
    pass


def run_once(contender: Contender, vmcore: Path, out: Path, log: Path) -> Run:
    """One run, the output deleted afterwards; ContenderFailed with the first error line on failure.

    Peak RSS comes from GNU time, not from our own wait4: Linux carries the RSS high-water mark of
    the process image replaced by execve into ru_maxrss, and a child forked (or vforked) from this
    Python process starts with the parent's RSS, so every contender would report at least ours.
    GNU time is a small C program (~2 MiB), it execs the contender directly (no shell).
    """
    out.unlink(missing_ok=True)  # makedumpfile refuses to overwrite
    rss_file = log.with_suffix(".rss")
    # Under `./dev test`'s pure-Python pass the variable is set: only contenders that ask get it.
    # Bytecode is cached (run.py primes it with one untimed run) even where PYTHONDONTWRITEBYTECODE is set:
    # an installed vmcore-save has its .pyc files, and compiling every module costs ~0.2-0.3 s a run.
    env = {name: value for name, value in os.environ.items()
           if name not in (PURE_PYTHON_ENV, "PYTHONDONTWRITEBYTECODE")}
    env |= {"PYTHONPYCACHEPREFIX": str(PYCACHE_DIR)} | contender.env
    argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *contender.command(vmcore, out)]
    with open(log, "wb") as stderr:
        started = time.monotonic()
        returncode = subprocess.run(argv, stdout=stderr, stderr=stderr, env=env, cwd=REPO, check=False).returncode
        seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    try:
        if returncode != 0:
            raise ContenderFailed(_failure_reason(text, returncode))
        output_bytes = out.stat().st_size
    finally:
        out.unlink(missing_ok=True)
    max_rss_kib = int(rss_file.read_text().split()[-1])
    return Run(seconds, output_bytes, max_rss_kib * 1024, parse_phases(text))


def parse_phases(stderr_text: str) -> dict[str, float]:
    """vmcore-save's per-phase seconds from its summary's time line, and its total."""
    match = _SUMMARY_TIME.search(stderr_text)
    if not match:
        return {}
    phases = {}
    for part in match.group(1).split(", "):
        if phase := _PHASE.match(part):
            phases[phase.group(1)] = float(phase.group(2))
        elif total := _TOTAL.match(part):
            phases["total"] = float(total.group(1))
    return phases


def _failure_reason(stderr_text: str, returncode: int) -> str:
    # makedumpfile redraws its progress with \r and ends with "makedumpfile Failed.": the
    # first error line says why.
    lines = [line.strip() for line in re.split(r"[\r\n]", stderr_text) if line.strip()]
    meaningful = [line for line in lines if "%]" not in line and not line.endswith("Failed.")]
    reason = meaningful[0] if meaningful else f"exit status {returncode}"
    return f"{reason} (exit {returncode})"
