"""The real-kernel test bed yields genuine vmcores and runs commands in real capture kernels.

The package choice tests are pure; the others (marked realkernel) are slow the first time
(download Debian kernels, crash QEMU guests under TCG, ~20-35 s per vmcore); vmcores are
cached afterwards. Needs the `real_vmcore` fixture from
tests.testbed.fixtures (see that module's docstring).
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.testbed import Vmcore, run_in_capture_kernel
from tests.testbed.assets import resolve_guest_modules
from tests.testbed.debian import kernel_parts, newest_kernel_image

ELF_MAGIC = b"\x7fELF"
ET_CORE = 4
PT_NOTE = 4
NT_PRSTATUS = 1


def elf_notes(path: Path) -> list[tuple[bytes, int, bytes]]:
    """(name, type, descriptor) of every note in an ELF64 little-endian core's PT_NOTE segments."""
    with open(path, "rb") as core:
        header = core.read(64)
        assert header[:4] == ELF_MAGIC and header[4] == 2 and header[5] == 1, "not an ELF64 LE file"
        e_type, = struct.unpack_from("<H", header, 16)
        assert e_type == ET_CORE
        e_phoff, = struct.unpack_from("<Q", header, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", header, 54)
        notes = []
        for index in range(e_phnum):
            core.seek(e_phoff + index * e_phentsize)
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack("<IIQQQQ", core.read(40))
            if p_type != PT_NOTE:
                continue
            core.seek(p_offset)
            segment = core.read(p_filesz)
            position = 0
            while position + 12 <= len(segment):
                namesz, descsz, note_type = struct.unpack_from("<III", segment, position)
                position += 12
                name = segment[position:position + namesz].rstrip(b"\0")
                position += (namesz + 3) & ~3
                notes.append((name, note_type, segment[position:position + descsz]))
                position += (descsz + 3) & ~3
        return notes


def vmcoreinfo(path: Path) -> dict[str, str]:
    (text,) = [desc for name, _type, desc in elf_notes(path) if name == b"VMCOREINFO"]
    return dict(line.split("=", 1) for line in text.decode().splitlines() if "=" in line)


def check_kdump_vmcore(vmcore: Vmcore, tmp_path: Path) -> dict[str, str]:
    """The vmcore is a kdump ELF core of the guest kernel whose log holds the marker."""
    info = vmcoreinfo(vmcore.path)
    assert info["OSRELEASE"] == vmcore.osrelease
    assert any(note_type == NT_PRSTATUS for name, note_type, _ in elf_notes(vmcore.path) if name == b"CORE")
    dmesg = tmp_path / "dmesg.txt"
    # Debian's makedumpfile 1.7.2 warns "The kernel version is not supported" on 6.1 but works.
    result = subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore.path), str(dmesg)],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert vmcore.marker in dmesg.read_text(errors="replace")
    return info


# One suite's linux-image names as Debian spells them: bookworm's ABI numbers, trixie's
# +debNN releases, and flavours or debug symbols the test bed does not boot.
IMAGE_NAMES = [
    "linux-image-6.1.0-9-amd64", "linux-image-6.1.0-57-amd64", "linux-image-6.1.0-57-amd64-unsigned",
    "linux-image-6.1.0-57-cloud-amd64", "linux-image-6.1.0-57-rt-amd64", "linux-image-6.1.0-57-amd64-dbg",
    "linux-image-6.12.9+deb13-amd64", "linux-image-6.12.118+deb13-amd64", "linux-image-6.12.118+deb13-cloud-amd64",
    "linux-image-7.2.6+deb13-amd64", "linux-image-7.2.12+deb13-amd64", "linux-image-7.2.12+deb13-amd64-dbg",
    "linux-image-7.2.12+deb13-rt-amd64", "linux-image-7.3.4+deb13-amd64", "linux-image-amd64",
]


@pytest.mark.parametrize(("kernel", "image"), [
    ("6.1", "linux-image-6.1.0-57-amd64"),
    ("6.12", "linux-image-6.12.118+deb13-amd64"),
    ("7.2", "linux-image-7.2.12+deb13-amd64"),
    ("7.2.6+deb13-amd64", "linux-image-7.2.6+deb13-amd64"),
    ("7.1", None),
])
def test_series_picks_its_newest_generic_image(kernel: str, image: str | None) -> None:
    assert newest_kernel_image(kernel, IMAGE_NAMES) == image


