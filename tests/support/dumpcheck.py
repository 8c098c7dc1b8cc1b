"""Read dumps back with real readers (drgn, i.e. libkdumpfile) and with our own readers."""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path

import drgn

from collector.formats.kdump import KdumpFile
from collector.source.vmcore import Vmcore
from collector.targets.local import MARKER_NAME


def dump_files(directory: Path) -> list[str]:
    """The files of a dump directory, sorted, without the marker that says vmcore-save made it."""
    return sorted(p.name for p in directory.iterdir() if p.name != MARKER_NAME)


def drgn_program(path: str) -> drgn.Program:
    prog = drgn.Program()
    prog.set_core_dump(path)
    return prog


def drgn_page(prog: drgn.Program, pfn: int, page_size: int) -> bytes | None:
    """The page as drgn reads it, None if drgn says it is not in the dump."""
    try:
        return prog.read(pfn * page_size, page_size, True)
    except drgn.FaultError:
        return None


def check_kdump(path: str, expected: dict[int, bytes], page_size: int, excluded: Container[int] = frozenset()) -> None:
    """Every expected page reads back equal through drgn and our reader; excluded ones fault."""
    prog = drgn_program(path)
    dump = KdumpFile.open(path)
    for pfn, page in expected.items():
        want = None if pfn in excluded else page
        assert dump.read_page(pfn) == want, f"own reader: pfn {pfn:#x}"
        assert drgn_page(prog, pfn, page_size) == want, f"drgn: pfn {pfn:#x}"


def check_elf(path: str, expected: dict[int, bytes], page_size: int, excluded: Container[int] = frozenset()) -> None:
    """Every expected page reads back equal through drgn and our reader; excluded ones have no
    bytes in the file and read as zeros (p_memsz > p_filesz, as makedumpfile -E writes them)."""
    prog = drgn_program(path)
    with Vmcore(path) as core:
        in_file = {pfn for run in core.memory.runs if run.file_offset is not None
                   for pfn in range(run.start_pfn, run.end_pfn)}
        for pfn, page in expected.items():
            want = bytes(page_size) if pfn in excluded else page
            if pfn in excluded:
                assert pfn not in in_file, f"own reader: pfn {pfn:#x} should have no bytes in the file"
            assert core.memory.read(pfn * page_size, page_size) == want, f"own reader: pfn {pfn:#x}"
            got = drgn_page(prog, pfn, page_size)
            # drgn faults on a page only partly covered by a segment; compare what it has.
            assert got is None and pfn in core.memory.partial_pfns or got == want, f"drgn: pfn {pfn:#x}"
