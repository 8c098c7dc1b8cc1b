"""The triage record of an arm64 vmcore: NT_PRSTATUS decoded as arm64's struct elf_prstatus
(pr_reg is struct user_pt_regs: x0..x30, sp, pc, pstate), the crashing CPU, task and registers;
real sysrq crashes of the arm64 test bed against the kernel's own symbol table and gdb."""

from __future__ import annotations

import json
import re
import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.kernel import triage
from collector.source import elf
from tests import test_arm64_translation
from tests.conftest import run_save
from tests.test_arm64_translation import compiled_pass_only, needs_arm64_qemu

arm64_vmcore = test_arm64_translation.arm64_vmcore  # the same crashes, one fixture
U64 = st.integers(0, (1 << 64) - 1)


def arm64_prstatus(pid: int, registers: list[int]) -> bytes:
    """struct elf_prstatus as arm64 lays it out, written from the C declarations (not from the
    code under test): elf_prstatus_common (pr_pid at offset 32, 112 bytes), user_pt_regs (34
    u64), int pr_fpvalid, 4 bytes of padding."""
    common = bytearray(112)
    struct.pack_into("<i", common, 32, pid)
    return bytes(common) + struct.pack("<34Q", *registers) + struct.pack("<i4x", 1)


@given(st.integers(0, (1 << 31) - 1), st.lists(U64, min_size=34, max_size=34))
def test_arm64_prstatus_gives_pid_and_x0_to_x30_sp_pc_pstate_in_user_pt_regs_order(pid, registers):
    note = elf.build_note(b"CORE", elf.NT_PRSTATUS, arm64_prstatus(pid, registers))
    (decoded,) = triage.prstatus_notes(note, elf.EM_AARCH64)
    assert decoded.pid == pid and decoded.registers is not None
    assert list(decoded.registers) == [f"x{n}" for n in range(31)] + ["sp", "pc", "pstate"]
    assert list(decoded.registers.values()) == registers


def test_an_arm64_note_of_another_size_keeps_its_pid_and_says_why_no_registers():
    note = elf.build_note(b"CORE", elf.NT_PRSTATUS, arm64_prstatus(7, [0] * 34) + bytes(8))
    (decoded,) = triage.prstatus_notes(note, elf.EM_AARCH64)
    assert decoded.pid == 7 and decoded.registers is None
    assert "400 bytes, not the 392 of aarch64's" in decoded.undecoded


# Real arm64 crashes (tests/testbed/arm64.py): Debian's 6.1 arm64 kernel, sysrq-c from init -----

def gdb_registers(path: str) -> dict[str, int]:
    """pc, sp, x29, x30 and cpsr (pstate) of the core's first thread as gdb reads them."""
    out = subprocess.run(["gdb-multiarch", "-nx", "-batch", "-c", path, "-ex", "info registers pc sp x29 x30 cpsr"],
                         capture_output=True, text=True, timeout=120).stdout
    return {m[1]: int(m[2], 16) for m in re.finditer(r"^(pc|sp|x29|x30|cpsr)\s+0x([0-9a-f]+)", out, re.M)}


@pytest.mark.realkernel
@needs_arm64_qemu
@compiled_pass_only
def test_real_arm64_record_has_the_crashing_task_and_its_registers_at_the_crash(arm64_vmcore):
    from collector.kernel import arch
    from collector.kernel.kallsyms import Kallsyms
    from collector.source.vmcore import Vmcore

    proc = run_save("--triage", str(arm64_vmcore.path), "--json", check=True)
    t = json.loads(proc.stdout)
    assert (t["machine"], t["release"], t["comm"], t["pid"], t["cpu"]) == ("aarch64", arm64_vmcore.osrelease,
                                                                          "init", 1, 0)
    assert t["panic"] == "Kernel panic - not syncing: sysrq triggered crash" and t["prstatus_pid"] == 1
    assert set(t["unknown"]) <= {"oops", "dump"}
    registers = {name: int(value, 16) for name, value in t["registers"].items()}
    assert registers["pstate"] & 0xF == 0x5  # PSR_MODE_EL1h: the kernel, on its own stack pointer
    with Vmcore(str(arm64_vmcore.path)) as vmcore:
        kernel = arch.kernel_memory(vmcore)
        crash_kexec = Kallsyms(kernel, vmcore.vmcoreinfo).addresses(["__crash_kexec"])["__crash_kexec"]
        assert registers["sp"] >= kernel.kernel_space_start
    # crash_setup_regs, inlined into __crash_kexec, takes pc where it runs (the kernel's symbol table says where)
    assert crash_kexec[1] <= registers["pc"] < crash_kexec[2]
    gdb = gdb_registers(str(arm64_vmcore.path))  # ./dev installs gdb-multiarch
    assert gdb == {"pc": registers["pc"], "sp": registers["sp"], "x29": registers["x29"],
                   "x30": registers["x30"], "cpsr": registers["pstate"]}


@pytest.mark.realkernel
@needs_arm64_qemu
@compiled_pass_only
def test_the_two_arm64_sysrq_crashes_share_a_signature_without_the_unwinders_own_frame():
    from tests.testbed import arm64

    records = [json.loads(run_save("--triage", str(arm64.get_vmcore(kernel="6.1", cpu=cpu).path), "--json",
                                   check=True).stdout) for cpu in ("max,pauth-impdef=on", "cortex-a57")]
    assert records[0]["crash_time"] != records[1]["crash_time"]  # two crashes, two KASLR offsets
    assert records[0]["signature"] == records[1]["signature"] and records[0]["signature"]
    frames = records[0]["signature_input"]["frames"]
    assert "dump_backtrace" not in frames and frames[1:4] == ["__handle_sysrq", "write_sysrq_trigger",
                                                              "proc_reg_write"]


@pytest.mark.realkernel
@needs_arm64_qemu
@compiled_pass_only
def test_real_arm64_dump_directory_gets_the_record_with_registers_and_triage_of_the_dump_agrees(arm64_vmcore,
                                                                                               tmp_path):
    run_save(str(arm64_vmcore.path), str(tmp_path / "crash"), "-q", check=True)
    (dump_dir,) = (tmp_path / "crash").iterdir()
    saved = json.loads((dump_dir / "vmcore-triage.json").read_text())
    of_dump = json.loads(run_save("--triage", str(dump_dir / "vmcore"), "--json", check=True).stdout)
    assert saved["registers"] and saved["registers"] == of_dump["registers"]
    assert saved["dump"]["level"] == 31 and saved["dump"]["not_applied"] == {}
    assert "registers:\n" in (dump_dir / "vmcore-triage.txt").read_text()
