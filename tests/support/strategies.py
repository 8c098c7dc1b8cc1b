"""Hypothesis strategies for synthetic vmcores: segments, holes, overlaps, zero pages."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from tests.support.vmcore_factory import PAGE_SIZE, SegmentSpec

KERNEL_TEXT = 0xFFFFFFFF81000000


@st.composite
def page_contents(draw) -> bytes:
    kind = draw(st.sampled_from(["zero", "random", "pattern", "sparse"]))
    if kind == "zero":
        return bytes(PAGE_SIZE)
    if kind == "random":
        # Random bytes from a drawn seed: 4 KiB drawn byte by byte would exhaust hypothesis.
        return random.Random(draw(st.integers(0, 2**32))).randbytes(PAGE_SIZE)
    if kind == "pattern":
        word = draw(st.binary(min_size=1, max_size=16))
        return (word * (PAGE_SIZE // len(word) + 1))[:PAGE_SIZE]
    page = bytearray(PAGE_SIZE)  # mostly zero with a few bytes set: not a zero page
    for offset in draw(st.lists(st.integers(0, PAGE_SIZE - 1), min_size=1, max_size=4)):
        page[offset] = draw(st.integers(1, 255))
    return bytes(page)


@st.composite
def segment_layouts(draw) -> list[SegmentSpec]:
    """1-4 RAM segments with gaps, sometimes unaligned ends or zero-filled tails, and sometimes
    a kernel-text segment repeating part of one of them (as kexec_load writes)."""
    segments: list[SegmentSpec] = []
    paddr = draw(st.sampled_from([0, 0x1000, 0x100000]))
    for _ in range(draw(st.integers(1, 4))):
        pages = draw(st.lists(page_contents(), min_size=1, max_size=12))
        data = b"".join(pages)
        if draw(st.booleans()):  # segment ends inside a page, like low memory at 0x9fc00
            data = data[:len(data) - draw(st.integers(1, PAGE_SIZE - 1))]
        extra = draw(st.sampled_from([0, 0, PAGE_SIZE, 2 * PAGE_SIZE + 512]))
        segments.append(SegmentSpec(paddr, data, vaddr=0xFFFF888000000000 + paddr, extra_memsz=extra))
        end = paddr + len(data) + extra
        paddr = -(-end // PAGE_SIZE) * PAGE_SIZE + draw(st.integers(0, 64)) * PAGE_SIZE
    if draw(st.booleans()):
        ram = draw(st.sampled_from(segments))
        full_pages = len(ram.data) // PAGE_SIZE
        if full_pages:
            first = draw(st.integers(0, full_pages - 1))
            count = draw(st.integers(1, full_pages - first))
            copy = ram.data[first * PAGE_SIZE:(first + count) * PAGE_SIZE]
            text = SegmentSpec(ram.paddr + first * PAGE_SIZE, copy, vaddr=KERNEL_TEXT)
            segments.insert(draw(st.integers(0, len(segments))), text)
    return segments
