# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Hot loops over page buffers: encode (zero check + compress) the selected pages of a mapped
window, pack kdump page descriptors, count and find bitmap bits, classify struct pages.

No Python object per page: each call handles a whole span of pages without the GIL.
collector/_fastcopy_py.py is the readable reference with the same functions and results (the
compressed bytes may differ where libzstd versions differ; sizes, zero flags and the pages
they decompress to do not); the test suite runs on both and compares them. Every constant
comes from the Python side (collector/page_encoding.py, dump_level.py, compression.py).
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdint cimport INT64_MAX
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset

cimport cython

from collections import deque

from collector.pipeline.compression import FLAG_ZLIB, FLAG_ZSTD, LEVEL_RANGES
from collector.dump_level import DL_CACHE, DL_CACHE_PRIVATE, DL_FREE, DL_USER
from collector.kernel.name_hash import FNV_BASIS, FNV_PRIME, NAME_HASH_BITS
from collector.kernel.page_encoding import (CLASS_CACHE, CLASS_CACHE_PRIVATE, CLASS_FREE, CLASS_HWPOISON,
                                     CLASS_OFFLINE, CLASS_USER, COUNT_BAD_ORDER, ORDER_FLAGS_BYTE,
                                     ORDER_U8, PARAM_INDEX)

cdef extern from "zstd.h" nogil:
    ctypedef struct ZSTD_CCtx:
        pass
    ZSTD_CCtx *ZSTD_createCCtx()
    size_t ZSTD_freeCCtx(ZSTD_CCtx *cctx)
    size_t ZSTD_compressCCtx(ZSTD_CCtx *cctx, void *dst, size_t dst_capacity, const void *src,
                             size_t src_size, int level)
    unsigned ZSTD_isError(size_t code)

cdef extern from "zlib.h" nogil:
    ctypedef struct z_stream:
        uint8_t *next_in  # z_const: const only when zlib is built with ZLIB_CONST
        unsigned avail_in
        uint8_t *next_out
        unsigned avail_out
    int deflateInit(z_stream *strm, int level)
    int deflateReset(z_stream *strm)
    int deflate(z_stream *strm, int flush)
    int deflateEnd(z_stream *strm)
    int Z_OK, Z_FINISH, Z_STREAM_END

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

cdef int64_t C_CACHE = CLASS_CACHE, C_CACHE_PRIVATE = CLASS_CACHE_PRIVATE, C_USER = CLASS_USER
cdef int64_t C_FREE = CLASS_FREE, C_HWPOISON = CLASS_HWPOISON, C_OFFLINE = CLASS_OFFLINE
cdef int64_t C_KEEP = -1, C_BAD_ORDER = COUNT_BAD_ORDER
cdef int64_t M_ORDER_U8 = ORDER_U8, M_ORDER_FLAGS_BYTE = ORDER_FLAGS_BYTE
cdef int64_t L_CACHE = DL_CACHE, L_CACHE_PRIVATE = DL_CACHE_PRIVATE, L_USER = DL_USER, L_FREE = DL_FREE
cdef uint32_t F_ZLIB = FLAG_ZLIB, F_ZSTD = FLAG_ZSTD

# page_desc_t as the kdump format declares it (collector/formats/kdump.py PAGE_DESC, "<qIIQ";
# tests/test_fastcopy.py pins the two together).
cdef packed struct page_desc:
    int64_t offset
    uint32_t size
    uint32_t flags
    uint64_t page_flags


cdef inline bint is_zero_page(const uint8_t *page, Py_ssize_t page_size) noexcept nogil:
    # A page is zero when its first byte is and it equals itself shifted by one byte.
    return page[0] == 0 and memcmp(page, page + 1, page_size - 1) == 0


cdef inline bint bit_set(const uint8_t[::1] bitmap, Py_ssize_t bit) noexcept nogil:
    return (bitmap[bit >> 3] >> (bit & 7)) & 1


