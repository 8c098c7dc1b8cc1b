"""Crash real Debian kernels in QEMU and hand out their vmcores (cached) or run commands
inside their capture kernels.

One crash cycle: the first kernel boots (PVH or SeaBIOS), optionally runs the workload,
writes the marker to the kernel log, loads the capture kernel (kexec_load or
kexec_file_load) and crashes via sysrq; the capture kernel then copies /proc/vmcore out
over virtio-9p, or runs a command chrooted into the host's root. With method "qmp" the
first kernel is instead dumped by QEMU (dump-guest-memory) without any kexec.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from . import assets
from .errors import TestbedError
from .qemu import BOOT_MODES, Guest, GuestConfig, Share

KEXEC_MODES = ("load", "file")
METHODS = ("kdump", "qmp")

# Capture-kernel reservation by default. 96 MiB is the measured minimum for copying
# /proc/vmcore with busybox; a chrooted host python3 needs more.
COPY_CRASHKERNEL_MIB = 128
COMMAND_CRASHKERNEL_MIB = 256

_GUEST_DIR = Path(__file__).resolve().parent / "guest"
# acpi=noirq: ACPI PCI interrupt routing costs ~0.3 s per link under TCG.
_FIRST_APPEND = "console=ttyS0 panic=1 rdinit=/init acpi=noirq"
# irqpoll/reset_devices/nr_cpus=1: the usual kdump capture-kernel settings.
_CAPTURE_APPEND = "console=ttyS0 panic=1 rdinit=/init acpi=noirq irqpoll nr_cpus=1 reset_devices"


@dataclass(frozen=True)
class Vmcore:
    """A cached memory image of a crashed (kdump) or stopped (qmp) guest."""

    path: Path  # ELF core, stored sparse
    marker: str  # line written to the guest's kernel log just before the crash
    osrelease: str  # the guest kernel's `uname -r`
    kernel: str  # the series or release asked for, e.g. "6.1"
    mem_mib: int
    crashkernel_mib: int  # 0 for qmp
    workload: bool
    boot: str  # "pvh" (KASLR off) or "bios" (KASLR on)
    kexec: str  # "load", "file", or "none" for qmp
    method: str  # "kdump" or "qmp"
    console_log: Path


@dataclass(frozen=True)
class CaptureRun:
    """Result of a command run inside a real capture kernel."""

    rc: int  # the command's exit status
    console_log: Path  # both kernels' serial console
    outdir: Path  # the host folder the command saw as /out
    osrelease: str


def get_vmcore(
    kernel: str = "6.1",
    mem_mib: int = 512,
    workload: bool = True,
    boot: str = "pvh",
    kexec: str = "load",
    method: str = "kdump",
    crashkernel_mib: int | None = None,
    timeout: float | None = None,
) -> Vmcore:
    """Return the vmcore for these settings, crashing a guest only if it is not cached.

    ``kernel`` is a Debian series ("6.1", "6.12") or exact release ("6.1.0-56-amd64").
    ``method`` "kdump" is a real crash captured from /proc/vmcore; "qmp" is QEMU's
    dump-guest-memory of the running guest (``kexec`` and ``crashkernel_mib`` unused).
    Concurrent callers wait on a lock instead of building the same vmcore twice.
    """
    _check_choice("boot", boot, BOOT_MODES)
    _check_choice("kexec", kexec, KEXEC_MODES)
    _check_choice("method", method, METHODS)
    kernel_assets = assets.prepare_kernel(kernel)
    if method == "qmp":
        kexec, crashkernel_mib = "none", 0
    elif crashkernel_mib is None:
        crashkernel_mib = COPY_CRASHKERNEL_MIB
    key = (f"{kernel_assets.release}-{mem_mib}M-ck{crashkernel_mib}-"
           f"{'workload' if workload else 'idle'}-{boot}-{kexec}-{method}")
    final = assets.cache_dir() / "vmcores" / key
    with assets.locked(f"vmcore-{key}"):
        if not (final / "meta.json").exists():
            _build_vmcore(kernel, kernel_assets, final, mem_mib, crashkernel_mib, workload, boot,
                          kexec, method, timeout)
        meta = json.loads((final / "meta.json").read_text())
    return Vmcore(**{**meta, "path": final / "vmcore", "console_log": final / "console.log"})


def _build_vmcore(kernel: str, kernel_assets: assets.Kernel, final: Path, mem_mib: int,
                  crashkernel_mib: int, workload: bool, boot: str, kexec: str, method: str,
                  timeout: float | None) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix=f"{final.name}.", suffix=".partial", dir=final.parent))
    marker = f"VMCORE-TESTBED-MARKER {secrets.token_hex(8)}"
    config = _guest_config(kernel_assets, job, mem_mib, crashkernel_mib, workload, boot,
                           qmp=method == "qmp")
    _write_job(job, kernel_assets, action=method, marker=marker, workload=workload, kexec=kexec)
    vmcore = job / "vmcore"
    try:
        with Guest(config, job / "console.log", _timeout(timeout, mem_mib)) as guest:
            if method == "qmp":
                guest.wait_console("TESTBED-READY-FOR-DUMP")
                guest.dump_guest_memory(vmcore)
            else:
                guest.wait_exit()
                if not vmcore.exists():
                    raise guest.error("the capture kernel wrote no vmcore")
    except TestbedError:
        # The logs stay in the .partial folder for diagnosis; a partial image would not help.
        vmcore.unlink(missing_ok=True)
        raise
    # 9p writes every byte; holes make the cached copy take only the non-zero pages.
    subprocess.run(["fallocate", "--dig-holes", str(vmcore)], check=True)
    meta = Vmcore(path=vmcore, marker=marker, osrelease=kernel_assets.release, kernel=kernel,
                  mem_mib=mem_mib, crashkernel_mib=crashkernel_mib, workload=workload, boot=boot,
                  kexec=kexec, method=method, console_log=job / "console.log")
    fields = {name: value for name, value in asdict(meta).items() if name not in ("path", "console_log")}
    (job / "meta.json").write_text(json.dumps(fields, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    job.rename(final)


def run_in_capture_kernel(
    command: str,
    outdir: Path,
    kernel: str = "6.1",
    mem_mib: int = 512,
    workload: bool = True,
    boot: str = "pvh",
    kexec: str = "load",
    crashkernel_mib: int | None = None,
    timeout: float | None = None,
    netns: str | None = None,
) -> CaptureRun:
    """Crash a guest and run ``command`` (``sh -c``) inside its capture kernel. Not cached.

    The command runs chrooted into the host's root (shared read-only, so host python3
    and the repo are there) with the guest's /proc (so /proc/vmcore), /sys and /dev,
    tmpfs /tmp and /run, ``outdir`` writable at /out, and user networking (the host's
    loopback is 10.0.2.2, or that of network namespace ``netns`` if given). Its exit status is
    returned and left in ``outdir/.rc``.
    """
    _check_choice("boot", boot, BOOT_MODES)
    _check_choice("kexec", kexec, KEXEC_MODES)
    kernel_assets = assets.prepare_kernel(kernel)
    if crashkernel_mib is None:
        crashkernel_mib = COMMAND_CRASHKERNEL_MIB
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / ".rc").unlink(missing_ok=True)
    runs = assets.cache_dir() / "runs"
    runs.mkdir(exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix="capture-", dir=runs))
    config = _guest_config(kernel_assets, job, mem_mib, crashkernel_mib, workload, boot, qmp=False)
    config.shares.append(Share("out", outdir, readonly=False))
    config.network = True
    config.netns = netns
    _write_job(job, kernel_assets, action="command", marker=f"VMCORE-TESTBED-MARKER {secrets.token_hex(8)}",
               workload=workload, kexec=kexec)
    (job / "command").write_text(command)
    with Guest(config, job / "console.log", _timeout(timeout, mem_mib)) as guest:
        guest.wait_exit()
        rc_file = outdir / ".rc"
        if not rc_file.exists():
            raise guest.error("the capture kernel did not report the command's exit status")
        rc = int(rc_file.read_text())
    return CaptureRun(rc=rc, console_log=job / "console.log", outdir=outdir,
                      osrelease=kernel_assets.release)


def _guest_config(kernel_assets: assets.Kernel, job: Path, mem_mib: int, crashkernel_mib: int,
                  workload: bool, boot: str, qmp: bool) -> GuestConfig:
    append = _FIRST_APPEND + (f" crashkernel={crashkernel_mib}M" if crashkernel_mib else "")
    shares = [
        Share("job", job, readonly=False),
        Share("assets", kernel_assets.directory, readonly=True),
        # The workload and the capture command run chrooted into the host's root.
        Share("hostroot", Path("/"), readonly=True),
    ]
    return GuestConfig(
        kernel=kernel_assets.vmlinux if boot == "pvh" else kernel_assets.bzimage,
        initramfs=kernel_assets.first_initramfs,
        append=append,
        mem_mib=mem_mib,
        shares=shares,
        disk=assets.prepare_disk() if workload else None,
        qmp_socket=job / "qmp.sock" if qmp else None,
    )


def _write_job(job: Path, kernel_assets: assets.Kernel, action: str, marker: str, workload: bool,
               kexec: str) -> None:
    """The settings both guest stages read from /job/job.env."""
    shutil.copyfile(_GUEST_DIR / "workload.py", job / "workload.py")
    settings = {
        "TESTBED_ACTION": action,
        "TESTBED_MARKER": marker,
        "TESTBED_WORKLOAD": "1" if workload else "0",
        "TESTBED_KEXEC": kexec,
        "TESTBED_CAPTURE_APPEND": _CAPTURE_APPEND,
        # Paths below the guest's /assets (the kernel's cache folder). The capture kernel is
        # the bzImage in both kexec modes: the ELF vmlinux is linked at 16 MiB, outside the
        # crashkernel reservation, and kexec cannot relocate it.
        "TESTBED_CAPTURE_KERNEL": kernel_assets.bzimage.name,
        "TESTBED_CAPTURE_INITRD": str(kernel_assets.capture_initramfs.relative_to(kernel_assets.directory)),
        # Bound into the chroot even when under /tmp, which the guest replaces by a tmpfs.
        "TESTBED_HOST_PATHS": str(assets.REPO_ROOT),
        # The capture command's PATH: `python3` there is the interpreter running this code.
        "TESTBED_PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    (job / "job.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items()))


def _timeout(timeout: float | None, mem_mib: int) -> float:
    # TCG is slow and the machine may be busy; a healthy 512 MiB cycle takes ~20 s.
    return timeout if timeout is not None else 180 + 60 * mem_mib / 1024


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TestbedError(f"{name} must be one of {choices}, not {value!r}")
