"""The project's main job end to end: crash a real Debian kernel in QEMU and let vmcore-save,
running inside the real capture kernel, save its dump; then show what was saved."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from .vmcore import run_in_capture_kernel

REPO = Path(__file__).resolve().parents[2]


def run_demo(kernel: str = "6.1", mem_mib: int = 512, dump_level: int = 31) -> int:
    out = REPO / ".cache" / "demo" / time.strftime("%Y%m%d-%H%M%S")
    command = f"cd {shlex.quote(str(REPO))} && python3 -m collector -d {dump_level} /proc/vmcore /out/crash"
    print(f"demo: booting Debian {kernel} in QEMU ({mem_mib} MiB, TCG), loading the capture kernel with kexec,"
          " running a workload, crashing it with sysrq...", flush=True)
    started = time.monotonic()
    run = run_in_capture_kernel(command, out, kernel=kernel, mem_mib=mem_mib, workload=True)
    elapsed = time.monotonic() - started
    console = run.console_log.read_text(errors="replace").splitlines()
    print(f"demo: capture kernel of {run.osrelease} ran vmcore-save (serial console lines):")
    for line in console:
        if "vmcore-save" in line:
            print(f"    {line.strip()}")
    if run.rc != 0:
        print(f"demo: vmcore-save exited {run.rc}; full console log: {run.console_log}", file=sys.stderr)
        return 1
    print(f"demo: whole cycle (boot, workload, crash, capture, save) took {elapsed:.1f} s")
    for dump_dir in sorted((out / "crash").iterdir()):
        print(f"demo: saved {dump_dir}:")
        for item in sorted(dump_dir.iterdir()):
            print(f"    {item.name:24} {item.stat().st_size:>12} bytes")
        info = subprocess.run([sys.executable, "-m", "collector", "--info", str(dump_dir / "vmcore")],
                              cwd=REPO, capture_output=True, text=True)
        print(info.stdout.rstrip())
        print(f"demo: open it with: drgn -c {dump_dir / 'vmcore'}   or   crash VMLINUX {dump_dir / 'vmcore'}")
    return 0
