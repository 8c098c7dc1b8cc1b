"""The capture configuration: /etc/vmcore-collector.conf, a Fedora /etc/kdump.conf, or a Debian
/etc/default/kdump-tools (kdump_tools.py).

All are read into one :class:`Config`. Every problem is one line naming the file, the line
and what is wrong, so a machine is never armed with a configuration that cannot work.

Our format, one setting per line (``#`` starts a comment)::

    target = disk /dev/vda ext4 /var/crash   # DEVICE (or LABEL=/UUID=) FSTYPE [DIRECTORY]
    target = ssh root@192.0.2.1:22 /var/crash
    target = nfs 192.0.2.1:/export /var/crash
    target = path /var/crash                   # on the file system holding it (kdump's path)
    target = ram /var/crash                    # the capture environment's RAM: for tests only
    ssh_key = /root/.ssh/vmcore_id_ed25519
    known_hosts = /root/.ssh/known_hosts
    dump_level = 31
    compress = zstd            # zstd | zlib | none
    compress_level = 1
    threads = 1
    failure_action = reboot    # reboot | halt | poweroff | shell
    final_action = reboot      # reboot | halt | poweroff
    pre_hook = /usr/local/sbin/before-dump   # repeatable, run in order with sh -c
    post_hook = /usr/local/sbin/after-dump
    wait_seconds = 30          # how long to wait for a disk or a network address
    keep_dumps = 5             # disk, path and nfs targets: remove the oldest dumps beyond 5
    min_free = 2G              # ... and keep 2 GiB free (the dump stops short, incomplete)
    modules = virtio_blk e1000 # extra kernel modules for the capture initramfs

Targets are tried in the order given: the dump goes to the first one that works.

``path`` means what kdump.conf's ``path`` without a target line means: the folder on the file
system that holds it in the running system (usually the root file system). build-initramfs
records which device that is (collector/mounts.py) and the image carries it as a disk target;
the capture kernel mounts it. A dump is written into the capture environment's own RAM only
with ``ram``, which is lost at final_action: it exists to test the capture environment.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import makedumpfile_args
from ..dump_level import MAX_DUMP_LEVEL
from ..errors import CollectorError
from ..pipeline.compression import LEVEL_RANGES, METHODS
from ..sizes import parse_size
from .paths import CONFIG_PATH

TARGET_KINDS = ("disk", "ssh", "nfs", "path", "ram")
FINAL_ACTIONS = ("reboot", "halt", "poweroff")
FAILURE_ACTIONS = FINAL_ACTIONS + ("shell",)
DEFAULT_DIRECTORY = "/var/crash"
_SSH_HOST = re.compile(r"^(?P<user>[^@\s/]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s/\[\]]+)(?::(?P<port>\d+))?$")


class ConfigError(CollectorError):
    """A configuration problem: one line, ``FILE:LINE: what``."""


@dataclass(frozen=True)
class Target:
    """One place a dump may go. ``source`` is the device (disk), ``user@host[:port]`` (ssh),
    ``server:/export`` (nfs) or empty (path, ram); ``directory`` is where dumps go below it."""

    kind: str
    source: str
    directory: str
    fstype: str = ""  # disk only

    @property
    def needs_network(self) -> bool:
        return self.kind in ("ssh", "nfs")

    def ssh_url(self) -> str:
        """``ssh://user@host[:port]/directory`` for vmcore-save."""
        return f"ssh://{self.source}{self.directory}"

    def nfs_url(self) -> str:
        """``nfs://server/export/directory`` for vmcore-save: the directory is mounted as a
        path below the export (NFSv4 servers, and most v3 ones, allow that)."""
        server, _, export = self.source.partition(":")
        return f"nfs://{server}{export.rstrip('/')}{self.directory if self.directory != '/' else ''}"

    def describe(self) -> str:
        if self.kind == "disk":
            return f"disk {self.source} ({self.fstype}) {self.directory}"
        if self.kind in ("path", "ram"):
            return f"{self.kind} {self.directory}"
        return f"{self.kind} {self.source} {self.directory}"