cdef class PageEncoder:
    """Zero check and compression of pages, one independent frame each (every page
    decompresses on its own to page_size bytes), stored as is when compressing does not make
    it smaller. One encoder per thread: it owns its compression context."""

    cdef readonly uint32_t page_flag
    cdef readonly int level
    cdef readonly Py_ssize_t page_size
    cdef ZSTD_CCtx *zstd
    cdef z_stream zlib
    cdef bint zlib_ready
    cdef uint8_t *zero_page

    def __cinit__(self, uint32_t page_flag, int level, Py_ssize_t page_size):
        if page_flag not in (0, F_ZLIB, F_ZSTD):
            raise ValueError(f"compression flag {page_flag:#x} is not one the encoder writes")
        if page_flag:
            low, high = LEVEL_RANGES["zstd" if page_flag == F_ZSTD else "zlib"]
            if not low <= level <= high:
                raise ValueError(f"compression level {level} is not in {low}..{high}")
        self.page_flag, self.level, self.page_size = page_flag, level, page_size
        self.zero_page = <uint8_t *>calloc(page_size, 1)
        if self.zero_page == NULL:
            raise MemoryError()
        if page_flag == F_ZSTD:
            self.zstd = ZSTD_createCCtx()
            if self.zstd == NULL:
                raise MemoryError()
        elif page_flag == F_ZLIB:
            memset(&self.zlib, 0, sizeof(z_stream))
            if deflateInit(&self.zlib, level) != Z_OK:
                raise MemoryError()
            self.zlib_ready = True

    def __dealloc__(self):
        if self.zstd != NULL:
            ZSTD_freeCCtx(self.zstd)
        if self.zlib_ready:
            deflateEnd(&self.zlib)
        free(self.zero_page)

    cdef size_t compress(self, const uint8_t *page, uint8_t *dst) noexcept nogil:
        """Compressed size of page written to dst, 0 if it would not be smaller than a page
        (makedumpfile stores those as is). Output never depends on the capacity given."""
        cdef size_t capacity = self.page_size - 1, size
        if self.page_flag == F_ZSTD:
            # ZSTD_compressCCtx per page, as makedumpfile -z does.
            size = ZSTD_compressCCtx(self.zstd, dst, capacity, page, self.page_size, self.level)
            return 0 if ZSTD_isError(size) else size
        if self.page_flag == F_ZLIB:
            # What compress2() does, without its allocation per page: same bytes.
            deflateReset(&self.zlib)
            self.zlib.next_in, self.zlib.avail_in = <uint8_t *>page, <unsigned>self.page_size
            self.zlib.next_out, self.zlib.avail_out = dst, <unsigned>capacity
            if deflate(&self.zlib, Z_FINISH) != Z_STREAM_END:
                return 0
            return capacity - self.zlib.avail_out
        return 0

    def encode(self, const uint8_t[::1] src, Py_ssize_t src_page, const uint8_t[::1] bitmap,
               Py_ssize_t first_bit, Py_ssize_t npages, bint detect_zero, uint8_t[::1] data,
               uint32_t[::1] sizes, uint8_t[::1] raw):
        """Encode the pages whose bit is set among ``npages`` pages: page i is page
        ``src_page + i`` of ``src`` (None: pages that read as zeros) and bit ``first_bit + i``
        of ``bitmap``. For the n-th selected page, sizes[n] is its stored size (0: all zeros,
        stored nowhere; only with detect_zero) and raw[n] 1 if it is stored as is; the stored
        pages follow each other in ``data``. Stops early when sizes or data are full.

        Returns (pages consumed, pages selected, bytes of data, zero pages).
        """
        cdef Py_ssize_t ps = self.page_size, i = 0, n = 0, pos = 0, nzero = 0
        cdef Py_ssize_t capacity = sizes.shape[0], data_capacity = data.shape[0]
        cdef const uint8_t *page
        cdef size_t size
        cdef bint zero_source = src is None
        if raw.shape[0] < capacity:
            raise ValueError("raw is shorter than sizes")
        if not zero_source and (src_page < 0 or (src_page + npages) * ps > src.shape[0]):
            raise ValueError("pages run past the end of the source")
        if first_bit < 0 or first_bit + npages > bitmap.shape[0] * 8:
            raise ValueError("pages run past the end of the bitmap")
        with nogil:
            while i < npages:
                if not bit_set(bitmap, first_bit + i):
                    i += 1
                    continue
                if n == capacity or pos + ps > data_capacity:
                    break
                page = <const uint8_t *>self.zero_page if zero_source else &src[(src_page + i) * ps]
                raw[n] = 0
                if detect_zero and is_zero_page(page, ps):
                    sizes[n] = 0
                    nzero += 1
                else:
                    size = self.compress(page, &data[pos])
                    if size == 0:
                        memcpy(&data[pos], page, ps)
                        size = ps
                        raw[n] = 1
                    sizes[n] = <uint32_t>size
                    pos += size
                n += 1
                i += 1
        return i, n, pos, nzero


def clear_zero_pages(const uint8_t[::1] src, Py_ssize_t src_page, uint8_t[::1] bitmap,
                     Py_ssize_t first_bit, Py_ssize_t npages, Py_ssize_t page_size):
    """Clear the bit of each selected page that is all zeros (page i is page src_page + i of
    src, None: all zeros, and bit first_bit + i); return how many were cleared."""
    cdef Py_ssize_t i, bit, cleared = 0
    cdef bint zero_source = src is None
    if not zero_source and (src_page < 0 or (src_page + npages) * page_size > src.shape[0]):
        raise ValueError("pages run past the end of the source")
    if first_bit < 0 or first_bit + npages > bitmap.shape[0] * 8:
        raise ValueError("pages run past the end of the bitmap")
    with nogil:
        for i in range(npages):
            bit = first_bit + i
            if bit_set(bitmap, bit) and (zero_source or is_zero_page(&src[(src_page + i) * page_size], page_size)):
                bitmap[bit >> 3] &= ~(1 << (bit & 7))
                cleared += 1
    return cleared


def kdump_descs(const uint32_t[::1] sizes, const uint8_t[::1] raw, Py_ssize_t count, int64_t data_offset,
                int64_t zero_offset, Py_ssize_t page_size, uint32_t page_flag, uint8_t[::1] out):
    """Pack the page_desc of ``count`` encoded pages (PageEncoder.encode's sizes and raw) into
    out: stored pages at data_offset onwards, back to back; zero pages point at zero_offset."""
    cdef Py_ssize_t i
    cdef page_desc *desc
    if out.shape[0] < count * <Py_ssize_t>sizeof(page_desc) or sizes.shape[0] < count or raw.shape[0] < count:
        raise ValueError("buffers too short for the descriptors")
    with nogil:
        for i in range(count):
            desc = <page_desc *>&out[i * sizeof(page_desc)]
            desc.page_flags = 0
            if sizes[i] == 0:
                desc.offset, desc.size, desc.flags = zero_offset, <uint32_t>page_size, 0
            else:
                desc.offset, desc.size = data_offset, sizes[i]
                desc.flags = 0 if raw[i] else page_flag
                data_offset += sizes[i]


