"""vmcore-save against makedumpfile on the same vmcores: time, throughput, output size, peak RSS.

    .venv/bin/python -m benchmarks.run [--quick] [--repeat N] [--out DIR]

Writes DIR/RESULTS.md (default benchmarks/results) and DIR/throughput_rss.png. Every contender
runs once untimed on each input (page cache warm), then N timed runs, all from the page cache;
outputs go to a tmpfs (--scratch, default /dev/shm) and are deleted after each run. --quick:
a synthetic 256 MiB vmcore and the real 512 MiB one, 1 run, fewer contenders (for CI).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from collector import fastcopy

from . import report
from .capture_env import run_capture_benchmark
from .contenders import (Contender, all_contenders, makedumpfile_version, makedumpfiles_on_path,
                         supports_zstd)
from .inputs import CACHE_DIR, CONTENT_PAGES, GIB, PERIOD_PAGES, BenchInput, free_bytes, real_input, synthetic_input
from .measure import ContenderFailed, Measurement, run_once
from .scanner import run_scanner_benchmark
from .ssh_throughput import SshFigures, run_ssh_benchmark

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
SYNTHETIC_GIB = (1, 4, 16, 64)
QUICK_SYNTHETIC_BYTES = 256 << 20
SSH_MIB, SSH_QUICK_MIB = 256, 32
# Free space kept on the cache's disk beyond a synthetic vmcore's non-zero pages.
DISK_MARGIN_BYTES = 4 * GIB
LIMITS_NOTE = (
    "Skipped rows, to keep the full run near half an hour on 2 cores: the pure-Python scanner only on "
    "inputs up to 1 GiB; `cat > out` only up to 4 GiB (its output must fit the tmpfs); the zlib contenders "
    "(makedumpfile -c, vmcore-save zlib) only up to 4 GiB (~30 MB/s of non-zero data: minutes per run "
    "on 16/64 GiB); on synthetic vmcores vmcore-save -d 1 only up to 16 GiB (-d 31 is the same work "
    "there).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs, 1 run, fewer contenders (< 2 min)")
    parser.add_argument("--repeat", type=int, help="timed runs per contender and input (default 3; --quick 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where RESULTS.md goes (default {DEFAULT_OUT})")
    parser.add_argument("--scratch", type=Path, default=Path("/dev/shm"),
                        help="where contenders write their output, a tmpfs (default /dev/shm)")
    parser.add_argument("--max-synthetic-gib", type=int, default=SYNTHETIC_GIB[-1], metavar="N",
                        help=f"largest synthetic vmcore, GiB (default {SYNTHETIC_GIB[-1]}; 0: none)")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help=f"synthetic vmcores (default {CACHE_DIR})")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    load_before = os.getloadavg()
    notes: list[str] = []

    makedumpfiles = {path: makedumpfile_version(path) for path in makedumpfiles_on_path()}
    zstd_makedumpfiles = [path for path, version in makedumpfiles.items() if supports_zstd(version)]
    if not zstd_makedumpfiles:
        notes.append("makedumpfile with zstd (-z): not available (no makedumpfile on PATH whose -v says "
                     "`zstd enabled`; Debian 12's 1.7.2 has it disabled)")
    contenders = [c for c in all_contenders(zstd_makedumpfiles) if c.in_quick or not args.quick]
    if not args.quick:
        notes.append(LIMITS_NOTE)

    _log("preparing inputs")
    inputs = _inputs(args.quick, args.cache, args.max_synthetic_gib, notes)
    measurements: list[Measurement] = []
    context = report.Context(
        title="vmcore-save vs makedumpfile" + (" (--quick)" if args.quick else ""),
        machine=_machine(), versions=_versions(makedumpfiles), setup_notes=_setup_notes(repeat, args.scratch),
        notes=notes)
    with tempfile.TemporaryDirectory(prefix="vmcore-bench-", dir=args.scratch) as scratch:
        for bench_input in inputs:
            for contender in contenders:
                measurements.append(_measure(contender, bench_input, Path(scratch), repeat))
            report.write_report(args.out, context, inputs, measurements, [])  # partial results survive a stop

    scanner_vmcore = next(i for i in reversed(inputs) if i.kind == "real" and "kdump" in i.name and i.file_bytes < 2 * GIB)
    _log(f"scanner micro-benchmark on {scanner_vmcore.name}")
    scanner_results = run_scanner_benchmark(scanner_vmcore.path, 1 if args.quick else 3)
    ssh = _ssh_figures(args.quick, notes)
    capture = None
    if args.quick:
        notes.append("Capture environment (initramfs size, capture-kernel memory): not measured with --quick "
                     "(one QEMU crash, ~1 min; tests/test_e2e.py runs the same captures).")
    else:
        _log("capture environment: one automatic capture in QEMU")
        capture = run_capture_benchmark()
    load_after = os.getloadavg()
    context.machine.append(f"- Load average (1, 5, 15 min): {_load(load_before)} at the start, "
                           f"{_load(load_after)} at the end (2 cores; other engineers' QEMU jobs share the machine)")
    path = report.write_report(args.out, context, inputs, measurements, scanner_results, ssh, capture)
    _log(f"wrote {path}")
    return 0


def _ssh_figures(quick: bool, notes: list[str]) -> SshFigures | None:
    if os.geteuid() != 0 or not shutil.which("sshd", path="/usr/sbin:/usr/bin"):
        notes.append("SSH throughput: not measured (needs root and OpenSSH's sshd: ./dev setup)")
        return None
    mib, runs = (SSH_QUICK_MIB, 1) if quick else (SSH_MIB, 3)
    _log(f"SSH throughput: {mib} MiB over loopback, best of {runs}")
    return run_ssh_benchmark(mib, runs)


def _inputs(quick: bool, cache: Path, max_synthetic_gib: int, notes: list[str]) -> list[BenchInput]:
    real_512 = real_input(512, "kdump")
    if quick:
        return [synthetic_input(QUICK_SYNTHETIC_BYTES, real_512.path, cache), real_512]
    inputs = [real_512, real_input(1024, "kdump"), real_input(4096, "qmp")]
    for gib in (gib for gib in SYNTHETIC_GIB if gib <= max_synthetic_gib):
        cached = cache / f"synthetic-{gib << 10}M.vmcore"
        needed = gib * GIB * CONTENT_PAGES // PERIOD_PAGES + DISK_MARGIN_BYTES
        cache.mkdir(parents=True, exist_ok=True)
        if not cached.exists() and free_bytes(cache) < needed:
            notes.append(f"synthetic {gib} GiB skipped: {free_bytes(cache) / 1e9:.1f} GB free on {cache}, "
                         f"{needed / 1e9:.1f} GB needed")
            continue
        _log(f"synthetic {gib} GiB vmcore")
        inputs.append(synthetic_input(gib * GIB, real_512.path, cache))
    return inputs


def _measure(contender: Contender, bench_input: BenchInput, scratch: Path, repeat: int) -> Measurement:
    measurement = Measurement(bench_input, contender)
    measurement.skipped = contender.skip_reason(bench_input)
    if measurement.skipped:
        return measurement
    out, log = scratch / "out", scratch / "stderr.log"
    try:
        run_once(contender, bench_input.path, out, log)  # untimed: warms the page cache
        for _ in range(repeat):
            measurement.runs.append(run_once(contender, bench_input.path, out, log))
    except ContenderFailed as e:
        measurement.failure, measurement.runs = str(e), []
    _log(f"{bench_input.name}: {contender.name}: " + (
        f"FAILED {measurement.failure}" if measurement.failure else
        f"{measurement.median_seconds:.2f} s, {measurement.throughput_mb_s:.0f} MB/s, "
        f"{measurement.output_bytes / 2**20:.1f} MiB, RSS {measurement.max_rss_bytes / 2**20:.1f} MiB"))
    return measurement


def _machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return [f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {ram / GIB:.1f} GiB; kernel {platform.release()}; "
            f"{_os_name()}"]


def _versions(makedumpfiles: dict[str, str]) -> list[str]:
    from importlib.metadata import version

    zstd_cli = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [f"- vmcore-save {version('vmcore-collector')} ({'compiled' if fastcopy.COMPILED else 'pure-Python'} "
             f"scanner), Python {platform.python_version()}, python-zstandard {zstandard.__version__} "
             f"(libzstd {zstandard.ZSTD_VERSION[0]}.{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]})",
             f"- zstd CLI: {zstd_cli}"]
    for path, text in makedumpfiles.items():
        lines.append(f"- {path}: {' / '.join(line.strip() for line in text.splitlines() if line.strip())}")
    return lines


def _setup_notes(repeat: int, scratch: Path) -> list[str]:
    scratch_fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(scratch)],
                                capture_output=True, text=True).stdout.split("\n")[0].strip() or "unknown"
    return [
        f"- Each contender runs once untimed on each input (warms the page cache), then {repeat} timed "
        "run(s); the real vmcores and the non-zero pages of the synthetic ones are read from the page cache. "
        "File holes have no blocks to read; the kernel zero-fills page-cache pages for them, for every contender.",
        f"- Every contender writes its output to {scratch} ({scratch_fs}), deleted after each run; "
        "vmcore-save with --output FILE (kdump format, no fsync cost on tmpfs), makedumpfile to its output "
        "file, cat and zstd to stdout redirected to the file (no shell: the child is measured alone).",
        "- Wall time is from starting the contender (under /usr/bin/time, which measures peak RSS) to its "
        "exit, so it includes each program's start-up (vmcore-save: the interpreter and its imports, "
        "~0.1-0.2 s, with bytecode cached by the warm-up run even if PYTHONDONTWRITEBYTECODE is set).",
        "- vmcore-save runs without -q (its summary holds the phase times); progress lines are at most once a second.",
    ]


def _os_name() -> str:
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"')
    except OSError:
        return platform.system()


def _load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in load)


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
