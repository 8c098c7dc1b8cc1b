"""The architecture module of a dump, chosen from its ELF machine: the one place that maps
e_machine to a module (x86_64.py, arm64.py; others are added to ARCHITECTURES)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..source import elf
from ..source.vmcoreinfo import VmcoreInfo
from . import arm64, x86_64
from .memory import KernelMemory, MemoryImage, TranslationError
from .x86_64 import KernelPages


class Architecture(Protocol):
    """What an architecture module provides (mypy checks each module in ARCHITECTURES)."""

    def kernel_symbol_paddr(self, vaddr: int, phys_base: int, info: VmcoreInfo | None) -> int | None:
        """Physical address of a kernel-image symbol, None if ``vaddr`` is outside the image
        (arm64 needs VMCOREINFO's kimage_voffset, x86_64 only phys_base)."""

    def phys_base_of(self, segments: Sequence[elf.Segment], info: VmcoreInfo | None) -> int:
        """phys_base when VMCOREINFO has no NUMBER(phys_base): from the PT_LOADs on x86_64,
        NUMBER(PHYS_OFFSET) on arm64."""

    def vmcoreinfo_repairs(self, info: VmcoreInfo) -> list[tuple[str, str, str]]:
        """(key, value, where it comes from) for missing VMCOREINFO lines that can be restored."""

    def PageTables(self, image: MemoryImage, info: VmcoreInfo) -> KernelMemory:
        """The module's KernelMemory class: translation through the crashed kernel's page
        tables; TranslationError if VMCOREINFO lacks what it needs."""

    def kernel_pages(self, tables: KernelMemory) -> KernelPages:
        """The kernel's page-table pages and its image's pages by mapping (scan/value.py)."""

    def stack_pages(self, tables: KernelMemory, stack_pointer: int) -> list[int]:
        """The pfns of the stack that ``stack_pointer`` points into."""

    def code_address(self, word: int, info: VmcoreInfo) -> int:
        """A return address read from a stack as the address it returns to (arm64 strips pointer
        authentication)."""

    @property
    def STACK_POINTER(self) -> str:
        """The name of the stack pointer among a CPU's NT_PRSTATUS registers (triage.Prstatus)."""


ARCHITECTURES: dict[int, Architecture] = {elf.EM_X86_64: x86_64, elf.EM_AARCH64: arm64}


def architecture(e_machine: int) -> Architecture | None:
    """The module for ELF machine ``e_machine``, None for one without kernel address translation."""
    return ARCHITECTURES.get(e_machine)


def kernel_memory(image: MemoryImage) -> KernelMemory:
    """The crashed kernel's virtual memory; TranslationError saying why it cannot be read."""
    arch = architecture(image.e_machine)
    if image.vmcoreinfo is None or arch is None:
        supported = " or ".join(elf.machine_name(machine) for machine in ARCHITECTURES)
        unsupported = "" if arch else f", not {elf.machine_name(image.e_machine)}"
        raise TranslationError(f"kernel address translation needs VMCOREINFO of an {supported} kernel{unsupported}")
    return arch.PageTables(image, image.vmcoreinfo)
