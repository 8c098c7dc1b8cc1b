"""Local file system target (also an NFS mount): dump directories, files written at offsets,
one-file outputs (-o), and retention (how many old dumps to keep, how much space to leave free).

Retention never leaves a target with fewer complete dumps than it had unless a new complete
dump took their place, and it only ever removes directories this tool made (they hold
MARKER_NAME; kdump-utils names its directories the same way, <address>-<date>, and they are
never touched):

- keep_dumps: once the new dump is complete (finish_dump), the oldest of our other dumps go
  until keep_dumps remain, the new one included. A dump that ends incomplete removes nothing.
- min_free: nothing is removed up front. When writing the new dump would leave less than
  min_free bytes free, the oldest of our other dumps is removed to make room, but only if the
  space they all hold, with what is free, can take the rest of the new dump at its largest
  (dump_size_bound: every page uncompressed); otherwise none is removed and the new dump stops
  there, incomplete but readable, next to the old ones.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import CollectorError

# Dump directories this tool makes: <host>-YYYY-MM-DD-HH:MM:SS, "-N" added on a name clash.
DUMP_DIR_NAME = re.compile(r"^.+-(\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d)(?:-(\d+))?$")
# In every dump directory this tool makes: what retention may remove (nothing else).
MARKER_NAME = ".vmcore-collector"
MARKER_TEXT = b"Made by vmcore-save: --keep-dumps and --min-free may remove this directory.\n"
# Free space is checked again after this many bytes written (a statvfs per 64 MiB).
FREE_CHECK_BYTES = 64 << 20
PROC_VMCORE = "/proc/vmcore"


@dataclass(frozen=True)
class Retention:
    """Keep at most ``keep_dumps`` dumps (the new one included) and at least ``min_free`` bytes
    free on the file system (module docstring). ``dump_size_bound`` is the most bytes the new
    dump can take: old dumps are removed for min_free only if then that much surely fits."""

    keep_dumps: int | None = None
    min_free: int = 0
    dump_size_bound: int = 0


class LocalFile:
    """A TargetFile over a new private regular file (or an existing device), written with pwrite.

    ``make_room(end)`` is asked for space when a write would leave less than ``min_free``
    bytes free (``end``: the file's size so far); it returns whether it freed some."""

    def __init__(self, path: str, min_free: int = 0, flags: int = 0,
                 make_room: Callable[[int], bool] = lambda end: False, create: bool = True) -> None:
        self.path = path
        # O_EXCL: a file is never written over; the mode is set again because O_CREAT's is
        # filtered by the umask, and 0600 is what a dump of all of memory must have.
        creation = os.O_CREAT | os.O_EXCL if create else 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | creation | flags, 0o600)
        if stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.fchmod(self.fd, 0o600)
        self.min_free = min_free
        self.make_room = make_room
        self.end = 0
        self._unchecked = FREE_CHECK_BYTES if min_free else 0

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.min_free:
            self._keep_free(len(data))
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written
        self.end = max(self.end, offset)

    def reserve(self, offset: int, length: int) -> None:
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError:
            pass  # not supported or already full: writes will report the real error

    def _keep_free(self, length: int) -> None:
        self._unchecked += length
        if self._unchecked < FREE_CHECK_BYTES:
            return
        # Room for what may be written before the next check: this write, or FREE_CHECK_BYTES.
        while self._free() - max(FREE_CHECK_BYTES, length) < self.min_free:
            if not self.make_room(self.end):
                raise OSError(errno.ENOSPC, f"stopped to keep {self.min_free} bytes free (--min-free)")
        self._unchecked = 0

    def _free(self) -> int:
        st = os.fstatvfs(self.fd)
        return st.f_bavail * st.f_frsize

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as e:
            if e.errno != errno.EINVAL:  # a device such as /dev/null: nothing to make durable
                raise

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
        self.dump_dir: str | None = None  # the one this run made: never a candidate for removal

    def make_dump_dir(self, name: str) -> str:
        """Create ``root/name`` (0700, with our marker), or ``name-1``, ``name-2``... if it exists."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise NotADirectoryError(errno.ENOTDIR, "a file, not a directory (DEST must be a directory)", self.root)
        os.makedirs(self.root, exist_ok=True)
        for attempt in range(1000):
            path = os.path.join(self.root, name if attempt == 0 else f"{name}-{attempt}")
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            try:
                _write_marker(path)
            except OSError:  # e.g. a full disk: leave no directory that retention could not remove
                shutil.rmtree(path, ignore_errors=True)
                raise
            self.dump_dir = path
            return path
        raise FileExistsError(errno.EEXIST, "no free dump directory name", self.root)

    def create(self, path: str) -> LocalFile:
        return LocalFile(path, self.retention.min_free, self.file_flags, self._make_room)

    def finish_dump(self, directory: str) -> None:
        """The dump in ``directory`` is complete: remove the oldest of our other dumps until at
        most keep_dumps remain (this one included)."""
        keep = self.retention.keep_dumps
        if keep is None:
            return
        old = self._old_dumps()
        for oldest in old[:max(0, len(old) - (keep - 1))]:
            self._remove(oldest, f"--keep-dumps {keep}")

    def _make_room(self, end: int) -> bool:
        """Remove the oldest of our other dumps for min_free, if with all of them gone the
        rest of the new dump (written up to ``end``) surely fits; whether one was removed."""
        old = self._old_dumps()
        if not old or not self.retention.dump_size_bound:  # no bound: no removal is known to help
            return False
        rest = max(0, self.retention.dump_size_bound - end)
        room = self.free_space(self.root) + sum(_disk_usage(path) for path in old) - self.retention.min_free
        if room - FREE_CHECK_BYTES < rest:
            return False
        return self._remove(old[0], f"--min-free {self.retention.min_free}")

    def _remove(self, path: str, why: str) -> bool:
        self.warn(f"retention ({why}): removing old dump {path}")
        try:
            shutil.rmtree(path)
        except OSError as e:
            self.warn(f"warning: retention: cannot remove {path}: {e.strerror or e}")
            return False
        return True

    def _old_dumps(self) -> list[str]:
        """Our dump directories other than this run's, oldest first (by the date in the name,
        then the clash suffix)."""
        dumps = []
        for entry in os.scandir(self.root):
            named = DUMP_DIR_NAME.match(entry.name)
            if (named and entry.path != self.dump_dir and entry.is_dir(follow_symlinks=False)
                    and os.path.isfile(os.path.join(entry.path, MARKER_NAME))):
                dumps.append(((named.group(1), int(named.group(2) or 0)), entry.path))
        return [path for _, path in sorted(dumps)]

    def commit(self, tmp_path: str, final_path: str) -> None:
        os.rename(tmp_path, final_path)
        sync_dir(os.path.dirname(final_path) or ".")

    def free_space(self, path: str) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def remove(self, path: str) -> None:
        os.remove(path)

    def close(self) -> None:
        """Nothing to release."""


def _write_marker(directory: str) -> None:
    marker = LocalFile(os.path.join(directory, MARKER_NAME))
    try:
        marker.write_at(0, MARKER_TEXT)
    finally:
        marker.close()


def _disk_usage(path: str) -> int:
    """Bytes the files below ``path`` occupy on disk."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                pass  # gone meanwhile: it frees nothing more
    return total


