"""Every use of paramiko's private or undocumented API, in one place.

paramiko's public SFTP client sends one request and waits for its reply, and it drops the
extensions the server announces. The SSH target needs pipelined writes (many requests in
flight, replies taken as they come) and fsync, statvfs, limits and posix-rename only where the
server offers them. That takes paramiko internals, which paramiko may change in any release,
so they are used nowhere else. Each hook below says why it is needed and since which paramiko
version it has the shape used; all of them are unchanged from 3.2 (the oldest version setup.py
admits) to 5.1, and tests/test_paramiko_adapter.py pins them against the installed paramiko.
"""

from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING

import paramiko

# Hook: the SFTP v3 message types and open flags, and int64 (an argument that _async_request
# packs as 64 bits, where a plain int goes out as 32), are undocumented module attributes of
# paramiko.sftp: the types and flags since 1.x, int64 since 3.0 (before, py3compat.long).
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_HANDLE,
    CMD_INIT,
    CMD_OPEN,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_OK,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

__all__ = ["CMD_CLOSE", "CMD_EXTENDED", "CMD_HANDLE", "CMD_OPEN", "CMD_STATUS", "CMD_WRITE",
           "SFTP_FLAG_CREATE", "SFTP_FLAG_READ", "SFTP_FLAG_TRUNC", "SFTP_FLAG_WRITE", "SFTP_OK",
           "PACKET_MARGIN", "ReplyReceiver", "SFTPAttributes", "SftpSession",
           "exit_status_within", "int64"]

# Hook: Channel._wait_for_send_window keeps every SSH packet this many bytes under the peer's
# maximum packet size (undocumented behaviour, since 1.x): writes sized to fill whole packets
# must leave it out.
PACKET_MARGIN = 64

if TYPE_CHECKING:
    from typing import TypeAlias

    # What _async_request packs, by type: int64 as 8 bytes, int as 4, SFTPAttributes by its
    # _pack, anything else as an SSH string.
    RequestArgument: TypeAlias = int64 | int | SFTPAttributes | bytes | str


class ReplyReceiver(abc.ABC):
    """Takes the replies to the requests it sent with SftpSession.send."""

    @abc.abstractmethod
    def on_reply(self, kind: int, reply: paramiko.Message, request_id: int) -> None:
        """One reply: its type, its message (read up to after the request id) and its id."""

    # Hook: SFTPClient._read_response hands each reply to a request sent with
    # _async_request(fileobj, ...) to fileobj._async_response(t, msg, num); paramiko's own
    # SFTPFile prefetch is the other user. Since 1.10.6.
    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.on_reply(t, msg, num)


class SftpSession(paramiko.SFTPClient):
    """paramiko's SFTP client, keeping the extensions the server announces, with typed access
    to the request machinery paramiko keeps private."""

    extensions: dict[str, bytes]

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel  # what get_channel() returns, typed as never None
        super().__init__(channel)

    if TYPE_CHECKING:
        # The private methods used below, in the shape paramiko defines them (its stubs,
        # types-paramiko, leave them out).
        def _send_packet(self, t: int, packet: paramiko.Message) -> None: ...
        def _read_packet(self) -> tuple[int, bytes]: ...
        def _async_request(self, fileobj: object, t: int, *args: RequestArgument) -> int: ...
        def _read_response(self, waitfor: int | None = None) -> tuple[int | None, paramiko.Message | None]: ...
        def _request(self, t: int, *args: RequestArgument) -> tuple[int, paramiko.Message]: ...

    # Hook: SFTPClient.__init__ calls self._send_version() for the SSH_FXP_INIT / VERSION
    # exchange and keeps what it returns as the protocol version (BaseSFTP._send_version, with
    # _send_packet(t, message) and _read_packet() -> (t, data), since 1.x). paramiko's own
    # reads the version and ignores the extension pairs after it; this one keeps them.
    def _send_version(self) -> int:
        message = paramiko.Message()
        message.add_int(3)
        self._send_packet(CMD_INIT, message)
        kind, data = self._read_packet()
        if kind != CMD_VERSION:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        reply = paramiko.Message(data)
        version = reply.get_int()
        self.extensions = {}
        while reply.get_remainder():
            name = reply.get_text()
            self.extensions[name] = reply.get_binary()
        return version

    def request(self, kind: int, *args: RequestArgument) -> tuple[int, paramiko.Message]:
        """Send a request and wait for its reply: the reply's type and message. A status
        other than OK raises OSError (FileNotFoundError, PermissionError where it can tell)."""
        # Hook: SFTPClient._request(t, *args) -> (t, msg), raising through _convert_status on
        # an error status (since 1.x). paramiko's public methods are built on it.
        return self._request(kind, *args)

    def send(self, receiver: ReplyReceiver, kind: int, *args: RequestArgument) -> int:
        """Send a request without waiting; its reply goes to ``receiver``. The request id."""
        # Hook: SFTPClient._async_request(fileobj, t, *args) -> request number (since 1.x; the
        # fileobj call-back, see ReplyReceiver, since 1.10.6).
        return self._async_request(receiver, kind, *args)

    def take_reply(self) -> None:
        """Read one reply (waiting for it) and hand it to the receiver of its request; a reply
        to a request nobody waits for any more is dropped."""
        # Hook: SFTPClient._read_response() with no request id to wait for reads one reply and
        # dispatches it (since 1.x); a dropped link raises SSHException.
        self._read_response()

    def replies_waiting(self) -> bool:
        """Whether a reply has arrived that take_reply would read without waiting."""
        return self.channel.recv_ready()

    def packet_payload(self) -> int:
        """Bytes of SFTP data one SSH packet carries on this session's channel."""
        # Hook: Channel.out_max_packet_size, the peer's maximum packet size, is an undocumented
        # attribute (since 1.x).
        return self.channel.out_max_packet_size - PACKET_MARGIN


def exit_status_within(channel: paramiko.Channel, timeout: float) -> bool:
    """Whether the command on ``channel`` reported its exit status within ``timeout`` seconds
    (paramiko's recv_exit_status waits without a limit)."""
    # Hook: Channel.status_event, the threading.Event set when the exit status arrives (or the
    # channel closes), is an undocumented attribute (since 1.x).
    event: threading.Event = channel.status_event
    return event.wait(timeout)
