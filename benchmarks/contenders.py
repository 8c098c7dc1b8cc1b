"""The programs compared, each one command line on one input, writing one output file.

The makedumpfile raced is one binary: $VMCORE_BENCH_MAKEDUMPFILE if set, else the zstd build in
../shared/tools (issue 13's reference: upstream 1.7.9 with zstd, lzo and snappy) when present,
else Debian's (1.7.2: no zstd, so its -z rows are skipped, saying why).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from collector.pipeline.compression import FAST_LEVEL

from .inputs import BenchInput

MAKEDUMPFILE_ENV = "VMCORE_BENCH_MAKEDUMPFILE"
SHARED_MAKEDUMPFILE = Path(__file__).resolve().parent.parent.parent / "shared" / "tools" / "makedumpfile"
DEBIAN_MAKEDUMPFILES = ("/usr/sbin/makedumpfile", "/usr/bin/makedumpfile")
PURE_PYTHON_ENV = "VMCORE_COLLECTOR_PURE_PYTHON"
# Goal 3's sweep: zstd's negative levels, at the machine's thread count, -d 31, one run each.
SWEEP_LEVELS = (-1, -3, -5, -7, -10, -15, -20)
SWEEP_THREADS = 2
# Goal 2's scaling curve, on the largest real input only.
SCALING_THREADS = (1, 2, 3, 4)

# Where a contender runs: every real vmcore, the largest real one only, the synthetic ones
# (which only serve the memory goal: vmcore-save at -d 31, 1 and 2 threads), or the test bed's
# arm64 vmcore (issue 15: vmcore-save at one thread; Debian's arm64 makedumpfile under qemu-user,
# an emulated CPU, for its output size only).
REAL, LARGEST_REAL, SYNTHETIC, ARM64 = "real", "largest real", "synthetic", "arm64"


@dataclass(frozen=True)
class Contender:
    name: str                  # row label
    family: str                # "vmcore-save" or "makedumpfile"
    argv: tuple[str, ...]      # with {vmcore} and {out} placeholders
    dump_level: int
    threads: int = 1
    compression: str = "zstd"
    level: int | None = None   # vmcore-save's zstd level (None: 1, as makedumpfile -z)
    runs_on: frozenset[str] = frozenset({REAL})
    in_quick: bool = False     # part of the --quick set
    sweep: bool = False        # goal 3's level sweep: one timed run
    size_only: bool = False    # one run, for its output size: its time is no race (qemu-user)
    unavailable: str | None = None  # why it cannot run at all (makedumpfile built without zstd)
    env: dict[str, str] = field(default_factory=dict)

    def command(self, vmcore: Path, out: Path) -> list[str]:
        return [arg.format(vmcore=vmcore, out=out) for arg in self.argv]

    def runs_on_input(self, bench_input: BenchInput, largest_real: bool) -> bool:
        """Whether this input is one of the contender's (see runs_on)."""
        if bench_input.kind in (SYNTHETIC, ARM64):
            return bench_input.kind in self.runs_on
        return REAL in self.runs_on or (LARGEST_REAL in self.runs_on and largest_real)


def vmcore_save_name(dump_level: int, threads: int, level: int | None = None, fast: bool = False) -> str:
    if fast:
        return f"vmcore-save --fast -d {dump_level} t{threads}"
    return f"vmcore-save -d {dump_level} zstd{'' if level is None else f' {level}'} t{threads}"


def _vmcore_save(dump_level: int, threads: int, level: int | None = None, fast: bool = False,
                 runs_on: frozenset[str] = frozenset({REAL}), in_quick: bool = False,
                 sweep: bool = False) -> Contender:
    argv = [sys.executable, "-m", "collector", "-d", str(dump_level), "--threads", str(threads)]
    argv += ["--fast"] if fast else ["--compress", "zstd"] + ([] if level is None else [f"--level={level}"])
    return Contender(vmcore_save_name(dump_level, threads, level, fast), "vmcore-save",
                     (*argv, "--output", "{out}", "{vmcore}"), dump_level, threads,
                     level=FAST_LEVEL if fast else level, runs_on=runs_on, in_quick=in_quick, sweep=sweep)


def makedumpfile_name(flag: str, dump_level: int, threads: int = 1) -> str:
    return f"makedumpfile {flag}{f' --num-threads {threads}' if threads > 1 else ''} -d {dump_level}"