def check_output(path: str, force: bool, inputs: Sequence[str], option: str) -> None:
    """Refuse, before anything is written, an output file that is one of ``inputs`` or
    /proc/vmcore (always), a directory, or an existing file (unless ``force``)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CollectorError(f"{option} {path}: {e.strerror or e}") from None
    for source in (*inputs, PROC_VMCORE):
        try:
            same = os.path.samestat(st, os.stat(source))
        except OSError:
            same = False
        if same:
            raise CollectorError(f"{option} {path} is the input {source}: refusing to write over it "
                                 "(even with --force); give another file name")
    if stat.S_ISDIR(st.st_mode):
        raise CollectorError(f"{option} {path} is a directory: give a file name")
    if stat.S_ISREG(st.st_mode) and not force:
        raise CollectorError(f"{option} {path} exists: refusing to overwrite it; give a new name, or "
                             "--force to replace it once the new file is complete")


class OutputFile:
    """One output file (-o, vmcore-rearrange's OUT) that never destroys what was there: a new
    file is created; an existing regular file (with force) is replaced only when the new one
    is complete, by rename from ``FILE-incomplete``; a device is written in place."""

    def __init__(self, path: str, min_free: int = 0) -> None:
        self.final_path = path
        try:
            mode: int | None = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        self.path = path if mode is None or not stat.S_ISREG(mode) else _free_name(f"{path}-incomplete")
        self.file = LocalFile(self.path, min_free, create=mode is None or stat.S_ISREG(mode))

    @property
    def replaces(self) -> bool:
        """Whether a complete file is renamed over an existing one."""
        return self.path != self.final_path

    def commit(self) -> str:
        """The file is complete: give it its final name; returns that name."""
        if self.replaces:
            os.rename(self.path, self.final_path)
            sync_dir(os.path.dirname(self.final_path) or ".")
        return self.final_path


def _free_name(path: str) -> str:
    """``path``, or ``path-1``, ``path-2``... whichever does not exist."""
    candidate, attempt = path, 0
    while os.path.lexists(candidate):
        attempt += 1
        candidate = f"{path}-{attempt}"
    return candidate


def sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
