"""Debian's and Ubuntu's /etc/default/kdump-tools, read into a :class:`~.config.Config`.

kdump-tools sources that file into its shell scripts (kdump-config, the init script). Here it
is read, never run: :func:`parse_assignments` takes the ``VAR=value`` lines the shell would
(quotes, backslashes, comments, ``export``, ``$VAR`` of a variable set earlier in the file)
and refuses anything else with one line naming the line.

What each key becomes follows kdump-config's own use of it (kdump-tools 1.8-1.10):

- local dumps go to KDUMP_COREDIR on the file system holding it (a ``path`` target);
- SSH sends them to KDUMP_COREDIR on the server with SSH_KEY (default
  /root/.ssh/kdump_id_rsa) and the host key in /root/.ssh/known_hosts, as its ssh does;
- NFS is mounted on KDUMP_COREDIR, so the dumps go to the export's top folder;
- KDUMP_NUM_DUMPS keeps that many dumps, for local dumps only (as kdump-config);
- MAKEDUMP_ARGS is read as makedumpfile reads it (collector/makedumpfile_args.py);
- KDUMP_FAIL_CMD becomes the failure action its commands ask for (a shell, reboot, halt,
  poweroff).

Every other key, and every value not done as kdump-tools does it, is one warning line saying
what is used instead.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from . import config as configuration
from .config import DEFAULT_DIRECTORY, Config, ConfigError, Target

KDUMP_TOOLS_PATH = "/etc/default/kdump-tools"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=")
_EXPORT_ONLY = re.compile(r"export(?:[ \t]+[A-Za-z_][A-Za-z0-9_]*)+[ \t]*(?=[\n;#]|$)")  # changes no value
# Characters that end an unquoted word, or that make the shell do more than assign.
_WORD_END = " \t\n;"
_SHELL_SYNTAX = "|&<>()`"

# Keys kdump-tools reads that have no equivalent here, and what is used instead.
_NOT_USED = {
    "KDUMP_KERNEL": "vmcore-collector arm loads /boot/vmlinuz-$(uname -r), or its --kernel",
    "KDUMP_INITRD": "vmcore-collector builds its own capture initramfs (build-initramfs)",
    "KDUMP_KEXEC_ARGS": "vmcore-collector arm runs kexec itself (--kexec-load for the kexec_load call)",
    "KDUMP_CMDLINE": "the capture kernel gets the running kernel's command line with arm's capture settings",
    "KDUMP_CMDLINE_APPEND": "give extra capture-kernel arguments with vmcore-collector arm --append",
    "KDUMP_COMPRESSION": "pages are compressed inside the dump (MAKEDUMP_ARGS), the file is not compressed again",
    "HOSTTAG": "each dump's folder is named after the crashed host's name and the date",
    "NFS_TIMEO": "the NFS target sets its own timeouts (a soft mount; a silent server is given up in bounded time)",
    "NFS_RETRANS": "the NFS target sets its own timeouts (a soft mount; a silent server is given up in bounded time)",
    "NFS_MOUNT_RETRY": "the NFS mount is retried for a bounded time, after wait_seconds for the network",
    "SSH_KDUMP_RETRY": "the SSH target reconnects by itself when the link drops",
    "FTP_USER": "there is no FTP target",
    "FTP_PASSWORD": "there is no FTP target",
    "FTP_PORT": "there is no FTP target",
}
KNOWN_KEYS = frozenset((*_NOT_USED, "USE_KDUMP", "KDUMP_COREDIR", "KDUMP_FAIL_CMD", "KDUMP_DUMP_DMESG",
                        "KDUMP_NUM_DUMPS", "MAKEDUMP_ARGS", "NFS", "SSH", "SSH_KEY", "FTP"))
_SHELLS = ("sh", "bash", "dash", "ash", "busybox")
_ACTIONS = {"reboot": "reboot", "halt": "halt", "poweroff": "poweroff", "shutdown": "poweroff"}


def load_kdump_tools(path: str | Path = KDUMP_TOOLS_PATH) -> Config:
    """Read and validate a Debian /etc/default/kdump-tools."""
    return parse_kdump_tools(configuration.read_text(path), str(path))


def parse_assignments(text: str, name: str = KDUMP_TOOLS_PATH) -> dict[str, tuple[str, int]]:
    """``VAR -> (value, line number)`` of the assignments in shell ``text``, the last one of a
    variable winning, as when the shell runs it. Anything that is not an assignment (a
    command, a substitution, a variable the file does not set) is one ConfigError naming
    ``name`` and the line."""
    values: dict[str, tuple[str, int]] = {}
    position = 0
    assigned_on_line = False  # a word after an assignment on its line: a value meant to have spaces
    while position < len(text):
        char = text[position]
        if char in _WORD_END:
            assigned_on_line = assigned_on_line and char not in "\n;"
            position += 1
        elif char == "#":
            end = text.find("\n", position)
            position = len(text) if end < 0 else end
        else:
            line = _line_of(text, position)
            export = _EXPORT_ONLY.match(text, position)
            if export:
                position = export.end()
                continue
            match = _ASSIGNMENT.match(text, position)
            if not match and assigned_on_line:
                raise ConfigError(f"{name}:{line}: {_line_text(text, position)!r}: a value with spaces needs quotes "
                                  '(VAR="a b")')
            if not match:
                raise ConfigError(f"{name}:{line}: {_line_text(text, position)!r} is not a VAR=value assignment "
                                  "(the file is read, not run)")
            value, position = _word(text, match.end(), values, name)
            values[match.group(1)] = (value, line)
            assigned_on_line = True
    return values


def _word(text: str, position: int, values: dict[str, tuple[str, int]], name: str) -> tuple[str, int]:
    """The value of the shell word at ``position`` and where it ends."""
    parts: list[str] = []
    start = position
    while position < len(text) and text[position] not in _WORD_END:
        char = text[position]
        where = f"{name}:{_line_of(text, position)}"
        if char == "'":
            end = text.find("'", position + 1)
            if end < 0:
                raise ConfigError(f"{where}: a ' quote that is never closed")
            parts.append(text[position + 1:end])
            position = end + 1
        elif char == '"':
            position += 1
            while True:
                if position >= len(text):
                    raise ConfigError(f"{where}: a \" quote that is never closed")
                char = text[position]
                if char == '"':
                    position += 1
                    break
                if char == "\\" and position + 1 < len(text) and text[position + 1] in '$`"\\\n':
                    if text[position + 1] != "\n":  # backslash-newline joins the lines
                        parts.append(text[position + 1])
                    position += 2
                elif char == "$":
                    expanded, position = _expansion(text, position, values, where)
                    parts.append(expanded)
                elif char == "`":
                    raise ConfigError(f"{where}: a command substitution (`...`) is not read: write the value itself")
                else:
                    parts.append(char)
                    position += 1
        elif char == "\\":
            if position + 1 < len(text) and text[position + 1] != "\n":
                parts.append(text[position + 1])
            position += 2
        elif char == "$":
            # An assignment's value is not split into words nor matched against file names.
            expanded, position = _expansion(text, position, values, where)
            parts.append(expanded)
        elif char == "~" and (position == start or text[position - 1] == ":"):
            raise ConfigError(f"{where}: ~ would be the home folder of whoever runs the file: write the path")
        elif char in _SHELL_SYNTAX:
            raise ConfigError(f"{where}: {_line_text(text, position)!r} is shell syntax, not a VAR=value "
                              "assignment (the file is read, not run)")
        else:
            parts.append(char)
            position += 1
    return "".join(parts), position


def _expansion(text: str, position: int, values: dict[str, tuple[str, int]], where: str) -> tuple[str, int]:
    """``$NAME`` or ``${NAME}`` at ``position``: the value the file gave NAME before."""
    braced = text.startswith("${", position)
    match = _NAME.match(text, position + (2 if braced else 1))
    if not match or (braced and not text.startswith("}", match.end())):
        raise ConfigError(f"{where}: only $NAME and ${{NAME}} of a variable set above are read: "
                          "write the value itself")
    if match.group() not in values:
        raise ConfigError(f"{where}: ${match.group()} is not set above in this file: write the value itself")
    return values[match.group()][0], match.end() + (1 if braced else 0)


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _line_text(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return text[start:len(text) if end < 0 else end].strip()


def parse_kdump_tools(text: str, name: str = KDUMP_TOOLS_PATH) -> Config:
    """The Config for Debian's kdump-tools settings ``text`` (see the module docstring)."""
    assigned = parse_assignments(text, name)
    warnings: list[str] = []

    def value(key: str) -> str:
        return assigned[key][0] if key in assigned else ""

    def where(key: str) -> str:
        return f"{name}:{assigned[key][1]}"

    for key in sorted(assigned, key=lambda k: assigned[k][1]):
        if key in _NOT_USED and value(key):
            warnings.append(f"{where(key)}: {key} is not used: {_NOT_USED[key]}")
        elif key not in KNOWN_KEYS:
            warnings.append(f"{where(key)}: {key} is not a kdump-tools setting: not used")
    if value("USE_KDUMP") not in ("", "0", "1"):
        raise ConfigError(f"{where('USE_KDUMP')}: USE_KDUMP {value('USE_KDUMP')!r} is not 0 or 1")
    if value("USE_KDUMP") != "1":
        warnings.append(f"{where('USE_KDUMP') if 'USE_KDUMP' in assigned else name}: USE_KDUMP is not 1, so "
                        "kdump-tools is off: vmcore-collector arms when vmcore-collector arm runs, whatever it says")
    values: dict[str, object] = {}
    directory = DEFAULT_DIRECTORY
    if value("KDUMP_COREDIR"):
        directory = configuration.absolute(value("KDUMP_COREDIR"), "KDUMP_COREDIR", where("KDUMP_COREDIR"))
    targets = _targets(assigned, directory, name, warnings)
    if any(target.kind == "ssh" for target in targets):
        values["ssh_key"] = (configuration.absolute(value("SSH_KEY"), "SSH_KEY", where("SSH_KEY")) if value("SSH_KEY")
                             else "/root/.ssh/kdump_id_rsa")  # kdump-config's default
        values["known_hosts"] = "/root/.ssh/known_hosts"  # what its ssh reads
    elif value("SSH_KEY"):
        warnings.append(f"{where('SSH_KEY')}: SSH_KEY is not used: SSH is not set")
    if value("MAKEDUMP_ARGS"):
        try:
            words = shlex.split(value("MAKEDUMP_ARGS"))
        except ValueError as e:
            raise ConfigError(f"{where('MAKEDUMP_ARGS')}: MAKEDUMP_ARGS: {e}") from None
        values.update(configuration.makedumpfile_values(words, where("MAKEDUMP_ARGS"), warnings))
    if value("KDUMP_NUM_DUMPS"):
        keep = configuration.integer(value("KDUMP_NUM_DUMPS"), "KDUMP_NUM_DUMPS", where("KDUMP_NUM_DUMPS"))
        if keep < 0:
            raise ConfigError(f"{where('KDUMP_NUM_DUMPS')}: KDUMP_NUM_DUMPS {keep} is negative (0: keep every dump)")
        if keep and targets[0].kind != "path":
            warnings.append(f"{where('KDUMP_NUM_DUMPS')}: KDUMP_NUM_DUMPS is not used: kdump-tools keeps "
                            "that many dumps only when they are saved locally")
        elif keep:
            values["keep_dumps"] = keep
    if value("KDUMP_DUMP_DMESG") not in ("", "1"):
        warnings.append(f"{where('KDUMP_DUMP_DMESG')}: KDUMP_DUMP_DMESG={value('KDUMP_DUMP_DMESG')} is not used: "
                        "the kernel log is always saved beside the dump (vmcore-dmesg.txt)")
    if value("KDUMP_FAIL_CMD"):
        values["failure_action"] = _failure_action(value("KDUMP_FAIL_CMD"), where("KDUMP_FAIL_CMD"), warnings)
    # In the file's order, as a reader goes through it.
    warnings.sort(key=lambda warning: _line_number(warning, name))
    config = Config(targets=targets, warnings=tuple(warnings), **values)  # type: ignore[arg-type]
    return configuration.validated(config, name)


