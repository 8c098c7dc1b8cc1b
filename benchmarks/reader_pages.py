"""Which pages of a dump the readers read, by value-order class, and whether those pages alone
are enough: the measurement behind collector/scan/value.py's order (issue 14: a dump cut at a
tenth must still answer). crash 8.0's reads are seen with strace (it reads the file with
lseek+read: each page's descriptor, then its data); drgn maps the file through libkdumpfile, so
its reads are taken from a drgn program whose physical memory is this module's reader of the
dump. Then a copy of the dump keeps only the pages either read (every other descriptor zeroed,
flagged incomplete, as a cut dump's unwritten pages are) and both readers are asked again.

    python -m benchmarks.reader_pages VMCORE VMLINUX [DUMP_LEVEL] [--symbols]

VMLINUX is the kernel's debug vmlinux (tests/testbed/assets.py debug_vmlinux). Needs strace.
--symbols lists each page read of the kernel's image with the symbols that hold part of it (nm).
"""

from __future__ import annotations

import bisect
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from collector.formats.kdump import DISK_DUMP_HEADER, PAGE_DESC, STATUS_INCOMPLETE, KdumpFile
from collector.kernel.arch import kernel_memory
from collector.kernel.memory import TranslationError
from collector.scan.classify import PageClassifier
from collector.scan.value import page_order
from collector.source.vmcore import Vmcore
from tests.support.readers import crash_reads, drgn_reads

CRASH_COMMANDS = "log\nbt\nps\nquit\n"
# drgn without the dump's notes has no crashed thread: each CPU's current task stands for it,
# and the page of panic_cpu, which crashed_thread() reads first, is added.
DRGN_TRACE = r"""
import json, sys, drgn
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.printk import get_printk_records
from drgn.helpers.linux.sched import cpu_curr
from drgn.helpers.linux.cpumask import for_each_online_cpu
from collector.formats.kdump import KdumpFile
dump = KdumpFile.open(sys.argv[1])
page_size = dump.page_size
touched = set()
def read(address, count, offset, physical):
    first, last = address // page_size, (address + count - 1) // page_size
    data = bytearray()
    for pfn in range(first, last + 1):
        touched.add(pfn)
        page = dump.read_page(pfn)
        if page is None:
            raise drgn.FaultError("page not in the dump", pfn * page_size)
        data += page
    start = address - first * page_size
    return bytes(data[start:start + count])
prog = drgn.Program(drgn.host_platform)
prog.set_linux_kernel_custom(dump.vmcoreinfo, False)
prog.add_memory_segment(0, dump.max_mapnr * page_size, read, physical=True)
prog.load_debug_info([sys.argv[2]])
for cpu in for_each_online_cpu(prog):
    prog.stack_trace(cpu_curr(prog, cpu))
sorted(int(task.pid) for task in for_each_task(prog))
list(get_printk_records(prog))
prog.read(prog.symbol("panic_cpu").address, 4)
print(json.dumps(sorted(touched)))
"""
READ_CALL = re.compile(r"^\d+\s+(read|pread64|lseek)\((\d+)<([^>]*)>, (.*)\) = (-?\d+)")
OPEN_CALL = re.compile(r"^\d+\s+openat\(.*\) = (\d+)<([^>]*)>")


