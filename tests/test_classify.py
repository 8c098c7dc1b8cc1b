"""The page classifier on synthetic struct page arrays: the makedumpfile rules, case by case,
and the compiled scanner agreeing with its pure-Python twin on every input."""

from __future__ import annotations

import struct
from array import array
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import _fastcopy_py
from collector.kernel.page_encoding import CLASS_NAMES, PageEncoding
from collector.source.vmcoreinfo import VmcoreInfo

compiled: ModuleType | None
try:
    from collector import _fastcopy as compiled
except ImportError:
    compiled = None

IMPLS = [_fastcopy_py] + ([compiled] if compiled else [])

# VMCOREINFO excerpts as Debian's 6.1 and 6.12 kernels print them (taken from real vmcores).
STRUCT_PAGE_OFFSETS = """PAGESIZE=4096
SIZE(page)=64
OFFSET(page.flags)=0
OFFSET(page._refcount)=52
OFFSET(page.mapping)=24
OFFSET(page.lru)=8
OFFSET(page._mapcount)=48
OFFSET(page.private)=40
OFFSET(page.compound_head)=8
LENGTH(zone.free_area)=11
"""
INFO_6_1 = STRUCT_PAGE_OFFSETS + """OSRELEASE=6.1.0-56-amd64
OFFSET(page.compound_dtor)=16
OFFSET(page.compound_order)=17
NUMBER(PG_lru)=4
NUMBER(PG_private)=13
NUMBER(PG_swapcache)=10
NUMBER(PG_swapbacked)=19
NUMBER(PG_slab)=9
NUMBER(PG_hwpoison)=23
NUMBER(PG_head_mask)=65536
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129
NUMBER(HUGETLB_PAGE_DTOR)=2
NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257
"""
INFO_6_12 = STRUCT_PAGE_OFFSETS + """OSRELEASE=6.12.117+deb12-amd64
NUMBER(PG_lru)=5
NUMBER(PG_private)=14
NUMBER(PG_swapcache)=10
NUMBER(PG_swapbacked)=17
NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)=-184549376
NUMBER(PG_hwpoison)=20
NUMBER(PG_head_mask)=64
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-268435456
NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=-201326592
NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-251658240
"""
# Linux 7.1 renames compound_head to compound_info; everything else as 6.12.
INFO_7_1 = INFO_6_12.replace("OFFSET(page.compound_head)", "OFFSET(page.compound_info)")
ENCODINGS = {name: PageEncoding.from_vmcoreinfo(VmcoreInfo.parse(text.encode()))
             for name, text in (("6.1", INFO_6_1), ("6.12", INFO_6_12), ("7.1", INFO_7_1))}


