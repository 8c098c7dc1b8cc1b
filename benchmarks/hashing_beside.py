"""Where the manifest's hashing cost comes from (issue 14): the same one-thread dump as in
hashing_cost.py, in rounds of five in a shuffled order: two plain ones (the A/A control), one
through the save job's HashingFile (fastcopy.FileHasher: with the compiled module a thread that
never takes the GIL), one through a HashingFile with the pure-Python twin's FileHasher (a
Python thread sharing the GIL with the dump) and one plain while a separate process hashes as
many bytes with SHA-256 at the dump's own pace (the same work on the second CPU, no GIL shared).
If the process costs the dump as much as the thread, the cost is the machine's (the second
CPU's work); if not, it is the hashing's own (the GIL, handing over). Under
VMCORE_COLLECTOR_PURE_PYTHON=1 the first two hashing arms are the same twin.

    python -m benchmarks.hashing_beside VMCORE [DUMP_LEVEL [ROUNDS]]
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from collector import _fastcopy_py
from collector.fastcopy import FileHasher
from collector.integrity import MakeHasher
from collector.source.vmcore import Vmcore

from .hashing_cost import timed_dump

# The hashing process: on each byte read from stdin, hash `total` bytes in 1 MiB calls, spread
# over `seconds`, then write a line.
HASHER = r"""
import hashlib, os, sys, time
total, seconds = int(sys.argv[1]), float(sys.argv[2])
block = os.urandom(1 << 20)
while sys.stdin.buffer.read(1):
    started, done, digest = time.perf_counter(), 0, hashlib.sha256()
    while done < total:
        digest.update(block)
        done += len(block)
        ahead = started + seconds * done / total - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    print(digest.hexdigest(), flush=True)
"""
ARMS = ("plain", "plain again", "hashing thread", "twin's hashing thread", "hashing process")
HASHERS: dict[str, MakeHasher] = {"hashing thread": FileHasher, "twin's hashing thread": _fastcopy_py.FileHasher}


def measure(vmcore_path: Path, scratch: Path, dump_level: int, rounds: int) -> dict[str, list[float]]:
    """Per arm, each round's wall time over the mean of its round's two plain ones (for the
    plain ones: the second over the first)."""
    path = scratch / "hashing-beside.kdump"
    shuffle = random.Random(dump_level).shuffle
    ratios: dict[str, list[float]] = {arm: [] for arm in ARMS[1:]}
    with Vmcore(str(vmcore_path)) as vmcore:
        timed_dump(vmcore, dump_level, path, None)  # untimed: the page cache
        plain, size = timed_dump(vmcore, dump_level, path, None)
        # Paced a little faster than the dump, as the hashing thread keeps up with its writes.
        hasher = subprocess.Popen([sys.executable, "-c", HASHER, str(size), str(0.9 * plain.wall_seconds)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert hasher.stdin is not None and hasher.stdout is not None
        try:
            for _ in range(rounds):
                order = list(ARMS)
                shuffle(order)
                seconds: dict[str, float] = {}
                for arm in order:
                    if arm == "hashing process":
                        hasher.stdin.write(b"g")
                        hasher.stdin.flush()
                    seconds[arm] = timed_dump(vmcore, dump_level, path, HASHERS.get(arm))[0].wall_seconds
                    if arm == "hashing process" and not hasher.stdout.readline():
                        raise RuntimeError(f"the hashing process stopped (exit {hasher.wait()})")
                base = statistics.fmean((seconds["plain"], seconds["plain again"]))
                ratios["plain again"].append(seconds["plain again"] / seconds["plain"])
                for arm in ARMS[2:]:
                    ratios[arm].append(seconds[arm] / base)
        finally:
            hasher.stdin.close()
            hasher.wait()
    if hasher.returncode:
        raise RuntimeError(f"the hashing process failed (exit {hasher.returncode})")
    return ratios


if __name__ == "__main__":
    level, rounds = (int(sys.argv[2]) if len(sys.argv) > 2 else 31), (int(sys.argv[3]) if len(sys.argv) > 3 else 20)
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="vmcore-bench-", dir="/dev/shm") as directory:
        results = measure(Path(sys.argv[1]), Path(directory), level, rounds)
    for arm, values in results.items():
        low, _, high = statistics.quantiles(values, n=4)
        print(f"-d {level}, {rounds} rounds, {arm}: {statistics.median(values):.3f}x the plain dumps "
              f"(quartiles {low:.3f}-{high:.3f}x)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
