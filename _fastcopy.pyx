# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Hot loops over page buffers: gather selected pages, find zero pages, count bitmap bits.

collector/_fastcopy_py.py is the readable reference with the same functions and results;
keep the two in step (the test suite runs on both and compares them).
"""

from libc.string cimport memcpy, memset, memcmp
from libc.stdint cimport uint8_t, uint64_t


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


cdef extern from *:
    int __builtin_popcount(unsigned int) nogil
