"""The pages readers walk to list the tasks: the pid tree of the initial pid namespace.

drgn's for_each_task and crash's task table both start from init_pid_ns.idr, an IDR (an
xarray since Linux 4.20, commit f8d5d0cc145c "xarray: Add definition of struct xarray") whose
leaves are the struct pids, each pointing at its task. The layouts read here have held since
then: struct pid_namespace starts with its struct idr, whose xarray's xa_head is its second
word; a struct xa_node has shift, offset, count, nr_values (one byte each), parent, array and
a list_head before its 64 slots; an entry is an internal node pointer when its low bits are 10
and it is above 4096 (xa_is_node), a pointer when they are 00.
"""

from __future__ import annotations

import struct

from .memory import KernelMemory, TranslationError

XA_HEAD_OFFSET = 8       # in struct pid_namespace: idr.idr_rt.xa_head, after xa_lock and xa_flags
XA_NODE_SLOTS_OFFSET = 40
XA_CHUNK_SIZE = 64
STRUCT_PID_BYTES = 128   # enough of each struct pid for its count, level and task lists
MAX_NODES = 1 << 14      # a damaged tree stays bounded: 1 Mi pids' worth of leaves


def pid_tree_pages(kernel: KernelMemory, init_pid_ns: int, page_size: int) -> set[int]:
    """The pfns of init_pid_ns's xarray nodes and of the struct pids it holds; what cannot be
    read is left out (a page is only ordered here, never dropped)."""
    pages: set[int] = set()

    def add(address: int, length: int) -> None:
        pages.update(kernel.mapped_pfns(address, address + length, page_size))

    try:
        (head,) = struct.unpack("<Q", kernel.read(init_pid_ns + XA_HEAD_OFFSET, 8))
    except TranslationError:
        return pages
    pending, nodes = [head], 0
    while pending and nodes < MAX_NODES:
        entry = pending.pop()
        if entry & 3 == 2 and entry > 4096:  # an internal node
            node = entry - 2
            nodes += 1
            try:
                slots = kernel.read(node + XA_NODE_SLOTS_OFFSET, 8 * XA_CHUNK_SIZE)
            except TranslationError:
                continue
            add(node, XA_NODE_SLOTS_OFFSET + len(slots))
            pending.extend(slot for (slot,) in struct.iter_unpack("<Q", slots) if slot)
        elif entry & 3 == 0 and entry >= kernel.kernel_space_start:  # a struct pid
            add(entry, STRUCT_PID_BYTES)
    return pages
