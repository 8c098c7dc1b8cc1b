"""The vmcores the benchmark runs on: real ones from the QEMU test bed, synthetic sparse ones.

Synthetic vmcores carry no VMCOREINFO note: Debian's makedumpfile 1.7.2 refuses a vmcore whose
VMCOREINFO lacks kernel symbols ("check_release: Can't get the symbol of system_utsname") and
runs without kernel data only when there is no VMCOREINFO at all and the dump level is 0 or 1.
vmcore-save treats them exactly as it treats tests/support/vmcore_factory's minimal VMCOREINFO (no
SECTION_SIZE_BITS, so no struct pages): -d 31 excludes zero pages only.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from collector.source import elf
from collector.source.vmcore import Vmcore
from tests.support.vmcore_factory import PAGE_SIZE, build_notes

GIB = 1 << 30
CACHE_DIR = Path(__file__).resolve().parent / ".cache"

# One run of CONTENT_PAGES pages of real memory every PERIOD_PAGES pages: 1/16 of the pages are
# non-zero, in 64 KiB runs (memory in use comes in runs, not in isolated pages); the rest are
# file holes, which read as zeros.
CONTENT_PAGES = 16
PERIOD_PAGES = 256
# Distinct non-zero pages taken from the real vmcore and cycled through: 32 MiB, far more than
# any compressor's window, so the cycling does not make the content look more compressible.
CONTENT_POOL_PAGES = 8192
# Bump when the layout changes: cached synthetic vmcores with another version are rebuilt.
SYNTHETIC_VERSION = 1


@dataclass(frozen=True)
class BenchInput:
    name: str          # the row label, e.g. "6.1 4 GiB" (kernel series, guest RAM) or "synthetic 1 GiB"
    path: Path
    kind: str          # "real", "synthetic" or "arm64" (contenders.REAL, SYNTHETIC, ARM64)
    memory_bytes: int  # sum of the PT_LOADs' p_memsz: the guest's RAM as the vmcore describes it
    file_bytes: int    # st_size: what `cat` reads, and the base of every MB/s figure
    exercises: str     # one line for RESULTS.md


def real_input(kernel: str, mem_mib: int) -> BenchInput:
    """The cached vmcore of a crashed (kdump) guest of this Debian kernel series that ran the
    workload; a missing one is made by crashing a guest in QEMU (minutes)."""
    from tests.testbed import get_vmcore  # only here: it pulls in the QEMU test bed

    vmcore = get_vmcore(kernel=kernel, mem_mib=mem_mib, workload=True, boot="pvh", kexec="load", method="kdump")
    exercises = (f"a real /proc/vmcore of Debian {vmcore.path.parent.name.split('-amd64')[0]}: -d 31 reads "
                 "struct pages through the kernel's page tables and drops cache, user and free pages; "
                 "-d 1 only zero pages")
    return BenchInput(f"{kernel} {_gib_label(mem_mib << 20)}", vmcore.path, "real", _memory_bytes(vmcore.path),
                      vmcore.path.stat().st_size, exercises)


def arm64_input(kernel: str = "6.1") -> BenchInput:
    """The cached vmcore of the test bed's arm64 guest (tests/testbed/arm64.py: QEMU virt, CPU
    max, 1 GiB, KASLR on); a missing one is made by crashing a guest in QEMU (about a minute)."""
    from tests.testbed import arm64  # only here: it pulls in the QEMU test bed

    vmcore = arm64.get_vmcore(kernel=kernel)
    memory = _memory_bytes(vmcore.path)  # the image's PT_LOAD lies inside the linear map's: counted twice
    exercises = (f"a real /proc/vmcore of Debian {vmcore.osrelease} (issue 15): -d 31 reads struct pages "
                 "through arm64's page tables (4 KiB pages, 48-bit VA, KASLR); -d 1 only zero pages")
    return BenchInput(f"arm64 {kernel} {_gib_label(vmcore.mem_mib << 20)}", vmcore.path, "arm64", memory,
                      vmcore.path.stat().st_size, exercises)


def synthetic_input(memory_bytes: int, content_source: Path, cache_dir: Path = CACHE_DIR) -> BenchInput:
    """A sparse synthetic vmcore of ``memory_bytes`` (one PT_LOAD), built once and cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"synthetic-{memory_bytes >> 20}M.vmcore"
    stamp = path.with_suffix(".json")
    wanted = {"version": SYNTHETIC_VERSION, "memory_bytes": memory_bytes, "content_source": str(content_source)}
    if not (path.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted):
        stamp.unlink(missing_ok=True)
        _write_synthetic(path, memory_bytes, list(_nonzero_pages(content_source, CONTENT_POOL_PAGES)))
        stamp.write_text(json.dumps(wanted) + "\n")
    exercises = (f"synthetic, one PT_LOAD, {CONTENT_PAGES} pages of real memory every {PERIOD_PAGES}, the "
                 "rest file holes; no VMCOREINFO, so every dump level is the zero/copy path only")
    return BenchInput(f"synthetic {_gib_label(memory_bytes)}", path, "synthetic", memory_bytes,
                      path.stat().st_size, exercises)


