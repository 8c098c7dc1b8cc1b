"""Runs automatically after a crash, end to end, in QEMU with a real Debian kernel.

`vmcore-collector build-initramfs` (dracut + initramfs/99vmcore-collector) builds the capture
initramfs on the host; inside the first guest, `vmcore-collector arm` loads it with kexec; sysrq
crashes the guest; the capture kernel runs only what the image holds, saves the kernel log and
the dump to the configured target and powers off (final_action) — or, when the target cannot be
reached, runs failure_action. Nothing here is kexec'd or crashed on the host.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.formats.kdump import KdumpFile
from tests.dumpcheck import drgn_program
from tests.nfs_server import nfs_server
from tests.sshd import keygen, start_sshd
from tests.testbed import assets, debian
from tests.testbed.qemu import Guest, GuestConfig, Share, read_console

pytestmark = [
    pytest.mark.e2e, pytest.mark.realkernel,
    # The capture image always carries the compiled scanner: the pure-Python pass of ./dev test
    # would repeat the same guests.
    pytest.mark.skipif(bool(os.environ.get("VMCORE_COLLECTOR_PURE_PYTHON")),
                       reason="the capture image runs the compiled scanner; run once"),
]

REPO = Path(__file__).resolve().parent.parent
KERNEL = "6.1"
GUEST_MEM_MIB = 512
CRASHKERNEL_MIB = 192
# acpi=noirq: ACPI PCI interrupt routing costs ~0.3 s per link under TCG (also in the capture
# kernel: arm carries it over from the first kernel's command line).
FIRST_APPEND = f"console=ttyS0 panic=1 rdinit=/init acpi=noirq crashkernel={CRASHKERNEL_MIB}M"
GUEST_TIMEOUT = 300.0
HOST_SEEN_FROM_GUEST = "10.0.2.2"  # QEMU user networking: the host's loopback


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


@dataclass
class CrashRun:
    console: str
    crash_to_poweroff: float  # seconds from the sysrq crash to QEMU's exit
    image_size: int


@pytest.fixture(scope="session")
def dracut() -> str:
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


@pytest.fixture(scope="session")
def kernel() -> assets.Kernel:
    return assets.prepare_kernel(KERNEL)


@pytest.fixture
def job() -> Iterator[Path]:
    """The first guest's /job folder (9p). Under the cache: the guest cannot see /tmp's tmpfs."""
    runs = assets.cache_dir() / "runs"
    runs.mkdir(exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="e2e-", dir=runs))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def build_image(config_text: str, job: Path, kernel: assets.Kernel, dracut: str) -> Path:
    """Our build-initramfs command, as an administrator runs it."""
    config = job / "vmcore-collector.conf"
    config.write_text(config_text)
    image = job / "capture.img"
    kmoddir = kernel.directory / "root" / "lib" / "modules" / kernel.release
    subprocess.run([sys.executable, "-m", "collector.arm", "build-initramfs", "--kernel-version", kernel.release,
                    "--kmoddir", str(kmoddir), "--config", str(config), "--output", str(image),
                    "--dracut", dracut], cwd=REPO, check=True)
    return image


def crash_and_capture(job: Path, kernel: assets.Kernel, image: Path, marker: str,
                      dump_disk: Path | None = None, netns: str | None = None) -> CrashRun:
    """Boot the first guest, arm with our command, crash, and wait for the capture kernel to end."""
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
    arm = f"export PATH=/job/bin:$PATH; cd {shlex.quote(str(REPO))} && python -m collector.arm"
    (job / "arm-command").write_text(
        f"{arm} arm --kernel /job/vmlinuz --initrd /job/capture.img --config /job/vmcore-collector.conf"
        f" && {{ {arm} status --initrd /job/capture.img --config /job/vmcore-collector.conf || true; }}\n")
    config = CaptureGuestConfig(
        kernel=kernel.vmlinux, initramfs=kernel.first_initramfs, append=FIRST_APPEND, mem_mib=GUEST_MEM_MIB,
        shares=[Share("job", job, readonly=False), Share("hostroot", Path("/"), readonly=True)],
        network=True, netns=netns, dump_disk=dump_disk)
    console_log = job / "console.log"
    with Guest(config, console_log, GUEST_TIMEOUT) as guest:
        guest.wait_console("testbed: armed, crashing")
        crashed = time.monotonic()
        guest.wait_exit()
        elapsed = time.monotonic() - crashed
    console = read_console(console_log)
    print(console)
    print(f"e2e: crash to power-off {elapsed:.1f} s, initramfs {image.stat().st_size / 2**20:.1f} MiB")
    return CrashRun(console, elapsed, image.stat().st_size)


def check_saved(dump_dir: Path, marker: str) -> None:
    """A complete dump that drgn opens, and the kernel log with the marker line."""
    assert (dump_dir / "vmcore").is_file(), sorted(p.name for p in dump_dir.iterdir())
    assert KdumpFile.open(str(dump_dir / "vmcore")).complete
    prog = drgn_program(str(dump_dir / "vmcore"))
    assert prog.platform is not None
    assert marker in (dump_dir / "vmcore-dmesg.txt").read_text()


def make_ext4_disk(path: Path, mib: int = 256) -> Path:
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(path)], check=True)
    return path


def test_disk_target(job: Path, kernel: assets.Kernel, dracut: str, tmp_path: Path) -> None:
    image = build_image("target = disk /dev/vda ext4 /crash\nfinal_action = poweroff\nfailure_action = poweroff\n",
                        job, kernel, dracut)
    disk = make_ext4_disk(job / "dump-disk.ext4")
    marker = f"VMCORE-E2E-MARKER {secrets.token_hex(8)}"
    run = crash_and_capture(job, kernel, image, marker, dump_disk=disk)
    assert "vmcore-collector: dump saved" in run.console
    assert "vmcore-collector: poweroff after" in run.console
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(disk), str(mount_point)], check=True)
    try:
        (dump_dir,) = (mount_point / "crash").iterdir()
        check_saved(dump_dir, marker)
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_ssh_target(job: Path, kernel: assets.Kernel, dracut: str, tmp_path: Path) -> None:
    server = start_sshd(tmp_path / "sshd")
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[{HOST_SEEN_FROM_GUEST}]:{server.port} {server.host_public_key}\n")
        dumps = tmp_path / "dumps"
        dumps.mkdir()
        image = build_image(
            f"target = ssh {server.user}@{HOST_SEEN_FROM_GUEST}:{server.port} {dumps}\n"
            f"ssh_key = {server.client_key}\nknown_hosts = {known_hosts}\n"
            "final_action = poweroff\nfailure_action = poweroff\nwait_seconds = 20\n", job, kernel, dracut)
        marker = f"VMCORE-E2E-MARKER {secrets.token_hex(8)}"
        run = crash_and_capture(job, kernel, image, marker)
    finally:
        server.stop()
    assert "vmcore-collector: dump saved" in run.console
    assert "vmcore-collector: poweroff after" in run.console
    (dump_dir,) = dumps.iterdir()
    check_saved(dump_dir, marker)


def test_nfs_target(job: Path, kernel: assets.Kernel, dracut: str, tmp_path: Path) -> None:
    if not shutil.which("ganesha.nfsd"):
        pytest.skip("nfs-ganesha is not installed (./dev setup)")
    # The server runs in a network namespace of its own, and so does QEMU: 10.0.2.2 is its loopback.
    image = build_image(f"target = nfs {HOST_SEEN_FROM_GUEST}:/export /\n"
                        "final_action = poweroff\nfailure_action = poweroff\nwait_seconds = 20\n",
                        job, kernel, dracut)
    marker = f"VMCORE-E2E-MARKER {secrets.token_hex(8)}"
    with nfs_server(tmp_path / "server", {"export": (3, 4)}) as server:
        run = crash_and_capture(job, kernel, image, marker, netns=server.netns)
        export = server.export_dir("export")
        assert "vmcore-collector: dump saved" in run.console
        assert "vmcore-collector: poweroff after" in run.console
        (dump_dir,) = export.iterdir()
        check_saved(dump_dir, marker)


def test_unreachable_target_runs_failure_action(job: Path, kernel: assets.Kernel, dracut: str,
                                                tmp_path: Path) -> None:
    # Port 1 on the host: the connection is refused, so the SSH target fails at once.
    key = tmp_path / "key"
    public_key = keygen(key)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{HOST_SEEN_FROM_GUEST}]:1 {public_key}\n")
    image = build_image(f"target = ssh root@{HOST_SEEN_FROM_GUEST}:1 /var/crash\n"
                        f"ssh_key = {key}\nknown_hosts = {known_hosts}\n"
                        "final_action = reboot\nfailure_action = poweroff\nwait_seconds = 20\n",
                        job, kernel, dracut)
    run = crash_and_capture(job, kernel, image, f"VMCORE-E2E-MARKER {secrets.token_hex(8)}")
    assert "Connection refused" in run.console
    assert "vmcore-collector: no complete dump saved; failure_action poweroff" in run.console
    assert "vmcore-collector: poweroff after" in run.console
