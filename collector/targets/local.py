"""Local file system target (also an NFS mount): dump directories, files written at offsets."""

from __future__ import annotations

import os
from typing import BinaryIO


class LocalFile:
    """A Sink over a regular file, written with pwrite."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written

    def reserve(self, offset: int, length: int) -> None:
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError:
            pass  # not supported or already full: writes will report the real error

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class StreamFile:
    """A sequential stream (stdout or a pipe) for formats that never seek: flattened."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.stream.write(data)

    def sync(self) -> None:
        self.stream.flush()


def make_dump_dir(root: str, name: str) -> str:
    """Create ``root/name`` (0700), or ``name-1``, ``name-2``... if it exists; return its path."""
    os.makedirs(root, exist_ok=True)
    for attempt in range(1000):
        path = os.path.join(root, name if attempt == 0 else f"{name}-{attempt}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free dump directory name under {root}")


def commit_file(tmp_path: str, final_path: str) -> None:
    """Make a fully written file visible under its final name, durably."""
    os.rename(tmp_path, final_path)
    sync_dir(os.path.dirname(final_path) or ".")


def sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
