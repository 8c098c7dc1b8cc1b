"""Guest-side workload: fill the first kernel's memory with every page class, then sleep.

Runs inside the QEMU guest only (host python3 in a chroot of the host root, started by
init-first.sh as a child of PID 1). Argument: the folder holding disk/ (ext4 on a
virtio disk), shm/ (tmpfs) and huge/ (hugetlbfs). Creates shm/READY when done and keeps
its mappings alive until the guest crashes.
"""

from __future__ import annotations

import mmap
import os
import signal
import sys
import time
from pathlib import Path

MIB = 1 << 20
HUGE_PAGE = 2 * MIB


def sample_text(limit: int) -> bytes:
    """Real-looking text: the Python standard library's sources."""
    chunks, total = [], 0
    for source in sorted(Path(os.__file__).parent.glob("*.py")):
        data = source.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= limit:
            break
    return b"".join(chunks)[:limit]


def mixed_content(size: int, text: bytes, seed: int) -> bytearray:
    """``size`` bytes mixing text, random (incompressible) and all-zero MiB blocks."""
    buffer = bytearray(size)  # zero-filled; every 4th MiB stays zero
    for index in range(size // MIB):
        start = index * MIB
        if index % 4 == 1:
            buffer[start:start + MIB] = os.urandom(MIB)
        elif index % 4 != 3:
            offset = (seed * 7919 + index * 104729) % (len(text) - MIB)
            buffer[start:start + MIB] = text[offset:offset + MIB]
    return buffer


def progress(phase: str) -> None:
    """One console line per phase: shows where guest time goes."""
    print(f"workload: {phase} done, {time.monotonic():.2f} s uptime", flush=True)


def main(root: Path) -> None:
    progress("python start")
    text = sample_text(4 * MIB)
    disk, shm, huge = root / "disk", root / "shm", root / "huge"

    # Clean page cache: written, synced, then read back.
    for number in range(4):
        (disk / f"clean-{number}").write_bytes(mixed_content(4 * MIB, text, number))
    os.sync()
    for number in range(4):
        (disk / f"clean-{number}").read_bytes()

    progress("clean page cache")

    # Dirty page cache: the crash comes long before writeback (30 s expiry).
    for number in range(2):
        (disk / f"dirty-{number}").write_bytes(mixed_content(4 * MIB, text, 10 + number))

    progress("dirty page cache")

    # shmem: tmpfs files.
    for number in range(2):
        (shm / f"shmem-{number}").write_bytes(mixed_content(4 * MIB, text, 20 + number))

    progress("shmem")

    # Slab: thousands of dentries and inodes.
    slab = shm / "slab"
    slab.mkdir()
    for number in range(4000):
        os.close(os.open(slab / f"entry-{number:05d}", os.O_CREAT | os.O_WRONLY, 0o644))

    progress("slab")

    # Freed memory: pages that held data, back in the buddy allocator.
    freed = bytearray(b"FREED-PAGE-CONTENT " * (32 * MIB // 19))
    del freed

    progress("freed")

    # Anonymous user memory, kept mapped until the crash.
    anonymous = mixed_content(32 * MIB, text, 30)

    progress("anonymous")

    # hugetlb: two 2 MiB pages through a hugetlbfs file, kept mapped.
    huge_fd = os.open(huge / "pages", os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(huge_fd, 2 * HUGE_PAGE)
    huge_map = mmap.mmap(huge_fd, 2 * HUGE_PAGE)
    huge_map[:] = bytes(mixed_content(2 * HUGE_PAGE, text, 40))

    progress("hugetlb")
    (shm / "READY").write_text(f"anonymous={len(anonymous)} huge={len(huge_map)}\n")
    while True:
        signal.pause()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
