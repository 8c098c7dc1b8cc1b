"""vmcore-save against makedumpfile on the same vmcores, judged against issue 13's goals.

    .venv/bin/python -m benchmarks.run [--quick] [--repeat N] [--out DIR]

Writes DIR/RESULTS.md (default benchmarks/results) and DIR/vs_makedumpfile.png. Every timed run
starts with its input warmed into the page cache and writes to a tmpfs (--scratch, default
/dev/shm); the output is deleted after each run. Real vmcores: median of 5 runs. --quick (CI): the
real 512 MiB vmcore and a synthetic 256 MiB one, best of 1, fewer contenders, and no verdicts.
A full run also has issue 15's arm64 row: the test bed's arm64 vmcore, vmcore-save's size and
time, Debian's arm64 makedumpfile (under qemu-user) for its size.
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

from collector import fastcopy
from collector.pipeline.compression import DEFAULT_LEVEL, FAST_LEVEL

from . import report
from .capture_env import run_capture_benchmark
from .compression_cost import measure_compression_cost
from .contenders import (
    Contender,
    all_contenders,
    arm64_makedumpfiles,
    makedumpfile_version,
    reference_makedumpfile,
    supports_zstd,
)
from .hashing_cost import measure_hashing_cost
from .inputs import (
    CACHE_DIR,
    CONTENT_PAGES,
    GIB,
    PERIOD_PAGES,
    BenchInput,
    arm64_input,
    free_bytes,
    real_input,
    synthetic_input,
    warm,
)
from .measure import ContenderFailed, Measurement, run_once
from .scanner import run_scanner_benchmark
from .ssh_throughput import SshFigures, run_ssh_benchmark

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEFAULT_REPEAT = 5
# Real vmcores of the test bed: (kernel series, guest MiB). The 512 MiB one is --quick's.
REAL_INPUTS = (("6.1", 1024), ("6.1", 4096), ("7.2", 1024))
QUICK_REAL = ("6.1", 512)
SYNTHETIC_GIB = (1, 4, 16, 64)
QUICK_SYNTHETIC_BYTES = 256 << 20
SSH_MIB, SSH_QUICK_MIB = 256, 32
# Free space kept on the cache's disk beyond a synthetic vmcore's non-zero pages.
DISK_MARGIN_BYTES = 4 * GIB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, 1 run, fewer contenders, no verdicts")
    parser.add_argument("--repeat", type=int, help=f"timed runs per contender and real input (default "
                        f"{DEFAULT_REPEAT}; --quick 1); fewer than {DEFAULT_REPEAT}: no verdicts")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where RESULTS.md goes (default {DEFAULT_OUT})")
    parser.add_argument("--scratch", type=Path, default=Path("/dev/shm"),
                        help="where contenders write their output, a tmpfs (default /dev/shm)")
    parser.add_argument("--max-synthetic-gib", type=int, default=SYNTHETIC_GIB[-1], metavar="N",
                        help=f"largest synthetic vmcore, GiB (default {SYNTHETIC_GIB[-1]}; 0: none)")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help=f"synthetic vmcores (default {CACHE_DIR})")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else DEFAULT_REPEAT)
    judged = not args.quick and repeat >= DEFAULT_REPEAT
    load_before = os.getloadavg()
    notes: list[str] = []

    makedumpfile, why = reference_makedumpfile()
    version = makedumpfile_version(makedumpfile) if makedumpfile else ""
    zstd = supports_zstd(version)
    if makedumpfile and not zstd:
        notes.append(f"{makedumpfile} has no zstd: its -z rows are skipped (issue 13 races the zstd build in "
                     "../shared/tools, or any makedumpfile named by $VMCORE_BENCH_MAKEDUMPFILE)")
    contenders = [c for c in all_contenders(makedumpfile, zstd) if c.in_quick or not args.quick]
    if not args.quick:
        contenders += arm64_makedumpfiles()

    _log("preparing inputs")
    inputs = _inputs(args.quick, args.cache, args.max_synthetic_gib, notes)
    real = [i for i in inputs if i.kind == "real"]
    largest_real = max(real, key=lambda i: i.memory_bytes)
    context = report.Context(
        title="vmcore-save vs makedumpfile" + (" (--quick)" if args.quick else ""), judged=judged,
        machine=_machine(), versions=_versions(makedumpfile, why, version),
        setup_notes=_setup_notes(repeat, args.scratch), notes=notes,
        load=[f"- Load average (1, 5, 15 min) at the start: {_load(load_before)}"])
    results = report.Results(inputs, [])
    others = OtherCpu()
    with tempfile.TemporaryDirectory(prefix="vmcore-bench-", dir=args.scratch) as scratch:
        _prime_bytecode(contenders[0], real[0], Path(scratch))
        for bench_input in inputs:
            for contender in (c for c in contenders if c.runs_on_input(bench_input, bench_input is largest_real)):
                runs = 1 if contender.sweep or contender.size_only or bench_input.kind == "synthetic" else repeat
                results.measurements.append(_measure(contender, bench_input, Path(scratch), runs))
            if bench_input.kind == "real":  # right after its wall times: the same machine conditions
                _compression_costs(bench_input, repeat, results)
                _hashing_costs(bench_input, Path(scratch), repeat, results)
            _log(f"{bench_input.name} done; load average {_load(os.getloadavg())}; everything else has used "
                 f"{others.seconds():.0f} CPU-seconds so far")
            report.write_report(args.out, context, results)  # partial results survive a stop
    context.load.append(f"- Timed runs, compression and hashing costs ({others.wall():.0f} s): everything else on "
                        f"the machine (other users, kernel threads) used {others.seconds():.0f} CPU-seconds, "
                        f"{others.seconds() / others.wall():.2f} cores on average; load average at their end "
                        f"{_load(os.getloadavg())}, this suite's own processes included")
    _log(f"struct page scan on {largest_real.name}")
    warm(largest_real)
    results.scanner = run_scanner_benchmark(largest_real.path, 1 if args.quick else 3, 1)
    results.scanner_input = largest_real.name
    results.ssh = _ssh_figures(args.quick, notes)
    if args.quick:
        notes.append("Capture environment (initramfs size, capture-kernel memory): not measured with --quick "
                     "(one QEMU crash, ~1 min; tests/test_e2e.py runs the same captures).")
    else:
        _log("capture environment: one automatic capture in QEMU")
        results.capture = run_capture_benchmark()
    context.load.append(f"- Load average at the end: {_load(os.getloadavg())} ({os.cpu_count()} cores)")
    path = report.write_report(args.out, context, results)
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
    if quick:
        real_512 = real_input(*QUICK_REAL)
        return [real_512, synthetic_input(QUICK_SYNTHETIC_BYTES, real_512.path, cache)]
    inputs = []
    for kernel, mib in REAL_INPUTS:
        try:
            inputs.append(real_input(kernel, mib))
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:  # the notes say why
            notes.append(f"real {kernel} {mib} MiB kdump vmcore skipped: the test bed could not provide it ({e})")
    content_source = inputs[0].path
    try:
        inputs.append(arm64_input())
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
        notes.append(f"arm64 vmcore skipped: the test bed could not provide it ({e})")
    for gib in (gib for gib in SYNTHETIC_GIB if gib <= max_synthetic_gib):
        cached = cache / f"synthetic-{gib << 10}M.vmcore"
        needed = gib * GIB * CONTENT_PAGES // PERIOD_PAGES + DISK_MARGIN_BYTES
        cache.mkdir(parents=True, exist_ok=True)
        if not cached.exists() and free_bytes(cache) < needed:
            notes.append(f"synthetic {gib} GiB skipped: {free_bytes(cache) / 1e9:.1f} GB free on {cache}, "
                         f"{needed / 1e9:.1f} GB needed")
            continue
        _log(f"synthetic {gib} GiB vmcore")
        inputs.append(synthetic_input(gib * GIB, content_source, cache))
    return inputs


def _compression_costs(bench_input: BenchInput, repeat: int, results: report.Results) -> None:
    """zstd 1 at -d 31 and -d 1, and --fast's level at -d 31, over the pages the dump stores."""
    for dump_level, level in ((31, DEFAULT_LEVEL), (1, DEFAULT_LEVEL), (31, FAST_LEVEL)):
        warm(bench_input)
        cost = measure_compression_cost(bench_input.path, dump_level, repeat, level)
        results.costs[bench_input.name, dump_level, level] = cost
        _log(f"{bench_input.name}: zstd {level} alone at -d {dump_level}: {cost.us_per_page:.2f} µs/page x "
             f"{cost.pages} pages = {cost.seconds:.2f} s")


