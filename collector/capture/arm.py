"""vmcore-collector: prepare a machine so that a crash is captured with no human.

    vmcore-collector build-initramfs --kernel-version V [--kmoddir DIR] [--output IMG]
    vmcore-collector arm [--kernel VMLINUZ] [--initrd IMG] [--append ARGS]
    vmcore-collector disarm
    vmcore-collector status

build-initramfs calls dracut with our module (initramfs/99vmcore-collector) to make the capture
initramfs: busybox, Python with only the standard-library modules the collector imports, the
collector, zstandard, paramiko, the configuration, the SSH key and known_hosts, and the kernel
modules the configured targets need. arm loads it with kexec -p as the capture kernel's
initramfs. These commands change the running system: run them on the machine to protect, never
on a test host (the test suite runs them only inside QEMU guests).
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .. import console
from ..errors import EXIT_FAILED, EXIT_OK, CollectorError
from ..targets.nfs import NfsUrl
from ..version import VersionAction
from . import checks, kdump_tools, mounts
from . import config as configuration
from . import estimate as estimation

PROGRAM = "vmcore-collector"
DEFAULT_IMAGE_DIR = "/var/lib/vmcore-collector"
RUNTIME_DIR = "/usr/lib/vmcore-collector"  # PYTHONPATH of the capture environment
IMAGE_CONFIG_DIR = "/etc/vmcore-collector"
# The directory that holds the collector package: a checkout, or site-packages when installed.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
MODULE_DIR = PACKAGE_PARENT / "initramfs" / "99vmcore-collector"
INSTALLED_MODULE_DIR = Path(sys.prefix) / "share" / "vmcore-collector" / "99vmcore-collector"

# The usual capture-kernel settings (as Fedora's kdumpctl): one CPU, devices reset and polled
# because the crashed kernel left them mid-flight, and no memory spent on what a dump does not
# need. panic=10: a capture kernel that panics reboots instead of hanging.
CAPTURE_KERNEL_ARGS = ("irqpoll nr_cpus=1 reset_devices panic=10 cgroup_disable=memory mce=0 numa=off "
                       "acpi_no_memhotplug transparent_hugepage=never novmcoredd cma=0 hugetlb_cma=0")
# First-kernel arguments that would be wrong in the capture kernel.
_DROPPED_KERNEL_ARGS = ("BOOT_IMAGE", "initrd", "rdinit", "init", "crashkernel", "panic", "nr_cpus", "maxcpus",
                        "resume", "hugepages", "hugepagesz", "default_hugepagesz", "kexec_jump_back_entry",
                        "irqpoll", "reset_devices", "quiet")

# Kernel modules by what a target needs. Drivers for the common virtual and physical
# controllers: the image is built without host-only detection, so it also boots elsewhere.
BLOCK_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "nvme", "ahci", "ata_piix")
NETWORK_MODULES = ("virtio_pci", "virtio_net", "e1000", "e1000e", "af_packet")
NFS_MODULES = ("nfsv3", "nfsv4")
FILESYSTEM_MODULES = {"ext4": ("crc32c_generic", "ext4"), "ext3": ("crc32c_generic", "ext4"),
                      "ext2": ("crc32c_generic", "ext4"), "vfat": ("vfat", "nls_cp437", "nls_iso8859_1")}

# Standard-library modules the collector reaches only dynamically (codec look-ups by name).
DYNAMIC_STDLIB_MODULES = ("encodings.utf_8", "encodings.ascii", "encodings.latin_1", "encodings.idna",
                          "encodings.aliases")
# Entry points whose static import closure is the capture environment's Python.
ENTRY_MODULES = ("collector.cli", "collector.capture.environment", "collector.capture.arm", "collector.capture.config",
                 "collector.targets.local", "collector.targets.nfs", "zstandard", *DYNAMIC_STDLIB_MODULES)
# What /init runs (``python3 -m collector.capture``): found by reading it, never imported here,
# since importing it starts the capture job.
CAPTURE_MAIN = "collector.capture.__main__"
# The SSH target's stack (paramiko, cryptography: ~20 MiB unpacked, ~25 MiB more RSS) goes in
# only when an SSH target is configured.
SSH_MODULES = ("collector.targets.ssh", "paramiko")
# Never needed in a capture kernel, although some library names them in a code path we do not
# take. A module that the entry modules really import at run time goes in regardless.
EXCLUDED_MODULES = ("tkinter", "test", "idlelib", "lib2to3", "ensurepip", "distutils", "pydoc_data",
                    "turtle", "turtledemo", "sqlite3", "curses", "dbm", "xmlrpc", "setuptools", "pip",
                    "_pytest", "pytest", "zstandard.backend_cffi", "zstandard._cffi", "multiprocessing",
                    "pydoc", "doctest", "pdb", "ctypes", "http.server", "xml.dom", "xml.sax", "xml.etree",
                    "_hashlib", "_ssl", "ssl")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CollectorError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROGRAM, description="Capture crashes automatically: build the capture initramfs, "
                "load it with kexec, check the set-up.")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser("build-initramfs", help="build the capture initramfs with dracut")
    build.add_argument("--kernel-version", default=os.uname().release, metavar="V",
                       help="kernel release the image is for (default: the running one)")
    build.add_argument("--kmoddir", metavar="DIR", help="kernel modules folder (default /lib/modules/V)")
    build.add_argument("--output", metavar="IMG", help=f"image to write (default {DEFAULT_IMAGE_DIR}/initrd-V.img)")
    _add_config_options(build)
    build.add_argument("--dracut", metavar="PATH", help="dracut to run (default: dracut on PATH)")
    arm = commands.add_parser("arm", help="load the capture kernel and initramfs (kexec -p)")
    arm.add_argument("--kernel", metavar="VMLINUZ", help="capture kernel (default /boot/vmlinuz-$(uname -r))")
    arm.add_argument("--initrd", metavar="IMG",
                     help=f"capture initramfs (default {DEFAULT_IMAGE_DIR}/initrd-$(uname -r).img, "
                     "built first when missing or older than the configuration)")
    arm.add_argument("--append", default="", metavar="ARGS", help="extra capture-kernel arguments")
    arm.add_argument("--kexec-load", action="store_true",
                     help="use the kexec_load system call instead of kexec_file_load")
    _add_config_options(arm)
    arm.add_argument("--dracut", metavar="PATH", help="dracut to run when the image is (re)built")
    commands.add_parser("disarm", help="unload the capture kernel (kexec -p -u)")
    status = commands.add_parser("status", help="is a crash going to be captured?")
    _add_config_options(status)
    status.add_argument("--initrd", metavar="IMG", help="capture initramfs to check")
    estimate = commands.add_parser("estimate", help="before a crash: dump size and time per dump level, "
                                   "the crashkernel= the capture needs")
    _add_config_options(estimate)
    estimate.add_argument("--initrd", metavar="IMG", help="capture initramfs to size (default: the armed one)")
    estimate.add_argument("--kcore", default="/proc/kcore", metavar="FILE",
                          help="the running kernel's memory (default /proc/kcore)")
    for parser in (p, *commands.choices.values()):
        parser.add_argument("--version", action=VersionAction)
    return p


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", default=configuration.CONFIG_PATH, metavar="FILE",
                       help=f"configuration (default {configuration.CONFIG_PATH})")
    group.add_argument("--kdump-conf", metavar="FILE", help="read a Fedora kdump.conf instead of --config")
    group.add_argument("--kdump-tools", metavar="FILE",
                       help=f"read a Debian {kdump_tools.KDUMP_TOOLS_PATH} instead of --config")


def main(argv: Sequence[str] | None = None) -> int:
    return console.run(_main, argv, PROGRAM)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "build-initramfs":
        output = Path(args.output or _default_image(args.kernel_version))
        loaded = _load_config(args)
        report = build_initramfs(loaded, args.kernel_version, output, args.kmoddir, args.dracut)
        _say(f"built {output}: {report.size / 2**20:.1f} MiB ({report.unpacked_size / 2**20:.1f} MiB unpacked, "
             f"{report.python_files} Python modules, kernel modules: {' '.join(report.kernel_modules) or 'none'})")
        for asked, landed in zip(loaded.targets, report.targets):
            _say(f"target {asked.describe()}: the capture kernel saves to {lands_on(landed)}")
        return EXIT_OK
    if args.command == "arm":
        initrd = Path(args.initrd) if args.initrd else _fresh_default_image(args)
        kernel = Path(args.kernel or f"/boot/vmlinuz-{os.uname().release}")
        command_line = arm(kernel, initrd, args.append, kexec_file=not args.kexec_load)
        _say(f"armed: capture kernel {kernel}, initramfs {initrd}, command line: {command_line}")
        return EXIT_OK
    if args.command == "disarm":
        _kexec(["-p", "-u"])
        _say("disarmed: no capture kernel loaded")
        return EXIT_OK
    if args.command == "estimate":
        return estimate(args)
    return status(args)


def _say(text: str) -> None:
    console.say(PROGRAM, text)


def _config_file(args: argparse.Namespace) -> str:
    return str(args.kdump_tools or args.kdump_conf or args.config)


def _load_config(args: argparse.Namespace) -> configuration.Config:
    if args.kdump_tools:
        loaded = kdump_tools.load_kdump_tools(args.kdump_tools)
    elif args.kdump_conf:
        loaded = configuration.load_kdump_conf(args.kdump_conf)
    else:
        loaded = configuration.load(args.config)
    for warning in loaded.warnings:
        _say(f"warning: {warning}")
    return loaded


def _default_image(kernel_version: str) -> str:
    return f"{DEFAULT_IMAGE_DIR}/initrd-{kernel_version}.img"


def _fresh_default_image(args: argparse.Namespace) -> Path:
    """The default image, rebuilt first when it is missing or older than the configuration
    (what kdumpctl does at boot, so that editing the configuration is enough)."""
    release = os.uname().release
    image = Path(_default_image(release))
    config_file = Path(_config_file(args))
    if not image.exists() or (config_file.exists() and config_file.stat().st_mtime > image.stat().st_mtime):
        image.parent.mkdir(parents=True, exist_ok=True)
        build_initramfs(_load_config(args), release, image, None, args.dracut)
        _say(f"built {image}")
    return image


# build-initramfs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildReport:
    size: int  # bytes of the (compressed) image
    unpacked_size: int  # bytes of what the capture kernel unpacks into RAM
    python_files: int
    kernel_modules: tuple[str, ...]
    targets: tuple[configuration.Target, ...]  # as the image carries them


def kernel_modules_for(config: configuration.Config) -> tuple[str, ...]:
    """The kernel modules the configured targets need, in load order."""
    wanted: list[str] = []
    for target in config.targets:
        if target.kind == "disk":
            wanted += [*BLOCK_MODULES, *FILESYSTEM_MODULES.get(target.fstype, (target.fstype,))]
        if target.needs_network:
            wanted += NETWORK_MODULES
        if target.kind == "nfs":
            wanted += NFS_MODULES
    wanted += config.modules
    return tuple(dict.fromkeys(wanted))


def build_initramfs(config: configuration.Config, kernel_version: str, output: Path,
                    kmoddir: str | None = None, dracut: str | None = None) -> BuildReport:
    """Stage the capture environment, then run dracut with only our module; returns sizes.
    Path targets go in as the disks they land on here (collector/mounts.py)."""
    config = mounts.with_landing_disks(config)
    dracut_path = dracut or shutil.which("dracut")
    if not dracut_path:
        raise CollectorError("dracut not found: install dracut-core (Debian) or dracut, or pass --dracut")
    dracut_base = Path(dracut_path).resolve().parent.parent / "lib" / "dracut"
    if not (dracut_base / "dracut-init.sh").exists():
        raise CollectorError(f"{dracut_base}: not a dracut installation (no dracut-init.sh)")
    for name, path in (("ssh_key", config.ssh_key), ("known_hosts", config.known_hosts)):
        if path and not os.access(path, os.R_OK):
            raise CollectorError(f"{name} {path}: not readable")
    kernel_modules = kernel_modules_for(config)
    with tempfile.TemporaryDirectory(prefix="vmcore-collector-build.") as work_name:
        work = Path(work_name)
        manifest, python_files = _stage(config, kernel_modules, work / "stage")
        (work / "stage" / IMAGE_MANIFEST).write_text(_image_manifest_text(kernel_version))
        (work / "manifest").write_text("".join(f"{kind} {src} {dst}\n" for kind, src, dst in manifest))
        base = _dracut_base_with_module(dracut_base, work / "dracut")
        (work / "confdir").mkdir()
        (work / "empty.conf").write_text("")
        command = [dracut_path, "--force", "--no-hostonly", "--no-hostonly-cmdline", "--no-early-microcode",
                   "--modules", "vmcore-collector", "--kver", kernel_version,
                   "--conf", str(work / "empty.conf"), "--confdir", str(work / "confdir"),
                   "--compress", "zstd", "--tmpdir", str(work), *(["--kmoddir", kmoddir] if kmoddir else []),
                   str(output)]
        env = {**os.environ, "dracutbasedir": str(base), "VMCORE_COLLECTOR_MANIFEST": str(work / "manifest"),
               "VMCORE_COLLECTOR_KMODS": " ".join(kernel_modules)}
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0 or not output.exists():
            tail = "; ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise CollectorError(f"dracut failed (status {result.returncode}): {tail}")
    return BuildReport(output.stat().st_size, _unpacked_size(output), python_files, kernel_modules, config.targets)


def _dracut_base_with_module(system_base: Path, base: Path) -> Path:
    """A dracut base folder whose modules.d holds only our module: dracut's own files are
    symlinked, so nothing under /usr/lib/dracut is touched."""
    (base / "modules.d").mkdir(parents=True)
    for item in system_base.iterdir():
        if item.name != "modules.d":
            (base / item.name).symlink_to(item)
    module = MODULE_DIR if MODULE_DIR.is_dir() else INSTALLED_MODULE_DIR
    shutil.copytree(module, base / "modules.d" / "99vmcore-collector")
    return base


def _unpacked_size(image: Path) -> int:
    listing = subprocess.run(["sh", "-c", f"zstd -dc '{image}' | cpio -t -v --quiet"], capture_output=True,
                             text=True).stdout
    return sum(int(fields[4]) for fields in (line.split() for line in listing.splitlines())
               if len(fields) > 4 and fields[4].isdigit())


def _find_python_modules(with_ssh: bool) -> dict[str, str]:
    """Module name -> file for what ENTRY_MODULES (and SSH_MODULES if ``with_ssh``) need:
    their static import closure (a ModuleFinder reads bytecode, so imports inside functions
    count too), less EXCLUDED_MODULES, plus whatever importing them really loads (paramiko
    pulls in more than it names)."""
    entries = [*ENTRY_MODULES, *(SSH_MODULES if with_ssh else ())]
    excludes = [*EXCLUDED_MODULES, *(() if with_ssh else SSH_MODULES)]
    script = (
        "import json, modulefinder, sys\n"
        f"finder = modulefinder.ModuleFinder(excludes={excludes!r})\n"
        f"entries = {entries!r}\n"
        f"for name in entries + [{CAPTURE_MAIN!r}]:\n"
        "    finder.import_hook(name)\n"
        "found = {n: m.__file__ for n, m in finder.modules.items() if m.__file__}\n"
        "for name in entries:\n"
        "    __import__(name)\n"
        "found.update((n, m.__file__) for n, m in list(sys.modules.items()) if getattr(m, '__file__', None))\n"
        "json.dump(found, sys.stdout)\n"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=str(PACKAGE_PARENT))
    if found.returncode != 0:
        raise CollectorError(f"cannot list the collector's Python modules: {found.stderr.strip()[-300:]}")
    return json.loads(found.stdout)


def _stage(config: configuration.Config, kernel_modules: tuple[str, ...],
           stage: Path) -> tuple[list[tuple[str, str, str]], int]:
    """Lay out the capture environment's files in ``stage``; returns the dracut manifest and
    how many Python modules went in. Python files go in as bytecode only (smaller, no
    compiling at capture time); ELF files are listed for dracut to install with their libraries."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    site_dirs = [Path(p).resolve() for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    package_root = PACKAGE_PARENT
    interpreter = Path(sys.executable).resolve()
    manifest: list[tuple[str, str, str]] = [("tree", str(stage), "/"),
                                            ("elf", str(interpreter), str(interpreter)),
                                            ("elf", "/bin/busybox", "/usr/bin/busybox")]
    if not Path("/bin/busybox").exists():
        raise CollectorError("/bin/busybox not found: install busybox-static")
    count = 0
    with_ssh = any(target.kind == "ssh" for target in config.targets)
    for name, file in sorted(_find_python_modules(with_ssh).items()):
        source = Path(file).resolve()
        if source.is_relative_to(stdlib) and not any(source.is_relative_to(d) for d in site_dirs):
            destination = Path(str(stdlib)) / source.relative_to(stdlib)
        elif source.is_relative_to(package_root / "collector"):
            destination = Path(RUNTIME_DIR) / source.relative_to(package_root)
        else:
            site = next((d for d in site_dirs if source.is_relative_to(d)), None)
            if site is None:
                raise CollectorError(f"module {name} ({source}) is outside the standard library and site-packages")
            destination = Path(RUNTIME_DIR) / source.relative_to(site)
        if source.suffix == ".py":
            py_compile.compile(str(source), cfile=str(stage / destination.relative_to("/")) + "c",
                               dfile=str(destination), doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            count += 1
        elif source.suffix == ".so":
            manifest.append(("elf", str(source), str(destination)))
            count += 1
    _stage_distribution_metadata(manifest, site_dirs, stage)
    # Extension modules that Rust/C code imports by itself, which no bytecode names.
    for site in site_dirs:
        for extension in ("cryptography/hazmat/bindings/_rust.abi3.so",
                          "_cffi_backend" + sysconfig.get_config_var("EXT_SUFFIX")):
            if with_ssh and (site / extension).exists() and not any(e[1] == str(site / extension) for e in manifest):
                manifest.append(("elf", str(site / extension), f"{RUNTIME_DIR}/{extension}"))
    _stage_runtime_files(config, kernel_modules, stage, interpreter)
    return manifest, count


def _stage_distribution_metadata(manifest: list[tuple[str, str, str]], site_dirs: list[Path], stage: Path) -> None:
    """METADATA of the distributions whose packages went in: paramiko reads its own version
    through importlib.metadata when imported."""
    runtime = stage / RUNTIME_DIR.lstrip("/")
    packages = {path.relative_to(runtime).parts[0] for path in runtime.rglob("*.pyc")}
    packages |= {Path(dst).relative_to(RUNTIME_DIR).parts[0] for kind, _, dst in manifest
                 if kind == "elf" and dst.startswith(RUNTIME_DIR + "/")}
    for site in site_dirs:
        for info in site.glob("*.dist-info"):
            top_level = info / "top_level.txt"
            names = set(top_level.read_text().split()) if top_level.exists() else {info.name.split("-")[0].lower()}
            if names & packages and (info / "METADATA").exists():
                (runtime / info.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(info / "METADATA", runtime / info.name / "METADATA")


def _stage_runtime_files(config: configuration.Config, kernel_modules: tuple[str, ...], stage: Path,
                         interpreter: Path) -> None:
    etc = stage / IMAGE_CONFIG_DIR.lstrip("/")
    etc.mkdir(parents=True)
    copied: dict[str, str | None] = {}
    for name, path in (("ssh_key", config.ssh_key), ("known_hosts", config.known_hosts)):
        copied[name] = None
        if path:
            shutil.copyfile(path, etc / name)
            (etc / name).chmod(0o600)
            copied[name] = f"{IMAGE_CONFIG_DIR}/{name}"
    image_config = configuration.with_image_paths(config, copied["ssh_key"], copied["known_hosts"])
    (stage / "etc" / "vmcore-collector.conf").write_text(configuration.render(image_config))
    (etc / "modules").write_text("".join(f"{name}\n" for name in kernel_modules))
    (etc / "failure-action").write_text(config.failure_action + "\n")
    bin_dir = stage / "usr" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "python3").symlink_to(interpreter)
    for command, module in (("vmcore-save", "collector.cli"), ("vmcore-collector", "collector.capture.arm")):
        wrapper = bin_dir / command
        wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={RUNTIME_DIR} exec /usr/bin/python3 -S -c "
                           f"'import sys; from {module} import main; sys.exit(main())' \"$@\"\n")
        wrapper.chmod(0o755)


