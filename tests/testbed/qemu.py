"""Run one QEMU guest under TCG with a hard timeout, and talk QMP to it.

The guest's serial console goes to a log file; every failure (timeout, guest-side
TESTBED-FAIL, QEMU error) raises TestbedError carrying the log's tail.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import TestbedError

BOOT_MODES = ("pvh", "bios")


@dataclass
class Share:
    """A host folder exported over virtio-9p."""

    tag: str
    path: Path
    readonly: bool


@dataclass
class GuestConfig:
    """What one QEMU run boots and exposes."""

    kernel: Path  # ELF vmlinux for pvh, bzImage for bios
    initramfs: Path
    append: str
    mem_mib: int
    shares: list[Share]
    disk: Path | None = None  # attached with snapshot=on: the image is never written
    network: bool = False  # user networking only: the guest reaches the host's loopback at 10.0.2.2
    qmp_socket: Path | None = None  # also adds -device vmcoreinfo
    # Run QEMU inside this network namespace (`ip netns`): 10.0.2.2 is then that namespace's
    # loopback, where test servers listen.
    netns: str | None = None
    # The serial console also takes input (Guest.type_on_console), through a Unix socket; the
    # console log is written as without it.
    console_input: bool = False

    def argv(self, console_log: Path) -> list[str]:
        argv = [
            *(["ip", "netns", "exec", self.netns] if self.netns else []),
            "qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", str(self.mem_mib),
            "-nodefaults", "-display", "none", "-no-reboot",
            *(["-chardev", f"socket,id=console,path={console_socket(console_log)},server=on,wait=off,"
                f"logfile={console_log}", "-serial", "chardev:console"]
              if self.console_input else ["-serial", f"file:{console_log}"]),
            "-kernel", str(self.kernel), "-initrd", str(self.initramfs), "-append", self.append,
        ]
        for share in self.shares:
            options = f"local,path={share.path},mount_tag={share.tag},security_model=none,multidevs=remap"
            argv += ["-virtfs", options + (",readonly=on" if share.readonly else "")]
        if self.disk is not None:
            argv += ["-drive", f"file={self.disk},if=none,id=disk0,format=raw,snapshot=on",
                     "-device", "virtio-blk-pci,drive=disk0"]
        if self.network:
            argv += ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]
        if self.qmp_socket is not None:
            argv += ["-qmp", f"unix:{self.qmp_socket},server=on,wait=off", "-device", "vmcoreinfo"]
        return argv


def console_socket(console_log: Path) -> Path:
    return console_log.with_name("console.sock")


def read_console(console_log: Path) -> str:
    """The serial output so far ("" before QEMU has created the file)."""
    try:
        return console_log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def log_tail(console_log: Path, lines: int = 40) -> str:
    return "\n".join(read_console(console_log).splitlines()[-lines:]) or "(no console output)"


class Guest:
    """A running QEMU process; use as a context manager so it is always reaped."""

    def __init__(self, config: GuestConfig, console_log: Path, timeout: float) -> None:
        self.config = config
        self.console_log = console_log
        self.deadline = time.monotonic() + timeout
        self.qemu_log = console_log.with_name("qemu.log")
        self._console: socket.socket | None = None
        with open(self.qemu_log, "wb") as qemu_output:
            self.process = subprocess.Popen(config.argv(console_log), stdin=subprocess.DEVNULL,
                                            stdout=qemu_output, stderr=subprocess.STDOUT)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self._console is not None:
            self._console.close()

    def error(self, what: str) -> TestbedError:
        qemu_output = self.qemu_log.read_text(errors="replace").strip()
        return TestbedError(f"{what}\n--- qemu ---\n{qemu_output[-2000:]}\n"
                            f"--- console tail ({self.console_log}) ---\n{log_tail(self.console_log)}")

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def wait_exit(self) -> None:
        """Wait for QEMU to end (guest powered off or panicked); kill it at the deadline."""
        try:
            self.process.wait(timeout=max(self._remaining(), 0))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise self.error("guest timed out; QEMU killed") from None
        if self.process.returncode != 0:
            raise self.error(f"QEMU exited with status {self.process.returncode}")
        self.check_console()

    def check_console(self) -> None:
        if "TESTBED-FAIL" in read_console(self.console_log):
            raise self.error("guest reported a failure")

    def wait_console(self, line: str) -> None:
        """Poll the console log until ``line`` appears."""
        while line not in read_console(self.console_log):
            if self.process.poll() is not None:
                raise self.error(f"QEMU ended before the guest printed {line!r}")
            self.check_console()
            if self._remaining() <= 0:
                raise self.error(f"guest timed out waiting for {line!r}")
            time.sleep(0.2)

    def type_on_console(self, text: str) -> None:
        """Send ``text`` to the guest's serial console, as if typed (needs console_input)."""
        assert self.config.console_input
        if self._console is None:
            # Kept open until the guest ends: QEMU may drop what it has not read at a disconnect.
            # The console output also comes this way; it is read and dropped (the log has it),
            # else the guest's serial output stalls once the socket's buffer is full.
            self._console = socket.socket(socket.AF_UNIX)
            self._console.connect(str(console_socket(self.console_log)))
            threading.Thread(target=_drain, args=(self._console,), daemon=True).start()
        self._console.sendall(text.encode())

    def dump_guest_memory(self, target: Path) -> None:
        """Stop the guest and write its memory as an ELF core via QMP, then quit QEMU."""
        assert self.config.qmp_socket is not None
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(max(self._remaining(), 1))
            sock.connect(str(self.config.qmp_socket))
            qmp = sock.makefile("rw")
            _qmp_read_reply(qmp, greeting=True)
            for command, arguments in (
                ("qmp_capabilities", {}),
                ("stop", {}),
                ("dump-guest-memory", {"paging": False, "protocol": f"file:{target}"}),
            ):
                qmp.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
                qmp.flush()
                reply = _qmp_read_reply(qmp)
                if "error" in reply:
                    raise self.error(f"QMP {command} failed: {reply['error']}")
            qmp.write(json.dumps({"execute": "quit"}) + "\n")
            qmp.flush()
        self.wait_exit()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass  # closed by Guest.__exit__


def _qmp_read_reply(qmp: TextIO, greeting: bool = False) -> dict[str, Any]:
    """The next QMP reply (or the greeting), skipping asynchronous events."""
    while True:
        line = qmp.readline()
        if not line:
            raise TestbedError("QMP connection closed")
        message = json.loads(line)
        if greeting and "QMP" in message:
            return message
        if "return" in message or "error" in message:
            return message
