"""Pure-Python twin of _fastcopy.pyx: the readable reference, used when the compiled module is
missing or VMCORE_COLLECTOR_PURE_PYTHON=1. Same functions, same results."""

from __future__ import annotations

from typing import Any


def gather_pages(src: Any, bitmap: Any, first_bit: int, npages: int, page_size: int,
                 dst: Any, pfns_out: Any, dst_index: int, first_pfn: int) -> tuple[int, int]:
    """Copy the pages of ``src`` whose bit is set into ``dst`` from page slot ``dst_index``.

    Page i of src (pfn ``first_pfn + i``) is selected by bit ``first_bit + i`` of ``bitmap``
    (least significant bit first). ``src`` None means the source pages are all zeros. Stops when
    dst is full. Returns (source pages consumed, pages copied).
    """
    capacity = len(dst) // page_size
    zero_page = bytes(page_size)
    i = copied = 0
    while i < npages and dst_index + copied < capacity:
        bit = first_bit + i
        if bitmap[bit >> 3] & (1 << (bit & 7)):
            slot = (dst_index + copied) * page_size
            dst[slot:slot + page_size] = zero_page if src is None else src[i * page_size:(i + 1) * page_size]
            pfns_out[dst_index + copied] = first_pfn + i
            copied += 1
        i += 1
    return i, copied


def find_zero_pages(buf: Any, npages: int, page_size: int, flags: Any) -> int:
    """Set flags[i] to 1 where page i of buf is all zeros, else 0; return the zero count."""
    zero_page = bytes(page_size)
    view = memoryview(buf)
    nzero = 0
    for i in range(npages):
        is_zero = view[i * page_size:(i + 1) * page_size] == zero_page
        flags[i] = int(is_zero)
        nzero += is_zero
    return nzero


def count_bits(bitmap: Any, start: int, end: int) -> int:
    """Number of set bits in [start, end) of an LSB-first bitmap."""
    return sum((bitmap[bit >> 3] >> (bit & 7)) & 1 for bit in range(start, end))


def bit_runs(bitmap: Any, start: int, end: int) -> list[tuple[int, int]]:
    """Runs of set bits in [start, end) as a list of (first, last + 1) bit numbers."""
    runs: list[tuple[int, int]] = []
    run_start = None
    for bit in range(start, end):
        if (bitmap[bit >> 3] >> (bit & 7)) & 1:
            if run_start is None:
                run_start = bit
        elif run_start is not None:
            runs.append((run_start, bit))
            run_start = None
    if run_start is not None:
        runs.append((run_start, end))
    return runs
