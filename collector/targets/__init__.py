"""Where dumps go. Targets know files and directories, never pages or formats.

Every target (local disk, NFS mount, SSH server) offers the same small interface: make a dump
directory, create a file in it that formats write at offsets (a Sink), sync, rename into place,
report free space.
"""

from __future__ import annotations

from typing import Protocol

from ..sink import Sink


class TargetFile(Sink, Protocol):
    def sync(self) -> None:
        """Make everything written so far durable on the target."""

    def close(self) -> None: ...


class Target(Protocol):
    description: str

    def make_dump_dir(self, name: str) -> str:
        """Create a private dump directory called ``name`` (or a free variant); return its path."""

    def create(self, path: str) -> TargetFile:
        """Create (truncate) a private file for writing at offsets."""

    def commit(self, tmp_path: str, final_path: str) -> None:
        """Atomically give a complete file its final name, durably."""

    def free_space(self, path: str) -> int:
        """Bytes available to us under ``path``."""

    def close(self) -> None: ...


class Appender:
    """Sequential writes onto a TargetFile, for the flattened stream."""

    def __init__(self, file: TargetFile) -> None:
        self.file = file
        self.offset = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write_at(self.offset, data)
        self.offset += len(data)
