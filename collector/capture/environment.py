"""The configured job: bring up each target (mount a disk or an NFS export, network with a
bounded wait), save the kernel log and the dump to the first target that works, run the hooks.

In the capture initramfs, /init runs ``python3 -m collector.capture``, which does the job and
then final_action (or failure_action). In its emergency shell, and anywhere a configuration
file exists, ``vmcore-save`` with no arguments does the job alone (:func:`save_configured`).
"""

from __future__ import annotations

import functools
import os
import resource
import subprocess
import time
from pathlib import Path

from .. import console, progress, savejob
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_SHELL, EXIT_USAGE, CollectorError
from ..sizes import parse_size
from ..targets import SshOptions
from . import config as configuration

PROGRAM = "vmcore-collector"
VMCORE = "/proc/vmcore"
MOUNT_ROOT = "/run/vmcore-collector"
UDHCPC_SCRIPT = "/usr/lib/vmcore-collector/udhcpc-script"
_ACTION_COMMANDS = {"reboot": ["reboot", "-f"], "halt": ["halt", "-f"], "poweroff": ["poweroff", "-f"]}


class TargetNotReady(CollectorError):
    """A target could not be brought up (device, network, mount); the next one is tried."""

    exit_code = EXIT_FAILED


def say(text: str) -> None:
    """One whole line on the console."""
    console.say(PROGRAM, text)


def save_configured(config: configuration.Config) -> int:
    """Run pre hooks, save to the first target that works, run post hooks with the result.
    Returns vmcore-save's exit status for the target used (0: a complete dump), or 1."""
    if not os.path.exists(VMCORE):  # before mounting anything: elsewhere there is nothing to save
        raise CollectorError(f"no {VMCORE}: this is not a capture kernel (give VMCORE and DEST to save a file)")
    for hook in config.pre_hooks:
        _run_hook("pre_hook", hook, [])
    mounts: list[str] = []
    status = EXIT_FAILED
    try:
        for index, target in enumerate(config.targets):
            try:
                destination = _bring_up(target, index, config, mounts)
            except (TargetNotReady, OSError) as e:
                say(f"target {target.describe()} not ready: {e}")
                continue
            say(f"saving to {target.describe()}")
            status = console.guarded(progress.PROGRAM, functools.partial(_save, config, destination))
            if status == EXIT_OK:
                break
            say(f"target {target.describe()} failed (vmcore-save status {status})")
    finally:
        for hook in config.post_hooks:
            _run_hook("post_hook", hook, [str(status)])
        os.sync()
        for mount_point in reversed(mounts):
            subprocess.run(["umount", mount_point], capture_output=True)
    return status


def save_options(config: configuration.Config, destination: str) -> savejob.SaveOptions:
    """The save job's options for ``config``, saving /proc/vmcore to ``destination``."""
    return savejob.SaveOptions(
        vmcore=VMCORE, dests=(destination,), dump_level=config.dump_level, compress=config.compress,
        level=None if config.compress == "none" else config.compress_level, threads=config.threads,
        keep_dumps=config.keep_dumps,
        min_free=parse_size(config.min_free, "min_free") if config.min_free else 0,
        ssh=SshOptions(key_file=config.ssh_key, known_hosts=config.known_hosts))


def _save(config: configuration.Config, destination: str) -> int:
    options = save_options(config, destination)
    return savejob.print_report(options, savejob.save(options))


def _run_hook(kind: str, command: str, arguments: list[str]) -> None:
    # A failing hook is reported, not fatal: the dump matters more than the hook.
    say(f"{kind}: {command}")
    result = subprocess.run(["sh", "-c", command, kind, *arguments])
    if result.returncode != 0:
        say(f"warning: {kind} exited with status {result.returncode}")


def _bring_up(target: configuration.Target, index: int, config: configuration.Config,
              mounts: list[str]) -> str:
    """Make ``target`` usable; returns the DEST for vmcore-save."""
    if target.kind == "path":
        # build-initramfs turns every path target into the disk it lands on; one left here
        # names no device, and its folder in this environment is RAM, lost at final_action.
        raise TargetNotReady(f"no device recorded for path {target.directory} (a folder here is RAM, lost "
                             "at the reboot): rebuild the image with vmcore-collector build-initramfs")
    if target.kind == "ram":
        say(f"warning: target ram {target.directory} is this capture environment's RAM: "
            "the dump is lost at final_action unless copied off by hand")
        os.makedirs(target.directory, exist_ok=True)
        return target.directory
    if target.needs_network:
        bring_up_network(config.wait_seconds)
    if target.kind == "ssh":
        return target.ssh_url()
    if target.kind == "nfs":
        return target.nfs_url()  # vmcore-save mounts it (collector/targets/nfs.py)
    mount_point = f"{MOUNT_ROOT}/target-{index}"
    os.makedirs(mount_point, exist_ok=True)
    device = _wait_for_device(target.source, config.wait_seconds)
    _mount(["-t", target.fstype, device, mount_point])
    mounts.append(mount_point)
    directory = mount_point + target.directory
    os.makedirs(directory, exist_ok=True)
    return directory