def span_end(const uint8_t[::1] bitmap, Py_ssize_t start, Py_ssize_t end, Py_ssize_t max_set):
    """The bit after the ``max_set``-th set bit at or after ``start``, or ``end`` if there are
    fewer: [start, span_end) holds at most max_set selected pages."""
    cdef Py_ssize_t bit = start, seen = 0, in_byte
    with nogil:
        while bit < end:
            if bit & 7 == 0 and bit + 8 <= end:
                in_byte = __builtin_popcount(bitmap[bit >> 3])
                if seen + in_byte < max_set:
                    seen += in_byte
                    bit += 8
                    continue
            if bit_set(bitmap, bit):
                seen += 1
                if seen == max_set:
                    bit += 1
                    break
            bit += 1
    return bit


def span_end_within(const uint8_t[::1] selected, const uint8_t[::1] kept, Py_ssize_t start,
                    Py_ssize_t end, Py_ssize_t max_set):
    """Like span_end over ``selected`` (a subset of ``kept``), but the span also ends before a
    kept page that is not selected: from its first selected page on, [start, span_end) holds
    no such page, so its pages' descriptors are neighbours in the dump."""
    cdef Py_ssize_t bit = start, seen = 0, in_byte
    cdef uint8_t sel
    with nogil:
        while bit < end and not bit_set(selected, bit):
            if bit & 7 == 0 and bit + 8 <= end and selected[bit >> 3] == 0:
                bit += 8
            else:
                bit += 1
        while bit < end:
            if bit & 7 == 0 and bit + 8 <= end:
                sel = selected[bit >> 3]
                in_byte = __builtin_popcount(sel)
                if kept[bit >> 3] & ~sel == 0 and seen + in_byte < max_set:
                    seen += in_byte
                    bit += 8
                    continue
            if bit_set(selected, bit):
                seen += 1
                if seen == max_set:
                    bit += 1
                    break
            elif bit_set(kept, bit):
                break
            bit += 1
    return bit


def count_bits(const uint8_t[::1] bitmap, Py_ssize_t start, Py_ssize_t end):
    """Number of set bits in [start, end) of an LSB-first bitmap."""
    cdef Py_ssize_t bit = start, total = 0
    cdef uint64_t word
    with nogil:
        while bit < end and bit & 7:
            total += bit_set(bitmap, bit)
            bit += 1
        while bit + 64 <= end:
            memcpy(&word, &bitmap[bit >> 3], 8)  # one unaligned load
            total += __builtin_popcountll(word)
            bit += 64
        while bit + 8 <= end:
            total += __builtin_popcount(bitmap[bit >> 3])
            bit += 8
        while bit < end:
            total += bit_set(bitmap, bit)
            bit += 1
    return total


def kallsyms_find(const uint8_t[::1] names, Py_ssize_t count, const uint8_t[::1] token_table,
                  const uint8_t[::1] token_index, const uint8_t[::1] first_token_ok,
                  const uint8_t[::1] token_lengths, const uint8_t[::1] length_ok,
                  const uint8_t[::1] name_ok, wanted):
    """[(index, name)] of the symbols among the first ``count`` of a kernel's compressed
    kallsyms_names whose name without its type letter is in ``wanted``; a name is expanded only
    if ``first_token_ok`` allows its first token and ``length_ok`` its expanded length (at most
    255; token_lengths: each token's), and looked up only if its bit in ``name_ok`` is set
    (kernel/name_hash.py) (kernel/kallsyms.py says why this is enough)."""
    cdef Py_ssize_t off = 0, i, t, length, pos, size = names.shape[0], table_size = token_table.shape[0]
    cdef Py_ssize_t start, expanded
    cdef uint32_t digest, basis = FNV_BASIS, prime = FNV_PRIME, mask = (1 << NAME_HASH_BITS) - 1
    cdef unsigned char buf[1024]
    if name_ok.shape[0] != (1 << NAME_HASH_BITS) >> 3:
        raise ValueError("name_ok is not a name_hash bitmap")
    found = []
    for i in range(count):
        if off >= size:
            break
        length = names[off]
        off += 1
        if length & 0x80:  # a "big" symbol: the length takes two bytes (Linux 6.1+)
            if off >= size:
                break
            length = (length & 0x7F) | (<Py_ssize_t>names[off] << 7)
            off += 1
        if off + length > size:
            break
        if length and first_token_ok[names[off]]:
            expanded = 0
            for t in range(off, off + length):
                expanded += token_lengths[names[t]]
            if expanded > 255 or not length_ok[expanded]:
                off += length
                continue
            pos = 0
            for t in range(off, off + length):
                start = token_index[2 * names[t]] | (<Py_ssize_t>token_index[2 * names[t] + 1] << 8)
                while start < table_size and token_table[start] and pos < 1024:
                    buf[pos] = token_table[start]
                    pos += 1
                    start += 1
            digest = basis
            for t in range(1, pos):
                digest = (digest ^ buf[t]) * prime
            digest &= mask
            if not (name_ok[digest >> 3] >> (digest & 7)) & 1:
                off += length
                continue
            name = (<char *>buf)[:pos]
            if name[1:] in wanted:
                found.append((i, name))
        off += length
    return found


