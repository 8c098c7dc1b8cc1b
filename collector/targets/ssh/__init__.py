"""SSH target: dump directories on a remote machine, files written over SFTP (paramiko).

DEST is ``ssh://user@host[:port]/absolute/path``. The server's host key must be in
--known-hosts; the client authenticates with --ssh-key.

Writes are pipelined: a write is sent and not waited for; acknowledgements are collected as
they come, and at most PIPELINE_WINDOW bytes are unacknowledged at any time. Those bytes are
kept, so when the link drops the target reconnects (up to --ssh-retries attempts in a row with
growing delays), reopens the file without truncating it and sends them again: the file ends up
as if the link had never dropped. When the attempts are used up, writes fail with EIO, which
the format writers treat like a full disk: the dump is finished as incomplete but readable.

A server without the SFTP subsystem still takes a dump as a flattened stream through
``cat`` (ShellTarget; no resume there: a pipe cannot be reopened at an offset).

This module imports paramiko (30 MB, 0.15 s): import it only for SSH destinations.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import shlex
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import unquote, urlsplit

import paramiko
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

from ...errors import CollectorError, TargetUnreachable
from .. import SshOptions

DEFAULT_PORT = 22
CONNECT_TIMEOUT = 10.0      # TCP connect, SSH banner, key exchange, authentication: each
IO_TIMEOUT = 60.0           # no reply for this long: the link counts as dropped
KEEPALIVE_SECONDS = 15
RETRY_FIRST_DELAY = 0.5     # seconds before the first reconnect; doubles per attempt
RETRY_MAX_DELAY = 10.0
# Bytes in flight (and kept for re-sending): enough to fill a fast link between round trips,
# small enough for a capture kernel's memory.
PIPELINE_WINDOW = 4 << 20
# Data per SFTP write where the server does not announce its limit (limits@openssh.com).
DEFAULT_REQUEST_BYTES = 64 << 10
# paramiko leaves this much of each SSH packet unused (Channel._wait_for_send_window).
PARAMIKO_PACKET_MARGIN = 64
WRITE_HEADER_BYTES = 25    # SSH_FXP_WRITE: length, type, id, handle length, offset, data length
LIMITS_FIELDS = struct.Struct(">4Q")  # limits@openssh.com: max packet, read, write lengths, handles
# AES-GCM is the cheapest cipher for paramiko (one pass, no separate MAC); the rest of
# paramiko's list follows in its own order.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
STATVFS_FIELDS = struct.Struct(">11Q")  # statvfs@openssh.com reply: f_bsize, f_frsize, f_blocks,
                                        # f_bfree, f_bavail, f_files, f_ffree, f_favail, f_fsid, ...
# What a dropped or stuck link raises from paramiko (SFTP status errors are OSErrors too: they
# are told apart by whether the link is still up).
LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)

# paramiko logs dropped connections with tracebacks, which Python prints when nothing handles
# them; the collector reports link problems itself, in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

Result = TypeVar("Result")
Warn = Callable[[str], None]


@dataclass(frozen=True)
class SshUrl:
    user: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, dest: str) -> "SshUrl":
        parts = urlsplit(dest)
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise CollectorError(f"{dest}: bad port") from None
        if parts.scheme != "ssh" or not parts.username or not parts.hostname or not parts.path.startswith("/"):
            raise CollectorError(f"{dest}: SSH destinations look like ssh://user@host[:port]/absolute/path")
        return cls(unquote(parts.username), parts.hostname, port, unquote(parts.path))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}{'' if self.port == DEFAULT_PORT else f':{self.port}'}{self.path}"


def open_ssh_target(dest: str, options: SshOptions, warn: Warn) -> "SftpTarget | ShellTarget":
    """Connect to ``dest``; an SftpTarget, or a ShellTarget if the server has no SFTP."""
    url = SshUrl.parse(dest)
    if not options.key_file:
        raise CollectorError(f"{dest}: --ssh-key FILE is needed for SSH destinations")
    if not options.known_hosts and not options.accept_unknown_host_key:
        raise CollectorError(f"{dest}: --known-hosts FILE is needed to check the server "
                             "(or --ssh-insecure-accept-host-key)")
    if options.retries < 0:
        raise CollectorError("--ssh-retries must be 0 or more")
    connection = Connection(url, options, warn)
    connection.connect()
    if connection.sftp is None:
        return ShellTarget(connection)
    return SftpTarget(connection)


class _WarnUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """--ssh-insecure-accept-host-key: take a host key that is not in known_hosts, loudly.
    A key that contradicts known_hosts is still refused (paramiko checks that before)."""

    def __init__(self, warn: Warn) -> None:
        self.warn = warn

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.warn(f"warning: accepting the unverified host key of {hostname} "
                  f"({key.get_name()} {key.fingerprint}) because of --ssh-insecure-accept-host-key")


def _transport_preferring_gcm(sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in offered) + \
        tuple(c for c in offered if c not in PREFERRED_CIPHERS)
    return transport


class _SftpClient(paramiko.SFTPClient):
    """paramiko's SFTP client, keeping the extensions the server announces (paramiko drops
    them), so that fsync, statvfs and posix-rename are used only where they exist."""

    extensions: dict[str, bytes]

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


class Connection:
    """One authenticated SSH connection (and its SFTP session), replaced when the link drops."""

    def __init__(self, url: SshUrl, options: SshOptions, warn: Warn) -> None:
        self.url = url
        self.options = options
        self.warn = warn
        self.client: paramiko.SSHClient | None = None
        self.sftp: _SftpClient | None = None
        self.generation = 0            # bumped by every reconnect: file handles of older ones are gone
        self._failed_attempts = 0      # reconnects in a row without an acknowledged write
        self._gave_up: OSError | None = None

    def connect(self) -> None:
        """Connect, check the host key, authenticate, start SFTP if the server has it."""
        url = self.url
        client = paramiko.SSHClient()
        if self.options.known_hosts:
            try:
                client.load_host_keys(self.options.known_hosts)
            except OSError as e:
                raise CollectorError(f"cannot read --known-hosts {self.options.known_hosts}: "
                                     f"{e.strerror or e}") from None
        client.set_missing_host_key_policy(_WarnUnknownHostKey(self.warn) if self.options.accept_unknown_host_key
                                           else paramiko.RejectPolicy())
        try:
            key = paramiko.PKey.from_path(self.options.key_file)
        except (OSError, paramiko.SSHException, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise CollectorError(f"cannot load --ssh-key {self.options.key_file}: {reason}") from None
        try:
            sock = socket.create_connection((url.host, url.port), timeout=CONNECT_TIMEOUT)
        except OSError as e:
            raise TargetUnreachable(f"{url}: cannot connect: {e.strerror or e}") from None
        # Pipelined SFTP writes go out as many small SSH packets: do not let Nagle hold them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client.connect(url.host, url.port, username=url.user, pkey=key, sock=sock, timeout=CONNECT_TIMEOUT,
                           banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT,
                           channel_timeout=CONNECT_TIMEOUT, allow_agent=False, look_for_keys=False,
                           transport_factory=_transport_preferring_gcm)
            client.get_transport().set_keepalive(KEEPALIVE_SECONDS)
            channel = client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise TargetUnreachable(f"{url}: host key MISMATCH: the server sent {e.key.get_name()} "
                                    f"{e.key.fingerprint}, {self.options.known_hosts} has "
                                    f"{e.expected_key.fingerprint}; refusing to send the dump") from None
        except paramiko.AuthenticationException:
            client.close()
            raise TargetUnreachable(f"{url}: the server refused key {self.options.key_file}") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            raise TargetUnreachable(f"{url}: {str(e) or type(e).__name__}") from None
        try:
            channel.invoke_subsystem("sftp")
            channel.settimeout(IO_TIMEOUT)
            self.sftp = _SftpClient(channel)
        except paramiko.SSHException:
            self.sftp = None  # no SFTP subsystem: the server closes the channel
        self.client = client

    @property
    def transport(self) -> paramiko.Transport:
        if self.client is None or self.client.get_transport() is None:
            raise paramiko.SSHException("not connected")
        return self.client.get_transport()

    def link_up(self) -> bool:
        transport = self.client.get_transport() if self.client else None
        return transport is not None and transport.is_active() and self.sftp is not None and not self.sftp.sock.closed

    def link_lost(self, error: BaseException) -> bool:
        """Whether ``error`` means the connection is gone (rather than the server refusing)."""
        return isinstance(error, (paramiko.SSHException, EOFError, TimeoutError)) or not self.link_up()

    def reconnect(self, cause: BaseException) -> None:
        """Replace a dropped connection, waiting longer before each attempt; after
        ``options.retries`` attempts in a row without progress, fail for good with EIO."""
        self.close()
        while self._gave_up is None:
            if self._failed_attempts >= self.options.retries:
                self._gave_up = OSError(errno.EIO, f"link to {self.url.host} lost ({_reason(cause)}); gave up "
                                                   f"after {self.options.retries} reconnect attempt(s)")
                break
            delay = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** self._failed_attempts)
            self._failed_attempts += 1
            self.warn(f"link to {self.url.host} lost ({_reason(cause)}); reconnecting in "
                      f"{delay:.1f} s (attempt {self._failed_attempts} of {self.options.retries})")
            time.sleep(delay)
            try:
                self.connect()
            except TargetUnreachable as e:
                cause = e
                continue
            if self.sftp is None:
                self._gave_up = OSError(errno.EIO, f"{self.url.host} no longer offers SFTP")
                break
            self.generation += 1
            return
        self.close()
        raise self._gave_up

    def made_progress(self) -> None:
        """The server acknowledged a write: the link works, the retry budget starts afresh."""
        self._failed_attempts = 0

    def retrying(self, operation: Callable[[], Result]) -> Result:
        """Run ``operation``, reconnecting and running it again while the link drops."""
        while True:
            try:
                if self._gave_up is not None:
                    raise self._gave_up
                return operation()
            except LINK_ERRORS as e:
                if e is self._gave_up or not self.link_lost(e):
                    raise
                self.reconnect(e)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client, self.sftp = None, None


def _reason(error: BaseException) -> str:
    """What went wrong, never empty: paramiko raises EOFError() and SSHException() bare, and
    then the exception's type is all there is to say."""
    return str(error) or type(error).__name__


