"""What the integrity manifest costs, in process: a dump's bytes written again through the save
job's HashingFile over a file that keeps nothing, in the page writer's 1 MiB writes, timed with
the thread CPU of the hashing thread included (process CPU time) and without (wall time, which
is what the dump waits for when a second CPU takes the hashing). Compare with the dump's own
time: the manifest must not slow a one-thread dump measurably.

    python -m benchmarks.hashing_cost DUMP [REPEAT]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from collector.formats.kdump import FLUSH_BYTES
from collector.integrity import HashingFile


class _NullFile:
    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Keeps nothing: only the hashing is measured."""

    def reserve(self, offset: int, length: int) -> None:
        """Nothing to reserve."""

    def sync(self) -> None:
        """Nothing to sync."""

    def close(self) -> None:
        """Nothing to close."""


@dataclass(frozen=True)
class HashingCost:
    bytes: int
    wall_seconds: float  # best of the repetitions (noise only adds)
    cpu_seconds: float   # both threads' CPU in that repetition

    @property
    def mib_per_second(self) -> float:
        return self.bytes / 2**20 / self.wall_seconds if self.wall_seconds else 0.0


def measure_hashing_cost(dump_path: Path, repeat: int) -> HashingCost:
    data = dump_path.read_bytes()
    best: HashingCost | None = None
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        hashed = HashingFile(_NullFile())
        view = memoryview(data)
        for offset in range(0, len(data), FLUSH_BYTES):
            hashed.write_at(offset, view[offset:offset + FLUSH_BYTES])
        hashed.close()
        hashed.manifest(True)
        cost = HashingCost(len(data), time.perf_counter() - started, time.process_time() - cpu_started)
        if best is None or cost.wall_seconds < best.wall_seconds:
            best = cost
    assert best is not None
    return best


if __name__ == "__main__":
    cost = measure_hashing_cost(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    print(f"{cost.bytes / 2**20:.1f} MiB hashed: {cost.wall_seconds:.3f} s wall ({cost.mib_per_second:.0f} MiB/s), "
          f"{cost.cpu_seconds:.3f} s CPU")
