"""Where dumps go. Targets know files and directories, never pages or formats.

Every target (local disk, NFS mount, SSH server) offers the same small interface: make a dump
directory, create a file in it that formats write at offsets (a Sink), sync, rename into place,
report free space.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import CollectorError
from ..sink import Sink
from .local import LocalTarget, Retention

SCHEMES = ("ssh", "nfs")
DESTINATION_FORMS = "a directory, nfs://server/export/dir or ssh://user@host/dir"
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


class TargetFile(Sink, Protocol):
    def sync(self) -> None:
        """Make everything written so far durable on the target."""

    def close(self) -> None: ...


class Target(Protocol):
    description: str
    streams_only: bool  # True: only sequential writes, i.e. the flattened format

    def make_dump_dir(self, name: str) -> str:
        """Create a private dump directory called ``name`` (or a free variant); return its path."""

    def create(self, path: str) -> TargetFile:
        """Create (truncate) a private file for writing at offsets."""

    def commit(self, tmp_path: str, final_path: str) -> None:
        """Atomically give a complete file its final name, durably."""

    def finish_dump(self, directory: str) -> None:
        """The dump in ``directory`` is complete: apply retention (keep_dumps), if any."""

    def free_space(self, path: str) -> int:
        """Bytes available to us under ``path``; -1 if the target cannot tell."""

    def remove(self, path: str) -> None:
        """Remove a file this run created (vmcore-collector status's probe file)."""

    def close(self) -> None: ...


class Appender:
    """Sequential writes onto a TargetFile, for the flattened stream."""

    def __init__(self, file: TargetFile) -> None:
        self.file = file
        self.offset = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write_at(self.offset, data)
        self.offset += len(data)


@dataclass(frozen=True)
class SshOptions:
    key_file: str | None = None
    known_hosts: str | None = None
    accept_unknown_host_key: bool = False
    retries: int = 5


def open_target(dest: str, ssh: SshOptions, warn: Callable[[str], None],
                retention: Retention = Retention()) -> Target:
    """The target for DEST: ``ssh://user@host[:port]/path``, ``nfs://server[:port]/export/path``
    or a local directory."""
    if dest.startswith("ssh://"):
        from .ssh import (
            open_ssh_target,  # imports paramiko (30 MB, 0.15 s): only for SSH dumps
        )

        return open_ssh_target(dest, ssh, warn)
    if dest.startswith("nfs://"):
        from .nfs import open_nfs_target

        return open_nfs_target(dest, warn, retention)
    return LocalTarget(dest, retention, warn)


def check_destination(dest: str, option: str) -> None:
    """Refuse a destination of an unknown kind (``ftp://...`` is not a local directory)."""
    url = _URL.match(dest)
    if url is not None and url.group("scheme") not in SCHEMES:
        raise CollectorError(f"{option} {dest}: {url.group('scheme')}:// destinations are not supported; "
                             f"give {DESTINATION_FORMS}")