def _line_number(warning: str, name: str) -> int:
    """N of a warning ``NAME:N: ...``; 0 for one about the whole file."""
    match = re.match(r"(\d+):", warning[len(name) + 1:])
    return int(match.group(1)) if match else 0


def _targets(assigned: dict[str, tuple[str, int]], directory: str, name: str,
             warnings: list[str]) -> tuple[Target, ...]:
    """kdump-config saves to each of FTP, SSH and NFS that is set, locally only when none is."""
    targets: list[Target] = []
    if "SSH" in assigned and assigned["SSH"][0]:
        targets.append(configuration.ssh_target(assigned["SSH"][0], directory, f"{name}:{assigned['SSH'][1]}"))
    if "NFS" in assigned and assigned["NFS"][0]:
        # kdump-config mounts the export on KDUMP_COREDIR: the dumps go to its top folder.
        targets.append(configuration.nfs_target(assigned["NFS"][0], "/", f"{name}:{assigned['NFS'][1]}"))
    ftp = assigned.get("FTP", ("", 0))
    if ftp[0]:
        if not targets:
            raise ConfigError(f"{name}:{ftp[1]}: FTP targets are not supported: set SSH or NFS instead")
        warnings.append(f"{name}:{ftp[1]}: FTP is not used (no FTP target): the dump goes to "
                        f"{targets[0].describe()}")
    if len(targets) > 1:
        warnings.append(f"{name}:{assigned['NFS'][1]}: SSH and NFS are both set: kdump-tools saves to both, "
                        "vmcore-collector to the first that works (SSH, then NFS)")
    return tuple(targets) or (Target("path", "", directory),)


def _failure_action(command: str, where: str, warnings: list[str]) -> str:
    """The failure action KDUMP_FAIL_CMD asks for: a shell if it starts one (the emergency
    shell reboots when it ends, as ``/bin/bash; reboot -f`` does), else its first reboot, halt
    or poweroff, else reboot. Other commands (echo, logger) are not run: one warning. The
    commands are read as the sequence the documented examples mean (kdump-tools' init script
    expands the variable unquoted, where a ``;`` inside would not separate them)."""
    try:
        commands = [shlex.split(part) for part in re.split(r"[;&|\n]+", command)]
    except ValueError as e:
        raise ConfigError(f"{where}: KDUMP_FAIL_CMD: {e}") from None
    programs = [Path(words[0]).name for words in commands if words]
    if any(program in _SHELLS for program in programs):
        action = "shell"
    else:
        action = next((_ACTIONS[program] for program in programs if program in _ACTIONS), "reboot")
    others = [program for program in programs if program not in _SHELLS and program not in _ACTIONS]
    if others:
        warnings.append(f"{where}: KDUMP_FAIL_CMD runs {', '.join(others)}: not run here; failure_action "
                        f"{action} is used (a command after a failed dump: post_hook gets its status)")
    return action