class DumpPages:
    """Where each kept pfn's descriptor and data lie in a kdump file; the shared zero page,
    which many descriptors point at, counts as no page's data."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = KdumpFile.open(str(path))
        self.pfns = [pfn for pfn in range(self.file.max_mapnr) if self.file.is_dumpable(pfn)]
        self.descs = self.file.descs(0, self.file.ndump)
        shared = {offset for offset, count in Counter(d.offset for d in self.descs).items() if count > 1}
        self.size = {pfn: 0 if d.offset in shared else d.size for pfn, d in zip(self.pfns, self.descs)}
        spans = sorted((d.offset, d.size, pfn) for pfn, d in zip(self.pfns, self.descs)
                       if d.offset and d.offset not in shared)
        self.spans = spans
        self.starts = [offset for offset, _, _ in spans]

    def pfns_read(self, offset: int, length: int) -> set[int]:
        """The pfns whose descriptor or data a read of ``length`` bytes at ``offset`` covers."""
        descs = self.file.layout.descs_offset
        if descs <= offset < self.file.descs_end:
            first = (offset - descs) // PAGE_DESC.size
            last = min(self.file.ndump - 1, (offset + length - 1 - descs) // PAGE_DESC.size)
            return {self.pfns[rank] for rank in range(first, last + 1)}
        found = set()
        index = bisect.bisect_right(self.starts, offset + length - 1) - 1
        while index >= 0 and self.spans[index][0] + self.spans[index][1] > offset:
            found.add(self.spans[index][2])
            index -= 1
        return found


def crash_pages(dump: DumpPages, vmlinux: Path, scratch: Path) -> set[int]:
    log = scratch / "crash.strace"
    subprocess.run(["strace", "-f", "-y", "-e", "trace=openat,read,pread64,lseek", "-o", str(log),
                    "crash", "-s", str(vmlinux), str(dump.path)],
                   input=CRASH_COMMANDS, capture_output=True, text=True, timeout=600, check=False)
    target = str(dump.path.resolve())
    position: dict[str, int] = {}
    touched: set[int] = set()
    for line in log.read_text().splitlines():
        opened = OPEN_CALL.match(line)
        if opened:
            position[opened.group(1)] = 0
            continue
        call = READ_CALL.match(line)
        if not call or call.group(3) != target:
            continue
        name, fd, _, arguments, result = call.groups()
        returned = int(result)
        if name == "lseek":
            position[fd] = returned
        elif returned > 0:
            offset = int(arguments.rsplit(", ", 1)[1]) if name == "pread64" else position.get(fd, 0)
            if name == "read":
                position[fd] = offset + returned
            touched |= dump.pfns_read(offset, returned)
    return touched


def drgn_pages(dump: DumpPages, vmlinux: Path) -> set[int]:
    proc = subprocess.run([sys.executable, "-c", DRGN_TRACE, str(dump.path), str(vmlinux)], capture_output=True,
                          text=True, timeout=600, check=True)
    return set(json.loads(proc.stdout.splitlines()[-1]))


def keep_only(dump: DumpPages, pfns: set[int], out: Path) -> None:
    """A copy of the dump with only ``pfns``' descriptors, flagged incomplete."""
    shutil.copyfile(dump.path, out)
    header = dump.file.header._replace(status=dump.file.header.status | STATUS_INCOMPLETE)
    with out.open("r+b") as file:
        file.write(DISK_DUMP_HEADER.build(**header._asdict()))
        for rank, pfn in enumerate(dump.pfns):
            if pfn not in pfns:
                file.seek(dump.file.layout.descs_offset + rank * PAGE_DESC.size)
                file.write(bytes(PAGE_DESC.size))


def classes(vmcore_path: Path, dump_level: int) -> dict[int, str]:
    """Each kept pfn's value-order class (the explicit ones, then the slab bitmaps)."""
    with Vmcore(str(vmcore_path)) as vmcore:
        classifier = PageClassifier(vmcore, dump_level, lambda message: None)
        order = page_order(vmcore, classifier.kallsyms)
        named = {pfn: page_class.name for page_class in order for pfn in page_class.pfns}
        for start, end in classifier.windows():
            first, slab = classifier.first_slab_bitmap(start, end), classifier.slab_bitmap(start, end)
            for bit in range(end - start):
                if first[bit >> 3] >> (bit & 7) & 1:
                    named.setdefault(start + bit, "task structs")
                elif slab[bit >> 3] >> (bit & 7) & 1:
                    named.setdefault(start + bit, "slab")
    return named


