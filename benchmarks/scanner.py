"""Page scanner micro-benchmark: the compiled _fastcopy against its pure-Python twin, in process.

Two hot loops on a real vmcore: PageClassifier.dumpable_bitmap over every window (-d 31:
struct pages mapped a section at a time, then classify_pages), and clear_zero_pages over every
page of every PT_LOAD, one mapped window per call as the page pipeline maps them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from collector import _fastcopy, _fastcopy_py, fastcopy
from collector.scan.classify import PageClassifier
from collector.source.vmcore import MAP_WINDOW_BYTES, Vmcore

SCANNER_FUNCTIONS = ("PageEncoder", "kdump_descs", "span_end", "clear_zero_pages", "count_bits", "bit_runs",
                     "classify_pages")


@dataclass(frozen=True)
class ScannerResult:
    task: str
    pages: int
    compiled_seconds: float
    pure_seconds: float

    @property
    def speedup(self) -> float:
        return self.pure_seconds / self.compiled_seconds


@contextlib.contextmanager
def scanner(impl: ModuleType) -> Iterator[None]:
    """Make collector.fastcopy (which PageClassifier calls through) use ``impl`` for a while."""
    saved = {name: getattr(fastcopy, name) for name in SCANNER_FUNCTIONS}
    try:
        for name in SCANNER_FUNCTIONS:
            setattr(fastcopy, name, getattr(impl, name))
        yield
    finally:
        for name, function in saved.items():
            setattr(fastcopy, name, function)


def time_dumpable_bitmaps(vmcore_path: Path, impl: ModuleType, best_of: int) -> tuple[float, int]:
    """Best seconds of building every -d 31 bitmap window, and the pages classified."""
    best = float("inf")
    with Vmcore(str(vmcore_path)) as vmcore, scanner(impl):
        windows = PageClassifier(vmcore, 31, lambda message: None).windows()
        for _ in range(best_of):
            classifier = PageClassifier(vmcore, 31, lambda message: None)  # a new one: bitmaps are cached
            started = time.perf_counter()
            for start, end in windows:
                classifier.dumpable_bitmap(start, end)
            best = min(best, time.perf_counter() - started)
    return best, sum(end - start for start, end in windows)


def time_clear_zero_pages(vmcore_path: Path, impl: ModuleType, best_of: int) -> tuple[float, int]:
    """Best seconds spent inside clear_zero_pages over every whole page of every PT_LOAD, and the
    page count. Only the call is timed: reading the file is the same for both twins."""
    with Vmcore(str(vmcore_path)) as vmcore:
        page_size = vmcore.page_size
        window = MAP_WINDOW_BYTES
        pieces = [(segment.offset + offset, min(window, segment.filesz - offset) // page_size)
                  for segment in vmcore.segments
                  for offset in range(0, segment.filesz - segment.filesz % page_size, window)]
    buffer = bytearray(window)
    best = float("inf")
    with open(vmcore_path, "rb", buffering=0) as f:
        for _ in range(best_of):
            seconds = 0.0
            for file_offset, npages in pieces:
                view = memoryview(buffer)[:npages * page_size]
                f.seek(file_offset)
                f.readinto(view)
                bitmap = bytearray(b"\xff" * (-(-npages // 8)))
                started = time.perf_counter()
                impl.clear_zero_pages(view, 0, bitmap, 0, npages, page_size)
                seconds += time.perf_counter() - started
            best = min(best, seconds)
    return best, sum(npages for _, npages in pieces)


def run_scanner_benchmark(vmcore_path: Path, best_of: int, pure_best_of: int) -> list[ScannerResult]:
    results = []
    for task, timer in (("dumpable_bitmap -d 31, all windows", time_dumpable_bitmaps),
                        ("clear_zero_pages, all pages", time_clear_zero_pages)):
        compiled_seconds, pages = timer(vmcore_path, _fastcopy, best_of)
        pure_seconds, _ = timer(vmcore_path, _fastcopy_py, pure_best_of)
        results.append(ScannerResult(task, pages, compiled_seconds, pure_seconds))
    return results