def _hashing_costs(bench_input: BenchInput, scratch: Path, repeat: int, results: report.Results) -> None:
    """The same one-thread dump without and with the manifest's hashing, at -d 31 and -d 1."""
    for dump_level in report.LEVELS:
        warm(bench_input)
        cost = measure_hashing_cost(bench_input.path, scratch, dump_level, repeat)
        results.hashing[bench_input.name, dump_level] = cost
        low, high = cost.same_ratios
        _log(f"{bench_input.name}: -d {dump_level} without / with the manifest's hashing: "
             f"{cost.plain.wall_seconds:.2f} / {cost.hashed.wall_seconds:.2f} s ({cost.ratio:.3f}x; A/A "
             f"{low:.3f}-{high:.3f}x), CPU {cost.cpu_seconds:+.2f} s")


class OtherCpu:
    """CPU time the rest of the machine used since creation: all busy time (/proc/stat) less
    this process's and its waited-for children's (every contender is one)."""

    def __init__(self) -> None:
        self.started, self.busy, self.ours = time.monotonic(), _busy_seconds(), _our_seconds()

    def wall(self) -> float:
        return time.monotonic() - self.started

    def seconds(self) -> float:
        return max(0.0, _busy_seconds() - self.busy - (_our_seconds() - self.ours))


