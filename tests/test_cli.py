"""vmcore-save as users run it: dump directories, one-file output, progress, --info."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest

from collector.pipeline.pages import SPAN_PAGES
from tests.conftest import REPO, run_save
from tests.support.dumpcheck import check_kdump, dump_files
from tests.support.messages import assert_lines_say
from tests.support.vmcore_factory import (
    OSRELEASE,
    PAGE_SIZE,
    SegmentSpec,
    build_vmcore,
    expected_memory,
    vmcoreinfo_text,
)

pytestmark = pytest.mark.vmcore(low_memory=True, random_pages=8, zero_pages=4)


def test_dest_gets_a_dated_directory_with_a_private_vmcore(tmp_path, vmcore, vmcore_segments):
    dest = tmp_path / "crash"
    proc = run_save(str(vmcore), str(dest))
    assert proc.returncode == 0, proc.stderr
    (dump_dir,) = dest.iterdir()
    assert re.fullmatch(r".+-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d", dump_dir.name)
    assert stat.S_IMODE(dump_dir.stat().st_mode) == 0o700
    assert dump_files(dump_dir) == ["vmcore", "vmcore-triage.json", "vmcore-triage.txt",
                                     "vmcore.manifest.json"]  # no vmcore-incomplete left
    assert stat.S_IMODE((dump_dir / "vmcore").stat().st_mode) == 0o600
    check_kdump(str(dump_dir / "vmcore"), expected_memory(vmcore_segments), PAGE_SIZE)
    # A second dump of the same minute never overwrites the first.
    assert run_save(str(vmcore), str(dest)).returncode == 0
    assert len(list(dest.iterdir())) == 2


def test_output_writes_exactly_one_file(tmp_path, vmcore):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert run_save(str(vmcore), "--output", str(out_dir / "dump.kdump")).returncode == 0
    assert [p.name for p in out_dir.iterdir()] == ["dump.kdump"]


def test_summary_reports_pages_bytes_and_phases(tmp_path, vmcore):
    proc = run_save(str(vmcore), "--output", str(tmp_path / "dump"), "-d", "1")
    lines = proc.stderr.splitlines()
    assert any(re.search(r"pages: 171 present; excluded 4 zero, .*; 167 written", line) for line in lines), lines
    assert any(line.startswith("vmcore-save: time: bitmaps ") for line in lines)
    assert any("MiB read" in line and "MiB written" in line for line in lines)
    assert "\r" not in proc.stderr


def test_progress_lines_are_whole_lines_with_percent_rate_eta():
    import io
    import time

    from collector.progress import LineProgress

    out = io.StringIO()
    progress = LineProgress(stream=out, interval=0.05)
    progress.start("pages", 100, 4096)
    for done in range(0, 101, 10):
        progress.update(done)
        time.sleep(0.03)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 11
    progress_line = r"vmcore-save: pages +\d+\.\d% +\d+\.\d MB/s  (ETA|done in) \d+:\d\d:\d\d"
    assert all(re.fullmatch(progress_line, line) for line in lines), lines
    assert "done in" in lines[-1]


def test_info_describes_vmcore_and_dump(tmp_path, vmcore):
    proc = run_save("--info", str(vmcore))
    assert proc.returncode == 0
    assert OSRELEASE in proc.stdout and "2 CPU(s)" in proc.stdout and "PT_LOAD" in proc.stdout
    run_save(str(vmcore), "--output", str(tmp_path / "dump"), "-d", "1", "--compress", "zlib")
    proc = run_save("--info", str(tmp_path / "dump"))
    assert proc.returncode == 0
    assert "kdump-compressed" in proc.stdout and "dump level 1, compression zlib" in proc.stdout
    assert "complete" in proc.stdout and OSRELEASE in proc.stdout


def test_pure_python_twin_writes_the_same_dump(tmp_path, vmcore):
    run_save(str(vmcore), "--output", str(tmp_path / "a"), "-d", "1", check=True)
    run_save(str(vmcore), "--output", str(tmp_path / "b"), "-d", "1", check=True,
             env={"VMCORE_COLLECTOR_PURE_PYTHON": "1"})
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def run_rearrange(*args: str, stdin=None) -> subprocess.CompletedProcess:
    """vmcore-rearrange as a separate process of the project's interpreter (never a bare python3,
    which on a fresh machine lacks the project's packages)."""
    code = "import sys; from collector.cli import rearrange_main; sys.exit(rearrange_main())"
    return subprocess.run([sys.executable, "-c", code, *args], stdin=stdin, capture_output=True, text=True,
                          cwd=REPO, check=False)


