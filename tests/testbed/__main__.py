"""Command line: ``python -m tests.testbed vmcore ...`` or ``... capture --out DIR -- COMMAND...``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .demo import run_demo
from .errors import TestbedError
from .qemu import BOOT_MODES
from .vmcore import KEXEC_MODES, METHODS, get_vmcore, run_in_capture_kernel


def _add_guest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", default="6.1", help='Debian series ("6.1", "6.12") or exact release')
    parser.add_argument("--mem", type=int, default=512, help="guest RAM in MiB")
    parser.add_argument("--crashkernel", type=int, help="capture-kernel reservation in MiB")
    parser.add_argument("--boot", choices=BOOT_MODES, default="pvh")
    parser.add_argument("--kexec", choices=KEXEC_MODES, default="load")
    parser.add_argument("--no-workload", dest="workload", action="store_false",
                        help="crash an idle guest (no page cache, anonymous, hugetlb... pages)")
    parser.add_argument("--timeout", type=float, help="seconds before QEMU is killed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    vmcore = commands.add_parser("vmcore", help="print the path of a (cached) real vmcore")
    _add_guest_options(vmcore)
    vmcore.add_argument("--method", choices=METHODS, default="kdump")

    capture = commands.add_parser("capture", help="run COMMAND inside a real capture kernel")
    _add_guest_options(capture)
    capture.add_argument("--out", type=Path, required=True, help="host folder seen as /out")
    capture.add_argument("shell_command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")

    demo = commands.add_parser("demo", help="crash a guest and save its dump with vmcore-save in the capture kernel")
    demo.add_argument("--kernel", default="6.1", help='Debian series ("6.1", "6.12") or exact release')
    demo.add_argument("--mem", type=int, default=512, help="guest RAM in MiB")
    demo.add_argument("-d", "--dump-level", type=int, default=31)

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo(kernel=args.kernel, mem_mib=args.mem, dump_level=args.dump_level)
        if args.command == "vmcore":
            result = get_vmcore(kernel=args.kernel, mem_mib=args.mem, workload=args.workload, boot=args.boot,
                                kexec=args.kexec, method=args.method, crashkernel_mib=args.crashkernel,
                                timeout=args.timeout)
            print(result.path)
            return 0
        words = args.shell_command[1:] if args.shell_command[:1] == ["--"] else args.shell_command
        if not words:
            parser.error("capture needs a COMMAND after --")
        # One word is taken as a whole shell command line; several are quoted as argv.
        command = words[0] if len(words) == 1 else shlex.join(words)
        run = run_in_capture_kernel(command, args.out, kernel=args.kernel, mem_mib=args.mem,
                                    workload=args.workload, boot=args.boot, kexec=args.kexec,
                                    crashkernel_mib=args.crashkernel, timeout=args.timeout)
        print(f"rc={run.rc} console={run.console_log}", file=sys.stderr)
        return run.rc
    except TestbedError as error:
        print(f"testbed: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
