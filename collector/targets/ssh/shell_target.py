"""Dump directories on an SSH server without SFTP: shell commands, and files as streams into
``cat`` (the flattened format; no resume: a pipe cannot be reopened at an offset)."""

from __future__ import annotations

import errno
import posixpath
import shlex

from .connection import CONNECT_TIMEOUT, IO_TIMEOUT, LINK_ERRORS, Connection
from .paramiko_adapter import exit_status_within


class StreamFile:
    """A TargetFile that is ``cat > PATH`` on the server: sequential writes only."""

    def __init__(self, connection: Connection, path: str) -> None:
        self.connection = connection
        self.offset = 0
        self.channel = connection.transport.open_session(timeout=CONNECT_TIMEOUT)
        self.channel.settimeout(IO_TIMEOUT)
        self.channel.exec_command(f"umask 077; cat > {shlex.quote(path)}")

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if offset != self.offset:
            raise ValueError("a stream over SSH only takes sequential writes")
        try:
            self.channel.sendall(data)
        except LINK_ERRORS as e:
            raise OSError(errno.EPIPE, f"the remote cat stopped ({self._stderr() or e})") from None
        self.offset += len(data)

    def reserve(self, offset: int, length: int) -> None:
        """A stream cannot reserve space."""

    def sync(self) -> None:
        """End the stream and wait for cat to have written all of it."""
        self.channel.shutdown_write()
        if not exit_status_within(self.channel, IO_TIMEOUT):
            raise OSError(errno.EIO, f"the remote cat did not finish within {IO_TIMEOUT:.0f} s")
        if self.channel.recv_exit_status() != 0:
            raise OSError(errno.EIO, f"the remote cat failed: {self._stderr()}")

    def _stderr(self) -> str:
        chunks = []
        while self.channel.recv_stderr_ready():
            chunks.append(self.channel.recv_stderr(4096))
        return b"".join(chunks).decode(errors="replace").strip()

    def close(self) -> None:
        self.channel.close()


class ShellTarget:
    """Dump directories on an SSH server without SFTP, through shell commands: only streams
    (the flattened format) can be written."""

    streams_only = True

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.description = str(connection.url)

    def _run(self, command: str) -> tuple[int, str]:
        """Exit status and standard error of ``command`` on the server."""
        channel = self.connection.transport.open_session(timeout=CONNECT_TIMEOUT)
        try:
            channel.settimeout(IO_TIMEOUT)
            channel.exec_command(command)
            channel.shutdown_write()
            stderr = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
            if not exit_status_within(channel, IO_TIMEOUT):
                raise OSError(errno.EIO, f"{command!r} did not finish within {IO_TIMEOUT:.0f} s")
            return channel.recv_exit_status(), stderr
        finally:
            channel.close()

    def _check(self, command: str) -> None:
        status, stderr = self._run(command)
        if status != 0:
            raise OSError(errno.EIO, f"{self.connection.url.host}: {stderr or f'{command!r} exited {status}'}")

    def make_dump_dir(self, name: str) -> str:
        root = self.connection.url.path
        self._check(f"umask 077; mkdir -p -- {shlex.quote(root)}")
        for attempt in range(1000):
            path = posixpath.join(root, name if attempt == 0 else f"{name}-{attempt}")
            status, stderr = self._run(f"umask 077; mkdir -- {shlex.quote(path)}")
            if status == 0:
                return path
            if self._run(f"test -e {shlex.quote(path)}")[0] != 0:
                raise OSError(errno.EIO, f"{self.connection.url.host}: {stderr}")
        raise FileExistsError(f"no free dump directory name under {self.description}")

    def create(self, path: str) -> StreamFile:
        return StreamFile(self.connection, path)

    def commit(self, tmp_path: str, final_path: str) -> None:
        self._check(f"mv -f -- {shlex.quote(tmp_path)} {shlex.quote(final_path)}")

    def finish_dump(self, directory: str) -> None:
        """No retention over SSH (--keep-dumps and --min-free are for local and NFS targets)."""

    def free_space(self, path: str) -> int:
        """Unknown without SFTP: -1."""
        return -1

    def remove(self, path: str) -> None:
        self._check(f"rm -f -- {shlex.quote(path)}")

    def close(self) -> None:
        self.connection.close()
