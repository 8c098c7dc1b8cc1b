"""arm64 kernel address translation reads the crashed kernel's own page tables from VMCOREINFO
alone: every page size, VA_BITS and table depth, block mappings, 52-bit physical addresses,
KASLR's kimage_voffset and a randomised PHYS_OFFSET; what it cannot translate it says."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.kernel import arch
from collector.kernel.memory import TranslationError
from collector.source import elf
from collector.source.vmcore import Vmcore
from tests.conftest import run_save
from tests.support.vmcore_factory import SegmentSpec, build_vmcore

# (PAGESIZE, NUMBER(VA_BITS), NUMBER(TCR_EL1_T1SZ) or None, the depth of swapper_pg_dir): the
# depths are makedumpfile's calculate_plat_config table (arch/arm64/Kconfig), the bits it walks
# with the run-time size except with 64 KiB pages (drgn's rule).
CONFIGS = [
    (4096, 39, 25, 3), (4096, 48, 16, 4), (4096, 52, 12, 5), (4096, 52, 16, 4),
    (16384, 36, 28, 2), (16384, 47, 17, 3), (16384, 48, 16, 4), (16384, 52, 12, 4), (16384, 52, 17, 3),
    (65536, 42, 22, 2), (65536, 48, 16, 3), (65536, 52, 12, 3), (65536, 52, 16, 3),
    (4096, 48, None, 4), (65536, 42, None, 2),  # kernels before 5.9 export no TCR_EL1_T1SZ
]
TABLES_PADDR = 0x4000_0000          # where the builder puts its tables (64 KiB aligned)
DATA_PADDR = 0x5000_0000            # one page of known bytes, mapped for the read test
KIMAGE_VOFFSET = 0xFFFF_7FFF_C800_0000  # a KASLR'd image: swapper_pg_dir's vaddr - paddr


@dataclass
class Arm64Tables:
    """A swapper_pg_dir built from the architecture's rules (ARM ARM descriptor formats), and
    the map it was built from: vaddr -> (paddr, size) for each page or block."""

    page_size: int
    walk_bits: int
    levels: int
    tables: dict[int, bytearray] = field(default_factory=dict)  # paddr -> table
    mappings: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.page_shift = self.page_size.bit_length() - 1
        self.index_bits = self.page_shift - 3
        self.top = self._new_table()

    def _new_table(self) -> int:
        paddr = TABLES_PADDR + len(self.tables) * self.page_size
        self.tables[paddr] = bytearray(self.page_size)
        return paddr

    def shift(self, level: int) -> int:
        """Bits below level ``level``'s index (level 1 holds pages)."""
        return self.page_shift + self.index_bits * (level - 1)

    def index(self, vaddr: int, level: int) -> int:
        bits = self.walk_bits - self.shift(level) if level == self.levels else self.index_bits
        return (vaddr >> self.shift(level)) & ((1 << bits) - 1)

    def descriptor(self, paddr: int, kind: int, attributes: int) -> int:
        """paddr in a descriptor: bits [47:PAGE_SHIFT] in place; [51:48] in bits [15:12] with
        64 KiB pages (FEAT_LPA), [49:48] in place and [51:50] in [9:8] with 52-bit 4/16 KiB (LPA2)."""
        low = paddr & 0x0000_FFFF_FFFF_FFFF
        if self.page_shift == 16:
            low |= (paddr >> 48 & 0xF) << 12
        elif self.walk_bits == 52:
            low = paddr & 0x0003_FFFF_FFFF_FFFF | (paddr >> 50 & 0x3) << 8
        return low | kind | attributes

    def entry(self, table: int, index: int) -> int:
        return int.from_bytes(self.tables[table][index * 8:index * 8 + 8], "little")

    def set_entry(self, table: int, index: int, value: int) -> None:
        self.tables[table][index * 8:index * 8 + 8] = value.to_bytes(8, "little")

    def map(self, vaddr: int, paddr: int, level: int, attributes: int, invalid: bool = False) -> bool:
        """Map a page (level 1) or a block; False if it would overlap what is mapped.
        ``invalid``: write a descriptor that maps nothing though it holds an address: valid bit
        clear, or 0b01 at level 1 (reserved there)."""
        table = self.top
        for upper in range(self.levels, level, -1):
            entry = self.entry(table, self.index(vaddr, upper))
            if entry & 3 == 1:
                return False  # inside a block
            if entry == 0:
                child = self._new_table()
                self.set_entry(table, self.index(vaddr, upper), self.descriptor(child, 3, 0))
                table = child
            else:
                table = next(t for t in self.tables if self.descriptor(t, 3, 0) == entry)
        if self.entry(table, self.index(vaddr, level)):
            return False
        kind = (1 if level == 1 else 2) if invalid else 3 if level == 1 else 1
        self.set_entry(table, self.index(vaddr, level), self.descriptor(paddr, kind, attributes))
        if not invalid:
            self.mappings[vaddr] = (paddr, 1 << self.shift(level))
        return True

    def lookup(self, vaddr: int) -> int | None:
        """The builder's own answer: the paddr ``vaddr`` maps to, None if unmapped."""
        for start, (paddr, size) in self.mappings.items():
            if start <= vaddr < start + size:
                return paddr + vaddr - start
        return None


