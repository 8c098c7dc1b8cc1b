"""Debian's /etc/default/kdump-tools as the capture configuration: the packaged file imports to
the Config a kdump-tools user expects, every key not honoured is one line saying what is used
instead, and the file is read the way sh reads it without ever being run.

tests/data/debian-kdump-tools.default is the packaged file byte for byte:
/usr/share/kdump-tools/kdump-tools.conf of Debian's kdump-tools 1:1.8.1 (bookworm) and
1:1.10.7 (trixie), which are identical; the package's postinst copies it to
/etc/default/kdump-tools, setting USE_KDUMP from debconf (1 by default).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.capture import arm
from collector.capture.config import Config, ConfigError, Target, parse, render
from collector.capture.kdump_tools import parse_assignments, parse_kdump_tools
from tests.conftest import REPO
from tests.support.messages import assert_lines_say

DEBIAN_DEFAULT = REPO / "tests" / "data" / "debian-kdump-tools.default"
# The package's md5sums entry for usr/share/kdump-tools/kdump-tools.conf (both releases).
PACKAGED_MD5 = "679f2f2cb8107d889ba8e8ce34c7e970"


def debian_text(**changes: str) -> str:
    """The packaged file with ``KEY=value`` lines set (uncommented where the file has them
    commented out, appended otherwise)."""
    text = DEBIAN_DEFAULT.read_text()
    for key, value in changes.items():
        found = re.search(rf"^#?{key}=.*$", text, flags=re.M)
        if found:
            text = f"{text[:found.start()]}{key}={value}{text[found.end():]}"
        else:
            text += f"{key}={value}\n"
    return text


def line_of(key: str) -> int:
    """The line of the packaged file that (commented out or not) sets ``key``."""
    lines = DEBIAN_DEFAULT.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if re.match(rf"#?{key}=", line))


def test_the_test_copy_is_the_packaged_file() -> None:
    assert hashlib.md5(DEBIAN_DEFAULT.read_bytes()).hexdigest() == PACKAGED_MD5


def test_the_packaged_file_imports_to_a_local_dump_at_level_31() -> None:
    loaded = parse_kdump_tools(DEBIAN_DEFAULT.read_text(), "kdump-tools")
    assert loaded == Config(targets=(Target("path", "", "/var/crash"),))
    # kdump-tools' MAKEDUMP_ARGS default is -c -d 31: the dump level is the same, the pages are
    # zstd (makedumpfile -z) unless MAKEDUMP_ARGS asks for zlib.
    assert (loaded.dump_level, loaded.compress, loaded.failure_action) == (31, "zstd", "reboot")
    assert loaded.keep_dumps is None
    assert_lines_say(loaded.warnings,
                     (f"kdump-tools:{line_of('KDUMP_KERNEL')}:", "KDUMP_KERNEL is not used", "arm loads", "--kernel"),
                     (f"kdump-tools:{line_of('KDUMP_INITRD')}:", "KDUMP_INITRD is not used", "own capture initramfs"))


def test_the_file_reads_as_sh_reads_it() -> None:
    text = debian_text(SSH='"u@h"', NFS="'s:/e'", FTP_PORT="21")
    read = {name: value for name, (value, _) in parse_assignments(text).items()}
    assert sorted(read) == ["FTP_PORT", "KDUMP_COREDIR", "KDUMP_INITRD", "KDUMP_KERNEL", "NFS", "SSH", "USE_KDUMP"]
    assert read == values_as_sh_reads(text, sorted(read))


def test_every_key_of_the_packaged_file_set() -> None:
    # Each commented-out example of the file, given a value that works.
    text = debian_text(
        KDUMP_FAIL_CMD='"reboot -f"', KDUMP_DUMP_DMESG="0", KDUMP_NUM_DUMPS="3", KDUMP_COMPRESSION="xz",
        MAKEDUMP_ARGS='"-c -d 31"', KDUMP_KEXEC_ARGS='"--elf64-core-headers"', KDUMP_CMDLINE='"root=/dev/sda1"',
        KDUMP_CMDLINE_APPEND='"nr_cpus=1"', HOSTTAG="hostname", NFS='"nfs.example:/var/crash"',
        NFS_TIMEO='"600"', NFS_RETRANS='"3"', FTP='"ftp.example:/dumps"', FTP_USER='"u"', FTP_PASSWORD='"p"',
        FTP_PORT="21", SSH='"dumper@192.0.2.5"', SSH_KEY='"/root/.ssh/id_ed25519"')
    loaded = parse_kdump_tools(text, "kdump-tools")
    assert loaded.targets == (Target("ssh", "dumper@192.0.2.5", "/var/crash"),
                              Target("nfs", "nfs.example:/var/crash", "/"))
    assert (loaded.ssh_key, loaded.known_hosts) == ("/root/.ssh/id_ed25519", "/root/.ssh/known_hosts")
    assert (loaded.dump_level, loaded.compress, loaded.compress_level) == (31, "zlib", 1)
    assert (loaded.failure_action, loaded.keep_dumps) == ("reboot", None)
    assert parse(render(loaded)) == loaded  # what the capture initramfs carries reads back the same
    not_used = ["KDUMP_KERNEL", "KDUMP_INITRD", "KDUMP_DUMP_DMESG", "KDUMP_NUM_DUMPS", "KDUMP_COMPRESSION",
                "KDUMP_KEXEC_ARGS", "KDUMP_CMDLINE", "KDUMP_CMDLINE_APPEND", "HOSTTAG", "NFS", "NFS_TIMEO",
                "NFS_RETRANS", "FTP", "FTP_USER", "FTP_PASSWORD", "FTP_PORT"]
    # One line each, in the file's order, naming its line and its key; NFS's says both are set.
    expected = sorted(not_used, key=line_of)
    assert_lines_say(loaded.warnings, *((f"kdump-tools:{line_of(key)}: ", key) for key in expected))
    said = dict(zip(expected, loaded.warnings, strict=True))
    assert "--append" in said["KDUMP_CMDLINE_APPEND"] and "--kexec-load" in said["KDUMP_KEXEC_ARGS"]
    assert "always saved beside the dump" in said["KDUMP_DUMP_DMESG"]
    assert "only when they are saved locally" in said["KDUMP_NUM_DUMPS"]
    assert "the first that works" in said["NFS"] and "no FTP target" in said["FTP"]


@pytest.mark.parametrize(("command", "action", "warned"), [
    ('"reboot -f"', "reboot", None),
    ("halt", "halt", None),
    ("'poweroff -f'", "poweroff", None),
    ('"/bin/bash; reboot -f"', "shell", None),  # the shell, then the reboot: what the capture shell does
    ("\"echo 'makedumpfile FAILED.'; /bin/bash; reboot -f\"", "shell", "runs echo"),
    ("/usr/local/bin/page-the-admin", "reboot", "runs page-the-admin"),
])
def test_kdump_fail_cmd_becomes_the_failure_action_it_asks_for(command: str, action: str, warned: str | None) -> None:
    loaded = parse_kdump_tools(debian_text(KDUMP_FAIL_CMD=command), "kdump-tools")
    assert loaded.failure_action == action
    lines = [line for line in loaded.warnings if "KDUMP_FAIL_CMD" in line]
    assert_lines_say(lines, *([(warned, f"failure_action {action} is used")] if warned else []))


def test_makedump_args_are_read_as_makedumpfile_reads_them() -> None:
    loaded = parse_kdump_tools(debian_text(MAKEDUMP_ARGS='"-l -d1 --message-level 7 --num-threads=2 -F"'), "kt")
    assert (loaded.dump_level, loaded.compress, loaded.compress_level, loaded.threads) == (1, "zstd", -3, 2)
    assert parse(render(loaded)) == loaded
    where = f"kt:{line_of('MAKEDUMP_ARGS')}: "
    assert_lines_say([line for line in loaded.warnings if line.startswith(where)],
                     ("--message-level 7", "not used"), ("-l (lzo)", "zstd level -3 is used instead"),
                     ("-F", "kdump format"))
    with pytest.raises(ConfigError, match=rf"kt:{line_of('MAKEDUMP_ARGS')}: makedumpfile option '--split'"):
        parse_kdump_tools(debian_text(MAKEDUMP_ARGS='"--split -d 31"'), "kt")


def test_kdump_num_dumps_keeps_local_dumps() -> None:
    assert parse_kdump_tools(debian_text(KDUMP_NUM_DUMPS="4")).keep_dumps == 4
    assert parse_kdump_tools(debian_text(KDUMP_NUM_DUMPS="0")).keep_dumps is None  # 0: kdump-tools keeps all
    assert parse_kdump_tools(debian_text(KDUMP_COREDIR="/srv/crash")).targets == (Target("path", "", "/srv/crash"),)


@pytest.mark.parametrize(("changes", "message"), [
    ({"FTP": "ftp.example:/dumps"}, "FTP targets are not supported: set SSH or NFS instead"),
    ({"SSH": "dumper"}, "ssh target 'dumper' is not USER@HOST"),
    ({"NFS": "server"}, "nfs target 'server' is not SERVER:/EXPORT"),
    ({"KDUMP_COREDIR": "crash"}, "KDUMP_COREDIR 'crash' must be an absolute path"),
    ({"KDUMP_NUM_DUMPS": "many"}, "KDUMP_NUM_DUMPS 'many' is not a whole number"),
    ({"USE_KDUMP": "yes"}, "USE_KDUMP 'yes' is not 0 or 1"),
    ({"MAKEDUMP_ARGS": '"-d 32"'}, "makedumpfile -d 32: 32 is not in 0-31"),
])
def test_bad_values_are_one_line_naming_the_line(changes: dict[str, str], message: str) -> None:
    key = next(iter(changes))
    with pytest.raises(ConfigError) as error:
        parse_kdump_tools(debian_text(**changes), "kt")
    assert message in str(error.value) and "\n" not in str(error.value)
    number = line_of(key) if key in DEBIAN_DEFAULT.read_text() else None
    assert str(error.value).startswith(f"kt:{number}:" if number else "kt:")


def test_unknown_and_off_keys_are_one_line_each() -> None:
    loaded = parse_kdump_tools("USE_KDUMP=0\nKDUMP_COREDIR=/var/crash\nKDUMP_SYSCTL='kernel.panic_on_oops=1'\n", "kt")
    assert_lines_say(loaded.warnings, ("kt:1:", "USE_KDUMP is not 1", "kdump-tools is off", "vmcore-collector arm"),
                     ("kt:3:", "KDUMP_SYSCTL is not a kdump-tools setting"))


# The shell-assignment reader -------------------------------------------------------------------

def values_as_sh_reads(text: str, names: list[str]) -> dict[str, str]:
    """What ``sh`` (dash on Debian) assigns to ``names`` when it sources ``text``."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as file:
        file.write(text)
        file.flush()
        script = 'file=$1; shift; . "$file"; for name do eval "printf \'%s\\0\' \\"\\${$name-}\\""; done'
        result = subprocess.run(["sh", "-c", script, "sh", file.name, *names], capture_output=True, text=True,
                                env={"PATH": os.environ["PATH"]}, check=True)
    return dict(zip(names, result.stdout.split("\0")[:-1], strict=True))