def bit_runs(const uint8_t[::1] bitmap, Py_ssize_t start, Py_ssize_t end):
    """Runs of set bits in [start, end) as a list of (first, last + 1) bit numbers."""
    cdef Py_ssize_t bit = start, run_start
    runs = []
    while bit < end:
        while bit < end and not bit_set(bitmap, bit):
            if bit & 7 == 0 and bit + 8 <= end and bitmap[bit >> 3] == 0:
                bit += 8
            else:
                bit += 1
        if bit >= end:
            break
        run_start = bit
        while bit < end and bit_set(bitmap, bit):
            if bit & 7 == 0 and bit + 8 <= end and bitmap[bit >> 3] == 0xFF:
                bit += 8
            else:
                bit += 1
        runs.append((run_start, bit))
    return runs


cdef inline uint64_t u64(const uint8_t *p) noexcept nogil:
    return (<const uint64_t *>p)[0]


cdef inline bint flag(uint64_t flags, int64_t bit) noexcept nogil:
    return bit >= 0 and (flags >> bit) & 1


def classify_pages(const uint8_t[::1] pages, Py_ssize_t npages, const int64_t[::1] p,
                   uint8_t[::1] bitmap, Py_ssize_t first_bit, uint64_t first_pfn,
                   int64_t[::1] counts, uint8_t[::1] slab_bits, uint8_t[::1] first_slab_bits,
                   const uint64_t[::1] first_caches, Py_ssize_t slab_cache_offset):
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
    cdef Py_ssize_t size = p[P_SIZE], i = 0, j, end, bit, nr, c
    cdef uint8_t[::1] slab_target
    cdef uint64_t slab_cache
    cdef int64_t level = p[P_LEVEL], order, cls
    cdef const uint8_t *page
    cdef const uint8_t *tail
    cdef uint64_t flags, mapping, private, head
    cdef uint32_t mapcount
    cdef int64_t dtor
    cdef bint slab, cache, anon, hugetlb, buddy, unaccepted, hugetlb_flag
    if npages * size > pages.shape[0]:
        raise ValueError("struct pages run past the end of the buffer")
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
                if p[P_ORDER_MODE] == M_ORDER_U8:
                    order = tail[p[P_ORDER]]
                elif p[P_ORDER_MODE] == M_ORDER_FLAGS_BYTE:
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
            elif level & L_FREE and buddy:
                if private < <uint64_t>p[P_MAX_ORDER]:
                    nr = <Py_ssize_t>1 << private
                    cls = C_FREE
                else:
                    counts[C_BAD_ORDER] += 1
            elif level & L_FREE and unaccepted:
                nr = <Py_ssize_t>1 << (p[P_MAX_ORDER] - 1)
                cls = C_FREE
            elif level & L_CACHE and cache and not flag(flags, p[P_PG_PRIVATE]) and not anon:
                cls = C_CACHE
            elif level & L_CACHE_PRIVATE and cache and not anon:
                cls = C_CACHE_PRIVATE if flag(flags, p[P_PG_PRIVATE]) else C_CACHE
            elif level & L_USER and (anon or hugetlb):
                cls = C_USER
            elif flag(flags, p[P_HWPOISON]):
                cls = C_HWPOISON
            elif (p[P_OFFLINE] >= 0 and not flag(flags, p[P_SLAB])
                  and mapcount == <uint32_t>p[P_OFFLINE]):
                cls = C_OFFLINE
            if cls == C_KEEP:
                if slab and not head & 1 and slab_bits.shape[0]:
                    slab_target = slab_bits
                    if slab_cache_offset >= 0 and slab_cache_offset + 8 <= size:
                        slab_cache = u64(page + slab_cache_offset)
                        for c in range(first_caches.shape[0]):
                            if slab_cache == first_caches[c]:
                                slab_target = first_slab_bits
                    end = i + nr if i + nr <= npages else npages
                    for j in range(i, end):
                        bit = first_bit + j
                        slab_target[bit >> 3] |= 1 << (bit & 7)
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
    int __builtin_popcountll(unsigned long long) nogil


# The integrity manifest's hashing (collector/integrity.py has the rules, _fastcopy_py.py the
# readable reference, FileHasher there): a worker thread of its own that never takes the GIL, as
# a Python thread sharing it with the dump cost a one-thread dump 2-4% (issue 14). The dump's
# thread only queues each write (a pointer into the writer's buffer, kept alive here until the
# worker is past it); the worker keeps what a block still lacks as copies, hashes blocks with
# libcrypto's SHA-256 (what hashlib uses) and knows the chunks.

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_MD_CTX:
        pass
    ctypedef struct EVP_MD:
        pass
    const EVP_MD *EVP_sha256()
    EVP_MD_CTX *EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX *ctx)
    int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *kind, void *engine)
    int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *data, size_t length)
    int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *length)

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_t:
        pass
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t *thread, void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **result)
    int pthread_mutex_init(pthread_mutex_t *mutex, void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *mutex)
    int pthread_mutex_lock(pthread_mutex_t *mutex)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)
    int pthread_cond_init(pthread_cond_t *cond, void *attr)
    int pthread_cond_destroy(pthread_cond_t *cond)
    int pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
    int pthread_cond_signal(pthread_cond_t *cond)

