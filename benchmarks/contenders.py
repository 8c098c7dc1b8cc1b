"""The programs compared, each one command line on one input, writing one output file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import BenchInput

GB = 10**9
PURE_PYTHON_ENV = "VMCORE_COLLECTOR_PURE_PYTHON"
# Pure-Python runs only on inputs up to this file size: the twin is the slow reference.
PURE_PYTHON_MAX_BYTES = int(1.1 * GB)
# `cat > out` writes the whole input to the scratch tmpfs: only inputs that fit beside the rest.
CAT_MAX_BYTES = int(4.5 * GB)
# zlib runs at ~30 MB/s of non-zero data: on the 16 and 64 GiB synthetic vmcores a single run
# would take minutes, and both contenders' zlib rows on 1 and 4 GiB already give the ratio.
ZLIB_MAX_BYTES = int(4.5 * GB)
# The -d 1 runs of vmcore-save on synthetic vmcores up to 16 GiB pair with makedumpfile -d 1
# (makedumpfile cannot do -d 31 there); beyond that -d 31 (the same work) stands for both.
SYNTHETIC_D1_MAX_BYTES = int(17.2 * GB)


@dataclass(frozen=True)
class Contender:
    name: str                  # row label
    family: str                # "vmcore-save", "makedumpfile" or "reference"
    argv: tuple[str, ...]      # with {vmcore} and {out} placeholders
    dump_level: int | None = None
    threads: int = 1
    compression: str = ""
    env: dict[str, str] = field(default_factory=dict)
    stdout_to_out: bool = False  # cat and zstd write the output on stdout
    max_file_bytes: int | None = None
    synthetic_max_file_bytes: int | None = None
    in_quick: bool = False       # part of the --quick set
    needs_vmcoreinfo: bool = False  # makedumpfile above -d 1


    def command(self, vmcore: Path, out: Path) -> list[str]:
        return [arg.format(vmcore=vmcore, out=out) for arg in self.argv]

    def skip_reason(self, bench_input: BenchInput) -> str | None:
        """Why this contender does not run on this input, or None."""
        if self.needs_vmcoreinfo and bench_input.kind == "synthetic":
            return "makedumpfile needs VMCOREINFO above -d 1; the synthetic vmcores have none"
        limits = [self.max_file_bytes]
        if bench_input.kind == "synthetic":
            limits.append(self.synthetic_max_file_bytes)
        if any(limit is not None and bench_input.file_bytes > limit for limit in limits):
            return "input too large for this contender (see Notes)"
        return None


def _vmcore_save(level: int, compression: str, threads: int, pure: bool = False, in_quick: bool = False,
                 max_file_bytes: int | None = None, synthetic_max_file_bytes: int | None = None) -> Contender:
    name = f"vmcore-save -d {level} {compression} t{threads}{' pure' if pure else ''}"
    return Contender(
        name, "vmcore-save",
        (sys.executable, "-m", "collector", "-d", str(level), "--compress", compression,
         "--threads", str(threads), "--output", "{out}", "{vmcore}"),
        level, threads, compression, {PURE_PYTHON_ENV: "1"} if pure else {}, in_quick=in_quick,
        max_file_bytes=PURE_PYTHON_MAX_BYTES if pure else max_file_bytes,
        synthetic_max_file_bytes=synthetic_max_file_bytes)


def _makedumpfile(path: str, flag: str, level: int, compression: str, in_quick: bool = False,
                  max_file_bytes: int | None = None) -> Contender:
    label = "makedumpfile" if path == "/usr/bin/makedumpfile" else path
    return Contender(f"{label} {flag} -d {level}", "makedumpfile", (path, flag, "-d", str(level), "{vmcore}", "{out}"),
                     level, 1, compression, in_quick=in_quick, max_file_bytes=max_file_bytes,
                     needs_vmcoreinfo=level > 1)


def all_contenders(zstd_makedumpfiles: list[str]) -> list[Contender]:
    """Every contender in table order; the synthetic-only limits keep the full run in time."""
    contenders = [
        _vmcore_save(31, "zstd", 1, in_quick=True),
        _vmcore_save(31, "zstd", 2, in_quick=True),
        _vmcore_save(1, "zstd", 1, in_quick=True, synthetic_max_file_bytes=SYNTHETIC_D1_MAX_BYTES),
        _vmcore_save(1, "zstd", 2, synthetic_max_file_bytes=SYNTHETIC_D1_MAX_BYTES),
        _vmcore_save(31, "zstd", 1, pure=True, in_quick=True),
        _vmcore_save(31, "zlib", 1, in_quick=True, max_file_bytes=ZLIB_MAX_BYTES),
        _makedumpfile("/usr/bin/makedumpfile", "-l", 31, "lzo", in_quick=True),
        _makedumpfile("/usr/bin/makedumpfile", "-c", 31, "zlib", in_quick=True, max_file_bytes=ZLIB_MAX_BYTES),
        _makedumpfile("/usr/bin/makedumpfile", "-l", 1, "lzo", in_quick=True),
        _makedumpfile("/usr/bin/makedumpfile", "-c", 1, "zlib", max_file_bytes=ZLIB_MAX_BYTES),
    ]
    for path in zstd_makedumpfiles:
        contenders += [_makedumpfile(path, "-z", 31, "zstd"), _makedumpfile(path, "-z", 1, "zstd")]
    contenders += [
        Contender("cat vmcore > out", "reference", ("cat", "{vmcore}"), stdout_to_out=True,
                  max_file_bytes=CAT_MAX_BYTES, in_quick=True),
        Contender("zstd -1 -T2 -c vmcore > out", "reference", ("zstd", "-q", "-1", "-T2", "-c", "{vmcore}"),
                  threads=2, compression="zstd", stdout_to_out=True, in_quick=True),
    ]
    return contenders


def makedumpfiles_on_path() -> list[str]:
    """Every distinct makedumpfile executable on PATH (and Debian's), first found first."""
    found: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/usr/sbin"]:
        candidate = os.path.join(directory, "makedumpfile")
        if os.access(candidate, os.X_OK) and os.path.realpath(candidate) not in map(os.path.realpath, found):
            found.append(candidate)
    return found


def makedumpfile_version(path: str) -> str:
    """`makedumpfile -v`, whole (it lists the compressions built in)."""
    result = subprocess.run([path, "-v"], capture_output=True, text=True)
    return (result.stdout + result.stderr).strip()


def supports_zstd(version_text: str) -> bool:
    return re.search(r"^zstd\s+enabled", version_text, re.MULTILINE) is not None
