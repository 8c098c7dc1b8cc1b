"""NFS target: DEST ``nfs://server[:port]/export/path``, mounted with the kernel's NFS client
into a private mount point and then written exactly like a local directory (LocalTarget).

The export is mounted with ``mount -t nfs`` (mount.nfs when installed, else the kernel parses
the options itself, hence ``addr=``), NFSv4.2 first, then NFSv3 with ``nolock``: a capture
kernel runs no rpc.statd. Mount options and why:

- ``soft,timeo=100,retrans=3``: a server that stops answering makes I/O fail with EIO after
  a minute or two (a 10 s timeout, growing by 10 s with each of 3 retransmissions) instead of
  blocking forever (``hard``). In a capture kernel nobody can step in, and the machine must get back to work:
  EIO is handled like any failing target (the dump is ended as incomplete, exit 3), and the
  kernel log is saved before the dump. A 10 s first timeout rides out a busy server.
- ``proto=tcp``: 1 MiB writes over UDP fragment badly, and NFSv4 needs TCP anyway.
- ``retry=0``: mount.nfs otherwise retries a failing mount for 2 minutes; MOUNT_TIMEOUT bounds
  all attempts together, and a mount still hanging then is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote, urlsplit

from ..errors import CollectorError, TargetUnreachable
from .local import LocalFile, LocalTarget, Retention

MOUNT_TIMEOUT = 30.0    # seconds for all mount attempts together
UMOUNT_TIMEOUT = 30.0
KILL_WAIT = 5.0         # for a killed mount or umount to be reaped
COMMON_OPTIONS = "soft,timeo=100,retrans=3,proto=tcp,retry=0"
# (version label, options), tried in order while time is left.
MOUNT_ATTEMPTS = (("NFSv4.2", "vers=4.2"), ("NFSv3", "vers=3,nolock"))

Warn = Callable[[str], None]


@dataclass(frozen=True)
class NfsUrl:
    host: str
    port: int | None  # None: the protocol's own (2049 for v4, rpcbind's answer for v3)
    export: str

    @classmethod
    def parse(cls, dest: str) -> NfsUrl:
        parts = urlsplit(dest)
        try:
            port = parts.port
        except ValueError:
            raise CollectorError(f"{dest}: bad port") from None
        if parts.scheme != "nfs" or not parts.hostname or not parts.path.startswith("/") or parts.username:
            raise CollectorError(f"{dest}: NFS destinations look like nfs://server[:port]/export/path")
        return cls(parts.hostname, port, unquote(parts.path).rstrip("/") or "/")

    def __str__(self) -> str:
        return f"nfs://{self._bracketed_host}{'' if self.port is None else f':{self.port}'}{self.export}"

    @property
    def device(self) -> str:
        """The export as mount names it: ``server:/path``."""
        return f"{self._bracketed_host}:{self.export}"

    @property
    def _bracketed_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def open_nfs_target(dest: str, warn: Warn, retention: Retention = Retention()) -> NfsTarget:
    """Mount ``dest`` on a fresh private mount point; TargetUnreachable if it cannot be mounted."""
    url = NfsUrl.parse(dest)
    mount_point = tempfile.mkdtemp(prefix="vmcore-save-nfs-")
    try:
        _mount(url, mount_point)
    except BaseException:
        with contextlib.suppress(OSError):  # a mount killed just as it succeeded leaves it busy
            os.rmdir(mount_point)
        raise
    return NfsTarget(url, mount_point, warn, retention)


class NfsTarget:
    """A mounted export, written through a LocalTarget on the mount point. Paths handed out
    are ``nfs://server/export/...`` so that messages name the dump where it stays; they are
    mapped to the mount point for every file operation."""

    streams_only = False

    def __init__(self, url: NfsUrl, mount_point: str, warn: Warn, retention: Retention) -> None:
        self.description = str(url)
        self.mount_point = mount_point
        self.mounted = True
        self.local = LocalTarget(mount_point, retention, warn)
        self.warn = warn

    def make_dump_dir(self, name: str) -> str:
        return self._url_path(self.local.make_dump_dir(name))

    def create(self, path: str) -> LocalFile:
        return self.local.create(self._local_path(path))

    def commit(self, tmp_path: str, final_path: str) -> None:
        self.local.commit(self._local_path(tmp_path), self._local_path(final_path))

    def free_space(self, path: str) -> int:
        return self.local.free_space(self._local_path(path))

    def close(self) -> None:
        """Unmount (forcibly and lazily if the server does not answer) and remove the mount point."""
        if not self.mounted:
            return
        rc, output = _run_bounded(["umount", self.mount_point], UMOUNT_TIMEOUT)
        if rc != 0:
            self.warn(f"warning: {self.description}: unmounting failed ({output or 'timed out'}); "
                      "detaching it lazily")
            _run_bounded(["umount", "-f", "-l", self.mount_point], UMOUNT_TIMEOUT)
        with contextlib.suppress(OSError):  # still mounted after all: an empty folder is harmless
            os.rmdir(self.mount_point)
        self.mounted = False

    def _local_path(self, path: str) -> str:
        if not path.startswith(self.description):
            raise ValueError(f"{path} is not below {self.description}")
        return self.mount_point + path[len(self.description):]

    def _url_path(self, local_path: str) -> str:
        return self.description + local_path[len(self.mount_point):]


def _mount(url: NfsUrl, mount_point: str) -> None:
    """Mount with each of MOUNT_ATTEMPTS in turn until one works, all within MOUNT_TIMEOUT.
    A server that answers with an error gets the next version; a mount that hangs until the
    deadline means the server cannot be reached, and trying another version would not help."""
    address = _resolve(url)
    port = "" if url.port is None else f",port={url.port}"
    deadline = time.monotonic() + MOUNT_TIMEOUT
    failures: list[str] = []
    for label, version_options in MOUNT_ATTEMPTS:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        options = f"{version_options},{COMMON_OPTIONS},addr={address}{port}"
        rc, output = _run_bounded(["mount", "-t", "nfs", "-o", options, url.device, mount_point], remaining)
        if rc == 0:
            return
        if rc is None:
            failures.append(f"{label}: no answer within {MOUNT_TIMEOUT:.0f} s")
            break
        failures.append(f"{label}: {output or f'mount exited with status {rc}'}")
    raise TargetUnreachable(f"{url}: cannot mount: {'; '.join(failures)}")


def _resolve(url: NfsUrl) -> str:
    """The server's IP address: the kernel's own option parser takes no host names."""
    try:
        return socket.getaddrinfo(url.host, None, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as e:
        raise TargetUnreachable(f"{url}: cannot resolve {url.host}: {e.strerror}") from None


def _run_bounded(argv: list[str], timeout: float) -> tuple[int | None, str]:
    """Run ``argv`` for at most ``timeout`` seconds; (exit status or None if killed, its output
    joined into one line). mount forks mount.nfs, so the whole process group is killed; the
    output goes to a file because a killed helper could keep a pipe open."""
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]} not found"
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            rc: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            try:
                process.wait(timeout=KILL_WAIT)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel: leave it, the caller reports the timeout
            rc = None
        output.seek(0)
        return rc, " ".join(output.read().decode(errors="replace").split())
