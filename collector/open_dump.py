"""What a file given to read is (ELF vmcore, kdump-compressed dump, flattened stream), and the file
opened as a kernel.MemoryImage. The one place that tells the formats apart on the reader side:
kernel-layer readers such as kernel/dmesg.py take the opened image and know no file formats."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import InputError
from .formats import flat
from .formats.kdump import SIGNATURE as KDUMP_SIGNATURE
from .formats.kdump_image import KdumpImage
from .kernel.dmesg import DmesgFormat, kernel_log
from .kernel.memory import MemoryImage
from .source import elf
from .source.vmcore import Vmcore

HEAD_BYTES = max(len(flat.FLAT_SIGNATURE), len(KDUMP_SIGNATURE), len(elf.ELF_MAGIC))


class FileKind(enum.Enum):
    FLAT = enum.auto()   # makedumpfile's flattened stream: vmcore-rearrange makes it a kdump file
    KDUMP = enum.auto()
    ELF = enum.auto()
    OTHER = enum.auto()


def file_kind(path: str) -> FileKind:
    """Told from the file's first bytes; a file cut inside the kdump signature is a kdump file (its
    reader then names what is missing). InputError if the file cannot be opened."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise InputError(f"cannot open {path}: {e.strerror}") from None
    if flat.is_flat(head):
        return FileKind.FLAT
    if head and KDUMP_SIGNATURE.startswith(head[:len(KDUMP_SIGNATURE)]):
        return FileKind.KDUMP
    if head.startswith(elf.ELF_MAGIC):
        return FileKind.ELF
    return FileKind.OTHER


@contextmanager
def open_memory_image(path: str) -> Iterator[MemoryImage]:
    """An ELF vmcore or a kdump-compressed dump as a MemoryImage, closed on leaving."""
    kind = file_kind(path)
    if kind is FileKind.KDUMP:
        with KdumpImage(path) as dump:
            yield dump
    elif kind is FileKind.ELF:
        with Vmcore(path) as vmcore:
            yield vmcore
    else:
        raise InputError(f"{path} is neither an ELF vmcore nor a kdump-compressed dump "
                         "(a flattened stream needs vmcore-rearrange first)")


def open_source(path: str, output_format: str = "kdump", dump_level: int | None = None) -> Vmcore:
    """The input of a save: an ELF vmcore, or a kdump-compressed dump to filter again (as
    ``makedumpfile -d 31 in.kdump out`` does), which reads as one (source/kdump_input.py);
    ``dump_level``, the one asked for, lets it warn when the input's own is higher."""
    kind = file_kind(path)
    if kind is FileKind.FLAT:
        raise InputError(f"{path} is a flattened kdump stream: make it a dump first with "
                         f"vmcore-rearrange {path} OUT, then save OUT")
    if kind is not FileKind.KDUMP:
        return Vmcore(path)
    if output_format == "elf":  # makedumpfile -E refuses a kdump input too: it has no PT_LOADs to give
        raise InputError(f"{path} is a kdump-compressed dump: --format elf needs an ELF vmcore as input; "
                         "save it as kdump or flat")
    from .source.kdump_input import KdumpSource

    return KdumpSource(path, dump_level)


def kernel_log_of_file(path: str, style: DmesgFormat = DmesgFormat.CALLER_ID) -> str:
    """The kernel log held in an ELF vmcore or in a kdump-compressed dump."""
    with open_memory_image(path) as image:
        return kernel_log(image, style)
