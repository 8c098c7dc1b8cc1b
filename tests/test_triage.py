"""The triage record (vmcore-triage.json/.txt): what a vmcore says about its crash without debug
info. Real sysrq crashes of the test bed against gdb and the log; synthetic vmcores and logs
(no oops, no NT_PRSTATUS, garbage) for the rule that every field is known or says why not."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.errors import InputError
from collector.kernel import triage
from collector.kernel.triage import PRSTATUS, Triage, build, signature
from collector.source import elf
from collector.source.vmcoreinfo import VmcoreInfo
from tests.conftest import run_save
from tests.support.printk_factory import IMAGE_PADDR, IMAGE_VADDR, PrintkRing
from tests.support.vmcore_factory import SegmentSpec, build_vmcore, vmcoreinfo_text

OOPS_LOG = """\
[  101.000001] BUG: kernel NULL pointer dereference, address: 0000000000000008
[  101.000002] #PF: supervisor write access in kernel mode
[  101.000003] Oops: 0002 [#1] PREEMPT SMP NOPTI
[  101.000004] CPU: 3 PID: 4242 Comm: kworker/3:1 Tainted: G        W  O      6.1.0-57-amd64 #1  Debian 6.1.192-3
[  101.000005] RIP: 0010:mydrv_work+0x15/0x40 [mydrv]
[  101.000006] Call Trace:
[  101.000007]  <TASK>
[  101.000008]  ? __die+0x23/0x70
[  101.000009]  ? page_fault_oops+0x17d/0x4c0
[  101.000010]  process_one_work+0x1c4/0x380
[  101.000011]  worker_thread.cold+0x4d/0x3d0
[  101.000012]  kthread+0xd7/0x100
[  101.000013]  ret_from_fork+0x1f/0x30
[  101.000014]  </TASK>
[  101.000015] Kernel panic - not syncing: Fatal exception
"""


def prstatus(pid: int, machine: int = elf.EM_X86_64, **registers: int) -> bytes:
    values = {name: 0 for name in PRSTATUS[machine].fields}
    return PRSTATUS[machine].build(**{**values, "pr_pid": pid, **registers})


def notes_of(*descs: bytes) -> bytes:
    return b"".join(elf.build_note(b"CORE", elf.NT_PRSTATUS, desc) for desc in descs)


def record(log: str | None, notes: bytes = b"", machine: int = elf.EM_X86_64) -> Triage:
    info = VmcoreInfo.parse(vmcoreinfo_text().encode())
    return build("test", notes, machine, info, {"release": None, "version": None}, "no utsname", log,
                 "the test gives none")


def assert_every_unknown_says_why(t: Triage) -> None:
    missing = [f.name for f in fields(t) if getattr(t, f.name) is None and not t.unknown.get(f.name)]
    assert missing == []


# ---------------------------------------------------------------- the log


def test_oops_is_the_reason_of_a_fatal_exception_panic_and_its_report_gives_task_taint_and_trace():
    t = record(OOPS_LOG, notes_of(prstatus(1), prstatus(4242, rip=0xFFFFFFFFC0001015, rsp=0xFFFFC90000123E50)))
    assert t.oops == "BUG: kernel NULL pointer dereference, address: 0000000000000008"
    assert t.panic == "Kernel panic - not syncing: Fatal exception"
    assert (t.cpu, t.pid, t.comm, t.taint) == (3, 4242, "kworker/3:1", "Tainted: G W O")
    assert t.uptime_seconds == pytest.approx(101.000015)
    assert t.call_trace is not None and t.call_trace[0] == "<TASK>" and "? __die+0x23/0x70" in t.call_trace
    # The faulting function from the RIP line first; "?" frames and .cold suffixes left out.
    assert t.signature_input == {"reason": "BUG: kernel NULL pointer dereference, address: N",
                                 "frames": ["mydrv_work", "process_one_work", "worker_thread", "kthread",
                                            "ret_from_fork"]}
    assert t.prstatus_note == 1 and "pr_pid 4242" in (t.cpu_choice or "")
    assert t.registers is not None
    assert (t.registers["rip"], t.registers["rsp"]) == (0xFFFFFFFFC0001015, 0xFFFFC90000123E50)
    assert_every_unknown_says_why(t)


def test_signature_ignores_addresses_timestamps_offsets_and_cpus_but_not_the_functions():
    other_boot = (OOPS_LOG.replace("0000000000000008", "0000000000000010").replace("[  101.", "[ 7.")
                  .replace("+0x1c4/0x380", "+0x1d0/0x390").replace("CPU: 3", "CPU: 0"))
    assert record(other_boot).signature == record(OOPS_LOG).signature
    assert record(OOPS_LOG.replace("kthread+", "kthread_worker+")).signature != record(OOPS_LOG).signature
    assert signature("x", ["a", "b"])[0] != signature("x", ["b", "a"])[0]
    assert re.fullmatch(r"[0-9a-f]{16}", signature("Kernel panic - not syncing: x", [])[0])


def test_idle_cpus_share_pid_0_and_the_crash_reports_cpu_picks_the_note():
    log = ("[    5.000000] Kernel panic - not syncing: Fatal exception in interrupt\n"
           "[    5.000001] CPU: 1 PID: 0 Comm: swapper/1 Not tainted 6.1.0 #1\n")
    t = record(log, notes_of(prstatus(0, rip=1), prstatus(0, rip=2)))
    assert t.prstatus_note == 1 and t.registers is not None and t.registers["rip"] == 2
    assert "'CPU: 1'" in (t.cpu_choice or "")


@given(st.lists(st.text(alphabet=st.characters(codec="ascii"), max_size=80), max_size=30))
def test_logs_without_a_crash_report_or_of_garbage_never_raise_and_every_unknown_says_why(lines):
    log = "".join(f"[{i:5d}.000000] {line}\n" if i % 2 else f"{line}\n" for i, line in enumerate(lines))
    t = record(log, notes_of(prstatus(7), prstatus(8)))
    assert_every_unknown_says_why(t)
    triage.to_text(t), json.loads(triage.to_json(t))  # both render
    if not any(":" in line or "Oops" in line for line in lines):
        assert t.panic is None and "no 'Kernel panic" in t.unknown["panic"]
        assert t.registers is None and "no crash report in the log" in t.unknown["registers"]


@given(st.binary(max_size=2000))
def test_garbage_notes_never_raise(garbage):
    try:
        t = record(OOPS_LOG, garbage)
    except InputError:
        return  # a note running past PT_NOTE is the vmcore's damage, named as such
    assert_every_unknown_says_why(t)


def test_no_log_and_no_prstatus_say_so():
    t = record(None, b"")
    assert t.panic is None and t.unknown["panic"] == "kernel log not read: the test gives none"
    assert t.registers is None and t.unknown["registers"] == "the vmcore has no NT_PRSTATUS note"
    assert t.signature is None and "no crash reason" in t.unknown["signature"]
    assert_every_unknown_says_why(t)
    assert "unknown (kernel log not read: the test gives none)" in triage.to_text(t)
    assert json.loads(triage.to_json(t))["panic"] is None


def test_registers_of_a_machine_without_a_declared_layout_are_not_decoded_but_its_pid_is():
    t = record(OOPS_LOG, notes_of(prstatus(4242)), machine=21)  # EM_PPC64
    assert t.prstatus_note == 0 and t.prstatus_pid == 4242 and t.registers is None
    assert "declared for x86_64 and aarch64 only, this is machine-21" in t.unknown["registers"]


def test_a_note_not_of_its_machines_size_keeps_its_pid_and_says_both_sizes():
    t = record(OOPS_LOG, notes_of(prstatus(4242)), machine=elf.EM_AARCH64)  # an x86_64 note
    assert t.prstatus_pid == 4242 and t.registers is None
    assert "note is 336 bytes, not the 392 of aarch64's struct elf_prstatus" in t.unknown["registers"]


# ---------------------------------------------------------------- synthetic vmcores


def synthetic_vmcore(tmp_path: Path, lines: list[bytes], nr_cpus: int = 1) -> Path:
    ring = PrintkRing(5, 12)
    for n, text in enumerate(lines):
        ring.append(n * 1000, text)
    ring.finish()
    path = tmp_path / "vmcore"
    path.write_bytes(build_vmcore([SegmentSpec(IMAGE_PADDR, bytes(ring.image.data), vaddr=IMAGE_VADDR)],
                                  vmcoreinfo_text(extra=ring.vmcoreinfo), nr_cpus=nr_cpus))
    return path


def test_dump_directory_gets_the_triage_record_beside_the_log(tmp_path):
    vmcore = synthetic_vmcore(tmp_path, [b"Kernel panic - not syncing: synthetic", b"CPU: 0 PID: 0 Comm: swapper/0 "
                                         b"Not tainted 6.1.0 #1", b"Call Trace:", b" do_thing+0x1/0x2"])
    proc = run_save(str(vmcore), str(tmp_path / "crash"), "-q", "-d", "17")
    assert proc.returncode == 0, proc.stderr
    (dump_dir,) = (tmp_path / "crash").iterdir()
    saved = json.loads((dump_dir / "vmcore-triage.json").read_text())
    assert saved["panic"] == "Kernel panic - not syncing: synthetic" and saved["comm"] == "swapper/0"
    # The synthetic kernel exports no struct page layout: free pages cannot be told, and are kept.
    assert saved["dump"]["level"] == 17 and saved["dump"]["excludes"] == ["zero pages"]
    text = (dump_dir / "vmcore-triage.txt").read_text()
    assert "dump level 17: leaves out zero pages" in text and "zstd level 1" in text
    assert "level bit 16 (free pages) not applied: VMCOREINFO lacks SIZE(page)" in text
    assert not list(dump_dir.glob("*incomplete*"))
    assert run_save("--triage", str(vmcore)).stdout.splitlines()[1:-1] == text.splitlines()[1:-1]


def test_triage_of_a_vmcore_without_log_or_notes_exits_0_and_says_what_is_unknown(tmp_path):
    path = tmp_path / "vmcore"
    path.write_bytes(build_vmcore([SegmentSpec(0x100000, bytes(8192))], vmcoreinfo_text(), nr_cpus=0))
    proc = run_save("--triage", str(path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "panic:        unknown (kernel log not read: VMCOREINFO has neither SYMBOL(prb)" in proc.stdout
    assert "registers:    unknown (the vmcore has no NT_PRSTATUS note)" in proc.stdout
    assert json.loads(run_save("--triage", str(path), "--json").stdout)["registers"] is None


@pytest.mark.parametrize("content", [b"", b"hello\n" * 100, b"KDUMP   " + bytes(600)])
def test_triage_of_bad_input_is_one_line(tmp_path, content):
    path = tmp_path / "bad"
    path.write_bytes(content)
    proc = run_save("--triage", str(path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_json_goes_only_with_triage():
    proc = run_save("--json")
    assert proc.returncode == 2 and "--json goes only with --triage" in proc.stderr


def test_a_record_that_cannot_be_made_is_one_warning_and_the_dump_goes_on(tmp_path, monkeypatch):
    from collector import savejob

    vmcore = synthetic_vmcore(tmp_path, [b"hello"])

    def broken(*args: object) -> None:
        raise ValueError("synthetic failure")

    monkeypatch.setattr(triage, "of_vmcore", broken)
    warnings: list[str] = []
    outcome = savejob.save(savejob.SaveOptions(vmcore=str(vmcore), dests=(str(tmp_path / "crash"),), quiet=True),
                           warnings.append)
    assert outcome.exit_code == 0 and Path(outcome.path).name == "vmcore"
    assert warnings == ["warning: triage record not saved: ValueError: synthetic failure"]


# ---------------------------------------------------------------- real crashes (tests/testbed)

REAL = [("6.1", 512, "pvh", "load"), ("6.1", 512, "bios", "file"), ("6.12", 512, "pvh", "load")]


@pytest.fixture(scope="module", params=REAL, ids=lambda p: f"{p[0]}-{p[1]}M-{p[2]}-{p[3]}")
def crash(request, real_vmcore):
    kernel, mem, boot, kexec = request.param
    return real_vmcore(kernel=kernel, mem_mib=mem, workload=True, boot=boot, kexec=kexec)


def gdb_registers(path: Path) -> dict[str, int]:
    """rip and rsp of the core's first thread as gdb reads them (no executable, no debug info)."""
    out = subprocess.run(["gdb", "-nx", "-batch", "-c", str(path), "-ex", "info registers rip rsp"],
                         capture_output=True, text=True, timeout=120).stdout
    return {m[1]: int(m[2], 16) for m in re.finditer(r"^(rip|rsp)\s+0x([0-9a-f]+)", out, re.M)}


@pytest.mark.realkernel
def test_real_crash_record_has_release_panic_task_registers_and_trace(crash):
    from collector.open_dump import kernel_log_of_file

    t, complete = triage_of(crash.path)
    assert complete and t.release == crash.osrelease and t.machine == "x86_64"
    assert t.panic == "Kernel panic - not syncing: sysrq triggered crash"
    log = kernel_log_of_file(str(crash.path))
    task = re.search(r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)", log[log.index("sysrq triggered crash"):])
    assert task and (t.cpu, t.pid, t.comm) == (int(task[1]), int(task[2]), task[3])
    assert t.build_id and re.fullmatch(r"[0-9a-f]{40}", t.build_id) and t.crash_time and t.uptime_seconds
    assert t.registers is not None and t.prstatus_pid == t.pid
    if shutil.which("gdb"):  # gdb reads NT_PRSTATUS of an x86_64 core without an executable
        gdb = gdb_registers(crash.path)
        assert (t.registers["rip"], t.registers["rsp"]) == (gdb["rip"], gdb["rsp"])
    assert t.registers["rip"] >= 0xFFFFFFFF80000000  # kernel text: the crash path itself
    assert t.call_trace and any(line.startswith("sysrq_handle_crash+") for line in t.call_trace)
    assert t.signature_input and t.signature_input["frames"][:3] == ["sysrq_handle_crash", "__handle_sysrq",
                                                                    "write_sysrq_trigger"]
    assert set(t.unknown) <= {"oops", "dump"}


def triage_of(path: Path) -> tuple[Triage, bool]:
    from collector.triage_file import triage_of_file

    return triage_of_file(str(path))


@pytest.mark.realkernel
def test_crashes_of_one_kernel_with_one_cause_share_a_signature(real_vmcore):
    """Different boots (memory 512 MiB to 4 GiB, KASLR on and off, kexec_load and kexec_file_load)."""
    vmcores = [real_vmcore(kernel="6.1", mem_mib=mem, workload=True, boot=boot, kexec=kexec)
               for mem, boot, kexec in [(512, "pvh", "load"), (512, "bios", "file"), (1024, "pvh", "load"),
                                        (4096, "pvh", "load")]]
    records = [triage_of(v.path)[0] for v in vmcores]
    assert len({r.crash_time for r in records}) == len(records)  # four crashes
    assert len({r.signature for r in records}) == 1 and records[0].signature


@pytest.mark.realkernel
def test_vmcore_save_writes_the_record_beside_the_dump_and_triage_of_the_dump_says_the_same(crash, tmp_path):
    proc = run_save(str(crash.path), str(tmp_path / "crash"), "-q")
    assert proc.returncode == 0, proc.stderr
    (dump_dir,) = (tmp_path / "crash").iterdir()
    saved = json.loads((dump_dir / "vmcore-triage.json").read_text())
    of_vmcore = json.loads(run_save("--triage", str(crash.path), "--json", check=True).stdout)
    of_dump = json.loads(run_save("--triage", str(dump_dir / "vmcore"), "--json", check=True).stdout)
    assert of_dump["dump"]["state"] == "complete" and of_dump["dump"]["level"] == 31
    assert saved["dump"]["level"] == 31 and of_vmcore["dump"] is None
    for other in (of_vmcore, of_dump):
        assert {k: v for k, v in saved.items() if k not in ("source", "dump", "unknown")} == \
               {k: v for k, v in other.items() if k not in ("source", "dump", "unknown")}
    text_of = [run_save("--triage", str(p), check=True).stdout.splitlines() for p in (crash.path, dump_dir / "vmcore")]
    assert text_of[0][1:-1] == text_of[1][1:-1]  # all but the file's name and its dump line
    assert text_of[0][1:-1] == (dump_dir / "vmcore-triage.txt").read_text().splitlines()[1:-1]
