"""vmcore-collector status's checks of the targets from the running kernel: the SSH key and
known_hosts, and a probe file created, written, synced and removed on each target through the
target classes the capture kernel uses (collector/targets), so that what status calls usable
is what the save job can write to."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import CollectorError
from ..targets import SshOptions, open_target
from . import config as configuration

PROBE_NAME = ".vmcore-collector-probe"


class NotProbed(Exception):
    """The target cannot be tried from the running kernel (the reason says why); not a failure."""


def probe(dest: str, root: str, ssh: SshOptions) -> str:
    """Create, write, sync and remove a probe file in ``root`` of DEST; returns where. Raises
    OSError or CollectorError (TargetUnreachable) saying why not, NotProbed if ``root`` does
    not exist yet on a local file system (the save job creates it; a probe leaves nothing)."""
    if "://" not in dest and not os.path.isdir(root):
        raise NotProbed(f"{root} does not exist yet (the capture creates it)")
    target = open_target(dest, ssh, lambda message: None)
    try:
        path = f"{root.rstrip('/')}/{PROBE_NAME}-{os.getpid()}"
        file = target.create(path)
        try:
            file.write_at(0, b"vmcore-collector status probe\n")
            file.sync()
        finally:
            file.close()
        target.remove(path)
        return path
    finally:
        target.close()


def probe_target(target: configuration.Target, config: configuration.Config) -> str:
    """Probe a configured target where the running kernel sees it; the line's text."""
    ssh = SshOptions(key_file=config.ssh_key, known_hosts=config.known_hosts, retries=0)
    if target.kind == "ram":
        raise NotProbed("the capture environment's RAM")
    if target.kind == "path":
        dest = root = target.directory
    elif target.kind == "disk":
        mount_point = mount_point_of(target.source)
        if mount_point is None:
            raise NotProbed(f"{target.source} is not mounted here (the capture kernel mounts it)")
        dest = root = mount_point.rstrip("/") + target.directory
    elif target.kind == "ssh":
        dest, root = target.ssh_url(), target.directory
    else:
        dest = target.nfs_url()
        root = dest
    try:
        return f"probe file created and removed ({probe(dest, root, ssh)})"
    except OSError as e:
        raise CollectorError(f"probe file in {root}: {e.strerror or e}") from None


def mount_point_of(device: str, mounts: str = "/proc/self/mounts") -> str | None:
    """Where ``device`` (/dev/..., UUID=..., LABEL=...) is mounted here, None if nowhere."""
    if device.startswith(("UUID=", "LABEL=")):
        key, _, value = device.partition("=")
        device = f"/dev/disk/by-{key.lower()}/{value}"
    if not os.path.exists(device):
        return None
    real = os.path.realpath(device)
    for line in Path(mounts).read_text().splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0].startswith("/") and os.path.realpath(fields[0]) == real:
            return fields[1].replace("\\040", " ")
    return None


def ssh_key_problem(key_file: str | None) -> str | None:
    if not key_file:
        return "no ssh_key configured"
    if not os.access(key_file, os.R_OK):
        return f"{key_file}: {os.strerror(errno.ENOENT if not os.path.exists(key_file) else errno.EACCES)}"
    return None


def known_hosts_holds(known_hosts: str | None, host: str, port: int) -> str | None:
    """None if ``known_hosts`` has a key for the server, else why not."""
    if not known_hosts:
        return "no known_hosts configured"
    import paramiko  # only with an SSH target

    try:
        keys = paramiko.HostKeys(known_hosts)
    except OSError as e:
        return f"{known_hosts}: {e.strerror or e}"
    name = host if port == 22 else f"[{host}]:{port}"
    if keys.lookup(name) is None:
        return (f"{known_hosts} holds no host key for {name}: add it "
                f"(ssh-keyscan{'' if port == 22 else f' -p {port}'} {host} >> {known_hosts}, then check it)")
    return None
