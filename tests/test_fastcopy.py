"""The compiled page scanner and its pure-Python twin give the same results on every input."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import random
import zlib
from array import array
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import _fastcopy_py, fastcopy
from collector.formats.kdump import PAGE_DESC
from collector.kernel.kallsyms import TYPE_LETTERS
from collector.kernel.name_hash import name_bitmap
from collector.pipeline.compression import (
    DEFAULT_LEVEL,
    FLAG_ZSTD,
    LEVEL_RANGES,
    METHODS,
    PAGE_FLAGS,
)

compiled: ModuleType | None
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


def decompress(flag, frame):
    if flag == FLAG_ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().decompress(frame)
    return zlib.decompress(frame)


@given(pages=page_buffers(), bits=st.binary(min_size=6, max_size=6), first_bit=st.integers(0, 7),
       capacity=st.integers(1, 50), zero_source=st.booleans(), detect_zero=st.booleans(),
       method=st.sampled_from(METHODS), page_size=st.sampled_from([PS, 4096]))
def test_encoded_pages_decompress_to_the_selected_pages_in_both_twins(pages, bits, first_bit, capacity, zero_source,
                                                                     detect_zero, method, page_size):
    if page_size != PS:  # real pages: compressible ones, so that frames are stored too
        pages = [(page * (page_size // PS)) for page in pages]
    npages = min(len(pages), 40)
    bitmap = bits * 2
    src = None if zero_source else b"".join(pages)
    flag = PAGE_FLAGS[method]
    results = []
    for impl in IMPLS:
        encoder = impl.PageEncoder(flag, DEFAULT_LEVEL if flag else 0, page_size)
        data, sizes, raw = bytearray(capacity * page_size), array("I", bytes(4 * capacity)), bytearray(capacity)
        consumed, count, nbytes, nzero = encoder.encode(src, 0, bitmap, first_bit, npages, detect_zero, data,
                                                        sizes, raw)
        results.append((consumed, count, nbytes, nzero, sizes.tolist()[:count], bytes(raw[:count]),
                        bytes(data[:nbytes])))
        selected = [i for i in range(consumed) if bitmap[(first_bit + i) >> 3] >> ((first_bit + i) & 7) & 1]
        assert count == len(selected) <= capacity
        assert consumed == npages or count == capacity
        pos = 0
        for n, i in enumerate(selected):
            page = bytes(page_size) if zero_source else pages[i]
            if sizes[n] == 0:
                assert detect_zero and page == bytes(page_size)
                continue
            stored = bytes(data[pos:pos + sizes[n]])
            pos += sizes[n]
            assert (stored if raw[n] else decompress(flag, stored)) == page
            assert raw[n] or (flag and sizes[n] < page_size)
        assert pos == nbytes and nzero == sizes.tolist()[:count].count(0)
    # The twins agree on what is selected and what is zero; on the bytes too where they share
    # the compressor (zlib, none; python-zstandard may bundle another libzstd).
    same = (lambda r: r) if method != "zstd" else (lambda r: (r[0], r[1], r[3], [size == 0 for size in r[4]]))
    assert all(same(r) == same(results[0]) for r in results)


@pytest.mark.skipif(compiled is None, reason="compiled module not built")
def test_compiled_zstd_frames_are_makedumpfiles_ZSTD_compressCCtx_level_1():
    libzstd = ctypes.CDLL(ctypes.util.find_library("zstd"))
    libzstd.ZSTD_createCCtx.restype = ctypes.c_void_p
    libzstd.ZSTD_compressCCtx.restype = ctypes.c_size_t
    libzstd.ZSTD_compressCCtx.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                          ctypes.c_size_t, ctypes.c_int]
    cctx = libzstd.ZSTD_createCCtx()
    rng = random.Random(1)
    pages = [bytes(rng.randrange(4) for _ in range(4096)), b"ab" * 2048, rng.randbytes(2048) * 2]
    encoder = compiled.PageEncoder(FLAG_ZSTD, 1, 4096)
    data, sizes, raw = bytearray(3 * 4096), array("I", bytes(12)), bytearray(3)
    encoder.encode(b"".join(pages), 0, b"\x07", 0, 3, False, data, sizes, raw)
    pos = 0
    for n, page in enumerate(pages):
        out = ctypes.create_string_buffer(8192)  # room for any frame: capacity must not matter
        size = libzstd.ZSTD_compressCCtx(cctx, out, 8192, page, 4096, 1)
        assert not raw[n] and data[pos:pos + sizes[n]] == out.raw[:size]
        pos += sizes[n]


def test_encoder_refuses_levels_its_compressor_does_not_have():
    for impl in IMPLS:
        for method, (low, high) in LEVEL_RANGES.items():
            for level in (low - 1, high + 1):
                with pytest.raises(ValueError, match="level"):
                    impl.PageEncoder(PAGE_FLAGS[method], level, PS)


@given(sizes=st.lists(st.integers(0, PS), max_size=30), data_offset=st.integers(0, 2**40),
       zero_offset=st.integers(0, 2**40))
def test_kdump_descs_are_the_formats_page_desc_in_both_twins(sizes, data_offset, zero_offset):
    raw = bytes(int(size == PS) for size in sizes)
    packed = []
    for impl in IMPLS:
        out = bytearray(len(sizes) * PAGE_DESC.size)
        impl.kdump_descs(array("I", sizes), raw, len(sizes), data_offset, zero_offset, PS, FLAG_ZSTD, out)
        packed.append(bytes(out))
    expected = bytearray()
    for size in sizes:
        if size == 0:
            expected += PAGE_DESC.pack(zero_offset, PS, 0, 0)
        else:
            expected += PAGE_DESC.pack(data_offset, size, 0 if size == PS else FLAG_ZSTD, 0)
            data_offset += size
    assert all(p == bytes(expected) for p in packed)


@given(bitmap=st.binary(max_size=40), data=st.data())
def test_span_end_leaves_at_most_max_set_pages_in_a_span(bitmap, data):
    nbits = len(bitmap) * 8
    start = data.draw(st.integers(0, nbits))
    end = data.draw(st.integers(start, nbits))
    max_set = data.draw(st.integers(1, 70))
    selected = [b for b in range(start, end) if bitmap[b >> 3] >> (b & 7) & 1]
    expected = selected[max_set - 1] + 1 if len(selected) >= max_set else end
    assert all(impl.span_end(bitmap, start, end, max_set) == expected for impl in IMPLS)


@given(pages=page_buffers(), bits=st.binary(min_size=6, max_size=6), first_bit=st.integers(0, 7),
       zero_source=st.booleans())
def test_clear_zero_pages_clears_exactly_the_selected_zero_pages(pages, bits, first_bit, zero_source):
    npages = min(len(pages), 40)
    src = None if zero_source else b"".join(pages)
    expected = bytearray(bits)
    for i in range(npages):
        bit = first_bit + i
        if zero_source or pages[i] == bytes(PS):
            expected[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
    for impl in IMPLS:
        bitmap = bytearray(bits)
        cleared = impl.clear_zero_pages(src, 0, bitmap, first_bit, npages, PS)
        assert bitmap == expected
        assert cleared == impl.count_bits(bits, 0, 48) - impl.count_bits(expected, 0, 48)


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


@st.composite
def symbol_tables(draw):
    """A kallsyms-compressed table (kernel/kallsyms.py): 256 NUL-terminated tokens, a u16
    offset of each, and names of a type letter's token followed by tokens of 1-4 letters."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    letters = b"abcdefghijklmnopqrstuvwxyz_0123456789"
    tokens = [bytes(rng.choice(letters) for _ in range(rng.randint(1, 4))) for _ in range(256)]
    for byte in TYPE_LETTERS:
        tokens[byte] = bytes([byte])
    table = bytearray()
    index = bytearray()
    for token in tokens:
        index += len(table).to_bytes(2, "little")
        table += token + b"\0"
    names, expanded = bytearray(), []
    for _ in range(draw(st.integers(0, 200))):
        parts = [rng.choice(TYPE_LETTERS)] + [rng.randrange(256) for _ in range(rng.randint(1, 6))]
        names += bytes([len(parts), *parts])
        expanded.append(b"".join(tokens[part] for part in parts))
    return bytes(names), bytes(table), bytes(index), expanded, tokens