def _write_synthetic(path: Path, memory_bytes: int, pool: list[bytes]) -> None:
    """ELF header, PT_NOTE (NT_PRSTATUS of 2 CPUs), one PT_LOAD at physical 0; data written
    with seek + write so the zero pages stay holes and the file takes ~1/16 of its size."""
    notes = build_notes(nr_cpus=2, vmcoreinfo=None)
    notes_offset = elf.ELF64_EHDR.size + 2 * elf.ELF64_PHDR.size
    data_offset = -(-(notes_offset + len(notes)) // PAGE_SIZE) * PAGE_SIZE
    ehdr = elf.ELF64_EHDR.build(
        e_ident=elf.ELF_MAGIC + bytes([elf.ELFCLASS64, elf.ELFDATA2LSB, 1]) + bytes(9),
        e_type=elf.ET_CORE, e_machine=elf.EM_X86_64, e_version=1, e_entry=0, e_phoff=elf.ELF64_EHDR.size,
        e_shoff=0, e_flags=0, e_ehsize=elf.ELF64_EHDR.size, e_phentsize=elf.ELF64_PHDR.size, e_phnum=2,
        e_shentsize=0, e_shnum=0, e_shstrndx=0)
    note_phdr = elf.ELF64_PHDR.build(p_type=elf.PT_NOTE, p_flags=0, p_offset=notes_offset, p_vaddr=0,
                                     p_paddr=0, p_filesz=len(notes), p_memsz=len(notes), p_align=0)
    load_phdr = elf.ELF64_PHDR.build(p_type=elf.PT_LOAD, p_flags=7, p_offset=data_offset,
                                     p_vaddr=0xffff888000000000, p_paddr=0, p_filesz=memory_bytes,
                                     p_memsz=memory_bytes, p_align=0)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as f:
        f.write(ehdr + note_phdr + load_phdr + notes)
        f.truncate(data_offset + memory_bytes)
        next_page = 0
        for first in range(0, memory_bytes // PAGE_SIZE, PERIOD_PAGES):
            run = b"".join(pool[(next_page + k) % len(pool)] for k in range(CONTENT_PAGES))
            next_page += CONTENT_PAGES
            f.seek(data_offset + first * PAGE_SIZE)
            f.write(run)
    partial.rename(path)


def _nonzero_pages(vmcore_path: Path, limit: int) -> Iterator[bytes]:
    """Up to ``limit`` non-zero pages of a real vmcore, in file order."""
    zero_page = bytes(PAGE_SIZE)
    found = 0
    with open(vmcore_path, "rb") as f:
        f.seek(_first_load_offset(vmcore_path))
        while found < limit and (chunk := f.read(256 * PAGE_SIZE)):
            for start in range(0, len(chunk) - PAGE_SIZE + 1, PAGE_SIZE):
                page = chunk[start:start + PAGE_SIZE]
                if page != zero_page:
                    found += 1
                    yield page
                    if found == limit:
                        return


def _first_load_offset(vmcore_path: Path) -> int:
    with Vmcore(str(vmcore_path)) as vmcore:
        return min(segment.offset for segment in vmcore.segments)


def _memory_bytes(vmcore_path: Path) -> int:
    with Vmcore(str(vmcore_path)) as vmcore:
        return sum(segment.memsz for segment in vmcore.segments)


def _gib_label(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size >> 20} MiB"


def warm(bench_input: BenchInput) -> None:
    """Bring the input into the page cache before a timed run: `cat > /dev/null` for a real
    vmcore; for a sparse synthetic one only its data extents (reading the holes would fill the
    page cache with up to 64 GiB of zeros and push out everything else)."""
    if bench_input.kind != "synthetic":
        subprocess.run(["cat", str(bench_input.path)], stdout=subprocess.DEVNULL, check=True)
        return
    with open(bench_input.path, "rb", buffering=0) as f:
        fd, offset, end = f.fileno(), 0, bench_input.file_bytes
        buffer = bytearray(8 << 20)
        while offset < end:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                return
            hole = os.lseek(fd, offset, os.SEEK_HOLE)
            while offset < hole:
                read = os.preadv(fd, [memoryview(buffer)[:min(len(buffer), hole - offset)]], offset)
                offset = offset + read if read else hole  # 0: the file ended under us


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize
