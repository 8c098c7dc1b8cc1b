"""What a kdump-compressed dump of a memory image would take, without writing one: the pages
per class at a dump level (the classifier's own counts, over every struct page) and the size
predicted from a sample of the kept pages, compressed by the page scanner as the writer
compresses them (zero check, stored as is when not smaller).

Used by ``vmcore-save --dry-run`` (a vmcore) and ``vmcore-collector estimate`` (the running
kernel through /proc/kcore). The sample is systematic over the kept pages in pfn order, from a
random start: each kept page has the same chance, and neighbouring pages (which compress
alike) are spread over the whole of memory.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import statistics
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from . import fastcopy
from .dump_level import DL_ZERO
from .formats.kdump import PAGE_DESC, KdumpLayout
from .pipeline.pages import PageCompressor
from .scan.classify import PageClassifier, PageCounts
from .source.vmcore import Vmcore

# Pages compressed per prediction: 32 MiB of 4 KiB pages, read and compressed SAMPLE_CHUNK at a
# time (memory stays small). Measured against real dumps of the test bed's vmcores: README,
# "Sizing a dump first: --dry-run".
SAMPLE_PAGES = 8192
SAMPLE_CHUNK = 256
_POPCOUNT = bytes(bin(i).count("1") for i in range(256))


@dataclass(frozen=True)
class Prediction:
    dump_level: int
    page_size: int
    counts: PageCounts     # present and excluded per class; zero and written as predicted
    kept: int              # pages the struct-page classes keep (zero pages among them)
    sample: int            # kept pages compressed
    sample_zero: int       # of which all zeros (left out with dump level bit 1)
    sample_bytes: int      # bytes the sampled pages take in the dump's page data
    sample_stdev: float    # of the per-page stored sizes
    metadata_bytes: int    # header, notes, bitmaps, descriptors, the shared zero page
    classify_seconds: float
    compress_seconds: float

    @property
    def data_bytes(self) -> int:
        return round(self.kept * self.sample_bytes / self.sample) if self.sample else 0

    @property
    def size(self) -> int:
        """Predicted bytes of the dump file."""
        return self.metadata_bytes + self.data_bytes

    @property
    def error_bytes(self) -> int:
        """Half the 95% interval of the predicted page data (the sample's standard error)."""
        if self.sample < 2:
            return 0
        finite = 1 - self.sample / self.kept  # a sample of most of the pages is nearly exact
        return round(1.96 * self.kept * self.sample_stdev / math.sqrt(self.sample) * math.sqrt(max(finite, 0)))

    @property
    def compress_bytes_per_second(self) -> float:
        """Page bytes the scanner encoded per second (one thread), on this machine."""
        return self.sample * self.page_size / self.compress_seconds if self.compress_seconds > 0 else 0.0


def predict(image: Vmcore, dump_level: int, method: str, level: int | None, warn: Callable[[str], None],
            sample_pages: int = SAMPLE_PAGES, seed: int | None = None) -> Prediction:
    """Classify every page of ``image`` at ``dump_level`` and compress a sample of the kept ones
    with ``method`` at ``level``; reads nothing else and writes nothing."""
    started = time.monotonic()
    classifier = PageClassifier(image, dump_level, warn)
    counts = PageCounts()
    windows = classifier.windows()
    kept_per_window = []
    for start, end in windows:
        counts.present += fastcopy.count_bits(classifier.present_bitmap(start, end), 0, end - start)
        kept_per_window.append(fastcopy.count_bits(classifier.dumpable_bitmap(start, end, counts), 0, end - start))
    kept = sum(kept_per_window)
    classify_seconds = time.monotonic() - started
    pfns = _sample_pfns(classifier, windows, kept_per_window, min(sample_pages, kept), random.Random(seed))
    ps, n = image.page_size, len(pfns)
    compressor = PageCompressor(method, level, 1)
    encoder = compressor.encoder(ps)
    detect_zero = bool(dump_level & DL_ZERO)
    data, raw, ones = bytearray(SAMPLE_CHUNK * ps), bytearray(SAMPLE_CHUNK), b"\xff" * (SAMPLE_CHUNK // 8)
    sizes = array("I", bytes(4 * n))
    sample_bytes = sample_zero = 0
    compress_seconds = 0.0
    for first in range(0, n, SAMPLE_CHUNK):
        chunk = pfns[first:first + SAMPLE_CHUNK]
        pages = b"".join(image.memory.read(pfn * ps, ps) for pfn in chunk)
        started = time.perf_counter()
        _, _, nbytes, nzero = encoder.encode(pages, 0, ones, 0, len(chunk), detect_zero, data,
                                             memoryview(sizes)[first:first + len(chunk)], raw)
        compress_seconds += time.perf_counter() - started
        sample_bytes, sample_zero = sample_bytes + nbytes, sample_zero + nzero
    compressor.close()
    zero = round(kept * sample_zero / n) if n else 0
    counts.zero, counts.written = zero, kept - zero
    layout = KdumpLayout.compute(ps, image.memory.max_mapnr, len(image.notes))
    metadata = ((1 + layout.sub_hdr_blocks + layout.bitmap_blocks) * ps + kept * PAGE_DESC.size
                + (ps if detect_zero else 0))
    return Prediction(dump_level, ps, counts, kept, n, sample_zero, sample_bytes,
                      statistics.pstdev(sizes) if n > 1 else 0.0, metadata, classify_seconds, compress_seconds)


def _sample_pfns(classifier: PageClassifier, windows: list[tuple[int, int]], kept_per_window: list[int],
                 count: int, rng: random.Random) -> list[int]:
    """``count`` kept pfns, evenly spaced in rank over all kept pages from a random start."""
    total = sum(kept_per_window)
    if not count:
        return []
    offset = rng.random()
    ranks = [int((i + offset) * total / count) for i in range(count)]
    pfns: list[int] = []
    first_rank = 0
    for (start, end), kept in zip(windows, kept_per_window):
        wanted = ranks[bisect.bisect_left(ranks, first_rank):bisect.bisect_left(ranks, first_rank + kept)]
        if wanted:
            bitmap = classifier.dumpable_bitmap(start, end)
            cumulative = list(itertools.accumulate(bitmap.translate(_POPCOUNT)))
            for rank in wanted:
                within = rank - first_rank
                byte = bisect.bisect_right(cumulative, within)
                nth = within - (cumulative[byte - 1] if byte else 0)
                bits = [bit for bit in range(8) if bitmap[byte] >> bit & 1]
                pfns.append(start + byte * 8 + bits[nth])
        first_rank += kept
    return pfns


def format_size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size < 10 * 2**30 else f"{size / 2**30:.2f} GiB"