class SftpFile:
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
        connection.retrying(lambda: self._open(truncate=True))
        self._generation = connection.generation

    def _open(self, truncate: bool) -> None:
        sftp = self.connection.sftp
        attributes = SFTPAttributes()
        attributes.st_mode = 0o600
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | (SFTP_FLAG_TRUNC if truncate else 0)
        kind, reply = sftp._request(CMD_OPEN, self.path, flags, attributes)
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError("expected a file handle")
        self._handle = reply.get_binary()
        sftp.chmod(self.path, 0o600)  # the mode at open is filtered by the server's umask
        self._request_bytes = _request_bytes(sftp, len(self._handle))

    def _on_link(self, operation: Callable[[], Result]) -> Result:
        """Run ``operation`` on a live file handle, resuming the file after a reconnect."""
        def resumed() -> Result:
            if self._generation != self.connection.generation:
                self._resume()
            return operation()
        return self.connection.retrying(resumed)

    def _resume(self) -> None:
        """Reopen the file (keeping its contents) and send the unacknowledged writes again, in
        their original order so that later writes still win where writes overlap."""
        pending = list(self._unacked.values())
        self._open(truncate=False)
        self._unacked = {self._send(offset, data): (offset, data) for offset, data in pending}
        self._generation = self.connection.generation  # only now: a drop above means do it all again

    def _send(self, offset: int, data: bytes) -> int:
        return self.connection.sftp._async_request(self, CMD_WRITE, self._handle, int64(offset), data)

    def _async_response(self, kind: int, reply: paramiko.Message, request_id: int) -> None:
        """Called by paramiko for each reply to one of our writes."""
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

    def _collect(self, window: int) -> None:
        """Take the replies that have arrived, and wait until at most ``window`` bytes are
        unacknowledged."""
        sftp = self.connection.sftp
        while self._unacked and (self._unacked_bytes > window or sftp.sock.recv_ready()):
            sftp._read_response()
        if self._failure is not None:
            self._raise_failure()

    def _raise_failure(self) -> None:
        # Writes already in flight when the first one failed are part of the same failure:
        # wait for all of them, so that what the caller writes next starts clean.
        while self._unacked:
            self.connection.sftp._read_response()
        offset, message = self._failure
        self._failure = None
        free = _statvfs_free(self.connection.sftp, posixpath.dirname(self.path))
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
            self._on_link(lambda: self._collect(0))
        for start in range(0, len(view), self._request_bytes):
            chunk = bytes(view[start:start + self._request_bytes])  # kept until acknowledged
            self._on_link(lambda: self._send_tracked(offset + start, chunk))
            self._on_link(lambda: self._collect(PIPELINE_WINDOW))

    def _send_tracked(self, offset: int, data: bytes) -> None:
        self._unacked[self._send(offset, data)] = (offset, data)
        self._unacked_bytes += len(data)
        self._unacked_end = max(self._unacked_end, offset + len(data))

    def reserve(self, offset: int, length: int) -> None:
        """SFTP cannot allocate space ahead."""

    def sync(self) -> None:
        """Wait for every write to be acknowledged, then fsync on the server if it can."""
        self._on_link(lambda: self._collect(0))
        if "fsync@openssh.com" in self.connection.sftp.extensions:
            self._on_link(lambda: self.connection.sftp._request(CMD_EXTENDED, "fsync@openssh.com", self._handle))

    def close(self) -> None:
        if self._generation != self.connection.generation or self.connection.sftp is None:
            return  # the handle died with its connection
        try:
            self.connection.sftp._request(CMD_CLOSE, self._handle)
        except LINK_ERRORS as e:
            if not self.connection.link_lost(e):
                raise


