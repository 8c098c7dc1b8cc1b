"""arm64 crashes in QEMU (TCG) and Debian's arm64 makedumpfile to compare with.

One crash cycle: Debian's arm64 kernel boots on QEMU's virt board (device tree from QEMU, whose
kaslr-seed turns KASLR on), fills a tmpfs, loads the capture kernel with kexec_load (the kernel
has no kexec_file_load) and crashes via sysrq; the capture kernel copies /proc/vmcore out over
virtio-9p and runs vmcore-save on it too (Debian's arm64 Python, tests/testbed/arm64_python.py),
into a dump directory next to that copy. Every arm64 package comes from a private apt state for
arm64; the machine's dpkg architecture is left alone. makedumpfile runs under qemu-user
(``qemu-aarch64 -L SYSROOT``): an x86_64 build cannot read arm64 dumps. Facts and pitfalls:
../shared/notes/arm64-kdump.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from . import arm64_python, assets, debian, initramfs
from .errors import TestbedError
from .qemu import Guest, GuestConfig, Share
from .vmcore import Vmcore

ARCHITECTURE = "arm64"
SUITE = "bookworm"
# The first kernel and the capture kernel share one initramfs: 9p over virtio-pci.
MODULES = ("virtio_pci", "9pnet_virtio", "9p")
# Debian's arm64 makedumpfile 1.7.2 and the libraries it loads (found by NEEDED below).
MAKEDUMPFILE_PACKAGES = ("makedumpfile", "libc6", "zlib1g", "libbz2-1.0", "libdw1", "libelf1", "liblzma5",
                         "liblzo2-2", "libzstd1")
FIRST_APPEND = "console=ttyAMA0 panic=1 rdinit=/init"
# loglevel=4: the capture kernel's notices ("random: crng init done") would otherwise land in the
# middle of vmcore-save's console lines, which tests read.
CAPTURE_APPEND = "console=ttyAMA0 panic=1 rdinit=/init irqpoll nr_cpus=1 reset_devices loglevel=4"
# QEMU CPUs: "max" (pauth-impdef: faster under TCG) has 48-bit or wider physical addresses, so
# the kernel has no room to randomise the linear map (arm64_memblock_init) and PHYS_OFFSET is
# the start of RAM; the Cortex-A57's 44 bits leave room, and PHYS_OFFSET is below 0 then.
CPUS = ("max,pauth-impdef=on", "cortex-a57")
LIBRARY_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")
# The dump level of the vmcore-save run inside the capture kernel: the level whose filtering
# reads the most of the crashed kernel (struct pages through the arm64 translation).
GUEST_SAVE_LEVEL = 31
_GUEST_DIR = Path(__file__).resolve().parent / "guest"


@dataclass(frozen=True)
class Arm64Kernel:
    release: str  # uname -r, e.g. "6.1.0-57-arm64"
    directory: Path  # shared read-only with the guest as /assets: Image, initramfs-*.cpio
    image: Path
    initramfs: Path  # named by the digest of what it holds: rebuilt when the guest's init changes


@dataclass(frozen=True)
class GuestSave:
    """vmcore-save's run inside the capture kernel of a cached crash, on its /proc/vmcore."""

    rc: int | None  # its exit status; None if the console never said it ended
    dump_dir: Path | None  # the dump directory it made under DEST (vmcore, vmcore-dmesg.txt...)
    dump_level: int
    seconds: float | None  # guest uptime from its start to its exit (TCG: slow, as the guest is)
    collector: str  # arm64_python.collector_hash() of the code that ran
    initramfs: str  # the name of the initramfs it ran from (its digest: the guest's init)
    console: str  # the console from its start to its exit: its progress and summary lines


