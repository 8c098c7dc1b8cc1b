"""RESULTS.md (Markdown tables, pair ratios, targets) and the throughput / peak-RSS plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .inputs import GIB, BenchInput
from .measure import Measurement
from .capture_env import CaptureFigures
from .scanner import ScannerResult
from .ssh_throughput import SSH_TARGET_PERCENT, SshFigures

MIB = 1 << 20
RSS_LIMIT_BYTES = 64 * MIB
# "Flat" peak RSS: the largest synthetic input's at most this much above the smallest's.
RSS_FLAT_FACTOR = 1.2
# "Clearly ahead": at least this many times makedumpfile's best single-thread throughput.
CLEARLY_AHEAD_FACTOR = 1.2
SCANNER_TARGET_SPEEDUP = 10.0
PLOT_NAME = "throughput_rss.png"


@dataclass
class Context:
    """Everything the report says about the run besides the measurements."""

    title: str
    machine: list[str]          # "- CPU: ..." lines
    versions: list[str]
    setup_notes: list[str]
    notes: list[str]            # skips, unavailable contenders


def find(measurements: list[Measurement], bench_input: BenchInput, contender_name: str) -> Measurement | None:
    for m in measurements:
        if m.bench_input is bench_input and m.contender.name == contender_name and m.runs:
            return m
    return None


def write_report(out_dir: Path, context: Context, inputs: list[BenchInput], measurements: list[Measurement],
                 scanner_results: list[ScannerResult], ssh: SshFigures | None = None,
                 capture: CaptureFigures | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plotted = write_plot(out_dir / PLOT_NAME, inputs, measurements)
    lines = [f"# {context.title}", "", *context.machine, "", "Versions:", "", *context.versions, "",
             "## How it was measured", "", *context.setup_notes, "", "## Inputs", "",
             "| input | file size | on disk | what it exercises |", "|---|---:|---:|---|"]
    for i in inputs:
        lines.append(f"| {i.name} | {i.file_bytes / 1e9:.2f} GB | {_disk_usage(i.path) / 1e9:.2f} GB | {i.exercises} |")
    lines += ["", "## Results", "",
              "Wall time: median (min-max) of the timed runs. MB/s: vmcore file bytes (st_size, 10^6) per "
              "second of median wall time. Peak RSS: the contender's ru_maxrss as GNU time reports it (%M), "
              "largest of the runs. "
              "Phases: vmcore-save's own summary (median).", "",
              "| input | contender | wall s | MB/s | output MiB | peak RSS MiB | phases (s) |",
              "|---|---|---:|---:|---:|---:|---|"]
    for m in measurements:
        lines.append(_result_row(m))
    lines += ["", "## vmcore-save / makedumpfile, pair by pair", "",
              "Same input, same dump level. Speed = their wall time / ours (> 1: vmcore-save faster); "
              "size = our output / theirs (< 1: vmcore-save smaller).", "",
              "| input | vmcore-save | makedumpfile | speed ratio | size ratio |", "|---|---|---|---:|---:|"]
    lines += _pair_rows(inputs, measurements)
    if scanner_results:
        lines += ["", "## Page scanner: compiled vs pure-Python twin", "",
                  "In process, on one real vmcore; best of 3 (1 with --quick). dumpable_bitmap includes reading "
                  "the struct pages (the same Python code for both); clear_zero_pages times only the call.", "",
                  "| task | pages | compiled s | pure s | speed-up |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r.task} | {r.pages} | {r.compiled_seconds:.4f} | {r.pure_seconds:.3f} | {r.speedup:.1f}x |"
                  for r in scanner_results]
    if ssh:
        lines += ["", "## SSH target throughput", "",
                  f"{ssh.mib} MiB of random bytes to a throw-away sshd on 127.0.0.1, cipher {ssh.cipher}; best of the "
                  "runs; each time includes connecting and authenticating. The kdump pattern follows each 1 MiB of data with a small write further back (page "
                  "descriptors), which waits for the data's acknowledgements, as the kdump writer does.", "",
                  "| sender | MB/s | of ssh cat |", "|---|---:|---:|",
                  f"| ssh host 'cat > FILE' (OpenSSH client) | {ssh.ssh_cat_mb_s:.1f} | 100% |"]
        lines += [f"| {name} | {rate:.1f} | {100 * rate / ssh.ssh_cat_mb_s:.0f}% |"
                  for name, rate in ssh.target_rates()]
    if capture:
        memory = capture.memory_mib
        lines += ["", "## Capture environment", "",
                  f"One automatic capture in QEMU (TCG): Debian {capture.kernel}, {capture.guest_mib} MiB guest, "
                  f"crashkernel={capture.crashkernel_mib}M, disk target; figures from the capture job's own "
                  "memory line.", "",
                  "| initramfs | capture kernel MemTotal | MemAvailable after the dump | initramfs and tmpfs | "
                  "collector peak RSS | crash to power-off |", "|---:|---:|---:|---:|---:|---:|",
                  f"| {capture.image_bytes / MIB:.1f} MiB | {memory['total']} MiB | {memory['available']} MiB | "
                  f"{memory['initramfs_and_tmpfs']} MiB | {memory['collector_peak_rss']} MiB | "
                  f"{capture.crash_to_poweroff:.1f} s |"]
    lines += ["", "## Targets", "", *_targets(inputs, measurements, scanner_results, ssh)]
    if plotted:
        lines += ["", f"![throughput and peak RSS against vmcore size]({PLOT_NAME})"]
    if context.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in context.notes)]
    path = out_dir / "RESULTS.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _result_row(m: Measurement) -> str:
    head = f"| {m.bench_input.name} | {m.contender.name} |"
    if m.failure:
        return head + f" FAILED: {m.failure} | | | | |"
    if m.skipped:
        return head + f" skipped: {m.skipped} | | | | |"
    seconds = [run.seconds for run in m.runs]
    phases = ", ".join(f"{name} {m.median_phase(name):.2f}" for name in ("bitmaps", "pages", "sync")
                       if m.median_phase(name) is not None)
    return (head + f" {m.median_seconds:.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | {m.throughput_mb_s:.0f} |"
            f" {m.output_bytes / MIB:.1f} | {m.max_rss_bytes / MIB:.1f} | {phases} |")


def _pairs(level: int) -> list[tuple[str, str]]:
    ours_t1, ours_t2 = f"vmcore-save -d {level} zstd t1", f"vmcore-save -d {level} zstd t2"
    theirs_l, theirs_c = f"makedumpfile -l -d {level}", f"makedumpfile -c -d {level}"
    return [(ours_t1, theirs_l), (ours_t1, theirs_c), (ours_t2, theirs_l), (ours_t2, theirs_c),
            (f"vmcore-save -d {level} zlib t1", theirs_c)]


def _pair_rows(inputs: list[BenchInput], measurements: list[Measurement]) -> list[str]:
    rows = []
    for i in inputs:
        for level in (31, 1):
            for ours_name, theirs_name in _pairs(level):
                ours, theirs = find(measurements, i, ours_name), find(measurements, i, theirs_name)
                if ours and theirs:
                    rows.append(f"| {i.name} | {ours_name} | {theirs_name} | "
                                f"{theirs.median_seconds / ours.median_seconds:.2f} | "
                                f"{ours.output_bytes / theirs.output_bytes:.2f} |")
    return rows


def _targets(inputs: list[BenchInput], measurements: list[Measurement],
             scanner_results: list[ScannerResult], ssh: SshFigures | None) -> list[str]:
    lines = []
    for i in inputs:
        t1 = find(measurements, i, "vmcore-save -d 31 zstd t1")
        t2 = find(measurements, i, "vmcore-save -d 31 zstd t2")
        lzo, zlib = find(measurements, i, "makedumpfile -l -d 31"), find(measurements, i, "makedumpfile -c -d 31")
        if t1 and lzo and zlib:
            met = t1.throughput_mb_s >= lzo.throughput_mb_s and t1.output_bytes <= zlib.output_bytes
            lines.append(f"- {_verdict(met)} ({i.name}) -d 31 zstd t1 ≥ makedumpfile -l throughput at ≤ "
                         f"makedumpfile -c size: {t1.throughput_mb_s:.0f} vs {lzo.throughput_mb_s:.0f} MB/s, "
                         f"{t1.output_bytes / MIB:.1f} vs {zlib.output_bytes / MIB:.1f} MiB")
        if t2 and lzo and zlib:
            best = max(lzo.throughput_mb_s, zlib.throughput_mb_s)
            met = t2.throughput_mb_s >= CLEARLY_AHEAD_FACTOR * best
            lines.append(f"- {_verdict(met)} ({i.name}) -d 31 zstd t2 ≥ {CLEARLY_AHEAD_FACTOR}x makedumpfile's best "
                         f"single thread: {t2.throughput_mb_s:.0f} vs {best:.0f} MB/s "
                         f"({t2.throughput_mb_s / best:.2f}x)")
    synthetic = sorted((i for i in inputs if i.kind == "synthetic"), key=lambda i: i.memory_bytes)
    for name in ("vmcore-save -d 31 zstd t1", "vmcore-save -d 31 zstd t2"):
        points = [(i, m) for i in synthetic if (m := find(measurements, i, name))]
        if len(points) >= 2:
            rss = [m.max_rss_bytes for _, m in points]
            met = max(rss) <= RSS_LIMIT_BYTES and rss[-1] <= RSS_FLAT_FACTOR * rss[0]
            series = ", ".join(f"{i.name.removeprefix('synthetic ')}: {m.max_rss_bytes / MIB:.1f} MiB"
                               for i, m in points)
            lines.append(f"- {_verdict(met)} {name}: peak RSS ≤ 64 MiB and flat (largest ≤ {RSS_FLAT_FACTOR}x "
                         f"smallest) over the synthetic inputs: {series}")
    for r in scanner_results:
        lines.append(f"- {_verdict(r.speedup >= SCANNER_TARGET_SPEEDUP)} Cython scanner ≥ 10x twin, {r.task}: "
                     f"{r.speedup:.1f}x")
    if ssh:
        for name, rate in ssh.target_rates():
            percent = 100 * rate / ssh.ssh_cat_mb_s
            lines.append(f"- {_verdict(percent >= SSH_TARGET_PERCENT)} {name} ≥ {SSH_TARGET_PERCENT}% of "
                         f"ssh 'cat > FILE': {rate:.0f} vs {ssh.ssh_cat_mb_s:.0f} MB/s ({percent:.0f}%)")
    return lines or ["- nothing to judge (inputs or contenders missing)"]


def _verdict(met: bool) -> str:
    return "**met**" if met else "**NOT met**"


def write_plot(path: Path, inputs: list[BenchInput], measurements: list[Measurement]) -> bool:
    """Throughput and peak RSS against vmcore size, one colour per contender: lines join the
    synthetic inputs (the scaling curve), crosses mark the real ones. False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a build machine
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(m.contender.name for m in measurements if m.runs))
    if not names:
        return False
    figure, (speed_axes, rss_axes) = plt.subplots(1, 2, figsize=(15, 6.5))
    colours = plt.get_cmap("tab20")
    for index, name in enumerate(names):
        colour = colours(index % 20)
        label: str | None = name  # once per contender
        for kind, style in (("synthetic", "o-"), ("real", "x")):
            points = sorted((m.bench_input.memory_bytes / GIB, m) for m in measurements
                            if m.contender.name == name and m.runs and m.bench_input.kind == kind)
            if not points:
                continue
            sizes = [size for size, _ in points]
            speed_axes.plot(sizes, [m.throughput_mb_s for _, m in points], style, color=colour, label=label)
            label = None
            rss_axes.plot(sizes, [m.max_rss_bytes / MIB for _, m in points], style, color=colour)
    for axes, ylabel in ((speed_axes, "MB/s of vmcore file (median)"), (rss_axes, "peak RSS, MiB")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("vmcore size (GiB of PT_LOAD memory); lines: synthetic, x: real")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="both", alpha=0.3)
    speed_axes.set_yscale("log")
    rss_axes.axhline(RSS_LIMIT_BYTES / MIB, color="grey", linestyle="--", linewidth=1)
    figure.legend(loc="lower center", ncol=4, fontsize="small")
    figure.tight_layout(rect=(0, 0.16, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _disk_usage(path: Path) -> int:
    return path.stat().st_blocks * 512
