"""Dump directories on an SFTP server."""

from __future__ import annotations

import errno
import posixpath
from functools import partial

from .connection import Connection
from .paramiko_adapter import CMD_CLOSE, CMD_HANDLE, CMD_OPEN, SFTP_FLAG_READ, SFTPAttributes, SftpSession
from .sftp_file import SftpFile, fsync, statvfs_free


class SftpTarget:
    """Dump directories under ``url.path`` on an SFTP server."""

    streams_only = False

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.description = str(connection.url)

    def make_dump_dir(self, name: str) -> str:
        """Create ``path/name`` (0700), or ``name-1``, ``name-2``... if it exists."""
        root = self.connection.url.path
        try:
            self.connection.retrying(lambda sftp: self._make_parents(sftp, root))
            for attempt in range(1000):
                path = posixpath.join(root, name if attempt == 0 else f"{name}-{attempt}")
                if self.connection.retrying(partial(self._make_private_dir, path=path)):
                    return path
        except OSError as e:
            if e.filename:
                raise
            # SFTP status errors carry no file name: name the server and directory
            raise OSError(e.errno or errno.EIO, e.strerror or str(e), f"{self.connection.url.host}:{root}") from None
        raise FileExistsError(f"no free dump directory name under {self.description}")

    @staticmethod
    def _exists(sftp: SftpSession, path: str) -> bool:
        try:
            sftp.stat(path)
            return True
        except FileNotFoundError:
            return False

    def _make_parents(self, sftp: SftpSession, root: str) -> None:
        missing = []
        while root != "/" and not self._exists(sftp, root):
            missing.append(root)
            root = posixpath.dirname(root)
        for path in reversed(missing):
            self._make_private_dir(sftp, path)

    def _make_private_dir(self, sftp: SftpSession, path: str) -> bool:
        """Whether ``path`` was created (False: it exists already)."""
        try:
            sftp.mkdir(path, 0o700)
        except OSError:
            if self.connection.link_up() and self._exists(sftp, path):
                return False  # SFTP v3 has no "already exists" status: look
            raise
        sftp.chmod(path, 0o700)  # mkdir's mode is filtered by the server's umask
        return True

    def create(self, path: str) -> SftpFile:
        return SftpFile(self.connection, path)

    def commit(self, tmp_path: str, final_path: str) -> None:
        self.connection.retrying(lambda sftp: self._rename(sftp, tmp_path, final_path))
        self.connection.retrying(lambda sftp: self._sync_dir(sftp, posixpath.dirname(final_path)))

    def _rename(self, sftp: SftpSession, tmp_path: str, final_path: str) -> None:
        try:
            if "posix-rename@openssh.com" in sftp.extensions:
                sftp.posix_rename(tmp_path, final_path)
            else:
                sftp.rename(tmp_path, final_path)
        except OSError:
            # Retried after a drop: the first rename may have been done, only its reply lost.
            if not self.connection.link_up() or self._exists(sftp, tmp_path) or not self._exists(sftp, final_path):
                raise

    @staticmethod
    def _sync_dir(sftp: SftpSession, path: str) -> None:
        """Make the rename durable: fsync the directory (OpenSSH opens directories as files)."""
        if "fsync@openssh.com" not in sftp.extensions:
            return
        kind, reply = sftp.request(CMD_OPEN, path, SFTP_FLAG_READ, SFTPAttributes())
        if kind != CMD_HANDLE:
            return
        handle = reply.get_binary()
        try:
            fsync(sftp, handle)
        finally:
            sftp.request(CMD_CLOSE, handle)

    def finish_dump(self, directory: str) -> None:
        """No retention over SSH (--keep-dumps and --min-free are for local and NFS targets)."""

    def free_space(self, path: str) -> int:
        """Bytes available under ``path``; -1 (unknown) if the server has no statvfs@openssh.com."""
        return self.connection.retrying(lambda sftp: statvfs_free(sftp, path))

    def remove(self, path: str) -> None:
        self.connection.retrying(lambda sftp: sftp.remove(path))

    def close(self) -> None:
        self.connection.close()
