"""The paramiko internals that collector/targets/ssh/paramiko_adapter.py relies on still exist,
in the shape it uses them: names and signatures of the private methods, the call-backs and
constants paramiko's own code uses, and, against a real OpenSSH server, what they do.

A paramiko release that changes one of them fails here, naming it, rather than mid-dump.
"""

from __future__ import annotations

import inspect
import os
import re
import threading
from pathlib import Path

import paramiko
import paramiko.sftp
import pytest
from paramiko.sftp import BaseSFTP
from paramiko.sftp_client import SFTPClient
from paramiko.sftp_file import SFTPFile

from collector.targets import SshOptions
from collector.targets.ssh import paramiko_adapter
from collector.targets.ssh.connection import Connection
from collector.targets.ssh.paramiko_adapter import (
    CMD_CLOSE,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_WRITE,
    SFTP_OK,
    ReplyReceiver,
    SFTPAttributes,
    SftpSession,
    exit_status_within,
    int64,
)
from collector.targets.ssh.url import SshUrl
from tests.conftest import REPO
from tests.support.sshd import SSHD, Sshd, start_sshd

# (class, method, its parameters) for every private method the adapter calls or overrides.
PRIVATE_METHODS = [
    (BaseSFTP, "_send_version", "(self)"),
    (BaseSFTP, "_send_packet", "(self, t, packet)"),
    (BaseSFTP, "_read_packet", "(self)"),
    (SFTPClient, "_request", "(self, t, *args)"),
    (SFTPClient, "_async_request", "(self, fileobj, t, *args)"),
    (SFTPClient, "_read_response", "(self, waitfor=None)"),
    # the call-back _read_response makes on a request's fileobj: paramiko's own file has it
    (SFTPFile, "_async_response", "(self, t, msg, num)"),
]
# Undocumented behaviour, as the source of paramiko says it: (function, what it must contain).
CALLS = [
    (SFTPClient.__init__, "self._send_version()"),
    (SFTPClient._read_response, "fileobj._async_response(t, msg, num)"),
    (SFTPClient._async_request, "isinstance(item, int64)"),
    (SFTPClient._request, "self._read_response(num)"),
    (paramiko.Channel._wait_for_send_window, f"self.out_max_packet_size - {paramiko_adapter.PACKET_MARGIN}"),
]
SFTP_CONSTANTS = ["CMD_CLOSE", "CMD_EXTENDED", "CMD_HANDLE", "CMD_INIT", "CMD_OPEN", "CMD_STATUS", "CMD_VERSION",
                  "CMD_WRITE", "SFTP_FLAG_CREATE", "SFTP_FLAG_READ", "SFTP_FLAG_TRUNC", "SFTP_FLAG_WRITE", "SFTP_OK"]
OPENSSH_EXTENSIONS = ("fsync@openssh.com", "statvfs@openssh.com", "limits@openssh.com", "posix-rename@openssh.com")


def test_installed_paramiko_is_a_version_setup_py_admits():
    lowest, below = re.search(r'"paramiko>=([\d.]+),<(\d+)"', (REPO / "setup.py").read_text()).groups()
    version = tuple(int(part) for part in paramiko.__version__.split(".")[:2])
    assert tuple(int(part) for part in lowest.split(".")) <= version < (int(below),), paramiko.__version__


@pytest.mark.parametrize(("owner", "name", "parameters"), PRIVATE_METHODS,
                         ids=[f"{owner.__name__}.{name}" for owner, name, _ in PRIVATE_METHODS])
def test_private_method_exists_with_the_parameters_used(owner, name, parameters):
    assert str(inspect.signature(getattr(owner, name))) == parameters


@pytest.mark.parametrize(("function", "code"), CALLS, ids=[function.__qualname__ for function, _ in CALLS])
def test_undocumented_behaviour_is_still_in_paramiko(function, code):
    assert code in inspect.getsource(function)


def test_sftp_protocol_constants_are_in_paramiko_sftp():
    assert [name for name in SFTP_CONSTANTS if not isinstance(getattr(paramiko.sftp, name, None), int)] == []
    assert issubclass(paramiko.sftp.int64, int)


def test_channel_has_the_undocumented_attributes_used():
    channel = paramiko.Channel(0)
    assert isinstance(channel.status_event, threading.Event)
    assert isinstance(channel.out_max_packet_size, int)


class Replies(ReplyReceiver):
    def __init__(self) -> None:
        self.replies: list[tuple[int, int, int]] = []

    def on_reply(self, kind: int, reply: paramiko.Message, request_id: int) -> None:
        self.replies.append((kind, request_id, reply.get_int()))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if os.geteuid() != 0 or not os.path.exists(SSHD):
        pytest.skip("sshd needs root and openssh-server (./dev setup)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def connection(sshd: Sshd, tmp_path: Path):
    options = SshOptions(key_file=str(sshd.client_key), known_hosts=str(sshd.known_hosts))
    connection = Connection(SshUrl.parse(sshd.url(str(tmp_path))), options, print)
    connection.connect()
    yield connection
    connection.close()


def test_session_keeps_the_extensions_openssh_announces(connection):
    assert connection.link.sftp.extensions.keys() >= set(OPENSSH_EXTENSIONS)


def test_pipelined_write_past_4_gib_is_acknowledged_to_its_receiver(connection, tmp_path):
    sftp: SftpSession = connection.link.sftp
    path = tmp_path / "sparse"
    kind, reply = sftp.request(CMD_OPEN, str(path), SFTP_FLAG_WRITE | SFTP_FLAG_CREATE, SFTPAttributes())
    assert kind == CMD_HANDLE
    handle = reply.get_binary()
    receiver = Replies()
    offset = (1 << 32) + 5  # a 32-bit offset would land at 5
    request_id = sftp.send(receiver, CMD_WRITE, handle, int64(offset), b"written")
    sftp.take_reply()
    assert receiver.replies == [(CMD_STATUS, request_id, SFTP_OK)]
    assert not sftp.replies_waiting()
    sftp.request(CMD_CLOSE, handle)
    with open(path, "rb") as file:
        file.seek(offset)
        assert file.read() == b"written"
    assert path.stat().st_size == offset + len(b"written")


def test_request_raises_oserror_on_an_error_status(connection, tmp_path):
    with pytest.raises(FileNotFoundError):
        connection.link.sftp.request(CMD_OPEN, str(tmp_path / "missing" / "file"), SFTP_FLAG_WRITE,
                                     SFTPAttributes())


def test_packet_payload_is_what_the_channel_sends_per_packet(connection):
    sftp: SftpSession = connection.link.sftp
    assert 0 < sftp.packet_payload() == sftp.channel.out_max_packet_size - paramiko_adapter.PACKET_MARGIN


def test_exit_status_arrives_within_the_timeout(connection):
    channel = connection.transport.open_session()
    channel.exec_command("exit 3")
    assert exit_status_within(channel, 10.0)
    assert channel.recv_exit_status() == 3
    channel.close()
