"""vmcore-collector estimate, in the running kernel, against the dump its crash then makes: a
real Debian kernel in QEMU runs our estimate (through its /proc/kcore), arms, crashes, and the
capture kernel saves the dump; the predicted size is within 10% of the dump's, the crashkernel
the estimate asks for holds what the capture job used, and the reservation is judged by it."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.test_e2e import dracut, job, kernel  # noqa: F401  (fixtures)
from tests.testbed import assets
from tests.testbed.autocapture import CRASHKERNEL_MIB, build_image, crash_and_capture, make_ext4_disk

pytestmark = [pytest.mark.e2e, pytest.mark.realkernel]

LEVEL_ROW = re.compile(r"^\s*(\d+) ([* ])\s+(\d+)\s+([\d.]+) MiB \+- ([\d.]+) MiB\s+([\d.]+) s$", re.M)
NEED = re.compile(r"crashkernel: the capture needs about (\d+) MiB \(.*\); (\d+) MiB reserved: (enough|NOT enough)")


def test_estimate_in_the_running_kernel_predicts_the_dump_its_crash_makes(
        job: Path, kernel: assets.Kernel, dracut: str, tmp_path: Path) -> None:  # noqa: F811
    image = build_image("target = disk /dev/vda ext4 /crash\nfinal_action = poweroff\nfailure_action = poweroff\n",
                        job, kernel, dracut)
    disk = make_ext4_disk(job / "dump-disk.ext4")
    marker = f"VMCORE-E2E-MARKER {secrets.token_hex(8)}"
    run = crash_and_capture(job, kernel, image, marker, dump_disk=disk,
                            before_arm="estimate --initrd /job/capture.img --config /job/vmcore-collector.conf")
    rows = {int(m.group(1)): m for m in LEVEL_ROW.finditer(run.console)}
    assert sorted(rows) == [0, 1, 17, 31] and rows[31].group(2) == "*", run.console
    predicted = float(rows[31].group(4)) * 2**20
    need = NEED.search(run.console)
    assert need, run.console
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(disk), str(mount_point)], check=True)
    try:
        (dump_dir,) = (mount_point / "crash").iterdir()
        real = (dump_dir / "vmcore").stat().st_size
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
    print(f"estimate: -d 31 predicted {predicted / 2**20:.1f} MiB, dump {real / 2**20:.1f} MiB "
          f"({100 * (predicted / real - 1):+.1f}%); crashkernel needed {need.group(1)} MiB; capture memory "
          f"{run.memory_mib()}")
    assert abs(predicted - real) <= 0.10 * real
    # What the capture used: the reservation less what was still available at the job's end.
    # The need holds it, with a margin that wastes no more than 40% of it.
    used = CRASHKERNEL_MIB - run.memory_mib()["available"]
    assert used <= int(need.group(1)) <= 1.4 * used
    assert int(need.group(2)) == CRASHKERNEL_MIB
    assert need.group(3) == ("enough" if int(need.group(1)) <= CRASHKERNEL_MIB else "NOT enough")
    # status after arming, in the same kernel: the image is ours, the reservation holds it.
    assert "ok   initramfs: /job/capture.img (" in run.console and "built by vmcore-collector" in run.console
    assert f"crashkernel: the capture needs about {need.group(1)} MiB" in run.console
    assert "--   target disk /dev/vda (ext4) /crash: not probed from here: /dev/vda is not mounted here" in run.console
