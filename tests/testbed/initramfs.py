"""Build initramfs images (cpio "newc", uncompressed) without root rights or a staging tree.

Writing the archive directly lets it hold /dev/console (the kernel opens it for init's
stdio before devtmpfs is mounted) without mknod on the host.
"""

from __future__ import annotations

import copy
import lzma
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .errors import TestbedError


@dataclass
class _Entry:
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class Image:
    """An initramfs being assembled: archive path -> entry."""

    entries: dict[str, _Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for directory in ("/bin", "/dev", "/proc", "/sys", "/tmp", "/lib", "/lib/modules", "/mnt"):
            self.add_directory(directory)
        self.entries["/dev/console"] = _Entry(stat.S_IFCHR | 0o600, rdev=(5, 1))

    def copy(self) -> Image:
        return copy.deepcopy(self)

    def add_directory(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        if parent and parent not in self.entries:
            self.add_directory(parent)
        self.entries.setdefault(path, _Entry(stat.S_IFDIR | 0o755))

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.add_directory(path.rsplit("/", 1)[0] or "/")
        self.entries[path] = _Entry(stat.S_IFREG | mode, data)

    def add_file(self, path: str, source: Path, mode: int | None = None) -> None:
        self.add_bytes(path, source.read_bytes(), stat.S_IMODE(source.stat().st_mode) if mode is None else mode)

    def add_symlink(self, path: str, target: str) -> None:
        self.add_directory(path.rsplit("/", 1)[0] or "/")
        self.entries[path] = _Entry(stat.S_IFLNK | 0o777, target.encode())

    def add_tree(self, source: Path) -> None:
        """Add every file and folder below ``source`` at the same path below /."""
        for item in sorted(source.rglob("*")):
            path = "/" + item.relative_to(source).as_posix()
            if item.is_symlink():
                self.add_symlink(path, str(item.readlink()))
            elif item.is_dir():
                self.add_directory(path)
            else:
                self.add_file(path, item)

    def add_busybox(self, busybox: Path) -> None:
        """The static busybox; init scripts run `busybox --install -s` for the other applets."""
        self.add_file("/bin/busybox", busybox, mode=0o755)
        self.add_symlink("/bin/sh", "busybox")

    def add_modules(self, modules: list[Path]) -> None:
        """Kernel modules, decompressed, plus /lib/modules/load.order (insmod order)."""
        names = []
        for module in modules:
            name = module.name.split(".ko")[0] + ".ko"
            self.add_bytes(f"/lib/modules/{name}", _read_module(module))
            names.append(name)
        self.add_bytes("/lib/modules/load.order", "".join(f"{n}\n" for n in names).encode())

    def write(self, target: Path) -> None:
        """Write the archive atomically."""
        partial = target.with_suffix(".partial")
        with open(partial, "wb") as out:
            for inode, (path, entry) in enumerate(sorted(self.entries.items()), start=1):
                _write_record(out, path.lstrip("/") or ".", entry, inode)
            _write_record(out, "TRAILER!!!", _Entry(0), 0)
        partial.rename(target)


def _write_record(out: BinaryIO, name: str, entry: _Entry, inode: int) -> None:
    encoded = name.encode() + b"\0"
    fields = (inode, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, entry.rdev[0], entry.rdev[1],
              len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    out.write(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
    out.write(entry.data + b"\0" * (-len(entry.data) % 4))


def _read_module(path: Path) -> bytes:
    # busybox insmod cannot be relied on to decompress; trixie ships .ko.xz.
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    if path.name.endswith(".ko"):
        return path.read_bytes()
    raise TestbedError(f"unsupported module file {path}")


def _module_name(relative_path: str) -> str:
    return Path(relative_path).name.split(".ko")[0].replace("-", "_")


def resolve_modules(release_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """Module files for ``wanted`` and their dependencies, dependencies first.

    Modules the kernel has built in are skipped (virtio_pci is =y on 6.12, =m on 6.1).
    """
    dependencies: dict[str, list[str]] = {}
    files: dict[str, str] = {}
    for line in (release_dir / "modules.dep").read_text().splitlines():
        module, _, deps = line.partition(":")
        files[_module_name(module)] = module
        dependencies[_module_name(module)] = [_module_name(d) for d in deps.split()]
    builtin = {_module_name(line) for line in (release_dir / "modules.builtin").read_text().split()}

    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dependency in dependencies[name]:
            visit(dependency)
        ordered.append(name)

    for name in wanted:
        key = name.replace("-", "_")
        if key in builtin:
            continue
        if key not in files:
            raise TestbedError(f"module {name} is neither built in nor in {release_dir}/modules.dep")
        visit(key)
    return [release_dir / files[name] for name in ordered]
