"""The capture configuration: our format, Fedora's kdump.conf, one-line errors, and what the
capture initramfs is built with (no QEMU here: tests/test_e2e.py runs the real thing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collector.capture import config
from collector.capture.arm import (
    CAPTURE_KERNEL_ARGS,
    capture_command_line,
    kernel_modules_for,
)
from collector.capture.config import ConfigError, Target
from collector.capture.environment import save_options
from collector.savejob import SaveOptions
from collector.targets import SshOptions
from tests.conftest import REPO
from tests.support.messages import assert_lines_say

EXAMPLE = REPO / "initramfs" / "vmcore-collector.conf"


def test_example_file_is_valid() -> None:
    loaded = config.load(EXAMPLE)
    assert loaded.targets[0].kind == "disk"


def test_all_settings() -> None:
    loaded = config.parse(
        "# comment\n"
        "target = disk UUID=1234-abcd xfs /crash   # preferred\n"
        "target = ssh dumps@192.0.2.1:2222 /srv/crash\n"
        "target = nfs server.example:/export\n"
        "target = path /var/crash\n"
        "ssh_key = /etc/key\nknown_hosts = /etc/known\n"
        "dump_level = 17\ncompress = zlib\ncompress_level = 6\nthreads = 2\n"
        "failure_action = shell\nfinal_action = halt\n"
        "pre_hook = echo 'a # not a comment'\npost_hook = logger done\npost_hook = sync\n"
        "wait_seconds = 10\nkeep_dumps = 3\nmin_free = 2G\nmodules = e1000e  nvme\n")
    assert loaded.targets == (Target("disk", "UUID=1234-abcd", "/crash", "xfs"),
                              Target("ssh", "dumps@192.0.2.1:2222", "/srv/crash"),
                              Target("nfs", "server.example:/export", "/var/crash"),
                              Target("path", "", "/var/crash"))
    assert loaded.targets[1].ssh_url() == "ssh://dumps@192.0.2.1:2222/srv/crash"
    assert loaded.targets[2].nfs_url() == "nfs://server.example/export/var/crash"
    assert loaded.pre_hooks == ("echo 'a # not a comment'",)
    assert loaded.post_hooks == ("logger done", "sync")
    assert loaded.modules == ("e1000e", "nvme")
    assert save_options(loaded, "/var/crash") == SaveOptions(
        vmcore="/proc/vmcore", dests=("/var/crash",), dump_level=17, compress="zlib", level=6, threads=2,
        keep_dumps=3, min_free=2 << 30, ssh=SshOptions(key_file="/etc/key", known_hosts="/etc/known"))
    assert config.parse(config.render(loaded)) == loaded  # what the image carries reads back the same


@pytest.mark.parametrize(("text", "message"), [
    ("", "no target"),
    ("target = disk /dev/sda1\n", "expected 'target = disk DEVICE FSTYPE [DIRECTORY]'"),
    ("target = disk sda1 ext4\n", "is not /dev/..., LABEL=... or UUID=..."),
    ("target = tape /dev/st0\n", "target kind 'tape' is not one of"),
    ("target = ssh host /x\nssh_key = /k\nknown_hosts = /h\n", "is not USER@HOST[:PORT]"),
    ("target = ssh u@h /x\nknown_hosts = /h\n", "needs ssh_key"),
    ("target = ssh u@h /x\nssh_key = /k\n", "needs known_hosts"),
    ("target = nfs server/export\n", "is not SERVER:/EXPORT"),
    ("target = path relative\n", "must be an absolute path"),
    ("target = path /x\ndump_level = 32\n", "dump_level 32 is not in 0-31"),
    ("target = path /x\ndump_level = lots\n", "dump_level 'lots' is not a whole number"),
    ("target = path /x\ncompress = lz4\n", "compress 'lz4' is not one of"),
    ("target = path /x\nfinal_action = shell\n", "final_action 'shell' is not one of"),
    ("target = path /x\nmin_free = lots\n", "min_free 'lots' is not a size"),
    ("target = path /x\ncolour = blue\n", "unknown setting 'colour'"),
    ("target = path /x\njust words\n", "expected 'key = value'"),
])
def test_errors_are_one_line_naming_the_place(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config.parse(text, "my.conf")
    assert message in str(error.value)
    assert str(error.value).startswith("my.conf")
    assert "\n" not in str(error.value)


def test_fedora_kdump_conf() -> None:
    loaded = config.parse_kdump_conf(
        "ssh kdump@192.0.2.7\nsshkey /root/.ssh/kdump_id_rsa\npath /var/crash/remote\n"
        "core_collector makedumpfile -l --message-level 7 -d 31\n"
        "failure_action shell\nfinal_action poweroff\nkdump_pre /bin/pre.sh\nkdump_post /bin/post.sh\n"
        "auto_reset_crashkernel yes\n", "kdump.conf")
    assert loaded.targets == (Target("ssh", "kdump@192.0.2.7", "/var/crash/remote"),)
    assert (loaded.ssh_key, loaded.known_hosts) == ("/root/.ssh/kdump_id_rsa", "/root/.ssh/known_hosts")
    # lzo is not written here: zstd at the fast level, which is as fast and no larger
    assert (loaded.dump_level, loaded.compress, loaded.compress_level) == (31, "zstd", -3)
    assert (loaded.failure_action, loaded.final_action) == ("shell", "poweroff")
    assert (loaded.pre_hooks, loaded.post_hooks) == (("/bin/pre.sh",), ("/bin/post.sh",))
    assert_lines_say(loaded.warnings, ("kdump.conf:4:", "--message-level 7", "is not used"),
                     ("kdump.conf:4:", "-l (lzo)", "zstd level -3 is used instead"),
                     ("kdump.conf:9:", "auto_reset_crashkernel is not used by vmcore-collector"))


@pytest.mark.parametrize(("collector", "dump_level", "compress", "level", "threads"), [
    ("makedumpfile -d31 -z", 31, "zstd", 1, 1),          # -d31 without a space, as getopt reads it
    ("makedumpfile -cd 17", 17, "zlib", 1, 1),           # short options run together
    ("makedumpfile -p -d 31 --num-threads=2", 31, "zstd", -3, 2),
    ("makedumpfile -l -c -d 1", 1, "zlib", 1, 1),        # the last compression option wins
    ("makedumpfile -d 31", 31, "none", 1, 1),            # makedumpfile without one stores pages as they are
    ("/usr/sbin/makedumpfile -z", 0, "zstd", 1, 1),      # ... and without -d keeps every page
])
def test_core_collector_means_what_makedumpfile_does(collector: str, dump_level: int, compress: str, level: int,
                                                      threads: int) -> None:
    loaded = config.parse_kdump_conf(f"core_collector {collector}\n")
    assert (loaded.dump_level, loaded.compress, loaded.compress_level, loaded.threads) == (dump_level, compress,
                                                                                            level, threads)


def test_core_collector_flags_done_otherwise_are_one_line_each() -> None:
    loaded = config.parse_kdump_conf("core_collector makedumpfile -F -E -D -d 1,31 --message 4\n", "k.conf")
    assert_lines_say(loaded.warnings, ("k.conf:1:", "-D", "not used"),
                     ("k.conf:1:", "-d 1,31", "dump level 1 is used"),
                     ("k.conf:1:", "--message-level 4", "not used"),
                     ("k.conf:1:", "-E (ELF output) is not used", "vmcore-save --format elf"))
    assert config.parse_kdump_conf("core_collector makedumpfile -E -F -d 31\n").warnings[0].endswith(
        "each target gets the kdump format, which crash and drgn open")


def test_failure_action_dump_to_rootfs_saves_to_the_path_after_the_target() -> None:
    # kdump-utils: when the target fails, save to the path on the root file system, then final_action.
    loaded = config.parse_kdump_conf("nfs server:/exports\npath /crash\nfailure_action dump_to_rootfs\n"
                                     "final_action poweroff\n")
    assert loaded.targets == (Target("nfs", "server:/exports", "/crash"), Target("path", "", "/crash"))
    assert (loaded.failure_action, loaded.final_action) == ("poweroff", "poweroff")
    assert config.parse(config.render(loaded)) == loaded
    # A dump meant for the root file system already goes there: nothing to add.
    assert config.parse_kdump_conf("default dump_to_rootfs\n").targets == (Target("path", "", "/var/crash"),)


def test_fedora_disk_nfs_and_defaults() -> None:
    disk = config.parse_kdump_conf("xfs UUID=aa-bb\npath /crash\ncore_collector makedumpfile -c -d 1\n"
                                   "default reboot\n")
    assert disk.targets == (Target("disk", "UUID=aa-bb", "/crash", "xfs"),)
    assert (disk.compress, disk.dump_level, disk.failure_action) == ("zlib", 1, "reboot")
    nfs = config.parse_kdump_conf("nfs server:/exports\n")
    assert nfs.targets == (Target("nfs", "server:/exports", "/var/crash"),)
    assert config.parse_kdump_conf("").targets == (Target("path", "", "/var/crash"),)


@pytest.mark.parametrize(("text", "message"), [
    ("ext4 /dev/sda1\nnfs s:/e\n", "a second dump target"),
    ("raw /dev/sdb\n", "raw device targets are not supported"),
    ("core_collector cp\n", "only makedumpfile options are read"),
    ("core_collector makedumpfile --split\n", "option '--split' is not supported"),
    ("final_action dump_to_rootfs\n", "final_action 'dump_to_rootfs' is not one of"),
    ("core_collector makedumpfile --message-level 40\n", "--message-level: 40 is not in 0-31"),
    ("core_collector makedumpfile -d\n", "option -d requires argument"),
    ("final_action shell\n", "final_action 'shell' is not one of"),
    ("fence_kdump_magic x\n", "unknown kdump.conf directive"),
])
def test_fedora_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse_kdump_conf(text, "kdump.conf")


@pytest.mark.parametrize(("text", "option"), [
    ("# kdump.conf\npath /var/crash\ncore_collector makedumpfile -l -d 31\n", "--kdump-conf"),
    ("ssh kdump@192.0.2.7\n", "--kdump-conf"),
    ("nfs server:/export\n", "--kdump-conf"),
    ('USE_KDUMP=1\nKDUMP_COREDIR="/var/crash"\n', "--kdump-tools"),
])
def test_another_tools_file_as_ours_names_the_option_that_reads_it(text: str, option: str) -> None:
    with pytest.raises(ConfigError, match=f"my.conf:\\d: .* read .* with {option} FILE"):
        config.parse(text, "my.conf")


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere.conf: cannot read: No such file"):
        config.load(tmp_path / "nothere.conf")


def test_kernel_modules_follow_the_targets() -> None:
    disk = kernel_modules_for(config.parse("target = disk /dev/vda ext4\n"))
    assert "virtio_blk" in disk and "ext4" in disk and "virtio_net" not in disk
    nfs = kernel_modules_for(config.parse("target = nfs s:/e\nmodules = igb\n"))
    assert {"virtio_net", "nfsv4", "nfsv3", "igb"} <= set(nfs) and "ext4" not in nfs


def test_capture_command_line() -> None:
    line = capture_command_line("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet console=ttyS0,115200 "
                                "crashkernel=256M panic=1 rdinit=/init", "acpi=noirq")
    assert line == f"root=/dev/sda1 ro console=ttyS0,115200 {CAPTURE_KERNEL_ARGS} acpi=noirq"


def test_vmcore_save_without_arguments_does_the_configured_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import collector.cli

    conf = tmp_path / "vmcore-collector.conf"
    conf.write_text(f"target = path {tmp_path / 'dumps'}\n")
    monkeypatch.setattr(collector.cli, "CONFIG_PATH", str(conf))
    # Not a capture kernel: the job stops before touching any target, with one line.
    assert collector.cli.main([]) == 2
    assert "no /proc/vmcore: this is not a capture kernel" in capsys.readouterr().err
    assert not (tmp_path / "dumps").exists()


def test_capture_main_refuses_outside_a_capture_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    from collector.capture import environment as capture

    assert capture.main() == 2
    assert "refusing: no /proc/vmcore" in capsys.readouterr().err


def test_reading_the_configuration_loads_no_page_scanner() -> None:
    # Its dump-level and compression limits come from dump_level.py and
    # pipeline/compression.py; the scanner would print its fallback warning on a machine without
    # the compiled module.
    code = "import sys, collector.capture.config; print(sorted(m for m in sys.modules if 'fastcopy' in m))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout == "[]\n"
