"""The capture environment: how big the capture initramfs is and how much of the capture
kernel's memory is in use while the collector runs, from one automatic capture in QEMU.

It is the disk-target run of tests/test_e2e.py: `vmcore-collector build-initramfs` builds the
image, the first guest (Debian 6.1, 512 MiB, crashkernel=192M) arms it and crashes, and the
capture job logs its memory line before powering off.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import shutil
from dataclasses import dataclass

from tests.testbed import assets
from tests.testbed.autocapture import (
    CRASHKERNEL_MIB,
    GUEST_MEM_MIB,
    KERNEL,
    build_image,
    crash_and_capture,
    find_dracut,
    make_ext4_disk,
    new_job_dir,
)

CONFIG = "target = disk /dev/vda ext4 /crash\nfinal_action = poweroff\nfailure_action = poweroff\n"


@dataclass
class CaptureFigures:
    kernel: str
    guest_mib: int
    crashkernel_mib: int
    image_bytes: int
    crash_to_poweroff: float
    memory_mib: dict[str, int]  # CrashRun.memory_mib(): total, available, initramfs_and_tmpfs, collector_peak_rss


def run_capture_benchmark() -> CaptureFigures:
    kernel = assets.prepare_kernel(KERNEL)
    dracut = find_dracut()
    job = new_job_dir()
    try:
        image = build_image(CONFIG, job, kernel, dracut)
        disk = make_ext4_disk(job / "dump-disk.ext4")
        with contextlib.redirect_stdout(io.StringIO()):  # crash_and_capture prints the whole console
            run = crash_and_capture(job, kernel, image, f"VMCORE-BENCH-MARKER {secrets.token_hex(8)}",
                                    dump_disk=disk)
        if "vmcore-collector: dump saved" not in run.console:
            raise RuntimeError("the capture kernel saved no dump:\n" + run.console[-3000:])
        return CaptureFigures(kernel.release, GUEST_MEM_MIB, CRASHKERNEL_MIB, run.image_size,
                              run.crash_to_poweroff, run.memory_mib())
    finally:
        shutil.rmtree(job, ignore_errors=True)