class Kernel:
    """Builds struct page arrays the way a given kernel version lays them out."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.p = ENCODINGS[version].params

    def bit(self, name: str) -> int:
        return 1 << self.p[name] if self.p[name] >= 0 else 0

    def page(self, flags: int = 0, mapping: int = 0, mapcount: int = -1, private: int = 0,
             head: int = 0) -> bytearray:
        page = bytearray(64)
        struct.pack_into("<Q", page, self.p["off_flags"], flags)
        struct.pack_into("<Q", page, self.p["off_mapping"], mapping)
        struct.pack_into("<I", page, self.p["off_mapcount"], mapcount & 0xFFFFFFFF)
        struct.pack_into("<Q", page, self.p["off_private"], private)
        struct.pack_into("<Q", page, self.p["off_compound_head"], head)
        return page

    def compound(self, order: int, head_page: bytearray, hugetlb: bool = False) -> list[bytearray]:
        """A head page and its tails, with the order (and hugetlb marker) where this kernel keeps it."""
        struct.pack_into("<Q", head_page, 0, struct.unpack_from("<Q", head_page, 0)[0] | self.p["head_mask"])
        if hugetlb and self.p["hugetlb_value"] >= 0:
            struct.pack_into("<I", head_page, self.p["off_mapcount"], self.p["hugetlb_value"])
        tails = [self.page(head=0xFFFFEA0000000001) for _ in range((1 << order) - 1)]
        if self.p["order_mode"] == 1:
            tails[0][self.p["off_order"]] = order
        else:
            tails[0][0] = order  # low byte of page[1].flags
        if hugetlb and self.p["hugetlb_dtor"] >= 0:
            tails[0][self.p["off_dtor"]] = self.p["hugetlb_dtor"]
        return [head_page, *tails]

    def slab_page(self) -> bytearray:
        if self.p["pg_slab"] >= 0:
            return self.page(flags=self.bit("pg_slab"), mapping=0x1)
        return self.page(mapping=0x1, mapcount=self.p["slab_value"])


def classify(impl, pages: list[bytearray], params: dict, dump_level: int, first_pfn: int = 0):
    kept, counts, bad, _, _ = classify_with_slabs(impl, pages, params, dump_level, first_pfn)
    return kept, counts, bad


def classify_with_slabs(impl, pages: list[bytearray], params: dict, dump_level: int, first_pfn: int = 0,
                        first_caches: tuple[int, ...] = (), slab_cache_offset: int = -1):
    """classify, and the pages marked as slab pages and as pages of the first slab caches."""
    encoding = PageEncoding(params)
    vector = encoding.vector(dump_level)
    bitmap = bytearray(b"\xff" * ((len(pages) + 7) // 8))
    slab, first_slab = bytearray(len(bitmap)), bytearray(len(bitmap))
    counts = array("q", bytes(8 * 7))
    impl.classify_pages(b"".join(pages), len(pages), vector, bitmap, 0, first_pfn, counts, slab, first_slab,
                        array("Q", first_caches), slab_cache_offset)

    def bits(b: bytearray) -> list[int]:
        return [i for i in range(len(pages)) if b[i >> 3] >> (i & 7) & 1]

    return bits(bitmap), dict(zip(CLASS_NAMES, counts)), counts[6], bits(slab), bits(first_slab)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("version", sorted(ENCODINGS))
def test_makedumpfile_rules(impl, version):
    k = Kernel(version)
    lru, private, swapcache, swapbacked = (k.bit(n) for n in ("pg_lru", "pg_private", "pg_swapcache", "pg_swapbacked"))
    pages = (
        [k.page(mapcount=k.p["buddy_value"], private=2)] + [k.page() for _ in range(3)]  # 0-3 free, order 2
        + [k.page(flags=lru, mapping=0xFFFF888000001000)]           # 4 cache
        + [k.page(flags=lru | private, mapping=0xFFFF888000001000)]  # 5 cache with private
        + [k.page(flags=swapcache | swapbacked, mapping=0x1)]         # 6 anonymous swap cache: user
        + [k.page(flags=lru, mapping=0xFFFF888000002001)]            # 7 anonymous: user
        + [k.slab_page()]                                             # 8 slab with mapping & 1: kept
        + [k.page(flags=k.bit("pg_hwpoison"))]                        # 9 hwpoison: always out
        + [k.page(mapcount=k.p["offline_value"])]                     # 10 offline: always out
        + [k.page()]                                                  # 11 plain kernel page: kept
        + k.compound(2, k.page(flags=lru, mapping=0x1))               # 12-15 anon THP: user, tails too
        + k.compound(2, k.page(), hugetlb=True)                       # 16-19 hugetlb: user
        + [k.page(mapcount=k.p["buddy_value"], private=40)]           # 20 buddy, absurd order: kept
        + [k.page()] * 3
    )
    kept, counts, bad_orders = classify(impl, pages, k.p, 31)
    assert kept == [8, 11, 20, 21, 22, 23]
    assert counts == {"cache": 1, "cache_private": 1, "user": 10, "free": 4, "hwpoison": 1, "offline": 1}
    assert bad_orders == 1
    kept2, counts2, _ = classify(impl, pages, k.p, 2)
    assert counts2["cache"] == 1 and counts2["cache_private"] == 0  # private cache stays at level 2
    assert 5 in kept2 and 4 not in kept2 and 9 not in kept2 and 10 not in kept2
    kept0, _, _ = classify(impl, pages, k.p, 0)
    assert 9 not in kept0 and 10 not in kept0 and len(kept0) == len(pages) - 2  # hwpoison, offline


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
def test_misaligned_compound_head_is_judged_alone(impl):
    k = Kernel("6.1")
    pages = [k.page()] + k.compound(1, k.page(flags=k.bit("pg_lru"), mapping=0x1))
    kept, counts, _ = classify(impl, pages, k.p, 8)  # head at odd pfn 1: order 1 is implausible
    assert counts["user"] == 1 and kept == [0, 2]


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("version", ["6.1", "6.12"])
def test_slabs_of_the_first_caches_are_marked_apart_head_and_tails_alike(impl, version):
    k = Kernel(version)
    offset = {"6.1": 24, "6.12": 8}[version]  # struct slab's slab_cache (kernel/slab.py)
    task_structs, dentries = 0xFFFF888004841000, 0xFFFF888004842000

    def slab(cache: int) -> bytearray:
        page = k.slab_page()
        struct.pack_into("<Q", page, offset, cache)
        return page

    pages = ([k.page(), k.page()] + k.compound(1, slab(task_structs)) + k.compound(2, slab(dentries))
             + [slab(task_structs), k.page(mapping=task_structs)])
    kept, _, _, other_slab, first_slab = classify_with_slabs(impl, pages, k.p, 31, 0, (task_structs,), offset)
    assert first_slab == [2, 3, 8]  # the order-1 slab at pfn 2 (its tail too), the slab at pfn 8
    assert other_slab == [4, 5, 6, 7]  # another cache's order-2 slab: a slab page all the same
    assert kept == list(range(10))
    _, _, _, unknown_offset, none_first = classify_with_slabs(impl, pages, k.p, 31, 0, (task_structs,), -1)
    assert none_first == [] and unknown_offset == [2, 3, 4, 5, 6, 7, 8]  # offset unknown: all slab


@st.composite
def struct_page_arrays(draw):
    version = draw(st.sampled_from(sorted(ENCODINGS)))
    k = Kernel(version)
    flag_bits = [k.bit(n) for n in ("pg_lru", "pg_private", "pg_swapcache", "pg_swapbacked", "pg_slab",
                                    "pg_hwpoison")] + [k.p["head_mask"]]
    mapcounts = [-1, 0, 5, -128, -129, -257, 0xF0000000, 0xF4000000, 0xF5000000, 0xF1000000,
                 *(k.p[n] for n in ("buddy_value", "offline_value", "slab_value", "hugetlb_value") if k.p[n] >= 0)]
    pages = []
    for _ in range(draw(st.integers(1, 64))):
        flags = 0
        for bit in draw(st.lists(st.sampled_from(flag_bits), max_size=4)):
            flags |= bit
        page = k.page(flags=flags | draw(st.integers(0, 0xFF)) << 56,
                      mapping=draw(st.sampled_from([0, 1, 2, 3, 0xFFFF888000001000, 0xFFFF888000001001])),
                      mapcount=draw(st.sampled_from(mapcounts)),
                      private=draw(st.sampled_from([0, 1, 3, 10, 11, 63, 64, 2**63])),
                      head=draw(st.sampled_from([0, 0, 0, 1, 0xFFFFEA0000000001, 0xFFFFEA0000000000])))
        page[16] = draw(st.integers(0, 255))  # compound_dtor / order bytes of a would-be tail
        page[17] = draw(st.integers(0, 255))
        pages.append(page)
    return k.p, pages, draw(st.integers(0, 31)), draw(st.integers(0, 2**40))


@pytest.mark.skipif(compiled is None, reason="compiled module not built")
@given(case=struct_page_arrays())
def test_compiled_and_twin_agree(case):
    params, pages, level, first_pfn = case
    # struct slab's slab_cache at page.mapping's offset (24, as on 6.1): one of the drawn mappings
    first = (0xFFFF888000001000,), 24
    assert (classify_with_slabs(compiled, pages, params, level, first_pfn, *first)
            == classify_with_slabs(_fastcopy_py, pages, params, level, first_pfn, *first))


def test_missing_keys_switch_filters_off_with_a_reason():
    text = "\n".join(line for line in INFO_6_1.splitlines() if "BUDDY" not in line and "PG_lru" not in line)
    encoding = PageEncoding.from_vmcoreinfo(VmcoreInfo.parse(text.encode()))
    assert "PAGE_BUDDY_MAPCOUNT_VALUE" in encoding.disabled[16]
    assert "PG_lru" in encoding.disabled[2] and "PG_lru" in encoding.disabled[4]
    assert 8 not in encoding.disabled
    assert encoding.vector(31)[list(encoding.params).index("dump_level")] == 31 & ~(2 | 4 | 16)
