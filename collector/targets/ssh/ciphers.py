"""Cipher choice: the cheapest one for paramiko first."""

from __future__ import annotations

import socket
from typing import Any

import paramiko

# AES-GCM is the cheapest cipher for paramiko (one pass, no separate MAC; paramiko has it since
# 3.5); the rest of paramiko's list follows in its own order.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def transport_preferring_gcm(sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
    """An SSHClient.connect transport_factory: paramiko's Transport, AES-GCM first."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in offered) + \
        tuple(c for c in offered if c not in PREFERRED_CIPHERS)
    return transport
