"""What the integrity manifest costs a dump, side by side on the same input: the same dump
written in process, as --output writes it (no manifest) and through the save job's HashingFile
with its manifest made at the end, as every dump directory gets it. Both are zstd 1 on one
thread (issue 14: the hash must not slow a one-thread dump measurably), each with a new
classifier (bitmaps are cached), into the same scratch file system.

This machine's speed drifts by several percent from one minute to the next, more than the cost
measured, so each round writes three dumps back to back in a shuffled order: two without the
hashing and one with it. The cost is the median over the rounds of the hashed dump's time over
the mean of its round's two plain ones; the two plain ones against each other (A/A) show what
the same measurement gives where there is no difference: a cost inside their spread is not
measurable here. The hashing runs on a thread beside the dump (fastcopy.FileHasher), so it
shows in wall time only without a free second CPU, while the process CPU (both threads) shows it
always; the dump's own thread's CPU is what the hashing costs the dump itself.

    python -m benchmarks.hashing_cost VMCORE [DUMP_LEVEL [ROUNDS]]
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collector.fastcopy import FileHasher
from collector.formats.kdump import write_kdump
from collector.integrity import HashingFile, MakeHasher
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
class Round:
    plain: tuple[DumpTime, DumpTime]  # two dumps without the hashing
    hashed: DumpTime

    def over_plain(self, value: Callable[[DumpTime], float]) -> float:
        """The hashed dump's ``value`` over the mean of the plain ones'."""
        return value(self.hashed) / statistics.fmean(value(plain) for plain in self.plain)

    def added(self, value: Callable[[DumpTime], float]) -> float:
        return value(self.hashed) - statistics.fmean(value(plain) for plain in self.plain)


@dataclass(frozen=True)
class HashingCost:
    dump_level: int
    dump_bytes: int
    rounds: tuple[Round, ...]

    @property
    def ratio(self) -> float:
        """Median over the rounds: wall time with the hashing over wall time without."""
        return statistics.median(r.over_plain(lambda t: t.wall_seconds) for r in self.rounds)

    @property
    def same_ratios(self) -> tuple[float, float]:
        """The A/A control: the spread (quartiles) of one plain dump's wall time over the other's."""
        ratios = [r.plain[1].wall_seconds / r.plain[0].wall_seconds for r in self.rounds]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        return quartiles[0], quartiles[-1]

    @property
    def plain(self) -> DumpTime:
        return _median([t for r in self.rounds for t in r.plain])

    @property
    def hashed(self) -> DumpTime:
        return _median([r.hashed for r in self.rounds])

    @property
    def cpu_seconds(self) -> float:
        """CPU the hashing added, median over the rounds (negative within noise)."""
        return statistics.median(r.added(lambda t: t.cpu_seconds) for r in self.rounds)

    @property
    def dump_thread_cpu_seconds(self) -> float:
        """CPU the hashing added to the dump's own thread (negative within noise)."""
        return statistics.median(r.added(lambda t: t.dump_thread_cpu_seconds) for r in self.rounds)


def _median(times: list[DumpTime]) -> DumpTime:
    return DumpTime(statistics.median(t.wall_seconds for t in times), statistics.median(t.cpu_seconds for t in times),
                    statistics.median(t.dump_thread_cpu_seconds for t in times))


def measure_hashing_cost(vmcore_path: Path, scratch: Path, dump_level: int, rounds: int) -> HashingCost:
    """Dump ``vmcore_path`` into ``scratch``: ``rounds`` rounds of two plain dumps and a hashed
    one, in a shuffled order each (after one untimed dump)."""
    shuffle = random.Random(dump_level).shuffle
    done = []
    size = 0
    path = scratch / "hashing-cost.kdump"
    with Vmcore(str(vmcore_path)) as vmcore:
        timed_dump(vmcore, dump_level, path, None)
        for _ in range(rounds):
            order = [0, 1, 2]  # 2: the hashed one
            shuffle(order)
            times: dict[int, DumpTime] = {}
            for which in order:
                times[which], size = timed_dump(vmcore, dump_level, path, FileHasher if which == 2 else None)
            done.append(Round((times[0], times[1]), times[2]))
    return HashingCost(dump_level, size, tuple(done))


def timed_dump(vmcore: Vmcore, dump_level: int, path: Path, hasher: MakeHasher | None) -> tuple[DumpTime, int]:
    """One dump, deleted afterwards: its time and size; through a HashingFile with ``hasher``
    unless None."""
    path.unlink(missing_ok=True)
    started, cpu_started, thread_started = time.perf_counter(), time.process_time(), time.thread_time()
    file = LocalFile(str(path))
    hashed = None if hasher is None else HashingFile(file, hasher=hasher)
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
    level, rounds = (int(sys.argv[2]) if len(sys.argv) > 2 else 31), (int(sys.argv[3]) if len(sys.argv) > 3 else 9)
    with tempfile.TemporaryDirectory(prefix="vmcore-bench-", dir="/dev/shm") as directory:
        cost = measure_hashing_cost(Path(sys.argv[1]), Path(directory), level, rounds)
    low, high = cost.same_ratios
    print(f"-d {level}, {cost.dump_bytes / 2**20:.1f} MiB dump, {rounds} rounds: {cost.plain.wall_seconds:.2f} s "
          f"without the manifest's hashing, {cost.hashed.wall_seconds:.2f} s with it (medians); with / without "
          f"{cost.ratio:.3f}x (median of the rounds; without / without: {low:.3f}-{high:.3f}x, quartiles); CPU "
          f"{cost.cpu_seconds:+.3f} s, the dump's thread {cost.dump_thread_cpu_seconds:+.3f} s")
