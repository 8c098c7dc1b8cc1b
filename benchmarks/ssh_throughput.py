"""SSH throughput on loopback: OpenSSH's ``ssh host 'cat > FILE'`` against SshTarget.

Starts a throw-away sshd on 127.0.0.1 (as the tests do; run as root), then sends the same
random bytes (a) through the ssh client into cat, (b) with SshTarget writing 1 MiB pieces at
increasing offsets, and (c) with SshTarget in the kdump writer's pattern: each 1 MiB of data is
followed by a small write further back (page descriptors), which waits for the data's
acknowledgements. Both sides use the same cipher, and both times include connecting and
authenticating (ssh cat's process start too). Prints the best MB/s of --runs runs (the
machine's noise only ever slows a run down) and the ratios to (a).

    .venv/bin/python -m benchmarks.ssh_throughput [--mib 256] [--runs 3] [--cipher aes128-gcm@openssh.com]

python -m benchmarks.run includes it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from collector.targets import SshOptions, open_target
from tests.support.sshd import start_sshd

PIECE = 1 << 20
DEFAULT_CIPHER = "aes128-gcm@openssh.com"
SSH_TARGET_PERCENT = 80  # of ssh cat's rate, from the SSH target's issue
DESCRIPTOR_BYTES = 4096  # about what 256 page descriptors take


def ssh_cat(server, source: Path, remote: Path, cipher: str) -> float:
    started = time.monotonic()
    with open(source, "rb") as stdin:
        subprocess.run(["ssh", "-i", str(server.client_key), "-o", f"UserKnownHostsFile={server.known_hosts}",
                        "-o", "BatchMode=yes", "-c", cipher, "-p", str(server.port), f"{server.user}@127.0.0.1",
                        f"cat > {remote}"], stdin=stdin, check=True, timeout=600)
    return time.monotonic() - started


def ssh_target(server, data: bytes, remote: Path, kdump_pattern: bool) -> float:
    options = SshOptions(key_file=str(server.client_key), known_hosts=str(server.known_hosts))
    started = time.monotonic()  # connecting counts, as it does for ssh cat
    target = open_target(server.url(str(remote.parent)), options, print)
    try:
        file = target.create(str(remote))
        view = memoryview(data)
        descriptors = len(data) // PIECE * DESCRIPTOR_BYTES
        offset = descriptors if kdump_pattern else 0
        for index, start in enumerate(range(0, len(data), PIECE)):
            file.write_at(offset + start, view[start:start + PIECE])
            if kdump_pattern:
                file.write_at(index * DESCRIPTOR_BYTES, view[:DESCRIPTOR_BYTES])
        file.sync()
        file.close()
    finally:
        target.close()
    return time.monotonic() - started


@dataclass
class SshFigures:
    mib: int
    cipher: str
    ssh_cat_mb_s: float        # OpenSSH's client: ssh host 'cat > FILE'
    sequential_mb_s: float     # SshTarget, 1 MiB writes at increasing offsets
    kdump_pattern_mb_s: float  # SshTarget, each 1 MiB followed by a descriptor write further back

    def target_rates(self) -> list[tuple[str, float]]:
        """(label, MB/s) of each way SshTarget sent the bytes."""
        return [("SshTarget, sequential 1 MiB writes", self.sequential_mb_s),
                ("SshTarget, kdump pattern", self.kdump_pattern_mb_s)]


def run_ssh_benchmark(mib: int, runs: int, cipher: str = DEFAULT_CIPHER) -> SshFigures:
    """The best rate of ``runs`` runs of each way of sending ``mib`` MiB (needs root and sshd)."""
    with tempfile.TemporaryDirectory(prefix="ssh-bench-") as tmp:
        directory = Path(tmp)
        data = os.urandom(mib << 20)
        source = directory / "source"
        source.write_bytes(data)
        server = start_sshd(directory / "sshd")
        try:
            cat_seconds = min(ssh_cat(server, source, directory / "by-ssh-cat", cipher) for _ in range(runs))
            sequential, kdump_pattern = (min(ssh_target(server, data, directory / "by-target", pattern)
                                             for _ in range(runs)) for pattern in (False, True))
        finally:
            server.stop()
        by_target = (directory / "by-target").read_bytes()
        assert by_target[-len(data):] == data  # the kdump pattern wrote it after the descriptors
    megabytes = len(data) / 1e6
    return SshFigures(mib, cipher, megabytes / cat_seconds, megabytes / sequential, megabytes / kdump_pattern)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="bytes to send, in MiB (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, best counts (default 3)")
    parser.add_argument("--cipher", default=DEFAULT_CIPHER, help="cipher for the ssh client "
                        "(SshTarget prefers aes128-gcm@openssh.com)")
    args = parser.parse_args()
    figures = run_ssh_benchmark(args.mib, args.runs, args.cipher)
    print(f"{args.mib} MiB over loopback")
    print(f"  ssh -c {args.cipher} 'cat > FILE':  {figures.ssh_cat_mb_s:7.1f} MB/s")
    for name, rate in figures.target_rates():
        print(f"  {name + ':':38} {rate:7.1f} MB/s  ({100 * rate / figures.ssh_cat_mb_s:.0f}% of ssh cat; "
              f"target {SSH_TARGET_PERCENT}%)")


if __name__ == "__main__":
    main()
