"""One authenticated SSH connection to the dump server, replaced when the link drops."""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import paramiko

from ...errors import CollectorError, TargetUnreachable
from .. import SshOptions
from .ciphers import transport_preferring_gcm
from .hostkeys import check_host_keys, mismatch_message
from .paramiko_adapter import SftpSession
from .url import SshUrl

CONNECT_TIMEOUT = 10.0      # TCP connect, SSH banner, key exchange, authentication: each
IO_TIMEOUT = 60.0           # no reply for this long: the link counts as dropped
KEEPALIVE_SECONDS = 15
RETRY_FIRST_DELAY = 0.5     # seconds before the first reconnect; doubles per attempt
RETRY_MAX_DELAY = 10.0
# What a dropped or stuck link raises from paramiko (SFTP status errors are OSErrors too: they
# are told apart by whether the link is still up).
LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)
KEY_FILE_NEEDED = "--ssh-key FILE is needed for SSH destinations"

# paramiko logs dropped connections with tracebacks, which Python prints when nothing handles
# them; the collector reports link problems itself, in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

Result = TypeVar("Result")
Warn = Callable[[str], None]


@dataclass(frozen=True)
class Link:
    """An open, authenticated connection; ``sftp`` is None where the server has no SFTP."""

    client: paramiko.SSHClient
    transport: paramiko.Transport
    sftp: SftpSession | None


class Connection:
    """The connection to ``url``: ``link`` while it is open, replaced when it drops."""

    def __init__(self, url: SshUrl, options: SshOptions, warn: Warn) -> None:
        self.url = url
        self.options = options
        self.warn = warn
        self.link: Link | None = None
        self.generation = 0            # bumped by every reconnect: file handles of older ones are gone
        self._failed_attempts = 0      # reconnects in a row without an acknowledged write
        self._gave_up: OSError | None = None

    def connect(self) -> Link:
        """Connect, check the host key, authenticate, start SFTP if the server has it."""
        url = self.url
        client = paramiko.SSHClient()
        check_host_keys(client, self.options, self.warn)
        if not self.options.key_file:  # open_ssh_target refuses such options before connecting
            raise CollectorError(f"{url}: {KEY_FILE_NEEDED}")
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
                           transport_factory=transport_preferring_gcm)
            transport = client.get_transport()
            if transport is None:  # connect() returned without raising: it set one up
                raise paramiko.SSHException("no transport after connecting")
            transport.set_keepalive(KEEPALIVE_SECONDS)
            channel = transport.open_session(timeout=CONNECT_TIMEOUT)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise TargetUnreachable(f"{url}: {mismatch_message(e, self.options.known_hosts)}") from None
        except paramiko.AuthenticationException:
            client.close()
            raise TargetUnreachable(f"{url}: the server refused key {self.options.key_file}") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            raise TargetUnreachable(f"{url}: {str(e) or type(e).__name__}") from None
        sftp: SftpSession | None
        try:
            channel.invoke_subsystem("sftp")
            channel.settimeout(IO_TIMEOUT)
            sftp = SftpSession(channel)
        except paramiko.SSHException:
            sftp = None  # no SFTP subsystem: the server closes the channel
        self.link = Link(client, transport, sftp)
        return self.link

    @property
    def transport(self) -> paramiko.Transport:
        if self.link is None:
            raise paramiko.SSHException("not connected")
        return self.link.transport

    def link_up(self) -> bool:
        link = self.link
        return (link is not None and link.transport.is_active() and link.sftp is not None
                and not link.sftp.channel.closed)

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
                link = self.connect()
            except TargetUnreachable as e:
                cause = e
                continue
            if link.sftp is None:
                self._gave_up = OSError(errno.EIO, f"{self.url.host} no longer offers SFTP")
                break
            self.generation += 1
            return
        self.close()
        raise self._gave_up

    def made_progress(self) -> None:
        """The server acknowledged a write: the link works, the retry budget starts afresh."""
        self._failed_attempts = 0

    def retrying(self, operation: Callable[[SftpSession], Result]) -> Result:
        """Run ``operation`` on the SFTP session, reconnecting and running it again on the new
        session while the link drops."""
        while True:
            try:
                if self._gave_up is not None:
                    raise self._gave_up
                return operation(self._sftp())
            except LINK_ERRORS as e:
                if e is self._gave_up or not self.link_lost(e):
                    raise
                self.reconnect(e)

    def _sftp(self) -> SftpSession:
        if self.link is None or self.link.sftp is None:
            # Only SFTP targets retry, and a reconnect without SFTP gives up: this is a closed target
            raise ValueError(f"{self.url}: SFTP operation on a closed connection")
        return self.link.sftp

    def close(self) -> None:
        if self.link is not None:
            self.link.client.close()
        self.link = None


def _reason(error: BaseException) -> str:
    """What went wrong, never empty: paramiko raises EOFError() and SSHException() bare, and
    then the exception's type is all there is to say."""
    return str(error) or type(error).__name__
