"""--triage: the triage record (kernel/triage.py) of an existing ELF vmcore or kdump-compressed
dump, opened the way every reader opens one (open_dump.py)."""

from __future__ import annotations

from .formats.kdump import UTS_NAMES
from .formats.kdump_image import KdumpImage
from .kernel import triage
from .open_dump import open_memory_image
from .source.vmcore import Vmcore


def triage_of_file(path: str) -> tuple[triage.Triage, bool]:
    """The record, and whether the file is complete: a dump cut short still gives what its
    notes and the pages it kept hold, and says which pages it lacks."""
    with open_memory_image(path) as image:
        if isinstance(image, Vmcore):
            return triage.of_image(image, path, image.original_notes, image.utsname(), triage.UTS_UNREAD), True
        assert isinstance(image, KdumpImage)
        dump = image.dump
        uts = {name: getattr(dump.header, name).split(b"\0", 1)[0].decode("utf-8", "replace") for name in UTS_NAMES}
        record = triage.of_image(image, path, dump.notes, uts, "the dump header's utsname does not say")
        if dump.complete:
            state = "complete"
        elif dump.truncation:
            state = dump.truncation.describe(dump.ndump)
        else:
            state = f"INCOMPLETE: {dump.pages_missing} of {dump.ndump} dumped pages are missing"
        plan = triage.DumpPlan(dump.sub_header.dump_level, "kdump", dump.compression, state=state)
        return record.with_dump(plan), dump.complete
