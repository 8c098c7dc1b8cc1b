"""The page pipeline: the dumpable pages of a classification window, mapped from the vmcore,
zero-checked and compressed in spans, handed to the format writer in pfn order.

One span is up to SPAN_PAGES selected pages of one mapped window, encoded by one call into the
page scanner (no Python object per page, no copy before compressing, no GIL held). With
``threads`` > 1 spans are encoded by that many worker threads, each with its own compression
context; the caller (the format writer) receives them in order. There is no lock on the page
path: a span's buffers belong to one slot at a time, and the writer is the only one writing.
"""

from __future__ import annotations

import bisect
import functools
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from .. import fastcopy
from ..scan.classify import PageClassifier
from ..scan.value import PageClass
from ..source.vmcore import PhysicalMemory, SourceWindow
from .compression import DEFAULT_LEVEL, LEVEL_RANGES, METHODS, PAGE_FLAGS

if TYPE_CHECKING:  # concurrent.futures is imported only with threads: 5 ms of every start
    from concurrent.futures import Future, ThreadPoolExecutor

# (pages consumed, pages selected, bytes of data, zero pages): PageEncoder.encode's answer.
Encoded = tuple[int, int, int, int]
Outcome = Union[Encoded, "Future[Encoded]"]

# Selected pages per span: 1 MiB of 4 KiB pages per slot at most (pages stored as is).
SPAN_PAGES = 256


class PageCompressor:
    """How pages are compressed: method, level and threads. The pipeline asks it for one
    encoder per slot and for the worker threads."""

    def __init__(self, method: str, level: int | None, threads: int) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown compression {method!r}")
        self.method = method
        self.page_flag = PAGE_FLAGS[method]
        self.level = 0 if method == "none" else DEFAULT_LEVEL if level is None else level
        if method in LEVEL_RANGES:
            low, high = LEVEL_RANGES[method]
            if not low <= self.level <= high:
                raise ValueError(f"{method} level {self.level} is not in {low}..{high}")
        self.threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None

    def encoder(self, page_size: int) -> fastcopy.PageEncoder:
        return fastcopy.PageEncoder(self.page_flag, self.level, page_size)

    def pool(self) -> ThreadPoolExecutor | None:
        """The worker threads, None with one thread (spans are then encoded in the caller's)."""
        if self._pool is None and self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="encode")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


@dataclass
class EncodedSpan:
    """The selected pages among bits [first_bit, first_bit + npages) of a window's bitmap,
    encoded (see PageEncoder.encode). Its buffers are reused once the next span is asked for."""

    first_bit: int
    npages: int
    count: int           # pages selected
    nzero: int           # of which all zeros (stored nowhere)
    sizes: memoryview    # uint32 per selected page: stored size, 0 for a zero page
    raw: memoryview      # uint8 per selected page: 1 if stored as is
    data: memoryview     # the stored pages, back to back


class _Slot:
    """One span's encoder and buffers: used by one thread at a time."""

    def __init__(self, compressor: PageCompressor, page_size: int) -> None:
        self.encoder = compressor.encoder(page_size)
        self.data = bytearray(SPAN_PAGES * page_size)
        self.sizes = array("I", bytes(4 * SPAN_PAGES))
        self.raw = bytearray(SPAN_PAGES)


class _OpenWindow:
    """A mapped window and how many of its spans are still being encoded or written."""

    def __init__(self, window: SourceWindow) -> None:
        self.window = window
        self.users = 1  # the splitting loop itself, until it has submitted every span

    def release(self) -> None:
        self.users -= 1
        if not self.users:
            self.window.close()


@dataclass
class _Job:
    slot: _Slot
    window: _OpenWindow
    first_bit: int
    npages: int
    outcome: Outcome


