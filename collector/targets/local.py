"""Local file system target (also an NFS mount): dump directories, files written at offsets,
and retention (how many old dumps to keep, how much space to leave free)."""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from typing import Callable

# Dump directories this tool makes: <host>-YYYY-MM-DD-HH:MM:SS, "-N" added on a name clash.
DUMP_DIR_NAME = re.compile(r"^.+-(\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d)(?:-(\d+))?$")
# Free space is checked again after this many bytes written (a statvfs per 64 MiB).
FREE_CHECK_BYTES = 64 << 20


@dataclass(frozen=True)
class Retention:
    """Keep at most ``keep_dumps`` dumps (the new one included) and at least ``min_free`` bytes
    free on the file system: old dumps are removed first; a dump that would eat into
    ``min_free`` stops there, incomplete but readable, instead of filling the disk."""

    keep_dumps: int | None = None
    min_free: int = 0


class LocalFile:
    """A TargetFile over a regular file, written with pwrite."""

    def __init__(self, path: str, min_free: int = 0, flags: int = 0) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | flags, 0o600)
        self.min_free = min_free
        self._unchecked = FREE_CHECK_BYTES if min_free else 0

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.min_free:
            self._keep_free(len(data))
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

    def _keep_free(self, length: int) -> None:
        self._unchecked += length
        if self._unchecked < FREE_CHECK_BYTES:
            return
        st = os.fstatvfs(self.fd)
        if st.f_bavail * st.f_frsize - FREE_CHECK_BYTES < self.min_free:
            raise OSError(errno.ENOSPC, f"stopped to keep {self.min_free} bytes free (--min-free)")
        self._unchecked = 0

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class LocalTarget:
    """Dumps under a directory of a mounted file system."""

    streams_only = False

    def __init__(self, root: str, retention: Retention = Retention(),
                 warn: Callable[[str], None] = lambda message: None, file_flags: int = 0) -> None:
        self.root = root
        self.description = root
        self.retention = retention
        self.warn = warn
        self.file_flags = file_flags  # added to os.open's flags for every file created

    def make_dump_dir(self, name: str) -> str:
        """Create ``root/name`` (0700), or ``name-1``, ``name-2``... if it exists, after removing
        the old dumps that retention asks to remove."""
        os.makedirs(self.root, exist_ok=True)
        self._prune()
        for attempt in range(1000):
            path = os.path.join(self.root, name if attempt == 0 else f"{name}-{attempt}")
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"no free dump directory name under {self.root}")

    def create(self, path: str) -> LocalFile:
        return LocalFile(path, self.retention.min_free, self.file_flags)

    def _prune(self) -> None:
        """Remove the oldest dump directories until at most keep_dumps - 1 remain and min_free
        bytes are free (or no old dump is left)."""
        keep, min_free = self.retention.keep_dumps, self.retention.min_free
        if keep is None and not min_free:
            return
        dumps = []
        for entry in os.scandir(self.root):
            named = DUMP_DIR_NAME.match(entry.name)
            if named and entry.is_dir(follow_symlinks=False):
                dumps.append(((named.group(1), int(named.group(2) or 0)), entry.path))
        dumps.sort()  # oldest first: by the date in the name, then the clash suffix
        while dumps and ((keep is not None and len(dumps) >= keep) or self.free_space(self.root) < min_free):
            _, oldest = dumps.pop(0)
            self.warn(f"retention: removing old dump {oldest}")
            shutil.rmtree(oldest)

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
