"""What crash and drgn answer on a dump: the crashed thread's stack trace, the tasks and the
log (drgn), log, bt and ps (crash), each read the way an analyst would, with the debug vmlinux.
Used by the cut-dump proofs (tests/test_value_order.py) and benchmarks/reader_pages.py."""

from __future__ import annotations

import json
import subprocess
import sys

DRGN_PROBE = r"""
import json, sys, drgn
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.printk import get_printk_records
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.load_debug_info([sys.argv[2]])
found = {}
try:
    found["trace"] = [frame.name for frame in prog.crashed_thread().stack_trace()]
except Exception as e:
    found["trace"] = repr(e)
try:
    found["tasks"] = sorted(int(task.pid) for task in for_each_task(prog))
except Exception as e:
    found["tasks"] = repr(e)
try:
    found["log"] = [record.text.decode(errors="replace") for record in get_printk_records(prog)]
except Exception as e:
    found["log"] = repr(e)
print(json.dumps(found))
"""


def drgn_reads(dump, vmlinux) -> dict:
    proc = subprocess.run([sys.executable, "-c", DRGN_PROBE, str(dump), str(vmlinux)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def crash_reads(dump, vmlinux) -> dict:
    """crash's log, bt and ps, each as the lines that carry its answer (crash prints warnings
    about an incomplete dump around them)."""
    found = {}
    for command, keep in (("log", lambda line: line.startswith("[")),
                          ("bt", lambda line: line.lstrip().startswith("#")),
                          ("ps", lambda line: line[:1] in (" ", ">") and line.strip()[:1].isdigit())):
        proc = subprocess.run(["crash", "-s", str(vmlinux), str(dump)], input=f"{command}\nquit\n",
                              capture_output=True, text=True, timeout=600)
        found[command] = [line for line in proc.stdout.splitlines() if keep(line)]
    return found
