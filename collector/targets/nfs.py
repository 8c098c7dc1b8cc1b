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
  Not enough on its own: see below.
- ``proto=tcp``: 1 MiB writes over UDP fragment badly, and NFSv4 needs TCP anyway.
- ``retry=0``: mount.nfs otherwise retries a failing mount for 2 minutes; MOUNT_TIMEOUT bounds
  all attempts together, and a mount still hanging then is killed.

``soft`` alone does not bound the time, and the page cache does not keep the order of writes;
measured in a real capture kernel whose server was frozen or killed mid-dump (tests/test_nfs_target.py):

- The kernel times an NFSv4 request out only once its TCP connection is broken (NFSv4 requests
  are never retransmitted on a live connection). A server that hangs with its connection open
  (a stopped or wedged daemon whose host still acknowledges TCP) blocked a write for ever: for
  11 minutes, until the server was resumed, and without a single kernel message.
- Through the page cache, writes never saw the server's errors (only fsync and close do, and
  each waits for the server again): a killed server made each write wait ~40 s and succeed,
  1 MiB per 40 s. And writeback sent page descriptors before the page data they point at: the
  server then held descriptors of 9 MiB of pages it never got, which read back as zeros.

So files on the mount are opened with O_DIRECT: each write is on the server before the next
one is made (what the server holds is what the writer wrote, in its order, so a dump cut short
there stays readable, its missing pages reported missing), the server's errors come back from
the write that met them, and close has nothing to flush. And every call on the mount runs under
a watchdog thread (NfsTarget._call): calls that have waited STALL_TIMEOUT in all since the
server's last answer (the reply count of the mount's transports in /proc/self/mountstats; a
slow server still answers, and waits add up across calls) give the server up, and so does an
EIO or ETIMEDOUT from the kernel (a killed server: about 40 s). From then on each call fails at
once with that error instead of touching the server again, calls still stuck are aborted with
``umount -f`` (MNT_FORCE kills the mount's RPCs and the blocked call returns), and the export
is detached with ``umount -f -l`` without trying a clean unmount first. A dump being written
ends incomplete (exit 3), or is saved again on the next ``--fallback``, a little over a minute
after the server went silent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from ..errors import CollectorError, TargetUnreachable
from .local import LocalFile, LocalTarget, Retention

MOUNT_TIMEOUT = 30.0    # seconds for all mount attempts together
UMOUNT_TIMEOUT = 30.0
KILL_WAIT = 5.0         # for a killed mount or umount to be reaped
# A call on the mount that has waited this long without the server answering any RPC gives the
# server up (module docstring). NFSv3's own soft timeout with these options is 100 s (10+20+30+40).
STALL_TIMEOUT = 60.0
FORCE_INTERVAL = 2.0    # once given up: a call still stuck this long is aborted (umount -f), again and again
FORCE_TIMEOUT = 10.0    # for one umount -f
WATCH_INTERVAL = 1.0    # how often the watchdog looks
# Errors from the NFS client that mean the server is gone (soft timeout; ETIMEDOUT with softerr).
SERVER_GONE_ERRNOS = frozenset({errno.EIO, errno.ETIMEDOUT})
COMMON_OPTIONS = "soft,timeo=100,retrans=3,proto=tcp,retry=0"
# (version label, options), tried in order while time is left.
MOUNT_ATTEMPTS = (("NFSv4.2", "vers=4.2"), ("NFSv3", "vers=3,nolock"))

Warn = Callable[[str], None]
T = TypeVar("T")


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
    mapped to the mount point for every file operation. Every file operation goes through
    _call, under the watchdog (module docstring)."""

    streams_only = False

    def __init__(self, url: NfsUrl, mount_point: str, warn: Warn, retention: Retention) -> None:
        self.description = str(url)
        self.mount_point = mount_point
        self.mounted = True
        # O_DIRECT: the server holds what was written, in the order written (module docstring).
        self.local = LocalTarget(mount_point, retention, warn, file_flags=os.O_DIRECT)
        self.warn = warn
        self.failure: OSError | None = None  # set once the server is given up
        self._busy_since: float | None = None  # when the call in progress started
        self._stop = threading.Event()
        self._forcer = _Forcer(mount_point)  # now, while no file on the mount is open
        self._watchdog = threading.Thread(target=self._watch, name="nfs-watchdog", daemon=True)
        self._watchdog.start()

    def make_dump_dir(self, name: str) -> str:
        return self._url_path(self._call(self.local.make_dump_dir, name))

    def create(self, path: str) -> NfsFile:
        return NfsFile(self, self._call(self.local.create, self._local_path(path)))

    def commit(self, tmp_path: str, final_path: str) -> None:
        self._call(self.local.commit, self._local_path(tmp_path), self._local_path(final_path))

    def finish_dump(self, directory: str) -> None:
        self._call(self.local.finish_dump, self._local_path(directory))

    def free_space(self, path: str) -> int:
        return self._call(self.local.free_space, self._local_path(path))

    def remove(self, path: str) -> None:
        self._call(self.local.remove, self._local_path(path))

    def close(self) -> None:
        """Unmount (forcibly and lazily if the server does not answer) and remove the mount point."""
        if not self.mounted:
            return
        self._stop.set()
        self._watchdog.join(FORCE_TIMEOUT + WATCH_INTERVAL)
        self._forcer.close()
        detach = self.failure is not None  # a given-up server would only make umount wait
        if not detach:
            rc, output = _run_bounded(["umount", self.mount_point], UMOUNT_TIMEOUT)
            if rc != 0:
                self.warn(f"warning: {self.description}: unmounting failed ({output or 'timed out'}); "
                          "detaching it lazily")
                detach = True
        if detach:
            _run_bounded(["umount", "-f", "-l", self.mount_point], UMOUNT_TIMEOUT)
        with contextlib.suppress(OSError):  # still mounted after all: an empty folder is harmless
            os.rmdir(self.mount_point)
        self.mounted = False

    def _call(self, function: Callable[..., T], *args: object, even_if_failed: bool = False) -> T:
        """``function(*args)``, one call on the mount, watched. Once the server is given up,
        calls fail at once with the error that gave it up (each would wait for the server
        again), except those that must run anyway (closing a file), and a call that returns
        after that fails too: it returned because it was aborted."""
        if self.failure is not None and not even_if_failed:
            raise self._failure_error()
        self._busy_since = time.monotonic()
        try:
            result = function(*args)
        except OSError as e:
            if self.failure is None and e.errno in SERVER_GONE_ERRNOS:
                self.failure = e
            if self.failure is None:
                raise
            # An aborted call may report anything (even the kernel-internal ERESTARTSYS, 512).
            raise self._failure_error() from None
        finally:
            self._busy_since = None
        if self.failure is not None:
            raise self._failure_error()
        return result

    def _failure_error(self) -> OSError:
        assert self.failure is not None
        return OSError(self.failure.errno, self.failure.strerror)

    def _watch(self) -> None:
        """The watchdog thread: gives the server up once calls on the mount have waited
        STALL_TIMEOUT in all since its last RPC reply (added up: a server may make each call
        wait less and still never answer); then aborts calls still stuck with umount -f (the
        mount stays while a file is open; if none is, every later call fails before touching
        it)."""
        answered, waited, forced_at, looked_at = None, 0.0, 0.0, time.monotonic()
        while not self._stop.wait(WATCH_INTERVAL):
            now = time.monotonic()
            replies = _rpc_replies(self.mount_point)
            busy_since = self._busy_since
            if replies is None:  # the server's answers cannot be seen: judge each call alone
                waited = 0.0 if busy_since is None else now - busy_since
            elif replies != answered:
                answered, waited = replies, 0.0
            elif busy_since is not None:
                waited += now - max(looked_at, busy_since)
            looked_at = now
            if busy_since is None:
                continue
            if self.failure is None:
                if waited < STALL_TIMEOUT:
                    continue
                self.failure = OSError(errno.EIO, f"the NFS server has not answered for {STALL_TIMEOUT:.0f} s")
                self.warn(f"warning: {self.description}: no answer for {STALL_TIMEOUT:.0f} s: "
                          "giving the server up, aborting its requests")
            elif now - max(busy_since, forced_at) < FORCE_INTERVAL:
                continue
            forced_at = now
            self._forcer.force()

    def _local_path(self, path: str) -> str:
        if not path.startswith(self.description):
            raise ValueError(f"{path} is not below {self.description}")
        return self.mount_point + path[len(self.description):]

    def _url_path(self, local_path: str) -> str:
        return self.description + local_path[len(self.mount_point):]


class NfsFile:
    """A file on the mount: a LocalFile whose every call goes through NfsTarget._call."""

    def __init__(self, target: NfsTarget, file: LocalFile) -> None:
        self.target = target
        self.file = file

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.target._call(self.file.write_at, offset, data)

    def reserve(self, offset: int, length: int) -> None:
        self.target._call(self.file.reserve, offset, length)

    def sync(self) -> None:
        self.target._call(self.file.sync)

    def close(self) -> None:
        """Always release the file, even from a given-up server (closing flushes, which may
        wait for it: the watchdog aborts that). Its error then was reported already."""
        try:
            self.target._call(self.file.close, even_if_failed=True)
        except OSError:
            if self.target.failure is None:
                raise


class _Forcer:
    """``umount -f MOUNT_POINT`` on request, run by a shell started before any file on the mount
    is opened. A process forked later inherits the open dump file, and closing it (before exec)
    flushes the file to the server: that child would hang like the writer it was to rescue (it
    did, for ever, in nfs4_file_flush, before files were opened with O_DIRECT; with O_DIRECT
    there should be nothing to flush, but a rescue must not depend on that)."""

    def __init__(self, mount_point: str) -> None:
        self.process = subprocess.Popen(
            ["sh", "-c", 'while read -r _; do umount -f "$1" >/dev/null 2>&1; echo; done', "sh", mount_point],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)

    def force(self) -> None:
        """Force the unmount, waiting FORCE_TIMEOUT at most (the next request waits in line)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(b"\n")
            self.process.stdin.flush()
        except (OSError, ValueError):  # the shell is gone (or closed): nothing left to try
            return
        if select.select([self.process.stdout], [], [], FORCE_TIMEOUT)[0]:
            self.process.stdout.readline()

    def close(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=KILL_WAIT)
        except subprocess.TimeoutExpired:  # an umount still stuck
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=KILL_WAIT)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _rpc_replies(mount_point: str) -> int | None:
    """How many RPC replies the NFS client has received for the mount at ``mount_point``, or
    None if that cannot be read."""
    try:
        with open("/proc/self/mountstats") as f:
            return rpc_replies_in(f.read(), mount_point)
    except OSError:
        return None


def rpc_replies_in(mountstats: str, mount_point: str) -> int | None:
    """The ``recvs`` of the TCP transports (``xprt: tcp ...`` lines) of the mount at
    ``mount_point`` in the text of /proc/self/mountstats; None if the mount is not there."""
    replies, ours = None, False
    for line in mountstats.splitlines():
        if line.startswith("device "):
            ours = f" mounted on {mount_point} with fstype nfs" in line
            continue
        fields = line.split()
        # xprt: tcp srcport bind_count connect_count connect_time idle_time sends recvs ...
        if ours and len(fields) > 8 and fields[:2] == ["xprt:", "tcp"] and fields[8].isdigit():
            replies = (replies or 0) + int(fields[8])
    return replies


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
        return str(socket.getaddrinfo(url.host, None, type=socket.SOCK_STREAM)[0][4][0])
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