def _mount(arguments: list[str]) -> None:
    result = subprocess.run(["mount", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise TargetNotReady(f"mount {' '.join(arguments)}: {result.stderr.strip() or result.returncode}")


def _wait_for_device(spec: str, wait_seconds: int) -> str:
    """The device node for /dev/..., LABEL=... or UUID=..., once the kernel has probed it."""
    deadline = time.monotonic() + wait_seconds
    while True:
        if spec.startswith("/dev/"):
            if os.path.exists(spec):
                return spec
        else:
            found = subprocess.run(["findfs", spec], capture_output=True, text=True)
            if found.returncode == 0 and found.stdout.strip():
                return found.stdout.strip()
        if time.monotonic() > deadline:
            raise TargetNotReady(f"device {spec} did not appear within {wait_seconds} s")
        time.sleep(0.2)


def _has_default_route() -> bool:
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == "00000000" for line in lines if len(line.split()) > 1)


def bring_up_network(wait_seconds: int) -> None:
    """DHCP on the first interface that gets a lease, within ``wait_seconds``. A system that
    already has a default route (not a capture kernel) is left alone."""
    if _has_default_route():
        return
    subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True)
    deadline = time.monotonic() + wait_seconds
    tried: set[str] = set()
    while time.monotonic() < deadline:
        interfaces = sorted(name for name in os.listdir("/sys/class/net") if name != "lo")
        for interface in interfaces:
            tried.add(interface)
            seconds_left = max(1, int(deadline - time.monotonic()))
            say(f"network: DHCP on {interface} (up to {seconds_left} s)")
            result = subprocess.run(["udhcpc", "-i", interface, "-f", "-q", "-n", "-t", str(seconds_left),
                                     "-T", "1", "-A", "1", "-s", UDHCPC_SCRIPT], capture_output=True, text=True)
            if result.returncode == 0 and _has_default_route():
                address = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", interface],
                                         capture_output=True, text=True).stdout.split()
                say(f"network: {interface} up, {address[3] if len(address) > 3 else 'address unknown'}")
                return
        time.sleep(0.2)
    raise TargetNotReady(f"no network within {wait_seconds} s (interfaces tried: {', '.join(sorted(tried)) or 'none'})")


def run_action(action: str) -> int:
    """final_action / failure_action: flush and stop the machine, or ask /init for a shell."""
    if action == "shell":
        return EXIT_SHELL
    say(f"{action} after {_uptime()} s")
    os.sync()
    subprocess.run(_ACTION_COMMANDS[action])
    time.sleep(5)  # the kernel stops us while we wait
    return EXIT_FAILED


def _uptime() -> str:
    try:
        return Path("/proc/uptime").read_text().split()[0]
    except OSError:
        return "?"


def _memory_report() -> str:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())

    def mib(key: str) -> str:
        return f"{int(meminfo[key].split()[0]) // 1024} MiB"

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return (f"memory: MemTotal {mib('MemTotal')}, MemAvailable {mib('MemAvailable')}, "
            f"initramfs and tmpfs {mib('Shmem')}, collector peak RSS {peak} MiB")


def main() -> int:
    """The capture kernel's job, ending in final_action or failure_action."""
    # /proc/vmcore exists only in a capture kernel: anywhere else this must do nothing at all.
    if not os.path.exists(VMCORE):
        say(f"refusing: no {VMCORE}, this is not a capture kernel (use vmcore-save to save by hand)")
        return EXIT_USAGE
    try:
        config = configuration.load()
    except CollectorError as e:
        say(f"error: {e}")
        return EXIT_FAILED  # /init then runs the failure_action the image was built with
    say(f"collector started after {_uptime()} s; targets: {'; '.join(t.describe() for t in config.targets)}")
    try:
        status = save_configured(config)
    except Exception as e:  # whatever happens, the configured action must still run
        say(f"error: {type(e).__name__}: {e}")
        status = EXIT_FAILED
    say(_memory_report())
    if status == EXIT_OK:
        say("dump saved")
        return run_action(config.final_action)
    say(f"no complete dump saved; failure_action {config.failure_action}")
    return run_action(config.failure_action)

