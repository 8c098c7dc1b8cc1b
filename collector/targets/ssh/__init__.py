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

The package by role: url (SshUrl), hostkeys (which servers are trusted), ciphers (AES-GCM
first), paramiko_adapter (every use of paramiko internals, and nothing else), connection (one
authenticated connection, replaced when the link drops), sftp_file (pipelined writes),
sftp_target and shell_target (the two targets).

This package imports paramiko (30 MB, 0.15 s): import it only for SSH destinations.
"""

from __future__ import annotations

from ...errors import CollectorError
from .. import SshOptions
from .connection import KEY_FILE_NEEDED, Connection, Warn
from .sftp_target import SftpTarget
from .shell_target import ShellTarget
from .url import SshUrl


def open_ssh_target(dest: str, options: SshOptions, warn: Warn) -> SftpTarget | ShellTarget:
    """Connect to ``dest``; an SftpTarget, or a ShellTarget if the server has no SFTP."""
    url = SshUrl.parse(dest)
    if not options.key_file:
        raise CollectorError(f"{dest}: {KEY_FILE_NEEDED}")
    if not options.known_hosts and not options.accept_unknown_host_key:
        raise CollectorError(f"{dest}: --known-hosts FILE is needed to check the server "
                             "(or --ssh-insecure-accept-host-key)")
    if options.retries < 0:
        raise CollectorError("--ssh-retries must be 0 or more")
    connection = Connection(url, options, warn)
    if connection.connect().sftp is None:
        return ShellTarget(connection)
    return SftpTarget(connection)
