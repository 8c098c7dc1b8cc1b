"""A file on the SFTP server that formats write at offsets, with pipelined writes.

A write is sent and not waited for; acknowledgements are collected as they come, and at most
PIPELINE_WINDOW bytes are unacknowledged at any time. Those bytes are kept, so when the link
drops the file is reopened on the new connection without truncating it and they are sent
again: the file ends up as if the link had never dropped.
"""

from __future__ import annotations

import errno
import posixpath
import struct
from collections.abc import Callable
from functools import partial

import paramiko

from .connection import LINK_ERRORS, Connection, Result
from .paramiko_adapter import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_OK,
    ReplyReceiver,
    SFTPAttributes,
    SftpSession,
    int64,
)

# Bytes in flight (and kept for re-sending): enough to fill a fast link between round trips,
# small enough for a capture kernel's memory.
PIPELINE_WINDOW = 4 << 20
# Data per SFTP write where the server does not announce its limit (limits@openssh.com).
DEFAULT_REQUEST_BYTES = 64 << 10
WRITE_HEADER_BYTES = 25    # SSH_FXP_WRITE: length, type, id, handle length, offset, data length
LIMITS_FIELDS = struct.Struct(">4Q")  # limits@openssh.com: max packet, read, write lengths, handles
STATVFS_FIELDS = struct.Struct(">11Q")  # statvfs@openssh.com reply: f_bsize, f_frsize, f_blocks,
                                        # f_bfree, f_bavail, f_files, f_ffree, f_favail, f_fsid, ...


class SftpFile(ReplyReceiver):
    """A TargetFile over SFTP: pipelined writes, re-sent after a reconnect until acknowledged."""

    def __init__(self, connection: Connection, path: str) -> None:
        self.connection = connection
        self.path = path
        self._unacked: dict[int, tuple[int, bytes]] = {}  # request id -> (offset, data), in send order
        self._unacked_bytes = 0
        self._unacked_end = 0                   # highest end offset among unacknowledged writes
        self._failure: tuple[int, str] | None = None  # (offset, server message) of a refused write
        self._generation = -1
        self._handle = b""
        self._request_bytes = DEFAULT_REQUEST_BYTES  # set by _open from what the server takes
        connection.retrying(lambda sftp: self._open(sftp, truncate=True))
        self._generation = connection.generation

    def _open(self, sftp: SftpSession, truncate: bool) -> None:
        attributes = SFTPAttributes()
        attributes.st_mode = 0o600
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | (SFTP_FLAG_TRUNC if truncate else 0)
        kind, reply = sftp.request(CMD_OPEN, self.path, flags, attributes)
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError("expected a file handle")
        self._handle = reply.get_binary()
        sftp.chmod(self.path, 0o600)  # the mode at open is filtered by the server's umask
        self._request_bytes = _request_bytes(sftp, len(self._handle))

    def _on_link(self, operation: Callable[[SftpSession], Result]) -> Result:
        """Run ``operation`` on a live file handle, resuming the file after a reconnect."""
        def resumed(sftp: SftpSession) -> Result:
            if self._generation != self.connection.generation:
                self._resume(sftp)
            return operation(sftp)
        return self.connection.retrying(resumed)

    def _resume(self, sftp: SftpSession) -> None:
        """Reopen the file (keeping its contents) and send the unacknowledged writes again, in
        their original order so that later writes still win where writes overlap."""
        pending = list(self._unacked.values())
        self._open(sftp, truncate=False)
        self._unacked = {self._send(sftp, offset, data): (offset, data) for offset, data in pending}
        self._generation = self.connection.generation  # only now: a drop above means do it all again

    def _send(self, sftp: SftpSession, offset: int, data: bytes) -> int:
        return sftp.send(self, CMD_WRITE, self._handle, int64(offset), data)

    def on_reply(self, kind: int, reply: paramiko.Message, request_id: int) -> None:
        """The server's reply to one of our writes."""
        entry = self._unacked.pop(request_id, None)
        if entry is None:
            return  # a reply to a write sent before a reconnect; it has been sent again
        self._unacked_bytes -= len(entry[1])
        if not self._unacked:
            self._unacked_end = 0
        status = reply.get_int() if kind == CMD_STATUS else None
        if status == SFTP_OK:
            self.connection.made_progress()
        elif self._failure is None:
            self._failure = (entry[0], reply.get_text() if kind == CMD_STATUS else f"unexpected reply {kind}")

    def _collect(self, sftp: SftpSession, window: int) -> None:
        """Take the replies that have arrived, and wait until at most ``window`` bytes are
        unacknowledged."""
        while self._unacked and (self._unacked_bytes > window or sftp.replies_waiting()):
            sftp.take_reply()
        if self._failure is not None:
            self._raise_failure(sftp, self._failure)

    def _raise_failure(self, sftp: SftpSession, failure: tuple[int, str]) -> None:
        # Writes already in flight when the first one failed are part of the same failure:
        # wait for all of them, so that what the caller writes next starts clean.
        while self._unacked:
            sftp.take_reply()
        offset, message = failure
        self._failure = None
        free = statvfs_free(sftp, posixpath.dirname(self.path))
        if 0 <= free < self._request_bytes:
            raise OSError(errno.ENOSPC, f"No space left on device on {self.connection.url.host}")
        raise OSError(errno.EIO, f"{self.connection.url.host} refused a write at offset {offset}: {message}")

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        # Formats write what points at data (kdump page descriptors, the final header, ELF
        # program headers) after that data and at a lower offset. A write that goes back
        # therefore waits until every earlier write is acknowledged: a failed write is
        # reported before anything pointing at it is sent, as with a synchronous pwrite.
        if self._unacked and offset < self._unacked_end:
            self._on_link(lambda sftp: self._collect(sftp, 0))
        for start in range(0, len(view), self._request_bytes):
            chunk = bytes(view[start:start + self._request_bytes])  # kept until acknowledged
            self._on_link(partial(self._send_tracked, offset=offset + start, data=chunk))
            self._on_link(lambda sftp: self._collect(sftp, PIPELINE_WINDOW))

    def _send_tracked(self, sftp: SftpSession, offset: int, data: bytes) -> None:
        self._unacked[self._send(sftp, offset, data)] = (offset, data)
        self._unacked_bytes += len(data)
        self._unacked_end = max(self._unacked_end, offset + len(data))

    def reserve(self, offset: int, length: int) -> None:
        """SFTP cannot allocate space ahead."""

    def sync(self) -> None:
        """Wait for every write to be acknowledged, then fsync on the server if it can."""
        self._on_link(lambda sftp: self._collect(sftp, 0))
        self._on_link(lambda sftp: fsync(sftp, self._handle))

    def close(self) -> None:
        link = self.connection.link
        if self._generation != self.connection.generation or link is None or link.sftp is None:
            return  # the handle died with its connection
        try:
            link.sftp.request(CMD_CLOSE, self._handle)
        except LINK_ERRORS as e:
            if not self.connection.link_lost(e):
                raise