def vmcoreinfo(page_size: int, va_bits: int, t1sz: int | None, extra: str = "") -> str:
    swapper = (TABLES_PADDR + KIMAGE_VOFFSET) & (1 << 64) - 1
    return (f"OSRELEASE=6.1.0-synthetic-arm64\nPAGESIZE={page_size}\nSYMBOL(swapper_pg_dir)={swapper:x}\n"
            f"NUMBER(VA_BITS)={va_bits}\n" + (f"NUMBER(TCR_EL1_T1SZ)={t1sz:#x}\n" if t1sz is not None else "")
            + f"NUMBER(kimage_voffset)={KIMAGE_VOFFSET:#x}\nNUMBER(PHYS_OFFSET)=0xffff966dc0000000\n"
            "KERNELOFFSET=1c00000\nCRASHTIME=1764000000\n" + extra)


def vmcore_of(directory: str, tables: Arm64Tables, info: str, data: bytes = b"") -> str:
    """An aarch64 ELF vmcore holding the tables (and ``data`` at DATA_PADDR)."""
    segments = [SegmentSpec(TABLES_PADDR, b"".join(tables.tables[t] for t in sorted(tables.tables)))]
    if data:
        segments.append(SegmentSpec(DATA_PADDR, data))
    path = os.path.join(directory, "vmcore")
    with open(path, "wb") as f:
        f.write(build_vmcore(segments, info, machine=elf.EM_AARCH64))
    return path


@st.composite
def layouts(draw):
    """A configuration, page tables mapping random pages and blocks, addresses to look up."""
    page_size, va_bits, t1sz, levels = draw(st.sampled_from(CONFIGS))
    walk_bits = va_bits if page_size == 65536 or t1sz is None else 64 - t1sz
    tables = Arm64Tables(page_size, walk_bits, levels)
    rng = random.Random(draw(st.integers(0, 2**32)))
    wide_pa = page_size == 65536 or walk_bits == 52
    # Attribute bits a translation must ignore: AF, nG, PXN/UXN, contiguous, software bits;
    # SH [9:8] only where those bits are not address bits (LPA2).
    attribute_bits = [10, 11, 52, 53, 54, 55, 58] + ([8, 9] if not (walk_bits == 52 and page_size != 65536) else [])
    space = 1 << walk_bits
    # Blocks where the architecture allows them: level 2 (and level 3 with 4 KiB pages).
    block_levels = [lvl for lvl in (2, 3) if lvl < levels and (lvl == 2 or page_size == 4096)]
    unmapped: list[int] = []
    for _ in range(draw(st.integers(1, 24))):
        level = rng.choice([1, 1, *block_levels])
        size = 1 << tables.shift(level)
        vaddr = ((1 << 64) - space + rng.randrange(space)) & ~(size - 1)
        paddr = rng.randrange(1 << (52 if wide_pa else 48)) & ~(size - 1)
        attributes = sum(1 << bit for bit in attribute_bits if rng.random() < 0.5)
        invalid = rng.random() < 0.2
        if tables.map(vaddr, paddr, level, attributes, invalid) and invalid:
            unmapped.append(vaddr + rng.randrange(size))
    mapped = [start + rng.randrange(size) for start, (_, size) in tables.mappings.items()]
    anywhere = [(1 << 64) - space + rng.randrange(space) for _ in range(8)]
    return (page_size, va_bits, t1sz), tables, mapped + unmapped + anywhere


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_kernel_addresses_translate_as_the_tables_map_them_and_unmapped_ones_raise(layout):
    (page_size, va_bits, t1sz), tables, addresses = layout
    with tempfile.TemporaryDirectory() as directory:
        with Vmcore(vmcore_of(directory, tables, vmcoreinfo(page_size, va_bits, t1sz))) as vmcore:
            kernel = arch.kernel_memory(vmcore)
            for vaddr in addresses:
                expected = tables.lookup(vaddr)
                if expected is None:
                    with pytest.raises(TranslationError, match="not mapped"):
                        kernel.translate(vaddr)
                    continue
                start = max(s for s in tables.mappings if s <= vaddr)
                size = tables.mappings[start][1]
                assert kernel.translate(vaddr) == (expected, start + size - vaddr), hex(vaddr)


