"""Never lose a dump: wherever the target fails, what was written is a readable kdump file whose
pages are either right or reported missing, and the header says incomplete."""

from __future__ import annotations

import errno
import os

from hypothesis import event, given, settings
from hypothesis import strategies as st

from collector.formats.kdump import KdumpFile, write_kdump
from collector.pipeline.pages import PageCompressor
from collector.progress import LineProgress
from collector.scan.classify import PageClassifier
from collector.source.vmcore import Vmcore
from collector.targets.local import LocalFile
from tests.support.dumpcheck import drgn_page, drgn_program
from tests.support.strategies import segment_layouts
from tests.support.vmcore_factory import (
    PAGE_SIZE,
    build_vmcore,
    expected_memory,
    vmcoreinfo_text,
)


class FailingFile(LocalFile):
    """A target file that fails with ENOSPC (or EIO) once ``budget`` bytes have been written."""

    def __init__(self, path: str, budget: int, error: int) -> None:
        super().__init__(path)
        self.budget, self.error = budget, error

    def write_at(self, offset: int, data) -> None:
        if len(data) > self.budget:
            super().write_at(offset, memoryview(data)[:self.budget])  # a partial write, then the error
            self.budget = 0
            raise OSError(self.error, os.strerror(self.error))
        self.budget -= len(data)
        super().write_at(offset, data)


@settings(max_examples=30)
@given(segments=segment_layouts(), budget=st.one_of(st.integers(0, 16_000), st.integers(16_000, 120_000)),
       error=st.sampled_from([errno.ENOSPC, errno.EIO]), compress=st.sampled_from(["zstd", "none"]))
def test_dump_cut_anywhere_stays_readable(tmp_path_factory, segments, budget, error, compress):
    tmp = tmp_path_factory.mktemp("cut")
    (tmp / "vmcore").write_bytes(build_vmcore(segments, vmcoreinfo_text()))
    out = str(tmp / "dump")
    with Vmcore(str(tmp / "vmcore")) as vmcore:
        sink = FailingFile(out, budget, error)
        compressor = PageCompressor(compress, None, 1)
        try:
            result = write_kdump(sink, vmcore, PageClassifier(vmcore, 1, lambda message: None), compressor,
                                 LineProgress(quiet=True))
        finally:
            sink.close()
    event("complete" if result.complete else "readable" if result.readable else "unreadable")
    if result.complete:
        return  # the budget was enough for the whole dump
    if not result.readable:
        assert result.error.startswith("writing dump metadata"), result.error
        return  # not even the headers got out: nothing to read, and the writer says so
    dump = KdumpFile.open(out)
    assert not dump.complete
    expected = expected_memory(segments)
    prog = drgn_program(out)
    for pfn, page in expected.items():
        ours, theirs = dump.read_page(pfn), drgn_page(prog, pfn, PAGE_SIZE)
        assert ours in (None, page), hex(pfn)
        assert theirs in (None, page), hex(pfn)
