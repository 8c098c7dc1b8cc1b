"""A throw-away OpenSSH server on 127.0.0.1 for SSH target tests and the throughput benchmark.

It has its own host key, accepts one client key for the current user (root in CI) and logs to
a file in its directory. Nothing outside that directory is touched except /run/sshd, which
sshd needs for privilege separation.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path
START_TIMEOUT = 10.0


@dataclass
class Sshd:
    directory: Path
    port: int
    user: str
    client_key: Path       # private key that the server accepts
    known_hosts: Path      # the server's real host key, for [127.0.0.1]:port
    host_public_key: str   # "ssh-ed25519 AAAA..."
    process: subprocess.Popen

    def url(self, path: str, port: int | None = None) -> str:
        return f"ssh://{self.user}@127.0.0.1:{port or self.port}{path}"

    def write_known_hosts(self, path: Path, port: int | None = None) -> Path:
        """A known_hosts file with this server's key, for another port (a proxy in front)."""
        path.write_text(f"[127.0.0.1]:{port or self.port} {self.host_public_key}\n")
        return path

    @property
    def log(self) -> str:
        return (self.directory / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def keygen(path: Path, comment: str = "") -> str:
    """A new ed25519 key pair at ``path``; returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return Path(f"{path}.pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(directory: Path, sftp: bool = True) -> Sshd:
    """Start sshd in the foreground on a free loopback port and wait until it greets."""
    directory.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_public_key = " ".join(keygen(directory / "host_key").split()[:2])
    client_pub = keygen(directory / "client_key", "vmcore-save-test")
    (directory / "authorized_keys").write_text(client_pub + "\n")
    port = free_port()
    config = directory / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"HostKey {directory / 'host_key'}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        *(["Subsystem sftp internal-sftp"] if sftp else []),
    ]) + "\n")
    log = open(directory / "sshd.log", "wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config), "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    server = Sshd(directory, port, getpass.getuser(), directory / "client_key", directory / "known_hosts",
                  host_public_key, process)
    server.write_known_hosts(server.known_hosts)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {server.log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"sshd did not answer on port {port} within {START_TIMEOUT} s: {server.log}")
        time.sleep(0.05)
