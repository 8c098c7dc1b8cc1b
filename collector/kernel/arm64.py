"""arm64 (aarch64): where the kernel image sits and how the crashed kernel's page tables translate.

Everything comes from VMCOREINFO: translation walks swapper_pg_dir, found at its physical
address ``SYMBOL(swapper_pg_dir) - NUMBER(kimage_voffset)``, for every kernel address (image,
linear map, vmemmap, vmalloc), as drgn does (libdrgn/arch_aarch64.c). The walk does not take the
PT_LOADs' p_vaddr: kexec-tools computes those from /proc/kallsyms, wrong on kernels without
CONFIG_KALLSYMS_ALL (../shared/notes/arm64-kdump.md).

Kernel changes this depends on, cited as drgn does (Linux commit, title, first release):
- 20a166243328 ("arm64: kdump: add VMCOREINFO's for user-space tools") (v4.12): NUMBER(VA_BITS),
  NUMBER(kimage_voffset), NUMBER(PHYS_OFFSET). Older kernels are not translated (pages kept).
- c031a4213c11 ("arm64: kaslr: randomize the linear region") (v4.6): memstart_addr, that is
  PHYS_OFFSET, may be moved below 0; VMCOREINFO prints it with %llx, a huge unsigned number.
- 14c127c957c1 ("arm64: mm: Flip kernel VA space") (v5.4): the linear map moved from the upper
  to the lower half of the kernel's range.
- b6d00d47e81a ("arm64: mm: Introduce 52-bit Kernel VAs") (v5.4): VA_BITS is the configured
  size, possibly more than the size used at run time; bbdbc11804ff ("arm64/crash_core: Export
  TCR_EL1.T1SZ in vmcoreinfo") (v5.9) gives the run-time size, 64 - T1SZ.
- c812026c54cf ("arm64: mm: Logic to make offset_ttbr1 conditional") (v5.4): with 64 KiB pages
  and 52-bit VA_BITS on 48-bit hardware, swapper_pg_dir stays laid out for VA_BITS.
- 0dd4f60a2c76 ("arm64: mm: Add support for folding PUDs at runtime") (v6.9): with 4 or 16 KiB
  pages the 52-bit fallback uses one level fewer, so the walk takes the run-time size;
  352b0395b505 ("arm64: Enable 52-bit virtual addressing for 4k and 16k granule configs") (v6.9):
  there, 52-bit VA implies 52-bit PA (FEAT_LPA2 descriptors).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache

from ..source.elf import Segment
from ..source.vmcoreinfo import VmcoreInfo
from .memory import KernelMemory, MemoryImage, TranslationError
from .x86_64 import KernelPages

U64_MASK = (1 << 64) - 1
PAGE_SHIFTS = (12, 14, 16)  # 4, 16 and 64 KiB pages
MAX_VA_BITS = 52
# Descriptor bits [1:0]: 0b11 is a table (a page at the last level), 0b01 a block above it.
DESC_TYPE_MASK = 0x3
DESC_TABLE_OR_PAGE = 0x3
DESC_BLOCK = 0x1
_U64 = struct.Struct("<Q")


def _signed(value: int) -> int:
    """A 64-bit VMCOREINFO number (printed with %llx) as the kernel's s64 (PHYS_OFFSET)."""
    value &= U64_MASK
    return value - (1 << 64) if value >> 63 else value


def untagged(vaddr: int) -> int:
    """Top-byte-ignore: a tagged pointer (KASAN_SW_TAGS) is its address with bits 63:56 = bit 55."""
    return vaddr & 0x00FFFFFFFFFFFFFF | (0xFF << 56 if vaddr >> 55 & 1 else 0)