@pytest.mark.parametrize(("page_size", "va_bits", "t1sz", "levels"), CONFIGS)
def test_reads_through_a_page_give_the_bytes_it_maps_and_user_addresses_are_not_kernel_ones(
        tmp_path, page_size, va_bits, t1sz, levels):
    walk_bits = va_bits if page_size == 65536 or t1sz is None else 64 - t1sz
    tables = Arm64Tables(page_size, walk_bits, levels)
    vaddr = (1 << 64) - (1 << walk_bits) + 0x1234 * page_size  # near the bottom of kernel space
    assert tables.map(vaddr, DATA_PADDR, 1, 1 << 10)
    data = random.Random(page_size).randbytes(page_size)
    with Vmcore(vmcore_of(str(tmp_path), tables, vmcoreinfo(page_size, va_bits, t1sz), data)) as vmcore:
        kernel = arch.kernel_memory(vmcore)
        assert kernel.read(vaddr + 8, 64) == data[8:72]
        # A tagged pointer (top byte not 0xff, KASAN_SW_TAGS) reads the same page.
        assert kernel.read(vaddr & ~(0xFF << 56) | 0x3C << 56, 16) == data[:16]
        with pytest.raises(TranslationError, match="not a kernel address"):
            kernel.translate(0x0000_7FFF_F000_0000)


