"""Which servers the SSH target trusts: those whose host key is in --known-hosts, or, with
--ssh-insecure-accept-host-key, also those not in it (never one that contradicts it)."""

from __future__ import annotations

from collections.abc import Callable

import paramiko

from ...errors import CollectorError
from .. import SshOptions


class WarnUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """--ssh-insecure-accept-host-key: take a host key that is not in known_hosts, loudly.
    A key that contradicts known_hosts is still refused (paramiko checks that before)."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.warn(f"warning: accepting the unverified host key of {hostname} "
                  f"({key.get_name()} {key.fingerprint}) because of --ssh-insecure-accept-host-key")


def check_host_keys(client: paramiko.SSHClient, options: SshOptions, warn: Callable[[str], None]) -> None:
    """Make ``client`` check the server's host key as ``options`` say."""
    if options.known_hosts:
        try:
            client.load_host_keys(options.known_hosts)
        except OSError as e:
            raise CollectorError(f"cannot read --known-hosts {options.known_hosts}: {e.strerror or e}") from None
    client.set_missing_host_key_policy(WarnUnknownHostKey(warn) if options.accept_unknown_host_key
                                       else paramiko.RejectPolicy())


def mismatch_message(error: paramiko.BadHostKeyException, known_hosts: str | None) -> str:
    return (f"host key MISMATCH: the server sent {error.key.get_name()} {error.key.fingerprint}, "
            f"{known_hosts} has {error.expected_key.fingerprint}; refusing to send the dump")
