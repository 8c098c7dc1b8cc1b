"""What compressing the stored pages alone costs, in process: goal 1's "compression µs/page x pages".

The pages are exactly those the dump stores: the non-zero dumpable pages at the dump level,
found by the real classifier and page pipeline (with compression "none" they come out as is,
zero pages already left out). Each span is copied into one buffer, and only
``PageEncoder(FLAG_ZSTD, level).encode`` over it is timed, with detect_zero off: the call
makedumpfile -z makes once a page (ZSTD_compressCCtx, level 1), without our reading,
classifying and writing around it. At --fast's level it tells how far one thread can get.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from collector import fastcopy
from collector.dump_level import DL_ZERO
from collector.pipeline.compression import DEFAULT_LEVEL, FLAG_ZSTD
from collector.pipeline.pages import SPAN_PAGES, PageCompressor, PagePipeline
from collector.scan.classify import PageClassifier
from collector.source.vmcore import Vmcore


@dataclass(frozen=True)
class CompressionCost:
    dump_level: int
    level: int             # zstd level
    pages: int             # pages stored (non-zero, dumpable)
    seconds: float         # the encode calls' sum, best of the repetitions (noise only adds)
    compressed_bytes: int  # what the dump's page data would take

    @property
    def us_per_page(self) -> float:
        return 1e6 * self.seconds / self.pages if self.pages else 0.0


def measure_compression_cost(vmcore_path: Path, dump_level: int, repeat: int,
                             level: int = DEFAULT_LEVEL) -> CompressionCost:
    seconds: list[float] = []
    pages = compressed = 0
    with Vmcore(str(vmcore_path)) as vmcore:
        ps = vmcore.page_size
        encoder = fastcopy.PageEncoder(FLAG_ZSTD, level, ps)
        source, data = bytearray(SPAN_PAGES * ps), bytearray(SPAN_PAGES * ps)
        sizes, raw, every = array("I", bytes(4 * SPAN_PAGES)), bytearray(SPAN_PAGES), b"\xff" * (SPAN_PAGES // 8)
        for _ in range(repeat):
            total, pages, compressed = 0.0, 0, 0
            classifier = PageClassifier(vmcore, dump_level, lambda message: None)  # bitmaps are cached
            pipeline = PagePipeline(vmcore.memory, PageCompressor("none", None, 1), bool(dump_level & DL_ZERO))
            for start, end in classifier.windows():
                for span in pipeline.spans(start, end, classifier.dumpable_bitmap(start, end)):
                    stored = span.count - span.nzero
                    source[:len(span.data)] = span.data
                    started = time.perf_counter()
                    _, _, nbytes, _ = encoder.encode(source, 0, every, 0, stored, False, data, sizes, raw)
                    total += time.perf_counter() - started
                    pages, compressed = pages + stored, compressed + nbytes
            seconds.append(total)
    return CompressionCost(dump_level, level, pages, min(seconds), compressed)
