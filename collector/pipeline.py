"""The page pipeline: dumpable pages in pfn order, in batches, zero-checked and compressed."""

from __future__ import annotations

import zlib
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from . import fastcopy
from .vmcore import MAP_WINDOW_BYTES, PhysicalMemory

BATCH_PAGES = 1024

# kdump compression flags (makedumpfile diskdump_mod.h DUMP_DH_COMPRESSED_*): the same values
# mark a page in page_desc.flags and the whole file in the header's status.
PAGE_FLAGS = {"zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20, "none": 0x0}


@dataclass
class PageBatch:
    """Up to BATCH_PAGES pages, consecutive in ``data``; buffers are reused by the next batch."""

    count: int
    pfns: array           # 'Q' array, pfn of each page
    data: memoryview      # count * page_size bytes
    zero: bytearray       # zero[i] == 1: page i is all zeros (only when zero detection is on)
    nzero: int


class PageReader:
    """Reads the pages selected by a bitmap window out of physical memory, in pfn order."""

    def __init__(self, memory: PhysicalMemory, detect_zero: bool, batch_pages: int = BATCH_PAGES) -> None:
        self.memory = memory
        self.detect_zero = detect_zero
        self.page_size = memory.page_size
        self.bytes_read = 0
        self._buffer = bytearray(batch_pages * self.page_size)
        self._pfns = array("Q", bytes(8 * batch_pages))
        self._zero = bytearray(batch_pages)

    def batches(self, start: int, end: int, bitmap: bytearray) -> Iterator[PageBatch]:
        """Batches of the pfns in [start, end) whose bit (pfn - start) is set in bitmap."""
        ps = self.page_size
        filled = 0
        for first_pfn, npages, source in self._sources(start, end):
            done = 0
            while done < npages:
                bit = first_pfn + done - start
                if isinstance(source, int):
                    chunk = min(npages - done, MAP_WINDOW_BYTES // ps)
                    with self.memory.file.window(source + done * ps, chunk * ps) as view:
                        consumed, copied = fastcopy.gather_pages(
                            view, bitmap, bit, chunk, ps, self._buffer, self._pfns, filled, first_pfn + done)
                else:
                    consumed, copied = fastcopy.gather_pages(
                        source, bitmap, bit, npages - done, ps, self._buffer, self._pfns, filled,
                        first_pfn + done)
                done += consumed
                filled += copied
                self.bytes_read += copied * ps
                if filled * ps == len(self._buffer):
                    yield self._batch(filled)
                    filled = 0
        if filled:
            yield self._batch(filled)

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

    def _batch(self, count: int) -> PageBatch:
        data = memoryview(self._buffer)[:count * self.page_size]
        nzero = fastcopy.find_zero_pages(data, count, self.page_size, self._zero) if self.detect_zero else 0
        return PageBatch(count, self._pfns, data, self._zero, nzero)


class PageCompressor:
    """Compresses pages one frame each (every page decompresses on its own to page_size bytes).

    With threads > 1 zstd batches go through ``multi_compress_to_buffer`` (its threads run
    without the GIL); zlib releases the GIL inside ``zlib.compress``, so a thread pool works.
    One thread is a plain loop: measured faster than multi_compress_to_buffer(threads=1).
    """

    def __init__(self, method: str, level: int | None, threads: int) -> None:
        if method not in ("zstd", "zlib", "none"):
            raise ValueError(f"unknown compression {method!r}")
        self.method = method
        self.page_flag = PAGE_FLAGS[method]
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads) if method == "zlib" and self.threads > 1 else None
        if method == "zstd":
            import zstandard

            self._zstd = zstandard
            self._cctx = zstandard.ZstdCompressor(level=1 if level is None else level,
                                                  write_checksum=False, write_content_size=True)
        self.level = (1 if level is None else level) if method != "none" else 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def compress(self, data: memoryview, page_size: int, indexes: list[int]) -> list[bytes]:
        """Compressed frames of the pages ``indexes`` of ``data``, in the same order."""
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
        if not indexes:
            return []
        segments = array("Q")
        for i in indexes:
            segments.extend((i * page_size, page_size))
        frames = self._cctx.multi_compress_to_buffer(
            self._zstd.BufferWithSegments(data, segments.tobytes()), threads=self.threads)
        return [frames[k].tobytes() for k in range(len(indexes))]
