"""The order in which a dump's page data goes out: what a dump cut short needs most, first.

A kdump file's page data need not follow pfn order: each page_desc holds the offset of its
page's data. The bitmaps and the descriptor table stay exactly where readers expect them; only
the data is sent in order of value, so that a dump cut short (full target, lost link, a deadline)
still holds what an analyst reaches for first. The classes, in the order they are written:

1. crash state: the THREAD_SIZE stack around each CPU's stack pointer (NT_PRSTATUS), the kernel
   half's page-table pages (every read of the dump goes through them), the kernel image's
   writable pages (data, bss: the roots of the task list, the printk ring, per-CPU offsets);
2. slab pages (struct page says so): task structs, pids, inodes, most of what commands list;
3. the kernel image's read-only data (rodata);
4. every other kept page, from the top of physical memory down: the early-boot allocations
   (per-CPU areas, node data, mem_section roots) sit at the top, because memblock allocates
   top-down;
5. the kernel image's text (readers also have it from the debug vmlinux).

Measured on the test bed's Debian 6.1 1 GiB vmcore at dump level 31 (33 MB): the pages that
drgn reads for the crashed thread's stack trace, the task list and the log, and that crash 8.0.2
reads for log, bt and ps, come first under this order (see the README's "dumps cut short").

Each class is known before the page data is written: classes 1, 3 and 5 from the page tables
(a few thousand pfns), class 2 from the classification pass (a bitmap beside the 2nd bitmap,
bounded like it), class 4 is what is left. The writer places each page's descriptor by its
rank among the kept pages, so no table of the whole dump is held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..kernel import arch, triage
from ..kernel.memory import TranslationError
from ..source.vmcore import Vmcore

# Class 4 goes out from the top of memory down in pieces of this many pfns (128 MiB), each in
# pfn order within.
DOWNWARD_PIECE_PFNS = 1 << 15


@dataclass(frozen=True)
class PageClass:
    """One step of the order: explicit pfns (sorted), or the slab pages, or what is left."""

    name: str
    pfns: tuple[int, ...] = ()
    slab: bool = False
    rest: bool = False
    downward: bool = False


def page_order(vmcore: Vmcore) -> list[PageClass]:
    """The classes for this vmcore. Without page tables (no VMCOREINFO, another architecture)
    only the slab pages and the rest are ordered (the classifier has said why already)."""
    stacks: set[int] = set()
    found = None
    try:
        kernel = arch.kernel_memory(vmcore)
        architecture = arch.architecture(vmcore.e_machine)
        assert architecture is not None  # kernel_memory raised otherwise
        found = architecture.kernel_pages(kernel)
        for note in triage.prstatus_notes(vmcore.notes, vmcore.e_machine):
            pointer = (note.registers or {}).get("rsp")
            if pointer is not None and pointer >= kernel.kernel_space_start:
                stacks.update(architecture.stack_pages(kernel, pointer))
    except TranslationError:
        pass  # no page tables: the order starts with the slab pages
    explicit: list[PageClass] = []
    if found is not None:
        taken: set[int] = set()

        def claim(pfns: Iterator[int] | set[int] | list[int]) -> tuple[int, ...]:
            mine = sorted(set(pfns) - taken)
            taken.update(mine)
            return tuple(mine)

        crash_state = claim(stacks | set(found.tables) | set(found.image_writable))
        read_only = claim(found.image_read_only)
        text = claim(found.image_text)
        explicit = [PageClass("crash state", crash_state), PageClass("kernel rodata", read_only),
                    PageClass("kernel text", text)]
    first, rest = explicit[:1], explicit[1:]
    return [*first, PageClass("slab", slab=True), *rest[:1], PageClass("rest", rest=True, downward=True),
            *rest[1:]]
