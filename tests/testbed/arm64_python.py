"""vmcore-save for the arm64 capture kernel: Debian's arm64 Python 3.11, python-zstandard's
aarch64 wheel and the collector with its page scanner cross-compiled for aarch64.

The Python root is Debian's arm64 packages unpacked (``dpkg -x``) from the arm64 private apt
state (tests/testbed/arm64.py), with zstandard's manylinux2014 aarch64 wheel from PyPI (pip
download --platform) unpacked into its dist-packages; the guest chroots into it over 9p. The
scanner (_fastcopy) is cross-compiled: Cython writes the C on this host, Debian's
gcc-aarch64-linux-gnu compiles it against a sysroot of Debian's arm64 libc6-dev, libzstd-dev,
zlib1g-dev and libpython3.11-dev. Under TCG the pure-Python twin is too slow for CI (46.7 s
native for the 1 GiB arm64 vmcore at -d 31, against 0.7 s compiled). The collector's own files
are staged per crash run, so the guest runs the tree's code of that moment.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from . import arm64, assets
from .errors import TestbedError

# What vmcore-save imports at run time, no more: Python's extension modules whose libraries are
# missing (readline, sqlite, curses...) fail only when imported, and the collector imports none.
RUNTIME_PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1",
                    "zlib1g", "libssl3", "libbz2-1.0", "liblzma5", "libffi8", "libzstd1")
# The cross-compiler's sysroot: headers and link-time libraries of the same arm64 packages.
BUILD_PACKAGES = ("libc6", "libc6-dev", "linux-libc-dev", "libcrypt-dev", "libzstd1", "libzstd-dev", "zlib1g",
                  "zlib1g-dev", "libssl3", "libssl-dev", "libpython3.11-dev")
CROSS_CC = "aarch64-linux-gnu-gcc"
EXT_SUFFIX = ".cpython-311-aarch64-linux-gnu.so"
# Python's own flags for extension modules (sysconfig CFLAGS, CCSHARED) with setup.py's -O3.
CFLAGS = ("-DNDEBUG", "-fwrapv", "-O3", "-Wall", "-fPIC", "-shared")
# Where the guest finds what is staged: PYTHONPATH, mount points inside the read-only root.
COLLECTOR_DIR = "/opt/vmcore-collector"
MOUNT_POINTS = ("proc", "sys", "dev", "tmp", "job", COLLECTOR_DIR.lstrip("/"))
# Bump when the root's contents change (packages, wheel, layout): a new folder is built.
ROOT_VERSION = 1


def _unpack(packages: tuple[str, ...], root: Path) -> None:
    for deb in arm64._apt().download(list(packages), assets.cache_dir() / "debs" / f"{arm64.SUITE}-arm64"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def _zstandard_wheel(dest: Path) -> Path:
    """The aarch64 wheel of the zstandard the host's venv runs (one version in both)."""
    from importlib.metadata import version

    requirement = f"zstandard=={version('zstandard')}"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--platform", "manylinux2014_aarch64", "--python-version", "3.11", "-d", str(dest),
                    requirement], check=True, capture_output=True)
    wheels = sorted(dest.glob("zstandard-*aarch64*.whl"))
    if not wheels:
        raise TestbedError(f"pip download {requirement} for aarch64 left no wheel in {dest}")
    return wheels[-1]


def python_root() -> Path:
    """The arm64 Python root (cached): ``usr/bin/python3.11`` with zstandard importable."""
    with assets.locked("arm64-python"):
        root = assets.cache_dir() / f"python-arm64-v{ROOT_VERSION}"
        if not (root / "READY").exists():
            if root.exists():
                shutil.rmtree(root)
            _unpack(RUNTIME_PACKAGES, root)
            with tempfile.TemporaryDirectory() as wheel_dir:
                with zipfile.ZipFile(_zstandard_wheel(Path(wheel_dir))) as wheel:
                    wheel.extractall(root / "usr" / "lib" / "python3" / "dist-packages")
            arm64.libraries(root, root / "usr" / "bin" / "python3.11")  # all there, or say which is not
            for point in MOUNT_POINTS:
                (root / point).mkdir(parents=True, exist_ok=True)
            (root / "READY").write_text("")
        return root


def _pyx() -> Path:
    return assets.REPO_ROOT / "_fastcopy.pyx"


def _fastcopy_libraries() -> list[str]:
    """What setup.py links the module with (pyproject.toml)."""
    with open(assets.REPO_ROOT / "pyproject.toml", "rb") as pyproject:
        return list(tomllib.load(pyproject)["tool"]["vmcore-collector"]["fastcopy-libraries"])


def fastcopy_module() -> Path:
    """collector._fastcopy for aarch64, cross-compiled once per _fastcopy.pyx, Cython and libraries."""
    if shutil.which(CROSS_CC) is None:
        raise TestbedError(f"the aarch64 page scanner needs {CROSS_CC}: apt-get install gcc-aarch64-linux-gnu")
    import Cython

    libraries = [f"-l{name}" for name in _fastcopy_libraries()]
    key = hashlib.sha256(_pyx().read_bytes() + Cython.__version__.encode() + " ".join((*CFLAGS, *libraries)).encode())
    with assets.locked("arm64-fastcopy"):
        sysroot = assets.cache_dir() / "sysroot-arm64"
        ready = sysroot / "READY"  # names the packages unpacked: a sysroot of other ones is made again
        if not ready.exists() or ready.read_text() != " ".join(BUILD_PACKAGES):
            if sysroot.exists():
                shutil.rmtree(sysroot)
            _unpack(BUILD_PACKAGES, sysroot)
            ready.write_text(" ".join(BUILD_PACKAGES))
        module = assets.cache_dir() / "fastcopy-arm64" / key.hexdigest()[:16] / f"_fastcopy{EXT_SUFFIX}"
        if not module.exists():
            module.parent.mkdir(parents=True, exist_ok=True)
            c_file = module.parent / "_fastcopy.c"
            subprocess.run([sys.executable, "-m", "cython", "-3", str(_pyx()), "-o", str(c_file)], check=True,
                           capture_output=True)
            partial = module.with_suffix(".partial")
            include = sysroot / "usr" / "include"
            result = subprocess.run([CROSS_CC, f"--sysroot={sysroot}", *CFLAGS, f"-I{include / 'python3.11'}",
                                     f"-I{include / 'aarch64-linux-gnu' / 'python3.11'}", str(c_file),
                                     "-o", str(partial), *libraries], capture_output=True, text=True)
            if result.returncode != 0:
                raise TestbedError(f"{CROSS_CC} _fastcopy.c failed:\n{result.stderr[-3000:]}")
            partial.rename(module)
        return module


def collector_sources() -> list[Path]:
    """The files vmcore-save runs from: the collector package and the scanner's source."""
    package = assets.REPO_ROOT / "collector"
    return sorted(path for path in package.rglob("*.py") if "__pycache__" not in path.parts) + [_pyx()]


def collector_hash() -> str:
    """Names the code a dump written inside the guest came from (the cache rebuilds on change)."""
    digest = hashlib.sha256()
    for path in collector_sources():
        digest.update(str(path.relative_to(assets.REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def stage_collector(dest: Path) -> None:
    """Copy the collector package and its aarch64 scanner into ``dest``, the guest's
    COLLECTOR_DIR (``python3.11 -m collector`` is vmcore-save)."""
    package = assets.REPO_ROOT / "collector"
    for path in collector_sources()[:-1]:
        target = dest / path.relative_to(package.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copyfile(fastcopy_module(), dest / "collector" / f"_fastcopy{EXT_SUFFIX}")