def single_quoted(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def double_quoted(value: str) -> str:
    return '"' + re.sub(r'([$`"\\])', r"\\\1", value) + '"'


def unquoted(value: str) -> str:
    return "".join("'\n'" if char == "\n" else "\\" + char if not char.isalnum() else char for char in value)


VALUE = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0\r"), max_size=12)
NAME = st.from_regex(r"V_[A-Za-z0-9_]{0,6}", fullmatch=True)
QUOTING = st.sampled_from([single_quoted, double_quoted, unquoted])
SEPARATOR = st.sampled_from(["\n", "\n\n", " ; ", "\t", "   # a comment\n", "\n# comment 'with\" quotes\n"])


@st.composite
def shell_files(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A file of assignments, each value in pieces quoted in any way sh allows, and the values."""
    expected: dict[str, str] = {}
    text = draw(st.sampled_from(["", "# header\n", "\n"]))
    for name, value in draw(st.lists(st.tuples(NAME, VALUE), max_size=6)):
        cuts = sorted(draw(st.lists(st.integers(0, len(value)), max_size=3)))
        pieces = [value[a:b] for a, b in zip([0, *cuts], [*cuts, len(value)], strict=True)]
        rendered = "".join(draw(QUOTING)(piece) for piece in pieces if piece) or draw(st.sampled_from(["", "''"]))
        export = draw(st.sampled_from(["", "export "]))
        text += f"{export}{name}={rendered}{draw(SEPARATOR)}"
        expected[name] = value
    return text, expected


@settings(max_examples=150)
@given(shell_files())
def test_assignments_read_as_sh_assigns_them(case: tuple[str, dict[str, str]]) -> None:
    text, expected = case
    read = {name: value for name, (value, _) in parse_assignments(text, "f").items()}
    assert read == expected
    assert values_as_sh_reads(text, sorted(expected)) == expected


def test_expansions_of_variables_set_above_are_read() -> None:
    text = 'BASE=/srv\nKDUMP_COREDIR="${BASE}/crash"\nSSH_KEY=$BASE/key\n'
    read = {name: value for name, (value, _) in parse_assignments(text).items()}
    assert read == values_as_sh_reads(text, ["BASE", "KDUMP_COREDIR", "SSH_KEY"])
    assert read["KDUMP_COREDIR"] == "/srv/crash"


@pytest.mark.parametrize(("text", "line", "message"), [
    ('[ -r /etc/x ] && . /etc/x\n', 1, "is not a VAR=value assignment"),
    ("USE_KDUMP=1\nif true; then\n", 2, "is not a VAR=value assignment"),
    ("A=1\nKDUMP_COREDIR=$(pwd)\n", 2, "only $NAME and ${NAME}"),
    ("KDUMP_COREDIR=`pwd`\n", 1, "shell syntax"),
    ('KDUMP_COREDIR="`pwd`"\n', 1, "command substitution"),
    ("KDUMP_COREDIR=$HOME/crash\n", 1, "$HOME is not set above in this file"),
    ("A=1\n\nSSH='u@h\n", 3, "' quote that is never closed"),
    ('SSH="u@h\n', 1, '" quote that is never closed'),
    ("KDUMP_COREDIR=~/crash\n", 1, "~ would be the home folder"),
    ("MAKEDUMP_ARGS=-c -d 31\n", 1, "a value with spaces needs quotes"),
    ("A=1|cat\n", 1, "shell syntax"),
])
def test_what_is_not_an_assignment_is_one_line_naming_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_assignments(text, "kt")
    assert str(error.value).startswith(f"kt:{line}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


# Pieces of real settings, shell syntax and anything else, in any order.
PIECES = st.sampled_from(["SSH=", "NFS=", "FTP=", "KDUMP_COREDIR=", "MAKEDUMP_ARGS=", "KDUMP_NUM_DUMPS=",
                          "KDUMP_FAIL_CMD=", "USE_KDUMP=", "SSH_KEY=", "u@h", "s:/e", "/var/crash", "-d 31", "-l",
                          "--split", "bash", "0", "7", "$", "${", "}", "'", '"', "\\", "`", "#", ";", "|", "&",
                          "~", " ", "\t", "\n", "export "]) | st.text(max_size=8)


@settings(max_examples=300)
@given(st.lists(PIECES, max_size=30).map("".join))
def test_any_text_reads_or_fails_in_one_line(text: str) -> None:
    try:
        loaded = parse_kdump_tools(text, "kt")
    except ConfigError as error:
        assert re.match(r"kt(:\d+)?: ", str(error)) and "\n" not in str(error)
    else:
        assert loaded.targets and all(re.match(r"kt(:\d+)?: ", line) for line in loaded.warnings)


# The vmcore-collector command --------------------------------------------------------------------

def test_vmcore_collector_reads_kdump_tools_and_says_what_is_not_used(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    arm.status(arm.build_parser().parse_args(["status", "--kdump-tools", str(DEBIAN_DEFAULT),
                                              "--initrd", str(tmp_path / "none.img")]))
    out, err = capsys.readouterr()
    assert f"config: {DEBIAN_DEFAULT} valid, 1 target(s)" in out
    assert_lines_say([line for line in err.splitlines() if "warning" in line],
                     ("KDUMP_KERNEL is not used",), ("KDUMP_INITRD is not used",))


def test_a_kdump_tools_file_given_as_our_configuration_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert arm.main(["status", "--config", str(DEBIAN_DEFAULT), "--initrd", "/nonexistent"]) != 0
    assert "read that file with --kdump-tools FILE" in capsys.readouterr().out


def test_one_configuration_option_at_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert arm.main(["status", "--kdump-conf", "/etc/kdump.conf", "--kdump-tools", str(DEBIAN_DEFAULT)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
