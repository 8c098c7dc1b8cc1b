"""Reads in whole, aligned pages, keeping the most recently used: the kernel log's reads through
the page tables (kernel/dmesg.py) and a kdump file's decompressed pages (formats/kdump_image.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class PageCache:
    """``read_page(number)`` gives page ``number`` (bytes of ``page_size``); the last ``capacity``
    pages read are kept, so neighbouring reads fetch a page once and memory stays bounded."""

    def __init__(self, read_page: Callable[[int], bytes], page_size: int, capacity: int) -> None:
        self._read_page = read_page
        self.page_size = page_size
        self._capacity = capacity
        self._pages: OrderedDict[int, bytes] = OrderedDict()

    def page(self, number: int) -> bytes:
        page = self._pages.get(number)
        if page is None:
            page = self._read_page(number)
            self._pages[number] = page
            if len(self._pages) > self._capacity:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(number)
        return page

    def read(self, address: int, length: int) -> bytes:
        """``length`` bytes from ``address``, across as many pages as they span."""
        pieces = []
        while length > 0:
            number, offset = divmod(address, self.page_size)
            chunk = min(length, self.page_size - offset)
            pieces.append(self.page(number)[offset:offset + chunk])
            address += chunk
            length -= chunk
        return b"".join(pieces)