@dataclass
class Arm64GuestConfig(GuestConfig):
    """GuestConfig for qemu-system-aarch64's virt board (PL011 console, no firmware)."""

    cpu: str = CPUS[0]

    def argv(self, console_log: Path) -> list[str]:
        argv = ["qemu-system-aarch64", "-M", "virt", "-cpu", self.cpu, "-accel", "tcg", "-smp", "1",
                "-m", str(self.mem_mib), "-nodefaults", "-display", "none", "-no-reboot",
                "-serial", f"file:{console_log}", "-kernel", str(self.kernel), "-initrd", str(self.initramfs),
                "-append", self.append]
        for share in self.shares:
            options = f"local,path={share.path},mount_tag={share.tag},security_model=none,multidevs=remap"
            argv += ["-virtfs", options + (",readonly=on" if share.readonly else "")]
        return argv


def _apt() -> debian.PrivateApt:
    return debian.PrivateApt(SUITE, assets.cache_dir() / "apt" / f"{SUITE}-{ARCHITECTURE}", ARCHITECTURE)


def _unpack(packages: list[str], root: Path) -> None:
    apt = _apt()
    for deb in apt.download(packages, assets.cache_dir() / "debs" / f"{SUITE}-{ARCHITECTURE}"):
        debian.extract_deb(deb, root)