# arm / status ----------------------------------------------------------------------------------

def capture_command_line(first_kernel_command_line: str, extra: str = "") -> str:
    """The capture kernel's command line: the first kernel's (console and the like) without
    what must not carry over, plus CAPTURE_KERNEL_ARGS and ``extra``."""
    kept = [word for word in first_kernel_command_line.split()
            if word.split("=", 1)[0] not in _DROPPED_KERNEL_ARGS]
    return " ".join([*kept, CAPTURE_KERNEL_ARGS, *extra.split()])


def arm(kernel: Path, initrd: Path, extra_args: str = "", kexec_file: bool = True) -> str:
    """Load ``kernel`` and ``initrd`` as the capture kernel; returns its command line."""
    for path in (kernel, initrd):
        if not path.is_file():
            raise CollectorError(f"{path}: no such file")
    if crash_kernel_reserved() == 0:
        raise CollectorError("no memory is reserved for a capture kernel: boot with crashkernel=256M")
    command_line = capture_command_line(Path("/proc/cmdline").read_text(), extra_args)
    _kexec(["-p", *(["-s"] if kexec_file else []), str(kernel), f"--initrd={initrd}",
            f"--append={command_line}"])
    if not crash_kernel_loaded():
        raise CollectorError("kexec reported success but the kernel says no capture kernel is loaded")
    return command_line