cdef extern from *:
    """
    static inline uint64_t fh_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void fh_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    """
    uint64_t fh_load(const uint64_t *p) nogil
    void fh_store(uint64_t *p, uint64_t v) nogil

DEF DIGEST = 32
DEF RING = 4096  # writes queued and not yet taken in: the dump's thread waits beyond
DEF ZEROS = 65536
cdef uint8_t ZERO_BYTES[ZEROS]
cdef enum:
    CHUNK_OPEN = 0
    CHUNK_DONE = 1
    CHUNK_UNKNOWN = 2

cdef struct Piece:        # bytes written into a block not yet whole: a copy
    int64_t start         # within the block
    int64_t length
    uint8_t *data

cdef struct OpenBlock:    # _fastcopy_py's _Extents
    int64_t block
    int64_t covered
    Py_ssize_t count, capacity
    Piece *pieces

cdef struct Chunk:
    int64_t clock         # bytes taken in when it was last written to; -1: never
    int64_t held          # what its open blocks hold
    int state
    uint8_t digest[DIGEST]
    uint8_t *blocks       # its blocks' digests, then one byte each: known; NULL until needed

cdef struct Hashes:       # _fastcopy_py's _Hashes
    int64_t chunk_size, block_size, blocks_per_chunk, head_blocks, hold_bytes, piece_bytes, unsure_bytes
    int64_t size, size_before, unsure_end, holding, clock
    Chunk *chunks
    int64_t nchunks
    OpenBlock *open       # sorted by block
    Py_ssize_t nopen, open_capacity
    EVP_MD_CTX *ctx
    bint out_of_memory

cdef struct Job:
    int64_t offset, end
    const uint8_t *data   # NULL: a write (offset -1: a sync) that failed

cdef struct Queue:
    Hashes *hashes        # what the worker takes the writes into
    pthread_mutex_t lock
    pthread_cond_t more, progress
    Job jobs[RING]
    uint64_t submitted, done
    int64_t pending_bytes
    bint idle             # the worker waits for more (woken once a block's worth is queued)
    bint stop


cdef inline int64_t ceil_div(int64_t a, int64_t b) noexcept nogil:
    return (a + b - 1) // b  # (a >= 0, b > 0: C division truncates)


cdef void sha256(Hashes *h, const uint8_t *data, int64_t length, uint8_t *out) noexcept nogil:
    EVP_DigestInit_ex(h.ctx, EVP_sha256(), NULL)
    EVP_DigestUpdate(h.ctx, data, length)
    EVP_DigestFinal_ex(h.ctx, out, NULL)


cdef void zeros_update(Hashes *h, int64_t length) noexcept nogil:
    while length > 0:
        EVP_DigestUpdate(h.ctx, ZERO_BYTES, min(length, ZEROS))
        length -= ZEROS


cdef void block_digest(Hashes *h, OpenBlock *ext, int64_t length, uint8_t *out) noexcept nogil:
    """The digest of a block's first ``length`` bytes: its pieces, zeros between (ext may be NULL)."""
    cdef int64_t at = 0, take
    cdef Py_ssize_t i
    EVP_DigestInit_ex(h.ctx, EVP_sha256(), NULL)
    if ext != NULL:
        for i in range(ext.count):
            if ext.pieces[i].start >= length:
                break
            zeros_update(h, ext.pieces[i].start - at)
            take = min(ext.pieces[i].length, length - ext.pieces[i].start)
            EVP_DigestUpdate(h.ctx, ext.pieces[i].data, take)
            at = ext.pieces[i].start + take
    zeros_update(h, length - at)
    EVP_DigestFinal_ex(h.ctx, out, NULL)


cdef int chunk_room(Hashes *h, int64_t chunks) noexcept nogil:
    """Chunks [0, chunks) exist; -1 when out of memory."""
    cdef int64_t grown, i
    cdef Chunk *more
    if chunks <= h.nchunks:
        return 0
    grown = max(chunks, 2 * h.nchunks, 64)
    more = <Chunk *>realloc(h.chunks, grown * sizeof(Chunk))
    if more == NULL:
        return -1
    for i in range(h.nchunks, grown):
        more[i].clock, more[i].held, more[i].state, more[i].blocks = -1, 0, CHUNK_OPEN, NULL
    h.chunks, h.nchunks = more, grown
    return 0


cdef uint8_t *chunk_blocks(Hashes *h, int64_t chunk) noexcept nogil:
    cdef Chunk *c = &h.chunks[chunk]
    if c.blocks == NULL:
        c.blocks = <uint8_t *>calloc(h.blocks_per_chunk, DIGEST + 1)
    return c.blocks


cdef Py_ssize_t open_index(Hashes *h, int64_t block) noexcept nogil:
    """Where ``block`` is or would go in the sorted open blocks."""
    cdef Py_ssize_t lo = 0, hi = h.nopen, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if h.open[mid].block < block:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef OpenBlock *open_find(Hashes *h, int64_t block) noexcept nogil:
    cdef Py_ssize_t i = open_index(h, block)
    return &h.open[i] if i < h.nopen and h.open[i].block == block else NULL