def _needed(elf_file: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(elf_file)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def libraries(sysroot: Path, binary: Path) -> dict[str, Path]:
    """Every shared library ``binary`` loads, directly or not, as found in ``sysroot``
    (readelf: the host cannot run an arm64 ldd)."""
    found: dict[str, Path] = {}
    pending = _needed(binary)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = next((sysroot / d / name for d in LIBRARY_DIRS if (sysroot / d / name).exists()), None)
        if path is None:
            raise TestbedError(f"{binary.name} needs {name}, which no unpacked arm64 package holds")
        found[name] = path.resolve()
        pending += _needed(found[name])
    return found


def prepare_kernel(kernel: str = "6.1") -> Arm64Kernel:
    """Fetch and unpack the newest arm64 ``kernel`` (a bookworm series) and build its initramfs:
    busybox, kexec with its libraries, the 9p modules, the guest's init."""
    with assets.locked(f"arm64-kernel-{kernel}"):
        directory = assets.cache_dir() / "kernels" / f"{kernel}-{ARCHITECTURE}"
        if not (directory / "READY").exists():
            if directory.exists():
                shutil.rmtree(directory)
            _unpack_kernel(kernel, directory)
            (directory / "READY").write_text("")
        release = (directory / "release").read_text().strip()
        image_fs = directory / f"initramfs-{_initramfs_digest()}.cpio"
        if not image_fs.exists():
            _build_initramfs(directory, release, image_fs)
        return Arm64Kernel(release, directory, directory / "Image", image_fs)


def _unpack_kernel(kernel: str, directory: Path) -> None:
    apt = _apt()
    pattern = rf"linux-image-{re.escape(kernel)}\.\d+-\d+-{ARCHITECTURE}"
    image = max(apt.package_names(pattern), key=lambda name: [int(n) for n in re.findall(r"\d+", name)],
                default=None)
    if image is None:
        raise TestbedError(f"no {SUITE} {ARCHITECTURE} package matches {pattern!r}")
    root = directory / "root"
    xen_libraries = [name for name in apt.recursive_depends("kexec-tools") if name.startswith(("libxen", "libyajl"))]
    _unpack([image, "busybox-static", "kexec-tools", "libc6", "zlib1g", *xen_libraries], root)
    (release_dir,) = (root / "lib" / "modules").iterdir()
    subprocess.run(["depmod", "-b", str(root), release_dir.name], check=True)
    # Debian's arm64 vmlinuz is the uncompressed Image, which QEMU and kexec take as it is.
    shutil.copyfile(root / "boot" / f"vmlinuz-{release_dir.name}", directory / "Image")
    (directory / "release").write_text(release_dir.name + "\n")


def _initramfs_digest() -> str:
    digest = hashlib.sha256(repr(MODULES).encode())
    for script in (_GUEST_DIR / "lib.sh", _GUEST_DIR / "arm64" / "init.sh"):
        digest.update(script.name.encode() + script.read_bytes())
    return digest.hexdigest()[:12]


def _build_initramfs(directory: Path, release: str, target: Path) -> None:
    root = directory / "root"
    release_dir = root / "lib" / "modules" / release
    image_fs = initramfs.Image()
    image_fs.add_busybox(root / "bin" / "busybox")
    image_fs.add_modules(initramfs.resolve_modules(release_dir, MODULES))
    image_fs.add_file("/lib.sh", _GUEST_DIR / "lib.sh", mode=0o644)
    image_fs.add_file("/init", _GUEST_DIR / "arm64" / "init.sh", mode=0o755)
    image_fs.add_file("/sbin/kexec", root / "sbin" / "kexec", mode=0o755)
    for name, path in libraries(root, root / "sbin" / "kexec").items():
        image_fs.add_file(f"/lib/aarch64-linux-gnu/{name}", path, mode=0o755)
    # The kernel exec()s the loader at the path the binaries name (PT_INTERP).
    image_fs.add_symlink("/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu/ld-linux-aarch64.so.1")
    partial = target.with_suffix(".partial")
    image_fs.write(partial)
    partial.rename(target)


def get_vmcore(kernel: str = "6.1", mem_mib: int = 1024, crashkernel_mib: int = 256, cache_mib: int = 48,
               cpu: str = CPUS[0], timeout: float = 600, current_save: bool = False) -> Vmcore:
    """The vmcore of an arm64 crash with these settings, crashing a guest only if it is not
    cached (under the test bed's vmcores folder, as the x86_64 ones); with ``current_save``
    also if vmcore-save ran inside its capture kernel with other collector code or guest init
    than the tree's (see guest_save), which callers of the raw copy alone need not wait for.
    ``boot`` in the result is "virt-" and the CPU model."""
    if cpu not in CPUS:
        raise TestbedError(f"cpu must be one of {CPUS}, not {cpu!r}")
    kernel_assets = prepare_kernel(kernel)
    boot = f"virt-{cpu.split(',')[0]}"
    key = (f"{kernel_assets.release}-{mem_mib}M-ck{crashkernel_mib}-tmpfs{cache_mib}-{boot}-load-kdump"
           f"-save{GUEST_SAVE_LEVEL}")
    final = assets.cache_dir() / "vmcores" / key
    with assets.locked(f"vmcore-{key}"):
        saved_by = _saved_by(final)
        if saved_by is None or current_save and saved_by != (arm64_python.collector_hash(),
                                                             kernel_assets.initramfs.name):
            _build_vmcore(kernel, kernel_assets, final, mem_mib, crashkernel_mib, cache_mib, cpu, boot, timeout)
        meta = json.loads((final / "meta.json").read_text())
    return Vmcore(**{**meta, "path": final / "vmcore", "console_log": final / "console.log"})


def guest_save(vmcore: Vmcore) -> GuestSave:
    """What vmcore-save did inside the capture kernel of ``vmcore`` (one from get_vmcore)."""
    fields = json.loads((vmcore.path.parent / "guest-save.json").read_text())
    dump_dir = fields.pop("dump_dir")
    return GuestSave(**fields, dump_dir=None if dump_dir is None else vmcore.path.parent / dump_dir)


def _saved_by(final: Path) -> tuple[str | None, str | None] | None:
    """Which code made the cached crash's guest save; None: no (complete) cached crash."""
    record = final / "guest-save.json"
    if not (final / "meta.json").exists() or not record.exists():
        return None
    fields = json.loads(record.read_text())
    return fields.get("collector"), fields.get("initramfs")  # older records lack fields: stale


def _guest_save_record(job: Path, collector: str, initramfs: str) -> dict[str, object]:
    """guest-save.json's fields, from the console's "testbed: vmcore-save" lines and DEST."""
    console = (job / "console.log").read_text(errors="replace")
    started = re.search(r"testbed: vmcore-save starts at ([\d.]+) s\n", console)
    ended = re.search(r"testbed: vmcore-save exited (\d+) at ([\d.]+) s", console)
    dump_dirs = sorted(path for path in (job / "saved").glob("*") if path.is_dir())
    return {"rc": int(ended[1]) if ended else None,
            "dump_dir": str(dump_dirs[0].relative_to(job)) if len(dump_dirs) == 1 else None,
            "dump_level": GUEST_SAVE_LEVEL,
            "seconds": round(float(ended[2]) - float(started[1]), 2) if started and ended else None,
            "collector": collector,
            "initramfs": initramfs,
            "console": console[started.end():ended.start()] if started and ended else console[-4000:]}


def _build_vmcore(kernel: str, kernel_assets: Arm64Kernel, final: Path, mem_mib: int, crashkernel_mib: int,
                  cache_mib: int, cpu: str, boot: str, timeout: float) -> None:
    if shutil.which("qemu-system-aarch64") is None:
        raise TestbedError("arm64 crashes need qemu-system-aarch64: apt-get install qemu-system-arm")
    final.parent.mkdir(parents=True, exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix=f"{final.name}.", suffix=".partial", dir=final.parent))
    marker = f"VMCORE-TESTBED-MARKER {secrets.token_hex(8)}"
    settings = {"TESTBED_MARKER": marker, "TESTBED_CAPTURE_APPEND": CAPTURE_APPEND,
                "TESTBED_CAPTURE_INITRD": f"/assets/{kernel_assets.initramfs.name}",
                "TESTBED_CACHE_MIB": str(cache_mib), "TESTBED_SAVE_LEVEL": str(GUEST_SAVE_LEVEL)}
    (job / "job.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items()))
    python_root = arm64_python.python_root()
    # The code that runs in the guest is the tree's of this moment, and named in guest-save.json.
    collector = arm64_python.collector_hash()
    staged = Path(tempfile.mkdtemp(prefix="arm64-collector.", dir=final.parent))
    vmcore = job / "vmcore"
    try:
        arm64_python.stage_collector(staged)
        config = Arm64GuestConfig(kernel=kernel_assets.image, initramfs=kernel_assets.initramfs,
                                  append=f"{FIRST_APPEND} crashkernel={crashkernel_mib}M", mem_mib=mem_mib,
                                  shares=[Share("job", job, readonly=False),
                                          Share("assets", kernel_assets.directory, readonly=True),
                                          Share("python", python_root, readonly=True),
                                          Share("collector", staged, readonly=True)], cpu=cpu)
        with Guest(config, job / "console.log", timeout) as guest:
            guest.wait_exit()
            if not vmcore.exists() or "testbed: capture kernel" not in (job / "console.log").read_text():
                raise guest.error("the capture kernel wrote no vmcore")
    except TestbedError:
        vmcore.unlink(missing_ok=True)  # the logs stay in the .partial folder for diagnosis
        raise
    finally:
        shutil.rmtree(staged)
    subprocess.run(["fallocate", "--dig-holes", str(vmcore)], check=True)
    record = _guest_save_record(job, collector, kernel_assets.initramfs.name)
    (job / "guest-save.json").write_text(json.dumps(record, indent=1) + "\n")
    meta = Vmcore(path=vmcore, marker=marker, osrelease=kernel_assets.release, kernel=kernel, mem_mib=mem_mib,
                  crashkernel_mib=crashkernel_mib, workload=False, boot=boot, kexec="load", method="kdump",
                  console_log=job / "console.log")
    fields = {name: value for name, value in asdict(meta).items() if name not in ("path", "console_log")}
    (job / "meta.json").write_text(json.dumps(fields, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    job.rename(final)


def makedumpfile() -> list[str]:
    """The command line prefix that runs Debian's arm64 makedumpfile on this machine."""
    if shutil.which("qemu-aarch64") is None:
        raise TestbedError("arm64 makedumpfile runs under qemu-user: apt-get install qemu-user")
    with assets.locked("arm64-makedumpfile"):
        root = assets.cache_dir() / f"makedumpfile-{ARCHITECTURE}"
        if not (root / "READY").exists():
            if root.exists():
                shutil.rmtree(root)
            _unpack(list(MAKEDUMPFILE_PACKAGES), root)
            libraries(root, root / "usr" / "bin" / "makedumpfile")  # all there, or say which is not
            (root / "READY").write_text("")
    return ["qemu-aarch64", "-L", str(root), str(root / "usr" / "bin" / "makedumpfile")]