def test_split_kernel_is_fetched_with_its_binary_modules_and_base_packages() -> None:
    # apt-cache depends of trixie-backports' linux-image-7.2.12+deb13-amd64 (an empty package).
    depends = ["dracut", "initramfs-tools", "linux-base", "linux-base-7.2.12+deb13-amd64",
               "linux-binary-7.2.12+deb13-amd64", "linux-initramfs-tool", "linux-modules-7.2.12+deb13-amd64"]
    assert kernel_parts("linux-image-7.2.12+deb13-amd64", depends) == [
        "linux-image-7.2.12+deb13-amd64", "linux-base-7.2.12+deb13-amd64",
        "linux-binary-7.2.12+deb13-amd64", "linux-modules-7.2.12+deb13-amd64"]


@pytest.mark.parametrize("image", ["linux-image-6.1.0-57-amd64", "linux-image-6.12.118+deb13-amd64"])
def test_whole_kernel_image_is_fetched_alone(image: str) -> None:
    assert kernel_parts(image, ["initramfs-tools", "kmod", "linux-base", "linux-initramfs-tool"]) == [image]


@pytest.mark.parametrize(("softdep", "crc32c"), [("softdep ext4 pre: crypto-crc32c\n", True), ("", False)])
def test_crc32c_module_is_loaded_only_where_ext4_asks_for_it(tmp_path: Path, softdep: str, crc32c: bool) -> None:
    # 6.x: ext4 takes crc32c through a softdep; 7.x: built-in library, no crc32c_generic module.
    (tmp_path / "modules.dep").write_text("kernel/fs/ext4/ext4.ko.xz:\n"
                                          + ("kernel/crypto/crc32c_generic.ko.xz:\n" if crc32c else ""))
    (tmp_path / "modules.builtin").write_text("")
    (tmp_path / "modules.softdep").write_text(softdep)
    modules = [path.name for path in resolve_guest_modules(tmp_path, ("crc32c_generic", "ext4"))]
    assert modules == (["crc32c_generic.ko.xz"] if crc32c else []) + ["ext4.ko.xz"]


@pytest.mark.realkernel
def test_kdump_pvh_kexec_load(real_vmcore: Callable[..., Vmcore], tmp_path: Path) -> None:
    vmcore = real_vmcore(kernel="6.1", mem_mib=512, workload=True, boot="pvh", kexec="load")
    info = check_kdump_vmcore(vmcore, tmp_path)
    assert info["KERNELOFFSET"] == "0", "PVH boot runs without KASLR"


@pytest.mark.realkernel
def test_kdump_bios_kaslr_kexec_file(real_vmcore: Callable[..., Vmcore], tmp_path: Path) -> None:
    vmcore = real_vmcore(kernel="6.1", mem_mib=512, workload=True, boot="bios", kexec="file")
    info = check_kdump_vmcore(vmcore, tmp_path)
    # KASLR: zero only if the random slot happens to be the default one (very unlikely).
    assert info["KERNELOFFSET"] != "0"


@pytest.mark.realkernel
def test_qmp_dump_has_vmcoreinfo(real_vmcore: Callable[..., Vmcore]) -> None:
    vmcore = real_vmcore(kernel="6.1", mem_mib=512, workload=False, method="qmp")
    assert vmcoreinfo(vmcore.path)["OSRELEASE"] == vmcore.osrelease


@pytest.mark.realkernel
def test_kdump_later_kernel_series(real_vmcore: Callable[..., Vmcore], tmp_path: Path) -> None:
    vmcore = real_vmcore(kernel="6.12", mem_mib=512, workload=True)
    assert vmcore.osrelease.startswith("6.12.")
    check_kdump_vmcore(vmcore, tmp_path)


@pytest.mark.realkernel
def test_command_in_capture_kernel(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Exit status 7 only if the host's python3 runs too.
    command = "head -c 4096 /proc/vmcore > /out/head && python3 -c 'import sys; sys.exit(7)'"
    run = run_in_capture_kernel(command, out)
    assert run.rc == 7, run.console_log.read_text(errors="replace")[-3000:]
    head = (out / "head").read_bytes()
    assert len(head) == 4096 and head.startswith(ELF_MAGIC)