def _makedumpfile(path: str, zstd: bool, flag: str, dump_level: int, compression: str, threads: int = 1,
                  in_quick: bool = False) -> Contender:
    extra = ("--num-threads", str(threads)) if threads > 1 else ()
    unavailable = None
    if compression == "zstd" and not zstd:
        unavailable = (f"{path} has no zstd (`makedumpfile -v`: zstd disabled); "
                       f"name one built with zstd in ${MAKEDUMPFILE_ENV}")
    return Contender(makedumpfile_name(flag, dump_level, threads), "makedumpfile",
                     (path, flag, *extra, "-d", str(dump_level), "{vmcore}", "{out}"), dump_level, threads,
                     compression, in_quick=in_quick, unavailable=unavailable)


def all_contenders(makedumpfile: str | None, zstd: bool) -> list[Contender]:
    """Every contender in table order (makedumpfile None: vmcore-save's only)."""
    both = frozenset({REAL, SYNTHETIC})
    contenders = [
        _vmcore_save(31, 1, runs_on=both | {ARM64}, in_quick=True),
        _vmcore_save(31, 2, runs_on=both, in_quick=True),
        *(_vmcore_save(31, threads, runs_on=frozenset({LARGEST_REAL})) for threads in SCALING_THREADS[2:]),
        _vmcore_save(1, 1, runs_on=frozenset({REAL, ARM64}), in_quick=True),
        _vmcore_save(1, 2, in_quick=True),
        _vmcore_save(31, 1, fast=True),
        _vmcore_save(31, SWEEP_THREADS, fast=True, in_quick=True),
        *(_vmcore_save(31, SWEEP_THREADS, level, sweep=True) for level in SWEEP_LEVELS),
    ]
    if makedumpfile:
        contenders += [
            _makedumpfile(makedumpfile, zstd, "-z", 31, "zstd", in_quick=True),
            _makedumpfile(makedumpfile, zstd, "-z", 1, "zstd", in_quick=True),
            _makedumpfile(makedumpfile, zstd, "-l", 31, "lzo", in_quick=True),
            _makedumpfile(makedumpfile, zstd, "-l", 1, "lzo"),
            _makedumpfile(makedumpfile, zstd, "-c", 31, "zlib"),
            _makedumpfile(makedumpfile, zstd, "-z", 31, "zstd", threads=2),
        ]
    return contenders


def arm64_makedumpfile_name(flag: str, dump_level: int) -> str:
    return f"arm64 makedumpfile {flag} -d {dump_level} (qemu-user)"


def arm64_makedumpfiles() -> list[Contender]:
    """Debian's arm64 makedumpfile 1.7.2 (no zstd: zlib and lzo) at -d 31 and -d 1, one run
    each for the output size; unavailable, saying why, where the test bed cannot run it."""
    from tests.testbed import TestbedError, arm64  # only here: it pulls in the QEMU test bed

    try:
        prefix, unavailable = arm64.makedumpfile(), None
    except (TestbedError, OSError, subprocess.SubprocessError) as e:
        prefix, unavailable = ["makedumpfile"], f"arm64 makedumpfile not available: {e}"
    return [Contender(arm64_makedumpfile_name(flag, level), "makedumpfile",
                      (*prefix, flag, "-d", str(level), "{vmcore}", "{out}"), level, 1, compression,
                      runs_on=frozenset({ARM64}), size_only=True, unavailable=unavailable)
            for level in (31, 1) for flag, compression in (("-c", "zlib"), ("-l", "lzo"))]


def reference_makedumpfile() -> tuple[str | None, str]:
    """The makedumpfile to race and why that one: (path or None, one line)."""
    chosen = os.environ.get(MAKEDUMPFILE_ENV)
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise SystemExit(f"{MAKEDUMPFILE_ENV}={chosen}: not an executable; unset it or name a makedumpfile")
        return chosen, f"from ${MAKEDUMPFILE_ENV}"
    if os.access(SHARED_MAKEDUMPFILE, os.X_OK):
        return str(SHARED_MAKEDUMPFILE), "the zstd build in ../shared/tools (issue 13's reference)"
    for path in DEBIAN_MAKEDUMPFILES:
        if os.access(path, os.X_OK):
            return path, f"Debian's (no {SHARED_MAKEDUMPFILE} and no ${MAKEDUMPFILE_ENV})"
    return None, f"none found (no {SHARED_MAKEDUMPFILE}, no ${MAKEDUMPFILE_ENV}, no Debian makedumpfile: ./dev setup)"


def makedumpfile_version(path: str) -> str:
    """`makedumpfile -v`, whole (it lists the compressions built in)."""
    result = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).strip()


def supports_zstd(version_text: str) -> bool:
    return re.search(r"^zstd\s+enabled", version_text, re.MULTILINE) is not None