def _va_bits_and_page_shift(info: VmcoreInfo) -> tuple[int, int, int]:
    """(configured VA_BITS, the size swapper_pg_dir is walked with, PAGE_SHIFT), or
    TranslationError naming the VMCOREINFO line that is missing or implausible."""
    page_shift = (info.page_size or 0).bit_length() - 1
    if page_shift not in PAGE_SHIFTS or info.page_size != 1 << page_shift:
        raise TranslationError(f"VMCOREINFO's PAGESIZE={info.page_size} is not an arm64 page size")
    va_bits = info.numbers.get("VA_BITS")
    if va_bits is None:
        raise TranslationError("VMCOREINFO has no NUMBER(VA_BITS) (an arm64 kernel before 4.12?)")
    t1sz = info.numbers.get("TCR_EL1_T1SZ")
    # drgn's rule: 64 KiB pages walk with VA_BITS (c812026c54cf), others with 64 - T1SZ (0dd4f60a2c76).
    walk_bits = va_bits if page_shift == 16 or not t1sz else 64 - t1sz
    for bits, key in ((va_bits, "NUMBER(VA_BITS)"), (walk_bits, "NUMBER(TCR_EL1_T1SZ)")):
        if not page_shift < bits <= MAX_VA_BITS:
            raise TranslationError(f"VMCOREINFO's {key} gives an implausible {bits}-bit address space")
    return va_bits, walk_bits, page_shift


def linear_map(info: VmcoreInfo) -> range:
    """The linear map's addresses (paddr = vaddr - PAGE_OFFSET + PHYS_OFFSET there), as
    makedumpfile's get_page_offset_arm64 finds PAGE_OFFSET; the layout is told apart by where
    swapper_pg_dir (in the image) lies, where makedumpfile takes _stext (VMCOREINFO has it only
    since 6.0)."""
    va_bits, _, _ = _va_bits_and_page_shift(info)
    actual = 64 - info.numbers["TCR_EL1_T1SZ"] if info.numbers.get("TCR_EL1_T1SZ") else va_bits
    image = info.symbols.get("swapper_pg_dir")
    if image is None:
        raise TranslationError("VMCOREINFO has no SYMBOL(swapper_pg_dir)")
    # Before 5.4 the image lay in the lower half of the kernel's range, below the linear map;
    # since 14c127c957c1 it lies in the upper half, above it.
    if image >= (-(1 << (min(va_bits, 48) - 1))) & U64_MASK:
        start = (-(1 << actual)) & U64_MASK
        return range(start, start + (1 << (actual - 1)))
    return range((-(1 << (actual - 1))) & U64_MASK, U64_MASK + 1)


def kernel_symbol_paddr(vaddr: int, phys_base: int, info: VmcoreInfo | None) -> int | None:
    """Physical address of a kernel-image symbol: ``vaddr - kimage_voffset`` (the image is
    mapped apart from the linear map since Linux 4.6); None without NUMBER(kimage_voffset) or for
    an address in the linear map (SYMBOL(mem_section) is one). ``phys_base`` (PHYS_OFFSET) is
    not needed."""
    voffset = info.numbers.get("kimage_voffset") if info else None
    if info is None or voffset is None:
        return None
    try:
        if vaddr & U64_MASK in linear_map(info):
            return None
    except TranslationError:
        return None
    return (vaddr - voffset) & U64_MASK


def phys_base_of(segments: Sequence[Segment], info: VmcoreInfo | None) -> int:
    """PHYS_OFFSET, what the kdump header's phys_base holds on arm64 (makedumpfile writes it;
    crash reads it back as phys_offset): NUMBER(PHYS_OFFSET) as signed, else (a damaged
    VMCOREINFO: the kernel writes it beside VA_BITS) from the first PT_LOAD in the linear map, as
    makedumpfile's get_phys_base_arm64 does, else 0."""
    if info is None:
        return 0
    if "PHYS_OFFSET" in info.numbers:
        return _signed(info.numbers["PHYS_OFFSET"])
    try:
        linear = linear_map(info)
    except TranslationError:
        return 0
    for seg in segments:
        if seg.vaddr in linear:
            return _signed(seg.paddr - (seg.vaddr - linear.start))
    return 0


def vmcoreinfo_repairs(info: VmcoreInfo) -> list[tuple[str, str, str]]:
    """Nothing to restore on arm64: swapper_pg_dir has no second name there."""
    return []


