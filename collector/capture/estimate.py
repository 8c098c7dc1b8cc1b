"""vmcore-collector estimate: before a crash, in the running kernel, what a dump will take (as
``kdumpctl estimate`` and ``makedumpfile --mem-usage /proc/kcore``).

Per dump level: the pages the dump keeps (every struct page of the running kernel classified,
read through /proc/kcore: source/kcore.py), the predicted size (a sample of the kept pages
compressed as the configuration says: prediction.py), and the compression time at the rate
measured here on that sample. Then the crashkernel= the configured capture image needs and
whether the reservation (/sys/kernel/kexec_crash_size) holds it.

The capture kernel's memory is modelled from what the capture job logs on the test bed
(environment._memory_report; tests/test_estimate.py compares against it): the kernel's own
image (/proc/iomem's Kernel code/rodata/data/bss) and its struct pages for the reservation,
the capture initramfs twice while it unpacks (compressed and unpacked; only the unpacked stays,
as tmpfs), the collector's peak RSS, what the kernel allocates as it runs, and a margin.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..prediction import Prediction, format_size, predict
from ..source.kcore import KCORE, Kcore
from . import config as configuration

# Dump levels always shown (kdump-tools' and Fedora's default 31, 1 and 0 for everything but
# zeros or everything, 17 as older configurations have it); the configured one is added.
LEVELS = (0, 1, 17, 31)
MIB = 1 << 20
# Measured on the test bed (Debian 6.1, 512 MiB guest, crashkernel=192M, disk target,
# 2026-12-02): collector peak RSS 30-39 MiB; MemTotal - MemAvailable - initramfs - RSS = 3-9 MiB
# of kernel allocations at the job's end, which grow with devices and the network: 16 MiB allowed.
COLLECTOR_RSS = 40 * MIB
SSH_RSS = 25 * MIB         # paramiko and cryptography loaded (arm.py SSH_MODULES)
THREAD_RSS = 4 * MIB       # each further compression thread: its context and span buffers
KERNEL_RUNTIME = 16 * MIB
MARGIN_FRACTION = 0.2      # of the rest, at least MARGIN_MIN: memory is what makes a capture fail
MARGIN_MIN = 32 * MIB
STRUCT_PAGE_BYTES = 64     # SIZE(page) when VMCOREINFO does not say
_IOMEM_KERNEL = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) : Kernel (?:code|rodata|data|bss)$")
_IOMEM_CRASH_KERNEL = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) : Crash kernel")


@dataclass(frozen=True)
class CrashkernelNeed:
    kernel: int          # the capture kernel's image
    struct_pages: int    # its struct pages, for the reserved memory
    image: int           # the capture initramfs unpacked (tmpfs, for the whole capture)
    image_packed: int    # the compressed initramfs, held while it unpacks
    collector: int       # peak RSS of the collector
    runtime: int         # the kernel's own allocations while the job runs

    @property
    def margin(self) -> int:
        return max(MARGIN_MIN, round(MARGIN_FRACTION * self._base))

    @property
    def _base(self) -> int:
        # The packed image is freed once unpacked, before the collector starts.
        return (self.kernel + self.struct_pages + self.image + max(self.image_packed, self.collector)
                + self.runtime)

    @property
    def total(self) -> int:
        """Bytes of crashkernel= that the capture needs, rounded up to whole MiB."""
        return -(-(self._base + self.margin) // MIB) * MIB

    def text(self) -> str:
        parts = [("kernel", self.kernel), ("its struct pages", self.struct_pages), ("initramfs", self.image),
                 ("packed initramfs or collector", max(self.image_packed, self.collector)),
                 ("kernel allocations", self.runtime), ("margin", self.margin)]
        return ", ".join(f"{name} {size / MIB:.0f}" for name, size in parts) + " MiB"


def kernel_image_bytes(iomem: str = "/proc/iomem") -> int | None:
    """The running kernel's code, rodata, data and bss (the capture kernel is the same kernel);
    None where /proc/iomem hides addresses (not root)."""
    try:
        lines = Path(iomem).read_text().splitlines()
    except OSError:
        return None
    spans = [(int(m.group(1), 16), int(m.group(2), 16)) for m in map(_IOMEM_KERNEL.match, lines) if m]
    total = sum(end + 1 - start for start, end in spans if end)
    return total or None


def crash_kernel_ranges(iomem: str = "/proc/iomem") -> list[tuple[int, int]]:
    """The crashkernel reservation(s), [start, end): memory a vmcore does not hold."""
    try:
        lines = Path(iomem).read_text().splitlines()
    except OSError:
        return []
    return [(int(m.group(1), 16), int(m.group(2), 16) + 1) for m in map(_IOMEM_CRASH_KERNEL.match, lines)
            if m and int(m.group(2), 16)]


def crashkernel_need(config: configuration.Config, reserved: int, image_size: int, unpacked_size: int,
                     kernel_bytes: int, struct_page_bytes: int = STRUCT_PAGE_BYTES,
                     page_size: int = 4096) -> CrashkernelNeed:
    with_ssh = any(target.kind == "ssh" for target in config.targets)
    collector = COLLECTOR_RSS + (SSH_RSS if with_ssh else 0) + (config.threads - 1) * THREAD_RSS
    need = CrashkernelNeed(kernel_bytes, reserved // page_size * struct_page_bytes, unpacked_size, image_size,
                           collector, KERNEL_RUNTIME)
    if need.total <= reserved:
        return need
    # Struct pages are for the reservation asked for, not the one too small.
    return dataclasses.replace(need, struct_pages=need.total // page_size * struct_page_bytes)


@dataclass(frozen=True)
class Estimate:
    source: str  # what was read (/proc/kcore)
    release: str
    present: int
    page_size: int
    predictions: dict[int, Prediction]
    configured_level: int
    struct_page_bytes: int  # SIZE(page) of the running kernel


def estimate_dumps(config: configuration.Config, warn: Callable[[str], None], kcore: str = KCORE,
                   levels: tuple[int, ...] = LEVELS) -> Estimate:
    """Every level of ``levels`` and the configured one, predicted over the running kernel."""
    with Kcore(kcore, excluded=crash_kernel_ranges()) as image:
        for warning in image.warnings:
            warn(f"warning: {warning}")
        wanted = sorted({*levels, config.dump_level})
        level = None if config.compress == "none" else config.compress_level
        predictions = {dl: predict(image, dl, config.compress, level, warn) for dl in wanted}
        present = predictions[wanted[0]].counts.present
        struct_page = image.vmcoreinfo.sizes.get("page", STRUCT_PAGE_BYTES) if image.vmcoreinfo else STRUCT_PAGE_BYTES
        return Estimate(kcore, image.osrelease or os.uname().release, present, image.page_size, predictions,
                        config.dump_level, struct_page)


def estimate_lines(config: configuration.Config, found: Estimate) -> list[str]:
    """The table: per dump level the pages written, the size and the compression time."""
    compression = config.compress if config.compress == "none" else f"{config.compress} level {config.compress_level}"
    rates = [p.compress_bytes_per_second for p in found.predictions.values() if p.compress_bytes_per_second]
    rate = sorted(rates)[len(rates) // 2] if rates else 0.0  # the median: one sample may be all zeros
    lines = [f"running kernel {found.release}: {found.present} pages of {found.page_size} bytes "
             f"({format_size(found.present * found.page_size)}) read through {found.source}",
             f"{'level':>5}  {'pages written':>13}  {'predicted size':>24}  {'compression time':>16}"]
    for dl, p in found.predictions.items():
        seconds = p.counts.written * p.page_size / rate if rate else 0.0
        mark = " *" if dl == found.configured_level else "  "
        lines.append(f"{dl:>5}{mark}{p.counts.written:>13}  "
                     f"{format_size(p.size) + ' +- ' + format_size(p.error_bytes):>24}  {seconds:>14.1f} s")
    sample = max(p.sample for p in found.predictions.values())
    lines.append(f"* configured dump level, {compression}; up to {sample} kept pages compressed per level, "
                 f"at {rate / MIB:.0f} MiB/s here (one thread, as a capture kernel has one CPU); "
                 "+-: 95% interval of the sample")
    return lines
