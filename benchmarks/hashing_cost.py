"""What the integrity manifest costs a dump, side by side on the same input: the same dump
written in process twice, once as --output writes it (no manifest) and once through the save
job's HashingFile with its manifest made at the end, as every dump directory gets it. Both are
zstd 1 on one thread (issue 14: the hash must not slow a one-thread dump measurably), each with
a new classifier (bitmaps are cached), into the same scratch file system; the two alternate,
and each keeps the best of the repetitions (noise only adds). The ratio of their wall times is
the manifest's cost: the hashing runs on a thread beside the dump (hashlib releases the GIL),
so it shows in wall time only without a free second CPU, while the process CPU (both threads)
shows it always. The dump's own thread's CPU is what the hashing costs the dump itself (copies,
bookkeeping, the chunks hashed at the end), whatever else the machine runs.

    python -m benchmarks.hashing_cost VMCORE [DUMP_LEVEL [REPEAT]]
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from collector.formats.kdump import write_kdump
from collector.integrity import HashingFile
from collector.pipeline.compression import DEFAULT_LEVEL
from collector.pipeline.pages import PageCompressor
from collector.progress import LineProgress
from collector.scan.classify import PageClassifier
from collector.source.vmcore import Vmcore
from collector.targets import TargetFile
from collector.targets.local import LocalFile


@dataclass(frozen=True)
class DumpTime:
    wall_seconds: float
    cpu_seconds: float  # the process's, both threads (the hashing thread's too)
    dump_thread_cpu_seconds: float  # the dump's own thread's alone


@dataclass(frozen=True)
class HashingCost:
    dump_level: int
    dump_bytes: int
    plain: DumpTime   # without the manifest's hashing: best of the repetitions
    hashed: DumpTime  # with it, made at the end as the save job does

    @property
    def ratio(self) -> float:
        """Wall time with the hashing over wall time without."""
        return self.hashed.wall_seconds / self.plain.wall_seconds

    @property
    def cpu_seconds(self) -> float:
        """CPU the hashing added (negative within noise)."""
        return self.hashed.cpu_seconds - self.plain.cpu_seconds

    @property
    def dump_thread_cpu_seconds(self) -> float:
        """CPU the hashing added to the dump's own thread (negative within noise)."""
        return self.hashed.dump_thread_cpu_seconds - self.plain.dump_thread_cpu_seconds


def measure_hashing_cost(vmcore_path: Path, scratch: Path, dump_level: int, repeat: int) -> HashingCost:
    """Dump ``vmcore_path`` into ``scratch`` ``repeat`` times without and with the hashing,
    alternating which goes first."""
    runs: dict[bool, list[DumpTime]] = {False: [], True: []}
    size = 0
    with Vmcore(str(vmcore_path)) as vmcore:
        for repetition in range(repeat):
            for hashing in (False, True) if repetition % 2 == 0 else (True, False):
                dump_time, size = _dump(vmcore, dump_level, scratch / "hashing-cost.kdump", hashing)
                runs[hashing].append(dump_time)
    best = {hashing: min(times, key=lambda t: t.wall_seconds) for hashing, times in runs.items()}
    return HashingCost(dump_level, size, best[False], best[True])


def _dump(vmcore: Vmcore, dump_level: int, path: Path, hashing: bool) -> tuple[DumpTime, int]:
    """One dump, deleted afterwards: its time and size."""
    path.unlink(missing_ok=True)
    started, cpu_started, thread_started = time.perf_counter(), time.process_time(), time.thread_time()
    file = LocalFile(str(path))
    hashed = HashingFile(file) if hashing else None
    sink: TargetFile = file if hashed is None else hashed
    compressor = PageCompressor("zstd", DEFAULT_LEVEL, 1)
    try:
        classifier = PageClassifier(vmcore, dump_level, lambda message: None)
        result = write_kdump(sink, vmcore, classifier, compressor, LineProgress(quiet=True))
        sink.sync()
    finally:
        compressor.close()
        sink.close()
    if hashed is not None:
        hashed.manifest(result.complete)
    dump_time = DumpTime(time.perf_counter() - started, time.process_time() - cpu_started,
                         time.thread_time() - thread_started)
    size = path.stat().st_size
    path.unlink()
    return dump_time, size


if __name__ == "__main__":
    level, repeat = (int(sys.argv[2]) if len(sys.argv) > 2 else 31), (int(sys.argv[3]) if len(sys.argv) > 3 else 5)
    with tempfile.TemporaryDirectory(prefix="vmcore-bench-", dir="/dev/shm") as directory:
        cost = measure_hashing_cost(Path(sys.argv[1]), Path(directory), level, repeat)
    print(f"-d {level}, {cost.dump_bytes / 2**20:.1f} MiB dump: {cost.plain.wall_seconds:.2f} s without the "
          f"manifest's hashing, {cost.hashed.wall_seconds:.2f} s with it ({cost.ratio:.3f}x); CPU "
          f"{cost.plain.cpu_seconds:.2f} / {cost.hashed.cpu_seconds:.2f} s ({cost.cpu_seconds:+.2f} s), the dump's "
          f"thread {cost.plain.dump_thread_cpu_seconds:.3f} / {cost.hashed.dump_thread_cpu_seconds:.3f} s "
          f"({cost.dump_thread_cpu_seconds:+.3f} s)")
