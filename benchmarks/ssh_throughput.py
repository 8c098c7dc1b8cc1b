"""SSH throughput on loopback: OpenSSH's ``ssh host 'cat > FILE'`` against SshTarget.

Starts a throw-away sshd on 127.0.0.1 (as the tests do; run as root), then sends the same
random bytes (a) through the ssh client into cat, (b) with SshTarget writing 1 MiB pieces at
increasing offsets, and (c) with SshTarget in the kdump writer's pattern: each 1 MiB of data is
followed by a small write further back (page descriptors), which waits for the data's
acknowledgements. Both sides use the same cipher. Prints the best MB/s of --runs runs (the
machine's noise only ever slows a run down) and the ratios to (a).

    .venv/bin/python benchmarks/ssh_throughput.py [--mib 256] [--runs 3] [--cipher aes128-gcm@openssh.com]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.targets import SshOptions, open_target  # noqa: E402
from tests.sshd import start_sshd  # noqa: E402

PIECE = 1 << 20
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
    target = open_target(server.url(str(remote.parent)), options, print)
    try:
        started = time.monotonic()
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
        return time.monotonic() - started
    finally:
        target.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="bytes to send, in MiB (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, best counts (default 3)")
    parser.add_argument("--cipher", default="aes128-gcm@openssh.com", help="cipher for the ssh client "
                        "(SshTarget prefers aes128-gcm@openssh.com)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ssh-bench-") as tmp:
        directory = Path(tmp)
        data = os.urandom(args.mib << 20)
        source = directory / "source"
        source.write_bytes(data)
        server = start_sshd(directory / "sshd")
        try:
            cat_seconds = min(ssh_cat(server, source, directory / "by-ssh-cat", args.cipher)
                              for _ in range(args.runs))
            seconds = {name: min(ssh_target(server, data, directory / "by-target", kdump_pattern)
                                 for _ in range(args.runs))
                       for name, kdump_pattern in (("SshTarget, sequential 1 MiB writes", False),
                                                   ("SshTarget, kdump pattern", True))}
        finally:
            server.stop()
        by_target = (directory / "by-target").read_bytes()
        assert by_target[-len(data):] == data  # the kdump pattern wrote it after the descriptors
    megabytes = len(data) / 1e6
    cat_rate = megabytes / cat_seconds
    print(f"{args.mib} MiB over loopback")
    print(f"  ssh -c {args.cipher} 'cat > FILE':  {cat_rate:7.1f} MB/s")
    for name, secs in seconds.items():
        rate = megabytes / secs
        print(f"  {name + ':':38} {rate:7.1f} MB/s  ({100 * rate / cat_rate:.0f}% of ssh cat; target 80%)")


if __name__ == "__main__":
    main()
