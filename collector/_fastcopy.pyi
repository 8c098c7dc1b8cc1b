"""The contract of the compiled page scanner (_fastcopy.pyx); collector/_fastcopy_py.py is its
pure-Python twin with the same signatures. Buffers are anything with the buffer protocol."""

from array import array
from collections.abc import Collection
from typing import TypeAlias

# The buffers as the page path passes them. The compiled module takes any C-contiguous buffer of
# the item type (typed memoryviews); the twin indexes and slices them, so it needs these types.
Bytes: TypeAlias = bytes | bytearray | memoryview  # const uint8_t[::1]: pages, bitmaps read
WritableBytes: TypeAlias = bytearray | memoryview  # uint8_t[::1]: written in place
Words: TypeAlias = array[int] | memoryview  # uint32_t[::1], int64_t[::1], uint64_t[::1]: array("I"), "q", "Q"

class PageEncoder:
    page_flag: int
    level: int
    page_size: int
    def __init__(self, page_flag: int, level: int, page_size: int) -> None: ...
    def encode(self, src: Bytes | None, src_page: int, bitmap: Bytes, first_bit: int, npages: int,
               detect_zero: bool, data: WritableBytes, sizes: Words,
               raw: WritableBytes) -> tuple[int, int, int, int]: ...

def clear_zero_pages(src: Bytes | None, src_page: int, bitmap: WritableBytes, first_bit: int, npages: int,
                     page_size: int) -> int: ...
def kdump_descs(sizes: Words, raw: Bytes, count: int, data_offset: int, zero_offset: int, page_size: int,
                page_flag: int, out: WritableBytes) -> None: ...
def span_end(bitmap: Bytes, start: int, end: int, max_set: int) -> int: ...
def span_end_within(selected: Bytes, kept: Bytes, start: int, end: int, max_set: int) -> int: ...
def count_bits(bitmap: Bytes, start: int, end: int) -> int: ...
def kallsyms_find(names: Bytes, count: int, token_table: Bytes, token_index: Bytes, first_token_ok: Bytes,
                  token_lengths: Bytes, length_ok: Bytes, name_ok: Bytes,
                  wanted: Collection[bytes]) -> list[tuple[int, bytes]]: ...
def bit_runs(bitmap: Bytes, start: int, end: int) -> list[tuple[int, int]]: ...
def classify_pages(pages: Bytes, npages: int, p: Words, bitmap: WritableBytes, first_bit: int, first_pfn: int,
                   counts: Words, slab_bits: WritableBytes, first_slab_bits: WritableBytes,
                   first_caches: Words, slab_cache_offset: int) -> None: ...