class PagePipeline:
    """Encoded spans of the dumpable pages of each window, in pfn order."""

    def __init__(self, memory: PhysicalMemory, compressor: PageCompressor, detect_zero: bool) -> None:
        self.memory = memory
        self.page_size = memory.page_size
        self.detect_zero = detect_zero
        self.bytes_read = 0
        self._pool = compressor.pool()
        # Every worker busy, one more span queued, one with the writer.
        nslots = compressor.threads + 2 if self._pool is not None else 1
        self._free = [_Slot(compressor, self.page_size) for _ in range(nslots)]

    def spans(self, start: int, end: int, bitmap: bytes | bytearray,
              kept: bytes | bytearray | None = None) -> Iterator[EncodedSpan]:
        """Spans of the pfns in [start, end) whose bit (pfn - start) is set in ``bitmap``
        (which must not change until the last span is out). With ``kept`` (the dumped pages,
        of which ``bitmap`` selects some), a span's selected pages are neighbours among the
        kept ones: no kept page that is not selected lies between them."""
        pending: deque[_Job] = deque()
        try:
            for window in self.memory.windows(start, end, bitmap):
                opened = _OpenWindow(window)
                bit, stop = window.first_pfn - start, window.first_pfn - start + window.npages
                while bit < stop:
                    span_stop = (fastcopy.span_end(bitmap, bit, stop, SPAN_PAGES) if kept is None
                                 else fastcopy.span_end_within(bitmap, kept, bit, stop, SPAN_PAGES))
                    while not self._free:  # every slot busy: the oldest span goes to the writer first
                        yield from self._complete(pending.popleft())
                    slot = self._free.pop()
                    opened.users += 1
                    pending.append(_Job(slot, opened, bit, span_stop - bit,
                                        self._submit(slot, window, bitmap, bit - (window.first_pfn - start),
                                                     bit, span_stop - bit)))
                    bit = span_stop
                opened.release()
            while pending:
                yield from self._complete(pending.popleft())
        finally:  # the writer stopped early (target full): wait for the workers, unmap
            for job in pending:
                if not isinstance(job.outcome, tuple):
                    job.outcome.cancel() or job.outcome.exception()
                job.window.release()
                self._free.append(job.slot)

    def _submit(self, slot: _Slot, window: SourceWindow, bitmap: bytes | bytearray, src_page: int,
                first_bit: int, npages: int) -> Outcome:
        encode = functools.partial(slot.encoder.encode, window.source, src_page, bitmap, first_bit, npages,
                                   self.detect_zero, slot.data, slot.sizes, slot.raw)
        return encode() if self._pool is None else self._pool.submit(encode)

    def _complete(self, job: _Job) -> Iterator[EncodedSpan]:
        outcome = job.outcome
        consumed, count, nbytes, nzero = outcome if isinstance(outcome, tuple) else outcome.result()
        if consumed != job.npages:  # spans are sized to fit their slot
            raise RuntimeError(f"span of {job.npages} pages encoded only {consumed}")
        job.window.release()
        self.bytes_read += count * self.page_size
        slot = job.slot
        try:
            yield EncodedSpan(job.first_bit, job.npages, count, nzero, memoryview(slot.sizes)[:count],
                              memoryview(slot.raw)[:count], memoryview(slot.data)[:nbytes])
        finally:
            self._free.append(slot)


def ranked_spans(pipeline: PagePipeline, classifier: PageClassifier, order: list[PageClass],
                 window_ranks: list[int]) -> Iterator[tuple[int, EncodedSpan]]:
    """Every kept page in exactly one span, class by class in ``order`` (scan/value.py), each
    span with the rank among all kept pages of its first page: where its descriptors go.
    ``window_ranks[i]``: the kept pages before classifier window i."""
    windows = classifier.windows()
    all_explicit = sorted(pfn for cls in order for pfn in cls.pfns)

    def mask(pfns: list[int] | tuple[int, ...], start: int, end: int) -> int:
        inside = pfns[bisect.bisect_left(pfns, start):bisect.bisect_left(pfns, end)]
        if not inside:
            return 0
        bits = bytearray((end - start + 7) // 8)
        for pfn in inside:
            bits[(pfn - start) >> 3] |= 1 << ((pfn - start) & 7)
        return int.from_bytes(bits, "little")

    for cls in order:
        if not (cls.pfns or cls.slab or cls.first_slab or cls.rest):
            continue
        downward = cls.piece_pfns > 0
        indexes = range(len(windows) - 1, -1, -1) if downward else range(len(windows))
        for index in indexes:
            start, end = windows[index]
            wanted = mask(cls.pfns, start, end)
            if cls.pfns and not wanted:
                continue
            kept_bytes = classifier.dumpable_bitmap(start, end)
            kept = int.from_bytes(kept_bytes, "little")
            if cls.pfns:
                selected = kept & wanted
            else:
                slab = int.from_bytes(classifier.slab_bitmap(start, end), "little")
                first_slab = int.from_bytes(classifier.first_slab_bitmap(start, end), "little")
                chosen = first_slab if cls.first_slab else slab if cls.slab else ~(slab | first_slab)
                selected = kept & chosen & ~mask(all_explicit, start, end)
            if not selected:
                continue
            selected_bytes = selected.to_bytes(len(kept_bytes), "little")
            piece = cls.piece_pfns if downward else end - start
            starts = range(start, end, piece)
            for piece_start in reversed(starts) if downward else starts:
                piece_end = min(piece_start + piece, end)
                if not fastcopy.count_bits(selected_bytes, piece_start - start, piece_end - start):
                    continue  # nothing of this class here: no rank to count (that is O(window))
                lo, hi = (piece_start - start) // 8, (piece_end - start + 7) // 8
                yield from _piece_spans(pipeline, piece_start, piece_end, selected_bytes[lo:hi], kept_bytes[lo:hi],
                                        window_ranks[index] + fastcopy.count_bits(kept_bytes, 0, piece_start - start))


def _piece_spans(pipeline: PagePipeline, start: int, end: int, selected: bytes, kept: bytes | bytearray,
                 rank: int) -> Iterator[tuple[int, EncodedSpan]]:
    cursor = 0
    if not fastcopy.count_bits(selected, 0, end - start):
        return
    for span in pipeline.spans(start, end, selected, kept):
        if not span.count:
            continue
        first = fastcopy.span_end(selected, span.first_bit, span.first_bit + span.npages, 1) - 1
        rank += fastcopy.count_bits(kept, cursor, first)
        yield rank, span
        rank += span.count
        cursor = span.first_bit + span.npages
