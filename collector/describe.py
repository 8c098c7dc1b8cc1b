"""--info: what a file is (ELF vmcore, kdump-compressed dump, flattened stream) and what it holds."""

from __future__ import annotations

from dataclasses import dataclass

from . import fastcopy
from .errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from .formats.kdump import KdumpFile
from .open_dump import FileKind, file_kind
from .source.vmcore import Vmcore

# --info's exit status: whether the file holds every page it says it holds.
INFO_COMPLETE, INFO_UNREADABLE, INFO_INCOMPLETE = EXIT_OK, EXIT_USAGE, EXIT_INCOMPLETE


@dataclass(frozen=True)
class Description:
    text: str
    exit_code: int  # INFO_COMPLETE, INFO_INCOMPLETE (pages missing, the rest readable) or INFO_UNREADABLE


def describe(path: str) -> Description:
    """What a vmcore, a kdump file or a flattened stream is and holds, and how complete it is."""
    kind = file_kind(path)
    if kind is FileKind.FLAT:
        return Description(f"{path}: flattened kdump stream: run vmcore-rearrange {path} OUT to get the kdump file",
                           INFO_COMPLETE)
    if kind is FileKind.KDUMP:
        dump = KdumpFile.open(path)
        try:
            return _describe_kdump(path, dump)
        finally:
            dump.close()
    with Vmcore(path) as vmcore:  # not ELF either: Vmcore's error says so
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
        return Description("\n".join(lines), INFO_COMPLETE)


def _describe_kdump(path: str, dump: KdumpFile) -> Description:
    """Only what the file really holds: a part cut off is named, never shown as zeros."""
    h, cut = dump.header, dump.truncation
    lost = set(cut.missing_parts) if cut else set()
    release, machine = (name.split(b"\0", 1)[0].decode(errors="replace") for name in (h.release, h.machine))
    lines = [f"{path}: kdump-compressed dump, header version {h.header_version}",
             f"  kernel: {release} ({machine}), {h.nr_cpus} CPU(s), page size {dump.page_size}"]
    if "sub-header" not in lost:
        lines.append(f"  dump level {dump.sub_header.dump_level}, compression {dump.compression}")
    if "bitmaps" not in lost:
        present = fastcopy.count_bits(dump.present, 0, dump.max_mapnr)
        lines.append(f"  pages: {present} present, {dump.ndump} dumped, max pfn {dump.max_mapnr:#x}")
    if cut:
        lines.append(f"  {cut.describe(dump.ndump)}")
    elif not dump.complete:
        lines.append(f"  INCOMPLETE (the writer was cut short): {dump.pages_missing} of {dump.ndump} dumped pages "
                     "are missing")
    else:
        lines.append("  complete")
    if dump.complete:
        return Description("\n".join(lines), INFO_COMPLETE)
    # Without the notes there is no VMCOREINFO, without the bitmaps no page can be found.
    readable = not lost & {"notes (VMCOREINFO)", "bitmaps"}
    return Description("\n".join(lines), INFO_INCOMPLETE if readable else INFO_UNREADABLE)
