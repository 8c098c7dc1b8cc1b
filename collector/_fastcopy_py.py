"""Pure-Python twin of _fastcopy.pyx: the readable reference, used when the compiled module is
missing or VMCORE_COLLECTOR_PURE_PYTHON=1. Same functions, same results (compressed bytes may
differ where python-zstandard bundles another libzstd than the system's; sizes, zero flags and
the pages they decompress to do not)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Collection
from functools import partial
from typing import TYPE_CHECKING, Any

from .dump_level import DL_CACHE, DL_CACHE_PRIVATE, DL_FREE, DL_USER
from .kernel.name_hash import NAME_HASH_BITS, name_hash
from .kernel.page_encoding import (
    CLASS_CACHE,
    CLASS_CACHE_PRIVATE,
    CLASS_FREE,
    CLASS_HWPOISON,
    CLASS_OFFLINE,
    CLASS_USER,
    COUNT_BAD_ORDER,
    ORDER_FLAGS_BYTE,
    ORDER_U8,
    PARAM_INDEX,
)
from .pipeline.compression import FLAG_ZLIB, FLAG_ZSTD, LEVEL_RANGES

if TYPE_CHECKING:
    from ._fastcopy import Bytes, Words, WritableBytes  # the buffer types of the contract, _fastcopy.pyi

# page_desc_t as the kdump format declares it (collector/formats/kdump.py PAGE_DESC; the
# compiled module declares the same struct, tests/test_fastcopy.py pins them together).
_PAGE_DESC = struct.Struct("<qIIQ")
PAGE_DESC_SIZE = _PAGE_DESC.size


class PageEncoder:
    """Zero check and compression of pages, one independent frame each (every page
    decompresses on its own to page_size bytes), stored as is when compressing does not make
    it smaller. One encoder per thread: it owns its compression context."""

    def __init__(self, page_flag: int, level: int, page_size: int) -> None:
        if page_flag not in (0, FLAG_ZLIB, FLAG_ZSTD):
            raise ValueError(f"compression flag {page_flag:#x} is not one the encoder writes")
        if page_flag:
            low, high = LEVEL_RANGES["zstd" if page_flag == FLAG_ZSTD else "zlib"]
            if not low <= level <= high:
                raise ValueError(f"compression level {level} is not in {low}..{high}")
        self.page_flag, self.level, self.page_size = page_flag, level, page_size
        self._zero_page = bytes(page_size)
        self._compress: Callable[[Any], bytes] | None = None
        if page_flag == FLAG_ZSTD:
            import zstandard

            self._compress = zstandard.ZstdCompressor(level=level, write_checksum=False,
                                                      write_content_size=True).compress
        elif page_flag == FLAG_ZLIB:
            self._compress = partial(zlib.compress, level=level)

    def encode(self, src: Bytes | None, src_page: int, bitmap: Bytes, first_bit: int, npages: int,
               detect_zero: bool, data: WritableBytes, sizes: Words,
               raw: WritableBytes) -> tuple[int, int, int, int]:
        """Encode the pages whose bit is set among ``npages`` pages: page i is page
        ``src_page + i`` of ``src`` (None: pages that read as zeros) and bit ``first_bit + i``
        of ``bitmap``. For the n-th selected page, sizes[n] is its stored size (0: all zeros,
        stored nowhere; only with detect_zero) and raw[n] 1 if it is stored as is; the stored
        pages follow each other in ``data``. Stops early when sizes or data are full.

        Returns (pages consumed, pages selected, bytes of data, zero pages).
        """
        ps = self.page_size
        if len(raw) < len(sizes):
            raise ValueError("raw is shorter than sizes")
        if src is not None and (src_page < 0 or (src_page + npages) * ps > len(src)):
            raise ValueError("pages run past the end of the source")
        if first_bit < 0 or first_bit + npages > len(bitmap) * 8:
            raise ValueError("pages run past the end of the bitmap")
        view = None if src is None else memoryview(src)
        i = n = pos = nzero = 0
        while i < npages:
            bit = first_bit + i
            if not bitmap[bit >> 3] >> (bit & 7) & 1:
                i += 1
                continue
            if n == len(sizes) or pos + ps > len(data):
                break
            page = self._zero_page if view is None else view[(src_page + i) * ps:(src_page + i + 1) * ps]
            raw[n] = 0
            if detect_zero and page == self._zero_page:
                sizes[n] = 0
                nzero += 1
            else:
                frame: bytes | memoryview = self._compress(page) if self._compress else b""
                if not 0 < len(frame) < ps:  # not smaller: stored as is, as makedumpfile does
                    frame, raw[n] = page, 1
                data[pos:pos + len(frame)] = frame
                sizes[n] = len(frame)
                pos += len(frame)
            n += 1
            i += 1
        return i, n, pos, nzero


def clear_zero_pages(src: Bytes | None, src_page: int, bitmap: WritableBytes, first_bit: int, npages: int,
                     page_size: int) -> int:
    """Clear the bit of each selected page that is all zeros (page i is page src_page + i of
    src, None: all zeros, and bit first_bit + i); return how many were cleared."""
    if src is not None and (src_page < 0 or (src_page + npages) * page_size > len(src)):
        raise ValueError("pages run past the end of the source")
    if first_bit < 0 or first_bit + npages > len(bitmap) * 8:
        raise ValueError("pages run past the end of the bitmap")
    view = None if src is None else memoryview(src)
    zero_page = bytes(page_size)
    cleared = 0
    for i in range(npages):
        bit = first_bit + i
        if not bitmap[bit >> 3] >> (bit & 7) & 1:
            continue
        if view is None or view[(src_page + i) * page_size:(src_page + i + 1) * page_size] == zero_page:
            bitmap[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
            cleared += 1
    return cleared


def kdump_descs(sizes: Words, raw: Bytes, count: int, data_offset: int, zero_offset: int, page_size: int,
                page_flag: int, out: WritableBytes) -> None:
    """Pack the page_desc of ``count`` encoded pages (PageEncoder.encode's sizes and raw) into
    out: stored pages at data_offset onwards, back to back; zero pages point at zero_offset."""
    if len(out) < count * PAGE_DESC_SIZE or len(sizes) < count or len(raw) < count:
        raise ValueError("buffers too short for the descriptors")
    for i in range(count):
        if sizes[i] == 0:
            _PAGE_DESC.pack_into(out, i * PAGE_DESC_SIZE, zero_offset, page_size, 0, 0)
        else:
            _PAGE_DESC.pack_into(out, i * PAGE_DESC_SIZE, data_offset, sizes[i], 0 if raw[i] else page_flag, 0)
            data_offset += sizes[i]


def span_end(bitmap: Bytes, start: int, end: int, max_set: int) -> int:
    """The bit after the ``max_set``-th set bit at or after ``start``, or ``end`` if there are
    fewer: [start, span_end) holds at most max_set selected pages."""
    seen = 0
    for bit in range(start, end):
        if bitmap[bit >> 3] >> (bit & 7) & 1:
            seen += 1
            if seen == max_set:
                return bit + 1
    return end


def span_end_within(selected: Bytes, kept: Bytes, start: int, end: int, max_set: int) -> int:
    """Like span_end over ``selected`` (a subset of ``kept``), but the span also ends before a
    kept page that is not selected: from its first selected page on, [start, span_end) holds
    no such page, so its pages' descriptors are neighbours in the dump."""
    bit = start
    while bit < end and not selected[bit >> 3] >> (bit & 7) & 1:
        bit += 1
    seen = 0
    while bit < end:
        if selected[bit >> 3] >> (bit & 7) & 1:
            seen += 1
            if seen == max_set:
                return bit + 1
        elif kept[bit >> 3] >> (bit & 7) & 1:
            return bit
        bit += 1
    return end


def count_bits(bitmap: Bytes, start: int, end: int) -> int:
    """Number of set bits in [start, end) of an LSB-first bitmap."""
    return sum((bitmap[bit >> 3] >> (bit & 7)) & 1 for bit in range(start, end))


def kallsyms_find(names: Bytes, count: int, token_table: Bytes, token_index: Bytes, first_token_ok: Bytes,
                  token_lengths: Bytes, length_ok: Bytes, name_ok: Bytes,
                  wanted: Collection[bytes]) -> list[tuple[int, bytes]]:
    """[(index, name)] of the symbols among the first ``count`` of a kernel's compressed
    kallsyms_names whose name without its type letter is in ``wanted``; a name is expanded only
    if ``first_token_ok`` allows its first token and ``length_ok`` its expanded length (at most
    255; token_lengths: each token's), and looked up only if its bit in ``name_ok`` is set
    (kernel/name_hash.py) (kernel/kallsyms.py says why this is enough)."""
    if len(name_ok) != (1 << NAME_HASH_BITS) >> 3:
        raise ValueError("name_ok is not a name_hash bitmap")
    tokens = []
    for byte in range(256):
        start = token_index[2 * byte] | token_index[2 * byte + 1] << 8
        end = bytes(token_table).find(b"\0", start)
        tokens.append(bytes(token_table[start:end if end >= 0 else len(token_table)]))
    found, off, size = [], 0, len(names)
    for index in range(count):
        if off >= size:
            break
        length = names[off]
        off += 1
        if length & 0x80:  # a "big" symbol: the length takes two bytes (Linux 6.1+)
            if off >= size:
                break
            length = (length & 0x7F) | names[off] << 7
            off += 1
        if off + length > size:
            break
        expanded = sum(token_lengths[byte] for byte in names[off:off + length])
        if length and first_token_ok[names[off]] and expanded <= 255 and length_ok[expanded]:
            name = b"".join(tokens[byte] for byte in names[off:off + length])[:1024]
            # (the bit checked only for a wanted name: the same result, the twin's own speed)
            if name[1:] in wanted and (name_ok[(bit := name_hash(name[1:])) >> 3] >> (bit & 7)) & 1:
                found.append((index, name))
        off += length
    return found


def bit_runs(bitmap: Bytes, start: int, end: int) -> list[tuple[int, int]]:
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


def classify_pages(pages: Bytes, npages: int, p: Words, bitmap: WritableBytes, first_bit: int, first_pfn: int,
                   counts: Words, slab_bits: WritableBytes, first_slab_bits: WritableBytes,
                   first_caches: Words, slab_cache_offset: int) -> None:
    """Clear the bits of excluded pages among ``npages`` struct pages (pfn first_pfn + i is
    bit first_bit + i of bitmap) and add the cleared pages to counts[class].

    The order of the tests is makedumpfile's: compound tails go with their head; free buddy
    blocks and unaccepted memory (free); cache without private; all cache; user data; at every
    level hwpoison pages (reading them can machine-check) and logically offline pages.
    counts[COUNT_BAD_ORDER] counts buddy blocks whose order is implausible (kept).
    Kept slab pages (a slab's head and its tails) get their bit set in ``slab_bits`` (laid out
    as ``bitmap``) unless it is empty: the dump writes them early (scan/value.py); those of a
    slab whose struct slab's slab_cache (at ``slab_cache_offset``) is one of ``first_caches``
    get it in ``first_slab_bits`` instead: they are written earlier still.
    """
    q = {name: p[index] for name, index in PARAM_INDEX.items()}
    size, level = q["struct_size"], q["dump_level"]
    view = memoryview(pages)

    def u64(offset: int) -> int:
        return int.from_bytes(view[offset:offset + 8], "little")

    def flag(flags: int, bit: int) -> bool:
        return bit >= 0 and bool(flags >> bit & 1)

    def type_is(mapcount: int, name: str) -> bool:
        return q[name] >= 0 and mapcount == q[name]

    i = 0
    while i < npages:
        base = i * size
        flags = u64(base + q["off_flags"])
        mapping = u64(base + q["off_mapping"])
        mapcount = int.from_bytes(view[base + q["off_mapcount"]:base + q["off_mapcount"] + 4], "little")
        private = u64(base + q["off_private"]) if q["off_private"] >= 0 else 0
        head = u64(base + q["off_compound_head"])
        order, dtor, hugetlb_flag = 0, -1, False
        if flags & q["head_mask"] and i + 1 < npages:
            tail = base + size
            if q["order_mode"] == ORDER_U8:
                order = view[tail + q["off_order"]]
            elif q["order_mode"] == ORDER_FLAGS_BYTE:
                order = u64(tail + q["off_flags"]) & 0xFF
            if q["off_dtor"] >= 0:
                dtor = view[tail + q["off_dtor"]]
            hugetlb_flag = flag(u64(tail + q["off_flags"]), q["pg_hugetlb"])
            if order >= 64 or (first_pfn + i) & ((1 << order) - 1):
                order = 0  # not a plausible compound page: judge the head alone
        nr = 1 << order
        slab = flag(flags, q["pg_slab"]) or type_is(mapcount, "slab_value")
        cache = flag(flags, q["pg_lru"]) or (flag(flags, q["pg_swapcache"]) and
                                             (q["pg_swapbacked"] < 0 or flag(flags, q["pg_swapbacked"])))
        anon = bool(mapping & 1) and not slab
        hugetlb = hugetlb_flag or type_is(mapcount, "hugetlb_value") or (
            q["hugetlb_dtor"] >= 0 and order > 0 and dtor == q["hugetlb_dtor"])
        buddy = not slab and type_is(mapcount, "buddy_value")
        unaccepted = type_is(mapcount, "unaccepted_value")
        cls = None
        if head & 1:
            pass  # a compound tail: excluded with its head or kept
        elif level & DL_FREE and buddy:
            if private < q["max_order"]:
                nr, cls = 1 << private, CLASS_FREE
            else:
                counts[COUNT_BAD_ORDER] += 1
        elif level & DL_FREE and unaccepted:
            nr, cls = 1 << (q["max_order"] - 1), CLASS_FREE
        elif level & DL_CACHE and cache and not flag(flags, q["pg_private"]) and not anon:
            cls = CLASS_CACHE
        elif level & DL_CACHE_PRIVATE and cache and not anon:
            cls = CLASS_CACHE_PRIVATE if flag(flags, q["pg_private"]) else CLASS_CACHE
        elif level & DL_USER and (anon or hugetlb):
            cls = CLASS_USER
        elif flag(flags, q["pg_hwpoison"]):
            cls = CLASS_HWPOISON
        elif q["offline_value"] >= 0 and not flag(flags, q["pg_slab"]) and mapcount == q["offline_value"]:
            cls = CLASS_OFFLINE
        if cls is None:
            if slab and not head & 1 and len(slab_bits):
                first = 0 <= slab_cache_offset <= size - 8 and u64(base + slab_cache_offset) in first_caches
                target = first_slab_bits if first else slab_bits
                for bit in range(first_bit + i, first_bit + min(i + nr, npages)):
                    target[bit >> 3] |= 1 << (bit & 7)
            i += 1
            continue
        end = min(i + nr, npages)
        for j in range(i, end):
            bit = first_bit + j
            if bitmap[bit >> 3] & (1 << (bit & 7)):
                bitmap[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
                counts[cls] += 1
        i = end
