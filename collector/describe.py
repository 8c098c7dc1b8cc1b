"""--info: what a file is (ELF vmcore, kdump-compressed dump, flattened stream) and what it holds."""

from __future__ import annotations

from . import fastcopy
from .errors import InputError
from .formats import flat
from .formats.kdump import KdumpFile
from .vmcore import Vmcore


def describe(path: str) -> str:
    """Human-readable description of a vmcore, a kdump file or a flattened stream."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise InputError(f"cannot open {path}: {e.strerror}") from None
    if flat.is_flat(head):
        return f"{path}: flattened kdump stream: run vmcore-rearrange {path} OUT to get the kdump file"
    if head.startswith(b"KDUMP"):
        dump = KdumpFile.open(path)
        try:
            h = dump.header
            release, machine = (name.split(b"\0", 1)[0].decode(errors="replace") for name in (h.release, h.machine))
            present = fastcopy.count_bits(dump.present, 0, dump.max_mapnr)
            return "\n".join([
                f"{path}: kdump-compressed dump, header version {h.header_version}",
                f"  kernel: {release} ({machine}), "
                f"{h.nr_cpus} CPU(s), page size {dump.page_size}",
                f"  dump level {dump.sub_header.dump_level}, compression {dump.compression}",
                f"  pages: {present} present, {dump.ndump} dumped, max pfn {dump.max_mapnr:#x}",
                f"  {'complete' if dump.complete else 'INCOMPLETE (cut short: some pages are missing)'}",
            ])
        finally:
            dump.close()
    with Vmcore(path) as vmcore:
        lines = [f"{path}: ELF vmcore ({vmcore.machine})",
                 f"  kernel: {vmcore.osrelease or 'unknown (no VMCOREINFO)'}, {vmcore.nr_cpus} CPU(s), "
                 f"page size {vmcore.page_size}",
                 f"  memory: {sum(s.memsz for s in vmcore.segments) / 2**20:.1f} MiB in "
                 f"{len(vmcore.segments)} PT_LOAD segment(s), max pfn {vmcore.memory.max_mapnr:#x}"]
        lines += [f"    {s.paddr:#014x}-{s.paddr + s.memsz:#014x} at file offset {s.offset:#x}"
                  for s in vmcore.segments[:64]]
        if len(vmcore.segments) > 64:
            lines.append(f"    ... {len(vmcore.segments) - 64} more")
        lines += [f"  warning: {w}" for w in vmcore.warnings]
        return "\n".join(lines)
