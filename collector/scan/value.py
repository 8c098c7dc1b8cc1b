"""The order in which a dump's page data goes out: what a dump cut short needs most, first.

A kdump file's page data need not follow pfn order: each page_desc holds the offset of its
page's data. The bitmaps and the descriptor table stay exactly where readers expect them; only
the data is sent in order of value, so that a dump cut short (full target, lost link, a deadline)
still holds what an analyst reaches for first. The classes, in the order they are written:

1. page tables, stacks, per-CPU data: the kernel half's page-table pages (every read of the dump
   goes through them), the THREAD_SIZE stack around each CPU's stack pointer (NT_PRSTATUS),
   mem_section's roots, and what the kernel's own kallsyms names: ro_after_init data, the per-CPU
   units, and what crash reads while it starts (STARTUP_TEXT, STARTUP_DATA) or the stacks
   return into;
2. kernel data: the image's writable pages (data, bss), and read-only pages after _sdata;
3. task structs: the slabs of the task_struct cache and of what readers follow from a task
   (signal, sighand, mm, files, fs, cred; kernel/slab.py finds them by struct slab's cache);
4. early-boot memory: the top of each memory node;
5. the other slab pages (struct page says so): pids, inodes, most of what commands list;
6. rodata, from its end down;
7. kernel text (readers also have it from the debug vmlinux);
8. every other kept page, in pfn order: the classes before it already hold what the readers
   need (measured: the same cuts answer with it in pfn order or from the top down), and pfn
   order reads a vmcore file front to back.

Measured with drgn and crash 8.0.2 on cut dumps of the test bed's Debian 6.1 1 GiB crash: the
README's "Dumps cut short" has the table, tests/test_value_order.py the proof.

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

from ..kernel import arch, pids, triage
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
# gdb_readmem_callback", "do not match!"; without the last ones it warns.
STARTUP_TEXT = ("sys_open", "sys_fork", "sys_read", "__x64_sys_open", "__x64_sys_fork", "__x64_sys_read",
                "do_futex", "do_fork", "_do_fork", "sys_write", "vfs_read", "__schedule", "schedule",
                "thread_return", "common_interrupt", "asm_common_interrupt")
STARTUP_DATA = ("linux_banner", "lookup_num_blocks", "pageflag_names", "task_state_array")
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


def page_order(vmcore: Vmcore) -> list[PageClass]:
    """The classes for this vmcore. Without page tables (no VMCOREINFO, another architecture)
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
        named, data_start = _named_pages(vmcore, kernel, architecture, stacks, set(found.image_text))
        crash_state = stacks | set(found.tables) | named
        node_tops = _node_tops(vmcore, kernel)
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
            # Read-only pages among data and bss (the IDT, made read-only after boot) are data.
            PageClass("kernel data", claim([*found.image_writable,
                                            *(pfn for pfn in found.image_read_only if pfn >= data_start)])),
            PageClass("task structs", first_slab=True),
            PageClass("early-boot memory", claim(pfn for top in node_tops for pfn in top)),
            PageClass("slab", slab=True),
            PageClass("kernel rodata", claim(found.image_read_only), piece_pfns=RODATA_PIECE_PFNS),
            PageClass("kernel text", claim(found.image_text)),
            PageClass("rest", rest=True)]


def _node_tops(vmcore: Vmcore, kernel: KernelMemory) -> list[range]:
    """The highest NODE_TOP_BYTES (at most 1/16) of each online memory node, from VMCOREINFO's
    node_data, node_online_map and pglist_data offsets; none if they are missing."""
    info = vmcore.vmcoreinfo
    assert info is not None
    try:
        mask_size = info.sizes["nodemask_t"]
        start_offset = info.offsets["pglist_data.node_start_pfn"]
        spanned_offset = info.offsets["pglist_data.node_spanned_pages"]
        online = int.from_bytes(kernel.read(info.symbols["node_online_map"], mask_size), "little")
        node_data = info.symbols["node_data"]
    except (KeyError, TranslationError):
        return []
    top_pages = NODE_TOP_BYTES // vmcore.page_size
    tops = []
    for node in range(min(mask_size * 8, MAX_NODES)):
        if not online >> node & 1:
            continue
        try:
            pgdat = kernel.read_u64(node_data + 8 * node)
            start = kernel.read_u64(pgdat + start_offset)
            spanned = kernel.read_u64(pgdat + spanned_offset)
        except TranslationError:
            continue
        end = start + spanned
        if 0 < spanned and end <= vmcore.memory.max_mapnr:
            tops.append(range(max(start, end - min(top_pages, spanned // 16)), end))
    return tops


def _named_pages(vmcore: Vmcore, kernel: KernelMemory, architecture: arch.Architecture, stacks: set[int],
                 text: set[int]) -> tuple[set[int], int]:
    """Pages found through the kernel's own symbol table (kernel/kallsyms.py), when VMCOREINFO
    has it and its addresses are plausible: the ro_after_init data (__per_cpu_offset and the
    like), the text crash disassembles at start-up and the text the CPU stacks return into, and
    the per-CPU areas; and the pfn where the image's data starts (_sdata)."""
    info = vmcore.vmcoreinfo
    assert info is not None  # kernel_memory needs it
    try:
        kallsyms = Kallsyms(kernel, info)
        symbols = kallsyms.addresses(
            ["__start_ro_after_init", "__end_ro_after_init", "__per_cpu_offset", "__per_cpu_start",
             "__per_cpu_end", "pcpu_unit_size", "_stext", "_etext", "_sdata", "init_pid_ns", *STARTUP_TEXT,
             *STARTUP_DATA])
    except TranslationError:  # none, or one whose addresses do not decode (kernel/kallsyms.py)
        return set(), 1 << 62
    pages: set[int] = set()

    def pfns(start: int, end: int) -> set[int]:
        return kernel.mapped_pfns(start, end, vmcore.page_size)

    text_start, text_end = symbols.get("_stext", ("", 0, 0))[1], symbols.get("_etext", ("", 0, 0))[1]
    for name in STARTUP_TEXT:
        if name in symbols:
            _, start, end = symbols[name]
            pages |= pfns(start, min(end, start + (64 << 10)) + GDB_READ_AHEAD) & text
    if "__start_ro_after_init" in symbols and "__end_ro_after_init" in symbols:
        pages |= pfns(symbols["__start_ro_after_init"][1], symbols["__end_ro_after_init"][1])
    if text_start < text_end:  # readers disassemble each function on a stack up to its return address
        page_size = vmcore.page_size
        words = (architecture.code_address(word, info) for pfn in stacks
                 for (word,) in struct.iter_unpack("<Q", vmcore.memory.read(pfn * page_size, page_size)))
        returns = sorted({word for word in words if text_start <= word < text_end})
        for start, address in zip(kallsyms.function_starts(returns), returns):
            pages |= pfns(max(start, address - (64 << 10)), address + GDB_READ_AHEAD) & text
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
            _, start, following = symbols[name]  # to the next symbol, within 256 B to 16 KiB
            end = min(max(following, start + 256), start + (16 << 10))
            pages |= pfns(start, end)
            if name == "pageflag_names":
                try:
                    table = kernel.read(start, (end - start) // 16 * 16)
                except TranslationError:
                    continue
                for _, string in struct.iter_unpack("<QQ", table):
                    if string >= kernel.kernel_space_start:
                        pages |= pfns(string, string + 32)
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