def _request_bytes(sftp: SftpSession, handle_length: int) -> int:
    """Data per write: as much as the server takes, trimmed so that each write fills whole
    SSH packets (a 64 KiB write would go out as two full packets and a 0.2 KiB one; paramiko's
    cost is per packet)."""
    limit = DEFAULT_REQUEST_BYTES
    if "limits@openssh.com" in sftp.extensions:
        _, reply = sftp.request(CMD_EXTENDED, "limits@openssh.com")
        limit = LIMITS_FIELDS.unpack(reply.get_bytes(LIMITS_FIELDS.size))[2] or limit
    overhead = WRITE_HEADER_BYTES + handle_length
    packet = sftp.packet_payload()
    aligned = (limit + overhead) // packet * packet - overhead
    return aligned if aligned >= DEFAULT_REQUEST_BYTES else limit


def fsync(sftp: SftpSession, handle: bytes) -> None:
    """fsync the open file ``handle`` on the server, if it has fsync@openssh.com."""
    if "fsync@openssh.com" in sftp.extensions:
        sftp.request(CMD_EXTENDED, "fsync@openssh.com", handle)


def statvfs_free(sftp: SftpSession, path: str) -> int:
    """Bytes available under ``path`` by statvfs@openssh.com; -1 if the server lacks it."""
    if "statvfs@openssh.com" not in sftp.extensions:
        return -1
    _, reply = sftp.request(CMD_EXTENDED, "statvfs@openssh.com", path)
    fields = STATVFS_FIELDS.unpack(reply.get_bytes(STATVFS_FIELDS.size))
    f_frsize, f_bavail = fields[1], fields[4]
    return f_frsize * f_bavail