@dataclass(frozen=True)
class Config:
    targets: tuple[Target, ...] = ()
    ssh_key: str | None = None
    known_hosts: str | None = None
    dump_level: int = 31
    compress: str = "zstd"
    compress_level: int = 1
    threads: int = 1
    failure_action: str = "reboot"
    final_action: str = "reboot"
    pre_hooks: tuple[str, ...] = ()
    post_hooks: tuple[str, ...] = ()
    wait_seconds: int = 30
    keep_dumps: int | None = None
    min_free: str = ""
    modules: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)  # directives read but not used

    @property
    def needs_network(self) -> bool:
        return any(target.needs_network for target in self.targets)


def load(path: str | Path = CONFIG_PATH) -> Config:
    """Read and validate our configuration file."""
    return parse(read_text(path), str(path))


def load_kdump_conf(path: str | Path) -> Config:
    """Read and validate a Fedora kdump.conf."""
    return parse_kdump_conf(read_text(path), str(path))


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None


_HOOK_KEYS = ("pre_hook", "post_hook", "kdump_pre", "kdump_post")


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, content) of each setting. ``#`` at the start of a line or after a blank
    starts a comment, except in hook commands, which are passed to the shell whole."""
    result = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(_HOOK_KEYS):
            line = re.split(r"\s#", line, maxsplit=1)[0].strip()
        result.append((number, line))
    return result


def parse(text: str, name: str = CONFIG_PATH) -> Config:
    """Our ``key = value`` format (see the module docstring)."""
    values: dict[str, object] = {}
    targets: list[Target] = []
    pre_hooks: list[str] = []
    post_hooks: list[str] = []
    for number, line in _lines(text):
        where = f"{name}:{number}"
        key, equals, value = (part.strip() for part in line.partition("="))
        if not equals or not value or key not in _KEYS:
            _refuse_foreign_line(line, where)
        if not equals or not value:
            raise ConfigError(f"{where}: expected 'key = value', got {line!r}")
        if key == "target":
            targets.append(_parse_target(value, where))
        elif key == "pre_hook":
            pre_hooks.append(value)
        elif key == "post_hook":
            post_hooks.append(value)
        elif key in ("ssh_key", "known_hosts"):
            values[key] = absolute(value, key, where)
        elif key in ("dump_level", "compress_level", "threads", "wait_seconds", "keep_dumps"):
            values[key] = integer(value, key, where)
        elif key in ("compress", "failure_action", "final_action", "min_free"):
            values[key] = value
        elif key == "modules":
            values[key] = tuple(value.split())
        else:
            raise ConfigError(f"{where}: unknown setting {key!r}")
    return validated(Config(targets=tuple(targets), pre_hooks=tuple(pre_hooks), post_hooks=tuple(post_hooks),
                             **values), name)  # type: ignore[arg-type]


_KEYS = ("target", "pre_hook", "post_hook", "ssh_key", "known_hosts", "dump_level", "compress_level", "threads",
         "wait_seconds", "keep_dumps", "compress", "failure_action", "final_action", "min_free", "modules")


def _refuse_foreign_line(line: str, where: str) -> None:
    """A line of another tool's configuration given as ours: say which option reads it."""
    if re.match(r"(export\s+)?[A-Z][A-Z0-9_]*=", line):
        raise ConfigError(f"{where}: {line!r} is a shell variable, as in Debian's /etc/default/kdump-tools: "
                          "read that file with --kdump-tools FILE")
    words = line.split()
    if words[0] in _KDUMP_DIRECTIVES and words[1:2] != ["="]:
        raise ConfigError(f"{where}: {line!r} is a kdump.conf directive: read a kdump.conf with --kdump-conf FILE")


