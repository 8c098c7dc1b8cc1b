"""The save job's rules (collector/savejob.py), each as a test: options are checked before any
target is touched, nothing is written over, one fallback chain, errors name their object."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from collector.errors import CollectorError
from collector.formats.kdump import KdumpFile
from collector.pipeline.compression import LEVEL_RANGES
from collector.savejob import SaveOptions
from tests.conftest import REPO, run_save, save_in_process
from tests.support.dumpcheck import dump_files
from tests.support.vmcore_factory import (
    OSRELEASE,
    PAGE_SIZE,
    SegmentSpec,
    build_vmcore,
    vmcoreinfo_text,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def one_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


# Rule 4: every option is checked before any target is touched ------------------------------

@pytest.mark.parametrize(("args", "phrase"), [
    (["--level", "99"], "--level 99 is not in -131072-22 for zstd"),
    (["--compress", "zlib", "--level", "10"], "--level 10 is not in 0-9 for zlib"),
    (["--compress", "none", "--level", "3"], "--level does not go with --compress none"),
    (["--threads", "1000"], "--threads 1000 is not in 1-256"),
    (["--threads", "0"], "--threads 0 is not in 1-256"),
    (["--ssh-retries", "-3"], "--ssh-retries -3: must be 0 or more"),
    (["--keep-dumps", "0"], "--keep-dumps 0: must be at least 1"),
    (["-d", "32"], "--dump-level 32 is not in 0-31"),
    (["--min-free", "2 GB"], "--min-free '2 GB' is not a size"),
    (["--fallback", "ftp://127.0.0.1/x"], "--fallback ftp://127.0.0.1/x: ftp:// destinations are not supported"),
    (["--fallback", "ssh://u@h/x"], "--ssh-key FILE is needed"),
])
def test_every_option_is_checked_before_any_target_is_touched(tmp_path, vmcore, args, phrase):
    dest = tmp_path / "crash"
    assert phrase in one_line(run_save(*args, str(vmcore), str(dest)))
    assert not dest.exists()
    if "--fallback" not in args:  # --output is one file: no destinations
        assert phrase in one_line(run_save(*args, str(vmcore), "-o", str(tmp_path / "dump")))
        assert not (tmp_path / "dump").exists()


def test_an_unknown_url_scheme_is_an_error_not_a_local_directory(tmp_path, vmcore):
    proc = subprocess.run([sys.executable, "-m", "collector", str(vmcore), "ftp://127.0.0.1/x"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "DEST ftp://127.0.0.1/x: ftp:// destinations are not supported" in one_line(proc)
    assert list(tmp_path.iterdir()) == [vmcore]


def test_compression_levels_are_the_libraries_own_ranges():
    import zlib

    import zstandard

    low, high = LEVEL_RANGES["zstd"]
    assert high == zstandard.MAX_COMPRESSION_LEVEL
    page = os.urandom(512) * 8
    for level in (low, high):
        frame = zstandard.ZstdCompressor(level=level).compress(page)
        assert zstandard.ZstdDecompressor().decompress(frame) == page
    assert LEVEL_RANGES["zlib"] == (0, 9) and zlib.decompress(zlib.compress(page, 9)) == page


def test_output_takes_no_destinations(tmp_path, vmcore):
    proc = run_save(str(vmcore), str(tmp_path / "crash"), "-o", str(tmp_path / "dump"))
    assert "DEST and --fallback do not go with --output" in one_line(proc)


def test_invalid_options_cannot_be_made():
    with pytest.raises(CollectorError, match="--threads 257"):
        SaveOptions(threads=257)
    with pytest.raises(CollectorError, match="DEST nope://x"):
        SaveOptions(dests=("nope://x",))


# Rule 3: never overwrite ------------------------------------------------------------------

def test_an_existing_output_file_is_refused_without_force(tmp_path, vmcore):
    out = tmp_path / "dump"
    out.write_bytes(b"an older dump")
    assert f"--output {out} exists" in one_line(run_save(str(vmcore), "-o", str(out)))
    assert out.read_bytes() == b"an older dump"


def test_force_replaces_the_output_only_with_a_complete_private_dump(tmp_path, vmcore):
    out = tmp_path / "dump"
    out.write_bytes(b"an older dump")
    out.chmod(0o644)
    proc = run_save(str(vmcore), "-o", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert KdumpFile.open(str(out)).complete
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump", "vmcore"]  # no -incomplete left


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_the_input_is_never_the_output_even_with_force(tmp_path, vmcore, force):
    original = vmcore.read_bytes()
    os.link(vmcore, tmp_path / "same-inode")
    for out in (vmcore, tmp_path / "same-inode"):
        assert "is the input" in one_line(run_save(str(vmcore), "-o", str(out), *force))
    assert vmcore.read_bytes() == original


def test_dump_files_are_private_whatever_the_umask(tmp_path, vmcore):
    old = os.umask(0)
    try:
        save_in_process(str(vmcore), str(tmp_path / "crash"), check=True)
        save_in_process(str(vmcore), "-o", str(tmp_path / "dump"), check=True)
    finally:
        os.umask(old)
    (dump_dir,) = (tmp_path / "crash").iterdir()
    assert stat.S_IMODE(dump_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((dump_dir / "vmcore").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "dump").stat().st_mode) == 0o600


def rearrange(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from collector.cli import rearrange_main; sys.exit(rearrange_main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True)


def test_vmcore_rearrange_never_writes_over_its_input_or_an_existing_file(tmp_path, vmcore):
    flat = tmp_path / "vmcore.flat"
    run_save(str(vmcore), "-o", str(flat), "--format", "flat", check=True)
    original = flat.read_bytes()
    assert "is the input" in one_line(rearrange(str(flat), str(flat), "--force"))
    assert flat.read_bytes() == original
    out = tmp_path / "out"
    out.write_bytes(b"keep me")
    assert f"OUTPUT {out} exists" in one_line(rearrange(str(flat), str(out)))
    assert out.read_bytes() == b"keep me"
    assert rearrange(str(flat), str(out), "--force").returncode == 0
    assert KdumpFile.open(str(out)).complete and stat.S_IMODE(out.stat().st_mode) == 0o600


# Rule 8: every error names its object ------------------------------------------------------

def test_a_dest_that_is_a_file_is_named_as_a_file(tmp_path, vmcore):
    dest = tmp_path / "crash"
    dest.write_text("not a directory")
    assert f"DEST {dest} is a file, not a directory" in one_line(run_save(str(vmcore), str(dest)))


def test_a_vmcore_that_is_a_directory_is_named(tmp_path):
    assert f"VMCORE {tmp_path} is a directory" in one_line(run_save(str(tmp_path), str(tmp_path / "crash")))


def test_a_full_device_as_output_says_so_and_nothing_is_saved(vmcore):
    proc = run_save(str(vmcore), "-o", "/dev/full")
    assert proc.returncode == 1
    assert "dump FAILED" in proc.stderr and "No space left on device" in proc.stderr
    assert "Invalid argument" not in proc.stderr and "vmcore-save: saved" not in proc.stderr


def test_a_dump_that_did_not_complete_is_never_reported_saved(tmp_path, vmcore):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    proc = run_save(str(vmcore), str(tmp_path / "crash"), "--min-free", str(free + (1 << 30)))
    assert proc.returncode == 1 and "dump FAILED" in proc.stderr
    assert "vmcore-save: saved" not in proc.stderr


def test_the_ssh_link_lost_reason_is_never_empty():
    from collector.targets import SshOptions
    from collector.targets.ssh.connection import Connection
    from collector.targets.ssh.url import SshUrl

    warnings: list[str] = []
    connection = Connection(SshUrl.parse("ssh://u@192.0.2.1/x"), SshOptions(retries=0), warnings.append)
    with pytest.raises(OSError, match=r"link to 192\.0\.2\.1 lost \(EOFError\)"):
        connection.reconnect(EOFError())


def uts_vmcore(nodename: str) -> bytes:
    """A vmcore whose init_uts_ns (at physical 0x200000) names the crashed machine."""
    fields = b"".join(value.encode().ljust(65, b"\0") for value in
                      ("Linux", nodename, OSRELEASE, "#1 SMP", "x86_64", "(none)"))
    extra = "SYMBOL(init_uts_ns)=ffffffff80200000\nOFFSET(uts_namespace.name)=4\n"
    return build_vmcore([SegmentSpec(0x200000, (bytes(4) + fields).ljust(PAGE_SIZE, b"\0"))],
                        vmcoreinfo_text(extra=extra))


@pytest.mark.parametrize(("nodename", "directory"), [("db7", "db7-"), ("(none)", "unknown-host-")])
def test_the_dump_directory_is_named_after_the_crashed_machine(tmp_path, nodename, directory):
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(uts_vmcore(nodename))
    save_in_process(str(vmcore), str(tmp_path / "crash"), check=True)
    (dump_dir,) = (tmp_path / "crash").iterdir()
    assert dump_dir.name.startswith(directory)


# The design: one fallback chain, one owner ------------------------------------------------

@needs_root
def test_one_fallback_chain_skips_unusable_targets_and_saves_dumps_cut_short_again(tmp_path, small_tmpfs):
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(build_vmcore([SegmentSpec(0x100000, os.urandom(2048 * PAGE_SIZE))], vmcoreinfo_text()))
    good = tmp_path / "good"
    proc = run_save(str(vmcore), "/dev/null/crash", "--fallback", str(small_tmpfs), "--fallback",
                    "/dev/null/again", "--fallback", str(good), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "/dev/null/crash: Not a directory; falling back to" in proc.stderr
    assert "vmcore-incomplete; saving it again to /dev/null/again" in proc.stderr
    assert f"/dev/null/again: Not a directory; falling back to {good}" in proc.stderr
    (cut,) = small_tmpfs.iterdir()
    assert dump_files(cut) == ["vmcore-incomplete", "vmcore-incomplete.manifest.json", "vmcore-triage.json",
                               "vmcore-triage.txt"]
    (saved,) = good.iterdir()
    assert KdumpFile.open(str(saved / "vmcore")).complete


def test_the_capture_job_neither_imports_the_command_line_nor_passes_arguments():
    code = "import sys, collector.capture.environment; print('collector.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout == "False\n"
    from collector.capture import config

    assert not hasattr(config.Config, "save_arguments")


def test_fast_is_zstd_level_minus_3_on_a_thread_per_cpu():
    from collector.cli import build_parser, options_from

    options = options_from(build_parser().parse_args(["--fast", "-o", "out", "vmcore"]))
    assert (options.compress, options.level, options.threads) == ("zstd", -3, min(os.cpu_count() or 1, 256))
    assert options_from(build_parser().parse_args(["--fast", "--threads", "1", "-o", "o", "v"])).threads == 1
    with pytest.raises(CollectorError, match="--fast is zstd level -3"):
        options_from(build_parser().parse_args(["--fast", "--level", "5", "-o", "o", "v"]))