def test_vmcore_rearrange_command(tmp_path, vmcore):
    run_save(str(vmcore), "--output", str(tmp_path / "dump"), check=True)
    with open(tmp_path / "dump.flat", "wb") as flat_out:
        subprocess.run([sys.executable, "-m", "collector", str(vmcore), "--output", "-", "--format", "flat", "-q"],
                       stdout=flat_out, check=True, cwd=REPO)
    with open(tmp_path / "dump.flat", "rb") as flat_in:
        proc = run_rearrange("-", str(tmp_path / "rebuilt"), stdin=flat_in)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rebuilt").read_bytes() == (tmp_path / "dump").read_bytes()
    # A stream cut short (no end marker) is refused with one line.
    (tmp_path / "cut.flat").write_bytes((tmp_path / "dump.flat").read_bytes()[:-16])
    proc = run_rearrange(str(tmp_path / "cut.flat"), str(tmp_path / "r2"))
    assert proc.returncode == 2 and "cut short" in proc.stderr and proc.stderr.count("\n") == 1


def test_help_fits_an_80x24_console_and_names_every_option():
    from collector.cli import HELP, MAKEDUMPFILE_GROUP, build_parser

    proc = run_save("--help")
    assert proc.returncode == 0 and proc.stdout == HELP
    lines = HELP.splitlines()
    assert len(lines) <= 23 and max(map(len, lines)) <= 79
    groups = {group.title: group._group_actions for group in build_parser()._action_groups}
    makedumpfile_options = {opt for action in groups.pop(MAKEDUMPFILE_GROUP) for opt in action.option_strings}
    options = {opt for actions in groups.values() for action in actions for opt in action.option_strings}
    assert options and all(opt in HELP for opt in options), sorted(o for o in options if o not in HELP)
    # makedumpfile's flags, with what each means here, come with --help-all, after the summary.
    proc = run_save("--help-all")
    assert proc.returncode == 0 and proc.stdout.startswith(HELP)
    extra = proc.stdout[len(HELP):]
    assert all(re.search(rf"^  {re.escape(opt)}\b", extra, re.M) for opt in makedumpfile_options), extra
    assert max(map(len, extra.splitlines())) <= 79
    assert "--compress zlib" in extra and "lzo is not written" in extra and "-o DUMPFILE" in extra


def run_command(module: str, *args: str) -> subprocess.CompletedProcess:
    """A command's main() as a separate process of the project's interpreter."""
    code = f"import sys; from {module} import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, check=False)


def test_every_command_and_subcommand_prints_its_name_and_the_package_version():
    from importlib.metadata import version

    declared = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    assert version("vmcore-collector") == declared  # the metadata is setup.py's, the one source
    commands = [("vmcore-save", "collector.cli", ()), ("vmcore-rearrange", None, ()),
                *(("vmcore-collector", "collector.capture.arm", sub)
                  for sub in ((), ("build-initramfs",), ("arm",), ("disarm",), ("status",)))]
    for program, module, sub in commands:
        proc = run_rearrange("--version") if module is None else run_command(module, *sub, "--version")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{program} {declared}\n", ""), (program, sub)


def save_bytes(vmcore, tmp_path, name: str, *args: str) -> tuple[bytes, str]:
    """The one dump file vmcore-save writes with ``args`` (to standard output when no --output is
    among them), and what it printed on standard error."""
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "collector", str(vmcore), *args,
                           *(() if "-F" in args else ("--output", str(out)))], cwd=REPO, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return (proc.stdout if "-F" in args else out.read_bytes()), proc.stderr.decode()


