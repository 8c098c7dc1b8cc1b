"""Automatic capture end to end: build the capture initramfs with our build-initramfs command,
boot a first guest that arms it with our arm command, crash it (sysrq, inside QEMU), and wait for
the capture kernel to save the dump and power off. Used by tests/test_e2e.py and the benchmark
suite (initramfs size, capture-kernel memory). Nothing here is kexec'd or crashed on the host.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import assets, debian
from .qemu import Guest, GuestConfig, Share, read_console

REPO = Path(__file__).resolve().parent.parent.parent
KERNEL = "6.1"
GUEST_MEM_MIB = 512
CRASHKERNEL_MIB = 192
# acpi=noirq: ACPI PCI interrupt routing costs ~0.3 s per link under TCG (also in the capture
# kernel: arm carries it over from the first kernel's command line).
FIRST_APPEND = f"console=ttyS0 panic=1 rdinit=/init acpi=noirq crashkernel={CRASHKERNEL_MIB}M"
GUEST_TIMEOUT = 300.0
HOST_SEEN_FROM_GUEST = "10.0.2.2"  # QEMU user networking: the host's loopback
EMERGENCY_SHELL_BANNER = "vmcore-collector: emergency shell;"  # initramfs/99vmcore-collector/capture-init.sh


@dataclass
class CaptureGuestConfig(GuestConfig):
    """The test bed's guest plus a writable virtio disk (the dump target, /dev/vda)."""

    dump_disk: Path | None = None

    def argv(self, console_log: Path) -> list[str]:
        argv = super().argv(console_log)
        if self.dump_disk is not None:
            argv += ["-drive", f"file={self.dump_disk},if=none,id=dump0,format=raw",
                     "-device", "virtio-blk-pci,drive=dump0"]
        return argv


# The capture job's memory line (collector/capture.py), e.g. "memory: MemTotal 155 MiB,
# MemAvailable 96 MiB, initramfs and tmpfs 20 MiB, collector peak RSS 30 MiB".
MEMORY_LINE = re.compile(r"memory: MemTotal (\d+) MiB, MemAvailable (\d+) MiB, initramfs and tmpfs (\d+) MiB, "
                         r"collector peak RSS (\d+) MiB")


@dataclass
class CrashRun:
    console: str
    crash_to_poweroff: float  # seconds from the sysrq crash to QEMU's exit
    image_size: int

    def memory_mib(self) -> dict[str, int]:
        """The capture kernel's memory as the capture job logged it, in MiB."""
        match = MEMORY_LINE.search(self.console)
        if match is None:
            raise AssertionError("the capture job logged no memory line")
        return dict(zip(("total", "available", "initramfs_and_tmpfs", "collector_peak_rss"), map(int, match.groups())))


def find_dracut() -> str:
    """dracut: the system's, else Debian's dracut-core unpacked into the test bed's cache
    (installing it would pull udev into the host)."""
    system = shutil.which("dracut")
    if system:
        return system
    with assets.locked("dracut"):
        root = assets.cache_dir() / "dracut"
        if not (root / "READY").exists():
            if root.exists():
                shutil.rmtree(root)
            apt = debian.PrivateApt(debian.TOOLS_SUITE, assets.cache_dir() / "apt" / debian.TOOLS_SUITE)
            (deb,) = apt.download(["dracut-core"], assets.cache_dir() / "debs" / apt.suite)
            debian.extract_deb(deb, root)
            (root / "READY").write_text("")
    return str(root / "usr" / "bin" / "dracut")


def new_job_dir() -> Path:
    """A folder for the first guest's /job (9p), under the cache: the guest cannot see /tmp's tmpfs."""
    runs = assets.cache_dir() / "runs"
    runs.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="e2e-", dir=runs))


def build_image(config_text: str, job: Path, kernel: assets.Kernel, dracut: str, kdump_conf: bool = False,
                root_disk: Path | None = None) -> Path:
    """Our build-initramfs command, as an administrator runs it. With ``kdump_conf`` the text is
    a Fedora /etc/kdump.conf. With ``root_disk`` (the guest's root file system), build-initramfs
    runs where /var is that disk's /var, as on the guest: in a mount namespace of its own, so
    the host's mounts are untouched, and its root detection is what finds the disk."""
    config = job / ("kdump.conf" if kdump_conf else "vmcore-collector.conf")
    config.write_text(config_text)
    image = job / "capture.img"
    kmoddir = kernel.directory / "root" / "lib" / "modules" / kernel.release
    command = [sys.executable, "-m", "collector.capture.arm", "build-initramfs", "--kernel-version", kernel.release,
               "--kmoddir", str(kmoddir), "--kdump-conf" if kdump_conf else "--config", str(config),
               "--output", str(image), "--dracut", dracut]
    if root_disk is not None:
        mount_point = job / "root-disk"
        mount_point.mkdir()
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount -o loop "$0" "$1" && mount --bind "$1/var" /var && shift && exec "$@"',
                   str(root_disk), str(mount_point), *command]
    subprocess.run(command, cwd=REPO, check=True)
    return image