def _parse_target(value: str, where: str) -> Target:
    words = value.split()
    kind, rest = words[0], words[1:]
    if kind not in TARGET_KINDS:
        raise ConfigError(f"{where}: target kind {kind!r} is not one of {', '.join(TARGET_KINDS)}")
    if kind in ("path", "ram"):
        if len(rest) != 1:
            raise ConfigError(f"{where}: expected 'target = {kind} DIRECTORY'")
        return Target(kind, "", absolute(rest[0], kind, where))
    if kind == "disk":
        if len(rest) not in (2, 3):
            raise ConfigError(f"{where}: expected 'target = disk DEVICE FSTYPE [DIRECTORY]'")
        return _disk_target(rest[0], rest[1], rest[2] if len(rest) == 3 else DEFAULT_DIRECTORY, where)
    if len(rest) not in (1, 2):
        raise ConfigError(f"{where}: expected 'target = {kind} "
                          f"{'USER@HOST[:PORT]' if kind == 'ssh' else 'SERVER:/EXPORT'} [DIRECTORY]'")
    directory = absolute(rest[1], "directory", where) if len(rest) == 2 else DEFAULT_DIRECTORY
    return ssh_target(rest[0], directory, where) if kind == "ssh" else nfs_target(rest[0], directory, where)


def _disk_target(device: str, fstype: str, directory: str, where: str) -> Target:
    if not (device.startswith("/dev/") or device.startswith(("LABEL=", "UUID="))):
        raise ConfigError(f"{where}: disk {device!r} is not /dev/..., LABEL=... or UUID=...")
    if not re.fullmatch(r"[a-z0-9]+", fstype):
        raise ConfigError(f"{where}: {fstype!r} is not a file system type (ext4, xfs, ...)")
    return Target("disk", device, absolute(directory, "directory", where), fstype)


def ssh_target(source: str, directory: str, where: str) -> Target:
    if not _SSH_HOST.match(source):
        raise ConfigError(f"{where}: ssh target {source!r} is not USER@HOST[:PORT]")
    return Target("ssh", source, directory)


def nfs_target(source: str, directory: str, where: str) -> Target:
    server, colon, export = source.partition(":")
    if not server or not colon or not export.startswith("/"):
        raise ConfigError(f"{where}: nfs target {source!r} is not SERVER:/EXPORT")
    return Target("nfs", source, directory)


def absolute(value: str, what: str, where: str) -> str:
    if not value.startswith("/"):
        raise ConfigError(f"{where}: {what} {value!r} must be an absolute path")
    return value


