"""The order in which a dump's page data goes out: what a dump cut short needs most, first.

A kdump file's page data need not follow pfn order: each page_desc holds the offset of its
page's data. The bitmaps and the descriptor table stay exactly where readers expect them; only
the data is sent in order of value, so that a dump cut short (full target, lost link, a deadline)
still holds what an analyst reaches for first. The classes, in the order they are written:

1. page tables, stacks, per-CPU data: what crash and drgn read to answer log, bt and ps
   (measured with benchmarks/reader_pages.py and crash -d 8): the kernel half's page-table pages
   (every read of the dump goes through them), the THREAD_SIZE stack around each CPU's stack
   pointer (NT_PRSTATUS), mem_section's roots, the kernel log (kernel/dmesg.py finds it), each
   node's pglist_data, and what the kernel's own kallsyms names: the per-CPU units, the data
   and text crash reads while it starts (STARTUP_DATA, STARTUP_TEXT), the text the stacks
   return into and the ORC entries an unwinder looks up for it;
2. task structs: the slabs of the task_struct cache and of what readers follow from a task
   (signal, sighand, mm, files, fs, cred; kernel/slab.py finds them by struct slab's cache);
3. kernel data: the image's writable pages (data, bss), and read-only pages after _sdata;
4. early-boot memory: the top of each memory node;
5. the other slab pages (struct page says so): pids, inodes, most of what commands list;
6. rodata, from its end down (ro_after_init data is at its end);
7. kernel text (readers also have it from the debug vmlinux);
8. every other kept page, in pfn order: the classes before it already hold what the readers
   need (measured: the same cuts answer with it in pfn order or from the top down), and pfn
   order reads a vmcore file front to back.

Measured with drgn and crash 8.0.2 on cut dumps of the test bed's Debian 6.1 1 GiB and 4 GiB
crashes: the README's "Dumps cut short" has the table, tests/test_value_order.py the proof.

Each class is known before the page data is written: the explicit ones from the page tables and
kallsyms (a few thousand pfns), the slab classes from the classification pass (two bitmaps
beside the 2nd bitmap, bounded like it), the rest is what is left. The writer places each
page's descriptor by its rank among the kept pages, so no table of the whole dump is held in
memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..kernel import arch, dmesg, pids, triage
from ..kernel.kallsyms import Kallsyms
from ..kernel.memory import KernelMemory, TranslationError
from ..source.vmcore import Vmcore

# rodata goes out from its end down (ro_after_init data sits at its end), 1 MiB at a time.
RODATA_PIECE_PFNS = 1 << 8
# What crash 8.0 reads while it starts, before its prompt: the prologues of the functions
# x86_64_framepointer_init checks, schedule and __schedule whole (x86_64_thread_return_init
# disassembles them), common_interrupt (x86_64_irq_eframe_link_init), linux_banner (compared
# with the vmlinux's), lookup_num_blocks (x86_64_ORC_init), pageflag_names and the strings
# its entries ({unsigned long mask; const char *name}) point at, and task_state_array (ps).
# Without the first ones it stops: "page incomplete ... framepointer check", "...
# gdb_readmem_callback", "do not match!"; without the last ones it warns. The strings are
# not in class 1: they lie on ~60 pages of rodata (110 KB on the 6.1 4 GiB crash), and crash
# reads them quietly (ROE|QUIET), answering log, bt and ps without them.
STARTUP_TEXT = ("sys_open", "sys_fork", "sys_read", "__x64_sys_open", "__x64_sys_fork", "__x64_sys_read",
                "do_futex", "do_fork", "_do_fork", "sys_write", "vfs_read", "__schedule", "schedule",
                "thread_return", "common_interrupt", "asm_common_interrupt")
STARTUP_DATA = ("linux_banner", "lookup_num_blocks", "pageflag_names", "task_state_array",
                # The kernel data crash 8.0.2 reads before its prompt and for log, bt and ps
                # (its readmem calls under crash -d 8, those it cannot do without marked FOE),
                # and what drgn reads for the crashed thread, its tasks and its log
                # (benchmarks/reader_pages.py), on Debian 6.1: a few bytes each.
                "__cpu_active_mask", "__cpu_online_mask", "__cpu_possible_mask", "__cpu_present_mask",
                "__per_cpu_offset", "_totalram_pages", "arch_task_struct_size", "crash_notes", "crashing_cpu",
                "high_memory", "idt_table", "init_pid_ns", "init_task", "init_uts_ns", "jiffies_64", "kmem_cache",
                "mem_section", "memory_block_size_probed", "memory_subsys", "modules", "node_data", "node_states",
                "nr_cpu_ids", "nr_irqs", "nr_swapfiles", "nr_threads", "page_offset_base", "panic_cpu",
                "pv_info", "shadow_timekeeper", "vmalloc_base", "vmemmap_base", "xen_start_info")
# x86's ORC unwinder (crash's bt reads it from the dump): a u32 orc_lookup entry per 256 bytes
# of text from _stext gives the range of the sorted ip table (s32 each) to search, and the
# orc_entry (6 bytes) of the same index (arch/x86/include/asm/orc_lookup.h, orc_types.h).
ORC_LOOKUP_BLOCK = 256
ORC_ENTRY_SIZE = 6
ORC_SEARCH_MAX = 1 << 12  # entries of one lookup block; more is a damaged table
# gdb reads instructions ahead of the range crash asks it to disassemble (measured: up to the
# second page after it).
GDB_READ_AHEAD = 0x2000
PERCPU_BUDGET_BYTES = 16 << 20  # per-CPU areas of the first CPUs only, on machines with many
# memblock allocates top-down, so each node's early-boot structures (per-CPU chunks, node data,
# mem_section roots, struct pages) sit in its highest memory: this much of it (at most 1/16).
NODE_TOP_BYTES = 16 << 20
MAX_NODES = 1024


@dataclass(frozen=True)
class PageClass:
    """One step of the order: explicit pfns (sorted), or the first slab caches' pages
    (kernel/slab.py), or the other slab pages, or what is left; ``piece_pfns`` > 0: from the
    top down in pieces of that many pfns (pfn order within)."""

    name: str
    pfns: tuple[int, ...] = ()
    first_slab: bool = False
    slab: bool = False
    rest: bool = False
    piece_pfns: int = 0


def page_order(vmcore: Vmcore, kallsyms: Kallsyms | None) -> list[PageClass]:
    """The classes for this vmcore; ``kallsyms``: the kernel's symbol table as the classifier
    read it (None: none usable). Without page tables (no VMCOREINFO, another architecture)
    only the slab pages and the rest are ordered (the classifier has said why already)."""
    found = None
    crash_state: set[int] = set()
    node_tops: list[range] = []
    data_start = 1 << 62
    try:
        kernel = arch.kernel_memory(vmcore)
        architecture = arch.architecture(vmcore.e_machine)
        assert architecture is not None  # kernel_memory raised otherwise
        found = architecture.kernel_pages(kernel)
        stacks: set[int] = set()
        sp = architecture.STACK_POINTER
        pointers = [note.registers[sp] for note in triage.prstatus_notes(vmcore.notes, vmcore.e_machine)
                    if note.registers and note.registers.get(sp, 0) >= kernel.kernel_space_start]
        for pointer in pointers:
            stacks.update(architecture.stack_pages(kernel, pointer))
        named, data_start = _named_pages(vmcore, kernel, kallsyms, architecture, stacks, set(found.image_text))
        node_tops, node_structs = _node_tops(vmcore, kernel)
        crash_state = stacks | set(found.tables) | named | node_structs
    except TranslationError:
        pass  # no page tables: the order starts with the slab pages
    if found is None:
        return [PageClass("task structs", first_slab=True), PageClass("slab", slab=True),
                PageClass("rest", rest=True)]
    taken: set[int] = set()

    def claim(pfns: Iterable[int]) -> tuple[int, ...]:
        mine = sorted(set(pfns) - taken)
        taken.update(mine)
        return tuple(mine)

    return [PageClass("page tables, stacks, per-CPU data", claim(crash_state)),
            PageClass("task structs", first_slab=True),
            # Read-only pages among data and bss (the IDT, made read-only after boot) are data.
            PageClass("kernel data", claim([*found.image_writable,
                                            *(pfn for pfn in found.image_read_only if pfn >= data_start)])),
            PageClass("early-boot memory", claim(pfn for top in node_tops for pfn in top)),
            PageClass("slab", slab=True),
            PageClass("kernel rodata", claim(found.image_read_only), piece_pfns=RODATA_PIECE_PFNS),
            PageClass("kernel text", claim(found.image_text)),
            PageClass("rest", rest=True)]


def _node_tops(vmcore: Vmcore, kernel: KernelMemory) -> tuple[list[range], set[int]]:
    """The highest NODE_TOP_BYTES (at most 1/16) of each online memory node, from VMCOREINFO's
    node_data, node_online_map and pglist_data offsets, and the pages of the nodes' struct
    pglist_data (crash reads them while it starts); none if they are missing."""
    info = vmcore.vmcoreinfo
    assert info is not None
    try:
        mask_size = info.sizes["nodemask_t"]
        start_offset = info.offsets["pglist_data.node_start_pfn"]
        spanned_offset = info.offsets["pglist_data.node_spanned_pages"]
        online = int.from_bytes(kernel.read(info.symbols["node_online_map"], mask_size), "little")
        node_data = info.symbols["node_data"]
    except (KeyError, TranslationError):
        return [], set()
    top_pages = NODE_TOP_BYTES // vmcore.page_size
    pgdat_size = info.sizes.get("pglist_data", spanned_offset + 8)
    tops, structs = [], set()
    for node in range(min(mask_size * 8, MAX_NODES)):
        if not online >> node & 1:
            continue
        try:
            pgdat = kernel.read_u64(node_data + 8 * node)
            structs |= kernel.mapped_pfns(pgdat, pgdat + pgdat_size, vmcore.page_size)
            start = kernel.read_u64(pgdat + start_offset)
            spanned = kernel.read_u64(pgdat + spanned_offset)
        except TranslationError:
            continue
        end = start + spanned
        if 0 < spanned and end <= vmcore.memory.max_mapnr:
            tops.append(range(max(start, end - min(top_pages, spanned // 16)), end))
    return tops, structs


def _named_pages(vmcore: Vmcore, kernel: KernelMemory, kallsyms: Kallsyms | None, architecture: arch.Architecture,
                 stacks: set[int], text: set[int]) -> tuple[set[int], int]:
    """Pages found through the kernel's own symbol table (kernel/kallsyms.py), when VMCOREINFO
    has it and its addresses are plausible: the data readers read (STARTUP_DATA), the kernel
    log, the text crash disassembles at start-up and the text the CPU stacks return into with
    its ORC entries, the pid tree and the per-CPU areas; and the pfn where the image's data
    starts (_sdata)."""
    info = vmcore.vmcoreinfo
    assert info is not None  # kernel_memory needs it
    if kallsyms is None:  # the classifier found none it could read
        return set(), 1 << 62
    try:
        symbols = kallsyms.addresses(
            ["__per_cpu_start", "__per_cpu_end", "pcpu_unit_size", "_stext", "_etext", "_sdata", "orc_lookup",
             "__start_orc_unwind_ip", "__start_orc_unwind", *STARTUP_TEXT, *STARTUP_DATA])
    except TranslationError:
        return set(), 1 << 62
    pages: set[int] = set()

    def pfns(start: int, end: int) -> set[int]:
        return kernel.mapped_pfns(start, end, vmcore.page_size)

    text_start, text_end = symbols.get("_stext", ("", 0, 0))[1], symbols.get("_etext", ("", 0, 0))[1]
    for name in STARTUP_TEXT:
        if name in symbols:
            _, start, end = symbols[name]
            pages |= pfns(start, min(end, start + (64 << 10)) + GDB_READ_AHEAD) & text
    if text_start < text_end:  # readers disassemble each function on a stack up to its return address
        page_size = vmcore.page_size
        words = (architecture.code_address(word, info) for pfn in stacks
                 for (word,) in struct.iter_unpack("<Q", vmcore.memory.read(pfn * page_size, page_size)))
        returns = sorted({word for word in words if text_start <= word < text_end})
        for start, address in zip(kallsyms.function_starts(returns), returns):
            pages |= pfns(max(start, address - (64 << 10)), address + GDB_READ_AHEAD) & text
        pages |= _orc_pages(kernel, symbols, text_start, returns, vmcore.page_size)
    try:  # mem_section's roots: every reader finds struct pages through them
        roots = kernel.read(info.symbols["mem_section"], 8 * info.lengths["mem_section"])
        pages |= pfns(info.symbols["mem_section"], info.symbols["mem_section"] + len(roots))
        for (root,) in struct.iter_unpack("<Q", roots):
            if root >= kernel.kernel_space_start:
                pages |= pfns(root, root + 1)
    except (KeyError, TranslationError):
        pass
    for name in STARTUP_DATA:
        if name in symbols:
            # To the next symbol, within 256 B to 64 KiB (crash reads __per_cpu_offset whole:
            # 8 bytes for each of NR_CPUS, 8192 on Debian).
            _, start, following = symbols[name]
            end = min(max(following, start + 256), start + (64 << 10))
            pages |= pfns(start, end)
    try:  # the kernel log whole: crash reads all of its arrays
        for start, end in dmesg.log_ranges(kernel.read, info):
            pages |= pfns(start, end)
    except (dmesg.DmesgError, TranslationError):
        pass
    if "init_pid_ns" in symbols:  # the task list of drgn and crash starts there
        pages |= pids.pid_tree_pages(kernel, symbols["init_pid_ns"][1], vmcore.page_size)
    if "__per_cpu_offset" in symbols and "__per_cpu_end" in symbols:
        size = symbols["__per_cpu_end"][1] - symbols.get("__per_cpu_start", ("", 0, 0))[1]
        if "pcpu_unit_size" in symbols:  # a CPU's whole unit: the static part and the dynamic
            try:
                size = max(size, struct.unpack("<i", kernel.read(symbols["pcpu_unit_size"][1], 4))[0])
            except TranslationError:
                pass
        ncpus = min(vmcore.nr_cpus, max(1, PERCPU_BUDGET_BYTES // max(size, 1)))
        try:
            offsets = struct.unpack(f"<{ncpus}Q", kernel.read(symbols["__per_cpu_offset"][1], 8 * ncpus))
        except TranslationError:
            offsets = ()
        start = symbols.get("__per_cpu_start", ("", 0, 0))[1]
        for offset in offsets:
            if 0 < size <= PERCPU_BUDGET_BYTES:
                pages |= pfns((start + offset) & 0xFFFFFFFFFFFFFFFF, (start + offset + size) & 0xFFFFFFFFFFFFFFFF)
    data_start = 1 << 62
    if "_sdata" in symbols:
        data_start = min(pfns(symbols["_sdata"][1], symbols["_sdata"][1] + 1), default=data_start)
    return pages, data_start


def _orc_pages(kernel: KernelMemory, symbols: dict[str, tuple[str, int, int]], text_start: int,
               returns: list[int], page_size: int) -> set[int]:
    """The pages of the ORC tables an unwinder reads for each of ``returns``: its lookup
    entries, and the ip table and orc entries of the range they give (none without ORC)."""
    try:
        lookup, ips, entries = (symbols[name][1] for name in ("orc_lookup", "__start_orc_unwind_ip",
                                                              "__start_orc_unwind"))
    except KeyError:
        return set()
    pages: set[int] = set()
    for address in returns:
        block = lookup + 4 * ((address - text_start) // ORC_LOOKUP_BLOCK)
        try:
            first, last = struct.unpack("<II", kernel.read(block, 8))
        except TranslationError:
            continue
        pages |= kernel.mapped_pfns(block, block + 8, page_size)
        if first <= last < first + ORC_SEARCH_MAX:
            pages |= kernel.mapped_pfns(ips + 4 * first, ips + 4 * (last + 1), page_size)
            pages |= kernel.mapped_pfns(entries + ORC_ENTRY_SIZE * first, entries + ORC_ENTRY_SIZE * (last + 1),
                                        page_size)
    return pages