def test_makedumpfile_flags_write_what_the_options_they_stand_for_write(tmp_path, vmcore):
    same = [(("-c",), ("--compress", "zlib")), (("-z", "-d31"), ("--compress", "zstd", "-d", "31")),
            (("-E",), ("--format", "elf")), (("--num-threads", "2"), ("--threads", "2")),
            (("--num-threads", "0", "-d1"), ("--threads", "1", "--dump-level=1")),
            (("-F", "-c"), ("--format", "flat", "--compress", "zlib", "-q"))]
    for index, (makedumpfile_args, our_args) in enumerate(same):
        ours, _ = save_bytes(vmcore, tmp_path, f"ours{index}", *our_args)
        theirs, _ = save_bytes(vmcore, tmp_path, f"theirs{index}", *makedumpfile_args)
        assert ours == theirs, makedumpfile_args


def test_lzo_and_snappy_flags_save_zstd_at_the_fast_level_and_say_so_in_one_line(tmp_path, vmcore):
    from collector.pipeline.compression import FAST_LEVEL

    fast, _ = save_bytes(vmcore, tmp_path, "fast", "--compress", "zstd", "--level", str(FAST_LEVEL))
    for flag, name in (("-l", "lzo"), ("-p", "snappy")):
        dump, stderr = save_bytes(vmcore, tmp_path, name, flag, "-q")
        assert dump == fast
        assert_lines_say(stderr.splitlines(), (flag, f"{name} pages are not written", f"zstd level {FAST_LEVEL}"))
    # A level given with it is kept, and named.
    _, stderr = save_bytes(vmcore, tmp_path, "level5", "-l", "--level", "5", "-q")
    assert_lines_say(stderr.splitlines(), ("-l", "zstd level 5 instead"))


def test_message_level_without_progress_messages_or_report_is_quiet(tmp_path, vmcore):
    _, stderr = save_bytes(vmcore, tmp_path, "ml7", "--message-level", "7")
    assert "pages:" in stderr and "time:" in stderr
    _, stderr = save_bytes(vmcore, tmp_path, "ml4", "--message-level", "4")
    assert stderr == ""
    proc = run_save(str(vmcore), "--message-level", "32")
    assert proc.returncode == 2
    assert_lines_say(proc.stderr.splitlines(), ("--message-level 32", "0-31"))


def test_flattened_flag_does_not_go_with_another_format(tmp_path, vmcore):
    for other in (("-E",), ("--format", "kdump")):
        proc = run_save(str(vmcore), "-F", *other, "-o", str(tmp_path / "x"))
        assert proc.returncode == 2 and not (tmp_path / "x").exists()
        assert_lines_say(proc.stderr.splitlines(), ("-F is --format flat", "does not go with"))


def test_compression_threads_do_not_change_the_dump(tmp_path):
    # More spans than the two threads have slots, so spans are encoded out of order and slots
    # reused; zero pages and all-zero stretches mixed in, as in real memory.
    pages = [os.urandom(PAGE_SIZE // 2) * 2 if i % 7 else bytes(PAGE_SIZE) for i in range(SPAN_PAGES * 7 + 100)]
    pages[SPAN_PAGES:2 * SPAN_PAGES] = [bytes(PAGE_SIZE)] * SPAN_PAGES
    segments = [SegmentSpec(0x100000, b"".join(pages))]
    path = tmp_path / "vmcore"
    path.write_bytes(build_vmcore(segments, vmcoreinfo_text()))
    for compress in ("zstd", "zlib"):
        outputs = []
        for threads in ("1", "2"):
            out = tmp_path / f"{compress}-{threads}"
            run_save(str(path), "--output", str(out), "--compress", compress, "--threads", threads, check=True)
            outputs.append(out.read_bytes())
        assert outputs[0] == outputs[1], compress
    check_kdump(str(out), expected_memory(segments), PAGE_SIZE)
