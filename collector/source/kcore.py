"""The running kernel's memory through /proc/kcore, read as a vmcore (``vmcore-collector
estimate``, as ``makedumpfile --mem-usage /proc/kcore``).

/proc/kcore is an ELF core of the running kernel (fs/proc/kcore.c): its PT_LOADs are at kernel
virtual addresses, and p_paddr is the physical address only for RAM (the direct map) and the
kernel text; vmalloc, modules and the vmemmap have p_paddr -1. Those are left out: struct
pages are read as in a vmcore, through the kernel's page tables in physical memory. VMCOREINFO
is a note of /proc/kcore since Linux 4.19 (23c85094fe18, "proc/kcore: add vmcoreinfo note to
/proc/kcore"), which makedumpfile also reads since 1.6.9 (d8b701796f04); an older kernel gives
its physical address and size in /sys/kernel/vmcoreinfo, read here through the RAM segments.
Reading /proc/kcore needs root (CAP_SYS_RAWIO) and no kernel lockdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from . import elf
from .elf import Segment
from .vmcore import Vmcore
from .vmcoreinfo import VmcoreInfo

KCORE = "/proc/kcore"
VMCOREINFO_SYSFS = "/sys/kernel/vmcoreinfo"
NO_PADDR = (1 << 64) - 1  # p_paddr of a PT_LOAD that is not physical memory


class Kcore(Vmcore):
    """/proc/kcore (or a vmcore, whose PT_LOADs are all physical) as a Vmcore."""

    def __init__(self, path: str = KCORE, vmcoreinfo_sysfs: str = VMCOREINFO_SYSFS,
                 excluded: Sequence[tuple[int, int]] = ()) -> None:
        """``excluded``: physical ranges [start, end) left out, as the crashkernel reservation,
        which a vmcore never holds (kexec leaves it out of the crashed kernel's ELF header)."""
        self._excluded = sorted(excluded)
        try:
            super().__init__(path)
        except InputError as e:
            if "Permission denied" in str(e) or "Operation not permitted" in str(e):
                raise InputError(f"{e}: run as root (reading the running kernel's memory needs CAP_SYS_RAWIO; "
                                 "a kernel in lockdown refuses it)") from None
            raise
        if self.vmcoreinfo is None:
            self._vmcoreinfo_from_sysfs(vmcoreinfo_sysfs)

    def _memory_segments(self, segments: list[Segment]) -> list[Segment]:
        kept = []
        for segment in segments:
            if segment.paddr == NO_PADDR:
                continue
            pieces = [segment]
            for start, end in self._excluded:
                pieces = [piece for whole in pieces for piece in _without(whole, start, end)]
            kept += pieces
        return kept

    def _vmcoreinfo_from_sysfs(self, sysfs: str) -> None:
        """VMCOREINFO where the kernel's note is, read through the physical segments."""
        try:
            paddr_text, size_text = Path(sysfs).read_text().split()[:2]
            paddr, size = int(paddr_text, 16), int(size_text, 16)
        except (OSError, ValueError):
            return  # the warning Vmcore gave (no VMCOREINFO) stands
        # The address is of the whole ELF note (header, name, text), as in a vmcore's PT_NOTE.
        note = next((n for n in elf.iter_notes(self.memory.read(paddr, size))
                     if n.name == elf.VMCOREINFO_NOTE_NAME), None)
        info = VmcoreInfo.parse(note.desc) if note is not None else None
        if info is not None and info.looks_like_vmcoreinfo():
            self.vmcoreinfo = info
            self.warnings = [w for w in self.warnings if "no VMCOREINFO" not in w]
            self.page_size = info.page_size or self.page_size


def _without(segment: Segment, start: int, end: int) -> list[Segment]:
    """``segment`` less physical addresses [start, end): none, one or two segments."""
    seg_end = segment.paddr + segment.memsz
    if end <= segment.paddr or start >= seg_end:
        return [segment]

    def piece(lo: int, hi: int) -> Segment:
        skip = lo - segment.paddr
        return Segment(lo, segment.offset + skip, max(0, min(segment.filesz - skip, hi - lo)), hi - lo,
                       segment.vaddr + skip)

    return [piece(lo, hi) for lo, hi in ((segment.paddr, start), (end, seg_end)) if lo < hi]
