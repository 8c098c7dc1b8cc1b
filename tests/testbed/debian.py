"""Fetch Debian packages by name without touching the machine's own apt setup.

Each Debian suite gets a private apt configuration (sources.list, package lists and
archive cache) under the test-bed cache folder, so later kernel series (trixie's 6.12,
sid's newer ones) can be fetched on a bookworm machine without editing /etc/apt.
Packages are only downloaded and unpacked (``dpkg -x``), never installed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .errors import TestbedError

# The mirror host name the machine's own /etc/apt/sources.list.d/debian.sources uses.
DEBIAN_MIRROR = "http://deb.debian.org"
# debian-archive-keyring on bookworm carries the bookworm and trixie keys.
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Suites searched, in this order, for a kernel package; each maps to its sources.list lines.
SUITE_SOURCES: dict[str, list[str]] = {
    "bookworm": [
        f"{DEBIAN_MIRROR}/debian bookworm main",
        f"{DEBIAN_MIRROR}/debian bookworm-updates main",
        f"{DEBIAN_MIRROR}/debian-security bookworm-security main",
    ],
    "trixie": [
        f"{DEBIAN_MIRROR}/debian trixie main",
        f"{DEBIAN_MIRROR}/debian trixie-updates main",
        f"{DEBIAN_MIRROR}/debian-security trixie-security main",
    ],
    "trixie-backports": [f"{DEBIAN_MIRROR}/debian trixie-backports main"],
    "sid": [f"{DEBIAN_MIRROR}/debian sid main"],
}

# The suite the guest's user-space tools (busybox, kexec-tools) come from: the
# machine's own release, whose kexec-tools is known to work with 6.1 and later.
TOOLS_SUITE = "bookworm"


class PrivateApt:
    """apt-get/apt-cache bound to one suite's private state under ``state_dir``; packages of
    ``architecture`` (arm64 for the arm64 guests) instead of the machine's own."""

    def __init__(self, suite: str, state_dir: Path, architecture: str | None = None) -> None:
        if suite not in SUITE_SOURCES:
            raise TestbedError(f"unknown Debian suite {suite!r}; known: {sorted(SUITE_SOURCES)}")
        self.suite = suite
        self.architecture = architecture
        # apt reads a relative Dir:: option as relative to /var/lib/apt, not to the working folder.
        self.state_dir = state_dir.resolve()

    def _options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.state_dir / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={self.state_dir / 'lists'}",
            "-o", f"Dir::Cache={self.state_dir / 'cache'}",
            # The package list of the machine is irrelevant for downloads.
            "-o", "Dir::State::status=/dev/null",
            # Downloads land in folders the _apt user cannot write to.
            "-o", "APT::Sandbox::User=root",
            *(["-o", f"APT::Architecture={self.architecture}", "-o", f"APT::Architectures={self.architecture}"]
              if self.architecture else []),
        ]

    def update(self, refresh: bool = False) -> None:
        """Write the suite's sources.list and fetch its package lists (once, or on refresh)."""
        lists = self.state_dir / "lists"
        if any(lists.glob("*_Packages*")) and not refresh:
            return
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "sources.list").write_text(
            "".join(f"deb [signed-by={DEBIAN_KEYRING}] {line}\n" for line in SUITE_SOURCES[self.suite])
        )
        _run(["apt-get", *self._options(), "update"])

    def package_names(self, pattern: str) -> list[str]:
        """Names of the suite's packages fully matching the regular expression."""
        self.update()
        out = _run(["apt-cache", *self._options(), "pkgnames"]).stdout
        regex = re.compile(pattern)
        return sorted({name for name in out.split() if regex.fullmatch(name)})

    def download(self, names: list[str], dest: Path) -> list[Path]:
        """Download the candidate .deb of each package into ``dest``; return their paths."""
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        command = ["apt-get", *self._options(), "download", *names]
        try:
            _run(command, cwd=dest)
        except TestbedError:
            # Old lists name versions the mirror has since dropped (security updates).
            self.update(refresh=True)
            _run(command, cwd=dest)
        debs = []
        for name in names:
            matches = sorted(dest.glob(f"{name}_*.deb"))
            if not matches:
                raise TestbedError(f"apt-get download {name} left no .deb in {dest}")
            debs.append(matches[-1])
        return debs

    def depends(self, name: str) -> list[str]:
        """The packages ``name`` depends on directly (names only, alternatives included)."""
        self.update()
        out = _run(["apt-cache", *self._options(), "depends", "--no-recommends", "--no-suggests",
                    "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", name]).stdout
        return sorted({line.split(":", 1)[1].strip().strip("<>") for line in out.splitlines()
                       if line.lstrip(" |").startswith(("Depends:", "PreDepends:"))})

    def recursive_depends(self, name: str) -> list[str]:
        """All packages ``name`` depends on, directly or not (names only)."""
        self.update()
        out = _run([
            "apt-cache", *self._options(), "depends", "--recurse", "--no-recommends",
            "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
            name,
        ]).stdout
        return sorted({line for line in out.splitlines() if line and not line[0].isspace()
                       and not line.startswith("<")})


def extract_deb(deb: Path, dest: Path) -> None:
    """Unpack a .deb's files (no maintainer scripts run) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)])


def kernel_package_pattern(kernel: str) -> str:
    """Regex of the generic amd64 image packages for a series ("6.1") or an exact release.

    bookworm names them linux-image-6.1.0-56-amd64, trixie and later
    linux-image-6.12.118+deb13-amd64; cloud, rt, dbg and unsigned flavours are left out.
    """
    if re.fullmatch(r"\d+\.\d+", kernel):
        return rf"linux-image-{re.escape(kernel)}\.\d+(-\d+|\+deb\d+)-amd64"
    return rf"linux-image-{re.escape(kernel)}"


def kernel_parts(image: str, depends: list[str]) -> list[str]:
    """The packages that together hold ``image``'s kernel and modules.

    Up to 6.12 the linux-image package holds both. From 7.0 on it is an empty package that
    depends on linux-binary-<abi> (lib/modules/<abi>/vmlinuz), linux-modules-<abi> and
    linux-base-<abi> (modules.order and modules.builtin, which depmod needs, config); those
    are its dependencies named for the same <abi>, unlike the unversioned linux-base or kmod.
    """
    abi = image.removeprefix("linux-image-")
    parts = [name for name in depends if re.fullmatch(rf"linux-[a-z]+-{re.escape(abi)}", name)]
    return [image, *sorted(parts)]


def _version_key(package: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", package))


def newest_kernel_image(kernel: str, names: list[str]) -> str | None:
    """Of a suite's package ``names``, the newest image package for ``kernel``, if any."""
    regex = re.compile(kernel_package_pattern(kernel))
    return max((name for name in names if regex.fullmatch(name)), key=_version_key, default=None)


def find_kernel_package(kernel: str, state_root: Path) -> tuple[PrivateApt, str]:
    """The newest kernel image package for ``kernel`` in the first suite that has one."""
    for suite in SUITE_SOURCES:
        apt = PrivateApt(suite, state_root / suite)
        image = newest_kernel_image(kernel, apt.package_names(r"linux-image-.*"))
        if image is not None:
            return apt, image
    raise TestbedError(f"no Debian package matches {kernel_package_pattern(kernel)!r} "
                       f"in suites {list(SUITE_SOURCES)}")


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise TestbedError(f"{' '.join(argv[:3])}... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result
