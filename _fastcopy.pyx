# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Hot loops over page buffers: gather selected pages, find zero pages, count bitmap bits.

collector/_fastcopy_py.py is the readable reference with the same functions and results;
keep the two in step (the test suite runs on both and compares them).
"""

from libc.string cimport memcpy, memset, memcmp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

from collector.page_encoding import PARAM_INDEX

cdef Py_ssize_t P_SIZE = PARAM_INDEX["struct_size"], P_FLAGS = PARAM_INDEX["off_flags"]
cdef Py_ssize_t P_MAPPING = PARAM_INDEX["off_mapping"], P_MAPCOUNT = PARAM_INDEX["off_mapcount"]
cdef Py_ssize_t P_PRIVATE = PARAM_INDEX["off_private"], P_HEAD = PARAM_INDEX["off_compound_head"]
cdef Py_ssize_t P_ORDER_MODE = PARAM_INDEX["order_mode"], P_ORDER = PARAM_INDEX["off_order"]
cdef Py_ssize_t P_DTOR = PARAM_INDEX["off_dtor"], P_HEAD_MASK = PARAM_INDEX["head_mask"]
cdef Py_ssize_t P_LRU = PARAM_INDEX["pg_lru"], P_PG_PRIVATE = PARAM_INDEX["pg_private"]
cdef Py_ssize_t P_SWAPCACHE = PARAM_INDEX["pg_swapcache"], P_SWAPBACKED = PARAM_INDEX["pg_swapbacked"]
cdef Py_ssize_t P_SLAB = PARAM_INDEX["pg_slab"], P_HWPOISON = PARAM_INDEX["pg_hwpoison"]
cdef Py_ssize_t P_PG_HUGETLB = PARAM_INDEX["pg_hugetlb"]
cdef Py_ssize_t P_BUDDY = PARAM_INDEX["buddy_value"], P_OFFLINE = PARAM_INDEX["offline_value"]
cdef Py_ssize_t P_SLAB_TYPE = PARAM_INDEX["slab_value"], P_HUGETLB = PARAM_INDEX["hugetlb_value"]
cdef Py_ssize_t P_HUGETLB_DTOR = PARAM_INDEX["hugetlb_dtor"]
cdef Py_ssize_t P_UNACCEPTED = PARAM_INDEX["unaccepted_value"]
cdef Py_ssize_t P_MAX_ORDER = PARAM_INDEX["max_order"], P_LEVEL = PARAM_INDEX["dump_level"]

# Class indexes, as collector/page_encoding.py numbers them.
DEF C_CACHE = 0
DEF C_CACHE_PRIVATE = 1
DEF C_USER = 2
DEF C_FREE = 3
DEF C_HWPOISON = 4
DEF C_OFFLINE = 5
DEF C_KEEP = -1
DEF C_BAD_ORDER = 6


def gather_pages(const uint8_t[::1] src, const uint8_t[::1] bitmap, Py_ssize_t first_bit,
                 Py_ssize_t npages, Py_ssize_t page_size, uint8_t[::1] dst,
                 uint64_t[::1] pfns_out, Py_ssize_t dst_index, uint64_t first_pfn):
    """Copy the pages of ``src`` whose bit is set into ``dst`` from page slot ``dst_index``.

    Page i of src (pfn ``first_pfn + i``) is selected by bit ``first_bit + i`` of ``bitmap``
    (least significant bit first). ``src`` None means the source pages are all zeros. Stops when
    dst is full. Returns (source pages consumed, pages copied).
    """
    cdef Py_ssize_t capacity = dst.shape[0] // page_size
    cdef Py_ssize_t i = 0, copied = 0, bit
    cdef bint zero_source = src is None
    with nogil:
        while i < npages and dst_index + copied < capacity:
            bit = first_bit + i
            if bitmap[bit >> 3] & (1 << (bit & 7)):
                if zero_source:
                    memset(&dst[(dst_index + copied) * page_size], 0, page_size)
                else:
                    memcpy(&dst[(dst_index + copied) * page_size], &src[i * page_size], page_size)
                pfns_out[dst_index + copied] = first_pfn + i
                copied += 1
            i += 1
    return i, copied


def find_zero_pages(const uint8_t[::1] buf, Py_ssize_t npages, Py_ssize_t page_size,
                    uint8_t[::1] flags):
    """Set flags[i] to 1 where page i of buf is all zeros, else 0; return the zero count."""
    cdef Py_ssize_t i, nzero = 0
    cdef const uint8_t *page
    with nogil:
        for i in range(npages):
            page = &buf[i * page_size]
            # A page is zero when its first byte is and it equals itself shifted by one byte.
            if page[0] == 0 and memcmp(page, page + 1, page_size - 1) == 0:
                flags[i] = 1
                nzero += 1
            else:
                flags[i] = 0
    return nzero


def count_bits(const uint8_t[::1] bitmap, Py_ssize_t start, Py_ssize_t end):
    """Number of set bits in [start, end) of an LSB-first bitmap."""
    cdef Py_ssize_t bit = start, total = 0
    with nogil:
        while bit < end and bit & 7:
            total += (bitmap[bit >> 3] >> (bit & 7)) & 1
            bit += 1
        while bit + 8 <= end:
            total += __builtin_popcount(bitmap[bit >> 3])
            bit += 8
        while bit < end:
            total += (bitmap[bit >> 3] >> (bit & 7)) & 1
            bit += 1
    return total


def bit_runs(const uint8_t[::1] bitmap, Py_ssize_t start, Py_ssize_t end):
    """Runs of set bits in [start, end) as a list of (first, last + 1) bit numbers."""
    cdef Py_ssize_t bit = start, run_start
    runs = []
    while bit < end:
        while bit < end and not (bitmap[bit >> 3] >> (bit & 7)) & 1:
            if bit & 7 == 0 and bit + 8 <= end and bitmap[bit >> 3] == 0:
                bit += 8
            else:
                bit += 1
        if bit >= end:
            break
        run_start = bit
        while bit < end and (bitmap[bit >> 3] >> (bit & 7)) & 1:
            if bit & 7 == 0 and bit + 8 <= end and bitmap[bit >> 3] == 0xFF:
                bit += 8
            else:
                bit += 1
        runs.append((run_start, bit))
    return runs


cdef inline uint64_t u64(const uint8_t *p) nogil:
    return (<const uint64_t *>p)[0]


cdef inline bint flag(uint64_t flags, int64_t bit) nogil:
    return bit >= 0 and (flags >> bit) & 1


def classify_pages(const uint8_t[::1] pages, Py_ssize_t npages, const int64_t[::1] p,
                   uint8_t[::1] bitmap, Py_ssize_t first_bit, uint64_t first_pfn,
                   int64_t[::1] counts):
    """Clear the bits of excluded pages among ``npages`` struct pages (pfn first_pfn + i is
    bit first_bit + i of bitmap) and add the cleared pages to counts[class].

    The order of the tests is makedumpfile's: compound tails go with their head; free buddy
    blocks and unaccepted memory (free); cache without private; all cache; user data; at every
    level hwpoison pages (reading them can machine-check) and logically offline pages.
    counts[6] counts buddy blocks whose order is implausible (kept).
    """
    cdef Py_ssize_t size = p[P_SIZE], i = 0, j, end, bit, nr
    cdef int64_t level = p[P_LEVEL], order, cls
    cdef const uint8_t *page
    cdef const uint8_t *tail
    cdef uint64_t flags, mapping, private, head
    cdef uint32_t mapcount
    cdef int64_t dtor
    cdef bint slab, cache, anon, hugetlb, buddy, unaccepted, hugetlb_flag
    with nogil:
        while i < npages:
            page = &pages[i * size]
            flags = u64(page + p[P_FLAGS])
            mapping = u64(page + p[P_MAPPING])
            mapcount = (<const uint32_t *>(page + p[P_MAPCOUNT]))[0]
            private = u64(page + p[P_PRIVATE]) if p[P_PRIVATE] >= 0 else 0
            head = u64(page + p[P_HEAD])
            order = 0
            dtor = -1
            hugetlb_flag = False
            if flags & <uint64_t>p[P_HEAD_MASK] and i + 1 < npages:
                tail = page + size
                if p[P_ORDER_MODE] == 1:
                    order = tail[p[P_ORDER]]
                elif p[P_ORDER_MODE] == 2:
                    order = u64(tail + p[P_FLAGS]) & 0xFF
                if p[P_DTOR] >= 0:
                    dtor = tail[p[P_DTOR]]
                hugetlb_flag = flag(u64(tail + p[P_FLAGS]), p[P_PG_HUGETLB])
                if order >= 64 or (first_pfn + i) & ((<uint64_t>1 << order) - 1):
                    order = 0
            nr = <Py_ssize_t>1 << order
            slab = flag(flags, p[P_SLAB]) or (p[P_SLAB_TYPE] >= 0 and mapcount == <uint32_t>p[P_SLAB_TYPE])
            cache = flag(flags, p[P_LRU]) or (flag(flags, p[P_SWAPCACHE]) and
                                              (p[P_SWAPBACKED] < 0 or flag(flags, p[P_SWAPBACKED])))
            anon = (mapping & 1) and not slab
            hugetlb = (hugetlb_flag or (p[P_HUGETLB] >= 0 and mapcount == <uint32_t>p[P_HUGETLB]) or
                       (p[P_HUGETLB_DTOR] >= 0 and order > 0 and dtor == p[P_HUGETLB_DTOR]))
            buddy = not slab and p[P_BUDDY] >= 0 and mapcount == <uint32_t>p[P_BUDDY]
            unaccepted = p[P_UNACCEPTED] >= 0 and mapcount == <uint32_t>p[P_UNACCEPTED]
            cls = C_KEEP
            if head & 1:
                pass  # a compound tail: excluded with its head or kept
            elif level & 16 and buddy:
                if private < <uint64_t>p[P_MAX_ORDER]:
                    nr = <Py_ssize_t>1 << private
                    cls = C_FREE
                else:
                    counts[C_BAD_ORDER] += 1
            elif level & 16 and unaccepted:
                nr = <Py_ssize_t>1 << (p[P_MAX_ORDER] - 1)
                cls = C_FREE
            elif level & 2 and cache and not flag(flags, p[P_PG_PRIVATE]) and not anon:
                cls = C_CACHE
            elif level & 4 and cache and not anon:
                cls = C_CACHE_PRIVATE if flag(flags, p[P_PG_PRIVATE]) else C_CACHE
            elif level & 8 and (anon or hugetlb):
                cls = C_USER
            elif flag(flags, p[P_HWPOISON]):
                cls = C_HWPOISON
            elif (p[P_OFFLINE] >= 0 and not flag(flags, p[P_SLAB])
                  and mapcount == <uint32_t>p[P_OFFLINE]):
                cls = C_OFFLINE
            if cls == C_KEEP:
                i += 1
                continue
            end = i + nr
            if end > npages:
                end = npages
            for j in range(i, end):
                bit = first_bit + j
                if bitmap[bit >> 3] & (1 << (bit & 7)):
                    bitmap[bit >> 3] &= ~(1 << (bit & 7))
                    counts[cls] += 1
            i = end


cdef extern from *:
    int __builtin_popcount(unsigned int) nogil
