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
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.formats.kdump import KdumpFile
from tests.support.dumpcheck import drgn_program
from tests.support.nfs_server import nfs_server
from tests.support.sshd import keygen, start_sshd
from tests.testbed import assets
from tests.testbed.autocapture import (
    HOST_SEEN_FROM_GUEST,
    KERNEL,
    build_image,
    crash_and_capture,
    find_dracut,
    make_ext4_disk,
    make_root_disk,
    new_job_dir,
)

pytestmark = [
    pytest.mark.e2e, pytest.mark.realkernel,
    # The capture image always carries the compiled scanner: the pure-Python pass of ./dev test
    # would repeat the same guests.
    pytest.mark.skipif(bool(os.environ.get("VMCORE_COLLECTOR_PURE_PYTHON")),
                       reason="the capture image runs the compiled scanner; run once"),
]


@pytest.fixture(scope="session")
def dracut() -> str:
    return find_dracut()


@pytest.fixture(scope="session")
def kernel() -> assets.Kernel:
    return assets.prepare_kernel(KERNEL)


@pytest.fixture
def job() -> Iterator[Path]:
    directory = new_job_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def check_saved(dump_dir: Path, marker: str) -> None:
    """A complete dump that drgn opens, and the kernel log with the marker line."""
    assert (dump_dir / "vmcore").is_file(), sorted(p.name for p in dump_dir.iterdir())
    assert KdumpFile.open(str(dump_dir / "vmcore")).complete
    prog = drgn_program(str(dump_dir / "vmcore"))
    assert prog.platform is not None
    assert marker in (dump_dir / "vmcore-dmesg.txt").read_text()


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


def test_default_kdump_conf_dump_lands_on_the_root_disk(job: Path, kernel: assets.Kernel, dracut: str,
                                                        tmp_path: Path) -> None:
    # Fedora's default kdump.conf: no target line, so the dump goes to the root file system's
    # /var/crash. build-initramfs finds the disk holding /var/crash (the guest's root disk),
    # the capture kernel mounts it by UUID, saves, and reboots (final_action): the dump is on
    # the disk afterwards, not in the capture kernel's RAM.
    disk, uuid = make_root_disk(job / "root-disk.ext4")
    image = build_image("path /var/crash\ncore_collector makedumpfile -l --message-level 7 -d 31\n", job, kernel,
                        dracut, kdump_conf=True, root_disk=disk)
    marker = f"VMCORE-E2E-MARKER {secrets.token_hex(8)}"
    run = crash_and_capture(job, kernel, image, marker, dump_disk=disk)
    assert (f"ok   target path /var/crash: the capture kernel saves to /var/crash on UUID={uuid} (ext4), "
            "which it mounts: reachable") in run.console  # status in the first kernel
    assert f"vmcore-collector: saving to disk UUID={uuid} (ext4) /var/crash" in run.console
    assert "vmcore-collector: dump saved" in run.console
    assert "vmcore-collector: reboot after" in run.console
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(disk), str(mount_point)], check=True)
    try:
        (dump_dir,) = (mount_point / "var" / "crash").iterdir()
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


def build_unreachable_ssh_image(actions: str, job: Path, kernel: assets.Kernel, dracut: str, tmp_path: Path) -> Path:
    """A capture image whose only target is SSH to port 1 on the host: the connection is
    refused, so the target fails at once."""
    key = tmp_path / "key"
    public_key = keygen(key)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{HOST_SEEN_FROM_GUEST}]:1 {public_key}\n")
    return build_image(f"target = ssh root@{HOST_SEEN_FROM_GUEST}:1 /var/crash\n"
                       f"ssh_key = {key}\nknown_hosts = {known_hosts}\n{actions}wait_seconds = 20\n",
                       job, kernel, dracut)


def test_unreachable_target_runs_failure_action(job: Path, kernel: assets.Kernel, dracut: str,
                                                tmp_path: Path) -> None:
    image = build_unreachable_ssh_image("final_action = reboot\nfailure_action = poweroff\n", job, kernel, dracut,
                                        tmp_path)
    run = crash_and_capture(job, kernel, image, f"VMCORE-E2E-MARKER {secrets.token_hex(8)}")
    assert "Connection refused" in run.console
    assert "vmcore-collector: no complete dump saved; failure_action poweroff" in run.console
    assert "vmcore-collector: poweroff after" in run.console


def test_failure_action_shell_lets_an_operator_save_by_hand(job: Path, kernel: assets.Kernel, dracut: str,
                                                          tmp_path: Path) -> None:
    # The configured target is unreachable; failure_action = shell gives the operator the
    # capture kernel's emergency shell, where vmcore-save saves by hand (here to the capture
    # kernel's tmpfs).
    image = build_unreachable_ssh_image("final_action = poweroff\nfailure_action = shell\n", job, kernel, dracut,
                                        tmp_path)
    # The sleep lets the serial line drain: poweroff -f would cut the last lines of output.
    typed = ('vmcore-save -d 31 /proc/vmcore /tmp/crash; echo "by hand: status $?"; '
             "echo $(ls /tmp/crash/*/); sleep 2; poweroff -f\n")  # one line, however many files
    run = crash_and_capture(job, kernel, image, f"VMCORE-E2E-MARKER {secrets.token_hex(8)}",
                            emergency_shell_input=typed)
    assert "vmcore-collector: no complete dump saved; failure_action shell" in run.console
    assert "by hand: status 0" in run.console  # the typed line says "$?": only the shell's output matches
    listing = run.console[run.console.index("by hand: status 0"):].splitlines()[1]  # ls of the dump dir
    assert listing.split() == ["vmcore", "vmcore-dmesg.txt", "vmcore-triage.json", "vmcore-triage.txt",
                               "vmcore.manifest.json"]
