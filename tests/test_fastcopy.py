"""The compiled page scanner and its pure-Python twin give the same results on every input."""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import _fastcopy_py, fastcopy

try:
    from collector import _fastcopy as compiled
except ImportError:  # the suite also runs where only the twin exists
    compiled = None

IMPLS = [_fastcopy_py] + ([compiled] if compiled else [])
PS = 64  # small pages keep examples fast; the code is page-size agnostic


def test_compiled_module_is_used_unless_pure_python_is_forced():
    import os

    if os.environ.get(fastcopy.PURE_PYTHON_ENV) == "1":
        assert not fastcopy.COMPILED
    elif compiled is not None:
        assert fastcopy.COMPILED


@st.composite
def page_buffers(draw):
    count = draw(st.integers(0, 40))
    rng = random.Random(draw(st.integers(0, 2**32)))
    pages = []
    for _ in range(count):
        kind = draw(st.sampled_from(["zero", "last-byte", "first-byte", "random"]))
        page = bytearray(PS)
        if kind == "last-byte":
            page[-1] = 1
        elif kind == "first-byte":
            page[0] = 1
        elif kind == "random":
            page = bytearray(rng.randbytes(PS))
        pages.append(bytes(page))
    return pages


@given(pages=page_buffers())
def test_find_zero_pages_agrees(pages):
    buf = b"".join(pages)
    results = []
    for impl in IMPLS:
        flags = bytearray(len(pages))
        n = impl.find_zero_pages(buf, len(pages), PS, flags)
        results.append((n, bytes(flags)))
    assert results[0] == (sum(p == bytes(PS) for p in pages), bytes(int(p == bytes(PS)) for p in pages))
    assert all(r == results[0] for r in results)


@given(pages=page_buffers(), bits=st.binary(min_size=6, max_size=6), first_bit=st.integers(0, 7),
       capacity=st.integers(1, 50), dst_index=st.integers(0, 3), zero_source=st.booleans())
def test_gather_pages_agrees(pages, bits, first_bit, capacity, dst_index, zero_source):
    npages = min(len(pages), 40)
    bitmap = bits * 2
    src = None if zero_source else b"".join(pages)
    results = []
    for impl in IMPLS:
        dst = bytearray(capacity * PS)
        pfns = array("Q", bytes(8 * capacity))
        dst_index_clamped = min(dst_index, capacity - 1)
        consumed, copied = impl.gather_pages(src, bitmap, first_bit, npages, PS, dst, pfns,
                                             dst_index_clamped, 1000)
        results.append((consumed, copied, bytes(dst), pfns.tolist()))
    consumed, copied, dst, pfns = results[0]
    selected = [i for i in range(npages) if bitmap[(first_bit + i) >> 3] >> ((first_bit + i) & 7) & 1]
    assert copied == min(len(selected), capacity - min(dst_index, capacity - 1))
    for slot, i in enumerate(selected[:copied]):
        start = (min(dst_index, capacity - 1) + slot) * PS
        assert dst[start:start + PS] == (bytes(PS) if zero_source else pages[i])
    assert all(r == results[0] for r in results)


@given(bitmap=st.binary(max_size=40), data=st.data())
def test_count_bits_and_bit_runs_agree(bitmap, data):
    nbits = len(bitmap) * 8
    start = data.draw(st.integers(0, nbits))
    end = data.draw(st.integers(start, nbits))
    expected = [b for b in range(start, end) if bitmap[b >> 3] >> (b & 7) & 1]
    for impl in IMPLS:
        assert impl.count_bits(bitmap, start, end) == len(expected)
        runs = impl.bit_runs(bitmap, start, end)
        assert [b for lo, hi in runs for b in range(lo, hi)] == expected
        assert all(hi < lo2 for (_, hi), (lo2, _) in zip(runs, runs[1:]))


@pytest.mark.skipif(compiled is None, reason="compiled module not built")
def test_compiled_module_handles_real_page_size():
    buf = bytes(4096) + b"\x01" + bytes(4095)
    flags = bytearray(2)
    assert compiled.find_zero_pages(buf, 2, 4096, flags) == 1 and flags == b"\x01\x00"
