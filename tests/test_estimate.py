"""vmcore-collector estimate. In the running kernel, against the dump its crash then makes: a
real Debian kernel in QEMU runs our estimate (through its /proc/kcore), arms, crashes, and the
capture kernel saves the dump; the predicted size is within 10% of the dump's, the crashkernel
the estimate asks for holds what the capture job used, and the reservation is judged by it."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest

from collector.capture import arm
from collector.source.kcore import NO_PADDR, Kcore
from tests.support.vmcore_factory import PAGE_SIZE, SegmentSpec, build_vmcore, vmcoreinfo_text
from tests.test_e2e import dracut, job, kernel  # noqa: F401  (fixtures)
from tests.testbed import assets
from tests.testbed.autocapture import CRASHKERNEL_MIB, build_image, crash_and_capture, make_ext4_disk

LEVEL_ROW = re.compile(r"^\s*(\d+) ([* ])\s+(\d+)\s+([\d.]+) MiB \+- ([\d.]+) MiB\s+([\d.]+) s$", re.M)
NEED = re.compile(r"crashkernel: the capture needs about (\d+) MiB \(.*\); (\d+) MiB reserved: (enough|NOT enough)")


def test_kcore_memory_is_its_physical_segments_less_the_reservation(tmp_path: Path) -> None:
    # As /proc/kcore: RAM at direct-map addresses, and a vmalloc segment with p_paddr -1.
    ram = SegmentSpec(0x100000, bytes(range(256)) * (64 * PAGE_SIZE // 256), vaddr=0xFFFF888000100000)
    vmalloc = SegmentSpec(NO_PADDR, bytes(PAGE_SIZE), vaddr=0xFFFFC90000000000)
    path = tmp_path / "kcore"
    path.write_bytes(build_vmcore([ram, vmalloc], vmcoreinfo_text()))
    reserved = (0x100000 + 16 * PAGE_SIZE, 0x100000 + 32 * PAGE_SIZE)
    with Kcore(str(path), excluded=[reserved]) as kcore:
        runs = [(run.start_pfn, run.end_pfn) for run in kcore.memory.runs]
        assert runs == [(0x100, 0x110), (0x120, 0x140)]
        assert kcore.memory.read(0x100000 + 40 * PAGE_SIZE, 256) == bytes(range(256))


@pytest.mark.realkernel
def test_estimate_prints_every_level_and_judges_the_reservation(real_vmcore, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    vmcore = real_vmcore(kernel="6.1", mem_mib=512, workload=True)  # a vmcore reads as a kcore
    image = tmp_path / "capture.img"
    image.write_bytes(bytes(1 << 20))
    monkeypatch.setattr(arm, "_unpacked_size", lambda image: 40 << 20)
    monkeypatch.setattr(arm.estimation, "kernel_image_bytes", lambda: 40 << 20)
    conf = tmp_path / "vmcore-collector.conf"
    conf.write_text("target = ram /var/crash\ndump_level = 17\n")
    outputs = []
    for reserved in (256, 96):
        monkeypatch.setattr(arm, "crash_kernel_reserved", lambda reserved=reserved: reserved << 20)
        code = arm.main(["estimate", "--config", str(conf), "--kcore", str(vmcore.path), "--initrd", str(image)])
        outputs.append((code, capsys.readouterr().out))
    (enough_code, out), (short_code, short) = outputs
    rows = {int(m.group(1)): m for m in LEVEL_ROW.finditer(out)}
    assert sorted(rows) == [0, 1, 17, 31] and rows[17].group(2) == "*", out
    assert int(rows[0].group(3)) > int(rows[1].group(3)) > int(rows[31].group(3))
    assert f"read through {vmcore.path}" in out
    assert enough_code == 0 and "256 MiB reserved: enough" in out
    assert short_code == 1 and "96 MiB reserved: NOT enough, boot with crashkernel=" in short


@pytest.mark.e2e
@pytest.mark.realkernel
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
