"""Where a folder of the running (first) kernel really is: which disk holds it.

A ``target = path DIRECTORY`` (and kdump.conf's ``path`` without a target line) means, as in
kdump-utils, "DIRECTORY on the file system that holds it in the running system", usually the
root file system. The capture kernel starts with nothing but its initramfs in RAM, so
``build-initramfs`` records here which device that is (UUID=... when it has one, the file
system type, the folder on it) and the capture job mounts that device: a dump written into the
capture environment's own folders would be lost at the reboot.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import CollectorError
from . import config as configuration

MOUNTINFO = "/proc/self/mountinfo"
# File systems whose contents live in RAM: the running kernel's and, in a capture kernel, its own.
RAM_FILESYSTEMS = ("tmpfs", "ramfs", "rootfs", "devtmpfs")


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo."""

    device_number: str  # "major:minor"
    root: str  # the folder of the file system mounted here ("/" unless a bind mount or subvolume)
    mount_point: str
    fstype: str
    source: str


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts in ``text`` (proc(5)'s mountinfo format), in mount order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 6 or len(fields) < separator + 3:
            continue
        mounts.append(Mount(fields[2], _unescape(fields[3]), _unescape(fields[4]), fields[separator + 1],
                            _unescape(fields[separator + 2])))
    return mounts


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_holding(path: str, mounts: Sequence[Mount]) -> Mount:
    """The mount that ``path`` (absolute, symlinks resolved) is on: the deepest mount point
    above it, the last one mounted when several share it (it hides the others)."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        if (point == "/" or path == point or path.startswith(point + "/")) and (
                best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    if best is None:
        raise CollectorError(f"{path}: on no mounted file system ({MOUNTINFO} lists no / mount)")
    return best


def describe_device(mount: Mount) -> str:
    """``UUID=...`` of the mount's block device, else its /dev path: what the capture kernel
    looks for (device names may differ there, UUIDs do not)."""
    device = _device_node(mount)
    found = subprocess.run(["blkid", "-o", "value", "-s", "UUID", device], check=False, capture_output=True,
                           text=True)
    uuid = found.stdout.strip() if found.returncode == 0 else ""
    return f"UUID={uuid}" if uuid else device


def _device_node(mount: Mount) -> str:
    # /dev/root (a root the kernel mounted itself) names no node: the device number does.
    try:
        uevent = Path(f"/sys/dev/block/{mount.device_number}/uevent").read_text()
    except OSError:
        return mount.source
    names = [line.split("=", 1)[1] for line in uevent.splitlines() if line.startswith("DEVNAME=")]
    return f"/dev/{names[0]}" if names else mount.source


def _stacked_device(mount: Mount) -> str | None:
    """'device-mapper (LVM, LUKS)' or 'software RAID' when the device needs assembling that the
    capture environment does not do, else None."""
    block = Path(f"/sys/dev/block/{mount.device_number}")
    if (block / "dm").is_dir():
        return "device-mapper (LVM, LUKS)"
    if (block / "md").is_dir():
        return "software RAID (md)"
    return None


def landing_disk(target: configuration.Target, mounts: Sequence[Mount],
                 device_of: Callable[[Mount], str] = describe_device,
                 stacked: Callable[[Mount], str | None] = _stacked_device) -> configuration.Target:
    """The disk target a ``path`` target lands on: the device holding its folder here, and
    the folder on that device. A folder in RAM or on a network or virtual file system is
    refused with one line saying what to configure instead."""
    path = os.path.realpath(target.directory)
    mount = mount_holding(path, mounts)
    where = (f"target path {target.directory}: {path} is on {mount.fstype} {mount.source} "
             f"(mounted at {mount.mount_point})")
    if mount.fstype in RAM_FILESYSTEMS:
        raise CollectorError(f"{where}, in RAM: a dump there is lost at the reboot; "
                             "configure 'target = disk DEVICE FSTYPE DIRECTORY' (or 'target = ram' to mean RAM)")
    if not mount.source.startswith("/dev/"):
        raise CollectorError(f"{where}, not a local disk: configure that target explicitly "
                             "(target = disk, nfs or ssh)")
    reason = stacked(mount)
    if reason is not None:
        raise CollectorError(f"{where}, a {reason} device the capture environment does not assemble: "
                             "configure a target on a plain partition, nfs or ssh")
    directory = posixpath.normpath(posixpath.join(mount.root, posixpath.relpath(path, mount.mount_point)))
    return configuration.Target("disk", device_of(mount), directory, mount.fstype)


def with_landing_disks(config: configuration.Config, mounts: Sequence[Mount] | None = None) -> configuration.Config:
    """``config`` with every ``path`` target replaced by the disk target it lands on
    (``mounts``: this machine's, from /proc/self/mountinfo, unless given)."""
    if not any(target.kind == "path" for target in config.targets):
        return config
    if mounts is None:
        mounts = parse_mountinfo(Path(MOUNTINFO).read_text())
    return replace(config, targets=tuple(landing_disk(target, mounts) if target.kind == "path" else target
                                         for target in config.targets))