def _request_bytes(sftp: _SftpClient, handle_length: int) -> int:
    """Data per write: as much as the server takes, trimmed so that each write fills whole
    SSH packets (a 64 KiB write would go out as two full packets and a 0.2 KiB one; paramiko's
    cost is per packet)."""
    limit = DEFAULT_REQUEST_BYTES
    if "limits@openssh.com" in sftp.extensions:
        _, reply = sftp._request(CMD_EXTENDED, "limits@openssh.com")
        limit = LIMITS_FIELDS.unpack(reply.get_bytes(LIMITS_FIELDS.size))[2] or limit
    overhead = WRITE_HEADER_BYTES + handle_length
    packet = sftp.sock.out_max_packet_size - PARAMIKO_PACKET_MARGIN
    aligned = (limit + overhead) // packet * packet - overhead
    return aligned if aligned >= DEFAULT_REQUEST_BYTES else limit


def _statvfs_free(sftp: _SftpClient, path: str) -> int:
    """Bytes available under ``path`` by statvfs@openssh.com; -1 if the server lacks it."""
    if "statvfs@openssh.com" not in sftp.extensions:
        return -1
    _, reply = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", path)
    fields = STATVFS_FIELDS.unpack(reply.get_bytes(STATVFS_FIELDS.size))
    f_frsize, f_bavail = fields[1], fields[4]
    return f_frsize * f_bavail


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
            self.connection.retrying(lambda: self._make_parents(root))
            for attempt in range(1000):
                path = posixpath.join(root, name if attempt == 0 else f"{name}-{attempt}")
                if self.connection.retrying(lambda: self._make_private_dir(path)):
                    return path
        except OSError as e:
            if e.filename:
                raise
            # SFTP status errors carry no file name: name the server and directory
            raise OSError(e.errno or errno.EIO, e.strerror or str(e), f"{self.connection.url.host}:{root}") from None
        raise FileExistsError(f"no free dump directory name under {self.description}")

    def _exists(self, path: str) -> bool:
        try:
            self.connection.sftp.stat(path)
            return True
        except FileNotFoundError:
            return False

    def _make_parents(self, root: str) -> None:
        missing = []
        while root != "/" and not self._exists(root):
            missing.append(root)
            root = posixpath.dirname(root)
        for path in reversed(missing):
            self._make_private_dir(path)

    def _make_private_dir(self, path: str) -> bool:
        """Whether ``path`` was created (False: it exists already)."""
        sftp = self.connection.sftp
        try:
            sftp.mkdir(path, 0o700)
        except OSError:
            if self.connection.link_up() and self._exists(path):
                return False  # SFTP v3 has no "already exists" status: look
            raise
        sftp.chmod(path, 0o700)  # mkdir's mode is filtered by the server's umask
        return True

    def create(self, path: str) -> SftpFile:
        return SftpFile(self.connection, path)

    def commit(self, tmp_path: str, final_path: str) -> None:
        self.connection.retrying(lambda: self._rename(tmp_path, final_path))
        self.connection.retrying(lambda: self._sync_dir(posixpath.dirname(final_path)))

    def _rename(self, tmp_path: str, final_path: str) -> None:
        sftp = self.connection.sftp
        try:
            if "posix-rename@openssh.com" in sftp.extensions:
                sftp.posix_rename(tmp_path, final_path)
            else:
                sftp.rename(tmp_path, final_path)
        except OSError:
            # Retried after a drop: the first rename may have been done, only its reply lost.
            if not self.connection.link_up() or self._exists(tmp_path) or not self._exists(final_path):
                raise

    def _sync_dir(self, path: str) -> None:
        """Make the rename durable: fsync the directory (OpenSSH opens directories as files)."""
        sftp = self.connection.sftp
        if "fsync@openssh.com" not in sftp.extensions:
            return
        kind, reply = sftp._request(CMD_OPEN, path, SFTP_FLAG_READ, SFTPAttributes())
        if kind != CMD_HANDLE:
            return
        handle = reply.get_binary()
        try:
            sftp._request(CMD_EXTENDED, "fsync@openssh.com", handle)
        finally:
            sftp._request(CMD_CLOSE, handle)

    def finish_dump(self, directory: str) -> None:
        """No retention over SSH (--keep-dumps and --min-free are for local and NFS targets)."""

    def free_space(self, path: str) -> int:
        """Bytes available under ``path``; -1 (unknown) if the server has no statvfs@openssh.com."""
        return self.connection.retrying(lambda: _statvfs_free(self.connection.sftp, path))

    def close(self) -> None:
        self.connection.close()


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
        if not self.channel.status_event.wait(IO_TIMEOUT):
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
            if not channel.status_event.wait(IO_TIMEOUT):
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

    def close(self) -> None:
        self.connection.close()