def _kexec(arguments: list[str]) -> None:
    kexec = shutil.which("kexec") or "/sbin/kexec"
    if not os.path.exists(kexec):
        raise CollectorError("kexec not found: install kexec-tools")
    result = subprocess.run([kexec, *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise CollectorError(f"kexec {' '.join(arguments[:2])} failed: {reason[-1] if reason else result.returncode}")


def crash_kernel_reserved() -> int:
    """Bytes reserved with crashkernel= (0: none)."""
    try:
        return int(Path("/sys/kernel/kexec_crash_size").read_text())
    except (OSError, ValueError):
        return 0


def crash_kernel_loaded() -> bool:
    try:
        return Path("/sys/kernel/kexec_crash_loaded").read_text().strip() == "1"
    except OSError:
        return False


def target_reachable(target: configuration.Target, timeout: float = 3.0) -> str | None:
    """None if the target looks usable from here, else why not (one phrase)."""
    if target.kind == "ram":
        return (f"{target.directory} is the capture environment's RAM: a dump there is lost at final_action "
                "(ram is for testing the capture environment; use path or disk)")
    if target.kind == "path":
        return (f"the capture kernel has no device for {target.directory}, and its own folders are RAM: "
                f"rebuild the image ({PROGRAM} build-initramfs)")
    if target.kind == "disk":
        return None if _device_present(target.source) else f"{target.source} is on no device here"
    if target.kind == "ssh":
        host_port = target.source.split("@", 1)[1]
        host, _, port = host_port.rpartition(":") if host_port.count(":") == 1 else (host_port, "", "22")
        address, port_number = host.strip("[]"), int(port or 22)
    else:
        address, port_number = target.source.split(":", 1)[0], 2049
    try:
        with socket.create_connection((address, port_number), timeout=timeout):
            return None
    except OSError as e:
        return f"{address}:{port_number}: {e.strerror or e}"


def _device_present(spec: str) -> bool:
    if not spec.startswith(("LABEL=", "UUID=")):
        return os.path.exists(spec)
    key, _, value = spec.partition("=")
    if os.path.exists(f"/dev/disk/by-{key.lower()}/{value}"):
        return True
    # No udev (containers, minimal systems): blkid probes the devices itself.
    blkid = subprocess.run(["blkid", "-U" if key == "UUID" else "-L", value], check=False, capture_output=True)
    return blkid.returncode == 0


def lands_on(target: configuration.Target) -> str:
    """Where a dump for ``target`` (as the image carries it) goes in the capture environment."""
    if target.kind == "disk":
        return f"{target.directory} on {target.source} ({target.fstype}), which it mounts"
    if target.kind == "ssh":
        return f"{target.directory} on {target.source} over SSH"
    if target.kind == "nfs":
        # What vmcore-save is given there (and names the dump by), and what it mounts.
        url = target.nfs_url()
        return f"{url}, mounting {NfsUrl.parse(url).device} (NFSv4.2, else NFSv3) after DHCP on its network"
    if target.kind == "ram":
        return f"{target.directory} in its own RAM"
    return f"no device (path {target.directory})"


def _image_member(image: Path, member: str) -> str:
    """The text of ``member`` (a path without the leading /) inside a capture initramfs."""
    unpacked = subprocess.run(["sh", "-c", f"zstd -dc '{image}' | cpio -i --quiet --to-stdout '{member}'"],
                              check=False, capture_output=True, text=True, errors="replace")
    if unpacked.returncode != 0 or not unpacked.stdout:
        reason = unpacked.stderr.strip().splitlines()[-1] if unpacked.stderr.strip() else "not in the image"
        raise CollectorError(f"{image}:/{member}: cannot be read ({reason}): "
                             f"rebuild the image ({PROGRAM} build-initramfs)")
    return unpacked.stdout


def image_config(image: Path) -> configuration.Config:
    """The configuration a capture initramfs carries: what the capture kernel will do."""
    return configuration.parse(_image_member(image, "etc/vmcore-collector.conf"), f"{image}:/etc/vmcore-collector.conf")


# What build-initramfs writes into the image, so that status knows an image it built from
# any other file (a distribution's initramfs, a garbage file) and for which kernel it is.
IMAGE_MANIFEST = "etc/vmcore-collector/image.json"


def _image_manifest_text(kernel_version: str) -> str:
    from ..version import version

    try:
        built_by = f"{PROGRAM} {version()}"
    except CollectorError:  # a checkout without package metadata
        built_by = f"{PROGRAM} (version unknown)"
    return json.dumps({"built_by": built_by, "kernel_version": kernel_version,
                       "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1) + "\n"


def image_manifest(image: Path) -> dict[str, str]:
    """The manifest build-initramfs wrote into ``image``; CollectorError if it has none."""
    try:
        manifest = json.loads(_image_member(image, IMAGE_MANIFEST))
    except CollectorError:
        raise CollectorError(f"{image} was not built by {PROGRAM} (no /{IMAGE_MANIFEST} inside): "
                             f"rebuild it ({PROGRAM} build-initramfs)") from None
    except ValueError:
        raise CollectorError(f"{image}:/{IMAGE_MANIFEST} is damaged: rebuild it ({PROGRAM} build-initramfs)") from None
    if not isinstance(manifest, dict) or not str(manifest.get("built_by", "")).startswith(PROGRAM):
        raise CollectorError(f"{image}:/{IMAGE_MANIFEST} does not name {PROGRAM}: "
                             f"rebuild it ({PROGRAM} build-initramfs)")
    return {str(key): str(value) for key, value in manifest.items()}


def crashkernel_check(config: configuration.Config, image: Path,
                      struct_page_bytes: int = estimation.STRUCT_PAGE_BYTES) -> tuple[bool, str]:
    """(the reservation holds what the capture needs, the line that says so)."""
    reserved = crash_kernel_reserved()
    kernel = estimation.kernel_image_bytes()
    if kernel is None:
        return False, "crashkernel: cannot size the kernel (/proc/iomem hides its addresses): run as root"
    if not image.exists():
        return False, f"crashkernel: cannot size the capture image, {image} is missing (run {PROGRAM} build-initramfs)"
    need = estimation.crashkernel_need(config, reserved, image.stat().st_size, _unpacked_size(image), kernel,
                                       struct_page_bytes)
    verdict = (f"{reserved / 2**20:.0f} MiB reserved: enough" if reserved >= need.total
               else f"{reserved / 2**20:.0f} MiB reserved: NOT enough, boot with crashkernel={need.total >> 20}M")
    return reserved >= need.total, (f"crashkernel: the capture needs about {need.total >> 20} MiB "
                                    f"({need.text()}); {verdict}")


def estimate(args: argparse.Namespace) -> int:
    """Print the dump sizes and times per dump level and the crashkernel check; 0 if the
    reservation is enough, 1 if not."""
    loaded = _load_config(args)
    found = estimation.estimate_dumps(loaded, _say, args.kcore)
    for text in estimation.estimate_lines(loaded, found):
        print(text)
    image = Path(args.initrd or _default_image(os.uname().release))
    enough, text = crashkernel_check(loaded, image, found.struct_page_bytes)
    print(text)
    return EXIT_OK if enough else EXIT_FAILED


def status(args: argparse.Namespace) -> int:
    """Print what would happen on a crash; 0 if a crash would be captured, 1 if not."""
    problems = 0

    def line(ok: bool, text: str) -> None:
        nonlocal problems
        problems += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {text}")

    reserved = crash_kernel_reserved()
    line(reserved > 0, f"crashkernel: {reserved / 2**20:.0f} MiB reserved" if reserved
         else "crashkernel: nothing reserved (boot with crashkernel=256M)")
    line(crash_kernel_loaded(), "capture kernel: " + ("loaded" if crash_kernel_loaded() else
                                                      f"not loaded (run {PROGRAM} arm)"))
    try:
        loaded = _load_config(args)
    except CollectorError as e:
        line(False, f"config: {e}")
        return EXIT_FAILED
    config_name = _config_file(args)
    line(True, f"config: {config_name} valid, {len(loaded.targets)} target(s), "
         f"final_action {loaded.final_action}, failure_action {loaded.failure_action}")
    image = Path(args.initrd or _default_image(os.uname().release))
    ours = image.exists() and image_check(image, Path(config_name), line)
    if ours:
        line(*crashkernel_check(loaded, image))
    elif not image.exists():
        line(False, f"initramfs: {image} missing (run {PROGRAM} build-initramfs)")
    # The image's targets are what the capture kernel uses; without one of ours, what building
    # one here would record.
    try:
        landed = image_config(image).targets if ours else mounts.with_landing_disks(loaded).targets
    except CollectorError as e:
        line(False, f"targets: {e}")
        return EXIT_FAILED
    if any(target.kind == "ssh" for target in loaded.targets):
        problem = checks.ssh_key_problem(loaded.ssh_key)
        line(problem is None, f"ssh key: {problem or f'{loaded.ssh_key} readable'}")
    if len(landed) != len(loaded.targets):
        line(False, f"initramfs: built for {len(landed)} target(s), {config_name} has {len(loaded.targets)}: "
             f"rebuild it ({PROGRAM} build-initramfs)")
        asked = landed
    else:
        asked = loaded.targets
    for wanted, target in zip(asked, landed):
        reason = target_reachable(target)
        line(reason is None, f"target {wanted.describe()}: the capture kernel saves to {lands_on(target)}: "
             + ("reachable" if reason is None else reason))
        if wanted.kind == "ssh":
            # Not at the top: importing the SSH package loads paramiko, which the capture
            # image carries only for an SSH target.
            from ..targets.ssh.url import SshUrl

            url = SshUrl.parse(wanted.ssh_url())
            problem = checks.known_hosts_holds(loaded.known_hosts, url.host, url.port)
            line(problem is None, f"known_hosts: {problem or f'{loaded.known_hosts} holds the key of {url.host}'}")
        if reason is not None and wanted.needs_network:
            continue  # a probe would only wait for the same server and fail again
        try:
            line(True, f"target {wanted.describe()}: {checks.probe_target(wanted, loaded)}")
        except checks.NotProbed as e:
            print(f"--   target {wanted.describe()}: not probed from here: {e}")
        except CollectorError as e:
            line(False, f"target {wanted.describe()}: {e}")
    return EXIT_FAILED if problems else EXIT_OK


def image_check(image: Path, config_file: Path, line: Callable[[bool, str], None]) -> bool:
    """Print whether ``image`` is a capture image this tool built for the running kernel
    after the last change of ``config_file``; whether it is one this tool built."""
    try:
        manifest = image_manifest(image)
    except CollectorError as e:
        line(False, f"initramfs: {e}")
        return False
    release = os.uname().release
    size = f"{image.stat().st_size / 2**20:.1f} MiB"
    if manifest.get("kernel_version") != release:
        line(False, f"initramfs: {image} is for kernel {manifest.get('kernel_version')}, this one is {release}: "
             f"rebuild it ({PROGRAM} build-initramfs)")
    elif config_file.exists() and config_file.stat().st_mtime > image.stat().st_mtime:
        line(False, f"initramfs: {image} is older than {config_file}: rebuild it ({PROGRAM} build-initramfs)")
    else:
        line(True, f"initramfs: {image} ({size}), built by {manifest.get('built_by')} for {release} "
             f"on {manifest.get('built')}")
    return True


if __name__ == "__main__":
    sys.exit(main())