def _config_option(job: Path) -> str:
    """The vmcore-collector option naming the configuration build_image wrote, as the guest sees it."""
    return "--kdump-conf /job/kdump.conf" if (job / "kdump.conf").exists() else "--config /job/vmcore-collector.conf"


def crash_and_capture(job: Path, kernel: assets.Kernel, image: Path, marker: str,
                      dump_disk: Path | None = None, netns: str | None = None,
                      emergency_shell_input: str | None = None, before_arm: str = "") -> CrashRun:
    """Boot the first guest, arm with our command, crash, and wait for the capture kernel to end;
    ``emergency_shell_input`` is typed on the console once the capture kernel's emergency shell
    is up (it must end the guest, e.g. with poweroff -f). ``before_arm``: arguments of a
    vmcore-collector command run in the first kernel first (its status does not matter)."""
    shutil.copyfile(kernel.bzimage, job / "vmlinuz")
    settings = {
        "TESTBED_ACTION": "arm",
        "TESTBED_MARKER": marker,
        "TESTBED_WORKLOAD": "0",
        "TESTBED_HOST_PATHS": str(REPO),
        "TESTBED_PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    (job / "job.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items()))
    kexec_tree = assets.prepare_tools() / "kexec"
    (job / "bin").mkdir(exist_ok=True)
    (job / "bin" / "kexec").write_text(
        f"#!/bin/sh\nLD_LIBRARY_PATH={kexec_tree}/lib/x86_64-linux-gnu exec {kexec_tree}/sbin/kexec \"$@\"\n")
    (job / "bin" / "kexec").chmod(0o755)
    arm = f"export PATH=/job/bin:$PATH; cd {shlex.quote(str(REPO))} && python -m collector.capture.arm"
    first = f"{{ {arm} {before_arm} || true; }} && " if before_arm else ""
    (job / "arm-command").write_text(
        f"{first}{arm} arm --kernel /job/vmlinuz --initrd /job/capture.img {_config_option(job)}"
        f" && {{ {arm} status --initrd /job/capture.img {_config_option(job)} || true; }}\n")
    config = CaptureGuestConfig(
        kernel=kernel.vmlinux, initramfs=kernel.first_initramfs, append=FIRST_APPEND, mem_mib=GUEST_MEM_MIB,
        shares=[Share("job", job, readonly=False), Share("hostroot", Path("/"), readonly=True)],
        network=True, netns=netns, dump_disk=dump_disk, console_input=emergency_shell_input is not None)
    console_log = job / "console.log"
    with Guest(config, console_log, GUEST_TIMEOUT) as guest:
        guest.wait_console("testbed: armed, crashing")
        crashed = time.monotonic()
        if emergency_shell_input is not None:
            guest.wait_console(EMERGENCY_SHELL_BANNER)
            guest.type_on_console(emergency_shell_input)
        guest.wait_exit()
        elapsed = time.monotonic() - crashed
    console = read_console(console_log)
    print(console)
    print(f"e2e: crash to power-off {elapsed:.1f} s, initramfs {image.stat().st_size / 2**20:.1f} MiB")
    return CrashRun(console, elapsed, image.stat().st_size)


def make_ext4_disk(path: Path, mib: int = 256, contents: Path | None = None) -> Path:
    """An ext4 image of ``mib`` MiB, holding the tree ``contents`` if given."""
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    *(["-d", str(contents)] if contents else []), str(path)], check=True)
    return path


def make_root_disk(path: Path, mib: int = 256) -> tuple[Path, str]:
    """A small root file system (ext4: /etc, /var/crash as a distribution ships them) and its UUID."""
    tree = path.with_suffix(".tree")
    for folder in ("etc", "var/crash", "var/log"):
        (tree / folder).mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("e2e-guest\n")
    make_ext4_disk(path, mib, tree)
    shutil.rmtree(tree)
    uuid = subprocess.run(["blkid", "-o", "value", "-s", "UUID", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()
    return path, uuid
