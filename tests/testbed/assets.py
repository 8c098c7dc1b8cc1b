"""Host-side files the guests need: kernels, user-space tools, disk image, initramfs.

Everything lives under the cache folder (env ``VMCORE_TESTBED_CACHE``, default
``<repo>/.cache/testbed``) and is built once, under a lock, then reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import debian, initramfs
from .errors import TestbedError

REPO_ROOT = Path(__file__).resolve().parents[2]

# Modules both guest stages load, with their dependencies (resolved from modules.dep):
# 9p for the host shares, virtio-blk + ext4 for the workload's page cache disk,
# qemu_fw_cfg so QEMU's vmcoreinfo device learns where VMCOREINFO is, virtio-net
# for user networking from the capture kernel. ext4 up to 6.x needs crc32c through a
# softdep, which modules.dep does not list (see resolve_guest_modules).
GUEST_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "9pnet_virtio", "9p", "crc32c_generic", "ext4",
                 "qemu_fw_cfg")
# The capture kernel also loads the NFS client (v3 and v4, with sunrpc, lockd, grace...), for
# NFS targets; the first kernel does not need it.
CAPTURE_MODULES = GUEST_MODULES + ("nfsv3", "nfsv4")

GUEST_DIR = Path(__file__).resolve().parent / "guest"


def cache_dir() -> Path:
    """The test bed's cache folder (created on first use)."""
    path = Path(os.environ.get("VMCORE_TESTBED_CACHE", REPO_ROOT / ".cache" / "testbed"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock shared with every other process using the same cache."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Kernel:
    """One unpacked Debian kernel with the two initramfs images built for it."""

    release: str  # uname -r, e.g. "6.1.0-56-amd64"
    directory: Path  # shared read-only with the guest, which kexecs from it
    bzimage: Path  # for SeaBIOS boot and as the capture kernel
    vmlinux: Path  # uncompressed ELF, for PVH boot
    first_initramfs: Path
    capture_initramfs: Path


def prepare_kernel(kernel: str) -> Kernel:
    """Fetch, unpack and prepare ``kernel`` (a series like "6.1" or an exact release).

    A series is resolved to its newest package once; the cache then keeps that release.
    The initramfs images are rebuilt whenever the guest scripts or module list change.
    """
    with locked(f"kernel-{kernel}"):
        directory = cache_dir() / "kernels" / kernel
        if not (directory / "READY").exists():
            if directory.exists():
                shutil.rmtree(directory)
            _unpack_kernel(kernel, directory)
            (directory / "READY").write_text("")
        release = (directory / "release").read_text().strip()
        images = directory / f"initramfs-{_initramfs_digest()}"
        if not images.exists():
            partial = Path(tempfile.mkdtemp(prefix=images.name, dir=directory))
            _build_initramfs(directory / "root" / "lib" / "modules" / release, partial)
            partial.rename(images)
        return Kernel(
            release=release,
            directory=directory,
            bzimage=directory / "vmlinuz",
            vmlinux=directory / "vmlinux",
            first_initramfs=images / "first.cpio",
            capture_initramfs=images / "capture.cpio",
        )


def _unpack_kernel(kernel: str, directory: Path) -> None:
    apt, image = debian.find_kernel_package(kernel, cache_dir() / "apt")
    root = directory / "root"
    packages = debian.kernel_parts(image, apt.depends(image))
    for deb in apt.download(packages, cache_dir() / "debs" / apt.suite):
        debian.extract_deb(deb, root)
    # trixie and later ship modules under usr/lib only; depmod -b looks in lib/modules.
    if not (root / "lib").exists():
        (root / "lib").symlink_to("usr/lib")
    if not (root / "lib" / "modules").is_dir():
        raise TestbedError(f"Debian packages {packages} ({apt.suite}) hold no lib/modules; "
                           "see debian.kernel_parts for how a kernel's packages are chosen")
    (release_dir,) = (root / "lib" / "modules").iterdir()
    release = release_dir.name
    subprocess.run(["depmod", "-b", str(root), release], check=True)
    # 7.x ships the image in the modules folder (its postinst links it into /boot).
    bzimage = next((path for path in (root / "boot" / f"vmlinuz-{release}", release_dir / "vmlinuz")
                    if path.exists()), None)
    if bzimage is None:
        raise TestbedError(f"Debian packages {packages} ({apt.suite}) hold no vmlinuz for {release}")
    shutil.copyfile(bzimage, directory / "vmlinuz")
    (directory / "vmlinux").write_bytes(extract_vmlinux((directory / "vmlinuz").read_bytes()))
    (directory / "release").write_text(release + "\n")


def _initramfs_digest() -> str:
    digest = hashlib.sha256(repr(CAPTURE_MODULES).encode())
    for script in sorted(GUEST_DIR.glob("*.sh")):
        digest.update(script.name.encode() + script.read_bytes())
    return digest.hexdigest()[:12]


def resolve_guest_modules(release_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """initramfs.resolve_modules, less crc32c_generic where ext4 does not ask for it.

    ext4 up to 6.x names crc32c in a softdep ("softdep ext4 pre: crypto-crc32c" in
    modules.softdep); from 7.0 on it calls the built-in crc32c library, and the crypto
    module is named crc32c-cryptoapi.
    """
    softdep = release_dir / "modules.softdep"
    ext4_softdep = re.compile(r"^softdep ext4 .*crypto-crc32c", re.MULTILINE)
    if not (softdep.exists() and ext4_softdep.search(softdep.read_text())):
        wanted = tuple(name for name in wanted if name != "crc32c_generic")
    return initramfs.resolve_modules(release_dir, wanted)


def _build_initramfs(release_dir: Path, target: Path) -> None:
    """first.cpio (with kexec) and capture.cpio, sharing busybox, modules and lib.sh."""
    tools = prepare_tools()
    common = initramfs.Image()
    common.add_busybox(tools / "busybox")
    common.add_modules(resolve_guest_modules(release_dir, GUEST_MODULES))
    common.add_file("/lib.sh", GUEST_DIR / "lib.sh", mode=0o644)

    first = common.copy()
    first.add_tree(tools / "kexec")
    first.add_file("/init", GUEST_DIR / "init-first.sh", mode=0o755)
    first.write(target / "first.cpio")

    capture = common.copy()
    capture.add_modules(resolve_guest_modules(release_dir, CAPTURE_MODULES))
    capture.add_file("/init", GUEST_DIR / "init-capture.sh", mode=0o755)
    capture.write(target / "capture.cpio")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Decompress the ELF kernel inside a bzImage (xz on 6.1, zstd on 6.12).

    The setup header's payload_offset/payload_length locate the compressed kernel; its
    last 4 bytes are the uncompressed size, which zstd would take as a broken frame.
    """
    setup_sectors = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + payload_offset
    payload = bzimage[start:start + payload_length]
    if payload.startswith(b"\xfd7zXZ\x00"):
        elf = lzma.LZMADecompressor().decompress(payload)
    elif payload.startswith(b"\x28\xb5\x2f\xfd"):
        elf = subprocess.run(["zstd", "-dc"], input=payload[:-4], capture_output=True, check=True).stdout
    else:
        raise TestbedError(f"unsupported bzImage compression (magic {payload[:6].hex()})")
    if not elf.startswith(b"\x7fELF"):
        raise TestbedError("decompressed bzImage payload is not an ELF file")
    return elf


def prepare_tools() -> Path:
    """busybox and kexec (with the Xen libraries Debian links it to), from bookworm.

    Returns a folder holding ``busybox`` and ``kexec/`` (a root tree: sbin/kexec plus
    every shared library it loads, at the paths its loader looks them up).
    """
    with locked("tools"):
        directory = cache_dir() / "tools"
        if (directory / "READY").exists():
            return directory
        if directory.exists():
            shutil.rmtree(directory)
        apt = debian.PrivateApt(debian.TOOLS_SUITE, cache_dir() / "apt" / debian.TOOLS_SUITE)
        # kexec-tools links libxenctrl & co; those packages are not installed on a fresh machine.
        xen_libraries = [name for name in apt.recursive_depends("kexec-tools")
                         if name.startswith(("libxen", "libyajl"))]
        debs = apt.download(["busybox-static", "kexec-tools", *xen_libraries],
                            cache_dir() / "debs" / apt.suite)
        sysroot = directory / "sysroot"
        for deb in debs:
            debian.extract_deb(deb, sysroot)
        shutil.copyfile(sysroot / "bin" / "busybox", directory / "busybox")
        _collect_kexec(sysroot, directory / "kexec")
        (directory / "READY").write_text("")
        return directory


def _collect_kexec(sysroot: Path, dest: Path) -> None:
    """Copy sbin/kexec and what ``ldd`` resolves for it (sysroot libraries first)."""
    kexec = sysroot / "sbin" / "kexec"
    library_dirs = [str(p) for p in (sysroot / "usr/lib/x86_64-linux-gnu", sysroot / "lib/x86_64-linux-gnu")
                    if p.exists()]
    ldd = subprocess.run(["ldd", str(kexec)], capture_output=True, text=True, check=True,
                         env={**os.environ, "LD_LIBRARY_PATH": ":".join(library_dirs)}).stdout
    if "not found" in ldd:
        raise TestbedError(f"kexec has unresolved libraries:\n{ldd}")
    (dest / "sbin").mkdir(parents=True)
    shutil.copy2(kexec, dest / "sbin" / "kexec")
    # The guest looks every library up in /lib/x86_64-linux-gnu; the loader at /lib64.
    (dest / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (dest / "lib64").mkdir()
    for line in ldd.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            shutil.copyfile(parts[2], dest / "lib" / "x86_64-linux-gnu" / parts[0])
        elif parts and parts[0].startswith("/lib64/"):
            # The kernel exec()s the loader: it keeps its mode bits.
            shutil.copy(parts[0], dest / parts[0].lstrip("/"))


def prepare_disk() -> Path:
    """An empty 128 MiB ext4 image the workload writes to (QEMU opens it with snapshot=on)."""
    with locked("disk"):
        image = cache_dir() / "workload-disk.ext4"
        if not image.exists():
            partial = image.with_suffix(".partial")
            with open(partial, "wb") as f:
                f.truncate(128 << 20)
            # Initialise inode tables now so the guest runs no ext4lazyinit writes.
            subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                            str(partial)], check=True)
            partial.rename(image)
        return image


def debug_vmlinux(kernel: str) -> Path:
    """``kernel``'s vmlinux with its debug info, what crash and drgn need beside a dump:
    Debian's linux-image-<release>-dbg (about 850 MB, downloaded once; only the vmlinux is
    kept, about 630 MB)."""
    prepared = prepare_kernel(kernel)
    path = prepared.directory / "vmlinux-dbg"
    with locked(f"dbg-{kernel}"):
        if path.exists():
            return path
        package = f"linux-image-{prepared.release}-dbg"
        member = f"./usr/lib/debug/boot/vmlinux-{prepared.release}"
        for suite in debian.SUITE_SOURCES:
            apt = debian.PrivateApt(suite, cache_dir() / "apt" / suite)
            if package not in apt.package_names(re.escape(package)):
                continue
            (deb,) = apt.download([package], cache_dir() / "debs" / suite)
            with tempfile.TemporaryDirectory(dir=prepared.directory) as tmp:
                subprocess.run(f"dpkg-deb --fsys-tarfile {shlex.quote(str(deb))} | tar -x -C {shlex.quote(tmp)} "
                               f"{shlex.quote(member)}", shell=True, check=True)
                (Path(tmp) / member).rename(path)
            deb.unlink()
            return path
    raise TestbedError(f"no Debian suite has {package}")
