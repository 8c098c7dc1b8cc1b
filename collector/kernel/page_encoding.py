"""How the crashed kernel encodes page state in struct page, chosen once from VMCOREINFO.

Every kernel-version difference the page classifier depends on is decided here and nowhere
else; the scanner (_fastcopy.classify_pages and its twin) only reads the resulting parameters.
When a value a test needs is missing, that test is switched off (its pages are kept) and the
reason is reported: a page is never excluded on a guess.

Each kernel change is cited as drgn does: Linux commit, title, first release. The hashes are the
ones makedumpfile's, crash's and drgn's own commits name when they adapted to the same change.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ..dump_level import DL_CACHE, DL_CACHE_PRIVATE, DL_FREE, DL_USER
from ..source.vmcoreinfo import VmcoreInfo

# Classes a page can be excluded as; index into the counts array of classify_pages.
CLASS_NAMES = ("cache", "cache_private", "user", "free", "hwpoison", "offline")
(CLASS_CACHE, CLASS_CACHE_PRIVATE, CLASS_USER, CLASS_FREE, CLASS_HWPOISON, CLASS_OFFLINE) = range(6)
# One more counter after the classes: free blocks whose buddy order is implausible (kept).
COUNT_BAD_ORDER = len(CLASS_NAMES)
NUM_COUNTS = COUNT_BAD_ORDER + 1

# Where the order of a compound page is kept (read from its first tail page).
ORDER_NONE = 0        # unknown: compound pages are classified page by page
ORDER_U8 = 1          # page[1].compound_order or folio->_folio_order, one byte (Linux 4.4-6.5)
ORDER_FLAGS_BYTE = 2  # low byte of page[1].flags (folio->_flags_1, Linux 6.6+)

# Parameter vector layout shared with the scanner: index -> name.
PARAMS = (
    "struct_size", "off_flags", "off_mapping", "off_mapcount", "off_private", "off_compound_head",
    "order_mode", "off_order", "off_dtor", "head_mask",
    "pg_lru", "pg_private", "pg_swapcache", "pg_swapbacked", "pg_slab", "pg_hwpoison", "pg_hugetlb",
    "buddy_value", "offline_value", "slab_value", "hugetlb_value", "hugetlb_dtor", "unaccepted_value",
    "max_order", "dump_level",
)
PARAM_INDEX = {name: i for i, name in enumerate(PARAMS)}
ABSENT = -1  # a bit number, offset or value the kernel does not export


@dataclass
class PageEncoding:
    params: dict[str, int]
    disabled: dict[int, str] = field(default_factory=dict)  # dump level bit -> why it cannot apply

    def vector(self, dump_level: int) -> array:
        """The int64 parameter vector for the scanner, with filters that cannot apply removed."""
        values = dict(self.params, dump_level=dump_level & ~sum(self.disabled))
        return array("q", [values[name] for name in PARAMS])

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> PageEncoding:
        size, offsets, numbers = info.sizes, info.offsets, info.numbers
        p = {name: ABSENT for name in PARAMS}
        disabled: dict[int, str] = {}

        def need(level_bits: tuple[int, ...], keys: list[str], table: dict[str, int], kind: str) -> None:
            missing = [k for k in keys if k not in table]
            if missing:
                for bit in level_bits:
                    disabled.setdefault(bit, f"VMCOREINFO lacks {kind}({missing[0]})")

        all_levels = (DL_CACHE, DL_CACHE_PRIVATE, DL_USER, DL_FREE)
        need(all_levels, ["page"], size, "SIZE")
        need(all_levels, ["page.flags", "page.mapping", "page._mapcount"], offsets, "OFFSET")
        need((DL_CACHE, DL_CACHE_PRIVATE), ["PG_lru", "PG_private", "PG_swapcache"], numbers, "NUMBER")
        need((DL_FREE,), ["page.private"], offsets, "OFFSET")
        need((DL_FREE,), ["PAGE_BUDDY_MAPCOUNT_VALUE"], numbers, "NUMBER")
        p["struct_size"] = size.get("page", ABSENT)
        p["off_flags"] = offsets.get("page.flags", ABSENT)
        p["off_mapping"] = offsets.get("page.mapping", ABSENT)
        p["off_mapcount"] = offsets.get("page._mapcount", ABSENT)
        p["off_private"] = offsets.get("page.private", ABSENT)
        # The tail-page pointer, bit 0 set in tail pages: compound_head, renamed compound_info by
        # commit d50569612c29 ("mm: rename the 'compound_head' field in the 'struct page' to
        # 'compound_info'") in v7.1, its VMCOREINFO entry with it. Bit 0 still marks a tail page
        # where 8c846c879e22 ("mm: rework compound_head() for power-of-2 sizeof(struct page)")
        # (v7.1) made the rest a mask.
        p["off_compound_head"] = offsets.get("page.compound_head", offsets.get("page.compound_info", ABSENT))
        if p["off_compound_head"] == ABSENT:
            for bit in all_levels:
                disabled.setdefault(bit, "VMCOREINFO lacks OFFSET(page.compound_head)")
        p["head_mask"] = numbers.get("PG_head_mask", 0)

        # Compound order: page[1].compound_order up to Linux 6.2 (one byte since commit
        # 036e7aa49fb2 in v4.16; before, an unsigned short, whose low byte is the same on a
        # little-endian machine); folio->_folio_order since 1c5509be58f6 ("mm: remove 'First
        # tail page' members from struct page") in v6.3; the low byte of page[1].flags
        # (folio->_flags_1) since ebc1baf5c9b4 ("mm: free up a word in the first tail page") in
        # v6.6, where VMCOREINFO no longer names a field.
        order_offset = offsets.get("page.compound_order", offsets.get("folio._folio_order"))
        if order_offset is not None:
            folio_relative = "page.compound_order" not in offsets
            p["order_mode"] = ORDER_U8
            p["off_order"] = order_offset - p["struct_size"] if folio_relative else order_offset
        elif p["head_mask"]:
            p["order_mode"] = ORDER_FLAGS_BYTE
        else:
            p["order_mode"] = ORDER_NONE
        dtor_offset = offsets.get("page.compound_dtor", offsets.get("folio._folio_dtor"))
        if dtor_offset is not None and "page.compound_dtor" not in offsets:
            dtor_offset -= p["struct_size"]  # folio fields count from the head page
        p["off_dtor"] = ABSENT if dtor_offset is None else dtor_offset

        # PG_hugetlb: set in page[1].flags of a hugetlb folio from 9c5ccf2db04b ("mm: remove
        # HUGETLB_PAGE_DTOR") in v6.6 until d99e3140a4d3 ("mm: turn folio_test_hugetlb into a
        # PageType") in v6.9.
        for name in ("PG_lru", "PG_private", "PG_swapcache", "PG_swapbacked", "PG_slab", "PG_hwpoison",
                     "PG_hugetlb"):
            p[name.lower()] = numbers.get(name, ABSENT)
        # Page types live in _mapcount (page_type). Up to Linux 6.11 a type is a value like -129;
        # since 4ffca5a96678 ("mm: support only one page_type per page") in v6.12 the type is the
        # top byte, exported as e.g. 0xf0000000. Both are compared as 32-bit values.
        for key, name in (("PAGE_BUDDY_MAPCOUNT_VALUE", "buddy_value"),
                          ("PAGE_OFFLINE_MAPCOUNT_VALUE", "offline_value"),
                          # Slab as a page type instead of PG_slab: 46df8e73a4a3 ("mm: free up
                          # PG_slab") in v6.10.
                          ("PAGE_SLAB_MAPCOUNT_VALUE", "slab_value"),
                          # Hugetlb as a page type: d99e3140a4d3 (above) in v6.9.
                          ("PAGE_HUGETLB_MAPCOUNT_VALUE", "hugetlb_value"),
                          # Exported by "crash: export PAGE_UNACCEPTED_MAPCOUNT_VALUE to
                          # vmcoreinfo" in v6.16 (makedumpfile c1a9301 names no hash).
                          ("PAGE_UNACCEPTED_MAPCOUNT_VALUE", "unaccepted_value")):
            if key in numbers:
                p[name] = numbers[key] & 0xFFFFFFFF
        # Before v6.6 (9c5ccf2db04b, above) a hugetlb folio is told by its compound destructor.
        p["hugetlb_dtor"] = numbers.get("HUGETLB_PAGE_DTOR", ABSENT)
        if p["pg_slab"] == ABSENT and p["slab_value"] == ABSENT:
            for bit in (DL_USER, DL_FREE):
                disabled.setdefault(bit, "VMCOREINFO tells neither PG_slab nor PAGE_SLAB_MAPCOUNT_VALUE")
        # Buddy orders from here up are implausible: the block is kept and reported. Unaccepted
        # memory comes in blocks of the largest order, MAX_PAGE_ORDER = this - 1.
        p["max_order"] = info.lengths.get("zone.free_area", 11)
        p["dump_level"] = 0
        return cls(p, disabled)