@pytest.mark.parametrize(("page_size", "va_bits", "t1sz", "levels"), [(4096, 48, 16, 4), (65536, 52, 12, 3)])
def test_kernel_pages_are_the_tables_and_the_image_by_its_mapping(tmp_path, page_size, va_bits, t1sz, levels):
    """Text is executable (PXN clear, read-only too), rodata read-only (AP[2]), data writable; an image page is
    mapped at paddr + kimage_voffset, so a module page beside the image is none of them."""
    from collector.kernel import arm64

    walk_bits = va_bits if page_size == 65536 else 64 - t1sz
    tables = Arm64Tables(page_size, walk_bits, levels)
    swapper = (TABLES_PADDR + KIMAGE_VOFFSET) & (1 << 64) - 1
    pxn, rdonly = 1 << 53, 1 << 7
    image = {"text": (-0x30, rdonly), "rodata": (-0x20, pxn | rdonly), "data": (-0x10, pxn)}
    expected: dict[str, set[int]] = {name: set() for name in image}
    for name, (first, attributes) in image.items():
        for n in range(first, first + 4):
            vaddr = swapper + n * page_size
            assert tables.map(vaddr, (vaddr - KIMAGE_VOFFSET) & (1 << 64) - 1, 1, attributes | 1 << 10)
            expected[name].add(((vaddr - KIMAGE_VOFFSET) & (1 << 64) - 1) // page_size)
    assert tables.map(swapper - 0x100 * page_size, DATA_PADDR, 1, 1 << 10)  # a module's text
    block = 1 << tables.shift(2)
    if KIMAGE_VOFFSET % block == 0:  # rodata in a 2 MiB block (64 KiB pages: KASLR does not align the image to 512 MiB)
        vaddr = (swapper + 0x40000000) & ~(block - 1)
        assert tables.map(vaddr, (vaddr - KIMAGE_VOFFSET) & (1 << 64) - 1, 2, pxn | rdonly)
        expected["rodata"].update(range(((vaddr - KIMAGE_VOFFSET) & (1 << 64) - 1) // page_size,
                                        ((vaddr - KIMAGE_VOFFSET + block) & (1 << 64) - 1) // page_size))
    with Vmcore(vmcore_of(str(tmp_path), tables, vmcoreinfo(page_size, va_bits, t1sz))) as vmcore:
        found = arm64.kernel_pages(arch.kernel_memory(vmcore))
    assert sorted(found.tables) == sorted(t // page_size for t in tables.tables)
    assert (set(found.image_text), set(found.image_read_only), set(found.image_writable)) == (
        expected["text"], expected["rodata"], expected["data"])


# Addresses in a 48-bit kernel's layout since 5.4: in the linear map (its lower half), and in
# vmalloc space away from the image (swapper_pg_dir is at 0xffff800008000000 here).
LINEAR_ADDRESS, VMALLOC_ADDRESS = 0xFFFF_0000_4000_0000, 0xFFFF_8000_1000_0000


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
@pytest.mark.parametrize("where", ["vmalloc", "linear"])
def test_a_cpus_stack_is_the_thread_size_block_around_its_sp_and_a_per_cpu_stack_also_the_thread_size_above(
        tmp_path, page_size, where):
    """THREAD_SIZE is 16 KiB or one page where that is larger. A vmalloc'ed stack (task, IRQ with
    VMAP_STACK) is THREAD_SIZE aligned; a per-CPU one in the linear map (the overflow stack, the IRQ
    stack without VMAP_STACK) is not, and is used from sp up."""
    from collector.kernel import arm64

    levels = {4096: 4, 16384: 4, 65536: 3}[page_size]
    tables = Arm64Tables(page_size, 48, levels)
    thread_size = max(16384, page_size)
    area = VMALLOC_ADDRESS if where == "vmalloc" else LINEAR_ADDRESS
    pages = range(area - 2 * thread_size, area + 3 * thread_size, page_size)  # neighbours on both sides mapped
    for n, vaddr in enumerate(pages):
        assert tables.map(vaddr, DATA_PADDR + n * page_size, 1, 1 << 10)
    sp = area + thread_size - 0x230 if where == "vmalloc" else area + thread_size // 2 + 0x470
    wanted = range(area, area + thread_size, page_size) if where == "vmalloc" else \
        [vaddr for vaddr in pages if area <= vaddr < sp + thread_size]
    with Vmcore(vmcore_of(str(tmp_path), tables, vmcoreinfo(page_size, 48, 16))) as vmcore:
        kernel = arch.kernel_memory(vmcore)
        assert arm64.stack_pages(kernel, sp) == sorted(tables.lookup(vaddr) // page_size for vaddr in wanted)
        assert arm64.stack_pages(kernel, sp & ~(0xFF << 56) | 0x3C << 56) == arm64.stack_pages(kernel, sp)  # tagged
        assert arm64.stack_pages(kernel, area + 64 * thread_size) == []  # unmapped: nothing


@given(st.integers(0, (1 << 47) - 1), st.integers(0, (1 << 16) - 1), st.sampled_from([0xFFFF_0000_0000_0000,
                                                                                       0xFF80_0000_0000_0000]))
def test_a_return_address_signed_by_pointer_authentication_is_the_address_it_returns_to(offset, code, pac_mask):
    """The PAC takes KERNELPACMASK's bits of a kernel address but bit 55, which says the half."""
    from collector.kernel import arm64
    from collector.source.vmcoreinfo import VmcoreInfo

    address = 0xFFFF_8000_0000_0000 | offset
    signed = address & ~pac_mask | (code << 48) & pac_mask | 1 << 55
    info = VmcoreInfo.parse(f"NUMBER(KERNELPACMASK)={pac_mask:#x}\n".encode())
    assert arm64.code_address(signed, info) == address
    assert arm64.code_address(offset, info) == offset  # not a kernel address: as it is
    assert arm64.code_address(signed, VmcoreInfo.parse(b"")) == signed  # a kernel without PAC


def test_phys_offset_of_a_randomised_linear_map_is_negative_and_the_header_carries_it(tmp_path):
    tables = Arm64Tables(4096, 48, 4)
    with Vmcore(vmcore_of(str(tmp_path), tables, vmcoreinfo(4096, 48, 16))) as vmcore:
        # NUMBER(PHYS_OFFSET)=0xffff966dc0000000 is memstart_addr moved below 0.
        assert vmcore.phys_base == 0xFFFF966DC0000000 - (1 << 64)
    path = vmcore_of(str(tmp_path), tables, vmcoreinfo(4096, 48, 16))
    run_save(path, "--output", str(tmp_path / "dump"), "-d", "1", check=True)
    from collector.formats.kdump import KdumpFile

    # crash takes the kdump header's phys_base as arm64's phys_offset, as makedumpfile writes it.
    dump = KdumpFile.open(str(tmp_path / "dump"))
    try:
        assert dump.sub_header.phys_base == 0xFFFF966DC0000000
    finally:
        dump.close()


def test_phys_offset_missing_from_vmcoreinfo_comes_from_the_linear_map_pt_load(tmp_path):
    info = "".join(line + "\n" for line in vmcoreinfo(4096, 48, 16).splitlines() if "PHYS_OFFSET" not in line)
    segments = [SegmentSpec(0x4020_0000, bytes(4096), vaddr=0xFFFF_C6F5_7E40_0000),  # the image: not linear
                SegmentSpec(0x4000_0000, bytes(4096), vaddr=0xFFFF_5973_8000_0000)]  # as kexec writes them
    path = tmp_path / "vmcore"
    path.write_bytes(build_vmcore(segments, info, machine=elf.EM_AARCH64))
    with Vmcore(str(path)) as vmcore:
        # The addresses and NUMBER(PHYS_OFFSET)=0xffffa68cc0000000 of the test bed's Cortex-A57 crash.
        assert vmcore.phys_base == 0xFFFF_A68C_C000_0000 - (1 << 64)


@pytest.mark.parametrize(("drop", "reason"), [
    ("NUMBER(VA_BITS)", "no NUMBER(VA_BITS)"),
    ("NUMBER(kimage_voffset)", "no NUMBER(kimage_voffset)"),
    ("SYMBOL(swapper_pg_dir)", "no SYMBOL(swapper_pg_dir)"),
])
def test_vmcoreinfo_without_what_translation_needs_keeps_every_page_and_says_why_once(tmp_path, drop, reason):
    tables = Arm64Tables(4096, 48, 4)
    assert tables.map(0xFFFF_0000_0000_0000, DATA_PADDR, 1, 0)
    info = "".join(line + "\n" for line in vmcoreinfo(4096, 48, 16).splitlines() if not line.startswith(drop))
    path = vmcore_of(str(tmp_path), tables, info)
    proc = run_save(path, "--output", str(tmp_path / "dump"), "-d", "31")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "struct pages" in line]
    assert len(warnings) == 1 and reason in warnings[0] and "are kept" in warnings[0], proc.stderr
    from collector.formats.kdump import KdumpFile

    dump = KdumpFile.open(str(tmp_path / "dump"))
    try:
        assert dump.read_page(TABLES_PADDR // 4096) == bytes(tables.tables[tables.top])
    finally:
        dump.close()


# Real arm64 crashes (tests/testbed/arm64.py): Debian's 6.1 arm64 kernel, KASLR on ------------

needs_arm64_qemu = pytest.mark.skipif(not (shutil.which("qemu-system-aarch64") and shutil.which("qemu-aarch64")),
                                      reason="qemu-system-arm and qemu-user not installed")
# What these add over the x86_64 real-kernel tests is the arm64 translation, the same Python in
# both passes of ./dev test; the twin scanner's run over them alone took 6.5 minutes.
compiled_pass_only = pytest.mark.skipif(bool(os.environ.get("VMCORE_COLLECTOR_PURE_PYTHON")),
                                        reason="arm64 translation is the same in both passes; run once")


@pytest.fixture(scope="module", params=["max,pauth-impdef=on", "cortex-a57"], ids=["max", "a57-random-linear-map"])
def arm64_vmcore(request):
    """KASLR on for both; the Cortex-A57 crash also has its linear map randomised (PHYS_OFFSET < 0)."""
    from tests.testbed import arm64

    return arm64.get_vmcore(kernel="6.1", cpu=request.param)


def bits(bitmap: bytes, nbits: int) -> set[int]:
    return {pfn for pfn in range(nbits) if bitmap[pfn >> 3] >> (pfn & 7) & 1}


@pytest.mark.realkernel
@needs_arm64_qemu
@compiled_pass_only
@pytest.mark.parametrize("level", [1, 16, 31])
def test_real_arm64_bitmaps_and_phys_base_equal_arm64_makedumpfile(arm64_vmcore, tmp_path, level):
    from collector.formats.kdump import KdumpFile
    from tests.testbed import arm64

    ours_path, theirs_path = tmp_path / "ours", tmp_path / "theirs"
    run_save(str(arm64_vmcore.path), "--output", str(ours_path), "-d", str(level), check=True)
    subprocess.run([*arm64.makedumpfile(), "-c", "-d", str(level), str(arm64_vmcore.path), str(theirs_path)],
                   check=True, capture_output=True)
    ours, theirs = KdumpFile.open(str(ours_path)), KdumpFile.open(str(theirs_path))
    try:
        assert ours.max_mapnr == theirs.max_mapnr
        assert ours.sub_header.phys_base == theirs.sub_header.phys_base  # PHYS_OFFSET, crash's phys_offset
        assert ours.header.machine.rstrip(b"\0") == b"aarch64"
        for name in ("present", "dumpable"):
            a, b = bits(getattr(ours, name), ours.max_mapnr), bits(getattr(theirs, name), theirs.max_mapnr)
            assert a == b, f"{name}: ours only {sorted(map(hex, a - b))[:10]}, theirs {sorted(map(hex, b - a))[:10]}"
        if level == 31:  # struct pages were found: free and cache pages are out
            assert len(bits(ours.dumpable, ours.max_mapnr)) < ours.max_mapnr // 4
    finally:
        ours.close()
        theirs.close()


@pytest.mark.realkernel
@needs_arm64_qemu
@compiled_pass_only
def test_real_arm64_kernel_log_equals_arm64_makedumpfile_line_for_line(arm64_vmcore, tmp_path):
    from tests.testbed import arm64

    subprocess.run([*arm64.makedumpfile(), "--dump-dmesg", str(arm64_vmcore.path), str(tmp_path / "dmesg")],
                   check=True, capture_output=True)
    theirs = (tmp_path / "dmesg").read_text(errors="replace")
    ours = run_save("--dmesg", str(arm64_vmcore.path), "--dmesg-format", "plain", check=True).stdout
    assert arm64_vmcore.marker in ours
    assert ours.splitlines() == theirs.splitlines()


@pytest.mark.realkernel
@needs_arm64_qemu
@compiled_pass_only
def test_real_arm64_filtered_dump_opens_in_drgn_with_the_crashed_kernels_utsname(arm64_vmcore, tmp_path):
    from collector.source.vmcoreinfo import VmcoreInfo
    from tests.support.dumpcheck import drgn_program

    run_save(str(arm64_vmcore.path), "--output", str(tmp_path / "dump"), "-d", "31", check=True)
    with Vmcore(str(arm64_vmcore.path)) as vmcore:
        info = vmcore.vmcoreinfo
        assert isinstance(info, VmcoreInfo)
        assert vmcore.utsname()["release"] == arm64_vmcore.osrelease  # read through kimage_voffset
    prog = drgn_program(str(tmp_path / "dump"))  # drgn's own aarch64 page-table walk
    name = prog.read(info.symbols["init_uts_ns"] + info.offsets["uts_namespace.name"], 65 * 3)
    assert name[130:].split(b"\0")[0].decode() == arm64_vmcore.osrelease


@pytest.mark.realkernel
@needs_arm64_qemu
@compiled_pass_only
def test_real_arm64_crashing_cpus_frame_records_all_lie_in_the_stack_pages_of_its_sp(arm64_vmcore):
    """AAPCS64 frame records from x29 ([fp] the caller's fp, [fp + 8] its return address) up to the
    final one (fp and lr 0, in the pt_regs at the stack's top): every one is in the pages the value
    order sends first for this CPU, and every other one's return address, its pointer
    authentication stripped, is in kernel text."""
    from collector.kernel import arm64, triage
    from collector.kernel.kallsyms import Kallsyms

    with Vmcore(str(arm64_vmcore.path)) as vmcore:
        kernel = arch.kernel_memory(vmcore)
        (note,) = triage.prstatus_notes(vmcore.notes, vmcore.e_machine)
        assert note.registers is not None
        pages = arm64.stack_pages(kernel, note.registers[arm64.STACK_POINTER])
        assert len(pages) == 4  # 16 KiB of 4 KiB pages, all mapped
        text = Kallsyms(kernel, vmcore.vmcoreinfo).addresses(["_stext", "_etext"])
        fp, records = note.registers["x29"], 0
        while fp:
            assert kernel.translate(fp)[0] // 4096 in pages, hex(fp)
            fp, lr = kernel.read_u64(fp), kernel.read_u64(fp + 8)
            returns_to = arm64.code_address(lr, vmcore.vmcoreinfo)  # PAC-signed on CPU max
            assert not fp or text["_stext"][1] <= returns_to < text["_etext"][1], hex(returns_to)
            records += 1
    assert records >= 10  # __crash_kexec up to the syscall's entry from EL0
