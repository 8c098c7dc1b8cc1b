"""A throw-away NFS server (nfs-ganesha, VFS FSAL) for NFS target tests, in a private network
namespace.

The machine's own kernel has no NFS client, so clients are QEMU guests: QEMU runs in the same
namespace (``run_in_capture_kernel(..., netns=server.netns)``) and its user networking takes
the guest's connections to 10.0.2.2 to this namespace's loopback, where ganesha listens.

ganesha serves NFS over TCP, each export ``NAME`` being the folder ``directory/NAME`` mounted
as ``server:/NAME`` in the NFS versions given, writable unless named read-only, with root not
squashed and no NFSv4 grace period (a fresh server would refuse new files for 90 s).
rpcbind, which v3 clients ask for the MOUNT port, runs beside it. Both get a private /run in a
private mount namespace: rpcbind's socket /run/rpcbind.sock is a path, not a port, and must
not meet a host rpcbind. Nothing else on the machine is touched; stop() kills both and deletes
the namespace.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
READY_LINE = "NFS SERVER INITIALIZED"

_CORE_CONFIG = """\
NFS_CORE_PARAM {{
    Protocols = 3, 4;
    Enable_NLM = false;     # clients mount v3 with nolock
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Mount_Path_Pseudo = true;  # v3 clients mount server:/NAME too, not the host folder's path
}}
NFSv4 {{
    Graceless = true;
    RecoveryRoot = {recovery};
}}
NFS_KRB5 {{ Active_krb5 = false; }}
"""
_EXPORT_CONFIG = """\
EXPORT {{
    Export_Id = {export_id};
    Path = {path};
    Pseudo = /{name};
    Protocols = {versions};
    Transports = TCP;
    Access_Type = {access};
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""


@dataclass
class NfsServer:
    netns: str          # `ip netns` name; its loopback is 10.0.2.2 for a QEMU guest run in it
    directory: Path     # export folders, config, log, recovery state
    process: subprocess.Popen  # the process group leader (ganesha, rpcbind beside it)

    def export_dir(self, name: str) -> Path:
        """The host folder that clients mount as ``server:/name``."""
        return self.directory / name

    @property
    def log(self) -> str:
        try:
            return (self.directory / "ganesha.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def freeze(self) -> None:
        """SIGSTOP ganesha and rpcbind: a server that hangs. Its host still completes TCP
        handshakes and acknowledges data until the socket buffers fill; nothing is answered."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL ganesha and rpcbind: a dead server. Its connections are closed and new ones
        refused; stop() still deletes the namespace."""
        os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop ganesha and rpcbind (TERM, then KILL), then delete the namespace."""
        try:
            _kill_group(self.process)
        finally:
            subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, timeout=STOP_TIMEOUT)


def start_nfs_server(directory: Path, exports: dict[str, tuple[int, ...]],
                     read_only: frozenset[str] = frozenset()) -> NfsServer:
    """Create a network namespace, start rpcbind and ganesha in it and wait until ganesha serves
    ``exports`` (export name -> NFS versions, e.g. ``{"export": (3, 4)}``), those named in
    ``read_only`` read-only."""
    recovery_dir = directory / "recovery"
    recovery_dir.mkdir(parents=True, exist_ok=True)
    config_text = _CORE_CONFIG.format(recovery=recovery_dir)
    for export_id, (name, versions) in enumerate(exports.items(), start=1):
        (directory / name).mkdir(exist_ok=True)
        config_text += _EXPORT_CONFIG.format(export_id=export_id, path=directory / name, name=name,
                                             versions=", ".join(map(str, versions)),
                                             access="RO" if name in read_only else "RW")
    config = directory / "ganesha.conf"
    config.write_text(config_text)
    netns = f"vmcore-nfs-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=STOP_TIMEOUT)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, capture_output=True,
                       timeout=STOP_TIMEOUT)
        ganesha = ["ganesha.nfsd", "-F", "-f", str(config), "-L", str(directory / "ganesha.log"),
                   "-p", str(directory / "ganesha.pid")]
        # rpcbind must be listening before ganesha registers MOUNT and NFS with it.
        script = (f"mount -t tmpfs -o mode=755 tmpfs /run && {{ rpcbind -f & }} && "
                  f"until [ -S /run/rpcbind.sock ]; do sleep 0.05; done && exec {shlex.join(ganesha)}")
        with open(directory / "server.out", "wb") as output:
            process = subprocess.Popen(
                ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    except BaseException:
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True, timeout=STOP_TIMEOUT)
        raise
    server = NfsServer(netns=netns, directory=directory, process=process)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def nfs_server(directory: Path, exports: dict[str, tuple[int, ...]],
               read_only: frozenset[str] = frozenset()) -> Iterator[NfsServer]:
    server = start_nfs_server(directory, exports, read_only)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def silent_listener(netns: str, port: int) -> Iterator[None]:
    """A TCP port on the namespace's loopback that takes connections and never answers: to a
    client, a server that hangs."""
    listener = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c",
         "import socket, sys, time\n"
         f"s = socket.create_server(('127.0.0.1', {port}), backlog=64)\n"
         "print('listening', flush=True)\n"
         "time.sleep(3600)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert listener.stdout is not None
        ready, _, _ = select.select([listener.stdout], [], [], START_TIMEOUT)
        if not ready or listener.stdout.readline() != b"listening\n":
            raise RuntimeError(f"the silent listener on port {port} did not start")
        yield
    finally:
        listener.kill()
        listener.wait(timeout=STOP_TIMEOUT)


def _wait_ready(server: NfsServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while READY_LINE not in server.log:
        if server.process.poll() is not None or time.monotonic() > deadline:
            output = (server.directory / "server.out").read_text(errors="replace")
            raise RuntimeError(f"nfs-ganesha did not start (exit status {server.process.poll()}):\n"
                               f"{output[-2000:]}\n{server.log[-3000:]}")
        time.sleep(0.1)


def _kill_group(process: subprocess.Popen) -> None:
    """TERM the process group (ganesha flushes and exits in 1-3 s), KILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            process.poll()
            if not _group_alive(process.pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
