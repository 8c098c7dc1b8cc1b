"""Local file system target (also an NFS mount): dump directories, files written at offsets."""

from __future__ import annotations

import os


class LocalFile:
    """A TargetFile over a regular file, written with pwrite."""

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


class LocalTarget:
    """Dumps under a directory of a mounted file system."""

    streams_only = False

    def __init__(self, root: str) -> None:
        self.root = root
        self.description = root

    def make_dump_dir(self, name: str) -> str:
        """Create ``root/name`` (0700), or ``name-1``, ``name-2``... if it exists."""
        os.makedirs(self.root, exist_ok=True)
        for attempt in range(1000):
            path = os.path.join(self.root, name if attempt == 0 else f"{name}-{attempt}")
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"no free dump directory name under {self.root}")

    def create(self, path: str) -> LocalFile:
        return LocalFile(path)

    def commit(self, tmp_path: str, final_path: str) -> None:
        os.rename(tmp_path, final_path)
        sync_dir(os.path.dirname(final_path) or ".")

    def free_space(self, path: str) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        """Nothing to release."""


def sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