class PageTables(KernelMemory):
    """Reads the crashed kernel's virtual addresses through swapper_pg_dir (2 to 5 levels,
    block mappings at any level above the last, 48- and 52-bit physical addresses)."""

    def __init__(self, image: MemoryImage, info: VmcoreInfo) -> None:
        _, walk_bits, page_shift = _va_bits_and_page_shift(info)
        top = info.symbols.get("swapper_pg_dir")
        voffset = info.numbers.get("kimage_voffset")
        if top is None:
            raise TranslationError("VMCOREINFO has no SYMBOL(swapper_pg_dir)")
        if voffset is None:
            raise TranslationError("VMCOREINFO has no NUMBER(kimage_voffset)")
        self.memory = image.memory
        self.page_shift = page_shift
        self.walk_bits = walk_bits
        # The kernel's half (TTBR1) of the address space swapper_pg_dir covers.
        self.kernel_space_start = (-(1 << walk_bits)) & U64_MASK
        self.swapper_vaddr, self.kimage_voffset = top, voffset & U64_MASK
        self.linear = linear_map(info)
        self.top_table = (top - voffset) & U64_MASK
        index_bits = page_shift - 3  # 8-byte descriptors, one page per table
        self.levels = -(-(walk_bits - page_shift) // index_bits)
        # (shift, index mask) from the top level down; the top table indexes what bits remain.
        self.steps = tuple((page_shift + index_bits * (level - 1),
                            (1 << (walk_bits - page_shift - index_bits * (level - 1)
                                   if level == self.levels else index_bits)) - 1)
                           for level in range(self.levels, 0, -1))
        # Output address bits [47:PAGE_SHIFT] in place; bits [51:48] as drgn finds them: with
        # 64 KiB pages in descriptor bits [15:12] (FEAT_LPA, always 0 with 48-bit PAs), with
        # 4/16 KiB pages and 52-bit VA (FEAT_LPA2, 352b0395b505) [49:48] in place, [51:50] in [9:8].
        self.low_mask = 0x0000FFFFFFFFFFFF & ~((1 << page_shift) - 1)
        self.high_mask, self.high_shift = 0, 0
        if page_shift == 16:
            self.high_mask, self.high_shift = 0xF000, 36
        elif walk_bits == 52:
            self.low_mask |= 0x0003000000000000
            self.high_mask, self.high_shift = 0x300, 42
        # Walks repeat the upper levels' entries; one cache per instance, dropped with it.
        self._entry = lru_cache(maxsize=4096)(self._read_entry)

    def _read_entry(self, table: int, index: int) -> int:
        return int(_U64.unpack(self.memory.read(table + index * 8, 8))[0])

    def output_address(self, entry: int) -> int:
        return (entry & self.low_mask) | (entry & self.high_mask) << self.high_shift

    def translate(self, vaddr: int) -> tuple[int, int]:
        address = untagged(vaddr)
        if address < self.kernel_space_start:
            raise TranslationError(f"{vaddr:#x} is not a kernel address")
        table = self.top_table
        for depth, (shift, index_mask) in enumerate(self.steps):
            entry = self._entry(table, (address >> shift) & index_mask)
            kind = entry & DESC_TYPE_MASK
            last = depth + 1 == self.levels
            if kind == DESC_TABLE_OR_PAGE and not last:
                table = self.output_address(entry)
                continue
            if kind != (DESC_TABLE_OR_PAGE if last else DESC_BLOCK):
                raise TranslationError(f"{vaddr:#x} is not mapped")
            size = 1 << shift
            offset = address & (size - 1)
            return (self.output_address(entry) & ~(size - 1)) + offset, size - offset
        raise AssertionError("unreachable: the last level always returns")


# What a dump cut short needs first (scan/value.py) --------------------------------------------

PTE_RDONLY = 1 << 7  # AP[2]: read-only at EL1
PTE_PXN = 1 << 53    # not executable at EL1
# The image lies within this distance of swapper_pg_dir (in its data): the last-level tables
# read for image pages; others count as tables only (a linear map of 4 KiB pages has many).
IMAGE_REACH = 1 << 29
# THREAD_SIZE (arch/arm64/include/asm/memory.h): 1 << MIN_THREAD_SHIFT (14), or PAGE_SHIFT where
# that is larger and CONFIG_VMAP_STACK wants whole pages (without VMAP_STACK a 16 KiB stack sits
# inside one 64 KiB page: the same pages). KASAN doubles it; VMCOREINFO does not say KASAN, so on
# such a kernel the half of a stack away from its pointer comes in a later class, not first.
MIN_THREAD_SIZE = 1 << 14
# The NT_PRSTATUS register (kernel/triage.py's names for struct user_pt_regs) a CPU's stack is found by.
STACK_POINTER = "sp"


def kernel_pages(tables: KernelMemory) -> KernelPages:
    """swapper_pg_dir's table pages, and the kernel image's pages by how the kernel maps them
    (CONFIG_STRICT_KERNEL_RWX: text executable, rodata read-only, data and bss writable). An
    image page is one mapped at ``paddr + kimage_voffset``: modules and vmalloc near the image
    are mapped elsewhere in physical memory."""
    if not isinstance(tables, PageTables):
        raise TranslationError("not arm64 page tables")
    found = KernelPages()
    page_shift = tables.page_shift
    near = range(tables.swapper_vaddr - IMAGE_REACH, tables.swapper_vaddr + IMAGE_REACH)

    def walk(table: int, depth: int, vaddr: int) -> None:
        found.tables.append(table >> page_shift)
        shift, index_mask = tables.steps[depth]
        last = depth + 1 == tables.levels
        span = (index_mask + 1) << shift
        if last and (vaddr + span <= near.start or vaddr >= near.stop):
            return
        count = index_mask + 1
        for index, entry in enumerate(struct.unpack(f"<{count}Q", tables.memory.read(table, count * 8))):
            kind = entry & DESC_TYPE_MASK
            address = vaddr | index << shift
            if kind == DESC_TABLE_OR_PAGE and not last:
                walk(tables.output_address(entry), depth + 1, address)
            elif kind == (DESC_TABLE_OR_PAGE if last else DESC_BLOCK):
                base = tables.output_address(entry) & ~((1 << shift) - 1)
                if (address - base) & U64_MASK != tables.kimage_voffset:
                    continue
                pages = range(base >> page_shift, (base + (1 << shift)) >> page_shift)
                # Text is read-only too: PXN tells it apart.
                (found.image_text if not entry & PTE_PXN else found.image_read_only if entry & PTE_RDONLY
                 else found.image_writable).extend(pages)

    walk(tables.top_table, 0, tables.kernel_space_start)
    return found


def code_address(word: int, info: VmcoreInfo) -> int:
    """A code address as a stack holds it, without its pointer authentication code: a kernel
    return address signed by PAC (CONFIG_ARM64_PTR_AUTH_KERNEL) has NUMBER(KERNELPACMASK)'s bits
    replaced by the code; bit 55 says it is a kernel address, whose bits there are all ones
    (the kernel's ptrauth_strip_kernel_insn_pac). Measured on the test bed's CPU max crash: 48 of
    the 51 return addresses on the crashing CPU's stack are signed."""
    return word | info.numbers.get("KERNELPACMASK", 0) if word >> 55 & 1 else word


def stack_pages(tables: KernelMemory, stack_pointer: int) -> list[int]:
    """The pfns of the stack ``stack_pointer`` points into that are mapped: the THREAD_SIZE block
    holding it (a task's stack; with VMAP_STACK also the IRQ and SDEI stacks, vmalloc'ed
    THREAD_ALIGN-aligned), and, where it lies in the linear map, the THREAD_SIZE above it too:
    the per-CPU stacks there (the overflow stack, the IRQ stack without VMAP_STACK) are arrays
    aligned to 16 bytes, not to their size, and a stack's used part lies above its pointer."""
    if not isinstance(tables, PageTables):
        raise TranslationError("not arm64 page tables")
    page_size = 1 << tables.page_shift
    thread_size = max(MIN_THREAD_SIZE, page_size)
    pointer = untagged(stack_pointer)
    base = pointer & ~(thread_size - 1)
    pfns = tables.mapped_pfns(base, base + thread_size, page_size)
    if pointer in tables.linear:
        pfns |= tables.mapped_pfns(pointer, min(pointer + thread_size, tables.linear.stop), page_size)
    return sorted(pfns)