cdef OpenBlock *open_add(Hashes *h, int64_t block) noexcept nogil:
    cdef Py_ssize_t i = open_index(h, block), grown
    cdef OpenBlock *more
    if h.nopen == h.open_capacity:
        grown = max(2 * h.open_capacity, 16)
        more = <OpenBlock *>realloc(h.open, grown * sizeof(OpenBlock))
        if more == NULL:
            return NULL
        h.open, h.open_capacity = more, grown
    memmove(&h.open[i + 1], &h.open[i], (h.nopen - i) * sizeof(OpenBlock))
    h.nopen += 1
    h.open[i].block, h.open[i].covered, h.open[i].count, h.open[i].capacity, h.open[i].pieces = block, 0, 0, 0, NULL
    return &h.open[i]


cdef void open_remove(Hashes *h, int64_t first, int64_t last) noexcept nogil:
    """Forget the open blocks in [first, last)."""
    cdef Py_ssize_t lo = open_index(h, first), hi = open_index(h, last), i, j
    if lo == hi:
        return
    for i in range(lo, hi):
        for j in range(h.open[i].count):
            free(h.open[i].pieces[j].data)
        free(h.open[i].pieces)
    memmove(&h.open[lo], &h.open[hi], (h.nopen - hi) * sizeof(OpenBlock))
    h.nopen -= hi - lo


cdef inline int64_t held_by(Hashes *h, OpenBlock *ext) noexcept nogil:
    return ext.covered + h.piece_bytes * ext.count


cdef int extents_put(OpenBlock *ext, int64_t start, const uint8_t *data, int64_t length) noexcept nogil:
    """_Extents.put: a later write replaces what it overlaps. -1 when out of memory."""
    cdef int64_t end = start + length
    cdef Py_ssize_t lo = 0, hi = 0, n, i, grown
    cdef Piece head, tail, new
    cdef Piece *more
    cdef bint has_head = False, has_tail = False
    while lo < ext.count and ext.pieces[lo].start + ext.pieces[lo].length <= start:
        lo += 1
    hi = lo
    while hi < ext.count and ext.pieces[hi].start < end:
        hi += 1
    new.start, new.length, new.data = start, length, <uint8_t *>malloc(length)
    if new.data == NULL:
        return -1
    memcpy(new.data, data, length)
    if lo < hi and ext.pieces[hi - 1].start + ext.pieces[hi - 1].length > end:
        tail.start = end
        tail.length = ext.pieces[hi - 1].start + ext.pieces[hi - 1].length - end
        tail.data = <uint8_t *>malloc(tail.length)
        if tail.data == NULL:
            free(new.data)
            return -1
        memcpy(tail.data, ext.pieces[hi - 1].data + (end - ext.pieces[hi - 1].start), tail.length)
        has_tail = True
    if lo < hi and ext.pieces[lo].start < start:
        head = ext.pieces[lo]  # keeps its copy, shortened
        head.length = start - head.start
        has_head = True
    n = has_head + 1 + has_tail
    if ext.count - (hi - lo) + n > ext.capacity:
        grown = max(2 * ext.capacity, ext.count - (hi - lo) + n, 4)
        more = <Piece *>realloc(ext.pieces, grown * sizeof(Piece))
        if more == NULL:
            free(new.data)
            if has_tail:
                free(tail.data)
            return -1
        ext.pieces, ext.capacity = more, grown
    for i in range(lo, hi):
        ext.covered -= ext.pieces[i].length
        if not (has_head and i == lo):
            free(ext.pieces[i].data)
    memmove(&ext.pieces[lo + n], &ext.pieces[hi], (ext.count - hi) * sizeof(Piece))
    ext.count += n - (hi - lo)
    i = lo
    if has_head:
        ext.pieces[i] = head
        ext.covered += head.length
        i += 1
    ext.pieces[i] = new
    ext.covered += length
    if has_tail:
        ext.pieces[i + 1] = tail
        ext.covered += tail.length
    return 0


cdef void give_up(Hashes *h, int64_t chunk) noexcept nogil:
    cdef Chunk *c = &h.chunks[chunk]
    c.state = CHUNK_UNKNOWN
    free(c.blocks)
    c.blocks = NULL
    h.holding -= c.held
    c.held = 0
    open_remove(h, chunk * h.blocks_per_chunk, (chunk + 1) * h.blocks_per_chunk)


