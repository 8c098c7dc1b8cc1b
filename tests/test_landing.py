"""Rule: a dump is never written into the capture environment's own RAM unless the
configuration says so (``target = ram``). A ``path`` target (kdump.conf's ``path`` without a
target line, kdump-utils' meaning) lands on the disk that holds that folder in the running
system: build-initramfs records the device, the capture job mounts it, status says so.
(tests/test_e2e.py::test_default_kdump_conf_dump_lands_on_the_root_disk runs it in QEMU.)"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from collector.capture import arm, config, mounts
from collector.capture import environment as capture
from collector.capture.config import Target
from collector.errors import CollectorError

# A Fedora-like machine: root on sda2 (a btrfs subvolume), /boot on sda1, /var/log on its own
# partition, /var/crash bind-mounted from a folder of /data, /tmp in RAM, /srv over NFS.
MOUNTINFO = """\
22 1 8:2 /root / rw,relatime shared:1 - btrfs /dev/sda2 rw,subvol=/root
23 22 8:1 / /boot rw,relatime shared:2 - ext4 /dev/sda1 rw
24 22 0:5 / /dev rw,nosuid shared:3 - devtmpfs devtmpfs rw
25 22 0:30 / /tmp rw,nosuid shared:4 - tmpfs tmpfs rw
26 22 8:3 / /var/log rw,relatime shared:5 - xfs /dev/sda3 rw
27 22 8:4 / /data rw,relatime shared:6 - ext4 /dev/sdb1 rw
28 22 8:4 /dumps/crash\\040here /var/crash rw,relatime shared:6 - ext4 /dev/sdb1 rw
29 22 0:40 / /srv rw,relatime shared:7 - nfs4 server:/srv rw
"""
UUIDS = {"/dev/sda2": "UUID=aaaa-root", "/dev/sda1": "UUID=bbbb-boot", "/dev/sda3": "UUID=cccc-log",
         "/dev/sdb1": "UUID=dddd-data"}


def lands(directory: str, mountinfo: str = MOUNTINFO, stacked: str | None = None) -> Target:
    return mounts.landing_disk(Target("path", "", directory), mounts.parse_mountinfo(mountinfo),
                               device_of=lambda mount: UUIDS[mount.source], stacked=lambda mount: stacked)


def test_kdump_conf_path_without_a_target_line_is_a_path_target() -> None:
    assert config.parse_kdump_conf("path /var/crash\n").targets == (Target("path", "", "/var/crash"),)
    assert config.parse_kdump_conf("").targets == (Target("path", "", "/var/crash"),)  # kdump's default


def test_path_lands_on_the_root_file_system_by_uuid() -> None:
    # The subvolume's folder (/root) is part of the path on the device: mounting sda2 as it is
    # gives the top level, where /root/var/spool is.
    assert lands("/var/spool/crash") == Target("disk", "UUID=aaaa-root", "/root/var/spool/crash", "btrfs")


def test_path_on_its_own_partition_is_relative_to_that_partition() -> None:
    assert lands("/var/log/crash") == Target("disk", "UUID=cccc-log", "/crash", "xfs")
    assert lands("/boot") == Target("disk", "UUID=bbbb-boot", "/", "ext4")


def test_path_on_a_bind_mount_lands_in_the_bound_folder() -> None:
    assert lands("/var/crash") == Target("disk", "UUID=dddd-data", "/dumps/crash here", "ext4")


def test_path_in_ram_is_refused_naming_the_file_system() -> None:
    with pytest.raises(CollectorError, match=r"target path /tmp/crash: .* is on tmpfs tmpfs .*in RAM: "
                                             r"a dump there is lost at the reboot"):
        lands("/tmp/crash")
    with pytest.raises(CollectorError, match="in RAM"):
        lands("/var/crash", "1 0 0:2 / / rw - rootfs rootfs rw\n")  # an initramfs root


def test_path_on_a_network_file_system_needs_an_explicit_target() -> None:
    with pytest.raises(CollectorError, match="is on nfs4 server:/srv .* not a local disk: configure that target"):
        lands("/srv/crash")


def test_path_on_lvm_is_refused() -> None:
    with pytest.raises(CollectorError, match="a device-mapper .* device the capture environment does not assemble"):
        lands("/var/spool", stacked="device-mapper (LVM, LUKS)")


def test_this_machines_root_is_detected() -> None:
    # The real /proc/self/mountinfo: the root is either a disk (a disk target) or refused.
    try:
        landed = mounts.with_landing_disks(config.parse("target = path /\n")).targets[0]
    except CollectorError as e:
        assert "target path /: " in str(e)
    else:
        assert landed.kind == "disk" and landed.source.startswith(("/dev/", "UUID="))


def test_ram_target_only_when_spelled_out() -> None:
    loaded = config.parse("target = ram /tmp/crash\ntarget = path /var/crash\n")
    assert loaded.targets == (Target("ram", "", "/tmp/crash"), Target("path", "", "/var/crash"))
    assert config.parse(config.render(loaded)) == loaded
    # build-initramfs records disks for path targets only; a ram target stays RAM.
    landed = mounts.with_landing_disks(loaded, mounts.parse_mountinfo("22 1 8:2 / / rw - ext4 /dev/sda2 rw\n"))
    assert landed.targets[0] == Target("ram", "", "/tmp/crash")
    assert landed.targets[1].kind == "disk" and landed.targets[1].directory == "/var/crash"


def test_the_image_gets_the_modules_of_the_disk_a_path_lands_on() -> None:
    landed = mounts.with_landing_disks(config.parse("target = path /var/crash\n"),
                                       mounts.parse_mountinfo("22 1 8:2 / / rw - xfs /dev/sda2 rw\n"))
    assert {"xfs", "virtio_blk", "sd_mod", "nvme", "ahci"} <= set(arm.kernel_modules_for(landed))


def test_capture_job_refuses_a_path_target_without_a_device(tmp_path: Path) -> None:
    loaded = config.parse(f"target = path {tmp_path}/crash\n")
    with pytest.raises(capture.TargetNotReady, match="no device recorded for path .*rebuild the image"):
        capture._bring_up(loaded.targets[0], 0, loaded, [])
    assert not (tmp_path / "crash").exists()


def test_capture_job_writes_to_ram_only_for_a_ram_target_and_says_so(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    loaded = config.parse(f"target = ram {tmp_path}/crash\n")
    assert capture._bring_up(loaded.targets[0], 0, loaded, []) == f"{tmp_path}/crash"
    assert "is this capture environment's RAM: the dump is lost at final_action" in capsys.readouterr().err


# status: where each target lands, from the image the capture kernel will run --------------------

def image_with_config(tmp_path: Path, text: str) -> Path:
    """A capture initramfs (zstd cpio) that carries ``text`` as /etc/vmcore-collector.conf, and
    the manifest build-initramfs writes (for the running kernel)."""
    tree = tmp_path / "tree"
    (tree / "etc" / "vmcore-collector").mkdir(parents=True)
    (tree / "etc" / "vmcore-collector.conf").write_text(text)
    (tree / arm.IMAGE_MANIFEST).write_text(arm._image_manifest_text(os.uname().release))
    image = tmp_path / "capture.img"
    subprocess.run(f"find . | cpio -o -H newc --quiet | zstd -q -o {image}", shell=True, cwd=tree, check=True)
    return image


def run_status(tmp_path: Path, user_config: str, image: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setattr(arm, "crash_kernel_reserved", lambda: 256 << 20)
    monkeypatch.setattr(arm, "crash_kernel_loaded", lambda: True)
    conf = tmp_path / "vmcore-collector.conf"
    conf.write_text(user_config)
    if image.exists():  # the image was built after the configuration's last change
        os.utime(conf, (image.stat().st_mtime - 1, image.stat().st_mtime - 1))
    args = arm.build_parser().parse_args(["status", "--config", str(conf), "--initrd", str(image)])
    assert isinstance(args, argparse.Namespace)
    status = arm.status(args)
    return status, capsys.readouterr().out


def test_status_says_where_a_path_target_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    image = image_with_config(tmp_path, "target = disk /dev/null ext4 /var/crash\n")
    status, out = run_status(tmp_path, "target = path /var/crash\n", image, monkeypatch, capsys)
    assert ("ok   target path /var/crash: the capture kernel saves to /var/crash on /dev/null (ext4), "
            "which it mounts: reachable") in out
    assert status == 0


def test_status_refuses_a_target_in_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    image = image_with_config(tmp_path, "target = ram /var/crash\n")
    status, out = run_status(tmp_path, "target = ram /var/crash\n", image, monkeypatch, capsys)
    assert "FAIL target ram /var/crash: the capture kernel saves to /var/crash in its own RAM: " in out
    assert "a dump there is lost at final_action" in out
    assert status == 1


def test_status_refuses_an_image_that_writes_a_path_target_to_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # What images built before this rule carry for Fedora's default kdump.conf.
    image = image_with_config(tmp_path, "target = path /var/crash\n")
    status, out = run_status(tmp_path, "target = path /var/crash\n", image, monkeypatch, capsys)
    assert "FAIL target path /var/crash: the capture kernel saves to no device" in out
    assert "rebuild the image" in out
    assert status == 1


def test_status_without_an_image_reads_where_building_one_would_land(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(mounts, "MOUNTINFO", str(tmp_path / "mountinfo"))
    (tmp_path / "mountinfo").write_text("1 0 0:2 / / rw - tmpfs tmpfs rw\n")
    status, out = run_status(tmp_path, "target = path /var/crash\n", tmp_path / "missing.img", monkeypatch, capsys)
    assert "FAIL initramfs: " in out
    assert "FAIL targets: target path /var/crash: /var/crash is on tmpfs tmpfs (mounted at /), in RAM" in out
    assert status == 1


def test_status_refuses_an_unreadable_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "capture.img"
    image.write_bytes(b"not an image")
    status, out = run_status(tmp_path, "target = path /var/crash\n", image, monkeypatch, capsys)
    assert f"FAIL initramfs: {image} was not built by vmcore-collector" in out
    assert status == 1
