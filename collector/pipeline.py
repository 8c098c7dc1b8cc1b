"""The page pipeline: dumpable pages in pfn order, in batches, zero-checked and compressed."""

from __future__ import annotations

import zlib
from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

from . import fastcopy
from .vmcore import MAP_WINDOW_BYTES, PhysicalMemory

BATCH_PAGES = 1024

# kdump compression flags (makedumpfile diskdump_mod.h DUMP_DH_COMPRESSED_*): the same values
# mark a page in page_desc.flags and the whole file in the header's status.
PAGE_FLAGS = {"zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20, "none": 0x0}


@dataclass
class PageBatch:
    """Up to BATCH_PAGES pages, consecutive in ``data``; the reader reuses the buffers of a
    batch for a later one (see PageReader)."""

    count: int
    pfns: array           # 'Q' array, pfn of each page
    data: memoryview      # count * page_size bytes
    zero: bytearray       # zero[i] == 1: page i is all zeros (only when zero detection is on)
    nzero: int

    def nonzero_indexes(self) -> list[int]:
        """Indexes of the pages that are not all zeros: the ones that need compressing."""
        if not self.nzero:
            return list(range(self.count))
        return [i for i in range(self.count) if not self.zero[i]]


@dataclass
class _BatchBuffers:
    data: bytearray
    pfns: array
    zero: bytearray


class PageReader:
    """Reads the pages selected by a bitmap window out of physical memory, in pfn order.

    A batch's buffers stay valid while the next ``buffers - 1`` batches are read: two let one
    batch be compressed while the next is read (PageCompressor.compressed_batches).
    """

    def __init__(self, memory: PhysicalMemory, detect_zero: bool, batch_pages: int = BATCH_PAGES,
                 buffers: int = 1) -> None:
        self.memory = memory
        self.detect_zero = detect_zero
        self.page_size = memory.page_size
        self.bytes_read = 0
        self._buffers = [_BatchBuffers(bytearray(batch_pages * self.page_size), array("Q", bytes(8 * batch_pages)),
                                       bytearray(batch_pages)) for _ in range(buffers)]
        self._next_buffers = 0

    def batches(self, start: int, end: int, bitmap: bytearray) -> Iterator[PageBatch]:
        """Batches of the pfns in [start, end) whose bit (pfn - start) is set in bitmap."""
        ps = self.page_size
        filled = 0
        buffers = self._take_buffers()
        for first_pfn, npages, source in self._sources(start, end):
            done = 0
            while done < npages:
                bit = first_pfn + done - start
                if isinstance(source, int):
                    chunk = min(npages - done, MAP_WINDOW_BYTES // ps)
                    with self.memory.file.window(source + done * ps, chunk * ps) as view:
                        consumed, copied = fastcopy.gather_pages(
                            view, bitmap, bit, chunk, ps, buffers.data, buffers.pfns, filled, first_pfn + done)
                else:
                    consumed, copied = fastcopy.gather_pages(
                        source, bitmap, bit, npages - done, ps, buffers.data, buffers.pfns, filled,
                        first_pfn + done)
                done += consumed
                filled += copied
                self.bytes_read += copied * ps
                if filled * ps == len(buffers.data):
                    yield self._batch(buffers, filled)
                    buffers = self._take_buffers()
                    filled = 0
        if filled:
            yield self._batch(buffers, filled)

    def _take_buffers(self) -> _BatchBuffers:
        buffers = self._buffers[self._next_buffers]
        self._next_buffers = (self._next_buffers + 1) % len(self._buffers)
        return buffers

    def _sources(self, start: int, end: int) -> Iterator[tuple[int, int, int | bytes | None]]:
        """Pieces of [start, end) in pfn order: (first pfn, page count, source), where source
        is a file offset, None for pages that read as zeros (in p_memsz, not in the file), or
        the bytes of a page only partly in the file (read through the slow path: a handful of
        pages per vmcore)."""
        ps = self.page_size
        pieces: list[tuple[int, int, int | bytes | None]] = []
        for run in self.memory.runs:
            lo, hi = max(run.start_pfn, start), min(run.end_pfn, end)
            if lo < hi:
                offset = None if run.file_offset is None else run.file_offset + (lo - run.start_pfn) * ps
                pieces.append((lo, hi - lo, offset))
        pieces.extend((pfn, 1, b"") for pfn in self.memory.partial_pfns if start <= pfn < end)
        for first_pfn, npages, source in sorted(pieces, key=lambda p: p[0]):
            if source == b"":
                source = self.memory.read(first_pfn * ps, ps)
            yield first_pfn, npages, source

    def _batch(self, buffers: _BatchBuffers, count: int) -> PageBatch:
        data = memoryview(buffers.data)[:count * self.page_size]
        nzero = fastcopy.find_zero_pages(data, count, self.page_size, buffers.zero) if self.detect_zero else 0
        return PageBatch(count, buffers.pfns, data, buffers.zero, nzero)


class PageCompressor:
    """Compresses pages one frame each (every page decompresses on its own to page_size bytes).

    With threads > 1 zstd batches go through ``multi_compress_to_buffer`` (its threads run
    without the GIL); zlib releases the GIL inside ``zlib.compress``, so a thread pool works;
    and compressed_batches compresses one batch while the next is read. One thread is a plain
    loop in the caller's thread: measured faster than multi_compress_to_buffer(threads=1).
    """

    def __init__(self, method: str, level: int | None, threads: int) -> None:
        if method not in ("zstd", "zlib", "none"):
            raise ValueError(f"unknown compression {method!r}")
        self.method = method
        self.page_flag = PAGE_FLAGS[method]
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads) if method == "zlib" and self.threads > 1 else None
        # Not self._pool: a batch compressing there waits for the pool's workers itself.
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="compress") if self.threads > 1 else None
        self.reader_buffers = 2 if self._ahead else 1
        if method == "zstd":
            import zstandard

            self._zstd = zstandard
            self._cctx = zstandard.ZstdCompressor(level=1 if level is None else level,
                                                  write_checksum=False, write_content_size=True)
        self.level = (1 if level is None else level) if method != "none" else 0

    def close(self) -> None:
        for pool in (self._pool, self._ahead):
            if pool is not None:
                pool.shutdown()

    def compressed_batches(self, batches: Iterable[PageBatch],
                           page_size: int) -> Iterator[tuple[PageBatch, list[bytes]]]:
        """Each batch with the frames of its non-zero pages. With threads > 1, a batch is
        compressed while the caller handles the one before and the reader fills the one after,
        so the reader must keep reader_buffers batches' buffers."""
        if self._ahead is None:
            for batch in batches:
                yield batch, self.compress(batch.data, page_size, batch.nonzero_indexes())
            return
        pending: tuple[PageBatch, Future[list[bytes]]] | None = None
        for batch in batches:
            future = self._ahead.submit(self.compress, batch.data, page_size, batch.nonzero_indexes())
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()

    def compress(self, data: memoryview, page_size: int, indexes: list[int]) -> list[bytes]:
        """Compressed frames of the pages ``indexes`` of ``data``, in the same order."""
        if not indexes:
            return []
        if self.method == "none":
            return [bytes(data[i * page_size:(i + 1) * page_size]) for i in indexes]
        if self.method == "zlib":
            level = self.level

            def compress_zlib(chunk: list[int]) -> list[bytes]:
                return [zlib.compress(data[i * page_size:(i + 1) * page_size], level) for i in chunk]

            if self._pool is None:
                return compress_zlib(indexes)
            step = -(-len(indexes) // self.threads)
            parts = self._pool.map(compress_zlib, [indexes[k:k + step] for k in range(0, len(indexes), step)])
            return [frame for part in parts for frame in part]
        if self.threads == 1:
            compress = self._cctx.compress
            return [compress(data[i * page_size:(i + 1) * page_size]) for i in indexes]
        segments = array("Q")
        for i in indexes:
            segments.extend((i * page_size, page_size))
        frames = self._cctx.multi_compress_to_buffer(
            self._zstd.BufferWithSegments(data, segments.tobytes()), threads=self.threads)
        return [frames[k].tobytes() for k in range(len(indexes))]