cdef int take(Hashes *h, int64_t offset, const uint8_t *data, int64_t length) noexcept nogil:
    """_Hashes.take; -1 when out of memory."""
    cdef int64_t end = offset + length, cs = h.chunk_size, bs = h.block_size, bpc = h.blocks_per_chunk
    cdef int64_t chunk, first, last, whole_first, whole_last, block, start, lo, hi, held, index, most
    cdef uint8_t *blocks
    cdef OpenBlock *ext
    cdef Chunk *c
    h.size_before, h.size = h.size, max(h.size, end)
    h.clock += length
    if chunk_room(h, ceil_div(end, cs)) < 0:
        return -1
    for chunk in range(offset // cs, ceil_div(end, cs)):
        h.chunks[chunk].clock = h.clock
    for chunk in range(offset // cs, ceil_div(end, cs)):
        c = &h.chunks[chunk]
        if c.state == CHUNK_UNKNOWN:
            continue
        first, last = max(offset // bs, chunk * bpc), min(ceil_div(end, bs), (chunk + 1) * bpc)
        if c.state == CHUNK_DONE:
            give_up(h, chunk)  # rewritten after it was hashed: its content is not known
            continue
        blocks = chunk_blocks(h, chunk)
        if blocks == NULL:
            return -1
        for block in range(first, last):
            if blocks[bpc * DIGEST + block - chunk * bpc]:
                break
        else:
            block = -1
        if block >= 0:
            give_up(h, chunk)
            continue
        whole_first, whole_last = max(max(ceil_div(offset, bs), h.head_blocks), first), min(end // bs, last)
        for block in range(whole_first, whole_last):
            ext = open_find(h, block)
            if ext != NULL:
                c.held -= held_by(h, ext)
                h.holding -= held_by(h, ext)
                open_remove(h, block, block + 1)
            index = block - chunk * bpc
            sha256(h, data + block * bs - offset, bs, blocks + index * DIGEST)
            blocks[bpc * DIGEST + index] = 1
        for block in range(first, last):
            if whole_first <= block < whole_last:
                continue
            start = block * bs
            lo, hi = max(offset, start), min(end, start + bs)
            ext = open_find(h, block)
            if ext == NULL:
                ext = open_add(h, block)
                if ext == NULL:
                    return -1
            held = held_by(h, ext)
            if extents_put(ext, lo - start, data + lo - offset, hi - lo) < 0:
                return -1
            if ext.covered == bs and block >= h.head_blocks:
                index = block - chunk * bpc
                block_digest(h, ext, bs, blocks + index * DIGEST)
                blocks[bpc * DIGEST + index] = 1
                c.held -= held
                h.holding -= held
                open_remove(h, block, block + 1)
                continue
            c.held += held_by(h, ext) - held
            h.holding += held_by(h, ext) - held
        if memchr(blocks + bpc * DIGEST, 0, bpc) == NULL:
            sha256(h, blocks, bpc * DIGEST, c.digest)
            c.state = CHUNK_DONE
            free(c.blocks)
            c.blocks = NULL
    if h.holding > h.hold_bytes:  # the chunk holding most (the lowest of equals) is given up
        most = -1
        for chunk in range(h.nchunks):
            if h.chunks[chunk].held > 0 and (most < 0 or h.chunks[chunk].held > h.chunks[most].held):
                most = chunk
        if most >= 0:
            give_up(h, most)
    return 0


cdef int failed(Hashes *h, int64_t offset, int64_t end) noexcept nogil:
    """_Hashes.failed; -1 when out of memory."""
    cdef int64_t cs = h.chunk_size, chunk
    if offset < 0:
        offset = end = h.size
    elif end > offset:
        h.size = h.size_before
    h.unsure_end = max(h.unsure_end, end)
    if chunk_room(h, max(offset // cs + 1, ceil_div(end, cs))) < 0:
        return -1
    for chunk in range(h.nchunks):
        if (offset // cs <= chunk < max(offset // cs + 1, ceil_div(end, cs))
                or (h.chunks[chunk].clock >= 0 and h.chunks[chunk].clock >= h.clock - h.unsure_bytes)):
            give_up(h, chunk)
    return 0


cdef void *hash_writes(void *arg) noexcept nogil:
    """The worker: takes the queued writes in, in order, until told to stop."""
    cdef Queue *q = <Queue *>arg
    cdef Hashes *h = q.hashes
    cdef Job job
    while True:
        pthread_mutex_lock(&q.lock)
        while q.done == q.submitted and not q.stop:
            q.idle = True
            pthread_cond_wait(&q.more, &q.lock)
        if q.done == q.submitted:
            pthread_mutex_unlock(&q.lock)
            return NULL
        job = q.jobs[q.done % RING]
        pthread_mutex_unlock(&q.lock)
        if not h.out_of_memory:
            if job.data == NULL:
                h.out_of_memory = failed(h, job.offset, job.end) < 0
            else:
                h.out_of_memory = take(h, job.offset, job.data, job.end - job.offset) < 0
        pthread_mutex_lock(&q.lock)
        if job.data != NULL:
            q.pending_bytes -= job.end - job.offset
        fh_store(&q.done, q.done + 1)
        pthread_cond_signal(&q.progress)
        pthread_mutex_unlock(&q.lock)


@cython.no_gc_clear
cdef class FileHasher:
    """What _fastcopy_py.FileHasher does, beside the dump without the GIL (above)."""

    cdef Hashes hashes
    cdef Queue queue
    cdef pthread_t thread
    cdef bint running
    cdef int64_t ahead_bytes
    cdef object kept      # (job number, buffer) of the writes the worker may not be past
    cdef object outcome

    def __cinit__(self, int64_t chunk_size, int64_t block_size, int64_t head_bytes, int64_t hold_bytes,
                  int64_t piece_bytes, int64_t unsure_bytes, int64_t ahead_bytes):
        if block_size <= 0 or chunk_size <= 0 or chunk_size % block_size:
            raise ValueError(f"chunk size {chunk_size} is not a multiple of block size {block_size}")
        memset(&self.hashes, 0, sizeof(Hashes))
        memset(&self.queue, 0, sizeof(Queue))
        self.queue.hashes = &self.hashes
        self.hashes.chunk_size, self.hashes.block_size = chunk_size, block_size
        self.hashes.blocks_per_chunk = chunk_size // block_size
        self.hashes.head_blocks = ceil_div(head_bytes, block_size)
        self.hashes.hold_bytes, self.hashes.piece_bytes = hold_bytes, piece_bytes
        self.hashes.unsure_bytes = unsure_bytes
        self.ahead_bytes = ahead_bytes
        self.kept = deque()
        self.hashes.ctx = EVP_MD_CTX_new()
        if self.hashes.ctx == NULL:
            raise MemoryError("no memory for a SHA-256 context")
        pthread_mutex_init(&self.queue.lock, NULL)
        pthread_cond_init(&self.queue.more, NULL)
        pthread_cond_init(&self.queue.progress, NULL)
        if pthread_create(&self.thread, NULL, hash_writes, &self.queue) != 0:
            raise OSError("cannot start the hashing thread")
        self.running = True

    cdef void _queue(self, int64_t offset, int64_t end, const uint8_t *data) noexcept nogil:
        cdef Queue *q = &self.queue
        cdef int64_t length = end - offset if data != NULL else 0
        pthread_mutex_lock(&q.lock)
        while q.submitted - q.done >= RING or (q.pending_bytes > 0 and q.pending_bytes + length > self.ahead_bytes):
            self._wake()
            pthread_cond_wait(&q.progress, &q.lock)
        q.jobs[q.submitted % RING].offset = offset
        q.jobs[q.submitted % RING].end = end
        q.jobs[q.submitted % RING].data = data
        q.submitted += 1
        q.pending_bytes += length
        # Woken for a block's worth, not for each write: waking an idle worker is a system
        # call, and on a capture kernel with one CPU a context switch.
        if q.pending_bytes >= self.hashes.block_size or q.submitted - q.done >= RING // 2:
            self._wake()
        pthread_mutex_unlock(&q.lock)

    cdef inline void _wake(self) noexcept nogil:
        """(under the lock)"""
        if self.queue.idle:
            self.queue.idle = False
            pthread_cond_signal(&self.queue.more)

    def take(self, int64_t offset, data):
        cdef const uint8_t[::1] view = data
        cdef uint64_t done
        if not self.running:
            raise ValueError("take after result")
        if view.shape[0] == 0:
            return
        with nogil:
            self._queue(offset, offset + view.shape[0], &view[0])
        self.kept.append((self.queue.submitted, view))  # (holds the buffer: it cannot be resized)
        done = fh_load(&self.queue.done)
        while self.kept and self.kept[0][0] <= done:
            self.kept.popleft()

    def failed(self, int64_t offset, int64_t end):
        if not self.running:
            raise ValueError("failed after result")
        with nogil:
            self._queue(offset, end, NULL)

    cdef void _stop(self) noexcept nogil:
        pthread_mutex_lock(&self.queue.lock)
        self.queue.stop = True
        self.queue.idle = False
        pthread_cond_signal(&self.queue.more)
        pthread_mutex_unlock(&self.queue.lock)
        pthread_join(self.thread, NULL)

    def result(self):
        cdef Hashes *h = &self.hashes
        cdef int64_t chunk, start, length, index, cs = h.chunk_size, bs = h.block_size, bpc = h.blocks_per_chunk
        cdef uint8_t digests[DIGEST * 1024]
        cdef uint8_t *all_digests
        cdef uint8_t digest[DIGEST]
        cdef Chunk *c
        if self.running:
            with nogil:
                self._stop()
            self.running = False
            self.kept.clear()
        if h.out_of_memory:
            raise MemoryError("out of memory for the bytes of blocks not yet whole")
        if self.outcome is not None:
            return self.outcome
        chunks = []
        all_digests = &digests[0]
        if bpc > 1024:
            all_digests = <uint8_t *>malloc(bpc * DIGEST)
        if all_digests == NULL:
            raise MemoryError("out of memory for a chunk's digests")
        try:
            for chunk in range(ceil_div(max(h.size, h.unsure_end), cs)):
                start = chunk * cs
                c = &h.chunks[chunk] if chunk < h.nchunks else NULL
                if (c != NULL and c.state == CHUNK_UNKNOWN) or start >= h.size:
                    chunks.append(None)
                elif c != NULL and c.state == CHUNK_DONE:
                    chunks.append((<char *>c.digest)[:DIGEST])
                else:
                    length = min(cs, h.size - start)
                    with nogil:
                        for index in range(ceil_div(length, bs)):
                            if c != NULL and c.blocks != NULL and c.blocks[bpc * DIGEST + index]:
                                memcpy(all_digests + index * DIGEST, c.blocks + index * DIGEST, DIGEST)
                            else:
                                block_digest(h, open_find(h, chunk * bpc + index), min(bs, length - index * bs),
                                             all_digests + index * DIGEST)
                        sha256(h, all_digests, ceil_div(length, bs) * DIGEST, digest)
                    chunks.append((<char *>digest)[:DIGEST])
        finally:
            if all_digests != &digests[0]:
                free(all_digests)
        self.outcome = (h.size, chunks)
        return self.outcome

    def __dealloc__(self):
        cdef int64_t chunk
        if self.running:
            with nogil:
                self._stop()
        if self.hashes.ctx != NULL:  # (else __cinit__ stopped before the thread and the locks)
            pthread_mutex_destroy(&self.queue.lock)
            pthread_cond_destroy(&self.queue.more)
            pthread_cond_destroy(&self.queue.progress)
            EVP_MD_CTX_free(self.hashes.ctx)
        open_remove(&self.hashes, 0, INT64_MAX)
        free(self.hashes.open)
        for chunk in range(self.hashes.nchunks):
            free(self.hashes.chunks[chunk].blocks)
        free(self.hashes.chunks)