def integer(value: str, what: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{where}: {what} {value!r} is not a whole number") from None


def validated(config: Config, name: str) -> Config:
    if not config.targets:
        raise ConfigError(f"{name}: no target: add a line like 'target = disk /dev/sdb1 ext4 /var/crash'")
    checks = [
        (0 <= config.dump_level <= MAX_DUMP_LEVEL, f"dump_level {config.dump_level} is not in 0-{MAX_DUMP_LEVEL}"),
        (config.compress in METHODS, f"compress {config.compress!r} is not one of {', '.join(METHODS)}"),
        *((low <= config.compress_level <= high,
           f"compress_level {config.compress_level} is not in {low}-{high} for {method}")
          for method, (low, high) in LEVEL_RANGES.items() if config.compress == method),
        (config.threads >= 1, "threads must be at least 1"),
        (config.wait_seconds >= 1, "wait_seconds must be at least 1"),
        (config.keep_dumps is None or config.keep_dumps >= 1, "keep_dumps must be at least 1 (the new dump)"),
        (config.failure_action in FAILURE_ACTIONS,
         f"failure_action {config.failure_action!r} is not one of {', '.join(FAILURE_ACTIONS)}"),
        (config.final_action in FINAL_ACTIONS,
         f"final_action {config.final_action!r} is not one of {', '.join(FINAL_ACTIONS)}"),
        (not any(t.kind == "ssh" for t in config.targets) or config.ssh_key is not None,
         "an ssh target needs ssh_key (the capture kernel has no agent and no password prompt)"),
        (not any(t.kind == "ssh" for t in config.targets) or config.known_hosts is not None,
         "an ssh target needs known_hosts holding the server's host key (nobody can confirm it at capture time)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{name}: {message}")
    if config.min_free:
        try:
            parse_size(config.min_free, "min_free")
        except CollectorError as e:
            raise ConfigError(f"{name}: {e}") from None
    return config


def render(config: Config) -> str:
    """``config`` in our format: what the capture initramfs carries."""
    lines = ["# Written by vmcore-collector build-initramfs"]
    for target in config.targets:
        if target.kind in ("path", "ram"):
            lines.append(f"target = {target.kind} {target.directory}")
        elif target.kind == "disk":
            lines.append(f"target = disk {target.source} {target.fstype} {target.directory}")
        else:
            lines.append(f"target = {target.kind} {target.source} {target.directory}")
    optional = {"ssh_key": config.ssh_key, "known_hosts": config.known_hosts,
                "modules": " ".join(config.modules) or None, "keep_dumps": config.keep_dumps,
                "min_free": config.min_free or None}
    lines += [f"{key} = {value}" for key, value in optional.items() if value]
    for key in ("dump_level", "compress", "compress_level", "threads", "failure_action", "final_action",
                "wait_seconds"):
        lines.append(f"{key} = {getattr(config, key)}")
    lines += [f"pre_hook = {hook}" for hook in config.pre_hooks]
    lines += [f"post_hook = {hook}" for hook in config.post_hooks]
    return "\n".join(lines) + "\n"


# Fedora kdump.conf -----------------------------------------------------------------------------

# Directives that only matter to Fedora's own tooling: read, noted, not used.
_KDUMP_IGNORED = ("auto_reset_crashkernel", "dracut_args", "extra_bins", "fence_kdump_args",
                  "fence_kdump_nodes", "force_rebuild", "force_no_rebuild", "kdump_post_hook",
                  "sshkey_hostkey", "blacklist", "options", "link_delay", "disk_timeout")
_KDUMP_FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "minix")
_KDUMP_ACTIONS = {"reboot": "reboot", "halt": "halt", "poweroff": "poweroff", "shell": "shell"}
_KDUMP_DIRECTIVES = frozenset((*_KDUMP_IGNORED, *_KDUMP_FILESYSTEMS, "path", "ssh", "nfs", "raw", "sshkey",
                               "core_collector", "failure_action", "default", "final_action", "kdump_pre",
                               "kdump_post", "extra_modules"))


def parse_kdump_conf(text: str, name: str = "/etc/kdump.conf") -> Config:
    """Fedora's kdump.conf: one target (path, FSTYPE DEVICE, ssh + sshkey, nfs), core_collector
    (makedumpfile's options: :func:`makedumpfile_values`), failure_action (or default, with
    dump_to_rootfs: the path on the root file system as a second target), final_action,
    kdump_pre/kdump_post."""
    directory = DEFAULT_DIRECTORY
    to_rootfs = False
    location: tuple[str, str, str, str] | None = None  # kind, source, fstype, where
    values: dict[str, object] = {}
    pre_hooks: list[str] = []
    post_hooks: list[str] = []
    warnings: list[str] = []
    for number, line in _lines(text):
        where = f"{name}:{number}"
        directive, _, value = line.partition(" ")
        value = value.strip()
        if directive in _KDUMP_IGNORED:
            warnings.append(f"{where}: {directive} is not used by vmcore-collector")
            continue
        if not value:
            raise ConfigError(f"{where}: {directive} needs a value")
        if directive == "path":
            directory = absolute(value, "path", where)
        elif directive in _KDUMP_FILESYSTEMS or directive in ("ssh", "nfs", "raw"):
            if directive == "raw":
                raise ConfigError(f"{where}: raw device targets are not supported; use a file system")
            if location is not None:
                raise ConfigError(f"{where}: a second dump target ({directive}); kdump.conf allows one")
            kind = directive if directive in ("ssh", "nfs") else "disk"
            location = (kind, value, directive if kind == "disk" else "", where)
        elif directive == "sshkey":
            values["ssh_key"] = absolute(value, "sshkey", where)
        elif directive == "core_collector":
            values.update(_core_collector(value, where, warnings))
        elif directive in ("failure_action", "default") and value == "dump_to_rootfs":
            to_rootfs = True
        elif directive in ("failure_action", "default", "final_action"):
            action = _KDUMP_ACTIONS.get(value, "")
            allowed = FINAL_ACTIONS if directive == "final_action" else FAILURE_ACTIONS
            if action not in allowed:
                raise ConfigError(f"{where}: {directive} {value!r} is not one of {', '.join(allowed)}")
            values["final_action" if directive == "final_action" else "failure_action"] = action
        elif directive == "kdump_pre":
            pre_hooks.append(value)
        elif directive == "kdump_post":
            post_hooks.append(value)
        elif directive == "extra_modules":
            values["modules"] = tuple(value.split())
        else:
            raise ConfigError(f"{where}: unknown kdump.conf directive {directive!r}")
    if location is None:
        targets: tuple[Target, ...] = (Target("path", "", directory),)
    else:
        kind, source, fstype, where = location
        if kind == "disk":
            targets = (_disk_target(source, fstype, directory, where),)
        elif kind == "ssh":
            targets = (ssh_target(source, directory, where),)
        else:
            targets = (nfs_target(source, directory, where),)
        if kind == "ssh":
            values.setdefault("ssh_key", "/root/.ssh/kdump_id_rsa")  # Fedora's default sshkey
            values["known_hosts"] = "/root/.ssh/known_hosts"  # where kdumpctl propagate records the host key
    if to_rootfs:
        # kdump-utils saves to the path on the root file system when the target failed, then
        # does final_action: here a path target is tried next, which lands on the file system
        # holding the path (the root one, unless the path is a mount point of its own).
        if targets[0].kind != "path":
            targets += (Target("path", "", directory),)
        values["failure_action"] = values.get("final_action", Config.final_action)
    config = Config(targets=targets, pre_hooks=tuple(pre_hooks), post_hooks=tuple(post_hooks),
                    warnings=tuple(warnings), **values)  # type: ignore[arg-type]
    return validated(config, name)


def _core_collector(value: str, where: str, warnings: list[str]) -> dict[str, object]:
    words = shlex.split(value)
    if not words or Path(words[0]).name != "makedumpfile":
        raise ConfigError(f"{where}: core_collector {words[0] if words else ''!r} is not supported; "
                          "only makedumpfile options are read")
    return makedumpfile_values(words[1:], where, warnings)


def makedumpfile_values(words: Sequence[str], where: str, warnings: list[str]) -> dict[str, object]:
    """Config values for makedumpfile's options ``words`` as the capture environment uses them
    (collector/makedumpfile_args.py); a line ``WHERE: ...`` in ``warnings`` for each option not
    done as makedumpfile does it. What makedumpfile does without an option is what it gets here:
    no -d keeps every page (dump level 0), no compression option stores pages uncompressed."""
    try:
        read = makedumpfile_args.read_options(words)
    except CollectorError as e:
        raise ConfigError(f"{where}: {e}") from None
    warnings += [f"{where}: {note}" for note in read.notes]
    if read.format == "elf":
        warnings.append(f"{where}: makedumpfile -E (ELF output) is not used: the capture environment writes "
                        "kdump-compressed dumps (vmcore-save --format elf writes ELF)")
    elif read.format == "flat":
        warnings.append(f"{where}: makedumpfile -F (flattened output, for a pipe) is not used: each target "
                        "gets the kdump format, which crash and drgn open")
    values: dict[str, object] = {"dump_level": read.dump_level or 0, "compress": read.compress or "none"}
    if read.level is not None:
        values["compress_level"] = read.level
    if read.threads is not None:
        values["threads"] = read.threads
    return values


def with_image_paths(config: Config, ssh_key: str | None, known_hosts: str | None) -> Config:
    """The same configuration with the key files at their paths inside the capture initramfs."""
    return replace(config, ssh_key=ssh_key, known_hosts=known_hosts)
