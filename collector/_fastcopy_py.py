"""Pure-Python twin of _fastcopy.pyx: the readable reference, used when the compiled module is
missing or VMCORE_COLLECTOR_PURE_PYTHON=1. Same functions, same results."""

from __future__ import annotations

from typing import Any

from .page_encoding import (CLASS_CACHE, CLASS_CACHE_PRIVATE, CLASS_FREE, CLASS_HWPOISON, CLASS_OFFLINE,
                            CLASS_USER, ORDER_FLAGS_BYTE, ORDER_U8, PARAM_INDEX)


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


def classify_pages(pages: Any, npages: int, p: Any, bitmap: Any, first_bit: int, first_pfn: int,
                   counts: Any) -> None:
    """Clear the bits of excluded pages among ``npages`` struct pages (pfn first_pfn + i is
    bit first_bit + i of bitmap) and add the cleared pages to counts[class].

    The order of the tests is makedumpfile's: compound tails go with their head; free buddy
    blocks and unaccepted memory (free); cache without private; all cache; user data; at every
    level hwpoison pages (reading them can machine-check) and logically offline pages.
    counts[6] counts buddy blocks whose order is implausible (kept).
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
        elif level & 16 and buddy:
            if private < q["max_order"]:
                nr, cls = 1 << private, CLASS_FREE
            else:
                counts[6] += 1
        elif level & 16 and unaccepted:
            nr, cls = 1 << (q["max_order"] - 1), CLASS_FREE
        elif level & 2 and cache and not flag(flags, q["pg_private"]) and not anon:
            cls = CLASS_CACHE
        elif level & 4 and cache and not anon:
            cls = CLASS_CACHE_PRIVATE if flag(flags, q["pg_private"]) else CLASS_CACHE
        elif level & 8 and (anon or hugetlb):
            cls = CLASS_USER
        elif flag(flags, q["pg_hwpoison"]):
            cls = CLASS_HWPOISON
        elif q["offline_value"] >= 0 and not flag(flags, q["pg_slab"]) and mapcount == q["offline_value"]:
            cls = CLASS_OFFLINE
        if cls is None:
            i += 1
            continue
        end = min(i + nr, npages)
        for j in range(i, end):
            bit = first_bit + j
            if bitmap[bit >> 3] & (1 << (bit & 7)):
                bitmap[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
                counts[cls] += 1
        i = end