@given(symbol_tables(), st.data())
def test_kallsyms_find_returns_exactly_the_wanted_names_in_both_twins(table, data):
    names, token_table, token_index, expanded, tokens = table
    wanted = set(data.draw(st.lists(st.sampled_from([name[1:] for name in expanded]), max_size=12)
                           if expanded else st.just([])))
    wanted |= set(data.draw(st.lists(st.binary(min_size=1, max_size=8), max_size=3)))
    everything = bytes([1]) * 256
    token_lengths = bytes(len(token) for token in tokens)
    expected = [(i, name) for i, name in enumerate(expanded) if name[1:] in wanted]
    for impl in IMPLS:
        found = impl.kallsyms_find(names, len(expanded), token_table, token_index, everything, token_lengths,
                                   everything, name_bitmap(wanted), wanted)
        assert found == expected
        # a name whose bit is clear is not looked up: the bitmap is what filters in C
        assert impl.kallsyms_find(names, len(expanded), token_table, token_index, everything, token_lengths,
                                  everything, bytes(len(name_bitmap(()))), wanted) == []


hasher_operations = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 600), st.binary(min_size=0, max_size=200)),
    st.tuples(st.just("failed"), st.integers(-1, 600), st.integers(0, 200))), max_size=60)


@given(hasher_operations, st.sampled_from([(64, 16), (64, 64), (96, 32)]), st.integers(0, 80),
       st.sampled_from([1 << 30, 600, 150]), st.sampled_from([1 << 30, 300]))
def test_file_hashers_give_the_same_digests_and_give_up_the_same_chunks_in_both_twins(
        operations, sizes, head_bytes, hold_bytes, unsure_bytes):
    """Any writes, overlapping or not, failing or not, with limits that give chunks up: the
    compiled hasher (its own thread, copies) and the twin (a Python thread, views) agree."""
    chunk_size, block_size = sizes
    results = []
    for impl in IMPLS:
        hasher = impl.FileHasher(chunk_size, block_size, head_bytes, hold_bytes, 8, unsure_bytes, 1000)
        for kind, offset, value in operations:
            if kind == "write":
                hasher.take(offset, value)
            else:
                hasher.failed(offset, -1 if offset < 0 else offset + value)
        results.append(hasher.result())
    assert all(result == results[0] for result in results)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_file_hasher_digests_blocks_and_chunks_with_sha256(impl):
    hasher = impl.FileHasher(64, 16, 0, 1 << 20, 8, 1 << 20, 1 << 20)
    data = random.Random(1).randbytes(100)
    hasher.take(0, data[:70])
    hasher.take(70, memoryview(data)[70:])
    size, chunks = hasher.result()
    blocks = [hashlib.sha256(data[at:min(at + 16, len(data))]).digest() for at in range(0, 100, 16)]
    assert (size, chunks) == (100, [hashlib.sha256(b"".join(blocks[:4])).digest(),
                                    hashlib.sha256(b"".join(blocks[4:])).digest()])
    with pytest.raises(ValueError):
        hasher.take(100, b"late")
