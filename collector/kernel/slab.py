"""The slab caches whose pages a dump cut short needs first, and how struct page names them.

Readers list tasks and unwind the crashed thread through task structs and what hangs off them
(signal, sighand, mm, files, fs, cred): slab objects, scattered through memory among the other
slab pages. Each cache has a kernel variable pointing at its struct kmem_cache
(``task_struct_cachep`` in kernel/fork.c and the like, all in kallsyms on CONFIG_KALLSYMS_ALL
kernels), and every slab's struct slab, which overlays its head struct page (Linux 5.17, commit
d122019bf061 "mm: Split slab into its own type"), points at its cache. The dump writes the slabs
of these caches before the other slab pages (scan/value.py).

VMCOREINFO has no OFFSET(slab.slab_cache), and it moved: 24 on 6.1 (after slab_list), 8 on
6.12 and 7.2 (first after the flags; measured on the test bed's vmcores). It is found in the
dump: struct kmem_cache objects are themselves slab objects of the cache ``kmem_cache`` points
at, so the offset is the one at which the slabs of two caches' objects both name that cache.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from .kallsyms import Kallsyms
from .memory import KernelMemory, TranslationError
from .mm import MemMapError, SectionMemMap

# The caches' pointer variables, by what readers need first: crash's ps and drgn's
# for_each_task walk task structs; bt and stack traces need the task and its mm.
FIRST_CACHES = ("task_struct_cachep", "signal_cachep", "sighand_cachep", "mm_cachep", "files_cachep",
                "fs_cachep", "cred_jar")
# Where slab_cache can be in struct slab: after __page_flags, after a list_head, or after both.
SLAB_CACHE_OFFSETS = (8, 16, 24, 32)


@dataclass(frozen=True)
class FirstSlabCaches:
    """The struct kmem_cache addresses of FIRST_CACHES and where struct slab keeps its cache."""

    slab_cache_offset: int
    caches: array  # array("Q") of struct kmem_cache addresses, for the page scanner


def first_slab_caches(kallsyms: Kallsyms, kernel: KernelMemory, mem_map: SectionMemMap, page_size: int,
                      compound_head_offset: int) -> FirstSlabCaches | None:
    """FIRST_CACHES as found in the dump; None when the kernel's symbol table, the pointers or
    the slab_cache offset cannot be read or checked (the slab pages are then all written at
    the slab pages' turn)."""
    try:
        symbols = kallsyms.addresses(["kmem_cache", *FIRST_CACHES])
        if "kmem_cache" not in symbols:
            return None
        cache_of_caches = kernel.read_u64(symbols["kmem_cache"][1])
        caches = [kernel.read_u64(symbols[name][1]) for name in FIRST_CACHES if name in symbols]
        caches = [cache for cache in caches if cache >= kernel.kernel_space_start]
        if len(caches) < 2:
            return None
        # and the struct kmem_caches themselves: crash reads them while it starts
        caches.append(cache_of_caches)
        heads = [_slab_head(kernel, mem_map, cache, page_size, compound_head_offset) for cache in caches[:2]]
    except (TranslationError, MemMapError):
        return None
    offsets = [offset for offset in SLAB_CACHE_OFFSETS if offset + 8 <= len(heads[0])
               and all(int.from_bytes(head[offset:offset + 8], "little") == cache_of_caches for head in heads)]
    if len(offsets) != 1:
        return None
    return FirstSlabCaches(offsets[0], array("Q", sorted(set(caches))))


def _slab_head(kernel: KernelMemory, mem_map: SectionMemMap, address: int, page_size: int,
               compound_head_offset: int) -> bytes:
    """The head struct page of the slab holding the object at ``address``."""
    paddr, _ = kernel.translate(address)
    page = mem_map.read_struct_pages(paddr // page_size, 1)
    head = int.from_bytes(page[compound_head_offset:compound_head_offset + 8], "little")
    if head & 1:  # a compound tail: compound_head points at the head's struct page, plus one
        page = kernel.read(head - 1, len(page))
    return page