def _busy_seconds() -> float:
    # cpu  user nice system idle iowait irq softirq steal ...: steal is the hypervisor's, not this machine's
    user, nice, system, _, _, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _our_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _prime_bytecode(contender: Contender, bench_input: BenchInput, scratch: Path) -> None:
    """One untimed run, so that no timed run compiles vmcore-save's modules to bytecode."""
    try:
        run_once(contender, bench_input.path, scratch / "out", scratch / "stderr.log")
    except ContenderFailed as e:
        _log(f"untimed first run failed: {e}")


def _measure(contender: Contender, bench_input: BenchInput, scratch: Path, runs: int) -> Measurement:
    measurement = Measurement(bench_input, contender)
    measurement.skipped = contender.unavailable
    if measurement.skipped:
        return measurement
    out, log = scratch / "out", scratch / "stderr.log"
    try:
        for _ in range(runs):
            warm(bench_input)
            measurement.runs.append(run_once(contender, bench_input.path, out, log))
    except ContenderFailed as e:
        measurement.failure, measurement.runs = str(e), []
    _log(f"{bench_input.name}: {contender.name}: " + (
        f"FAILED {measurement.failure}" if measurement.failure else
        f"{measurement.median_seconds:.2f} s, {measurement.output_bytes / 2**20:.1f} MiB, "
        f"RSS {measurement.max_rss_bytes / 2**20:.1f} MiB"))
    return measurement


def _machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return [f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"- Machine: {platform.node()}, {cpu}, {os.cpu_count()} cores, RAM {ram / GIB:.1f} GiB; "
            f"kernel {platform.release()}; {_os_name()}"]


def _versions(makedumpfile: str | None, why: str, version: str) -> list[str]:
    from importlib.metadata import version as package_version

    scanner = "compiled" if fastcopy.COMPILED else "pure-Python"
    lines = [f"- vmcore-save {package_version('vmcore-collector')} ({scanner} scanner), "
             f"Python {platform.python_version()}"]
    if makedumpfile:
        lines.append(f"- makedumpfile raced: {makedumpfile}, {why}: "
                     f"{' / '.join(line.strip() for line in version.splitlines() if line.strip())}")
    else:
        lines.append(f"- makedumpfile raced: {why}")
    return lines


def _setup_notes(repeat: int, scratch: Path) -> list[str]:
    scratch_fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(scratch)],
                                capture_output=True, text=True, check=False).stdout.split("\n")[0].strip() or "unknown"
    return [
        f"- Real vmcores: median of {repeat} timed run(s) per contender; goal 3's level sweep: one run a level; "
        "synthetic vmcores (the memory goal): one run. Before every timed run the input is warmed into the "
        "page cache: `cat vmcore > /dev/null` for a real one, only the data extents of a sparse synthetic one.",
        "- Every contender runs on every real vmcore, except 3 and 4 threads (the largest one only); the synthetic "
        "vmcores (no VMCOREINFO: makedumpfile refuses them above -d 1) run vmcore-save -d 31 at 1 and 2 threads only.",
        "- The arm64 vmcore (issue 15) runs vmcore-save -d 31 and -d 1 at one thread, and Debian's arm64 "
        "makedumpfile 1.7.2 under qemu-user (an emulated CPU: no speed race), one run each, for its output size.",
        f"- Every contender writes its output to {scratch} ({scratch_fs}), deleted after each run; "
        "vmcore-save with --output FILE (kdump format), makedumpfile to its output file.",
        "- Wall time is from exec to exit, under /usr/bin/time (which measures peak RSS), so it includes each "
        "program's start-up (vmcore-save: the interpreter and its imports, bytecode cached by one untimed run "
        "before the timed ones).",
        "- vmcore-save runs without -q (its summary holds the phase times); progress lines are at most once a second.",
        "- Compression cost: in process, PageEncoder(zstd level 1) over exactly the pages the dump stores "
        "(non-zero dumpable pages, found by the classifier and the page pipeline), right after the input's timed "
        "runs, best of as many repetitions as timed runs.",
        f"- Integrity manifest's cost: in process, after the compression costs, the same one-thread zstd 1 dump "
        f"written to {scratch} without the manifest's hashing (as --output writes it) and with it (the save "
        "job's HashingFile, the manifest made at the end, as in every dump directory): as many rounds as timed "
        "runs, each two dumps without and one with in a shuffled order; medians of the rounds, and the two "
        "without against each other (A/A) for the noise; CPU: the process's, the hashing thread's included.",
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