def image_symbols(vmcore_path: Path, vmlinux: Path) -> dict[int, list[str]]:
    """pfn -> the names of the vmlinux's symbols that hold part of it, for the kernel's image
    (a symbol runs to the next one's address)."""
    listing = subprocess.run(["nm", "-n", "--defined-only", str(vmlinux)], capture_output=True, text=True,
                             check=True).stdout
    names: dict[int, list[str]] = {}
    with Vmcore(str(vmcore_path)) as vmcore:
        kernel = kernel_memory(vmcore)
        page_size = vmcore.page_size
        symbols = [(int(fields[0], 16), fields[2]) for fields in map(str.split, listing.splitlines())
                   if len(fields) >= 3 and int(fields[0], 16) >= kernel.kernel_space_start]
        frames: dict[int, int | None] = {}
        for (address, name), (following, _) in zip(symbols, [*symbols[1:], (symbols[-1][0] + 1, "")]):
            last = max(address, following - 1)
            for page in range(address - address % page_size, last - last % page_size + 1, page_size):
                if page not in frames:
                    try:
                        frames[page] = kernel.translate(page)[0] // page_size
                    except TranslationError:
                        frames[page] = None
                frame = frames[page]
                if frame is not None:
                    names.setdefault(frame, []).append(name)
    return names


def main(argv: list[str]) -> int:
    show_symbols = "--symbols" in argv
    argv = [arg for arg in argv if arg != "--symbols"]
    vmcore, vmlinux = Path(argv[0]), Path(argv[1])
    dump_level = int(argv[2]) if len(argv) > 2 else 31
    with tempfile.TemporaryDirectory(prefix="reader-pages-") as scratch_name:
        scratch = Path(scratch_name)
        whole = scratch / "whole.kdump"
        subprocess.run([sys.executable, "-m", "collector", "-q", "-d", str(dump_level), "--output", str(whole),
                        str(vmcore)], check=True)
        dump = DumpPages(whole)
        named = classes(vmcore, dump_level)
        reads = {"crash": crash_pages(dump, vmlinux, scratch), "drgn": drgn_pages(dump, vmlinux)}
        fixed = dump.file.descs_end
        print(f"dump {dump.file.size} bytes; header, bitmaps and descriptors {fixed} "
              f"({100 * fixed / dump.file.size:.1f}%)")
        print(f"{'class':36} {'pages':>7} {'bytes':>10} {'crash reads':>18} {'drgn reads':>18}")
        totals: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        for pfn in dump.pfns:
            counts[named.get(pfn, "rest")] += 1
            totals[named.get(pfn, "rest")] += dump.size[pfn]
        for name in counts:
            read = [(len(p), sum(dump.size[pfn] for pfn in p))
                    for p in ({pfn for pfn in reads[reader] if named.get(pfn, "rest") == name}
                              for reader in ("crash", "drgn"))]
            print(f"{name:36} {counts[name]:7} {totals[name]:10} "
                  + " ".join(f"{n:7} {b:10}" for n, b in read))
        if show_symbols:
            symbols = image_symbols(vmcore, vmlinux)
            for pfn in sorted(reads["crash"] | reads["drgn"]):
                if pfn in symbols:
                    who = "".join(reader[0] for reader in ("crash", "drgn") if pfn in reads[reader])
                    held = symbols[pfn]
                    more = f" (+{len(held) - 6})" if len(held) > 6 else ""
                    print(f"{pfn:#x} {named.get(pfn, 'rest'):34} {dump.size.get(pfn, 0):6} {who:2} "
                          + " ".join(held[:6]) + more)
        # crash reads much of the rest (vmemmap, mm structs) but answers without it (measured).
        needed = {pfn for pfn in reads["crash"] if named.get(pfn, "rest") != "rest"} | reads["drgn"]
        only = scratch / "only.kdump"
        keep_only(dump, needed, only)
        cost = sum(dump.size[pfn] for pfn in needed)
        print(f"pages crash read but the rest, and drgn's: {len(needed)} pages, {cost} bytes; with the header "
              f"{fixed + cost} ({100 * (fixed + cost) / dump.file.size:.1f}% of the dump)")
        print("drgn with only them:", json.dumps(drgn_reads(only, vmlinux))[:300])
        print("crash with only them:", {command: len(lines) for command, lines in crash_reads(only, vmlinux).items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
